"""Models from configuration sections: catalogues, DFs, potentials and losses.

Each builder reads one validated section and the registries; nothing here trains or writes.
"""

from __future__ import annotations

import inspect

import jax

from .. import registry
from .config import ACTIVATIONS, DataConfig, DFConfig, FitConfig, PotentialConfig, learned_model

__all__ = ["build_catalog", "build_df", "build_loss", "build_model"]


def _source_arguments(cfg: DataConfig) -> dict:
    if cfg.source == "plummer":
        return {"r_max": cfg.r_max}
    if cfg.source == "disk":
        return {"a": cfg.a, "b": cfg.b, "h_R": cfg.h_R, "h_z": cfg.h_z, "n_dyn": cfg.n_dyn,
                "workers": cfg.workers}
    return dict(cfg.params)


def build_catalog(cfg: DataConfig, key, *, units: str = "dimensionless",
                  progress: bool = False):
    """The catalogue described by `[data]`: a registered mock (with noise and selection),
    a catalogue file, or a survey table of Gaia-like observables.

    **Arguments:**

    - `cfg`: the `[data]` settings.
    - `key`: a typed key (mocks only).
    - `units`: the run's unit system (`[run] units`); a file's catalogue must be in it.
    - `progress`: show the mock generator's progress bar where it has one.

    **Returns:** a `PhaseSpaceCatalog`; mocks record their truth in `meta`.
    """
    from .. import mocks, survey
    from ..catalog import PhaseSpaceCatalog
    from ..units import get_units

    if cfg.source == "survey":
        params = dict(cfg.params)
        if "sun" in params:
            params["sun"] = survey.Sun(**params["sun"])
        if "cuts" in params:
            params["cuts"] = {k: tuple(v) for k, v in params["cuts"].items()}
        return survey.from_observables(cfg.path, units=units, **params)
    if cfg.source == "file":
        cat = PhaseSpaceCatalog.load(cfg.path)
        if not cat.units.same_units(get_units(units)):
            raise ValueError(f"catalogue {cfg.path!r} is in {cat.units!r} but [run] units = "
                             f"{units!r}")
        return cat
    k_draw, k_noise = jax.random.split(key)
    generate = registry.sources[cfg.source]
    arguments = _source_arguments(cfg)
    if units != "dimensionless" and "units" in inspect.signature(generate).parameters:
        arguments.setdefault("units", units)

    def sampler(k, m):
        return generate(k, m, **arguments)

    if cfg.select_radius > 0:
        cat = mocks.sample_selected(
            sampler, k_draw, cfg.n,
            lambda c: mocks.select_sphere(c, cfg.select_center, cfg.select_radius))
    else:
        cat = sampler(k_draw, cfg.n)
    if cfg.observe:
        cat = mocks.observe(cat, k_noise, cfg.observer)
    return cat


def _df_arguments(cfg: DFConfig) -> dict:
    if cfg.kind == "spline":
        return {"kind": cfg.spline_kind, "flow_layers": cfg.flow_layers, "knots": cfg.knots,
                "interval": cfg.interval, "nn_width": cfg.nn_width, "nn_depth": cfg.nn_depth}
    if cfg.kind == "ffjord":
        import diffrax

        from ..flows import ODESettings

        ode = (ODESettings() if cfg.ode_steps == 0
               else ODESettings(solver=diffrax.Tsit5(), n_steps=cfg.ode_steps))
        return {"n_blocks": cfg.n_blocks, "width": cfg.width, "depth": cfg.depth,
                "activation": ACTIVATIONS[cfg.activation], "ode": ode}
    return dict(cfg.params)


# the velocity reflection every stationary DF with the symmetry has (`[df] reflect`)
_REFLECTION = {"spherical": "radial_velocity", "axisymmetric": "meridional_velocity"}


def build_df(cfg: DFConfig, key, *, catalog=None):
    """An untrained DF as described by `[df]`.

    **Arguments:**

    - `cfg`: the `[df]` settings.
    - `key`: a typed key for the initial weights.
    - `catalog`: the catalogue; needed for `kind = "exact"`, which returns the analytic DF
      its mock generator recorded (`deeppot.mocks.truth_df`).

    **Returns:** a `deeppot.flows` DF (an `Ensemble` if `cfg.ensemble > 1`).
    """
    from .. import flows, mocks

    if cfg.kind == "exact":
        if catalog is None:
            raise ValueError("kind = 'exact' needs the catalogue whose DF it is")
        return mocks.truth_df(catalog.meta)
    make = registry.distribution_functions[cfg.kind]
    arguments = _df_arguments(cfg)
    # spherical with kind = "ffjord": the tangential velocity as `cfg.tangential` says
    vector = cfg.symmetry == "spherical" and cfg.kind == "ffjord" and cfg.tangential == "vector"

    def member(k):
        if cfg.symmetry == "none":
            df = make(k, **arguments)
        elif vector:
            df = flows.SphericalDF(make(k, dim=4, pair_invariant=True, **arguments),
                                   tangential="vector", scale_velocities=cfg.scale_velocities)
        elif cfg.symmetry == "spherical":
            df = flows.SphericalDF(make(k, dim=3, **arguments),
                                   scale_velocities=cfg.scale_velocities)
        else:
            df = flows.AxisymmetricDF(make(k, dim=5, **arguments))
        if cfg.augment != "none":
            df = flows.Augmented(df, cfg.augment)
        reflections = [_REFLECTION[cfg.symmetry]] if cfg.reflect and cfg.symmetry != "none" \
            else []
        if cfg.mirror_z:
            reflections.append("mirror_z")
        return flows.Reflected(df, reflections) if reflections else df

    if cfg.ensemble == 1:
        return member(key)
    return flows.Ensemble([member(k) for k in jax.random.split(key, cfg.ensemble)])


def build_model(cfg: PotentialConfig, key, *, units: str = "dimensionless"):
    """An untrained `PotentialModel` as described by `[potential]`.

    **Arguments:**

    - `cfg`: the `[potential]` settings.
    - `key`: a typed key for the initial weights.
    - `units`: the unit system of its numbers (`[run] units`), unless `params` names one.

    **Returns:** a `PotentialModel`.
    """
    from .. import frames
    from ..model import PotentialModel

    make = registry.potentials[cfg.model]
    params = dict(cfg.params)
    if units != "dimensionless" and "units" in inspect.signature(make).parameters:
        params.setdefault("units", units)
    if learned_model(cfg.model):
        pot = make(key=key, width=cfg.width, depth=cfg.depth, input_scale=cfg.input_scale,
                   **params)
    else:
        pot = make(**params)
    if cfg.frame == "inertial":
        frame = None
    elif cfg.frame == "moving":
        frame = frames.MovingFrame(u0=cfg.u0)
    else:
        frame = frames.RotatingFrame(omega=cfg.omega, center=cfg.center, u0=cfg.u0)
    return PotentialModel(pot, frame, laplacian_method=cfg.laplacian_method)


def build_loss(cfg: FitConfig):
    """The loss term described by `[fit]`.

    `Stationarity(alpha, form) + density_weight · PositiveDensity(beta)`, wrapped in `Log`
    when `log = true`, plus `L2Weights(l2)` when `l2 > 0` and
    `azimuthal_mean · AzimuthalMeanPenalty()` when `azimuthal_mean > 0`.

    **Arguments:**

    - `cfg`: the `[fit]` settings.

    **Returns:** a `deeppot.terms` term.
    """
    from .. import terms

    loss = terms.Stationarity(alpha=cfg.alpha, form=cfg.form)
    if cfg.density_weight > 0:
        loss = loss + cfg.density_weight * terms.PositiveDensity(beta=cfg.beta)
    if cfg.log:
        loss = terms.Log(loss)
    if cfg.l2 > 0:
        loss = loss + terms.L2Weights(l2=cfg.l2)
    if cfg.azimuthal_mean > 0:
        loss = loss + cfg.azimuthal_mean * terms.AzimuthalMeanPenalty()
    return loss
