"""Runs a scientist can trust: each failure a careless or hostile user met, reproduced.

Every test here reproduces one failure that passed silently, lost data or printed a
traceback before (issue 11), and asserts the behaviour that replaced it.
"""

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot import cli, pipeline, train
from tests.runs import tiny_run

TINY = tiny_run(seed=5, n=1024, width=8, depth=1, steps=30)


def _cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_clean_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("deeppot: "), err
    return lines[0]


# --- 1, 2: diverged training stops, is never marked done --------------------------------------


def test_a_diverging_loss_stops_training_and_writes_no_checkpoint_after_it(tmp_path):
    """A loss that rises steadily after the warm-up (as the DF loss did from 6.5 to 105 at
    learning rate 1e3) stops the fit with a TrainingError naming the step."""
    data = jnp.linspace(-1.0, 1.0, 256)

    def loss(params, batch, key):
        """Value a², gradient −2a: each step the optimiser takes raises the loss."""
        a2 = params["a"] ** 2 + 0.0 * jnp.mean(batch)
        return jax.lax.stop_gradient(2 * a2) - a2

    path = tmp_path / "ckpt"
    with pytest.raises(dp.TrainingError, match=r"diverged.*at step (\d+).*lower the learn") \
            as info:
        train.fit({"a": jnp.array(0.01)}, loss, data, key=jax.random.key(0), max_steps=5000,
                  batch_size=16, learning_rate=0.01, optimizer="adam",
                  validation_fraction=0.0, checkpoint_path=path, checkpoint_every=10,
                  progress=False)
    import re

    stopped = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    written = json.loads(path.read_bytes().split(b"\n", 1)[0])["step"]
    assert 20 < stopped < 500 and written <= stopped


def test_noisy_but_healthy_training_is_not_called_diverged():
    data = jax.random.normal(jax.random.key(1), (4096,))

    def loss(params, batch, key):  # a noisy quadratic: the loss fluctuates, then settles
        return jnp.mean((batch - params["m"]) ** 2)

    _, history = train.fit({"m": jnp.array(3.0)}, loss, data, key=jax.random.key(2),
                           max_steps=600, batch_size=4, learning_rate=0.05,
                           validation_fraction=0.0, progress=False)
    assert len(history.step) == 600


def test_a_failed_stage_is_not_marked_done_and_its_outputs_not_written(tmp_path, monkeypatch):
    def diverge(*args, **kwargs):
        raise dp.TrainingError("the training loss diverged at step 7")

    monkeypatch.setattr(train, "fit_potential", diverge)
    with pytest.raises(dp.TrainingError):
        pipeline.run(pipeline.parse_config(TINY), tmp_path, log=None)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["scores"]["done"] and not state["potential"]["done"]
    assert not (tmp_path / "potential.eqx").exists() and not (tmp_path / "metrics.json").exists()


def test_a_broken_df_is_refused_before_its_scores_are_cached():
    """A DF that fits the stars worse than a Gaussian (a diverged flow) is an error."""
    import diffrax

    cat = dp.mocks.plummer(jax.random.key(0), 2048)
    fixed = dp.flows.ODESettings(solver=diffrax.Tsit5(), n_steps=2)
    df = dp.flows.FFJORD(jax.random.key(1), width=4, depth=1, ode=fixed).standardise(cat.w)
    import equinox as eqx

    broken = eqx.tree_at(lambda d: [b.field for b in d.blocks], df,
                         [jax.tree.map(lambda a: 30.0 * a if eqx.is_inexact_array(a) else a,
                                       b.field) for b in df.blocks])
    with pytest.raises(dp.TrainingError, match="worse than a Gaussian"):
        pipeline.check_df(broken, cat)
    nan = eqx.tree_at(lambda d: [b.field for b in d.blocks], df,
                      [jax.tree.map(lambda a: jnp.nan * a if eqx.is_inexact_array(a) else a,
                                    b.field) for b in df.blocks])
    with pytest.raises(dp.TrainingError, match="non-finite"):
        pipeline.check_df(nan, cat)
    adaptive = nan.with_ode(dp.flows.ODESettings(max_steps=16))  # the solver cannot finish
    with pytest.raises(dp.TrainingError, match="cannot be evaluated"):
        pipeline.check_df(adaptive, cat, n=64)


def test_a_poor_fit_is_reported_with_a_warning(tmp_path, capsys):
    """A fit that explains part of the scores is a warning, not an error (one that explains
    nothing is, issue 27 below): a Plummer sphere of a tenth of the true mass, not trained,
    has the force 0.1 F, a relative residual (1 − 0.1) / (1 + 0.1) and a residual 0.9 times
    that of Φ = 0 at every point."""
    raw = {**TINY, "fit": {**TINY["fit"], "steps": 0},
           "potential": {"model": "plummer", "params": {"m_tot": 0.1}}}
    metrics = pipeline.run(pipeline.parse_config(raw), tmp_path, log=None)
    assert metrics["fit_quality"]["median_relative_residual"] == pytest.approx(0.9 / 1.1)
    assert metrics["potential_check"]["residual_ratio"] == pytest.approx(0.9, rel=1e-5)
    assert any("the fit is poor" in w for w in metrics["warnings"])
    assert "**Warning:** the fit is poor" in (tmp_path / "report.md").read_text()


# --- 3: a command never destroys its own input ------------------------------------------------


def test_fit_df_writes_one_file_and_refuses_to_overwrite_its_input(tmp_path, capsys):
    cat = tmp_path / "cat.npz"
    dp.mocks.plummer(jax.random.key(0), 512).save(cat)
    before = cat.read_bytes()
    code, _, err = _cli(capsys, "fit-df", str(cat), "-o", str(cat), "--no-progress",
                        "--set", "df.kind=spline", "--set", "df.steps=1")
    assert code == 1 and "is also an input" in _one_clean_line(err)
    assert cat.read_bytes() == before
    out = tmp_path / "model.json"  # the name once written twice, destroying the model
    code, _, _ = _cli(capsys, "fit-df", str(cat), "-o", str(out), "--set", "df.kind=exact")
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["cat.npz", "model.json"]
    df, meta = dp.load_model(out)
    assert meta["stage"] == "df" and isinstance(df, dp.flows.PlummerDF)


# --- 4: a selection that keeps nothing -------------------------------------------------------


def test_a_selection_that_keeps_no_star_is_a_clean_error(tmp_path, capsys):
    code, _, err = _cli(capsys, "mock", "plummer", "--n", "1000", "--select",
                        "--select-radius", "0", "--out", str(tmp_path / "s.npz"))
    assert code == 1 and "--select-radius must be positive" in _one_clean_line(err)
    far = ["--select-center", "1e6", "0", "0", "--select-radius", "1"]
    code, _, err = _cli(capsys, "mock", "plummer", "--n", "1000", "--select", *far,
                        "--out", str(tmp_path / "s.npz"), "--no-progress")
    assert code == 1 and "keeps none of the" in _one_clean_line(err)


# --- 5: checkpoints with integrity -----------------------------------------------------------


def _checkpointed_fit(path, steps=40):
    data = jax.random.normal(jax.random.key(3), (256,))

    def loss(params, batch, key):
        return jnp.mean((batch - params["m"]) ** 2)

    return train.fit({"m": jnp.array(1.0)}, loss, data, key=jax.random.key(4),
                     max_steps=steps, batch_size=16, checkpoint_path=path,
                     checkpoint_every=10, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_damaged_checkpoints_are_named_and_never_resumed(tmp_path, damage):
    path = tmp_path / "fit.ckpt"
    _checkpointed_fit(path, steps=20)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 7])
    elif damage == "flip":
        path.write_bytes(data[:-2] + bytes([data[-2] ^ 4]) + data[-1:])
    else:
        path.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    with pytest.raises(dp.CheckpointError, match="fit.ckpt") as info:
        _checkpointed_fit(path)
    assert "delete it" in str(info.value)


def test_a_run_sets_a_corrupt_checkpoint_aside_and_starts_the_stage_over(tmp_path):
    cfg = pipeline.parse_config(TINY)
    pipeline.run(cfg, tmp_path, log=None, stop_after="scores")
    ckpt = tmp_path / "checkpoints" / "potential.ckpt"
    ckpt.write_bytes(b"garbage\n")
    state = json.loads((tmp_path / "state.json").read_text())
    state["potential"] = {"fingerprint": pipeline.rundir.fingerprints(cfg)["potential"],
                          "done": False}  # as if interrupted mid-fit
    (tmp_path / "state.json").write_text(json.dumps(state))
    lines = []
    metrics = pipeline.run(cfg, tmp_path, log=lines.append)
    assert any("not a deeppot checkpoint" in line and "set it aside" in line for line in lines)
    assert list((tmp_path / "checkpoints").glob("potential.ckpt.corrupt-*"))
    fresh = tmp_path / "fresh"
    assert metrics["accuracy"] == pipeline.run(cfg, fresh, log=None)["accuracy"]


# --- 6: one clean line per error -------------------------------------------------------------


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 3)))  # no velocities
    code, _, err = _cli(capsys, "fit-df", str(bad), "-o", str(tmp_path / "df.eqx"))
    assert code == 1 and "missing arrays ['v']" in _one_clean_line(err)
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, x=np.zeros((3, 2)), v=np.zeros((3, 3)))
    code, _, err = _cli(capsys, "fit-df", str(shapes), "-o", str(tmp_path / "df.eqx"))
    assert code == 1 and "shape (n, 3)" in _one_clean_line(err)
    code, _, err = _cli(capsys, "scores", str(tmp_path / "missing.eqx"), "-o",
                        str(tmp_path / "s.npz"))
    assert code == 1 and "no such model file" in _one_clean_line(err)
    with pytest.raises(FileNotFoundError):  # developers get the traceback on request
        cli.main(["--traceback", "scores", str(tmp_path / "missing.eqx"), "-o", "s.npz"])


def test_an_unwritable_run_directory_is_one_clean_line(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory's parent should be")
    cfg = tmp_path / "c.toml"
    cfg.write_text(pipeline.dumps_toml(pipeline.parse_config(TINY).to_dict()))
    code, _, err = _cli(capsys, "run", str(cfg), "--run-dir", str(blocker / "run"))
    assert code == 1 and "Not a directory" in _one_clean_line(err)


# --- 7: inputs that changed, runs that overlap -----------------------------------------------


def test_a_replaced_catalogue_of_the_same_size_and_mtime_is_noticed(tmp_path):
    cat = tmp_path / "cat.npz"
    dp.mocks.plummer(jax.random.key(0), 512).save(cat)
    raw = {**TINY, "data": {"source": "file", "path": str(cat)}, "df": {"kind": "spline"}}
    fp = pipeline.rundir.fingerprints(pipeline.parse_config(raw))
    stat = cat.stat()
    dp.mocks.plummer(jax.random.key(1), 512).save(cat)
    os.utime(cat, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cat.stat().st_size == stat.st_size and cat.stat().st_mtime_ns == stat.st_mtime_ns
    again = pipeline.rundir.fingerprints(pipeline.parse_config(raw))
    assert again["data"] != fp["data"]


def test_a_second_run_in_the_same_directory_is_refused(tmp_path):
    import fcntl

    tmp_path.joinpath("lock").write_text("")
    with open(tmp_path / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        with pytest.raises(dp.DeeppotError, match="in use by another deeppot process"):
            pipeline.run(pipeline.parse_config(TINY), tmp_path, log=None)


# --- 8: files and parameters -----------------------------------------------------------------


def test_a_truncated_csv_is_an_error_not_half_a_catalogue(tmp_path):
    path = tmp_path / "cat.csv"
    dp.mocks.plummer(jax.random.key(0), 100).save(path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(ValueError, match="truncated or damaged: it declares 100 rows"):
        dp.PhaseSpaceCatalog.load(path)


def test_nfw_is_finite_at_the_centre_and_far_away():
    nfw = dp.NFW(m_s=2.0, r_s=1.5)
    assert float(nfw.potential(jnp.zeros(3))) == pytest.approx(-2.0 / 1.5, rel=1e-6)
    assert np.all(np.asarray(nfw.gradient(jnp.zeros(3))) == 0)
    far = jnp.array([3e20, 0.0, 0.0], jnp.float32)
    assert np.isfinite(float(nfw.potential(far))) and np.all(np.isfinite(nfw.gradient(far)))


@pytest.mark.parametrize("G", [0.0, -1.0, float("nan"), float("inf")])
def test_the_gravitational_constant_is_validated(G):
    with pytest.raises(ValueError, match="G must be positive and finite"):
        dp.Plummer(G=G)
    with pytest.raises(ValueError, match="G must be positive and finite"):
        dp.NeuralPotential(key=jax.random.key(0), width=2, depth=1, G=G)


# --- issue 27: integrity ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished TINY run, its metrics and `copy(dst)` giving a fresh copy of it."""
    import shutil

    run_dir = tmp_path_factory.mktemp("integrity") / "run"
    metrics = pipeline.run(pipeline.parse_config(TINY), run_dir, log=None)
    return metrics, lambda dst: shutil.copytree(run_dir, dst)


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_an_edited_header_is_not_resumed(tmp_path):
    """The checkpoint's checksum covers its header: step 20 edited to 21 is corrupt."""
    path = tmp_path / "fit.ckpt"
    _checkpointed_fit(path, steps=20)
    data = path.read_bytes()
    assert data.count(b'"step": 20,') == 1
    path.write_bytes(data.replace(b'"step": 20,', b'"step": 21,'))
    with pytest.raises(dp.CheckpointError, match=r"fit.ckpt' is corrupt.*delete it"):
        _checkpointed_fit(path)


def test_a_model_file_with_an_edited_header_is_refused(tmp_path, capsys):
    path = dp.save_model(tmp_path / "pot.eqx", dp.Plummer(G=1.0), {"stage": "potential"})
    data = path.read_bytes()
    assert data.count(b'"G": 1.0') == 1
    path.write_bytes(data.replace(b'"G": 1.0', b'"G": 3.0'))
    with pytest.raises(dp.CheckpointError, match="pot.eqx' is corrupt or truncated"):
        dp.load_model(path)
    code, _, err = _cli(capsys, "evaluate", str(path), "--catalog", str(tmp_path / "c.npz"))
    assert code == 1 and "pot.eqx' is corrupt" in _one_clean_line(err)


def test_an_output_never_replaces_a_file_of_another_kind(finished_run, tmp_path, capsys):
    metrics, copy = finished_run
    run_dir = copy(tmp_path / "run")
    before = (run_dir / "df.eqx").read_bytes()
    code, _, err = _cli(capsys, "fit-potential", str(run_dir / "scores.npz"), "-o",
                        str(run_dir / "df.eqx"), "--no-progress", "--set", "fit.steps=1")
    line = _one_clean_line(err)
    assert code == 1 and "df.eqx' exists and is a df file" in line and "refusing" in line
    assert (run_dir / "df.eqx").read_bytes() == before
    lines = []
    assert pipeline.run(pipeline.parse_config(TINY), run_dir, log=lines.append) == metrics
    assert all("skipped" in line for line in lines[:5])
    with pytest.raises(FileExistsError, match=r"catalog.npz' exists and is a catalog file"):
        pipeline.ARTEFACTS["scores"].save(None, run_dir / "catalog.npz", {})
    # a file of the same kind is replaced (with a fit the health check passes)
    code, _, err = _cli(capsys, "fit-potential", str(run_dir / "scores.npz"), "-o",
                        str(run_dir / "potential.eqx"), "--no-progress", "--set", "fit.steps=40")
    assert code == 0, err
    assert dp.load_model(run_dir / "potential.eqx")[1]["training"]["steps"] == 40


def test_a_corrupt_score_file_is_named(finished_run, tmp_path, capsys):
    _, copy = finished_run
    scores = copy(tmp_path / "run") / "scores.npz"
    _flip(scores, scores.stat().st_size // 2)
    code, _, err = _cli(capsys, "fit-potential", str(scores), "-o", str(tmp_path / "p.eqx"))
    assert code == 1 and f"score file '{scores}' is corrupt" in _one_clean_line(err)
    assert not (tmp_path / "p.eqx").exists()


@pytest.mark.parametrize(("name", "stage"), [("catalog.npz", "data"), ("scores.npz", "scores"),
                                             ("potential.eqx", "potential"),
                                             ("report.md", "report")])
def test_an_altered_output_of_a_finished_run_is_redone(finished_run, tmp_path, name, stage):
    """A finished run verifies its outputs' checksums: the stage of an altered one runs again
    (with a notice naming the file), as does every later stage, and the result is that of
    the untouched run."""
    metrics, copy = finished_run
    run_dir = copy(tmp_path / "run")
    _flip(run_dir / name, (run_dir / name).stat().st_size - 5)
    lines = []
    again = pipeline.run(pipeline.parse_config(TINY), run_dir, log=lines.append)
    names = list(pipeline.rundir.STAGE_NAMES)
    first = names.index(stage)
    for s in names[:first]:
        assert f"{s}: skipped (done, outputs verified)" in lines
    notice = [line for line in lines if line.startswith(f"{stage}: ")][0]
    assert f"'{run_dir / name}' has changed or is corrupt" in notice
    assert notice.startswith((f"{stage}: running", f"{stage}: resuming"))
    for s in names[first:]:
        assert f"{s}: done" in " ".join(lines)
    assert again["accuracy"] == metrics["accuracy"]
    lines = []
    pipeline.run(pipeline.parse_config(TINY), run_dir, log=lines.append)
    assert all("skipped" in line for line in lines[:5])


def test_a_failed_rerun_leaves_nothing_derived_from_the_old_result(finished_run, tmp_path,
                                                                   monkeypatch):
    _, copy = finished_run
    run_dir = copy(tmp_path / "run")
    catalog = (run_dir / "catalog.npz").stat().st_mtime_ns

    def diverge(*args, **kwargs):
        raise dp.TrainingError("the training loss diverged at step 3")

    monkeypatch.setattr(train, "fit_df", diverge)
    with pytest.raises(dp.TrainingError):
        pipeline.run(pipeline.parse_config({**TINY, "df": {"kind": "spline"}}), run_dir,
                     log=None)
    for name in ("df.eqx", "scores.npz", "potential.eqx", "metrics.json", "report.md",
                 "checkpoints/potential.ckpt"):
        assert not (run_dir / name).exists(), name
    state = json.loads((run_dir / "state.json").read_text())
    assert sorted(state) == ["data", "df"] and not state["df"]["done"]
    assert (run_dir / "catalog.npz").stat().st_mtime_ns == catalog


# --- issue 27: fit health ---------------------------------------------------------------------


DEAD = {**TINY, "potential": {"model": "neural", "width": 16, "depth": 2},
        "fit": {**TINY["fit"], "steps": 60, "learning_rate": 1e3}}


def test_a_dead_network_fails_its_stage_and_is_never_marked_done(tmp_path, capsys):
    """At learning rate 1e3 the network's units saturate: finite weights, Φ constant, the
    force exactly 0 at every point. `deeppot run` once exited 0 and marked it done."""
    cfg = tmp_path / "dead.toml"
    cfg.write_text(pipeline.dumps_toml(pipeline.parse_config(DEAD).to_dict()))
    run_dir = tmp_path / "run"
    for _ in range(2):  # a rerun does not skip the stage: it fails again
        code, _, err = _cli(capsys, "run", str(cfg), "--run-dir", str(run_dir))
        line = _one_clean_line(err)
        assert code == 1 and "has no force: rms |∇Φ| = 0 at the score points" in line
        assert line.endswith("lower [fit] learning_rate (it is 1000) or raise [fit] steps "
                             "(it is 60)")
        state = json.loads((run_dir / "state.json").read_text())
        assert state["scores"]["done"] and not state["potential"]["done"]
        assert not (run_dir / "potential.eqx").exists()
    log = (run_dir / "run.log").read_text()
    assert "potential: resuming from checkpoint" in log and "potential: skipped" not in log
    # the fit-potential command runs the same stage, so the same check
    out = tmp_path / "pot.eqx"
    code, _, err = _cli(capsys, "fit-potential", str(run_dir / "scores.npz"), "-o", str(out),
                        "--config", str(cfg))
    assert code == 1 and "has no force" in _one_clean_line(err) and not out.exists()


# --- issue 27: numeric edges ------------------------------------------------------------------


def test_power_law_cutoff_near_the_centre_returns_quickly_and_finite():
    pot = dp.PowerLawCutoff(1.0, 1.8, 1.0)
    x = jnp.array([[1e-6, 0, 0], [1e-20, 0, 0], [0, 0, 0]], jnp.float32)
    start = time.perf_counter()
    phi, acc, rho = pot.potential(x), pot.acceleration(x), pot.density(x)
    assert time.perf_counter() - start < 30  # it never returned before (jax's E1 under vmap)
    # Φ(0) = −G m Γ(1 − α/2) / (Γ((3 − α)/2) r_c) for α < 2
    assert float(phi[2]) == pytest.approx(-math.gamma(0.1) / math.gamma(0.6), rel=1e-6)
    assert np.all(np.isfinite(phi)) and np.all(np.isfinite(acc)) and np.all(np.isfinite(rho[:2]))
    # the force −G M(<r)/r², M(<r) → m r^(3−α) / ((3 − α)/2 · Γ((3 − α)/2) r_c^(3−α))
    assert float(-acc[1, 0]) == pytest.approx(1e-20 ** -0.8 / (0.6 * math.gamma(0.6)), rel=1e-5)


def test_isochrone_density_far_away_in_float32_is_finite_and_right():
    x = jnp.array([1e15, 0, 0], jnp.float32)
    rho = float(dp.Isochrone(m_tot=1e30, b=1.0).density(x))  # r² overflowed to a NaN
    # ρ = m b (2a + b) / (4π (a + b)² a³), a = sqrt(r² + b²) ≈ r: 2m / (4π r⁴) ≈ 1.6e-31
    assert rho == pytest.approx(2e30 / (4 * math.pi * 1e15**4), rel=1e-5, abs=0)
    phi = float(dp.Logarithmic(v_c=1.0, r_c=1.0, q=0.7).potential(x * 1e15))  # was +inf
    assert phi == pytest.approx(math.log(1e30), rel=1e-6, abs=0)


# --- issue 27: catalogues ----------------------------------------------------------------------


def _run_on(tmp_path, capsys, catalogue):
    """`deeppot run` with `[data] source = "file"` on `catalogue`: (exit status, error line)."""
    cfg = tmp_path / "c.toml"
    raw = {**TINY, "data": {"source": "file", "path": str(catalogue)}, "df": {"kind": "spline"}}
    cfg.write_text(pipeline.dumps_toml(pipeline.parse_config(raw).to_dict()))
    code, _, err = _cli(capsys, "run", str(cfg), "--run-dir", str(tmp_path / "run"))
    return code, _one_clean_line(err) if code else err


def _write_csv(path, rows, header="x,y,z,vx,vy,vz"):
    np.savetxt(path, rows, delimiter=",", header=header, comments="")
    return path


def test_identical_stars_are_refused_before_a_df_is_trained(tmp_path, capsys):
    same = _write_csv(tmp_path / "same.csv", np.tile([[1.0, 2, 3, 4, 5, 6]], (400, 1)))
    code, line = _run_on(tmp_path, capsys, same)
    assert code == 1 and str(same) in line
    assert "x, y, z, vx, vy, vz are the same for all 400 stars" in line
    assert not (tmp_path / "run" / "df.eqx").exists()
    two = np.tile(np.random.default_rng(0).normal(size=(2, 6)), (200, 1))
    code, line = _run_on(tmp_path, capsys, _write_csv(tmp_path / "two.csv", two))
    assert code == 1 and "only 2 of 400 stars are distinct rows" in line


def test_a_csv_cut_inside_its_last_number_is_refused(tmp_path):
    path = tmp_path / "cat.csv"
    dp.mocks.plummer(jax.random.key(0), 100).save(path)
    path.write_bytes(path.read_bytes()[:-4])  # the last row loses its last three digits
    with pytest.raises(ValueError, match=r"cat\.csv' may be truncated: its last line does not "
                                         r"end in a newline \(if that row is complete, add"):
        dp.PhaseSpaceCatalog.load(path)
    rows = np.random.default_rng(1).normal(size=(10, 6))
    own = _write_csv(tmp_path / "own.csv", rows)  # a user's file, without deeppot's header
    np.testing.assert_array_equal(dp.PhaseSpaceCatalog.load(own).w, rows)
    own.write_bytes(own.read_bytes().rstrip(b"\n"))
    with pytest.raises(ValueError, match="may be truncated"):
        dp.PhaseSpaceCatalog.load(own)


@pytest.mark.parametrize("scale", ["one", "all"])
def test_values_that_overflow_float32_are_named_as_overflow(tmp_path, capsys, scale):
    cat = dp.mocks.plummer(jax.random.key(0), 256)
    x = cat.x.copy()
    if scale == "one":
        x[7, 1] = 1e30
    else:
        x *= 1e30
    path = dp.PhaseSpaceCatalog(x, cat.v).save(tmp_path / "big.npz")
    code, line = _run_on(tmp_path, capsys, path)
    assert code == 1 and str(path) in line and "positions overflow float32" in line
    assert "use larger units or enable x64" in line
    assert ("largest in row 7: 1e+30" in line) == (scale == "one")
    with jax.enable_x64(True):  # in float64 the same stars fit
        np.testing.assert_array_equal(dp.PhaseSpaceCatalog.load(path).x, x)


def test_weights_that_are_all_zero_are_refused(tmp_path, capsys):
    cat = dp.mocks.plummer(jax.random.key(0), 256)
    with pytest.raises(ValueError, match="weights are all zero"):
        cat.with_weights(np.zeros(len(cat)))
    path = tmp_path / "w0.npz"
    np.savez(path, x=cat.x, v=cat.v, weights=np.zeros(len(cat)))
    code, line = _run_on(tmp_path, capsys, path)
    assert code == 1 and str(path) in line and "weights are all zero" in line


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_catalogues_get_the_umasks_mode(tmp_path, capsys, umask):
    old = os.umask(umask)
    try:
        cat = dp.mocks.plummer(jax.random.key(0), 64)
        paths = [cat.save(tmp_path / f"cat{ext}") for ext in (".npz", ".h5", ".csv")]
        galactic = dp.PhaseSpaceCatalog(cat.x, cat.v, units="galactic")
        paths.append(dp.survey.write_table(dp.survey.to_observables(galactic),
                                           tmp_path / "obs.fits"))
        mock = tmp_path / "mock.npz"
        code, _, err = _cli(capsys, "mock", "plummer", "--n", "64", "--out", str(mock))
        assert code == 0, err
        paths.append(mock)
    finally:
        os.umask(old)
    for path in paths:
        assert (path.stat().st_mode & 0o777) == 0o666 & ~umask, path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


@pytest.mark.parametrize("ext", [".npz", ".h5", ".csv"])
def test_a_flipped_byte_names_the_catalogue_as_corrupt(tmp_path, capsys, ext):
    path = dp.mocks.plummer(jax.random.key(0), 256).save(tmp_path / f"catalog{ext}")
    data = bytearray(path.read_bytes())
    if ext == ".csv":
        at = data.rindex(b".")  # '.' becomes '>'
    elif ext == ".h5":  # inside the velocities
        at = data.index(dp.PhaseSpaceCatalog.load(path).v[100].tobytes())
    else:
        at = len(data) // 2
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    code, line = _run_on(tmp_path, capsys, path)
    assert code == 1 and f"'{path}' is corrupt" in line


def test_no_flipped_bit_in_an_npz_directory_drops_an_array_silently(tmp_path):
    """Each array of an .npz has a CRC, its directory has none: a flip there made weights or
    meta vanish (optional when read). Every flip of the directory is refused or harmless."""
    import zipfile

    rng = np.random.default_rng(0)
    cat = dp.mocks.plummer(jax.random.key(0), 300).with_weights(rng.uniform(0.1, 5, 300))
    path = cat.save(tmp_path / "w.npz")
    good = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        start = z.start_dir
    refused = 0
    for at in range(start, len(good)):
        for bit in (0x01, 0x10):
            data = bytearray(good)
            data[at] ^= bit
            path.write_bytes(bytes(data))
            try:
                back = dp.PhaseSpaceCatalog.load(path)
            except ValueError as err:
                assert f"'{path}' is corrupt" in str(err) and "\n" not in str(err)
                refused += 1
                continue
            assert back.weights is not None and np.array_equal(back.weights, cat.weights)
            assert back.meta == cat.meta and np.array_equal(back.v, cat.v)
    assert refused > (len(good) - start)  # most flips are caught, none passes changed


def test_a_mock_never_replaces_a_file_of_another_kind(finished_run, tmp_path, capsys):
    _, copy = finished_run
    run_dir = copy(tmp_path / "run")
    before = (run_dir / "scores.npz").read_bytes()
    code, _, err = _cli(capsys, "mock", "plummer", "--n", "64", "--out",
                        str(run_dir / "scores.npz"))
    assert code == 1 and "scores.npz' exists and is a scores file" in _one_clean_line(err)
    assert (run_dir / "scores.npz").read_bytes() == before
    code, _, err = _cli(capsys, "mock", "plummer", "--n", "64", "--out",
                        str(run_dir / "catalog.npz"))  # a catalogue is replaced
    assert code == 0, err
    assert len(dp.PhaseSpaceCatalog.load(run_dir / "catalog.npz")) == 64


def test_a_checkpoint_directory_that_does_not_exist_is_made(finished_run, tmp_path, capsys):
    """It was found missing only at the first checkpoint, losing the training so far."""
    _, copy = finished_run
    run_dir = copy(tmp_path / "run")
    ck = tmp_path / "new" / "ck"
    code, _, err = _cli(capsys, "fit-potential", str(run_dir / "scores.npz"), "-o",
                        str(tmp_path / "pot.eqx"), "--no-progress", "--checkpoint-dir", str(ck),
                        "--set", "fit.steps=200", "--set", "fit.checkpoint_every=100")
    assert code == 0, err
    assert (ck / "potential.ckpt").exists() and (tmp_path / "pot.eqx").exists()
