"""Model files: every model the API builds is saved and read back exactly, from the file alone."""

import json

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot._framed import write_framed
from deeppot.modelfile import load_model, save_model
from tests import models

DFS = {
    "ffjord": lambda: dp.flows.FFJORD(jax.random.key(0), width=8, depth=2),
    "ffjord_heun_tanh_2blocks": lambda: dp.flows.FFJORD(
        jax.random.key(1), n_blocks=2, width=8, depth=1, activation=jnp.tanh,
        ode=dp.flows.ODESettings(solver=diffrax.Heun(), n_steps=3)),
    "spline_coupling": lambda: dp.flows.SplineFlow(jax.random.key(2), flow_layers=2,
                                                   nn_width=8),
    "spline_maf": lambda: dp.flows.SplineFlow(jax.random.key(3), kind="autoregressive",
                                              flow_layers=2, nn_width=8, knots=5),
    "ensemble": lambda: dp.flows.Ensemble(
        [dp.flows.FFJORD(jax.random.key(i), width=8, depth=1) for i in range(2)],
        average="prob"),
    "plummer_df": lambda: dp.flows.PlummerDF(r_max=5.0),
}
FRAMES = {
    "rotating": lambda: dp.RotatingFrame(omega=[0.0, 0.1, 0.3], center=[0.1, 0.0, 0.0]),
    "moving": lambda: dp.MovingFrame(u0=[0.2, 0.0, -0.1]),
}


def _same(a, b):
    la = jax.tree.leaves(eqx.filter(a, eqx.is_array))
    lb = jax.tree.leaves(eqx.filter(b, eqx.is_array))
    return (jax.tree.structure(a) == jax.tree.structure(b)
            and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb)))


@pytest.mark.parametrize("name", sorted(models.ALL))
def test_every_potential_round_trips(tmp_path, name):
    pot = models.build(name)
    model = dp.PotentialModel(pot, FRAMES["rotating"]())
    path = save_model(tmp_path / "m.eqx", model, {"note": name})
    loaded, meta = load_model(path)
    assert meta == {"note": name} and _same(model, loaded)
    x = jax.random.normal(jax.random.key(4), (8, 3))
    np.testing.assert_array_equal(loaded.potential.acceleration(x), pot.acceleration(x))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow if n.startswith("spline") else ()) for n in sorted(DFS)
])
def test_every_df_round_trips(tmp_path, name):
    df = DFS[name]()
    loaded, _ = load_model(save_model(tmp_path / "df.eqx", df))
    assert _same(df, loaded)
    w = dp.flows.PlummerDF().sample(jax.random.key(5), 16)
    np.testing.assert_array_equal(loaded.log_prob(w), df.log_prob(w))


def test_float64_models_come_back_in_float64(tmp_path):
    with jax.enable_x64(True):
        pot = dp.NeuralPotential(key=jax.random.key(0), width=4, depth=1)
        path = save_model(tmp_path / "x64.eqx", pot)
    loaded, _ = load_model(path)
    assert loaded.net.weights[0].dtype == jnp.float64


def test_broken_files_name_the_file(tmp_path):
    path = save_model(tmp_path / "m.eqx", dp.Plummer())
    data = path.read_bytes()
    (tmp_path / "cut.eqx").write_bytes(data[:-3])
    (tmp_path / "flip.eqx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    (tmp_path / "text.eqx").write_text("hello\n")
    for name, match in [("cut", "corrupt or truncated"), ("flip", "corrupt or truncated"),
                        ("text", "not a deeppot model file")]:
        with pytest.raises(dp.CheckpointError, match=match) as info:
            load_model(tmp_path / f"{name}.eqx")
        assert f"{name}.eqx" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model(tmp_path / "missing.eqx")


def _reframe(path, edit):
    """The model file at `path` with its header edited, under a valid checksum (what a
    hostile author, not an accident, would write)."""
    head, body = path.read_bytes().split(b"\n", 1)
    header = edit(json.loads(head))
    del header["sha256"]
    return write_framed(path.with_name("edited.eqx"), header, body)


def test_only_trusted_code_is_named(tmp_path):
    path = save_model(tmp_path / "m.eqx", dp.Plummer())
    evil = _reframe(path, lambda h: {**h, "model": {**h["model"], "module": "os:system"}})
    with pytest.raises(dp.CheckpointError, match="may only name deeppot"):
        load_model(evil)


def test_one_edited_header_byte_is_refused(tmp_path):
    """The checksum covers the header: an edited parameter (G 1 -> 3) is corrupt, as is an
    edited version; a file of an unknown version with a valid checksum says so."""
    path = save_model(tmp_path / "m.eqx", dp.Plummer(G=1.0))
    data = path.read_bytes()
    assert data.count(b'"G": 1.0') == 1
    for old, new in [(b'"G": 1.0', b'"G": 3.0'),
                     (b'"version": 2', b'"version": 3'), (b'"version": 2', b'"version": 1')]:
        (tmp_path / "edited.eqx").write_bytes(data.replace(old, new, 1))
        with pytest.raises(dp.CheckpointError, match="edited.eqx' is corrupt or truncated"):
            load_model(tmp_path / "edited.eqx")
    newer = _reframe(path, lambda h: {**h, "version": 9})
    with pytest.raises(dp.CheckpointError, match="has version 9; this deeppot reads version 1, 2"):
        load_model(newer)


def test_version_1_files_are_read_with_their_body_checksum(tmp_path):
    """tests/data holds version 1 files (checksum of the arrays only): they load, and an
    altered array is still refused."""
    path = models.DATA / "trained_spherical.eqx"
    head, body = path.read_bytes().split(b"\n", 1)
    assert json.loads(head)["version"] == 1
    pot, _ = load_model(path)
    assert np.isfinite(float(pot.potential(jnp.ones(3))))
    (tmp_path / "v1.eqx").write_bytes(head + b"\n" + body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(dp.CheckpointError, match="v1.eqx' is corrupt or truncated"):
        load_model(tmp_path / "v1.eqx")


def test_unnameable_functions_are_refused_at_save(tmp_path):
    df = dp.flows.FFJORD(jax.random.key(0), width=4, depth=1, activation=lambda x: x)
    with pytest.raises(TypeError, match="lambda"):
        save_model(tmp_path / "df.eqx", df)


def test_unit_systems_round_trip(tmp_path):
    """A potential with a physical unit system (every potential carries one) saves and loads."""
    import astropy.units as u

    from deeppot.units import galactic

    pot = dp.MiyamotoNagai(m_tot=6.8e10 * u.Msun, a=3.0 * u.kpc, b=0.28 * u.kpc)
    back, _ = dp.load_model(dp.save_model(tmp_path / "mn.eqx", pot))
    assert back.units == galactic
    plain, _ = dp.load_model(dp.save_model(tmp_path / "p.eqx", dp.Plummer(G=4.3e-6)))
    assert not plain.units.is_physical and plain.G == 4.3e-6


def test_files_naming_moved_classes_still_load(tmp_path, monkeypatch):
    """A file written when the symmetry wrappers lived in `deeppot.flows._symmetry` names them
    by that path; `modelfile.MOVED` maps each such path to the class's new home."""
    from deeppot import modelfile

    flows = dp.flows
    sph = flows.SphericalDF(flows.FFJORD(jax.random.key(0), dim=3, width=4, depth=1),
                            scale_velocities=True)
    model = [flows.Augmented(sph, "mirror_z"),
             flows.AxisymmetricDF(flows.FFJORD(jax.random.key(1), dim=5, width=4, depth=1)),
             flows.symmetry_transform]
    moved = {old.partition(":")[2]: old for old in modelfile.MOVED}
    for name, old in moved.items():  # write the file as the old layout did
        monkeypatch.setattr(getattr(flows, name), "__module__", old.partition(":")[0])
    path = save_model(tmp_path / "old.eqx", model)
    monkeypatch.undo()
    text = path.read_bytes()
    written = {old for old in modelfile.MOVED if old.encode() in text}
    assert written == set(modelfile.MOVED) - {moved["AbstractSymmetricDF"]}
    loaded, _ = load_model(path)
    assert [type(m) for m in loaded[:2]] == [flows.Augmented, flows.AxisymmetricDF]
    assert loaded[2] is flows.symmetry_transform and _same(model[:2], loaded[:2])
    monkeypatch.setattr(modelfile, "MOVED", {})
    with pytest.raises(dp.CheckpointError, match="_symmetry:Augmented.*does not have"):
        load_model(path)


def test_moved_paths_lead_to_where_each_class_lives_now():
    """Every new path in the table is the one `save_model` writes today."""
    import importlib

    from deeppot.modelfile import MOVED

    for old, new in MOVED.items():
        module, _, name = new.partition(":")
        obj = getattr(importlib.import_module(module), name)
        assert (obj.__module__, obj.__qualname__) == (module, name)
        assert obj is getattr(dp.flows, old.partition(":")[2])


def test_files_with_ffjord_loss_settings_still_load(tmp_path, monkeypatch):
    """tests/data/ffjord_loss_settings.eqx was written before FFJORD's loss settings moved to
    the objectives (deeppot 9192db7), by

        model = [FFJORD(key(0), width=4, depth=1, reg_kinetic=0.01, hutchinson="gaussian",
                        cfm_sigma_min=0.01),
                 SphericalDF(FFJORD(key(1), dim=3, width=4, depth=1, reg_jacobian=0.0))]
        w = dp.mocks.plummer(key(2), 4).w
        save_model(path, model, {"w": w, "log_prob": [m.log_prob(w) for m in model]})

    Its header records those fields; `modelfile.DROPPED` skips them, and the flows give the
    log-densities they gave then, to the last bit. Without that row the file names fields
    FFJORD does not have, which is refused."""
    from deeppot import modelfile

    path = models.DATA / "ffjord_loss_settings.eqx"
    header = json.loads(path.read_bytes().split(b"\n", 1)[0])
    fields = header["model"]["list"][0]["fields"]
    assert {"reg_kinetic", "reg_jacobian", "hutchinson", "cfm_sigma_min"} <= set(fields)
    assert fields["reg_kinetic"] == {"value": 0.01}
    loaded, meta = load_model(path)
    assert type(loaded[0]) is dp.flows.FFJORD and type(loaded[1]) is dp.flows.SphericalDF
    assert not any(hasattr(m, "reg_kinetic") for m in (loaded[0], loaded[1].inner))
    w = jnp.asarray(meta["w"], jnp.float32)
    for m, expected in zip(loaded, meta["log_prob"]):
        np.testing.assert_array_equal(np.asarray(m.log_prob(w)),
                                      np.asarray(expected, np.float32))
    back, _ = load_model(save_model(tmp_path / "again.eqx", loaded))
    assert _same(back, loaded)
    monkeypatch.setattr(modelfile, "DROPPED", {})
    with pytest.raises(dp.CheckpointError, match="ffjord_loss_settings.eqx.*FFJORD has no "
                                                  "field '(reg_|hutchinson|cfm_)"):
        load_model(path)
