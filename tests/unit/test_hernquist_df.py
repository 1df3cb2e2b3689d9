"""The exact Hernquist DFs (isotropic and Osipkov–Merritt): scores, normalisation, sampling,
and agreement with galpy's DFs (an independent oracle)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import deeppot as dp
from deeppot.flows import HernquistDF

# (m_tot, r_s, r_a, r_max): isotropic and anisotropic, scaled and truncated
CASES = {
    "iso": (1.0, 1.0, None, None),
    "iso_scaled_truncated": (1.3, 0.7, None, 50.0),
    "om": (1.0, 1.0, 1.0, None),
    "om_strong_truncated": (2.0, 1.5, 0.5, 100.0),
}


N_SAMPLE = 2**15


def _df(name):
    m, a, r_a, r_max = CASES[name]
    return HernquistDF(m_tot=m, r_s=a, r_a=r_a, r_max=r_max)


@functools.cache
def _sample(name):
    """2^15 float64 samples per case, drawn once (each DF and size compiles its sampler)."""
    with jax.enable_x64(True):
        return _df(name).sample(jax.random.key(0), N_SAMPLE)


def _q(df, w):
    """Osipkov–Merritt Q = −E − L²/2r_a² (the binding energy when isotropic)."""
    x, v = w[..., :3], w[..., 3:]
    e = 0.5 * jnp.sum(v * v, -1) + df.potential.potential(x)
    q = -e
    if df.r_a is not None:
        q = q - 0.5 * jnp.sum(jnp.cross(x, v) ** 2, -1) / df.r_a**2
    return q


@pytest.mark.parametrize("name", sorted(CASES))
def test_scores_equal_autodiff_and_finite_differences(name, x64):
    df = _df(name)
    w = _sample(name)[:512]
    dx, dv = df.score(w)
    auto = jax.vmap(jax.grad(lambda p: df.log_prob(p)))(w)
    score = np.concatenate([dx, dv], -1)
    np.testing.assert_allclose(score, auto, rtol=1e-8, atol=1e-10 * np.abs(auto).max())
    lp, dx2, dv2 = df.log_prob_and_score(w)
    np.testing.assert_allclose(lp, df.log_prob(w), rtol=1e-14)
    np.testing.assert_allclose(np.concatenate([dx2, dv2], -1), score, rtol=1e-14)
    h = 1e-6
    eye = jnp.eye(6)
    fd = jnp.stack(
        [(df.log_prob(w + h * eye[i]) - df.log_prob(w - h * eye[i])) / (2 * h) for i in range(6)],
        axis=-1,
    )
    # away from the support's edge, where ln f ~ ln Q curves on the scale of Q
    ok = np.asarray(_q(df, w)) * df.r_s / df.m_tot > 1e-3
    assert ok.mean() > 0.95
    np.testing.assert_allclose(score[ok], fd[ok], rtol=1e-4, atol=1e-5 * np.abs(auto).max())


def test_s_function_equals_its_integral(x64):
    """S(q) = ∫₀^q 128 t⁴ (1 − t²)^{3/2} dt to round-off on both sides of the switch from
    its series (small q) to the closed form, and dg/dQ equals autodiff of g."""
    from deeppot.flows._analytic import _HQ_SERIES_Q2, _hernquist_g, _hernquist_s

    q2 = np.geomspace(1e-8, 0.9, 40)
    q2 = np.concatenate([q2, _HQ_SERIES_Q2 * (1 + np.array([-1e-12, 1e-12]))])
    exact = [integrate.quad(lambda t: 128 * t**4 * (1 - t * t) ** 1.5, 0, math.sqrt(a),
                            epsabs=0, epsrel=1e-13)[0] for a in q2]
    np.testing.assert_allclose(_hernquist_s(jnp.asarray(q2)), exact, rtol=1e-12)
    for k in (0.0, 2.0):
        g = lambda a: _hernquist_g(a, 1 - a, k)[0]  # noqa: E731
        dg = _hernquist_g(jnp.asarray(q2), 1 - jnp.asarray(q2), k)[1]
        auto = jax.vmap(jax.grad(g))(jnp.asarray(q2))
        np.testing.assert_allclose(dg, auto, rtol=1e-10)  # the total dg/dQ, δ = 1 − Q


@pytest.mark.parametrize("name", sorted(CASES))
def test_log_prob_equals_galpy(name, x64):
    """galpy's isotropicHernquistdf / osipkovmerrittHernquistdf, normalised to the mass."""
    galpy_df = pytest.importorskip("galpy.df")
    from galpy.potential import HernquistPotential

    df = _df(name)
    pot = HernquistPotential(amp=2 * df.m_tot, a=df.r_s)  # galpy's amplitude is 2GM
    w = _sample(name)[512:1024]
    q = np.asarray(_q(df, w))
    if df.r_a is None:
        f = galpy_df.isotropicHernquistdf(pot=pot).fE(-q)
    else:
        f = galpy_df.osipkovmerrittHernquistdf(pot=pot, ra=df.r_a).fQ(q)
    expected = np.log(f / df.m_tot) - df.log_mass
    np.testing.assert_allclose(df.log_prob(w), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["iso_scaled_truncated", "om_strong_truncated"])
def test_normalised_by_importance_sampling(name, x64):
    """∫ p d³x d³v = 1: positions from the Hernquist density (sampled exactly, checked by
    the KS test below), velocities uniform in the escape-speed ball."""
    df = _df(name)
    k2, k3 = jax.random.split(jax.random.key(2))
    n = N_SAMPLE
    x = _sample(name)[:, :3]
    v_esc = jnp.sqrt(-2 * df.potential.potential(x))[:, None]
    g = jax.random.normal(k2, (n, 3))
    v = g / jnp.linalg.norm(g, axis=-1, keepdims=True) * v_esc
    v = v * jax.random.uniform(k3, (n, 1)) ** (1 / 3)
    rho = df.potential.density(x) / df.m_tot / math.exp(df.log_mass)
    q = rho / (4 / 3 * jnp.pi * v_esc[:, 0] ** 3)
    ratio = jnp.exp(df.log_prob(jnp.concatenate([x, v], -1))) / q
    assert abs(float(ratio.mean()) - 1) < 5 * float(ratio.std()) / math.sqrt(n)


def _radius_cdf(df):
    a = df.r_s
    m_max = math.exp(df.log_mass)
    return lambda r: (r / (r + a)) ** 2 / m_max


def _q_cdf(df):
    """CDF of Q̃ = Q a / GM from N(Q) ∝ f(Q) ∫ r² √(2(Ψ − Q)) / (1 + r²/r_a²) dr (r < r_max)."""
    k = 0.0 if df.r_a is None else (df.r_s / df.r_a) ** 2
    r_max = math.inf if df.r_max is None else df.r_max / df.r_s
    grid = np.linspace(0.0, 1.0, 4001)[1:-1]
    # f(Q̃) from the unit DF at rest on the radius where Ψ(r) = Q̃ (L = 0 there)
    unit = HernquistDF(r_a=None if df.r_a is None else df.r_a / df.r_s)
    w = np.zeros((grid.size, 6))
    w[:, 0] = 1 / grid - 1
    f = np.exp(np.asarray(unit.log_prob(jnp.asarray(w))))

    def states(q):
        r_q = min(1 / q - 1, r_max)
        return integrate.quad(
            lambda r: r * r * math.sqrt(max(2 * (1 / (1 + r) - q), 0.0)) / (1 + k * r * r),
            0.0, r_q, limit=200,
        )[0]

    dens = f * np.array([states(q) for q in grid])
    cdf = np.concatenate([[0.0], integrate.cumulative_trapezoid(dens, grid)])
    cdf /= cdf[-1]
    return lambda q: np.interp(q, grid, cdf)


@pytest.mark.parametrize("name", ["iso_scaled_truncated", "om_strong_truncated"])
def test_samples_follow_the_density(name, x64):
    """KS tests of the radii (against M(r)) and of Q (against the DF times the density of
    states); the Osipkov–Merritt anisotropy β(r) = r² / (r² + r_a²)."""
    df = _df(name)
    w = _sample(name)
    lp = df.log_prob(w)
    assert bool(jnp.all(jnp.isfinite(lp)))
    r = np.linalg.norm(np.asarray(w[:, :3]), axis=-1)
    assert r.max() < df.r_max
    assert stats.kstest(r, _radius_cdf(df)).pvalue > 1e-3
    q = np.asarray(_q(df, w)) * df.r_s / df.m_tot
    assert stats.kstest(q, _q_cdf(df)).pvalue > 1e-3
    if df.r_a is not None:
        x, v = np.asarray(w[:, :3]), np.asarray(w[:, 3:])
        vr = np.sum(x * v, -1) / r
        vt2 = np.sum(v * v, -1) - vr**2
        for lo, hi in [(0.2, 0.4), (0.8, 1.2), (3.0, 5.0)]:
            m = (r > lo * df.r_s) & (r < hi * df.r_s)
            beta = 1 - np.mean(vt2[m]) / (2 * np.mean(vr[m] ** 2))
            rm = np.median(r[m])
            assert abs(beta - rm**2 / (rm**2 + df.r_a**2)) < 0.05


@pytest.mark.parametrize("name", ["iso", "om"])
def test_stein_identity(name, x64):
    """E_p[∇·h + h·∇ln p] = 0 for h = Q² A w: sampler, log_prob and scores agree in all six
    dimensions (A picks positions, speeds, and the radial velocity, which sees β(r))."""
    df = _df(name)
    w = _sample(name)
    score = jnp.concatenate(df.score(w), -1)

    def radial_v(p):
        x, v = p[:3], p[3:]
        rhat = x / jnp.linalg.norm(x)
        return jnp.concatenate([jnp.zeros(3), jnp.dot(rhat, v) * rhat])

    maps = {
        "x": lambda p: jnp.concatenate([p[:3], jnp.zeros(3)]),
        "v": lambda p: jnp.concatenate([jnp.zeros(3), p[3:]]),
        "v_r": radial_v,
    }
    for label, a in maps.items():
        def h(p):
            return _q(df, p) ** 2 * a(p)

        div = jax.vmap(lambda p: jnp.trace(jax.jacfwd(h)(p)))(w)
        terms = np.asarray(div + jnp.sum(jax.vmap(h)(w) * score, -1))
        mean, err = terms.mean(), terms.std() / math.sqrt(terms.size)
        assert abs(mean) < 5 * err, (label, mean, err)


def test_stein_identity_detects_wrong_anisotropy(x64):
    """The radial-velocity Stein test has the power to tell isotropic from anisotropic."""
    om = _df("om")
    w = _sample("iso")
    score = jnp.concatenate(om.score(w), -1)  # the wrong model's scores

    def h(p):
        x, v = p[:3], p[3:]
        rhat = x / jnp.linalg.norm(x)
        return _q(om, p) ** 2 * jnp.concatenate([jnp.zeros(3), jnp.dot(rhat, v) * rhat])

    ok = jnp.isfinite(score).all(-1)
    div = jax.vmap(lambda p: jnp.trace(jax.jacfwd(h)(p)))(w[ok])
    terms = np.asarray(div + jnp.sum(jax.vmap(h)(w[ok]) * score[ok], -1))
    assert abs(terms.mean()) > 10 * terms.std() / math.sqrt(terms.size)


def test_sampling_in_chunks(x64):
    """Rejection sampling inside `lax.map` chunks: valid, reproducible, chunk-independent
    log-densities."""
    df = _df("om_strong_truncated")
    chunked = df.with_chunk_size(8)
    w, lp = chunked.sample_and_log_prob(jax.random.key(7), 33)
    assert w.shape == (33, 6) and bool(jnp.all(jnp.isfinite(lp)))
    np.testing.assert_allclose(lp, df.log_prob(w), rtol=1e-12)
    np.testing.assert_allclose(chunked.log_prob(w), df.log_prob(w), rtol=1e-14)
    np.testing.assert_array_equal(chunked.sample(jax.random.key(7), 33), w)


def test_outside_support_and_validation():
    df = HernquistDF(r_max=10.0)
    w = jnp.array([[11.0, 0, 0, 0, 0, 0], [0.1, 0, 0, 2.0, 0, 0]])
    assert bool(jnp.all(jnp.isneginf(df.log_prob(w))))
    assert bool(jnp.isfinite(HernquistDF().log_prob(w[0])))
    # a bound but radially too extended orbit is outside the OM support only
    w_t = jnp.array([2.0, 0, 0, 0, 0.5, 0])
    assert bool(jnp.isfinite(HernquistDF().log_prob(w_t)))
    assert bool(jnp.isneginf(HernquistDF(r_a=0.3).log_prob(w_t)))
    with pytest.raises(ValueError, match="r_a"):
        HernquistDF(r_a=0.1)
    with pytest.raises(ValueError, match="r_s"):
        HernquistDF(r_s=0.0)
    with pytest.raises(ValueError, match="r_max"):
        HernquistDF(r_max=-1.0)
    assert HernquistDF(r_a=0.25).r_a == 0.25


def test_potential_is_the_truth(x64):
    """The DF is stationary in its potential: the CBE residual vanishes at its samples."""
    df = _df("om_strong_truncated")
    s = dp.sample_scores(df, jax.random.key(6), 1024)
    model = dp.PotentialModel(df.potential)
    residual = dp.terms.Stationarity().residual(model, s, dp.terms.Fields(
        *model.value_grad_laplacian(s.x)))
    scale = np.linalg.norm(s.dlnf_dv, axis=-1) * np.linalg.norm(
        df.potential.gradient(s.x), axis=-1)
    assert np.max(np.abs(residual) / scale) < 1e-10
