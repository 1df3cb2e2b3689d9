"""Every distribution function the library has, built the same way for every parametrised
test: tiny untrained flows standardised on exact Plummer stars, so that their densities
are plausible and cheap to evaluate."""

import functools
import typing

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

import deeppot as dp
from deeppot.flows import (
    FFJORD,
    AbstractConditionalDF,
    AbstractDF,
    Augmented,
    AxisymmetricDF,
    ConditionalDF,
    ConditionalPlummerDF,
    Ensemble,
    ODESettings,
    PlummerDF,
    Reflected,
    SphericalDF,
    SplineFlow,
)


def _ode():
    """Tight enough in float64 that the score ODE and autodiff of log_prob agree to ~1e-6;
    the default tolerance in float32 (a tighter one only costs steps there)."""
    tol = 1e-8 if jnp.zeros(()).dtype == jnp.float64 else 1e-5
    return ODESettings(solver=diffrax.Dopri5(), rtol=tol, atol=tol)


def _ffjord(seed, dim, **kwargs):
    return FFJORD(jax.random.key(seed), dim=dim, n_blocks=1, width=8, depth=1, ode=_ode(),
                  chunk_size=4096, **kwargs)


def _spline(seed, dim):
    return SplineFlow(jax.random.key(seed), dim=dim, flow_layers=2, knots=4, nn_width=8,
                      nn_depth=1, chunk_size=4096)


def _conditional(seed, symmetry, density_symmetry=None, scale_velocities=False,
                 density_model="flow"):
    return ConditionalDF(jax.random.key(seed), symmetry=symmetry,
                         density_symmetry=density_symmetry, flow_layers=2, knots=4,
                         nn_width=8, nn_depth=1, scale_velocities=scale_velocities,
                         density_model=density_model, chunk_size=4096)


def _stars():
    return PlummerDF(r_max=10.0).sample(jax.random.key(99), 4096)


def _standardised(df):
    return df.standardise(_stars())


@typing.final
class GaussianDF(AbstractDF):
    """A unit normal in phase space, not one of `DFS`: exact samples and scores that compile in
    a moment, for tests of what is done with scores."""

    chunk_size: int = eqx.field(static=True, default=128)

    def _log_prob_chunk(self, w):
        return -0.5 * jnp.sum(w**2, -1) - 3.0 * jnp.log(2.0 * jnp.pi)

    def _score_chunk(self, w):
        return -w

    def _sample_chunk(self, key, m):
        w = jax.random.normal(key, (m, 6))
        return w, self._log_prob_chunk(w)


class ObservedPlummerDF(AbstractConditionalDF):
    """Plummer seen through a known selection: ν_obs ∝ S ν (unnormalised), p(v|x) kept. Not
    one of `DFS`: its positions are drawn from ν (not S ν), which is all that tests of the
    scores at given points need."""

    selection: dp.DistanceSelection
    chunk_size: int

    def _log_density_chunk(self, x):
        return ConditionalPlummerDF()._log_density_chunk(x) + \
            jax.vmap(self.selection._log_selection)(x)

    def _log_velocity_chunk(self, x, v):
        return ConditionalPlummerDF()._log_velocity_chunk(x, v)

    def _sample_positions(self, key, m):
        return ConditionalPlummerDF()._sample_positions(key, m)

    def _sample_velocities(self, key, x):
        return ConditionalPlummerDF()._sample_velocities(key, x)


ObservedPlummerDF.__final__ = True  # a test double, not a deeppot module


DFS = {
    "plummer": lambda: PlummerDF(r_max=10.0),
    "ffjord": lambda: _standardised(_ffjord(0, 6)),
    "spline": lambda: _standardised(_spline(1, 6)),
    "ensemble_prob": lambda: Ensemble(
        [_standardised(_ffjord(2, 6)), _standardised(_spline(3, 6))], average="prob"),
    "spherical_ffjord": lambda: _standardised(SphericalDF(_ffjord(4, 3))),
    "spherical_spline": lambda: _standardised(SphericalDF(_spline(5, 3))),
    "spherical_vector": lambda: _standardised(
        SphericalDF(_ffjord(11, 4, pair_invariant=True), tangential="vector")),
    "spherical_scaled": lambda: _standardised(
        SphericalDF(_ffjord(12, 3), scale_velocities=True)),
    "spherical_of_ensemble": lambda: SphericalDF(Ensemble(
        [_standardised(SphericalDF(_ffjord(6, 3))).inner,
         _standardised(SphericalDF(_spline(7, 3))).inner], average="prob")),
    "axisymmetric_ffjord": lambda: _standardised(AxisymmetricDF(_ffjord(8, 5))),
    "axisymmetric_spline": lambda: _standardised(AxisymmetricDF(_spline(9, 5))),
    "augmented": lambda: _standardised(Augmented(_ffjord(10, 6), "spherical")),
    "reflected_spherical": lambda: _standardised(
        Reflected(SphericalDF(_ffjord(13, 3)), ["radial_velocity"])),
    "reflected_ffjord": lambda: _standardised(
        Reflected(_ffjord(14, 6), ["meridional_velocity", "mirror_z"])),
    "conditional_plummer": lambda: ConditionalPlummerDF(r_max=10.0),
    "conditional": lambda: _standardised(_conditional(15, "none")),
    "conditional_spherical": lambda: _standardised(_conditional(16, "spherical")),
    "conditional_axisymmetric": lambda: _standardised(_conditional(17, "axisymmetric")),
    # (seed 19: its untrained velocity flow's far tail in v_t/σ_t stays where the normalisation
    # test's Student-t proposal reaches; the scaling itself is tested exactly in
    # tests/unit/test_conditional.py)
    "conditional_scaled": lambda: _standardised(
        _conditional(19, "spherical", scale_velocities=True)),
    # (seed 21: as seed 19 above, an untrained velocity flow whose v_t tail stays within the
    # proposal's reach; the mixture itself is tested exactly in tests/unit/test_conditional.py)
    "conditional_mixture": lambda: _standardised(
        _conditional(21, "spherical", density_model="logistic_mixture")),
}

# the reflections a `Reflected` DF is exactly invariant under
REFLECTED = {"reflected_spherical": ("radial_velocity",),
             "reflected_ffjord": ("meridional_velocity", "mirror_z")}

# the symmetry each DF has exactly, by construction
SYMMETRY = {
    "plummer": "spherical",
    "spherical_ffjord": "spherical",
    "spherical_spline": "spherical",
    "spherical_vector": "spherical",
    "spherical_scaled": "spherical",
    "spherical_of_ensemble": "spherical",
    "axisymmetric_ffjord": "axisymmetric",
    "axisymmetric_spline": "axisymmetric",
    "reflected_spherical": "spherical",
    "conditional_plummer": "spherical",
    "conditional_spherical": "spherical",
    "conditional_axisymmetric": "axisymmetric",
    "conditional_scaled": "spherical",
    "conditional_mixture": "spherical",
}

# the relative agreement of `score` with autodiff of `log_prob` in float64: exact for
# autodiff models; the score ODE's solver tolerance for FFJORD
SCORE_RTOL = {name: (1e-4 if "ffjord" in name or name in ("augmented", "ensemble_prob")
                     or name in ("spherical_of_ensemble", "spherical_vector", "spherical_scaled",
                                 "reflected_spherical")
                     else 1e-9)
              for name in DFS}


@functools.cache
def _build(name: str, x64: bool):
    return DFS[name]()


def build(name: str):
    """The named DF, built once per float precision."""
    return _build(name, jnp.zeros(()).dtype == jnp.float64)
