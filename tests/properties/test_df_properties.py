"""Properties every distribution function has, parametrised over every DF of the library
(tests/dfs.py): normalisation, scores = autodiff of log_prob, sample/log_prob consistency,
and invariance under the symmetry a DF is built with."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeppot.flows import reflect, symmetry_transform
from tests.dfs import DFS, REFLECTED, SCORE_RTOL, SYMMETRY, build

# Each test runs once per DF (16 of them, FFJORDs solved at tight tolerances, hypothesis
# examples in float64): 10-160 s a test on the shared machine, so `make test-all` runs
# them. Every wrapper is also checked against the exact Plummer DF by the fast unit tests
# in tests/unit/test_symmetry.py.
pytestmark = pytest.mark.slow

# a multivariate Student-t (ν = 3) in x and in v: heavier tails than every DF here
_NU, _SX, _SV = 3.0, 1.0, 0.4


def _t_log_prob(y, s):
    p = 3
    return (math.lgamma((_NU + p) / 2) - math.lgamma(_NU / 2) - p / 2 * math.log(_NU * math.pi)
            - p * math.log(s) - (_NU + p) / 2 * jnp.log1p(jnp.sum(y**2, -1) / (_NU * s**2)))


def _t_sample(key, n, s):
    k1, k2 = jax.random.split(key)
    g = jax.random.normal(k1, (n, 3))
    chi2 = 2.0 * jax.random.gamma(k2, _NU / 2, (n, 1))
    return s * g / jnp.sqrt(chi2 / _NU)


def _importance_weights(df, key, n):
    """Points from the Student-t proposal and the weights p(w) / q(w)."""
    kx, kv = jax.random.split(key)
    x, v = _t_sample(kx, n, _SX), _t_sample(kv, n, _SV)
    w = jnp.concatenate([x, v], -1)
    log_q = _t_log_prob(x, _SX) + _t_log_prob(v, _SV)
    return w, jnp.exp(df.log_prob(w) - log_q)


def _statistics(w):
    """Bounded statistics (x², v_z² saturating; a z–v_z correlation): with unbounded moments
    a DF's heavy tails (an untrained flow's lognormal v_t) sit beyond the proposal's reach
    and bias the importance-sampled means, whatever the DF's correctness."""
    return jnp.stack([w[:, 0] ** 2 / (1.0 + w[:, 0] ** 2),
                      w[:, 5] ** 2 / (_SV**2 + w[:, 5] ** 2),
                      jnp.tanh(w[:, 2]) * jnp.tanh(w[:, 5] / _SV)], -1)


@pytest.mark.parametrize("name", sorted(DFS))
def test_normalised_and_sampled_consistently(name):
    """∫ p d⁶w = 1 by importance sampling, and the mean of three statistics over the DF's
    own samples agrees with its importance-sampled mean (each within 5σ of Monte Carlo)."""
    df = build(name)
    n = 2**14
    w, ratio = _importance_weights(df, jax.random.key(11), n)
    mean, err = float(ratio.mean()), float(ratio.std()) / math.sqrt(n)
    assert err < 0.1, f"{name}: importance sampling too noisy to test ({err})"
    assert abs(mean - 1.0) < 5 * err, f"{name}: ∫ p = {mean} ± {err}"

    stats = _statistics(w)
    is_mean = jnp.mean(ratio[:, None] * stats, 0)
    is_err = jnp.std(ratio[:, None] * stats, 0) / math.sqrt(n)
    samples, lp = df.sample_and_log_prob(jax.random.key(12), n)
    assert bool(jnp.all(jnp.isfinite(samples))) and bool(jnp.all(jnp.isfinite(lp)))
    s = _statistics(samples)
    s_mean, s_err = jnp.mean(s, 0), jnp.std(s, 0) / math.sqrt(n)
    diff = np.abs(np.asarray(s_mean - is_mean))
    assert np.all(diff < 5 * np.hypot(is_err, s_err)), f"{name}: {s_mean} vs {is_mean}"
    # the log-density returned with the samples is log_prob's (solver tolerance for ODEs)
    np.testing.assert_allclose(lp[:256], df.log_prob(samples[:256]), rtol=1e-3, atol=1e-3)


def _bound_points(key, n):
    """Plummer-like bound points (float64 under x64)."""
    return build("plummer").sample(key, n)


def _on_random_points(dfs):
    """A property of each DF named in `dfs`, checked at three random seeds (hypothesis)."""
    def decorate(test):
        test = settings(max_examples=3)(given(seed=st.integers(0, 2**16))(test))
        return pytest.mark.parametrize("name", sorted(dfs))(test)
    return decorate


@_on_random_points(DFS)
def test_score_is_gradient_of_log_prob(name, seed):
    with jax.enable_x64(True):
        df = build(name)
        w = _bound_points(jax.random.key(seed), 8)
        auto = jax.vmap(jax.grad(lambda p: df.log_prob(p)))(w)
        dx, dv = df.score(w)
        got = jnp.concatenate([dx, dv], -1)
        tol = SCORE_RTOL[name]
        np.testing.assert_allclose(got, auto, rtol=tol, atol=tol * float(jnp.abs(auto).max()))
        lp, dx2, dv2 = df.log_prob_and_score(w)
        np.testing.assert_allclose(lp, df.log_prob(w), rtol=tol, atol=tol)
        np.testing.assert_allclose(jnp.concatenate([dx2, dv2], -1), got, rtol=tol,
                                   atol=tol * float(jnp.abs(auto).max()))


@_on_random_points(SYMMETRY)
def test_invariant_under_its_symmetry(name, seed):
    """ln p(g w) = ln p(w) and the scores rotate with g, for random g of the DF's group."""
    with jax.enable_x64(True):
        df = build(name)
        group = SYMMETRY[name]
        w = _bound_points(jax.random.key(seed), 8)
        key = jax.random.key(seed + 1)
        gw = symmetry_transform(key, w, group)
        np.testing.assert_allclose(df.log_prob(gw), df.log_prob(w), rtol=1e-7, atol=1e-7)
        # the scores of g w are the group element applied to the scores of w: g acts on
        # (x, v) the same way, so apply it to (score_x, score_v) with the same key
        s = jnp.concatenate(df.score(w), -1)
        s_g = jnp.concatenate(df.score(gw), -1)
        tol = max(SCORE_RTOL[name], 1e-7)
        np.testing.assert_allclose(s_g, symmetry_transform(key, s, group), rtol=tol,
                                   atol=tol * float(jnp.abs(s).max()))


@_on_random_points(REFLECTED)
def test_invariant_under_its_reflections(name, seed):
    """ln p(g w) = ln p(w), and the scores obey J_g(w)ᵀ s(g w) = s(w), for each reflection
    g of a `Reflected` DF."""
    with jax.enable_x64(True):
        df = build(name)
        w = _bound_points(jax.random.key(seed), 8)
        s = jnp.concatenate(df.score(w), -1)
        for g in REFLECTED[name]:
            gw, pullback = jax.vjp(lambda p, g=g: reflect(p, g), w)
            np.testing.assert_allclose(df.log_prob(gw), df.log_prob(w), rtol=1e-7, atol=1e-7)
            (pulled,) = pullback(jnp.concatenate(df.score(gw), -1))
            tol = SCORE_RTOL[name]
            np.testing.assert_allclose(pulled, s, rtol=tol, atol=tol * float(jnp.abs(s).max()))
