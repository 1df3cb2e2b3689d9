"""Replicas of a run (`[run] replicas = K`): the one place that derives replica k's key,
catalogue, config and directory.

Replica k differs from the others in what a scientist would vary: every stage's key is
`stage_key(seed, stage, k)` (the DF's initialisation and training batches, the score
draws, the potential fit), and its catalogue is a bootstrap resample of the run's stars
(`bootstrap`, keyed by `stage_key(seed, "data", k)`) — except replica 0 of a set centred
on the full-data fit (`[run] replica_centre = "full"`), which fits the run's catalogue
itself, every star once with its own weight (`full_data`). Everything else — the config, the
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

__all__ = ["bootstrap", "full_data", "replica_catalog", "replica_config", "replica_dir",
           "replica_salt"]


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


def full_data(replica: int, centre: str = "median") -> bool:
    """Whether replica `replica` of a set centred on `centre` (`[run] replica_centre`)
    fits every star of the run's catalogue (replica 0 of a set centred on `"full"`)."""
    return centre == "full" and replica == 0


def replica_catalog(catalog: PhaseSpaceCatalog, seed: int, replica: int,
                    centre: str = "median") -> PhaseSpaceCatalog:
    """Replica `replica`'s catalogue: the run's catalogue itself for the `full_data`
    replica, else the `bootstrap` of it keyed by `stage_key(seed, "data", replica)` (the
    same draw whatever the centre, so the bootstrap replicas of the two constructions are
    the same fits)."""
    if full_data(replica, centre):
        return catalog
    return bootstrap(catalog, stage_key(seed, "data", replica))


def replica_salt(replica: int, catalog_sha256: str, centre: str = "median") -> dict:
    """What a replica's stage fingerprints add to the run's: its index, its parent
    catalogue's checksum, and for the `full_data` replica that it holds every star (so
    that a bootstrap replica 0 of an older set is rerun, not resumed, and the bootstrap
    replicas of the two constructions resume from each other)."""
    salt = {"replica": replica, "catalog_sha256": catalog_sha256}
    if full_data(replica, centre):
        salt["full_data"] = True
    return salt


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
