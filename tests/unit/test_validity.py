"""Validity regions and the outer tail: exact truth from closed-form potentials."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot._framed import read_framed, write_framed
from deeppot.export import for_export, symmetry
from deeppot.pipeline.stages import score_positions
from deeppot.potentials import RAY_BLEND_WIDTHS
from deeppot.validity import INSIDE, OUTSIDE, SHELL, ValidityRegion, region_for, smootherstep
from tests.models import ANALYTIC, autodiff_reference


def _ball(n=20000, radius=2.0, seed=0):
    """Points uniform in a ball: r quantile q is radius q^(1/3)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 3))
    r = radius * rng.uniform(size=n) ** (1 / 3)
    return r[:, None] * u / np.linalg.norm(u, axis=-1, keepdims=True)


def _spherical(r_in=0.2, r_shell=1.5, r_out=2.5):
    return ValidityRegion(kind="spherical", quantiles=(0.01, 0.9, 0.99), scales=(),
                          bounds=(r_in, r_shell, r_out), radii=(r_in, r_shell, r_out), n=100)


def test_spherical_region_of_a_uniform_ball_has_its_quantile_radii():
    region = ValidityRegion.from_positions(_ball(), "spherical")
    want = 2.0 * np.array([0.01, 0.9, 0.99]) ** (1 / 3)
    # sampling: the 1% quantile of r³ to ~7% (2.3% in r), the others to < 0.5%
    assert np.all(np.abs(np.array(region.radii) / want - 1) < [0.07, 0.01, 0.01])
    np.testing.assert_allclose(region.bounds, region.radii)
    x = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 1.97], [10.0, 0.0, 0.0]])
    np.testing.assert_array_equal(region.classify(x), [INSIDE, INSIDE, SHELL, OUTSIDE])
    v = np.asarray(region.validity(x))
    assert v[0] == 1 and v[1] == 1 and 0 < v[2] < 1 and v[3] == 0


def test_validity_falls_monotonically_across_the_shell():
    region = _spherical()
    r = np.linspace(1.0, 3.0, 201)
    v = np.asarray(region.validity(np.stack([r, 0 * r, 0 * r], -1)))
    assert np.all(np.diff(v) <= 0)
    assert v[r <= 1.5].min() == 1 and v[r >= 2.5].max() == 0
    # the midpoint of the shell: the smootherstep is one half there
    assert float(region.validity(np.array([2.0, 0.0, 0.0]))) == pytest.approx(0.5)


def test_a_flat_disc_of_points_gives_a_flat_axisymmetric_region():
    rng = np.random.default_rng(1)
    n = 20000
    R = 3.0 * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0, 2 * np.pi, n)
    z = rng.uniform(-0.2, 0.2, n)
    x = np.stack([R * np.cos(phi), R * np.sin(phi), z], -1)
    region = region_for(dp.MiyamotoNagai(1.0, 1.0, 0.1), x)
    assert region.kind == "axisymmetric"
    np.testing.assert_allclose(region.scales, [3.0 * 0.99**0.5, 0.2 * 0.99], rtol=0.02)
    # in the plane at R = 1 the points are; 1 above it (the same r) they are not
    assert int(region.classify(np.array([1.0, 0.0, 0.0]))) == INSIDE
    assert int(region.classify(np.array([0.0, 0.0, 1.0]))) == OUTSIDE
    # exactly the quantile fractions of the points are inside and within the outer edge
    labels = np.asarray(region.classify(x))
    assert np.mean(labels == INSIDE) == pytest.approx(0.9, abs=2e-3)
    assert np.mean(labels != OUTSIDE) == pytest.approx(0.99, abs=2e-3)


def test_a_lopsided_cloud_gives_a_box_for_a_free_form_network():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (5000, 3)) * np.array([4.0, 2.0, 1.0])
    region = region_for(dp.LongMuraliBar(1.0, 1.0, 0.2, 0.1, angle=0.3), x)
    assert region.kind == "box"
    np.testing.assert_allclose(region.scales, [3.96, 1.98, 0.99], rtol=0.03)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(kind="cube"), "kind must be one of"),
    (dict(quantiles=(0.5, 0.4, 0.9)), "three increasing fractions"),
    (dict(x=np.ones((8, 3))), "at least 16 points"),
    (dict(x=np.full((20, 3), np.nan)), "must be finite"),
    (dict(x=np.zeros((20, 2))), r"shape \(n, 3\)"),
    (dict(x=np.c_[np.ones((20, 2)), np.zeros(20)], kind="box"), "no extent"),
])
def test_bad_region_input_is_refused(kwargs, match):
    args = dict(x=_ball(100), kind="spherical") | kwargs
    with pytest.raises(ValueError, match=match):
        ValidityRegion.from_positions(args.pop("x"), **args)


def test_region_dict_round_trips():
    region = ValidityRegion.from_positions(_ball(1000), "spherical")
    assert ValidityRegion.from_dict(json.loads(json.dumps(region.to_dict()))) == region


def test_kepler_joined_to_a_keplerian_tail_is_itself(x64):
    pot = dp.Kepler(m_tot=0.9, G=2.0)
    tailed = dp.WithTail(pot, _spherical())
    assert float(tailed.amplitude) == pytest.approx(0.9, rel=1e-12)
    assert float(tailed.offset) == pytest.approx(0.0, abs=1e-12)
    x = np.geomspace(0.3, 300.0, 50)[:, None] * np.array([0.6, 0.0, 0.8])
    np.testing.assert_allclose(tailed.potential(x), pot.potential(x), rtol=1e-12)
    np.testing.assert_allclose(tailed.gradient(x), pot.gradient(x), rtol=1e-12)
    np.testing.assert_allclose(tailed.laplacian(x), 0.0, atol=1e-12)


def test_plummer_truncated_at_its_region_keeps_its_true_far_field(x64):
    """The Keplerian tail fitted on r in [5, 8] of a Plummer sphere (r_s = 0.5): far out the
    force is the true one to the mass the shell sees, M (1 + r_s²/r²)^(-3/2) > 0.99 M."""
    pot = dp.Plummer(m_tot=1.3, r_s=0.5)
    tailed = dp.WithTail(pot, _spherical(0.05, 5.0, 8.0))
    lo = (1 + 0.5**2 / 5.0**2) ** -1.5  # the smallest enclosed fraction the shell sees
    assert lo * 1.3 < float(tailed.amplitude) < 1.3
    x = np.geomspace(8.0, 800.0, 40)[:, None] * np.array([0.0, 0.6, -0.8])
    force = np.linalg.norm(np.asarray(tailed.gradient(x)), axis=-1)
    true = np.linalg.norm(np.asarray(pot.gradient(x)), axis=-1)
    assert np.max(np.abs(force / true - 1)) < 1 - lo + 1e-3
    # Φ → 0 far out, as the truth: the fitted constant is the truth's to the same order
    assert abs(float(tailed.offset)) < (1 - lo) * 1.3 / 5.0
    np.testing.assert_allclose(tailed.potential(x), pot.potential(x),
                               atol=(1 - lo) * 1.3 / 5.0)


@pytest.mark.parametrize("name", [
    "plummer", "miyamoto_nagai",
    *(pytest.param(n, marks=pytest.mark.slow)
      for n in ("nfw", "hernquist", "isochrone", "logarithmic", "power_law_cutoff"))])
def test_no_outward_force_to_100_times_the_region(name, x64):
    pot = ANALYTIC[name]()
    tailed = dp.WithTail(pot, _spherical())
    rng = np.random.default_rng(3)
    u = rng.normal(size=(64, 3))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    x = (np.geomspace(0.05, 250.0, 300)[:, None, None] * u[None]).reshape(-1, 3)
    g_r = np.sum(np.asarray(tailed.gradient(x)) * x, axis=-1)
    assert np.all(g_r > 0)
    # and beyond the region the circular speed falls as Kepler's, sqrt(G A / r)
    far = np.geomspace(2.5, 250.0, 20)[:, None] * np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(tailed.circular_velocity(far),
                               np.sqrt(float(tailed.amplitude) / far[:, 0]), rtol=1e-10)


def _shell_points(r, n_dirs=8, seed=5):
    """Points at radii r along n_dirs random directions; shape (len(r) * n_dirs, 3)."""
    u = np.random.default_rng(seed).normal(size=(n_dirs, 3))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    return (np.asarray(r)[:, None, None] * u[None]).reshape(-1, 3)


@pytest.mark.parametrize("name", ["miyamoto_nagai",
                                  pytest.param("plummer", marks=pytest.mark.slow)])
def test_the_join_is_smooth_and_exact_on_either_side(name, x64):
    """Across the shell r in [1.5, 2.5]: Φ, ∇Φ and the blend's Laplacian formula equal plain
    autodiff of Φ; at both ends of the join Φ and ∇Φ agree from either side to 1e-6; inside
    it is the inner potential, beyond it exactly −A/r + c with force A x / r³."""
    pot = ANALYTIC[name]()
    tailed = dp.WithTail(pot, _spherical())
    assert tailed.join == (1.5, 2.5)
    sets = {"shell": _shell_points(np.linspace(1.3, 2.7, 15)),
            "inside": _shell_points(np.linspace(0.1, 1.5, 8)),
            "beyond": _shell_points(np.geomspace(2.5, 2500.0, 12)),
            "fit": _shell_points(np.linspace(1.5, 2.5, 9), n_dirs=64)}
    for i, r_join in enumerate(tailed.join):
        sets[f"below{i}"] = _shell_points([r_join * (1 - 1e-9)])
        sets[f"above{i}"] = _shell_points([r_join * (1 + 1e-9)])
    sizes = np.cumsum([len(v) for v in sets.values()])[:-1]
    x_all = jnp.asarray(np.concatenate(list(sets.values())))

    def split(fields):
        return [dict(zip(sets, np.split(np.asarray(f), sizes))) for f in fields]

    phi, grad, lap = split(jax.vmap(tailed._value_grad_laplacian)(x_all))
    phi_in, grad_in, _ = split(jax.vmap(pot._value_grad_laplacian)(x_all))
    ref_phi, ref_grad, ref_hess = autodiff_reference(tailed, jnp.asarray(sets["shell"]))
    np.testing.assert_allclose(phi["shell"], ref_phi, rtol=1e-12)
    np.testing.assert_allclose(grad["shell"], ref_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lap["shell"], np.trace(ref_hess, axis1=-2, axis2=-1),
                               rtol=1e-8, atol=1e-10)
    for i in range(2):
        for field in (phi, grad):
            lo, hi = field[f"below{i}"], field[f"above{i}"]
            assert np.max(np.abs(hi - lo)) < 1e-6 * np.max(np.abs(lo))
    np.testing.assert_allclose(phi["inside"], phi_in["inside"], rtol=1e-14)
    np.testing.assert_allclose(grad["inside"], grad_in["inside"], rtol=1e-14)
    beyond = sets["beyond"]
    r = np.linalg.norm(beyond, axis=-1)
    a, c = float(tailed.amplitude), float(tailed.offset)
    np.testing.assert_allclose(phi["beyond"], -a / r + c, rtol=1e-12)
    np.testing.assert_allclose(grad["beyond"], a * beyond / r[:, None] ** 3, rtol=1e-12)
    np.testing.assert_allclose(lap["beyond"], 0.0, atol=1e-12)
    # the fitted mass is a weighted mean of the truth's r² ∂Φ/∂r over the shell
    kepler_mass = np.sum(grad_in["fit"] * sets["fit"], axis=-1) * np.linalg.norm(
        sets["fit"], axis=-1)
    assert kepler_mass.min() < a < kepler_mass.max()


class _Repulsive(dp.AbstractPotential):
    """Φ = +1/r: the force points outwards."""

    units: dp.UnitSystem = eqx.field(default=dp.units.dimensionless, static=True)

    def _potential(self, x):
        return 1 / jnp.linalg.norm(x)

    def _value_grad_laplacian(self, x):
        r = jnp.linalg.norm(x)
        return 1 / r, -x / r**3, jnp.zeros(())


def test_a_force_pointing_outwards_on_the_shell_cannot_take_a_tail():
    with pytest.raises(dp.TailFitError, match="points away"):
        dp.WithTail(_Repulsive(), _spherical())


def test_a_user_tail_is_fitted_in_amplitude():
    # a Hernquist's own shape as the tail: amplitude 1, constant 0, exactly
    pot = dp.Hernquist(m_tot=2.0, r_s=0.5)
    tailed = dp.WithTail(pot, _spherical(), tail=dp.Hernquist(m_tot=1.0, r_s=0.5))
    assert float(tailed.amplitude) == pytest.approx(2.0, rel=1e-5)
    assert float(tailed.offset) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="tail must be 'kepler'"):
        dp.WithTail(pot, _spherical(), tail="plummer")
    with pytest.raises(TypeError, match="already has a tail"):
        dp.WithTail(tailed, _spherical())


def test_a_tail_keeps_the_potentials_symmetry():
    region = _spherical()
    assert symmetry(dp.WithTail(dp.Plummer(), region)) == "spherical"
    assert symmetry(dp.WithTail(dp.MiyamotoNagai(1.0, 1.0, 0.1), region)) == "axisymmetric"


def _model_with_region():
    pot = dp.MiyamotoNagai(m_tot=1.0, a=1.0, b=0.1)
    return dp.PotentialModel(pot).with_region(_ball(4000, radius=4.0) * [1, 1, 0.1])


def test_model_files_round_trip_the_region_and_the_tail(tmp_path):
    model = _model_with_region()
    dp.save_model(tmp_path / "m.eqx", model)
    back, _ = dp.load_model(tmp_path / "m.eqx")
    assert back.region == model.region
    x = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [40.0, 0.0, 0.0]])
    np.testing.assert_array_equal(back.validity(x), model.validity(x))
    tailed = model.with_tail()
    dp.save_model(tmp_path / "t.eqx", tailed)
    back, _ = dp.load_model(tmp_path / "t.eqx")
    np.testing.assert_allclose(back.potential.potential(x), tailed.potential.potential(x),
                               rtol=1e-6)


def test_model_files_from_before_regions_load_without_one(tmp_path):
    path = dp.save_model(tmp_path / "m.eqx", _model_with_region())
    header, body = read_framed(path, kind="model file", magic="deeppot-model", versions=(2,),
                               body_only=())
    del header["model"]["fields"]["region"]  # what an older deeppot wrote
    write_framed(tmp_path / "old.eqx", header, body)
    old, _ = dp.load_model(tmp_path / "old.eqx")
    assert old.region is None
    with pytest.raises(ValueError, match="no validity region"):
        old.validity(np.zeros(3))


def test_exports_continue_a_model_with_a_region_by_default():
    model = _model_with_region()
    tailed, region = for_export(model)
    assert isinstance(tailed, dp.WithTail) and region == model.region
    bare, region = for_export(model, tail=False)
    assert bare is model.potential and region == model.region
    plain, none = for_export(dp.Plummer())
    assert isinstance(plain, dp.Plummer) and none is None
    with pytest.raises(TypeError, match="deeppot potential or PotentialModel"):
        for_export("plummer")


def test_score_positions_subsample_a_score_sample_and_a_score_file(tmp_path):
    rng = np.random.default_rng(4)
    scores = dp.ScoreSample(*(rng.normal(size=(64, 3)) for _ in range(4)))
    np.testing.assert_array_equal(score_positions(scores), np.asarray(scores.x))
    some = score_positions(scores, n=16)
    assert some.shape == (16, 3)
    # a subset of the rows, each row once, in the sample's order
    rows = [int(np.flatnonzero(np.all(np.asarray(scores.x) == p, axis=1))[0]) for p in some]
    assert rows == sorted(set(rows))
    scores.save(tmp_path / "s.h5")
    on_disk = dp.load_scores(tmp_path / "s.h5", in_memory=False)
    assert isinstance(on_disk, dp.ScoreFile)
    np.testing.assert_array_equal(score_positions(on_disk, n=16), some)


class _ExtrapolatesOutwards(dp.AbstractPotential):
    """A Miyamoto–Nagai disc (a = 1, b = 0.1) less smootherstep((z² − 0.36) / 3.64): the
    same potential for |z| ≤ 0.6, then falling by 1 up to |z| = 2 (above the poles a force
    pointing away from the disc, up to 1.3 against its ≈ 0.2 towards it), as a network fitted
    to a flat disc of stars may extrapolate."""

    units: dp.UnitSystem = eqx.field(default=dp.units.dimensionless, static=True)

    def _potential(self, x):
        disc = dp.MiyamotoNagai(m_tot=1.0, a=1.0, b=0.1)._potential(x)
        return disc - smootherstep((x[2] ** 2 - 0.36) / (4.0 - 0.36))

    def _value_grad_laplacian(self, x):
        f = self._potential
        return f(x), jax.grad(f)(x), jnp.trace(jax.hessian(f)(x))


def _flat():
    """A disc's region: R to 4, |z| to 0.3 (the shell starts at 0.8 of both); the join
    over r in [2.5, 4]: above the poles the region ends at |z| = 0.24, far inside it."""
    return ValidityRegion(kind="axisymmetric", quantiles=(0.01, 0.9, 0.99), scales=(4.0, 0.3),
                          bounds=(0.05, 0.8, 1.0), radii=(0.1, 2.5, 4.0), n=100)


def test_a_flat_region_is_continued_along_rays_not_by_the_extrapolation(x64):
    """Between a flat region and the tail's join the network's extrapolation is replaced by
    the ray continuation: no outward force anywhere to 100× the region (the inner potential
    has thousands of such points there), the inner potential itself where the region is, the
    continuation's value and radial force from the region's surface, and Φ, ∇Φ, ∇²Φ of the
    blend are checked against autodiff in the slow test below."""
    inner = _ExtrapolatesOutwards()
    tailed = dp.WithTail(inner, _flat())
    rng = np.random.default_rng(6)
    u = rng.normal(size=(64, 3))
    u = np.r_[u / np.linalg.norm(u, axis=-1, keepdims=True), [[0, 0, 1.0], [0, 0, -1.0]]]
    x = (np.geomspace(0.02, 400.0, 100)[:, None, None] * u[None]).reshape(-1, 3)
    assert np.sum(np.sum(np.asarray(inner.gradient(x)) * x, -1) <= 0) > 300
    assert np.all(np.sum(np.asarray(tailed.gradient(x)) * x, -1) > 0)
    assert tailed.continued
    # inside the region (before its shell) and the join: the inner potential, exactly
    R = np.linspace(0.1, 2.4, 7)
    inside = np.stack([R, 0 * R, 0.2 * np.cos(R)], -1)
    np.testing.assert_allclose(tailed.potential(inside), inner.potential(inside), rtol=1e-14)
    np.testing.assert_allclose(tailed.gradient(inside), inner.gradient(inside), rtol=1e-14)
    # above the pole (beyond the blend, before the join): from x₁ = (0, 0, 0.24), where
    # the region's shell starts, Φ_top − ΔΦ ℓ / (z − 0.24 + ℓ), rising to the tail's Φ at r = 4
    z = np.array([0.5, 0.8, 1.5, 2.4])
    x1 = np.array([0.0, 0.0, 0.24])
    p1, g1 = float(inner.potential(x1)), float(np.asarray(inner.gradient(x1))[2])
    top = -float(tailed.amplitude) / 4.0 + float(tailed.offset)
    ell = (top - p1) / g1
    pole = np.stack([0 * z, 0 * z, z], -1)
    np.testing.assert_allclose(tailed.potential(pole), top - (top - p1) * ell / (z - 0.24 + ell),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(tailed.gradient(pole))[:, 2],
                               (top - p1) * ell / (z - 0.24 + ell) ** 2, rtol=1e-10)
    # which is the disc's own vertical force to 40% (the network's points away from it)
    disc = dp.MiyamotoNagai(m_tot=1.0, a=1.0, b=0.1)
    np.testing.assert_allclose(np.asarray(tailed.gradient(pole))[:, 2],
                               np.asarray(disc.gradient(pole))[:, 2], rtol=0.4)


@pytest.mark.slow
def test_the_ray_continuations_derivatives_are_those_of_its_potential(x64):
    """Φ, ∇Φ, ∇²Φ of the continued blend equal autodiff of Φ (fourth derivatives of the
    inner potential: slow to compile) across the region's shell, the gap and the join."""
    tailed = dp.WithTail(_ExtrapolatesOutwards(), _flat())
    u = np.random.default_rng(6).normal(size=(16, 3))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    # the blend's exact derivatives across the region's shell (e from 0.8 to 1), the gap
    # and the join, against autodiff of Φ
    probe = (np.linspace(0.05, 5.0, 24)[:, None, None] * u[None]).reshape(-1, 3)
    probe = np.r_[probe, (np.linspace(0.2, 0.6, 15)[:, None]
                          * np.array([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8]])[:, None]).reshape(-1, 3)]
    phi, grad, lap = jax.vmap(tailed._value_grad_laplacian)(jnp.asarray(probe))
    ref_phi, ref_grad, ref_hess = autodiff_reference(tailed, jnp.asarray(probe))
    np.testing.assert_allclose(phi, ref_phi, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lap, np.trace(ref_hess, axis1=-2, axis2=-1), rtol=1e-7,
                               atol=1e-9)


@pytest.mark.parametrize("kind", ["axisymmetric", pytest.param("box", marks=pytest.mark.slow)])
def test_the_ray_continuation_is_smooth_across_the_regions_surfaces(kind, x64):
    """Φ and ∇Φ agree from either side of the surfaces where the continuation's blend starts
    and ends (e = bounds[1], and RAY_BLEND_WIDTHS shell widths on) and of the join's radii,
    to 1e-6, along rays through the poles, the plane and between (a box's extent: the 8-norm
    of its scaled coordinates)."""
    inner = _ExtrapolatesOutwards()
    if kind == "axisymmetric":
        region = _flat()
    else:
        region = ValidityRegion(kind="box", quantiles=(0.01, 0.9, 0.99),
                                scales=(4.0, 3.0, 0.3), bounds=(0.05, 0.8, 1.0),
                                radii=(0.1, 2.5, 4.0), n=100)
    tailed = dp.WithTail(inner, region)
    dirs = np.array([[0, 0, 1.0], [1.0, 0, 0], [0.6, 0.0, 0.8], [0.5, 0.5, 0.5**0.5],
                     [0.1, 0.0, 0.995]])
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    # the scaled extent per unit radius along each ray (a box's: its smooth 8-norm)
    if kind == "box":
        e = np.sum((dirs / np.array(region.scales)) ** 8, -1) ** (1 / 8)
    else:
        e = np.asarray(region.extent(dirs))
    b0, b1 = region.bounds[1:]
    ends = (b0, b0 + RAY_BLEND_WIDTHS * (b1 - b0))  # where the continuation blends in
    for radius in (*(b / e for b in ends), *(np.full(len(dirs), r) for r in region.radii[1:])):
        lo = radius[:, None] * (1 - 1e-9) * dirs
        hi = radius[:, None] * (1 + 1e-9) * dirs
        for f in (tailed.potential, tailed.gradient):
            a, b = np.asarray(f(lo)), np.asarray(f(hi))
            assert np.max(np.abs(a - b)) < 1e-6 * max(np.max(np.abs(a)), 1e-3)
