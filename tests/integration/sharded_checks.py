"""Sharded training and scoring on forced CPU devices; run by test_sharding.py in a subprocess.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python sharded_checks.py OUT_DIR [WHAT]

The flag must be set before JAX starts, hence the subprocess. Writes OUT_DIR/results.json
with one entry per check (numbers, not verdicts: the test asserts). With
`DEEPPOT_PROCESS_ID`/`DEEPPOT_NUM_PROCESSES`/`DEEPPOT_COORDINATOR` set it first joins a
multi-process run with `jax.distributed.initialize` and runs the `multiprocess` check.
"""

import json
import os
import sys
import time
import typing
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax._src import xla_bridge  # private, for one check: has the backend started?

import deeppot as dp
from deeppot.train import fit
from tests.dfs import GaussianDF

# jax.distributed.initialize must come before JAX starts its backend: importing deeppot
# must not start it
STARTED_BY_IMPORT = xla_bridge.backends_are_initialized()

if "DEEPPOT_NUM_PROCESSES" in os.environ:  # before any computation
    dp.sharding.initialize_distributed()


@typing.final
class _Net(eqx.Module):
    """A tiny tanh network y(x) for a regression loss."""

    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(1, 1, 8, 1, activation=jnp.tanh, key=key)

    def __call__(self, x):
        return jax.vmap(self.mlp)(x[:, None])[:, 0]


SPLITS: list = []  # shardings of the batch seen by the loss at compile time


def _mse(model, batch, key):
    x, y = batch
    jax.debug.inspect_array_sharding(x, callback=SPLITS.append)
    noise = 1e-3 * jax.random.normal(key, x.shape)  # a per-batch key: sharded draws too
    return jnp.mean((model(x + noise) - y) ** 2)


def _data(n=512):
    x = jax.random.normal(jax.random.key(0), (n,))
    return x, jnp.sin(2.0 * x) + 0.05 * jax.random.normal(jax.random.key(1), (n,))


def _leaves(model):
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


KW = dict(key=jax.random.key(2), batch_size=64, learning_rate=0.02, warmup_steps=5,
          ema_decay=0.9, validate_every=4, progress=False)


def check_fit():
    """Sharded (4 devices) against one device, an even and an uneven batch."""
    out = {"n_devices": jax.device_count()}
    weights = 1.0 + np.arange(512) % 3  # rows drawn ∝ weight: the cdf is replicated too
    for label, batch, w in (("even", 64, None), ("uneven", 30, weights)):
        # no validation here (the resume check has it): half the compilations
        kw = {**KW, "batch_size": batch, "validation_fraction": 0.0, "weights": w}
        SPLITS.clear()
        one, h1 = fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=20, devices=1, **kw)
        one_splits = [len(s.device_set) for s in SPLITS]
        SPLITS.clear()
        four, h4 = fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=20, **kw)
        out[label] = {
            "max_param_diff": _max_diff(one, four),
            "max_param": max(float(np.max(np.abs(x))) for x in _leaves(one)),
            "max_loss_diff": float(np.max(np.abs(np.subtract(h1.train_loss, h4.train_loss)))),
            "devices_unsharded": one_splits,
            "devices_sharded": [len(s.device_set) for s in SPLITS],
            "specs_sharded": sorted({str(getattr(s, "spec", s)) for s in SPLITS}),
            "params_replicated": all(a.sharding.is_fully_replicated and
                                     len(a.sharding.device_set) == jax.device_count()
                                     for a in jax.tree.leaves(eqx.filter(four, eqx.is_array))),
        }
    return out


def check_resume(tmp: Path):
    """An interrupted sharded run resumed from its checkpoint equals an uninterrupted one."""
    full, h_full = fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=30, **KW)
    path = tmp / "sharded.ckpt"
    path.unlink(missing_ok=True)
    fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=13, checkpoint_path=path,
        checkpoint_every=5, **KW)
    resumed, h_res = fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=30,
                         checkpoint_path=path, **KW)
    return {"params_equal": _equal(full, resumed),
            "history_equal": h_full.train_loss == h_res.train_loss
            and h_full.val_loss == h_res.val_loss}


def _score_diffs(a, b):
    return {f: float(np.max(np.abs(np.asarray(getattr(a, f)) - np.asarray(getattr(b, f)))))
            for f in ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f")}


def check_scores(tmp: Path):
    """sample_scores on 4 devices (groups of 4 chunks, a padded group, a short tail chunk;
    each chunk in several of the DF's own chunks) against one device, in memory and
    streamed to HDF5."""
    df = GaussianDF(chunk_size=64)
    one = dp.sample_scores(df, jax.random.key(5), 1050, chunk_size=100, devices=1)
    four = dp.sample_scores(df, jax.random.key(5), 1050, chunk_size=100)
    on_disk = dp.sample_scores(df, jax.random.key(5), 1050, chunk_size=100,
                               path=tmp / "scores.h5")
    return {"sharded": _score_diffs(one, four), "file": _score_diffs(one, on_disk.load()),
            "rows": len(four), "distinct_rows": len(np.unique(four.x[:, 0]))}


def check_flow_scores(tmp: Path):
    """The same for trained-DF models (FFJORD on diffrax, a spline flow from flowjax): their
    solvers and scans trace inside `shard_map`."""
    w = np.asarray(dp.flows.PlummerDF(r_max=10.0).sample(jax.random.key(5), 256))
    out = {}
    for name, df in (
        ("ffjord", dp.flows.FFJORD(jax.random.key(6), n_blocks=1, width=8, depth=1,
                                   chunk_size=64, ode=dp.flows.ODESettings(n_steps=2))),
        ("spline", dp.flows.SplineFlow(jax.random.key(6), chunk_size=64)),
    ):
        df = df.standardise(w)
        one = dp.sample_scores(df, jax.random.key(7), 300, chunk_size=64, devices=1)
        four = dp.sample_scores(df, jax.random.key(7), 300, chunk_size=64)
        out[name] = _score_diffs(one, four)
        out[name + "_max"] = {f: float(np.max(np.abs(getattr(one, f))))
                              for f in ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f")}
    return out


def check_potential_from_file(tmp: Path):
    """fit_potential sharded from an HDF5 ScoreFile equals it from memory (and one device)."""
    scores = dp.sample_scores(dp.flows.PlummerDF(r_max=10.0), jax.random.key(8), 2000,
                              chunk_size=500, path=tmp / "scores.h5")
    model = dp.PotentialModel(dp.Plummer(m_tot=2.0, r_s=0.5))
    kw = dict(key=jax.random.key(9), max_steps=30, batch_size=128, learning_rate=1e-2,
              warmup_steps=5, progress=False)
    in_memory = dp.fit_potential(model, scores.load(), **kw)
    streamed = dp.fit_potential(model, scores, **kw)
    one = dp.fit_potential(model, scores.load(), devices=1, **kw)
    return {"file_vs_memory_max_diff": _max_diff(in_memory, streamed),
            "sharded_vs_one_max_diff": _max_diff(in_memory, one)}


def check_multiprocess(tmp: Path):
    """Run by each of several processes: a sharded fit with a checkpoint and scores."""
    model, _ = fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=40, **KW)
    path = tmp / "multi.ckpt"  # a fresh directory shared by the processes
    fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=23, checkpoint_path=path,
        checkpoint_every=10, **KW)
    resumed, _ = fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=40,
                     checkpoint_path=path, **KW)
    scores = dp.sample_scores(GaussianDF(chunk_size=64), jax.random.key(5), 1050, chunk_size=100)
    return {"process": jax.process_index(), "n_processes": jax.process_count(),
            "n_devices": jax.device_count(), "resumed_equal": _equal(model, resumed),
            "params": [x.tolist() for x in _leaves(model)],
            "scores_x_sum": float(np.sum(scores.x)), "scores_len": len(scores)}


def check_single_reference(tmp: Path):
    """The one-process numbers the multi-process run must reproduce."""
    model, _ = fit(_Net(jax.random.key(3)), _mse, _data(), max_steps=40, **KW)
    scores = dp.sample_scores(GaussianDF(chunk_size=64), jax.random.key(5), 1050, chunk_size=100)
    return {"params": [x.tolist() for x in _leaves(model)],
            "scores_x_sum": float(np.sum(scores.x)), "n_devices": jax.device_count()}


CHECKS = {"fit": check_fit, "resume": check_resume, "scores": check_scores,
          "flow_scores": check_flow_scores,
          "potential_from_file": check_potential_from_file,
          "multiprocess": check_multiprocess, "single_reference": check_single_reference}


def main():
    out_dir = Path(sys.argv[1])
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else ["fit", "resume", "scores"]
    results = {"import": {"backend_started": STARTED_BY_IMPORT}}
    for name in names:
        fn = CHECKS[name]
        cpu = time.process_time()
        results[name] = fn() if name == "fit" else fn(out_dir)
        results[name]["cpu_s"] = time.process_time() - cpu
    suffix = f"_{jax.process_index()}" if jax.process_count() > 1 else ""
    (out_dir / f"results{suffix}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
