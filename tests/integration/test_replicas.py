"""Replica sets in a run directory: the layout, the set's model file and report, and a
replica interrupted mid-fit resuming bit for bit."""

import json

import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot import pipeline, train
from tests.runs import tiny_run

TINY = tiny_run(seed=3, n=2048, width=16, depth=2, steps=150)
SET = {**TINY, "run": {**TINY["run"], "replicas": 2}}


def _run(run_dir, raw=SET):
    lines = []
    metrics = pipeline.run(pipeline.parse_config(raw), run_dir, log=lines.append)
    return metrics, lines


@pytest.fixture(scope="module")
def finished_set(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("set")
    metrics, lines = _run(run_dir)
    return run_dir, metrics, lines


def test_replica_set_layout_model_file_and_report(finished_set):
    run_dir, metrics, lines = finished_set
    for name in ("catalog.npz", "potential.eqx", "metrics.json", "report.md",
                 "replica_00/potential.eqx", "replica_01/scores.npz",
                 "replica_01/checkpoints/potential.ckpt", "replica_01/state.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "df.eqx").exists() and not (run_dir / "replica_00/catalog.npz").exists()
    rs, meta = pipeline.load_model(run_dir / "potential.eqx")
    assert isinstance(rs, dp.ReplicaSet) and len(rs) == 2 and meta["replicas"] == 2
    one, _ = pipeline.load_model(run_dir / "replica_01/potential.eqx")
    x = np.array([[0.5, 0.2, 0.1]])
    np.testing.assert_array_equal(rs.values("gradient", x)[1], one.potential.gradient(x))
    # the replicas differ (their keys), and the band holds the median between them
    g = rs.values("gradient", x)
    assert not np.array_equal(g[0], g[1])
    b = rs.band("density", x)
    assert b.lo95 < b.lo68 < b.median < b.hi68 < b.hi95
    cov = metrics["coverage"]
    assert set(cov) == {"force", "components", "density", "phi"}
    assert 0 <= cov["force"]["68"] <= cov["force"]["95"] <= 1
    assert len(metrics["fit_quality"]) == 2 and metrics == json.loads(
        (run_dir / "metrics.json").read_text())
    report = (run_dir / "report.md").read_text()
    assert "coverage" in report.split("| quantity |")[1].splitlines()[0]
    assert any(line.startswith("replica 2/2: potential: done") for line in lines)


def test_rerun_of_a_finished_set_skips_every_replica(finished_set):
    run_dir, metrics, _ = finished_set
    again, lines = _run(run_dir)
    assert all("running" not in line and "resuming" not in line
               for line in lines if line.startswith("replica"))
    assert again["coverage"] == metrics["coverage"]


def test_interrupted_replica_resumes_bit_exact(finished_set, tmp_path, monkeypatch):
    run_dir, metrics, _ = finished_set
    real = train.fit_potential
    calls = []

    def interrupted(*args, settings, **kwargs):  # replica 1 stops after a checkpoint
        calls.append(1)
        if len(calls) < 2:
            return real(*args, settings=settings, **kwargs)
        real(*args, settings=settings, max_steps=100, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fit_potential", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    state = json.loads((tmp_path / "replica_01/state.json").read_text())
    assert state["scores"]["done"] and not state["potential"]["done"]
    monkeypatch.setattr(train, "fit_potential", real)
    again, lines = _run(tmp_path)
    assert "replica 1/2: potential: skipped (done, outputs verified)" in lines
    assert "replica 2/2: potential: resuming from checkpoint" in lines
    for k in ("00", "01"):
        a = json.loads((tmp_path / f"replica_{k}/metrics.json").read_text())["accuracy"]
        b = json.loads((run_dir / f"replica_{k}/metrics.json").read_text())["accuracy"]
        assert a == b  # bit for bit the uninterrupted replica
    assert again["coverage"] == metrics["coverage"]


def test_stage_keys_of_one_run_are_unchanged_and_replicas_differ():
    def bits(key):
        return np.asarray(jax.random.key_data(key)).tolist()

    assert bits(pipeline.stage_key(3, "df")) == bits(jax.random.fold_in(jax.random.key(3), 1))
    keys = [bits(pipeline.stage_key(3, "df", k)) for k in (None, 0, 1)]
    assert len({str(k) for k in keys}) == 3


def test_calibration_reaches_another_run_through_its_config(finished_set, tmp_path):
    """The report's calibration, applied by the `--set` line it prints, reruns the reports
    only, and makes the force bands' coverage nominal on the run it was learned on."""
    import shutil

    from deeppot.pipeline import calibration_setting

    run_dir, metrics, _ = finished_set
    cal = metrics["calibration"]
    assert set(cal) == {"force", "components", "density", "phi"}
    setting = calibration_setting(cal["force"])
    assert f"--set '{setting}'" in (run_dir / "report.md").read_text()
    shutil.copytree(run_dir, tmp_path / "set")
    raw = pipeline.apply_overrides(SET, [setting])
    again, lines = _run(tmp_path / "set", raw)
    assert not [line for line in lines if line.startswith("replica") and "running" in line
                and ": report:" not in line]  # no replica refits
    assert again["band"]["inflation"] == pytest.approx(cal["force"], rel=1e-3)
    n = again["coverage"]["force"]["n"]
    for level, nominal in (("68", 0.68), ("95", 0.95)):
        assert again["coverage"]["force"][level] == pytest.approx(nominal, abs=3 / n)
    assert again["calibration"] == metrics["calibration"]  # learned from uninflated bands


def test_switching_the_centre_refits_only_replica_0(finished_set, tmp_path):
    """`[run] replica_centre`: the set loads with the run's centre; switched, replica 0
    (full-data fit against bootstrap resample) is refitted and the bootstrap replicas
    resume, bit for bit, from the other construction's. (The tiny run's exact DF draws its
    scores without the catalogue, so the refit's values need not differ.)"""
    import shutil

    run_dir, metrics, _ = finished_set
    default = pipeline.parse_config(SET).run.replica_centre
    rs, meta = pipeline.load_model(run_dir / "potential.eqx")
    assert rs.centre == default == meta["replica_centre"] == metrics["band"]["centre"]
    other = "median" if default == "full" else "full"
    shutil.copytree(run_dir, tmp_path / "set")
    raw = pipeline.apply_overrides(SET, [f"run.replica_centre={other}"])
    again, lines = _run(tmp_path / "set", raw)
    assert "replica 1/2: df: running" in lines
    assert "replica 2/2: potential: skipped (done, outputs verified)" in lines
    back, _ = pipeline.load_model(tmp_path / "set/potential.eqx")
    assert back.centre == other == again["band"]["centre"]
    x = np.array([[0.5, 0.2, 0.1]])
    np.testing.assert_array_equal(back.values("gradient", x)[1], rs.values("gradient", x)[1])

    def fingerprint(d, k):
        return json.loads((d / f"replica_0{k}/state.json").read_text())["potential"]["fingerprint"]

    assert fingerprint(tmp_path / "set", 0) != fingerprint(run_dir, 0)
    assert fingerprint(tmp_path / "set", 1) == fingerprint(run_dir, 1)
