"""Conditional DFs f = ν(x) p(v|x) and the selection-free term, against exact Plummer truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.flows import ConditionalDF, ConditionalPlummerDF, PlummerDF
from deeppot.terms import ProfiledStationarity, profiled_residuals
from tests.dfs import ObservedPlummerDF


def _tiny(symmetry, density_symmetry=None, transformer="affine"):
    return ConditionalDF(jax.random.key(3), symmetry=symmetry, density_symmetry=density_symmetry,
                         transformer=transformer, flow_layers=2, knots=4, nn_width=8,
                         nn_depth=1, chunk_size=64)


def test_conditional_plummer_is_plummer():
    """The analytic factors multiply to the exact Plummer DF: log-density and scores."""
    with jax.enable_x64(True):
        w = PlummerDF().sample(jax.random.key(0), 256)
        cond = ConditionalPlummerDF()
        np.testing.assert_allclose(cond.log_prob(w), PlummerDF().log_prob(w), atol=1e-12)
        for a, b in zip(cond.score(w), PlummerDF().score(w)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        # ν's score is −5x/(1 + r²); the factors' scores add to the joint's
        x, v = w[:, :3], w[:, 3:]
        g = cond.density_score(x)
        np.testing.assert_allclose(g, -5 * x / (1 + jnp.sum(x**2, -1, keepdims=True)),
                                   rtol=1e-10)
        px, pv = cond.velocity_scores(x, v)
        sx, sv = cond.score(w)
        np.testing.assert_allclose(g + px, sx, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(pv, sv, rtol=1e-10, atol=1e-12)


def test_sample_velocities_at_given_positions():
    """k velocities per given position, bound, with the speed distribution of p(v|x):
    (v / v_esc)² ~ Beta(3/2, 9/2), mean 1/4."""
    cond = ConditionalPlummerDF(chunk_size=1000)
    x = jnp.tile(jnp.array([[0.5, 0.0, 0.0], [0.0, 2.0, 0.0]]), (2000, 1))
    v = cond.sample_velocities(jax.random.key(1), x, 3)
    assert v.shape == (4000, 3, 3)
    v_esc2 = 2.0 / jnp.sqrt(1.0 + jnp.sum(x**2, -1))
    q2 = jnp.sum(v**2, -1) / v_esc2[:, None]
    assert bool(jnp.all(q2 < 1))
    assert abs(float(jnp.mean(q2)) - 0.25) < 0.01
    with pytest.raises(ValueError, match="k must be"):
        cond.sample_velocities(jax.random.key(1), x, 0)


@pytest.mark.slow
@pytest.mark.parametrize("symmetry,density", [("none", None), ("spherical", None),
                                              ("axisymmetric", None), ("spherical", "none")])
def test_conditional_flow_contract(symmetry, density):
    """Joint = ν · p(v|x): samples carry their log-density, the factors' scores add to the
    joint score, and velocities drawn at given positions keep those positions."""
    with jax.enable_x64(True):
        stars = PlummerDF().sample(jax.random.key(0), 512)
        df = _tiny(symmetry, density).standardise(stars)
        w, lp = df.sample_and_log_prob(jax.random.key(2), 100)
        np.testing.assert_allclose(lp, df.log_prob(w), rtol=1e-9, atol=1e-9)
        x, v = w[:, :3], w[:, 3:]
        px, pv = df.velocity_scores(x, v)
        sx, sv = df.score(w)
        np.testing.assert_allclose(df.density_score(x) + px, sx, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(pv, sv, rtol=1e-8, atol=1e-8)
        vs = df.sample_velocities(jax.random.key(4), x[:5], 7)
        assert vs.shape == (5, 7, 3) and bool(jnp.all(jnp.isfinite(vs)))
        if symmetry == "spherical":  # v_t of a draw is exp of the flow's ln v_t: positive
            assert bool(jnp.all(jnp.linalg.norm(jnp.cross(x[:5, None], vs), axis=-1) > 0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="symmetry must be"):
        ConditionalDF(jax.random.key(0), symmetry="cylindrical")
    with pytest.raises(ValueError, match="transformer must be"):
        ConditionalDF(jax.random.key(0), transformer="cubic")


@pytest.mark.slow
def test_training_lowers_the_joint_nll_and_model_file_roundtrip(tmp_path):
    stars = PlummerDF().sample(jax.random.key(0), 2048)
    df = _tiny("spherical", "none").standardise(stars)
    before = float(-jnp.mean(df.log_prob(stars)))
    df = dp.fit_df(df, stars, key=jax.random.key(1), max_steps=200, progress=False,
                   learning_rate=3e-3, warmup_steps=10)
    after = float(-jnp.mean(df.log_prob(stars)))
    assert after < before - 0.3, (before, after)
    with pytest.raises(ValueError, match="supports the objectives"):
        dp.fit_df(df, stars, key=jax.random.key(1), objective=dp.objectives.FlowMatching(),
                  max_steps=1)
    from deeppot.modelfile import load_model, save_model

    save_model(tmp_path / "df.eqx", df, {})
    back, _ = load_model(tmp_path / "df.eqx")
    np.testing.assert_allclose(back.log_prob(stars[:32]), df.log_prob(stars[:32]), rtol=1e-6)


def test_profiled_stationarity_is_zero_only_at_the_truth():
    """Exact p(v|x) of Plummer: the profiled residual vanishes for the true potential (and
    the profiled ∇ln ν is the true −5x/(1 + r²)); a wrong mass or scale leaves one."""
    with jax.enable_x64(True):
        cond = ConditionalPlummerDF()
        x = cond.sample(jax.random.key(0), 500)[:, :3]
        s = dp.sample_velocity_scores(cond, jax.random.key(1), x, 6)
        term = ProfiledStationarity(penalty="square")
        truth = dp.PotentialModel(dp.Plummer(m_tot=1.0, r_s=1.0))
        assert float(term(truth, s)) < 1e-10  # the ridge's bias only
        grad = jax.vmap(truth.potential._gradient)(x)
        _, g = profiled_residuals(truth.frame, grad, x, s.v, s.dlnp_dx, s.dlnp_dv, ridge=0.0)
        np.testing.assert_allclose(g, -5 * x / (1 + jnp.sum(x**2, -1, keepdims=True)),
                                   rtol=1e-6, atol=1e-8)
        for wrong in (dp.Plummer(m_tot=1.1, r_s=1.0), dp.Plummer(m_tot=1.0, r_s=0.9)):
            assert float(term(dp.PotentialModel(wrong), s)) > 1e-5
        # composes with the terms of Φ's fields
        both = term + dp.terms.PositiveDensity()
        assert float(both(truth, s)) < 1e-10


def test_profiled_stationarity_needs_velocity_scores():
    cond = ConditionalPlummerDF()
    with pytest.raises(ValueError, match="at least 4"):
        dp.sample_velocity_scores(cond, jax.random.key(0), jnp.ones((3, 3)), 3)
    with pytest.raises(TypeError, match="conditional DF"):
        dp.sample_velocity_scores(PlummerDF(), jax.random.key(0), jnp.ones((3, 3)), 5)
    w = PlummerDF().sample(jax.random.key(0), 8)
    plain = dp.ScoreSample(w[:, :3], w[:, 3:], *PlummerDF().score(w))
    with pytest.raises(TypeError, match="VelocityScoreSample"):
        ProfiledStationarity()(dp.PotentialModel(dp.Plummer(m_tot=1.0, r_s=1.0)), plain)


def test_selection_route_gives_the_exact_scores():
    """Scores of S ν p(v|x) corrected by the known S are the exact Plummer scores."""
    with jax.enable_x64(True):
        sel = dp.DistanceSelection([1.0, 0.0, 0.0], d_half=1.0)
        observed = ObservedPlummerDF(selection=sel, chunk_size=4096)
        scores = dp.sample_scores(observed, jax.random.key(0), 300, chunk_size=100,
                                  selection=sel)
        w = jnp.concatenate([scores.x, scores.v], -1)
        sx, sv = PlummerDF().score(w)
        raw = observed.score(w)[0]
        assert float(jnp.max(jnp.abs(raw - sx))) > 1e-3  # the selection moved them
        np.testing.assert_allclose(scores.dlnf_dx, sx, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(scores.dlnf_dv, sv, rtol=1e-8, atol=1e-10)
