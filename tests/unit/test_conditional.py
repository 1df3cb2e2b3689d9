"""Conditional DFs f = ν(x) p(v|x) and the selection-free term, against exact Plummer truth."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.flows import ConditionalDF, ConditionalPlummerDF, PlummerDF
from deeppot.terms import ProfiledStationarity, profiled_residuals
from tests.dfs import ObservedPlummerDF


def _tiny(symmetry, density_symmetry=None, transformer="affine", scale_velocities=False):
    return ConditionalDF(jax.random.key(3), symmetry=symmetry, density_symmetry=density_symmetry,
                         transformer=transformer, flow_layers=2, knots=4, nn_width=8,
                         nn_depth=1, scale_velocities=scale_velocities, chunk_size=64)


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
    with pytest.raises(ValueError, match="scale_velocities needs symmetry='spherical'"):
        ConditionalDF(jax.random.key(0), symmetry="axisymmetric", scale_velocities=True)
    with pytest.raises(ValueError, match="r_max must be positive"):
        ConditionalPlummerDF(r_max=-1.0)
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        ConditionalPlummerDF(chunk_size=0)
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


def _scaled_pair():
    """A standardised ConditionalDF with `scale_velocities` and the same DF without the
    profile (same flows and coordinate standardisation): the scaled DF's velocity factor
    must be the unscaled one's at v' = S(x) v, times |det S(x)|."""
    stars = PlummerDF().sample(jax.random.key(0), 4096)
    scaled = _tiny("spherical", scale_velocities=True).standardise(stars)
    plain = eqx.tree_at(lambda d: d.profile, scaled, None, is_leaf=lambda a: a is None)
    return stars, scaled, plain


def test_scaled_velocity_factor_is_the_exact_change_of_variables(x64):
    """p(v|x) = p'(S(x) v | x) |det S(x)| with S(x) the linear map dividing v_r by σ_r(r) and
    the tangential vector by σ_t(r): S and its determinant computed here independently (the
    map's matrix from σ's, the determinant by LU); sampled velocities are S⁻¹ of the
    unscaled factor's draws with the same key; and the profile fitted to the stars makes
    the scaled velocities unit-scale in every radial bin."""
    stars, scaled, plain = _scaled_pair()
    x, v = stars[:200, :3], stars[:200, 3:]
    r = jnp.linalg.norm(x, axis=-1)
    ln_sr, ln_st = scaled.profile.log_sigma(r)
    assert float(jnp.ptp(ln_sr)) > 0.3  # a profile that varies: the test is not the identity
    n = x / r[:, None]
    nn = n[:, :, None] * n[:, None, :]
    mat = (nn / jnp.exp(ln_sr)[:, None, None]
           + (jnp.eye(3) - nn) / jnp.exp(ln_st)[:, None, None])
    v_prime = jnp.einsum("mij,mj->mi", mat, v)
    log_det = jnp.linalg.slogdet(mat)[1]
    # the joint is ν(x) p(v|x) with the same ν: ln p(v|x) = ln f − ln ν
    w_prime = jnp.concatenate([x, v_prime], -1)
    np.testing.assert_array_equal(scaled.log_density(x), plain.log_density(x))
    np.testing.assert_allclose(scaled.log_prob(stars[:200]), plain.log_prob(w_prime) + log_det,
                               rtol=1e-12, atol=1e-12)
    drawn = scaled.sample_velocities(jax.random.key(5), x[:20], 3)
    unscaled = plain.sample_velocities(jax.random.key(5), x[:20], 3)
    np.testing.assert_allclose(jnp.einsum("mij,mkj->mki", mat[:20], drawn), unscaled,
                               rtol=1e-10, atol=1e-12)
    # standardisation: in ten radial bins of the stars, the rms scaled v_r and v_t/√2 are ~1
    xs, vs = stars[:, :3], stars[:, 3:]
    u = scaled.profile.scaled_cartesian(xs, vs)[0]
    rs = jnp.linalg.norm(xs, axis=-1)
    u_r = jnp.sum(xs * u, -1) / rs
    u_t2 = jnp.sum(u**2, -1) - u_r**2
    order = jnp.argsort(rs)
    for b in jnp.array_split(order, 10):
        assert abs(float(jnp.sqrt(jnp.mean(u_r[b] ** 2))) - 1) < 0.15
        assert abs(float(jnp.sqrt(jnp.mean(u_t2[b] / 2))) - 1) < 0.15


def test_scaled_conditional_scores_match_finite_differences(x64):
    """Scores through the velocity scaling (which depends on x through σ(r) and the radial
    direction) against central differences of log_prob, and the factors' scores add up."""
    stars, scaled, _ = _scaled_pair()
    w = stars[:6]
    h = 1e-6
    eye = jnp.eye(6)
    fd = jnp.stack([(scaled.log_prob(w + h * e) - scaled.log_prob(w - h * e)) / (2 * h)
                    for e in eye], -1)
    got = jnp.concatenate(scaled.score(w), -1)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)
    px, pv = scaled.velocity_scores(w[:, :3], w[:, 3:])
    np.testing.assert_allclose(scaled.density_score(w[:, :3]) + px, got[:, :3], rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(pv, got[:, 3:], rtol=1e-9, atol=1e-12)


def test_scaled_conditional_model_files(tmp_path):
    """A scaled DF's model file keeps its profile; a file written before `scale_velocities`
    existed (its constructor arguments without the key) loads unscaled, as it was trained."""
    from deeppot._framed import read_framed, write_framed
    from deeppot.modelfile import load_model, save_model

    stars, scaled, _ = _scaled_pair()
    back, _ = load_model(save_model(tmp_path / "scaled.eqx", scaled, {}))
    assert back.profile is not None
    np.testing.assert_array_equal(back.log_prob(stars[:32]), scaled.log_prob(stars[:32]))

    plain = _tiny("spherical").standardise(stars)
    path = save_model(tmp_path / "plain.eqx", plain, {})
    header, body = read_framed(path, kind="model file", magic="deeppot-model", versions=(2,),
                               body_only=())
    del header["model"]["arguments"]["dict"]["scale_velocities"]  # an older file
    write_framed(tmp_path / "old.eqx", header, body)
    old, _ = load_model(tmp_path / "old.eqx")
    assert old.profile is None
    np.testing.assert_array_equal(old.log_prob(stars[:32]), plain.log_prob(stars[:32]))


# ---------------------------------------------------------------------- the logistic mixture


def _mixture_df(stars):
    """A standardised spherical ConditionalDF whose ν is a logistic mixture with its weights,
    locations and scales moved off their initial values (so the checks see uneven ones)."""
    import paramax

    df = ConditionalDF(jax.random.key(5), symmetry="spherical", transformer="affine",
                       flow_layers=2, nn_width=8, nn_depth=1, chunk_size=64,
                       density_model="logistic_mixture", density_components=5)
    df = df.standardise(stars)
    params, static = eqx.partition(df.density, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(6), len(leaves))
    leaves = [a + 0.7 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    df = eqx.tree_at(lambda d: d.density, df,
                     eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static))
    mix = paramax.unwrap(df.density)
    w = np.exp(np.asarray(mix.log_normalized_weights, np.float64))
    mu = np.asarray(mix.dist.bijection.loc, np.float64)[:, 0]
    s = np.asarray(mix.dist.bijection.scale, np.float64)[:, 0]
    return df, (w, mu, s, float(df.y_loc[0]), float(df.y_scale[0]))


def _mixture_in_ln_r(params, ln_r):
    """The density of ln r under the mixture, and its CDF, with scipy (independent of flowjax):
    ln r = y_loc + y_scale y, y ~ Σ w_k Logistic(μ_k, s_k)."""
    from scipy import stats

    w, mu, s, y_loc, y_scale = params
    y = (np.asarray(ln_r, np.float64)[..., None] - y_loc) / y_scale
    pdf = np.sum(w * stats.logistic.pdf(y, mu, s), -1) / y_scale
    return pdf, np.sum(w * stats.logistic.cdf(y, mu, s), -1)


def test_logistic_mixture_density_is_normalised_and_matches_scipy(x64):
    stars = PlummerDF(r_max=10.0).sample(jax.random.key(0), 2048)
    df, params = _mixture_df(stars)
    assert len(params[0]) == 5 and np.ptp(params[0]) > 0.05 and np.ptp(params[2]) > 0.05
    # ν(x) = p_{ln r}(ln r) / (4π r³) against scipy, at the stars' positions
    x = stars[:200, :3]
    r = np.linalg.norm(np.asarray(x), axis=-1)
    want = np.log(_mixture_in_ln_r(params, np.log(r))[0]) - np.log(4 * np.pi) - 3 * np.log(r)
    np.testing.assert_allclose(df.log_density(x), want, rtol=1e-10, atol=1e-10)
    # ∫ ν d³x = ∫ ν(r) 4π r³ d ln r = 1 (the tails are exponential in ln r)
    ln_r = np.linspace(-80.0, 80.0, 400001)
    pts = jnp.zeros((ln_r.size, 3)).at[:, 0].set(jnp.exp(ln_r))
    integrand = np.exp(np.asarray(df.log_density(pts)) + np.log(4 * np.pi) + 3 * ln_r)
    assert abs(np.trapezoid(integrand, ln_r) - 1.0) < 1e-6


def test_logistic_mixture_samples_follow_it():
    from scipy import stats

    stars = PlummerDF(r_max=10.0).sample(jax.random.key(0), 2048)
    df, params = _mixture_df(stars)
    x = df.sample(jax.random.key(7), 4000)[:, :3]
    ln_r = np.log(np.linalg.norm(np.asarray(x, np.float64), axis=-1))
    assert stats.kstest(ln_r, lambda t: _mixture_in_ln_r(params, t)[1]).pvalue > 1e-3
    # a mixture moved elsewhere is rejected by the same test (it has the power to fail)
    shifted = (*params[:3], params[3] + 0.5, params[4])
    assert stats.kstest(ln_r, lambda t: _mixture_in_ln_r(shifted, t)[1]).pvalue < 1e-3
    # the directions are isotropic
    assert np.all(np.abs(np.mean(np.asarray(x) / np.exp(ln_r)[:, None], 0)) < 0.06)


def test_logistic_mixture_scores_match_finite_differences(x64):
    stars = PlummerDF(r_max=10.0).sample(jax.random.key(0), 2048)
    df, _ = _mixture_df(stars)
    x = stars[:8, :3]
    h = 1e-6
    fd = jnp.stack([(df.log_density(x + h * e) - df.log_density(x - h * e)) / (2 * h)
                    for e in jnp.eye(3)], -1)
    np.testing.assert_allclose(df.density_score(x), fd, rtol=1e-6, atol=1e-6)
    # smooth: the radial score along a fine grid has no jumps (bounded second differences)
    r = jnp.geomspace(0.1, 10.0, 2001)
    g = df.density_score(jnp.zeros((r.size, 3)).at[:, 0].set(r))[:, 0] * r
    assert float(jnp.max(jnp.abs(jnp.diff(g, 2)))) < 1e-3


def test_logistic_mixture_model_files(tmp_path):
    """The density model round-trips through a model file; a file written before it existed
    (its constructor arguments without the keys) loads with a flow ν, as it was trained."""
    from deeppot._framed import read_framed, write_framed
    from deeppot.modelfile import load_model, save_model

    stars = PlummerDF(r_max=10.0).sample(jax.random.key(0), 512)
    df, _ = _mixture_df(stars)
    back, _ = load_model(save_model(tmp_path / "mix.eqx", df, {}))
    assert dict(back.architecture)["density_model"] == "logistic_mixture"
    assert dict(back.architecture)["density_components"] == 5
    np.testing.assert_array_equal(back.log_prob(stars[:32]), df.log_prob(stars[:32]))

    plain = _tiny("spherical").standardise(stars)
    path = save_model(tmp_path / "plain.eqx", plain, {})
    header, body = read_framed(path, kind="model file", magic="deeppot-model", versions=(2,),
                               body_only=())
    for name in ("density_model", "density_components"):  # an older file
        del header["model"]["arguments"]["dict"][name]
    write_framed(tmp_path / "old.eqx", header, body)
    old, _ = load_model(tmp_path / "old.eqx")
    assert dict(old.architecture)["density_model"] == "flow"
    np.testing.assert_array_equal(old.log_prob(stars[:32]), plain.log_prob(stars[:32]))


def test_logistic_mixture_bad_arguments():
    with pytest.raises(ValueError, match="density_model must be one of"):
        ConditionalDF(jax.random.key(0), symmetry="spherical", density_model="gaussian")
    with pytest.raises(ValueError, match="needs a 1-D density factor"):
        ConditionalDF(jax.random.key(0), symmetry="spherical", density_symmetry="none",
                      density_model="logistic_mixture")
    with pytest.raises(ValueError, match="needs a 1-D density factor"):
        ConditionalDF(jax.random.key(0), symmetry="axisymmetric",
                      density_model="logistic_mixture")
    with pytest.raises(ValueError, match="density_components must be at least 1"):
        ConditionalDF(jax.random.key(0), symmetry="spherical",
                      density_model="logistic_mixture", density_components=0)
