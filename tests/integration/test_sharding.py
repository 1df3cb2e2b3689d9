"""Data parallelism: sharded training and scoring on 4 forced CPU devices equal one device.

XLA's `--xla_force_host_platform_device_count` must be set before JAX starts, so the runs
happen in a subprocess (`sharded_checks.py`) that reports numbers; the asserts are here.
Tolerance: after 20 float32 steps, parameters agree to 1e-5 (absolute, on parameters of
order 1) and losses to 1e-5 relative; the only difference is the order of the sums over
the batch (per device, then across devices). Scores, whose points are independent, and
resumed runs agree bit for bit.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot.sharding import data_mesh, initialize_distributed

SCRIPT = Path(__file__).with_name("sharded_checks.py")
ROOT = Path(__file__).parents[2]
ATOL = 1e-5


def _env(n_devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _run(out: Path, checks: str, n_devices: int = 4) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), checks], env=_env(n_devices),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("sharded"), "fit,resume,scores")


def test_importing_deeppot_leaves_jax_distributed_possible(sharded):
    assert not sharded["import"]["backend_started"]


@pytest.mark.parametrize("batch", ["even", "uneven"])
def test_sharded_training_equals_one_device(sharded, batch):
    fit = sharded["fit"]
    assert fit["n_devices"] == 4
    r = fit[batch]  # "uneven": 30 rows on 4 devices (XLA pads the last shard), weighted
    # the loss saw its batch split over the 4 devices, along the batch axis
    assert set(r["devices_sharded"]) == {4} and r["specs_sharded"] == ["P('data',)"]
    assert set(r["devices_unsharded"]) == {1}
    assert r["params_replicated"]
    assert r["max_param_diff"] < ATOL and r["max_param"] > 0.1
    assert r["max_loss_diff"] < ATOL


def test_resumed_sharded_run_equals_uninterrupted(sharded):
    assert sharded["resume"]["params_equal"] and sharded["resume"]["history_equal"]


def test_sharded_scores_equal_one_device(sharded):
    s = sharded["scores"]
    assert s["rows"] == 1050 and s["distinct_rows"] == 1050
    assert all(v == 0.0 for v in s["sharded"].values()), s["sharded"]
    assert all(v == 0.0 for v in s["file"].values()), s["file"]


@pytest.mark.slow
def test_sharded_flow_scores_and_potential_fit_from_file(tmp_path):
    r = _run(tmp_path, "flow_scores,potential_from_file")
    for name in ("ffjord", "spline"):
        for field, diff in r["flow_scores"][name].items():
            assert diff <= 1e-5 * max(1.0, r["flow_scores"][name + "_max"][field]), (name, field)
    p = r["potential_from_file"]
    assert p["file_vs_memory_max_diff"] < ATOL, p
    assert p["sharded_vs_one_max_diff"] < ATOL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    """2 processes × 2 devices (jax.distributed over localhost) against 1 process × 4."""
    reference = _run(tmp_path / "one", "single_reference")["single_reference"]
    shared = tmp_path / "multi"
    shared.mkdir()
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(shared), "multiprocess"],
            env=_env(2, DEEPPOT_COORDINATOR=coordinator, DEEPPOT_NUM_PROCESSES="2",
                     DEEPPOT_PROCESS_ID=str(i)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs[0][-3000:] + errs[1][-3000:]
    runs = [json.loads((shared / f"results_{i}.json").read_text())["multiprocess"]
            for i in range(2)]
    for i, r in enumerate(runs):
        assert r["process"] == i and r["n_processes"] == 2 and r["n_devices"] == 4
        assert r["resumed_equal"]
        assert r["scores_len"] == 1050
        assert r["scores_x_sum"] == pytest.approx(reference["scores_x_sum"], rel=1e-6)
        for a, b in zip(r["params"], reference["params"], strict=True):
            np.testing.assert_allclose(a, b, atol=ATOL)
    assert (shared / "multi.ckpt").exists()


def test_devices_option_is_checked():
    n = jax.device_count()
    assert data_mesh(None) is None if n == 1 else data_mesh(None).size == n
    assert data_mesh(1) is None
    assert data_mesh(jax.devices()[:1]) is None
    with pytest.raises(ValueError, match="between 1 and"):
        data_mesh(n + 1)
    with pytest.raises(ValueError, match="between 1 and"):
        data_mesh(0)
    with pytest.raises(TypeError, match="devices must be"):
        data_mesh("gpu")
    with pytest.raises(ValueError, match="twice"):
        data_mesh([jax.devices()[0]] * 2)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    with pytest.raises(ValueError, match="one axis 'data'"):
        data_mesh(mesh)
    with pytest.raises(ValueError, match="between 1 and"):
        dp.sample_scores(dp.flows.PlummerDF(), jax.random.key(0), 10, devices=n + 1)


def test_initialize_distributed_needs_all_three_variables():
    with pytest.raises(ValueError, match="missing"):
        initialize_distributed({"DEEPPOT_COORDINATOR": "host0:1234"})
    with pytest.raises(ValueError, match="integers"):
        initialize_distributed({"DEEPPOT_COORDINATOR": "host0:1234",
                                "DEEPPOT_NUM_PROCESSES": "two", "DEEPPOT_PROCESS_ID": "0"})
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        initialize_distributed({"DEEPPOT_COORDINATOR": "host0:1234",
                                "DEEPPOT_NUM_PROCESSES": "2", "DEEPPOT_PROCESS_ID": "2"})


def test_initialize_distributed_takes_the_run_as_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    with pytest.raises(ValueError, match="together"):
        initialize_distributed(coordinator="host0:1234")
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        initialize_distributed(coordinator="host0:1234", num_processes=2, process_id=-1)
    env = {"DEEPPOT_COORDINATOR": "envhost:1", "DEEPPOT_NUM_PROCESSES": "3",
           "DEEPPOT_PROCESS_ID": "2"}
    assert initialize_distributed(env, coordinator="host0:1234", num_processes=2,
                                  process_id=1) == 0  # one process really runs here
    assert calls == [{"coordinator_address": "host0:1234", "num_processes": 2,
                      "process_id": 1}]
    initialize_distributed(env)  # joined already: left as it is
    assert len(calls) == 1
