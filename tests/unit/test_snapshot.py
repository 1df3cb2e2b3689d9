"""Reading simulation snapshots: a mock with a known potential, written in Gadget's units
(h = 0.7, kpc/h, km/s, 1e10 M☉/h), tilted, offset and moving, comes back in its own frame."""

import h5py
import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot import pipeline
from deeppot.snapshot import align_rotation, read_snapshot, shrinking_sphere_center, write_snapshot

G = dp.units.galactic.G
M, B = 1e10, 2.0  # M☉, kpc
TILT = np.deg2rad(30.0)
R_TILT = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(TILT), -np.sin(TILT)],
                   [0.0, np.sin(TILT), np.cos(TILT)]])
OFFSET = np.array([21000.0, -4000.0, 900.0])  # kpc
BULK = np.array([150.0, -40.0, 25.0])  # km/s
H, A = 0.7, 0.8


def _rotating_symmetric_plummer(n=384, seed=0):
    """A Plummer sphere of M and B in kpc, km/s, turned to rotate about +z (v_φ > 0 for every
    star, which keeps f(E, L_z) stationary) and made symmetric under the rotation by π about
    z, the point reflection and the mirror in z: its centre, bulk velocity and the direction
    of its angular momentum (+z) are then exact, not noisy."""
    unit = dp.mocks.plummer(jax.random.key(seed), n)
    x, v = np.asarray(unit.x) * B, np.asarray(unit.v) * np.sqrt(G * M / B)
    phi_hat = np.stack([-x[:, 1], x[:, 0], np.zeros(n)], 1) / np.hypot(x[:, 0], x[:, 1])[:, None]
    vphi = np.sum(v * phi_hat, 1)
    v = v - 2 * np.minimum(vphi, 0)[:, None] * phi_hat
    flips = [np.array([1, 1, 1]), np.array([-1, -1, 1]), np.array([-1, -1, -1]),
             np.array([1, 1, -1])]
    return np.concatenate([x * f for f in flips]), np.concatenate([v * f for f in flips])


@pytest.fixture(scope="module")
def mock():
    x, v = _rotating_symmetric_plummer()
    with jax.enable_x64(True):
        truth = dp.Plummer(m_tot=M, r_s=B, units="galactic")
        acc, phi = np.asarray(truth.acceleration(x)), np.asarray(truth.potential(x))
    # M☉: unequal, so that weights are checked, and the same for a star's four images
    masses = np.tile(np.linspace(1.0, 2.0, len(x) // 4), 4) * 1e5
    moved = dp.PhaseSpaceCatalog(x @ R_TILT.T + OFFSET, v @ R_TILT.T + BULK, masses,
                                 units="galactic",
                                 truth={"acceleration": acc @ R_TILT.T, "potential": phi})
    return {"x": x, "v": v, "m": masses, "acc": acc, "phi": phi, "moved": moved}


@pytest.fixture(scope="module", params=[True, False], ids=["gadget4-attrs", "header-units"])
def snap(request, mock, tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "snap_099.hdf5"
    write_snapshot(mock["moved"], path, hubble=H, scale_factor=A,
                   dataset_attributes=request.param)
    return path


def _copy(src, dst, edit):
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for k in a:
            a.copy(k, b)
        edit(b)
    return dst


def test_the_file_is_in_gadget_units(snap, mock):
    """What the test writes is Gadget's: comoving kpc/h, km/s / √a, 1e10 M☉/h."""
    with h5py.File(snap, "r") as f:
        np.testing.assert_allclose(f["PartType4/Coordinates"][:3],
                                   mock["moved"].x[:3] * H / A, rtol=1e-14)
        np.testing.assert_allclose(f["PartType4/Velocities"][:3],
                                   mock["moved"].v[:3] / np.sqrt(A), rtol=1e-14)
        np.testing.assert_allclose(f["PartType4/Masses"][:3], mock["m"][:3] * H / 1e10,
                                   rtol=1e-14)
        assert f["Parameters"].attrs["HubbleParam"] == H


def test_reader_recovers_the_mock_frame_units_and_stars(snap, mock):
    cat = read_snapshot(snap, shrink_min_stars=64)
    meta = cat.meta["snapshot"]
    np.testing.assert_allclose(meta["center"], OFFSET, rtol=0, atol=1e-9)
    np.testing.assert_allclose(meta["bulk_velocity"], BULK, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(meta["rotation"]), R_TILT.T, atol=1e-12)
    assert meta["hubble"] == H and meta["scale_factor"] == pytest.approx(A, rel=1e-15)
    factors = {k: d["factor"] for k, d in meta["datasets"].items()}
    np.testing.assert_allclose([factors["Coordinates"], factors["Velocities"],
                                factors["Masses"]], [A / H, np.sqrt(A), 1e10 / H], rtol=1e-12)
    assert cat.units == dp.units.galactic
    np.testing.assert_allclose(cat.x, mock["x"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(cat.v, mock["v"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(cat.weights, mock["m"], rtol=1e-12)
    np.testing.assert_allclose(cat.truth["acceleration"], mock["acc"], rtol=0,
                               atol=1e-12 * np.abs(mock["acc"]).max())
    np.testing.assert_allclose(cat.truth["potential"], mock["phi"], rtol=1e-12)
    assert meta["n_read"] == {"PartType4": len(mock["x"])} and meta["n_kept"] == len(cat)
    assert meta["truth"] == ["acceleration", "potential"]


def test_the_recovered_truth_is_the_mock_potential(snap, x64):
    """The recorded accelerations are −∇Φ of the mock's Plummer at the recovered stars, and
    the report measures a zero force error for the true potential."""
    cat = read_snapshot(snap, shrink_min_stars=64)
    truth = dp.Plummer(m_tot=M, r_s=B, units="galactic")
    expected = np.asarray(truth.acceleration(cat.x))
    np.testing.assert_allclose(cat.truth["acceleration"], expected, rtol=0,
                               atol=1e-9 * np.abs(expected).max())
    res = dp.evaluate.residuals_at(truth, cat.x, **cat.truth)
    assert np.max(res["force"]) < 1e-6 and np.max(np.abs(res["phi"])) < 1e-6
    wrong = dp.Plummer(m_tot=1.1 * M, r_s=B, units="galactic")
    res = dp.evaluate.residuals_at(wrong, cat.x, **cat.truth)
    np.testing.assert_allclose(res["force"], 0.1, rtol=1e-5)  # a 10% heavier sphere


def test_other_units_and_overrides(snap, mock):
    kpc_pc = dp.units.UnitSystem("pc", "km/s", "Msun")
    cat = read_snapshot(snap, units=kpc_pc, shrink_min_stars=64)
    np.testing.assert_allclose(cat.x, mock["x"] * 1e3, rtol=0, atol=1e-6)
    # overriding h and a scales exactly as the convention says
    other = read_snapshot(snap, hubble=1.0, scale_factor=1.0, shrink_min_stars=64)
    np.testing.assert_allclose(other.x, cat.x / 1e3 * H / A, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(other.v, mock["v"] / np.sqrt(A), rtol=1e-10, atol=1e-9)
    physical_v = read_snapshot(snap, a_scaling={"Velocities": 0.0}, shrink_min_stars=64)
    np.testing.assert_allclose(physical_v.v, mock["v"] / np.sqrt(A), rtol=1e-10, atol=1e-9)


def test_region_subsample_and_given_centre(snap, mock):
    cat = read_snapshot(snap, region_radius=2.0, subsample=100, seed=3,
                        center=(OFFSET * H / A).tolist())
    r = np.linalg.norm(mock["x"], axis=1)
    meta = cat.meta["snapshot"]
    assert meta["n_in_region"] == int(np.sum(r <= 2.0)) and len(cat) == 100
    assert np.all(np.linalg.norm(cat.x, axis=1) <= 2.0)
    assert meta["center_method"]["method"] == "given"
    again = read_snapshot(snap, region_radius=2.0, subsample=100, seed=3,
                          center=(OFFSET * H / A).tolist())
    np.testing.assert_array_equal(cat.x, again.x)  # seeded
    d = np.linalg.norm(cat.x[:, None] - mock["x"][None], axis=-1)
    assert np.all(d.min(axis=1) < 1e-9)  # the kept stars are the mock's


def test_several_particle_types_and_mass_table(snap, mock, tmp_path):
    def add_dm(f):
        f.copy(f["PartType4"], "PartType1")
        del f["PartType1/Masses"]
        table = np.zeros(6)
        table[1] = 5e-6
        f["Header"].attrs["MassTable"] = table

    path = _copy(snap, tmp_path / "two.hdf5", add_dm)
    cat = read_snapshot(path, particle_types=["PartType4", "PartType1"], shrink_min_stars=64)
    n = len(mock["x"])
    assert len(cat) == 2 * n and cat.meta["snapshot"]["n_read"] == {"PartType4": n,
                                                                    "PartType1": n}
    np.testing.assert_allclose(cat.weights[n:], 5e-6 * 1e10 / H, rtol=1e-12)
    np.testing.assert_allclose(cat.x[n:], mock["x"], atol=1e-9)


def test_rotation_and_shrinking_spheres():
    rng = np.random.default_rng(0)
    for d in rng.normal(size=(5, 3)):
        R = align_rotation(d)
        np.testing.assert_allclose(R @ (d / np.linalg.norm(d)), [0, 0, 1], atol=1e-14)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-14)
        assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(align_rotation([0, 0, -2.0]) @ [0, 0, -1], [0, 0, 1])
    # a dense clump beside a broad, offset cloud: the spheres find the clump
    x = np.concatenate([rng.normal(size=(3000, 3)) * 0.1 + [5.0, 0, 0],
                        rng.normal(size=(3000, 3)) * 10 + [-20.0, 0, 0]])
    c, info = shrinking_sphere_center(x, min_stars=200)
    assert np.linalg.norm(c - [5.0, 0, 0]) < 0.03 and info["iterations"] > 3


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.__delitem__("PartType4/Velocities"), "no dataset PartType4/Velocities"),
    (lambda f: f.__delitem__("PartType4"), "no group PartType4"),
    (lambda f: f["PartType4/Coordinates"].__setitem__((5, 1), np.nan),
     "dataset Coordinates has 1 particles with NaN"),
    (lambda f: f["PartType4/Masses"].__setitem__(7, np.inf), "dataset Masses has 1"),
])
def test_bad_files_are_named(snap, tmp_path, edit, match):
    path = _copy(snap, tmp_path / "bad.hdf5", edit)
    with pytest.raises(dp.SnapshotError, match=match):
        read_snapshot(path)


def test_unknown_units_are_named(mock, tmp_path):
    path = tmp_path / "old.hdf5"
    write_snapshot(mock["moved"], path, hubble=H, dataset_attributes=False)

    def strip(f):
        del f["Parameters"].attrs["UnitLength_in_cm"]

    bad = _copy(path, tmp_path / "nounits.hdf5", strip)
    with pytest.raises(dp.SnapshotError, match="unknown units of /PartType4/Coordinates"):
        read_snapshot(bad)
    cat = read_snapshot(bad, code_units={"length": "1 kpc"}, shrink_min_stars=64)
    np.testing.assert_allclose(cat.x, mock["x"], atol=1e-9)
    with pytest.raises(dp.SnapshotError, match="code_units 'length'"):
        read_snapshot(bad, code_units={"length": "1 km/s"})


def test_nan_particles_can_be_dropped(snap, tmp_path):
    path = _copy(snap, tmp_path / "nan.hdf5",
                 lambda f: f["PartType4/Velocities"].__setitem__((3, 0), np.nan))
    cat = read_snapshot(path, drop_invalid=True, shrink_min_stars=64)
    assert cat.meta["snapshot"]["dropped_invalid"] == {"Velocities": 1}
    assert len(cat) == cat.meta["snapshot"]["n_read"]["PartType4"] - 1


def test_snapshot_source_in_a_run(snap, tmp_path):
    """`[data] source = "snapshot"`: the run's catalog.npz holds the converted, centred,
    aligned stars and their truth; a dimensionless run is refused."""
    raw = {"run": {"units": "galactic", "progress": False},
           "data": {"source": "snapshot", "path": str(snap),
                    "params": {"shrink_min_stars": 64, "subsample": 500}}}
    pipeline.run(pipeline.parse_config(raw), tmp_path, log=None, stop_after="data")
    cat = dp.PhaseSpaceCatalog.load(tmp_path / "catalog.npz")
    assert len(cat) == 500 and sorted(cat.truth) == ["acceleration", "potential"]
    np.testing.assert_allclose(cat.meta["snapshot"]["center"], OFFSET, atol=1e-9)
    with pytest.raises(dp.ConfigError, match="needs physical units"):
        pipeline.parse_config({**raw, "run": {"units": "dimensionless"}})
    with pytest.raises(dp.ConfigError, match="no parameter 'radius'"):
        pipeline.parse_config({**raw, "data": {**raw["data"], "params": {"radius": 3.0}}})


def test_the_report_measures_against_the_per_star_truth(snap, tmp_path, x64):
    """`evaluate_model` on a snapshot's catalogue (no analytic truth in its meta): the force
    and potential errors at the stars, zero for the true potential, 10% for a heavier one."""
    from deeppot.pipeline.config import EvaluateConfig
    from deeppot.pipeline.report import accuracy_table, evaluate_model

    cat = read_snapshot(snap, shrink_min_stars=64)
    cfg = EvaluateConfig(region="radial", r_min=0.1, r_max=6.0, n_points=1000)
    for mass, expected in ((M, 0.0), (1.1 * M, 0.1)):
        model = dp.PotentialModel(dp.Plummer(m_tot=mass, r_s=B, units="galactic"))
        ev = evaluate_model(cfg, model, cat, out_dir=tmp_path)
        assert ev["truth"]["fields"] == ["acceleration", "potential"]
        assert set(ev["accuracy"]) >= {"force", "phi"} and "density" not in ev["accuracy"]
        assert ev["accuracy"]["force"]["median"] == pytest.approx(expected, abs=1e-6)
    assert ev["accuracy"]["force"]["n"] == int(np.sum(np.linalg.norm(cat.x[:1000], axis=1)
                                                      <= 6.0))
    assert "per-star truth" in accuracy_table(ev) and "density" not in accuracy_table(ev)
    assert ev["plots"] == ["residuals_radial.png"]
    with pytest.raises(ValueError, match="needs a true density"):
        evaluate_model(EvaluateConfig(region="density"), model, cat)
