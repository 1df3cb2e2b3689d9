"""Known selection functions: values, gradients, the score correction and mock selection."""

import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.selection import (
    AbstractSelection,
    DistanceSelection,
    GridSelection,
    selection_from_description,
)


def _distance(units=None):
    return DistanceSelection([1.0, 0.0, 0.0], d_half=0.8, sigma_mag=0.5, units=units)


def test_distance_selection_values(x64):
    sel = _distance()
    x = jnp.array([[1.0, 0.8, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0], [1.0, 0.4, 0.0]])
    p = sel.probability(x)
    k = 5 / (0.5 * np.log(10))
    np.testing.assert_allclose(p, [0.5, 1.0, 1 / (1 + 5**k), 1 / (1 + 0.5**k)], rtol=1e-12)
    grad = sel.grad_log_selection(x)
    assert np.all(np.isfinite(grad)) and np.all(grad[1] == 0)  # finite at the observer
    # ∂ln S/∂x along the line of sight: −k/d · (d/d_half)^k / (1 + (d/d_half)^k)
    np.testing.assert_allclose(grad[0], [0.0, -k / 0.8 * 0.5, 0.0], rtol=1e-12)
    m = DistanceSelection.from_magnitudes([0, 0, 0], absolute_magnitude=0.0,
                                          magnitude_limit=15.0, sigma_mag=0.2)
    np.testing.assert_allclose(m.d_half, 10.0, rtol=1e-12)  # 10 pc · 10^3 = 10 kpc
    assert m.units.name == "galactic"
    np.testing.assert_allclose(m.probability([10.0, 0, 0] * u.kpc), 0.5, rtol=1e-6)


def test_selection_arguments_are_checked():
    with pytest.raises(ValueError, match="d_half must be a positive"):
        DistanceSelection([0, 0, 0], d_half=-1.0)
    with pytest.raises(ValueError, match="'d_half' must be a length"):
        DistanceSelection([0, 0, 0] * u.kpc, d_half=1 * u.s)
    with pytest.raises(ValueError, match="values must be selection probabilities"):
        GridSelection([0, 0, 0], [1, 1, 1], np.full((3, 3, 3), 1.5))
    with pytest.raises(ValueError, match="upper must exceed lower"):
        GridSelection([0, 0, 0], [1, 0, 1], np.full((3, 3, 3), 0.5))
    with pytest.raises(ValueError, match=r"shape \(n_x, n_y, n_z\) with n ≥ 2"):
        GridSelection([0, 0, 0], [1, 1, 1], np.full((3, 1, 3), 0.5))


def _grid_of(sel, n=41, half=3.0):
    axes = [np.linspace(c - half, c + half, n) for c in (1.0, 0.0, 0.0)]
    X, Y, Z = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([X, Y, Z], -1)
    return GridSelection([a[0] for a in axes], [a[-1] for a in axes],
                         np.asarray(sel.probability(jnp.asarray(pts))))


def test_grid_selection_interpolates_smoothly(x64):
    exact = _distance()
    grid = _grid_of(exact)
    # nodes are reproduced exactly
    node = jnp.array([1.0 + 0.15 * 4, 0.15 * 7, -0.15 * 2])
    np.testing.assert_allclose(grid.log_selection(node), exact.log_selection(node), rtol=1e-12)
    # between nodes: close to the function it samples, values and gradients
    x = jax.random.uniform(jax.random.key(0), (256, 3), minval=-1.5, maxval=1.5) + jnp.array(
        [1.0, 0.0, 0.0])
    x = x[jnp.linalg.norm(x - jnp.array([1.0, 0, 0]), axis=1) > 0.3]
    np.testing.assert_allclose(grid.log_selection(x), exact.log_selection(x), atol=0.02)
    g_grid, g_exact = grid.grad_log_selection(x), exact.grad_log_selection(x)
    rel = np.linalg.norm(g_grid - g_exact, axis=1) / np.linalg.norm(g_exact, axis=1)
    assert np.median(rel) < 0.05
    # C¹: the gradient is continuous across a cell boundary
    eps = 1e-7
    left = grid.grad_log_selection(node - jnp.array([eps, 0, 0]))
    right = grid.grad_log_selection(node + jnp.array([eps, 0, 0]))
    np.testing.assert_allclose(left, right, atol=1e-5)
    # constant outside the grid
    far = jnp.array([[20.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
    np.testing.assert_allclose(grid.log_selection(far)[0], grid.log_selection(far)[1])
    assert np.all(grid.grad_log_selection(far) == 0)


@pytest.mark.parametrize("kind", ["distance", "grid"])
def test_gradients_match_finite_differences(kind, x64):
    sel = _distance() if kind == "distance" else _grid_of(_distance(), n=17)
    x = jnp.array([[1.3, 0.5, -0.2], [0.2, -0.4, 0.6], [1.9, 1.1, 0.05]])
    g = sel.grad_log_selection(x)
    h = 1e-6
    for i in range(3):
        e = jnp.zeros(3).at[i].set(h)
        fd = (sel.log_selection(x + e) - sel.log_selection(x - e)) / (2 * h)
        np.testing.assert_allclose(g[:, i], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["distance", "grid"])
def test_descriptions_round_trip(kind):
    sel = _distance("galactic") if kind == "distance" else _grid_of(_distance(), n=5)
    back = selection_from_description(sel.describe())
    x = jnp.array([[1.3, 0.5, -0.2], [0.2, -0.4, 0.6]])
    np.testing.assert_allclose(back.log_selection(x), sel.log_selection(x), rtol=1e-6)
    assert back.units == sel.units
    with pytest.raises(ValueError, match="unknown selection type"):
        selection_from_description({"type": "cone"})


def test_correction_makes_the_true_potential_stationary(x64):
    """Scores of S·f (what a flow learns from selected stars) violate the CBE in the true
    potential; the corrected ones satisfy it exactly."""
    df = dp.flows.PlummerDF()
    sel = _distance()
    w = df.sample(jax.random.key(0), 512)
    _, dx, dv = df.log_prob_and_score(w)
    ln_f = df.log_prob(w)
    log_s, grad = sel.log_selection_and_gradient(w[:, :3])
    observed = dp.ScoreSample(w[:, :3], w[:, 3:], dx + grad, dv, ln_f + log_s)
    model = dp.PotentialModel(dp.Plummer())
    resid = lambda s: model.frame.residual(model.potential.gradient(s.x), s.x, s.v,  # noqa: E731
                                           s.dlnf_dx, s.dlnf_dv)
    assert np.median(np.abs(resid(observed))) > 0.1
    corrected = dp.correct_selection(observed, sel)
    assert np.max(np.abs(resid(corrected))) < 1e-10
    np.testing.assert_allclose(corrected.ln_f, ln_f, rtol=1e-12)
    np.testing.assert_array_equal(corrected.dlnf_dv, observed.dlnf_dv)


def test_sample_scores_applies_the_selection(x64):
    df = dp.flows.PlummerDF()
    sel = _distance()
    plain = dp.sample_scores(df, jax.random.key(1), 300, chunk_size=128)
    selected = dp.sample_scores(df, jax.random.key(1), 300, chunk_size=128, selection=sel)
    expected = dp.correct_selection(plain, sel)
    for field in ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f"):
        np.testing.assert_allclose(getattr(selected, field), getattr(expected, field),
                                   rtol=1e-12)
    with pytest.raises(TypeError, match="selection must be an AbstractSelection"):
        dp.correct_selection(plain, lambda x: x)


def test_mock_selection_by_acceptance():
    parent = dp.mocks.plummer(jax.random.key(2), 20000)
    sel = _distance()
    kept = dp.mocks.select(parent, sel, jax.random.key(3))
    p = np.asarray(sel.probability(jnp.asarray(parent.x)))
    # the kept fraction is the mean acceptance probability (binomial noise ≈ 0.003)
    assert abs(len(kept) / len(parent) - p.mean()) < 0.015
    # and the kept stars follow S(x) times the parent distribution, bin by bin
    d_parent = np.linalg.norm(parent.x - [1.0, 0, 0], axis=1)
    d_kept = np.linalg.norm(kept.x - [1.0, 0, 0], axis=1)
    bins = np.array([0.0, 0.4, 0.7, 0.9, 1.2, 2.0])
    n_parent = np.histogram(d_parent, bins)[0]
    n_kept = np.histogram(d_kept, bins)[0]
    expected = np.array([p[(d_parent >= lo) & (d_parent < hi)].sum()
                         for lo, hi in zip(bins[:-1], bins[1:])])
    assert np.all(np.abs(n_kept - expected) < 4 * np.sqrt(expected) + 1), (n_kept, expected)
    assert kept.meta["selection"]["type"] == "distance"
    assert kept.meta["selection"]["n_parent"] == 20000 and n_parent.sum() > 0
    with pytest.raises(ValueError, match="the selection is in"):
        dp.mocks.select(parent, _distance("galactic"), jax.random.key(3))


def test_sample_selected_with_a_selection_module():
    sel = _distance()
    cat = dp.mocks.sample_selected(lambda k, m: dp.mocks.plummer(k, m), jax.random.key(4), 500,
                                   sel, pilot=800)
    assert len(cat) == 500
    meta = cat.meta["selection"]
    assert meta["type"] == "distance" and meta["n_parent"] >= 500 and meta["rounds"] >= 1


def test_selections_are_modules():
    assert issubclass(DistanceSelection, AbstractSelection)
    assert issubclass(GridSelection, AbstractSelection)
