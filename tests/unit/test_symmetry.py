"""Symmetry-reduced DFs against exact truth: the Plummer DF written in reduced coordinates.

The isotropic Plummer DF f(E) is both spherical and axisymmetric. Its reduced densities
are known in closed form, independently of the wrapper code:

- spherical, q = (r, v_r, v_t): p_q = 8π² r² v_t f(E), and with u = (ln r, v_r, ln v_t)
  p_u = p_q · r · v_t;
- spherical with the tangential velocity as a 2-D vector b, q = (r, v_r, b):
  p_q = 4π r² f(E), and with u = (ln r, v_r, b) p_u = p_q · r;
- axisymmetric, q = (R, z, v_R, v_z, v_φ): p_q = 2π R f(E), and with
  u = (ln R, asinh(z/z₀), v_R, v_z, v_φ) p_u = p_q · R · z₀ cosh(u_z).

Wrapping those exact reduced densities must give back `PlummerDF` to float64 precision.
"""

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeppot.flows import (
    FFJORD,
    AbstractDF,
    Augmented,
    AxisymmetricDF,
    Ensemble,
    PlummerDF,
    Precondition,
    SphericalDF,
    SplineFlow,
    VelocityProfile,
    autodiff_score,
    symmetry_transform,
)
from deeppot.objectives import MaximumLikelihood
from deeppot.train import fit_df

TRUTH = PlummerDF(r_max=10.0)
Z0 = 0.3


def _log_f(r, v2):
    """ln p of the truncated Plummer DF at radius r and speed² v2 (through PlummerDF)."""
    zero = jnp.zeros_like(r)
    return TRUTH._log_prob_chunk(
        jnp.stack([r, zero, zero, jnp.sqrt(v2), zero, zero], -1))


@typing.final
class ReducedPlummerSpherical(AbstractDF):
    """The exact Plummer density in u = (ln r, v_r, ln v_t)."""

    chunk_size: int = eqx.field(static=True, default=4096)

    def _log_prob_chunk(self, u):
        r, v_r, v_t = jnp.exp(u[:, 0]), u[:, 1], jnp.exp(u[:, 2])
        return (math.log(8 * math.pi**2) + 3 * jnp.log(r) + 2 * jnp.log(v_t)
                + _log_f(r, v_r**2 + v_t**2))

    def _score_chunk(self, u):
        return autodiff_score(self._log_prob_chunk, u)

    def _sample_chunk(self, key, m):
        w = TRUTH.sample(key, m)
        x, v = w[:, :3], w[:, 3:]
        r = jnp.linalg.norm(x, axis=-1)
        v_r = jnp.sum(x * v, -1) / r
        v_t = jnp.linalg.norm(jnp.cross(x, v), axis=-1) / r
        u = jnp.stack([jnp.log(r), v_r, jnp.log(v_t)], -1)
        return u, self._log_prob_chunk(u)


@typing.final
class ReducedPlummerAxisymmetric(AbstractDF):
    """The exact Plummer density in u = (ln R, asinh(z/z₀), v_R, v_z, v_φ)."""

    chunk_size: int = eqx.field(static=True, default=4096)

    def _log_prob_chunk(self, u):
        big_r, z = jnp.exp(u[:, 0]), Z0 * jnp.sinh(u[:, 1])
        r = jnp.sqrt(big_r**2 + z**2)
        v2 = jnp.sum(u[:, 2:] ** 2, -1)
        return (math.log(2 * math.pi) + 2 * jnp.log(big_r) + jnp.log(Z0 * jnp.cosh(u[:, 1]))
                + _log_f(r, v2))

    def _score_chunk(self, u):
        return autodiff_score(self._log_prob_chunk, u)

    def _sample_chunk(self, key, m):
        w = TRUTH.sample(key, m)
        big_r = jnp.hypot(w[:, 0], w[:, 1])
        c, s = w[:, 0] / big_r, w[:, 1] / big_r
        u = jnp.stack([jnp.log(big_r), jnp.arcsinh(w[:, 2] / Z0), c * w[:, 3] + s * w[:, 4],
                       w[:, 5], c * w[:, 4] - s * w[:, 3]], -1)
        return u, self._log_prob_chunk(u)


@typing.final
class ReducedPlummerVector(AbstractDF):
    """The exact Plummer density in u = (ln r, v_r, b), b the tangential velocity as a 2-D
    vector: invariant under rotations of b, as `SphericalDF(tangential="vector")` needs."""

    chunk_size: int = eqx.field(static=True, default=4096)
    pair_invariant: typing.ClassVar[bool] = True

    def _log_prob_chunk(self, u):
        r, v_r = jnp.exp(u[:, 0]), u[:, 1]
        return (math.log(4 * math.pi) + 3 * jnp.log(r)
                + _log_f(r, v_r**2 + jnp.sum(u[:, 2:] ** 2, -1)))

    def _score_chunk(self, u):
        return autodiff_score(self._log_prob_chunk, u)

    def _sample_chunk(self, key, m):
        k_w, k_a = jax.random.split(key)
        w = TRUTH.sample(k_w, m)
        x, v = w[:, :3], w[:, 3:]
        r = jnp.linalg.norm(x, axis=-1)
        v_r = jnp.sum(x * v, -1) / r
        v_t = jnp.linalg.norm(jnp.cross(x, v), axis=-1) / r
        alpha = jax.random.uniform(k_a, (m,), w.dtype, 0.0, 2.0 * math.pi)
        u = jnp.stack([jnp.log(r), v_r, v_t * jnp.cos(alpha), v_t * jnp.sin(alpha)], -1)
        return u, self._log_prob_chunk(u)


@typing.final
class ScaledReduced(AbstractDF):
    """An exact reduced density in (ln r, v_r, b) re-expressed in (ln r, v_r/σ_r(r),
    b/σ_t(r)) for a given `VelocityProfile`: p' = p · σ_r σ_t² (written here, independently
    of the wrapper's code)."""

    base: AbstractDF
    profile: VelocityProfile
    chunk_size: int = eqx.field(static=True)
    pair_invariant: typing.ClassVar[bool] = True

    def __init__(self, base, profile):
        self.base, self.profile, self.chunk_size = base, profile, 4096

    def _log_prob_chunk(self, u):
        ln_sr, ln_st = self.profile.log_sigma(jnp.exp(u[:, 0]))
        scale = jnp.stack([jnp.ones_like(ln_sr), jnp.exp(ln_sr), jnp.exp(ln_st),
                           jnp.exp(ln_st)], -1)
        return self.base._log_prob_chunk(u * scale) + ln_sr + 2 * ln_st

    def _score_chunk(self, u):
        return autodiff_score(self._log_prob_chunk, u)

    def _sample_chunk(self, key, m):
        raise NotImplementedError


def _wrapped(kind):
    if kind == "spherical":
        return SphericalDF(ReducedPlummerSpherical())
    if kind == "spherical_vector":
        return SphericalDF(ReducedPlummerVector(), tangential="vector")
    pre = Precondition(("log", "asinh", "identity", "identity", "identity"),
                       scale=jnp.array([1.0, Z0, 1.0, 1.0, 1.0]))
    return AxisymmetricDF(ReducedPlummerAxisymmetric(), precondition=pre)


@pytest.mark.parametrize("kind", ["spherical", "spherical_vector", "axisymmetric"])
def test_wrapped_reduced_plummer_is_plummer(kind, x64):
    df = _wrapped(kind)
    w = TRUTH.sample(jax.random.key(0), 512)
    np.testing.assert_allclose(df.log_prob(w), TRUTH.log_prob(w), rtol=1e-12, atol=1e-12)
    exact = jnp.concatenate(TRUTH.score(w), -1)
    got = jnp.concatenate(df.score(w), -1)
    np.testing.assert_allclose(got, exact, rtol=1e-9, atol=1e-9 * float(jnp.abs(exact).max()))
    lp, dx, dv = df.log_prob_and_score(w)
    np.testing.assert_allclose(lp, TRUTH.log_prob(w), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jnp.concatenate([dx, dv], -1), exact, rtol=1e-9,
                               atol=1e-9 * float(jnp.abs(exact).max()))


@pytest.mark.parametrize("kind", ["spherical", "spherical_vector",
                                  pytest.param("axisymmetric", marks=pytest.mark.slow)])
def test_wrapped_reduced_plummer_samples_are_plummer(kind, x64):
    """Samples (inner draw + uniform angles) follow the Plummer DF: consistent log-density
    and scores, the enclosed-mass profile, isotropic positions and velocities."""
    df = _wrapped(kind)
    n = 2**14
    w, lp = df.sample_and_log_prob(jax.random.key(1), n)
    np.testing.assert_allclose(lp, TRUTH.log_prob(w), rtol=1e-11, atol=1e-11)
    w2, lp2, dx, dv = df.sample_and_score(jax.random.key(2), 1024)
    np.testing.assert_allclose(lp2, TRUTH.log_prob(w2), rtol=1e-11, atol=1e-11)
    exact = jnp.concatenate(TRUTH.score(w2), -1)
    np.testing.assert_allclose(jnp.concatenate([dx, dv], -1), exact, rtol=1e-9,
                               atol=1e-9 * float(jnp.abs(exact).max()))
    r = jnp.linalg.norm(w[:, :3], axis=-1)
    frac, expected = float(jnp.mean(r < 1.0)), 2**-1.5 / (1000 / 101**1.5)
    assert abs(frac - expected) < 5 * math.sqrt(expected * (1 - expected) / n)
    # second moments of x and of v are isotropic (the angles are uniform), x·v averages 0
    for block in (w[:, :3], w[:, 3:]):
        m2 = jnp.mean(block**2, 0)
        assert float(jnp.max(jnp.abs(m2 / m2.mean() - 1))) < 0.05
    xv = jnp.sum(w[:, :3] * w[:, 3:], -1)
    assert abs(float(xv.mean())) < 5 * float(xv.std()) / math.sqrt(n)
    # the tangential velocity's direction is uniform about x̂ (spherical cases): the
    # angular momentum has no preferred direction
    ang = jnp.cross(w[:, :3], w[:, 3:])
    assert float(jnp.max(jnp.abs(ang.mean(0)) / (ang.std(0) / math.sqrt(n)))) < 5


def test_scaled_velocities_keep_the_density_exact(x64):
    """With `scale_velocities`, the wrapper of the exact reduced Plummer density in scaled
    velocities is the Plummer DF again (log_prob and scores): the profile's Jacobian and
    its radial derivative enter exactly. Sampling divides and multiplies consistently."""
    stars = TRUTH.sample(jax.random.key(40), 4096)
    profile = SphericalDF(ReducedPlummerVector(), tangential="vector",
                          scale_velocities=True).standardise(stars).profile
    assert float(jnp.max(jnp.abs(profile.coef[:, 2:]))) > 0  # a fitted, non-trivial profile
    df = eqx.tree_at(lambda d: d.profile, SphericalDF(
        ScaledReduced(ReducedPlummerVector(), profile), tangential="vector",
        scale_velocities=True), profile)
    w = TRUTH.sample(jax.random.key(41), 256)
    np.testing.assert_allclose(df.log_prob(w), TRUTH.log_prob(w), rtol=1e-12, atol=1e-12)
    exact = jnp.concatenate(TRUTH.score(w), -1)
    np.testing.assert_allclose(jnp.concatenate(df.score(w), -1), exact, rtol=1e-9,
                               atol=1e-9 * float(jnp.abs(exact).max()))
    q = df.reduced_coordinates(w)
    back = df._expand(jax.random.key(42), q)
    np.testing.assert_allclose(df.reduced_coordinates(back), q, rtol=1e-10, atol=1e-12)


def test_velocity_profile_recovers_power_laws(x64):
    """Stars with σ_r = 0.3 r^-½ and σ_t = 0.2 r^-1 (per component) over three decades in
    r: the fitted profiles match within a few percent, weights count like copies, and too
    few stars are refused."""
    k1, k2, k3 = jax.random.split(jax.random.key(43), 3)
    n = 2**15
    r = jnp.exp(jax.random.uniform(k1, (n,), minval=-2.0, maxval=5.0))
    v_r = 0.3 * r**-0.5 * jax.random.normal(k2, (n,))
    v_t = 0.2 / r * jnp.linalg.norm(jax.random.normal(k3, (n, 2)), axis=-1)
    fitted = VelocityProfile().fit(r, v_r, v_t)
    grid = jnp.exp(jnp.linspace(-1.5, 4.5, 13))
    ln_sr, ln_st = fitted.log_sigma(grid)
    np.testing.assert_allclose(jnp.exp(ln_sr), 0.3 * grid**-0.5, rtol=0.05)
    np.testing.assert_allclose(jnp.exp(ln_st), 0.2 / grid, rtol=0.05)
    counts = jax.random.randint(jax.random.key(44), (2048,), 1, 4)
    weighted = VelocityProfile(4, n_bins=8).fit(r[:2048], v_r[:2048], v_t[:2048],
                                             counts.astype(r.dtype))
    repeated = VelocityProfile(4, n_bins=8).fit(*(jnp.repeat(a[:2048], counts)
                                               for a in (r, v_r, v_t)))
    np.testing.assert_allclose(weighted.log_sigma(grid), repeated.log_sigma(grid), rtol=1e-8)
    with pytest.raises(ValueError, match="needs at least 128 stars"):
        VelocityProfile().fit(r[:100], v_r[:100], v_t[:100])
    with pytest.raises(ValueError, match="n_bins"):
        VelocityProfile(8, n_bins=4)
    with pytest.raises(ValueError, match="extrapolation"):
        VelocityProfile(extrapolation="flat")


def test_velocity_profile_continues_from_its_edges(x64):
    """Stars with a cored dispersion, σ = 0.4 (1 + r²)^-¼ (Plummer's), at r from 0.3 to
    10. Inside the data the profile is within 5%. Beyond its end knots (the first and last
    bins' centres) it goes on as the straight line in ln r it is there, value and slope
    continuous; inward that keeps the core nearly flat: at r = 0.1 and 0.03 its error is
    less than half that of the global power law (the continuation before)."""
    k1, k2, k3 = jax.random.split(jax.random.key(45), 3)
    n = 2**15
    r = jnp.exp(jax.random.uniform(k1, (n,), minval=math.log(0.3), maxval=math.log(10.0)))

    def sigma(r):
        return 0.4 * (1 + r**2) ** -0.25

    v_r = sigma(r) * jax.random.normal(k2, (n,))
    v_t = sigma(r) * jnp.linalg.norm(jax.random.normal(k3, (n, 2)), axis=-1)
    edge = VelocityProfile().fit(r, v_r, v_t)
    old = VelocityProfile(extrapolation="global").fit(r, v_r, v_t)
    assert edge.extrapolation == "edge" and old.extrapolation == "global"
    # the knots span the bins' centres, inside the data
    assert math.log(0.3) < float(edge.knots[0]) < float(edge.knots[-1]) < math.log(10.0)
    inside = jnp.geomspace(0.4, 8.0, 9)
    for ln_s in edge.log_sigma(inside):
        np.testing.assert_allclose(jnp.exp(ln_s), sigma(inside), rtol=0.05)
    centre = jnp.asarray([0.1, 0.03])
    for ln_edge, ln_old in zip(edge.log_sigma(centre), old.log_sigma(centre)):
        error = jnp.abs(ln_edge - jnp.log(sigma(centre)))
        assert bool(jnp.all(error < 0.5 * jnp.abs(ln_old - jnp.log(sigma(centre))))), error

    def ln_sr(s):
        return edge.log_sigma(jnp.exp(s))[0]

    slope = jax.vmap(jax.grad(ln_sr))
    for end in (edge.knots[0], edge.knots[-1]):  # C¹ across each end
        eps = 1e-6
        np.testing.assert_allclose(ln_sr(end - eps), ln_sr(end + eps), atol=1e-5)
        np.testing.assert_allclose(slope(jnp.asarray([end - eps])),
                                   slope(jnp.asarray([end + eps])), atol=1e-4)
    for beyond in (edge.knots[0] - jnp.asarray([0.5, 1.0, 2.0]),
                   edge.knots[-1] + jnp.asarray([0.5, 1.0, 2.0])):  # straight beyond
        np.testing.assert_allclose(slope(beyond), slope(beyond[:1]).repeat(3), rtol=1e-10)


def test_reduced_coordinates_and_jacobian_formulas(x64):
    w = jnp.array([[3.0, 4.0, 12.0, 1.0, -2.0, 0.5]])
    r = 13.0
    v = w[0, 3:]
    v_r = float(jnp.dot(w[0, :3], v)) / r
    v_t = math.sqrt(float(jnp.dot(v, v)) - v_r**2)
    sph = SphericalDF(ReducedPlummerSpherical())
    np.testing.assert_allclose(sph.reduced_coordinates(w)[0], [r, v_r, v_t], rtol=1e-13)
    axi = _wrapped("axisymmetric")
    v_big_r, v_phi = (3 * 1 + 4 * -2) / 5, (3 * -2 - 4 * 1) / 5
    np.testing.assert_allclose(axi.reduced_coordinates(w)[0], [5.0, 12.0, v_big_r, 0.5, v_phi],
                               rtol=1e-13)
    # ln p(w) = ln p_u(u) + ln|du/dq| + ln J: 1/(8π² r² v_t) · 1/(r v_t) for spherical
    u, log_j = sph._features(w[0])
    np.testing.assert_allclose(log_j, -math.log(8 * math.pi**2 * r**3 * v_t**2), rtol=1e-13)
    u, log_j = axi._features(w[0])
    np.testing.assert_allclose(
        log_j, -math.log(2 * math.pi * 5.0**2) - 0.5 * math.log(Z0**2 + 144.0), rtol=1e-13)
    # the tangential velocity as a vector (v_t, 0): 1/(4π r²) · 1/r, no 1/v_t
    vec = _wrapped("spherical_vector")
    np.testing.assert_allclose(vec.reduced_coordinates(w)[0], [r, v_r, v_t, 0.0], rtol=1e-13,
                               atol=1e-15)
    u, log_j = vec._features(w[0])
    np.testing.assert_allclose(log_j, -math.log(4 * math.pi * r**3), rtol=1e-13)


# ----------------------------------------------------------------------------- Precondition


def test_precondition_round_trip_log_det_and_fit(x64):
    pre = Precondition(("log", "asinh", "identity"), scale=jnp.array([1.0, 0.2, 1.0]))
    q = jnp.array([0.3, -0.7, 1.9])
    u, log_det = pre.transform_and_log_det(q)
    np.testing.assert_allclose(u, [math.log(0.3), math.asinh(-3.5), 1.9], rtol=1e-14)
    back, inv_log_det = pre.inverse_and_log_det(u)
    np.testing.assert_allclose(back, q, rtol=1e-13)
    np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-13)
    jac = jax.jacobian(pre.transform)(q)
    np.testing.assert_allclose(log_det, jnp.linalg.slogdet(jac)[1], rtol=1e-13)
    data = jnp.stack([jnp.linspace(0.1, 2, 101), jnp.linspace(-1, 1, 101),
                      jnp.zeros(101)], -1)
    fitted = Precondition(("log", "asinh", "identity"), quantile=0.5).fit(data)
    np.testing.assert_allclose(fitted.scale, [1.0, 0.5, 1.0], rtol=1e-12)


def test_precondition_and_wrapper_errors():
    with pytest.raises(ValueError, match="precondition kinds"):
        Precondition(("log", "cube"))
    with pytest.raises(ValueError, match="quantile"):
        Precondition(("asinh",), quantile=1.5)
    ffjord3 = FFJORD(jax.random.key(0), dim=3, n_blocks=1, width=4, depth=1)
    with pytest.raises(ValueError, match="r is positive"):
        SphericalDF(ffjord3, precondition=("identity", "identity", "log"))
    with pytest.raises(ValueError, match="v_r takes negative values"):
        SphericalDF(ffjord3, precondition=("log", "log", "log"))
    with pytest.raises(TypeError, match="sequence of kinds"):
        SphericalDF(ffjord3, precondition="log")
    with pytest.raises(ValueError, match="dim=5"):
        AxisymmetricDF(ffjord3)
    with pytest.raises(ValueError, match="needs 5 precondition kinds"):
        AxisymmetricDF(FFJORD(jax.random.key(0), dim=5, width=4, depth=1),
                       precondition=("log", "identity", "log"))
    with pytest.raises(TypeError, match="not trainable"):
        MaximumLikelihood()(SphericalDF(ReducedPlummerSpherical()), jnp.ones((4, 6)),
                            jax.random.key(0))
    with pytest.raises(TypeError, match="trainable"):
        Augmented(PlummerDF(), "spherical")
    with pytest.raises(ValueError, match="group"):
        Augmented(ffjord3, "cubic")
    with pytest.raises(ValueError, match="group"):
        symmetry_transform(jax.random.key(0), jnp.ones((2, 6)), "cubic")
    ffjord4 = FFJORD(jax.random.key(0), dim=4, n_blocks=1, width=4, depth=1)
    with pytest.raises(ValueError, match="tangential must be one of"):
        SphericalDF(ffjord3, tangential="polar")
    with pytest.raises(ValueError, match="pair_invariant=True"):
        SphericalDF(ffjord4, tangential="vector")
    with pytest.raises(ValueError, match="dim=4"):
        SphericalDF(ffjord3, tangential="vector")
    with pytest.raises(ValueError, match="unpreconditioned"):
        SphericalDF(ReducedPlummerVector(), tangential="vector",
                    precondition=("log", "identity", "asinh", "asinh"))


# ----------------------------------------------------------------------------- training


def test_fit_df_trains_a_wrapper_and_keeps_its_standardisation(x64):
    """fit_df sets the precondition scale and the inner standardisation from the reduced
    coordinates of the data and trains only the flow; NLL objectives are in physical units."""
    stars = TRUTH.sample(jax.random.key(3), 2048)
    df = AxisymmetricDF(FFJORD(jax.random.key(4), dim=5, n_blocks=1, width=8, depth=1))
    ready = df.standardise(stars)
    q = ready.reduced_coordinates(stars)
    np.testing.assert_allclose(ready.precondition.scale[1],
                               jnp.quantile(jnp.abs(q[:, 1]), 0.2), rtol=1e-12)
    u = jax.vmap(ready.precondition.transform)(q)
    np.testing.assert_allclose(ready.inner.loc, u.mean(0), rtol=1e-10, atol=1e-12)
    # no weight averaging: with fit_df's default EMA (0.998) 60 steps barely move the weights
    trained = fit_df(df, stars, key=jax.random.key(5), max_steps=60, batch_size=512,
                     objective="cfm", learning_rate=1e-2, warmup_steps=5, ema_decay=None,
                     progress=False)
    # the same points before and after: deterministic, so any clear gain is training
    assert float(trained.log_prob(stars).mean()) > float(ready.log_prob(stars).mean()) + 0.05
    for a, b in zip(trained.standardisation, ready.standardisation):
        np.testing.assert_array_equal(a, b)
    # no regularisation, so the exact-trace likelihood is the plain negative log-likelihood
    exact = MaximumLikelihood(trace="exact", reg_kinetic=0.0, reg_jacobian=0.0)
    loss = exact(trained, stars[:64], jax.random.key(6))
    np.testing.assert_allclose(loss, -trained.log_prob(stars[:64]).mean(), rtol=1e-6)


def test_pair_invariant_ffjord(x64):
    """`FFJORD(pair_invariant=True)`: its density is invariant under rotations and
    reflections of the last two coordinates (so any frame of the tangent plane gives the
    same p), its standardisation gives that pair no shift and one scale, and fit_df trains
    `SphericalDF(tangential="vector")` on reduced points whose second component is 0."""
    stars = TRUTH.sample(jax.random.key(30), 2048)
    df = SphericalDF(FFJORD(jax.random.key(31), dim=4, n_blocks=1, width=16, depth=2,
                            pair_invariant=True), tangential="vector")
    ready = df.standardise(stars)
    q = ready.reduced_coordinates(stars)
    assert float(jnp.max(jnp.abs(q[:, 3]))) == 0.0
    rms = float(jnp.sqrt(jnp.mean(q[:, 2] ** 2) / 2))
    np.testing.assert_allclose(ready.inner.loc[2:], [0.0, 0.0])
    np.testing.assert_allclose(ready.inner.scale[2:], [rms, rms], rtol=1e-10)
    trained = fit_df(df, stars, key=jax.random.key(32), max_steps=60, batch_size=512,
                     objective="cfm", learning_rate=1e-2, warmup_steps=5, ema_decay=None,
                     progress=False)
    assert float(trained.log_prob(stars).mean()) > float(ready.log_prob(stars).mean()) + 0.05
    inner = trained.inner
    u = jax.vmap(trained._features)(stars[:64])[0]
    for angle, flip in ((0.7, 1.0), (2.9, -1.0)):
        c, s = math.cos(angle), math.sin(angle)
        b = u[:, 2:] @ jnp.array([[c, s], [-s, c]]) * jnp.array([1.0, flip])
        np.testing.assert_allclose(inner._log_prob_chunk(u.at[:, 2:].set(b)),
                                   inner._log_prob_chunk(u), rtol=1e-7, atol=1e-7)


@pytest.mark.slow
def test_augmented_trains_on_transformed_batches(x64):
    flow = SplineFlow(jax.random.key(7), flow_layers=2, knots=4, nn_width=8, nn_depth=1)
    stars = TRUTH.sample(jax.random.key(8), 512)
    aug = Augmented(flow, "spherical").standardise(stars)
    w = stars[:64]
    np.testing.assert_allclose(aug.log_prob(w), aug.inner.log_prob(w), rtol=1e-14)
    key = jax.random.key(9)
    k_group, k_loss = jax.random.split(key)
    moved = symmetry_transform(k_group, w, "spherical")
    nll = MaximumLikelihood()
    np.testing.assert_allclose(nll(aug, w, key), nll(aug.inner, moved, k_loss), rtol=1e-14)
    # the standardisation saw rotated data: the three position scales are nearly equal
    s = aug.inner.scale[:3]
    assert float(s.max() / s.min()) < 1.2


@pytest.mark.parametrize("group", ["spherical", "axisymmetric", "mirror_z",
                                   "axisymmetric_mirror_z"])
def test_symmetry_transform_keeps_the_invariants(group, x64):
    w = TRUTH.sample(jax.random.key(10), 64)
    g = symmetry_transform(jax.random.key(11), w, group)
    x, v, gx, gv = w[:, :3], w[:, 3:], g[:, :3], g[:, 3:]
    np.testing.assert_allclose(jnp.linalg.norm(gx, axis=-1), jnp.linalg.norm(x, axis=-1),
                               rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(gx * gv, -1), jnp.sum(x * v, -1), rtol=1e-10,
                               atol=1e-12)
    if group != "spherical":
        np.testing.assert_allclose(jnp.abs(gx[:, 2]), jnp.abs(x[:, 2]), rtol=1e-12)
        lz, glz = x[:, 0] * v[:, 1] - x[:, 1] * v[:, 0], gx[:, 0] * gv[:, 1] - gx[:, 1] * gv[:, 0]
        np.testing.assert_allclose(glz, lz, rtol=1e-10, atol=1e-12)
    assert not np.allclose(g, w)


def test_ensemble_of_wrappers_and_wrapper_of_ensemble_agree(x64):
    """Ensemble(prob) of two wrapped exact DFs and the wrapper of the ensemble of the two
    inner DFs are the same density."""
    inner = [ReducedPlummerSpherical(), ReducedPlummerSpherical()]
    a = Ensemble([SphericalDF(m) for m in inner], average="prob")
    b = SphericalDF(Ensemble(inner, average="prob"))
    w = TRUTH.sample(jax.random.key(12), 64)
    np.testing.assert_allclose(a.log_prob(w), TRUTH.log_prob(w), rtol=1e-12)
    np.testing.assert_allclose(b.log_prob(w), TRUTH.log_prob(w), rtol=1e-12)
    np.testing.assert_allclose(jnp.concatenate(b.score(w), -1),
                               jnp.concatenate(TRUTH.score(w), -1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["spherical", "spherical_vector",
                                  pytest.param("axisymmetric", marks=pytest.mark.slow),
                                  pytest.param("augmented", marks=pytest.mark.slow)])
def test_wrappers_round_trip_through_model_files(kind, tmp_path):
    """`save_model` / `load_model` rebuild a wrapper (its precondition scales, its inner
    flow's weights and standardisation) exactly; `objectives` is not a stored field."""
    import deeppot as dp

    stars = TRUTH.sample(jax.random.key(13), 512)
    make = {
        "spherical": lambda: SphericalDF(FFJORD(jax.random.key(14), dim=3, width=8, depth=1)),
        "spherical_vector": lambda: SphericalDF(FFJORD(
            jax.random.key(14), dim=4, width=8, depth=1, pair_invariant=True),
            tangential="vector", scale_velocities=True),
        "axisymmetric": lambda: AxisymmetricDF(SplineFlow(
            jax.random.key(15), dim=5, flow_layers=1, knots=4, nn_width=8, nn_depth=1)),
        "augmented": lambda: Augmented(FFJORD(jax.random.key(16), width=8, depth=1),
                                       "spherical"),
    }
    df = make[kind]().standardise(stars)
    path = tmp_path / "df.eqx"
    dp.save_model(path, df)
    back, _ = dp.load_model(path)
    assert type(back) is type(df) and back.objectives == df.objectives
    for a, b in zip(back.standardisation, df.standardisation):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.log_prob(stars[:32]), df.log_prob(stars[:32]))


def test_profiles_from_older_model_files_keep_their_continuation(tmp_path):
    """A model file written before `VelocityProfile.extrapolation` existed loads with the
    global power law it was trained with, so its log_prob is what it was."""
    import deeppot as dp
    from deeppot._framed import read_framed, write_framed

    stars = TRUTH.sample(jax.random.key(17), 512)
    df = SphericalDF(FFJORD(jax.random.key(18), dim=4, width=8, depth=1, pair_invariant=True),
                     tangential="vector", scale_velocities=True)
    df = eqx.tree_at(lambda d: d.profile, df, VelocityProfile(extrapolation="global"))
    df = df.standardise(stars)
    path = dp.save_model(tmp_path / "df.eqx", df)
    header, body = read_framed(path, kind="model file", magic="deeppot-model", versions=(2,),
                               body_only=())
    del header["model"]["fields"]["profile"]["fields"]["extrapolation"]  # an older file
    write_framed(tmp_path / "old.eqx", header, body)
    old, _ = dp.load_model(tmp_path / "old.eqx")
    assert old.profile.extrapolation == "global"
    far = jnp.concatenate([stars[:8, :3] * 40.0, stars[:8, 3:]], -1)  # beyond the knots
    for w in (stars[:16], far):
        np.testing.assert_array_equal(old.log_prob(w), df.log_prob(w))


@pytest.mark.slow
def test_weighted_standardisation(x64):
    """Weights count like copies: integer weights standardise as the repeated points do,
    for the precondition's quantile and the inner flow's moments alike."""
    stars = TRUTH.sample(jax.random.key(17), 301)
    counts = jax.random.randint(jax.random.key(18), (301,), 1, 4)
    df = AxisymmetricDF(SplineFlow(jax.random.key(19), dim=5, flow_layers=1, knots=4,
                                   nn_width=4, nn_depth=1))
    weighted = df.standardise(stars, counts.astype(stars.dtype))
    repeated = df.standardise(jnp.repeat(stars, counts, axis=0))
    np.testing.assert_allclose(weighted.inner.loc, repeated.inner.loc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weighted.inner.scale, repeated.inner.scale, rtol=1e-10)
    # the lower weighted quantile against numpy's on the repeated points
    z = np.abs(np.repeat(np.asarray(stars[:, 2]), np.asarray(counts)))
    np.testing.assert_allclose(weighted.precondition.scale[1],
                               np.quantile(z, 0.2, method="inverted_cdf"), rtol=1e-12)
    with pytest.raises(ValueError, match="weights must have shape"):
        df.standardise(stars, jnp.ones(3))
