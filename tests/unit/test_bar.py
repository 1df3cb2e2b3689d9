"""Barred mocks with known pattern speed: the exact Jacobi DF, the orbit-integrated disk,
their truth records, and the rotating-system diagnostics and terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import deeppot as dp
from deeppot import evaluate, mocks
from deeppot.orbits import jacobi_integral

OMEGA = mocks._bar.PATTERN_SPEED


@pytest.fixture(scope="module")
def jacobi():
    """A small exact barred catalogue and its DF (float64)."""
    with jax.enable_x64(True):
        cat = mocks.jacobi_bar(jax.random.key(0), 4096, bar_angle=0.3)
        df = mocks.truth_df(cat.meta)
    return cat, df


def test_barred_potential_truth_round_trip(x64):
    pot = mocks.barred_potential(bar_mass=0.25, bar_angle=-0.4)
    desc = mocks.describe_potential(pot)
    assert desc["class"] == "CompositePotential"
    assert desc["components"]["bar"]["class"] == "LongMuraliBar"
    back = mocks.truth_potential({"truth": desc})
    x = jnp.array([[0.3, -0.2, 0.1], [1.2, 0.7, -0.3]])
    np.testing.assert_allclose(back.potential(x), pot.potential(x), rtol=1e-14)
    np.testing.assert_allclose(back.gradient(x), pot.gradient(x), rtol=1e-13)
    with pytest.raises(TypeError, match="bar_mas"):
        mocks.barred_potential(bar_mas=0.3)  # a misspelt parameter is refused


def test_corotation_and_lagrange_point(x64):
    pot = mocks.barred_potential()
    r_cr = mocks.corotation_radius(pot, OMEGA)
    v_c = mocks.azimuthal_circular_velocity(pot, [r_cr])[0]
    np.testing.assert_allclose(v_c / r_cr, OMEGA, rtol=1e-8)
    r_l1, e_l1 = mocks.lagrange_point(pot, OMEGA)
    # L1 is an equilibrium in the rotating frame: gravity balances the centrifugal force
    g = np.asarray(pot.gradient(jnp.array([r_l1, 0.0, 0.0])))
    np.testing.assert_allclose(g[0], OMEGA**2 * r_l1, rtol=1e-6)
    np.testing.assert_allclose(g[1:], 0.0, atol=1e-12)
    # a star at rest in the rotating frame at L1 has inertial velocity Ω × x
    v = np.array([[0.0, OMEGA * r_l1, 0.0]])
    np.testing.assert_allclose(jacobi_integral(pot, [[r_l1, 0, 0]], v, OMEGA), e_l1, rtol=1e-12)
    assert 0.9 * r_cr < r_l1 < 1.2 * r_cr


def test_jacobi_df_scores_are_exact_and_stationary_only_at_the_pattern_speed(jacobi, x64):
    cat, df = jacobi
    w = jnp.asarray(cat.w[:64])
    sx, sv = df.score(w)
    auto = jax.vmap(jax.grad(lambda p: df.log_prob(p)))(w)
    np.testing.assert_allclose(jnp.concatenate([sx, sv], -1), auto, rtol=1e-10, atol=1e-10)
    truth = mocks.truth_potential(cat.meta)
    g = truth.gradient(w[:, :3])
    size = jnp.sum(jnp.abs(g * sv), -1) + jnp.sum(jnp.abs(w[:, 3:] * sx), -1)
    for omega, stationary in ((OMEGA, True), (0.0, False), (0.95 * OMEGA, False)):
        r = dp.RotatingFrame(omega=[0, 0, omega]).residual(g, w[:, :3], w[:, 3:], sx, sv)
        rel = jnp.abs(r) / size
        if stationary:
            assert float(jnp.max(rel)) < 1e-12
        else:
            assert float(jnp.median(rel)) > 1e-4


def test_jacobi_df_is_normalised(jacobi, x64):
    """∫ f = 1: the space integral by plain Monte Carlo in the sampling box (the velocity
    integral is a closed form)."""
    _, df = jacobi
    n = 400_000
    box = np.array([df.r_cut, df.r_cut, df.z_max])
    x = (2 * np.asarray(jax.random.uniform(jax.random.key(5), (n, 3), jnp.float64)) - 1) * box
    rho = np.exp(np.asarray(df._log_space_density(jnp.asarray(x))))
    z_space = np.prod(2 * box) * rho.mean()
    err = np.prod(2 * box) * rho.std() / np.sqrt(n)
    total = z_space * np.exp(df.log_velocity_constant - df.log_norm)
    assert abs(total - 1) < 4 * err / z_space + 1e-3


def test_jacobi_df_samples_follow_the_df(jacobi, x64):
    """Rotating-frame speeds follow q = u²/(2(E₀ − Φ_eff)) ~ Beta(3/2, n + 1); the space
    density's profile matches the quadrature grid's; E_J < E₀ inside r_cut."""
    cat, df = jacobi
    x, v = cat.x, cat.v
    e_j = np.asarray(df.jacobi_integral(jnp.asarray(cat.w)))
    assert np.all(e_j < df.e_max) and np.all(np.hypot(x[:, 0], x[:, 1]) < df.r_cut)
    gap = df.e_max - np.asarray(df.effective_potential(jnp.asarray(x)))
    u = v - OMEGA * np.stack([-x[:, 1], x[:, 0], np.zeros(len(x))], 1)
    q = np.sum(u * u, 1) / (2 * gap)
    assert stats.kstest(q, stats.beta(1.5, df.index + 1).cdf).pvalue > 1e-3
    # the distribution of gap over the stars against the ρ-weighted grid
    g = np.linspace(-1, 1, 81)
    X, Y, Z = np.meshgrid(g * df.r_cut, g * df.r_cut, g * df.z_max, indexing="ij")
    pts = jnp.asarray(np.stack([X, Y, Z], -1).reshape(-1, 3))
    rho = np.exp(np.asarray(df._log_space_density(pts)))
    gap_grid = df.e_max - np.asarray(df.effective_potential(pts))
    order = np.argsort(gap_grid)
    cdf = np.cumsum(rho[order]) / rho.sum()
    emp = np.searchsorted(np.sort(gap), gap_grid[order], side="right") / len(gap)
    assert np.max(np.abs(emp - cdf)) < 0.04


def test_jacobi_mock_is_stationary_in_its_frame_only(jacobi, x64):
    """d⟨g⟩/dt of exact samples: zero within noise in the bar's frame; the bar's
    quadrupole turns at Ω_p in the inertial one."""
    cat, _ = jacobi
    truth = mocks.truth_potential(cat.meta)
    rot = evaluate.stationarity_moments(truth, dp.RotatingFrame(omega=[0, 0, OMEGA]),
                                        cat.x, cat.v)
    assert max(abs(m["z"]) for m in rot.values()) < 4.5
    inertial = evaluate.stationarity_moments(truth, dp.InertialFrame(), cat.x, cat.v)
    assert max(abs(inertial[k]["z"]) for k in ("x²−y²", "2xy")) > 8
    # and d⟨2xy⟩/dt = 2Ω_p ⟨x² − y²⟩ − ... for a rigidly turning pattern
    q = np.mean(cat.x[:, 0] ** 2 - cat.x[:, 1] ** 2)
    p = np.mean(2 * cat.x[:, 0] * cat.x[:, 1])
    expected = {"x²−y²": -2 * OMEGA * p, "2xy": 2 * OMEGA * q}
    for k, value in expected.items():
        np.testing.assert_allclose(inertial[k]["rate"], value, atol=5 * inertial[k]["stderr"])


def test_barred_disk_conserves_the_jacobi_integral():
    pot, x0, v0, dt, n_steps = mocks.bar_initial_conditions(jax.random.key(1), 64, n_bar=1)
    assert np.all(n_steps >= 0) and n_steps.max() > 0
    cat = mocks.barred_disk(jax.random.key(1), 64, n_bar=1)
    assert cat.meta["integration"]["jacobi_error_max"] < 1e-5
    assert cat.meta["frame"]["omega"] == [0.0, 0.0, OMEGA]
    assert "truth_df" not in cat.meta
    truth = mocks.truth_potential(cat.meta)
    e0 = jacobi_integral(truth, x0, v0, OMEGA)
    np.testing.assert_allclose(jacobi_integral(truth, cat.x, cat.v, OMEGA), e0, rtol=1e-5)


def test_sources_are_registered():
    assert dp.registry.sources["bar"] is mocks.barred_disk
    assert dp.registry.sources["bar_jacobi"] is mocks.jacobi_bar
    assert getattr(mocks.jacobi_bar, "exact_df", False)
    assert not getattr(mocks.barred_disk, "exact_df", False)


@pytest.mark.parametrize("bad", [{"e_frac": 1.2}, {"e_frac": 0.0}, {"index": -1.0},
                                 {"pattern_speed": -0.5}])
def test_jacobi_bar_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        mocks.jacobi_bar(jax.random.key(0), 16, **bad)


def test_omega_landscape_has_its_minimum_at_the_pattern_speed(jacobi, x64):
    cat, df = jacobi
    truth = mocks.truth_potential(cat.meta)
    sx, sv = df.score(jnp.asarray(cat.w))
    scores = dp.ScoreSample(cat.x, cat.v, sx, sv)
    model = dp.PotentialModel(truth, dp.RotatingFrame(omega=[0, 0, 0.4]))
    grid = OMEGA * np.array([0.9, 0.98, 1.0, 1.02, 1.1])
    land = evaluate.omega_landscape(model, scores, dp.terms.Stationarity(), grid)
    assert np.argmin(land["loss"]) == 2 and land["loss"][2] < 1e-10
    assert np.all(np.diff(land["loss"][:3]) < 0) and np.all(np.diff(land["loss"][2:]) > 0)
    with pytest.raises(ValueError, match="omega"):
        evaluate.omega_landscape(dp.PotentialModel(truth), scores, dp.terms.Stationarity(),
                                 grid)


def test_nonaxisymmetric_force(x64):
    disk = dp.MiyamotoNagai(1.0, 1.0, 0.2)
    bar = dp.LongMuraliBar(0.3, 1.0, 0.3, 0.2, angle=0.5)
    x = np.random.default_rng(0).normal(size=(32, 3)) * [1, 1, 0.2]
    np.testing.assert_allclose(evaluate.nonaxisymmetric_force(disk, x), 0.0, atol=1e-14)
    # additive, and the disk adds nothing
    np.testing.assert_allclose(evaluate.nonaxisymmetric_force(disk + bar, x),
                               evaluate.nonaxisymmetric_force(bar, x), atol=1e-14)
    res = evaluate.bar_force_residuals(disk + bar, bar + disk, x)
    np.testing.assert_allclose(res["bar_force"], 0.0, atol=1e-12)


def test_in_plane_force_residual_and_cylinder_region(x64):
    truth = dp.MiyamotoNagai(1.0, 1.0, 0.2)
    off = dp.MiyamotoNagai(1.05, 1.0, 0.2)  # every force 5% stronger
    x = np.array([[0.5, 0.1, 0.05], [1.0, -0.4, 0.2], [2.5, 0.0, 0.5]])
    res = evaluate.residuals(off, truth, x)
    np.testing.assert_allclose(res["force_plane"], 0.05, rtol=1e-10)
    mask = evaluate.cylinder_region(res, 0.2, 1.5, 0.3)
    np.testing.assert_array_equal(mask, [True, True, False])
    assert "force_plane" in evaluate.summarise(res, mask)


def test_pipeline_report_cylinder_region_and_pattern_speed(x64):
    """`[evaluate] region = "cylinder"` summarises the tracers inside R ∈ [r_min, r_max],
    |z| ≤ z_max, and the report carries the catalogue's true Ω next to the fitted one."""
    from deeppot.pipeline import parse_config
    from deeppot.pipeline.report import evaluate_model

    truth = dp.MiyamotoNagai(1.0, 1.0, 0.2)
    model = dp.PotentialModel(dp.MiyamotoNagai(1.05, 1.0, 0.2),
                              dp.RotatingFrame(omega=[0.0, 0.0, 0.5]))
    x = np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 1.0, 0.3]
    cat = dp.PhaseSpaceCatalog(x, np.zeros_like(x), meta={"frame": {"omega": [0, 0, 0.55]}})
    cfg = parse_config({"evaluate": {"region": "cylinder", "r_min": 0.2, "r_max": 1.0,
                                     "z_max": 0.3, "plots": False}}).evaluate
    ev = evaluate_model(cfg, model, cat, truth=truth)
    R = np.hypot(x[:, 0], x[:, 1])
    inside = (R >= 0.2) & (R <= 1.0) & (np.abs(x[:, 2]) <= 0.3)
    assert ev["region"] == "R ∈ [0.2, 1], |z| ≤ 0.3"
    assert ev["accuracy"]["force"]["n"] == inside.sum()
    np.testing.assert_allclose(ev["accuracy"]["force"]["median"], 0.05, rtol=1e-8)
    assert ev["frame"]["omega_true"] == [0.0, 0.0, 0.55]


def test_azimuthal_mean_penalty(x64):
    """It sees only the free part's axisymmetric field: the whole of an axisymmetric free
    part, and the monopole of a bar."""
    axi = dp.Axisymmetric.mlp(key=jax.random.key(0), width=8, depth=2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(64, 3)) * [1, 1, 0.2])
    scores = dp.ScoreSample(x, x, x, x)
    term = dp.terms.AzimuthalMeanPenalty(component="plummer")
    model = dp.PotentialModel(dp.CompositePotential(axisymmetric=axi, plummer=dp.Plummer()))
    phi = model.potential.potential(x)
    expected = jnp.mean(dp.Plummer().potential(x) ** 2) / jnp.var(phi)
    np.testing.assert_allclose(term(model, scores), expected, rtol=1e-10)
    bar = dp.LongMuraliBar(0.3, 1.0, 0.3, 0.2)
    model = dp.PotentialModel(dp.CompositePotential(axisymmetric=axi, bar=bar))
    angles = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    turns = [np.array([[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]])
             for a in angles]  # x @ turn: x rotated by a about z
    monopole = np.mean([np.asarray(bar.potential(np.asarray(x) @ turn)) for turn in turns],
                       axis=0)
    expected = np.mean(monopole**2) / np.var(np.asarray(model.potential.potential(x)))
    np.testing.assert_allclose(dp.terms.AzimuthalMeanPenalty(component="bar")(model, scores),
                               expected, rtol=1e-4)
    with pytest.raises(ValueError, match="neural_potential"):
        dp.terms.AzimuthalMeanPenalty()(model, scores)


def test_axisymmetric_plus_neural_works_with_the_split_terms():
    pot = dp.potentials.axisymmetric_plus_neural(key=jax.random.key(0), width=8, depth=2,
                                                 free_width=4)
    assert list(pot) == ["axisymmetric", "neural_potential"]
    assert pot["neural_potential"].net.weights[0].shape == (4, 4)  # free_width; inputs x, r
    x = jax.random.normal(jax.random.key(1), (16, 3))
    scores = dp.ScoreSample(x, x, x, x)
    model = dp.PotentialModel(pot, dp.RotatingFrame(omega=[0, 0, 0.5]))
    for term in (dp.terms.SymmetryPenalty(), dp.terms.AzimuthalMeanPenalty()):
        assert np.isfinite(float(term(model, scores)))
