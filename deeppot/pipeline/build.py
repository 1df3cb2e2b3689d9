"""Models from configuration sections: catalogues, DFs, potentials and losses.

Each builder reads one validated section and the registries; nothing here trains or writes.
"""

from __future__ import annotations

import jax

from .. import registry
from .config import (
    DataConfig,
    DFConfig,
    FitConfig,
    PotentialConfig,
    generates,
    python_params,
    takes,
    trainable,
)

__all__ = ["build_catalog", "build_df", "build_loss", "build_model", "build_objective"]


def _call(entry, supplied: dict, params: dict, section: str):
    """A registry entry called with the arguments the pipeline supplies that its signature
    names, and its `params` (as Python values)."""
    arguments = {k: v for k, v in supplied.items() if takes(entry, k)}
    return entry(**arguments, **python_params(entry, params, section))


def build_catalog(cfg: DataConfig, key, *, units: str = "dimensionless",
                  progress: bool = False):
    """The catalogue described by `[data]`: its registered source called with its `params`
    and what it takes of `key`, `n`, `path`, `units` and `progress`; a mock generator's
    catalogue then gets the observational errors and the selection of `[data]`.

    **Arguments:**

    - `cfg`: the `[data]` settings.
    - `key`: a typed key (mocks only).
    - `units`: the run's unit system (`[run] units`); a file's catalogue must be in it.
    - `progress`: show the source's progress bar where it has one.

    **Returns:** a `PhaseSpaceCatalog`; mocks record their truth in `meta`.
    """
    from .. import mocks

    source = registry.sources[cfg.source]
    supplied = {"path": cfg.path, "units": units, "progress": progress}
    if not generates(cfg.source):
        return _call(source, supplied, cfg.params, "data")
    k_draw, k_noise = jax.random.split(key)

    def sampler(k, m):
        return _call(source, {**supplied, "key": k, "n": m}, cfg.params, "data")

    if cfg.select_radius > 0:
        cat = mocks.sample_selected(
            sampler, k_draw, cfg.n,
            lambda c: mocks.select_sphere(c, cfg.select_center, cfg.select_radius))
    else:
        cat = sampler(k_draw, cfg.n)
    if cfg.observe:
        cat = mocks.observe(cat, k_noise, cfg.observer)
    return cat


# the velocity reflection every stationary DF with the symmetry has (`[df] reflect`)
_REFLECTION = {"spherical": "radial_velocity", "axisymmetric": "meridional_velocity"}


def build_df(cfg: DFConfig, key, *, catalog=None):
    """An untrained DF as described by `[df]`: its registered kind called with its `params`
    and what it takes of `key` and `catalog`; a trained kind is then wrapped as `symmetry`,
    `augment`, `reflect` and `mirror_z` say (its `dim` and `pair_invariant` set to match;
    a kind that takes `symmetry` itself, `conditional`, is given it instead of a wrapper)
    and made an ensemble of `ensemble` members.

    **Arguments:**

    - `cfg`: the `[df]` settings.
    - `key`: a typed key for the initial weights.
    - `catalog`: the catalogue; needed by a kind that takes one (`exact`, which returns the
      analytic DF its mock generator recorded, `deeppot.mocks.truth_df`).

    **Returns:** a `deeppot.flows` DF (an `Ensemble` if `cfg.ensemble > 1`).
    """
    from .. import flows

    make = registry.distribution_functions[cfg.kind]
    if not trainable(cfg.kind):
        if takes(make, "catalog") and catalog is None:
            raise ValueError(f"kind = {cfg.kind!r} needs the catalogue whose DF it is")
        return _call(make, {"key": key, "catalog": catalog}, cfg.params, "df")
    # spherical with a pair-invariant flow: the tangential velocity as `cfg.tangential` says
    vector = cfg.symmetry == "spherical" and cfg.tangential == "vector" and \
        takes(make, "pair_invariant")

    def member(k):
        def flow(**supplied):
            return _call(make, {"key": k, **supplied}, cfg.params, "df")

        if cfg.symmetry == "none":
            df = flow()
        elif takes(make, "symmetry"):  # a kind that reduces its coordinates itself
            scaled = {"scale_velocities": cfg.scale_velocities} \
                if cfg.symmetry == "spherical" and takes(make, "scale_velocities") else {}
            df = flow(symmetry=cfg.symmetry, **scaled)
        elif vector:
            df = flows.SphericalDF(flow(dim=4, pair_invariant=True), tangential="vector",
                                   scale_velocities=cfg.scale_velocities)
        elif cfg.symmetry == "spherical":
            df = flows.SphericalDF(flow(dim=3), scale_velocities=cfg.scale_velocities)
        else:
            df = flows.AxisymmetricDF(flow(dim=5))
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


def build_objective(cfg: DFConfig):
    """The training objective of a trained `[df]`: its registered `objective` (the kind's
    default, the first of its `objectives`, when empty) called with `objective_params`.

    **Arguments:**

    - `cfg`: the `[df]` settings.

    **Returns:** a `deeppot.objectives` objective, for `fit_df`.
    """
    name = cfg.objective or registry.distribution_functions[cfg.kind].objectives[0]
    return _call(registry.objectives[name], {}, cfg.objective_params, "objective")


def build_model(cfg: PotentialConfig, key, *, units: str = "dimensionless"):
    """An untrained `PotentialModel` as described by `[potential]`: its registered family
    called with its `params` and what it takes of `key`, `width`, `depth`, `input_scale` and
    `units`, in the frame of `[potential]`.

    **Arguments:**

    - `cfg`: the `[potential]` settings.
    - `key`: a typed key for the initial weights.
    - `units`: the unit system of its numbers (`[run] units`), unless `params` names one.

    **Returns:** a `PotentialModel`.
    """
    from .. import frames
    from ..model import PotentialModel

    supplied = {"key": key, "width": cfg.width, "depth": cfg.depth,
                "input_scale": cfg.input_scale}
    if units != "dimensionless" and "units" not in cfg.params:
        supplied["units"] = units
    pot = _call(registry.potentials[cfg.model], supplied, cfg.params, "potential")
    if cfg.frame == "inertial":
        frame = None
    elif cfg.frame == "moving":
        frame = frames.MovingFrame(u0=cfg.u0)
    else:
        frame = frames.RotatingFrame(omega=cfg.omega, center=cfg.center, u0=cfg.u0)
    return PotentialModel(pot, frame, laplacian_method=cfg.laplacian_method)


def build_loss(cfg: FitConfig, *, profiled: bool = False):
    """The loss term described by `[fit]`.

    `Stationarity(alpha, form) + density_weight · PositiveDensity(beta)`, wrapped in `Log`
    when `log = true`, plus `L2Weights(l2)` when `l2 > 0` and
    `azimuthal_mean · AzimuthalMeanPenalty()` when `azimuthal_mean > 0`. For a
    selection-free sample (`[scores] position = "free"`) `ProfiledStationarity(alpha)`
    takes the place of `Stationarity`, in the same composition.

    **Arguments:**

    - `cfg`: the `[fit]` settings.
    - `profiled`: the scores are a `VelocityScoreSample` (∇ln ν profiled out).

    **Returns:** a `deeppot.terms` term.
    """
    from .. import terms

    if profiled:
        if cfg.form != "ln_f":
            raise ValueError("form = 'f' in [fit] needs f, which a selection-free sample "
                             "does not know; use form = 'ln_f'")
        loss = terms.ProfiledStationarity(alpha=cfg.alpha)
    else:
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
