"""Training checkpoints: framed files (`deeppot._framed`, as model files are) of the
parameters, optimiser state and averages, with the settings they must be resumed with."""

from __future__ import annotations

import hashlib
import io
import os

import equinox as eqx
import numpy as np

from .._errors import CheckpointError
from .._framed import read_framed, write_framed
from ._settings import TrainSettings

# 4: a framed file (deeppot._framed), the checksum covers the header
CHECKPOINT_VERSION = 4


def save_checkpoint(path, arrays, header: dict):
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, arrays)
    write_framed(path, header, buffer.getvalue())


def load_checkpoint(path, like):
    """The arrays and header of a checkpoint, or `CheckpointError` naming the file."""
    what = f"checkpoint '{os.fspath(path)}'"
    fix = "; delete it (or its run directory's stage) to start this training over"
    try:
        header, body = read_framed(path, kind="checkpoint", versions=(CHECKPOINT_VERSION,),
                                   fix=fix)
    except OSError as err:
        raise CheckpointError(f"cannot read {what}: {err}") from None
    try:
        arrays = eqx.tree_deserialise_leaves(io.BytesIO(body), like)
    except Exception as err:  # a checkpoint of another model
        raise CheckpointError(f"{what} does not fit this model ({type(err).__name__})"
                              f"{fix}") from None
    return arrays, header


def run_config(s: TrainSettings, n: int, weights, rates) -> dict:
    """What a checkpoint must have been written with to be resumed (JSON)."""
    config = {"n": n, "batch_size": s.batch_size, "validation_fraction": s.validation_fraction,
              "optimizer": s.optimizer if isinstance(s.optimizer, str) else "custom",
              "ema": s.ema_decay is not None, "learning_rate": s.learning_rate,
              "warmup_steps": s.warmup_steps, "lr_schedule": "custom",
              "keep_best": s.keep_best}
    if rates is not None:  # a custom schedule: the rates themselves
        config["lr_schedule_sha1"] = hashlib.sha1(rates.tobytes()).hexdigest()
    else:
        config["lr_schedule"] = s.lr_schedule
    if s.lr_schedule == "cosine":  # the rate at every step depends on the run's length
        config["max_steps"] = s.max_steps
    if weights is not None:
        config["weights_sha1"] = hashlib.sha1(np.asarray(weights, np.float64).tobytes()).hexdigest()
    return config
