"""Property tests of the DF training objectives, parametrised over every registered objective
and every trainable DF (flows and wrappers) that supports it."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deeppot as dp
from deeppot import registry
from deeppot.flows import (
    FFJORD,
    AbstractContinuousFlowDF,
    Augmented,
    AxisymmetricDF,
    Reflected,
    SphericalDF,
    SplineFlow,
    symmetry_transform,
)
from deeppot.objectives import FlowMatching, MaximumLikelihood

# every registered objective, in the settings worth telling apart
OBJECTIVES = {
    "cfm": FlowMatching(sigma_min=1e-2),
    "nll": MaximumLikelihood(),
    "nll_gaussian": MaximumLikelihood(probe="gaussian", reg_kinetic=0.1, reg_jacobian=0.1),
    "nll_exact": MaximumLikelihood(trace="exact", reg_kinetic=0.0, reg_jacobian=0.0),
}


def _ffjord(dim, **kw):
    return FFJORD(jax.random.key(dim), dim=dim, width=8, depth=1, **kw)


def _spline(dim):
    return SplineFlow(jax.random.key(dim), dim=dim, flow_layers=2, knots=4, nn_width=8,
                      nn_depth=1)


DFS = {
    "ffjord": lambda: _ffjord(6, n_blocks=2),
    "spline": lambda: _spline(6),
    "spherical_ffjord": lambda: SphericalDF(_ffjord(3)),
    "spherical_vector": lambda: SphericalDF(_ffjord(4, pair_invariant=True),
                                            tangential="vector", scale_velocities=True),
    "axisymmetric_ffjord": lambda: AxisymmetricDF(_ffjord(5)),
    "spherical_spline": lambda: SphericalDF(_spline(3)),
    "reflected_spherical": lambda: Reflected(SphericalDF(_ffjord(3)), "radial_velocity"),
    "augmented_ffjord": lambda: Augmented(_ffjord(6), "spherical"),
    "augmented_spline": lambda: Augmented(_spline(6), "axisymmetric_mirror_z"),
}


def _innermost(df):
    while not isinstance(df, dp.flows.AbstractFlowDF):
        df = df.inner
    return df


def _supports(df, objective) -> bool:
    return (registry.objectives.name_of(objective) in df.objectives
            and (not isinstance(objective, FlowMatching)
                 or isinstance(_innermost(df), AbstractContinuousFlowDF)))


CASES = [(d, o) for d in DFS for o in OBJECTIVES if _supports(DFS[d](), OBJECTIVES[o])]
_READY = {}


def _ready(name):
    """The DF standardised on a Plummer mock (built once), and the mock."""
    if name not in _READY:
        stars = dp.mocks.plummer(jax.random.key(0), 256).w.astype(jnp.float64)
        _READY[name] = DFS[name]().standardise(stars), stars
    return _READY[name]


def test_every_registered_objective_and_trainable_df_is_covered():
    """A new objective or DF pairing must be added here; every DF has one to train with."""
    assert {registry.objectives.name_of(o) for o in OBJECTIVES.values()} == \
        {n for n in registry.objectives if registry.objectives[n].__module__.startswith("deeppot")}
    assert {d for d, _ in CASES} == set(DFS)
    assert ("spline", "cfm") not in CASES and ("spherical_spline", "nll_exact") in CASES


@pytest.mark.parametrize("df_name, objective_name", CASES)
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), start=st.integers(0, 256 - 32))
def test_objective_loss_and_gradient_are_finite(x64, df_name, objective_name, seed, start):
    df, stars = _ready(df_name)
    objective = OBJECTIVES[objective_name]
    w = stars[start:start + 32]
    loss, grads = _value_and_grad(objective, df, w, jax.random.key(seed))
    assert np.isfinite(float(loss))
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # the standardisation is never trained: no gradient reaches it
    for a in jax.tree.leaves(eqx.filter(_standardisation(grads), eqx.is_array)):
        assert float(jnp.max(jnp.abs(a))) == 0.0


def _standardisation(tree):
    try:
        return tree.standardisation
    except (AttributeError, TypeError):  # a gradient tree without the property's parts
        return ()


@eqx.filter_jit
def _value_and_grad(objective, df, w, key):
    return eqx.filter_value_and_grad(lambda d: objective(d, w, key))(df)


def _trained_points(df, w, key):
    """The points the innermost flow's likelihood is taken at, as the wrappers carry them,
    and the log-Jacobians they add: −mean ln p of the DF the objective trains."""
    if isinstance(df, Augmented):
        k_group, k_loss = jax.random.split(key)
        return _trained_points(df.inner, symmetry_transform(k_group, w, df.group), k_loss)
    if isinstance(df, Reflected):  # trains its inner DF on the points as given
        return _trained_points(df.inner, w, key)
    return df, w


@pytest.mark.parametrize("df_name", sorted({d for d, o in CASES if o == "nll_exact"}))
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), start=st.integers(0, 256 - 32))
def test_exact_likelihood_is_minus_the_mean_log_prob(x64, df_name, seed, start):
    """Maximum likelihood with the exact trace and no regularisation is −mean ln p of the
    points the DF trains on, in physical units (the wrappers' Jacobians included): to
    rounding for a continuous flow (its loss integrates the Jacobian by forward mode, its
    log_prob by the hand-differentiated trace, along the same steps); for a spline it is
    −mean `batch_log_prob`, bit for bit."""
    df, stars = _ready(df_name)
    w, key = stars[start:start + 32], jax.random.key(seed)
    loss = OBJECTIVES["nll_exact"](df, w, key)
    model, points = _trained_points(df, w, key)
    np.testing.assert_allclose(float(loss), float(-jnp.mean(model.log_prob(points))),
                               rtol=1e-10)
    if isinstance(model, SplineFlow):  # the same operations, evaluated the same way
        assert float(loss) == float(-jnp.mean(model.batch_log_prob(points)))
