"""PhaseSpaceCatalog: validation, accessors, derived catalogues, files and their errors."""

import json
import os

import h5py
import numpy as np
import pytest

from deeppot.catalog import PhaseSpaceCatalog

FORMATS = [".npz", ".h5", ".hdf5", ".csv"]


def _arrays(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)), rng.normal(size=(n, 3))


def test_accessors_and_meta():
    x, v = _arrays()
    meta = {"generator": "test", "params": {"n": 5, "shape": (1, 2)}, "arr": np.arange(2)}
    cat = PhaseSpaceCatalog(x, v, meta=meta)
    assert len(cat) == 5
    np.testing.assert_array_equal(cat.x, x)
    np.testing.assert_array_equal(cat.v, v)
    np.testing.assert_array_equal(cat.w, np.concatenate([x, v], axis=1))
    assert cat.w.shape == (5, 6)
    assert cat.weights is None
    assert cat.meta == {"generator": "test", "params": {"n": 5, "shape": [1, 2]}, "arr": [0, 1]}
    assert "n=5" in repr(cat)
    with pytest.raises(ValueError, match="read-only"):
        cat.x[0, 0] = 1.0
    m = cat.meta
    m["generator"] = "changed"
    assert cat.meta["generator"] == "test"


@pytest.mark.parametrize(
    ("x", "v", "weights", "match"),
    [
        (np.zeros((4, 2)), np.zeros((4, 3)), None, r"x must have shape \(n, 3\), got \(4, 2\)"),
        (np.zeros((4, 3)), np.zeros(4), None, r"v must have shape \(n, 3\), got \(4,\)"),
        (np.zeros((4, 3)), np.zeros((3, 3)), None, "x has 4 rows but v has 3"),
        (np.zeros((0, 3)), np.zeros((0, 3)), None, "empty"),
        (np.zeros((4, 3)), np.zeros((4, 3)), np.ones(3), r"weights must have shape \(4,\)"),
        (np.zeros((4, 3)), np.zeros((4, 3)), -np.ones(4), "non-negative"),
        ([["a", "b", "c"]], np.zeros((1, 3)), None, "x must be numeric"),
    ],
)
def test_bad_arrays(x, v, weights, match):
    with pytest.raises(ValueError, match=match):
        PhaseSpaceCatalog(x, v, weights)


def test_nan_and_inf_are_reported_and_dropped():
    x, v = _arrays(20)
    x[3, 1] = np.nan
    v[7, 2] = np.inf
    w = np.ones(20)
    w[11] = np.nan
    with pytest.raises(
        ValueError, match=r"3 of 20 rows contain NaN or inf \(first rows: \[3, 7, 11\]\)"
    ):
        PhaseSpaceCatalog(x, v, w)
    with pytest.warns(UserWarning, match=r"dropping 3 of 20 rows.*\[3, 7, 11\]"):
        cat = PhaseSpaceCatalog(x, v, w, drop_invalid=True)
    assert len(cat) == 17
    keep = np.setdiff1d(np.arange(20), [3, 7, 11])
    np.testing.assert_array_equal(cat.x, x[keep])
    x_all_bad = np.full((2, 3), np.nan)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="empty"):
        PhaseSpaceCatalog(x_all_bad, np.zeros((2, 3)), drop_invalid=True)


def test_many_bad_rows_are_elided():
    x, v = _arrays(30)
    x[:, 0] = np.nan
    with pytest.raises(
        ValueError, match=r"30 of 30 rows .*\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\]"
    ):
        PhaseSpaceCatalog(x, v)


def test_meta_must_be_json():
    x, v = _arrays()
    with pytest.raises(ValueError, match="JSON"):
        PhaseSpaceCatalog(x, v, meta={"f": object()})
    with pytest.raises(ValueError, match="mapping"):
        PhaseSpaceCatalog(x, v, meta=[1, 2])


def test_subset_concatenate_with_meta():
    x, v = _arrays(6)
    cat = PhaseSpaceCatalog(x, v, np.arange(6.0), {"a": 1})
    sub = cat.subset(np.array([True, False, True, False, False, True]), note="s")
    np.testing.assert_array_equal(sub.x, x[[0, 2, 5]])
    np.testing.assert_array_equal(sub.weights, [0.0, 2.0, 5.0])
    assert sub.meta == {"a": 1, "note": "s"}
    both = PhaseSpaceCatalog.concatenate([cat, sub])
    assert len(both) == 9 and both.meta == {"a": 1}
    assert cat.with_meta(b=2).meta == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="weighted and unweighted"):
        PhaseSpaceCatalog.concatenate([cat, PhaseSpaceCatalog(x, v)])
    with pytest.raises(ValueError, match="empty"):
        cat.subset(np.zeros(6, bool))


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("weighted", [False, True])
def test_save_load_round_trip(tmp_path, ext, weighted):
    x, v = _arrays(7)
    w = np.linspace(0.5, 2.0, 7) if weighted else None
    meta = {"generator": "t", "truth": {"class": "MiyamotoNagai", "m_tot": 1.0, "a": 1.0, "b": 0.1}}
    cat = PhaseSpaceCatalog(x, v, w, meta)
    path = tmp_path / f"cat{ext}"
    assert cat.save(path) == path
    back = PhaseSpaceCatalog.load(path)
    assert back == cat
    assert back.meta == meta
    # overwrite atomically, no temporary files left behind
    cat.with_meta(version=2).save(str(path))
    assert PhaseSpaceCatalog.load(path).meta["version"] == 2
    assert os.listdir(tmp_path) == [path.name]


def test_unknown_extension_and_missing_file(tmp_path):
    cat = PhaseSpaceCatalog(*_arrays())
    with pytest.raises(ValueError, match=r"unknown catalogue format '\.txt'"):
        cat.save(tmp_path / "c.txt")
    with pytest.raises(ValueError, match="no extension"):
        PhaseSpaceCatalog.load(tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        PhaseSpaceCatalog.load(tmp_path / "missing.npz")


def test_bad_npz(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"bad\.npz. is corrupt or truncated"):
        PhaseSpaceCatalog.load(p)
    np.savez(p, x=np.zeros((3, 3)), vel=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"missing arrays \['v'\] \(found: \['vel', 'x'\]\)"):
        PhaseSpaceCatalog.load(p)
    np.savez(p, x=np.zeros((3, 3)), v=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"bad\.npz.*v must have shape"):
        PhaseSpaceCatalog.load(p)
    np.savez(p, x=np.zeros((3, 3)), v=np.zeros((3, 3)), meta=np.array("{oops"))
    with pytest.raises(ValueError, match="not valid JSON"):
        PhaseSpaceCatalog.load(p)


def test_bad_h5(tmp_path):
    p = tmp_path / "bad.h5"
    p.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.h5. is corrupt or truncated.*as HDF5"):
        PhaseSpaceCatalog.load(p)
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"missing datasets \['v'\]"):
        PhaseSpaceCatalog.load(p)
    x, v = _arrays(4)
    x[2, 0] = np.nan
    with h5py.File(p, "w") as f:
        f["x"], f["v"] = x, v
    with pytest.raises(ValueError, match=r"1 of 4 rows .*\[2\]"):
        PhaseSpaceCatalog.load(p)
    with pytest.warns(UserWarning, match="dropping"):
        assert len(PhaseSpaceCatalog.load(p, drop_invalid=True)) == 3


def test_csv_columns(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("vx,vy,vz,x,y,z,mag\n1,2,3,4,5,6,17.5\n7,8,9,10,11,12,18\n")
    cat = PhaseSpaceCatalog.load(p)
    np.testing.assert_array_equal(cat.x, [[4, 5, 6], [10, 11, 12]])
    np.testing.assert_array_equal(cat.v, [[1, 2, 3], [7, 8, 9]])
    assert cat.meta == {"ignored_columns": ["mag"]}
    p.write_text("x,y,z,vx,vy,vz,weight\n1,2,3,4,5,6,0.5\n2,3,4,5,6,7,1.5\n")
    np.testing.assert_array_equal(PhaseSpaceCatalog.load(p).weights, [0.5, 1.5])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x,y,z,vx,vy\n1,2,3,4,5\n", r"missing columns \['vz'\]"),
        ("x,y,z,vx,vy,vz\n", "empty"),
        ("", "no header"),
        ("x,y,z,vx,vy,vz\n1,2,3,4,5,six\n", "is corrupt or not a catalogue CSV"),
        (
            "x,y,z,vx,vy,vz\n1,2,3,4,5,nan\n",
            r"1 of 1 rows contain NaN or inf \(first rows: \[0\]\)",
        ),
        ("# deeppot-meta: [1]\nx,y,z,vx,vy,vz\n1,2,3,4,5,6\n", "JSON object"),
    ],
)
def test_bad_csv(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        PhaseSpaceCatalog.load(p)


def test_meta_is_json_in_file(tmp_path):
    cat = PhaseSpaceCatalog(*_arrays(), meta={"seed": 3})
    cat.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as f:
        assert json.loads(str(f["meta"])) == {"seed": 3}
    cat.save(tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text().startswith('# deeppot-meta: {"seed": 3}\n')


# -- covariances and units ---------------------------------------------------------------------


def _cov(n, seed=0):
    a = np.random.default_rng(seed).normal(size=(n, 6, 6))
    return a @ np.swapaxes(a, 1, 2)


def test_covariances_are_validated_and_carried():
    x, v = np.zeros((4, 3)), np.ones((4, 3))
    cov = _cov(4)
    cat = PhaseSpaceCatalog(x, v, cov=cov)
    np.testing.assert_array_equal(cat.cov, cov)
    np.testing.assert_allclose(cat.errors, np.sqrt(np.diagonal(cov, axis1=1, axis2=2)))
    assert not cat.cov.flags.writeable
    np.testing.assert_array_equal(cat.subset([0, 2]).cov, cov[[0, 2]])
    np.testing.assert_array_equal(PhaseSpaceCatalog.concatenate([cat, cat]).cov[4:], cov)
    np.testing.assert_array_equal(cat.with_meta(a=1).cov, cov)
    with pytest.raises(ValueError, match="cannot concatenate catalogues with and without"):
        PhaseSpaceCatalog.concatenate([cat, PhaseSpaceCatalog(x, v)])
    with pytest.raises(ValueError, match=r"cov must have shape \(4, 6, 6\)"):
        PhaseSpaceCatalog(x, v, cov=cov[:, :5, :5])
    asym = cov.copy()
    asym[1, 0, 3] += 1.0
    with pytest.raises(ValueError, match="cov must be symmetric: 1 rows"):
        PhaseSpaceCatalog(x, v, cov=asym)
    neg = -np.einsum("ij,n->nij", np.eye(6), np.ones(4))
    with pytest.raises(ValueError, match="negative variances in 4 rows"):
        PhaseSpaceCatalog(x, v, cov=neg)
    bad = cov.copy()
    bad[2, 1, 1] = np.nan
    with pytest.warns(UserWarning, match="dropping 1 of 4 rows"):
        assert len(PhaseSpaceCatalog(x, v, cov=bad, drop_invalid=True)) == 3


@pytest.mark.parametrize("ext", [".npz", ".h5", ".csv"])
def test_covariances_and_units_survive_files(tmp_path, ext):
    cat = PhaseSpaceCatalog(np.arange(12.0).reshape(4, 3), np.ones((4, 3)), np.arange(4.0),
                            {"a": 1}, cov=_cov(4), units="galactic")
    back = PhaseSpaceCatalog.load(cat.save(tmp_path / f"c{ext}"), check_fit=False)
    assert back == cat and back.units.name == "galactic"
    np.testing.assert_array_equal(back.cov, cat.cov)


def test_csv_needs_every_covariance_column(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("x,y,z,vx,vy,vz,cov_x_x\n0,0,0,1,1,1,2\n")
    with pytest.raises(ValueError, match="has covariance columns but is missing"):
        PhaseSpaceCatalog.load(p)


def test_quantities_and_units():
    import astropy.units as u

    cat = PhaseSpaceCatalog(np.ones((2, 3)) * u.pc, np.ones((2, 3)) * u.km / u.s, cov=_cov(2))
    assert cat.units.name == "galactic" and cat.meta["units"]["length"] == "kpc"
    np.testing.assert_allclose(cat.x, 1e-3)
    assert cat.quantity("x").unit == u.kpc and cat.quantity("v_err").unit == u.km / u.s
    with pytest.raises(ValueError, match="x must be a length"):
        PhaseSpaceCatalog(np.ones((2, 3)) * u.s, np.ones((2, 3)), units="galactic")
    with pytest.raises(ValueError, match="model is dimensionless"):
        PhaseSpaceCatalog(np.ones((2, 3)) * u.kpc, np.ones((2, 3)), units="dimensionless")
    with pytest.raises(ValueError, match="but meta records"):
        PhaseSpaceCatalog(np.ones((2, 3)), np.ones((2, 3)), meta=cat.meta, units="dimensionless")
    plain = PhaseSpaceCatalog(np.ones((2, 3)), np.ones((2, 3)))
    assert not plain.units.is_physical and "units" not in plain.meta
    with pytest.raises(ValueError, match="no unit for length"):
        plain.quantity("x")
    with pytest.raises(ValueError, match="different unit systems"):
        PhaseSpaceCatalog.concatenate([plain, PhaseSpaceCatalog(plain.x, plain.v,
                                                                units="galactic")])


def test_load_refuses_stars_no_df_can_fit(tmp_path):
    x, v = _arrays(6)
    p = tmp_path / "c.npz"
    np.savez(p, x=np.concatenate([x, x[:1]]), v=np.concatenate([v, v[:1]]))
    assert len(PhaseSpaceCatalog.load(p)) == 7  # one copy among seven is data, not an error
    half = np.concatenate([x[:3], x[:3]]), np.concatenate([v[:3], v[:3]])
    np.savez(p, x=half[0], v=half[1])
    assert len(PhaseSpaceCatalog.load(p)) == 6  # exactly half distinct: kept
    np.savez(p, x=np.concatenate([half[0], x[:1]]), v=np.concatenate([half[1], v[:1]]))
    with pytest.raises(ValueError, match=r"c\.npz': only 3 of 7 stars are distinct rows"):
        PhaseSpaceCatalog.load(p)
    assert len(PhaseSpaceCatalog.load(p, check_fit=False)) == 7
    weights = np.array([1.0, 1, 1, 1, 0, 0])
    v_same = v.copy()
    v_same[:4, 2] = 0.5  # the same for every star that counts; stars 4, 5 have no weight
    np.savez(p, x=x, v=v_same, weights=weights)
    with pytest.raises(ValueError, match="vz is the same for all 4 stars"):
        PhaseSpaceCatalog.load(p)
    np.savez(p, x=x, v=v_same, weights=np.ones(6))
    assert len(PhaseSpaceCatalog.load(p)) == 6


def test_overflow_is_measured_against_float32(tmp_path):
    x, v = _arrays(4)
    p = tmp_path / "c.npz"
    limit = np.sqrt(np.finfo(np.float32).max / 1e3)  # the sum of squares' allowance
    np.savez(p, x=x, v=np.concatenate([v[:3], [[0.99 * limit, 0, 0]]]))
    assert len(PhaseSpaceCatalog.load(p)) == 4
    np.savez(p, x=x, v=np.concatenate([v[:3], [[1.01 * limit, 0, 0]]]))
    with pytest.raises(ValueError, match=r"velocities overflow float32.*largest in row 3"):
        PhaseSpaceCatalog.load(p)


def test_zero_total_weight_is_refused():
    x, v = _arrays(3)
    with pytest.raises(ValueError, match="weights are all zero"):
        PhaseSpaceCatalog(x, v, np.zeros(3))
    assert PhaseSpaceCatalog(x, v, [0.0, 0.0, 2.0]).weights.sum() == 2.0


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    p = PhaseSpaceCatalog(*_arrays(3)).save(tmp_path / "c.npz")
    before = p.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="disk full"):
        PhaseSpaceCatalog(*_arrays(4)).save(p)
    assert p.read_bytes() == before and [f.name for f in tmp_path.iterdir()] == ["c.npz"]
