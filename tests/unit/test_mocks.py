"""Mock catalogues: exact Plummer sampling, the phase-mixed disk, noise, selection, CLI."""

import jax
import numpy as np
import pytest
from scipy import stats

import deeppot as dp
from deeppot import mocks
from deeppot.catalog import PhaseSpaceCatalog


def _plummer_mass_fraction(r):
    return r**3 / (1 + r**2) ** 1.5


@pytest.fixture(scope="module")
def plummer_sample():
    return mocks.plummer(jax.random.key(0), 40_000, r_max=10.0)


@pytest.fixture(scope="module")
def disk_sample():
    return mocks.miyamoto_nagai_disk(jax.random.key(1), 512, n_dyn=4)


def test_plummer_radii_ks(plummer_sample):
    r = np.linalg.norm(plummer_sample.x, axis=1)
    assert r.max() <= 10.0
    cdf = lambda s: _plummer_mass_fraction(s) / _plummer_mass_fraction(10.0)  # noqa: E731
    assert stats.kstest(r, cdf).pvalue > 1e-3


def test_plummer_speeds_ks(plummer_sample):
    """Speed fraction q = v / v_esc has q² ~ Beta(3/2, 9/2), i.e. p(q) ∝ q²(1 − q²)^{7/2}."""
    r = np.linalg.norm(plummer_sample.x, axis=1)
    v = np.linalg.norm(plummer_sample.v, axis=1)
    q = v / np.sqrt(2 / np.sqrt(1 + r**2))
    assert q.max() < 1  # every star bound

    def cdf_q(s):  # exact CDF of p(q) ∝ q²(1 − q²)^{7/2}, by quadrature of the density
        grid = np.linspace(0, 1, 20001)
        pdf = grid**2 * (1 - grid**2) ** 3.5
        c = np.concatenate([[0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
        return np.interp(s, grid, c / c[-1])

    assert stats.kstest(q, cdf_q).pvalue > 1e-3
    assert stats.kstest(q**2, stats.beta(1.5, 4.5).cdf).pvalue > 1e-3


def test_plummer_isotropy_and_v2_equals_psi_over_2(plummer_sample):
    x, v = plummer_sample.x, plummer_sample.v
    r = np.linalg.norm(x, axis=1)
    v2 = np.sum(v**2, axis=1)
    psi = 1 / np.sqrt(1 + r**2)
    edges = np.quantile(r, np.linspace(0, 1, 9))
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (r >= lo) & (r < hi)
        ratio = v2[m] / psi[m]  # ⟨v²/ψ⟩ = 1/2 exactly for every r
        se = ratio.std() / np.sqrt(m.sum())
        assert abs(ratio.mean() - 0.5) < 4 * se
    v_r = np.sum(x * v, axis=1) / r
    assert abs(np.mean(v_r**2) / np.mean(v2) - 1 / 3) < 0.01  # isotropic
    assert np.all(np.abs(plummer_sample.x.mean(axis=0)) < 0.05)


def test_plummer_meta_and_keys():
    cat = mocks.plummer(jax.random.key(3), 100)
    meta = cat.meta
    assert meta["generator"] == "deeppot.mocks.plummer"
    assert meta["params"] == {"n": 100, "r_max": 10.0}
    assert meta["truth"] == {"class": "Plummer", "m_tot": 1.0, "r_s": 1.0, "G": 1.0}
    assert isinstance(mocks.truth_potential(meta), dp.Plummer)
    again = mocks.plummer(jax.random.wrap_key_data(np.array(meta["key"]["data"], np.uint32)), 100)
    np.testing.assert_array_equal(again.x, cat.x)
    with pytest.raises(TypeError, match="jax.random.key"):
        mocks.plummer(jax.random.PRNGKey(0), 10)
    with pytest.raises(ValueError, match="n must be positive"):
        mocks.plummer(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="r_max"):
        mocks.plummer(jax.random.key(0), 10, r_max=-1.0)


def test_midplane_periods_ratio():
    """For Miyamoto–Nagai, T_orbit / T_vertical = sqrt((a + b) / b) at every radius."""
    with jax.enable_x64(True):
        pot = dp.MiyamotoNagai(1.0, 1.0, 0.1)
        t = np.asarray(mocks.midplane_periods(pot, np.array([0.3, 1.0, 3.0])))
    np.testing.assert_allclose(t[0] / t[2], np.sqrt(11.0), rtol=1e-10)
    assert np.all(t[2] < t[1]) and np.all(t[1] < t[0])  # vertical < epicyclic < orbital


def test_disk_is_axisymmetric_bound_and_recorded(disk_sample):
    cat = disk_sample
    x, v = cat.x, cat.v
    phi = np.arctan2(x[:, 1], x[:, 0])
    assert stats.kstest(phi, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3
    with jax.enable_x64(True):
        pot = mocks.truth_potential(cat.meta)
        energy = 0.5 * np.sum(v**2, axis=1) + np.asarray(pot.potential(x))
    assert np.all(energy < 0)
    lz = x[:, 0] * v[:, 1] - x[:, 1] * v[:, 0]
    assert np.all(lz > 0)  # near-circular prograde orbits
    assert np.median(np.abs(x[:, 2])) < 0.2
    meta = cat.meta
    assert meta["generator"] == "deeppot.mocks.miyamoto_nagai_disk"
    assert meta["truth"] == {"class": "MiyamotoNagai", "m_tot": 1.0, "a": 1.0, "b": 0.1, "G": 1.0}
    # n_dyn dynamical times at 1/16 of the vertical period: steps = 16 n_dyn sqrt(11)
    assert meta["integration"]["n_steps_max"] == int(np.ceil(16 * 4 * np.sqrt(11)))


def test_disk_initial_conditions_follow_the_recipe():
    pot, x0, v0, dt, n_steps, phi = mocks.disk_initial_conditions(jax.random.key(2), 20_000)
    R, z = x0[:, 0], x0[:, 2]
    assert stats.kstest(R, stats.gamma(2.0).cdf).pvalue > 1e-3
    assert stats.kstest(np.abs(z), stats.expon(scale=0.1).cdf).pvalue > 1e-3
    v_c = np.sqrt(R**2 / (R**2 + 1.1**2) ** 1.5)
    assert np.std(v0[:, 0] / v_c) == pytest.approx(0.05, rel=0.03)
    assert np.std(v0[:, 2] / v_c) == pytest.approx(0.05, rel=0.03)
    assert np.mean(1 - v0[:, 1] / v_c) == pytest.approx(0.1 * np.sqrt(2 / np.pi), rel=0.03)
    np.testing.assert_allclose(n_steps * dt, 128 * 2 * np.pi / np.sqrt(1 / (R**2 + 1.1**2) ** 1.5))
    assert stats.kstest(phi, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3


def test_observe_noise_matches_sigma():
    n = 20_000
    truth = mocks.plummer(jax.random.key(4), n, r_max=3.0)
    obs = np.array([1.0, 0.0, 0.0])
    noisy = mocks.observe(truth, jax.random.key(5), observer=obs)
    rel, rel_n = truth.x - obs, noisy.x - obs
    d, d_n = np.linalg.norm(rel, axis=1), np.linalg.norm(rel_n, axis=1)
    los = rel / d[:, None]
    np.testing.assert_allclose(rel_n / d_n[:, None], los, atol=1e-12)  # sky positions exact
    z_d = (d_n - d) / np.minimum(0.1 * d**2, 0.1 * d)
    dv = noisy.v - truth.v
    z_r = np.sum(dv * los, axis=1) / 0.0015
    dv_t = dv - np.sum(dv * los, axis=1, keepdims=True) * los
    z_t = np.linalg.norm(dv_t, axis=1) / (1.5e-4 * d)  # Rayleigh with σ = 1
    for zz in (z_d, z_r):
        assert abs(zz.mean()) < 0.05 and abs(zz.std() - 1) < 0.03
        assert stats.kstest(zz, "norm").pvalue > 1e-3
    assert stats.kstest(z_t, stats.rayleigh.cdf).pvalue > 1e-3
    assert noisy.meta["observe"]["sigma_vr"] == 0.0015
    assert noisy.meta["generator"] == truth.meta["generator"]


def test_select_sphere_keeps_exactly_the_sphere(plummer_sample):
    center, radius = (1.0, 0.0, 0.0), 1.0
    sel = mocks.select_sphere(plummer_sample, center, radius)
    inside = np.linalg.norm(plummer_sample.x - np.array(center), axis=1) <= radius
    np.testing.assert_array_equal(sel.x, plummer_sample.x[inside])
    np.testing.assert_array_equal(sel.v, plummer_sample.v[inside])
    assert sel.meta["selection"] == {
        "type": "sphere",
        "center": [1.0, 0.0, 0.0],
        "radius": 1.0,
        "n_parent": 40_000,
    }
    with pytest.raises(ValueError, match="no star"):
        mocks.select_sphere(plummer_sample, (100.0, 0.0, 0.0), 1.0)
    with pytest.raises(ValueError, match="radius"):
        mocks.select_sphere(plummer_sample, center, 0.0)


def test_sample_selected_draws_enough_parents():
    def sampler(k, m):
        return mocks.plummer(k, m)

    def select(c):
        return mocks.select_sphere(c, (1.0, 0.0, 0.0), 0.5)

    cat = mocks.sample_selected(sampler, jax.random.key(6), 300, select, pilot=200)
    assert len(cat) == 300
    assert np.all(np.linalg.norm(cat.x - [1.0, 0.0, 0.0], axis=1) <= 0.5)
    sel = cat.meta["selection"]
    assert sel["n_parent"] > 300 and sel["rounds"] >= 2
    with pytest.raises(ValueError, match="keeps none of the 50 stars drawn"):
        mocks.sample_selected(
            sampler,
            jax.random.key(6),
            10,
            lambda c: mocks.select_sphere(c, (50.0, 0, 0), 0.1),
            pilot=50,
            max_rounds=2,
        )


def test_cli_mock(tmp_path, capsys):
    from deeppot.cli import build_parser, main

    out = tmp_path / "p.npz"
    assert (
        main(
            [
                "mock",
                "plummer",
                "--n",
                "500",
                "--seed",
                "3",
                "--observe",
                "--select",
                "--select-radius",
                "1.5",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "wrote 500 stars" in capsys.readouterr().out
    cat = PhaseSpaceCatalog.load(out)
    assert len(cat) == 500
    assert cat.meta["seed"] == 3 and "observe" in cat.meta and "selection" in cat.meta
    assert main(["mock", "cube", "--out", str(tmp_path / "x.npz")]) == 2  # no such source
    assert "key 'source' in [data] must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["mock", "plummer", "--n", "0", "--out", "x.npz"])


@pytest.mark.slow
def test_cli_mock_disk(tmp_path):
    from deeppot.cli import main

    out = tmp_path / "d.h5"
    assert (
        main(["mock", "disk", "--n", "2048", "--param", "n_dyn=8", "--out", str(out),
              "--no-progress"])
        == 0
    )
    assert len(PhaseSpaceCatalog.load(out)) == 2048


def test_cli_mock_passes_generator_parameters(tmp_path):
    """`--param NAME=VALUE` sets a parameter of the source's generator ([data.params])."""
    from deeppot.cli import main

    out = tmp_path / "p.npz"
    assert main(["mock", "plummer", "--n", "300", "--param", "r_max=0.5", "--out", str(out),
                 "--no-progress"]) == 0
    cat = PhaseSpaceCatalog.load(out)
    assert cat.meta["truth_df"]["r_max"] == 0.5
    assert float(np.max(np.linalg.norm(np.asarray(cat.x), axis=1))) <= 0.5
