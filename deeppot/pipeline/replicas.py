"""Replicas of a run (`[run] replicas = K`): the one place that derives replica k's key,
catalogue, config and directory.

Replica k differs from the others in what a scientist would vary: every stage's key is
`stage_key(seed, stage, k)` (the DF's initialisation and training batches, the score
draws, the potential fit), and its catalogue is a bootstrap resample of the run's stars
(`bootstrap`, keyed by `stage_key(seed, "data", k)`). Everything else — the config, the
shapes, hence the compiled functions — is shared, so replicas after the first reuse the
first one's compilations. The run directory (`deeppot.pipeline.run`) runs each replica's
stages in `run_dir/replica_NN/` and summarises the set (`deeppot.ReplicaSet`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from ..catalog import PhaseSpaceCatalog
from .config import Config
from .stages import stage_key

__all__ = ["bootstrap", "replica_catalog", "replica_config", "replica_dir"]


def bootstrap(catalog: PhaseSpaceCatalog, key) -> PhaseSpaceCatalog:
    """A bootstrap resample of a catalogue: n stars drawn uniformly with replacement.

    Each drawn star keeps its weight (and covariance): the pairs bootstrap of a weighted
    sample, whose weighted distribution estimates the same one as the catalogue's and whose
    spread includes that from uneven weights (drawing ∝ weight and dropping the weights
    would hide it). A zero-weight star may be drawn and still counts for nothing; the
    training loops draw batches ∝ weight, so a star drawn m times weighs m times its weight.

    **Arguments:**

    - `catalog`: a `PhaseSpaceCatalog`.
    - `key`: a typed key.

    **Returns:** a catalogue of the same size, with `meta["bootstrap"]` recording the draw.
    """
    n = len(catalog)
    rows = np.asarray(jax.random.randint(key, (n,), 0, n))
    distinct = int(np.unique(rows).size)
    return catalog.subset(rows, bootstrap={"n": n, "distinct_stars": distinct})


def replica_catalog(catalog: PhaseSpaceCatalog, seed: int, replica: int) -> PhaseSpaceCatalog:
    """Replica `replica`'s catalogue: the `bootstrap` of the run's catalogue keyed by
    `stage_key(seed, "data", replica)`."""
    return bootstrap(catalog, stage_key(seed, "data", replica))


def replica_config(cfg: Config, replica: int) -> Config:
    """The config a replica runs: the run's, with `[scores] path` (a file outside the run
    directory) given the suffix `_replica_NN` so that replicas do not share it."""
    if not cfg.scores.path:
        return cfg
    p = Path(cfg.scores.path)
    path = str(p.with_name(f"{p.stem}_{replica_dir(replica)}{p.suffix}"))
    return dataclasses.replace(cfg, scores=dataclasses.replace(cfg.scores, path=path))


def replica_dir(replica: int) -> str:
    """The name of replica `replica`'s directory in the run directory (`replica_03`)."""
    return f"replica_{replica:02d}"
