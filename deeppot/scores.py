"""Phase-space points drawn from a distribution function, with its scores there."""

import json
import os
from pathlib import Path
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

_FIELDS = ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f")


@final
class ScoreSample(eqx.Module):
    """Points (x, v) with the scores ∂ln f/∂x, ∂ln f/∂v and ln f there; n rows each.

    This is the data the potential fit trains on. It is a pytree of arrays sharing the
    leading axis, so batches are `jax.tree.map(lambda a: a[idx], sample)`.
    """

    x: Float[Array, "n 3"]
    v: Float[Array, "n 3"]
    dlnf_dx: Float[Array, "n 3"]
    dlnf_dv: Float[Array, "n 3"]
    ln_f: Float[Array, " n"]

    def __init__(self, x, v, dlnf_dx, dlnf_dv, ln_f=None):
        arrays = {"x": x, "v": v, "dlnf_dx": dlnf_dx, "dlnf_dv": dlnf_dv}
        n = None
        for name, value in arrays.items():
            value = jnp.asarray(value)
            if value.ndim != 2 or value.shape[1] != 3:
                raise ValueError(f"ScoreSample.{name} must have shape (n, 3), got {value.shape}")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(f"ScoreSample.{name} has {value.shape[0]} rows, expected {n}")
            arrays[name] = value
        if n == 0:
            raise ValueError("ScoreSample is empty")
        ln_f = jnp.full((n,), jnp.nan) if ln_f is None else jnp.asarray(ln_f)
        if ln_f.shape != (n,):
            raise ValueError(f"ScoreSample.ln_f must have shape ({n},), got {ln_f.shape}")
        self.x, self.v = arrays["x"], arrays["v"]
        self.dlnf_dx, self.dlnf_dv = arrays["dlnf_dx"], arrays["dlnf_dv"]
        self.ln_f = ln_f

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> "ScoreSample":
        return jax.tree.map(lambda a: a[index], self)

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        """Write the sample to `.npz` atomically; `meta` (JSON-serialisable) is kept."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"ScoreSample files are .npz, got {path.name!r}")
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {k: np.asarray(getattr(self, k)) for k in _FIELDS}
        np.savez(tmp, **arrays, meta=np.array(json.dumps(meta or {})))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScoreSample":
        """Read a sample written by `save`."""
        with np.load(path) as data:
            missing = [k for k in _FIELDS if k not in data]
            if missing:
                raise ValueError(f"{path}: not a ScoreSample file, missing {missing}")
            return cls(*(data[k] for k in _FIELDS))


def correct_selection(scores: ScoreSample, selection) -> ScoreSample:
    """Scores of the underlying DF f from those of the observed DF f_obs ∝ S(x) f.

    For a selection S(x) that depends on position only:
    ∂ln f/∂x = ∂ln f_obs/∂x − ∂ln S/∂x, ∂ln f/∂v = ∂ln f_obs/∂v, ln f = ln f_obs − ln S
    (up to a constant). The points themselves are unchanged (they follow f_obs, which is
    where the data constrain f).

    **Arguments:**

    - `scores`: a `ScoreSample` drawn from a DF trained on the selected stars.
    - `selection`: the selection function (`deeppot.selection.AbstractSelection`), in the
      same units as the scores' positions.

    **Returns:** a new `ScoreSample` with corrected `dlnf_dx` and `ln_f`.
    """
    from .selection import AbstractSelection

    if not isinstance(selection, AbstractSelection):
        raise TypeError(f"selection must be an AbstractSelection, got {type(selection).__name__}")
    log_s, grad = selection.log_selection_and_gradient(jnp.asarray(scores.x))
    dtype = scores.dlnf_dx.dtype
    return ScoreSample(scores.x, scores.v, scores.dlnf_dx - grad.astype(dtype), scores.dlnf_dv,
                       scores.ln_f - log_s.astype(scores.ln_f.dtype))


def sample_scores(
    df, key: PRNGKeyArray, n: int, chunk_size: int = 2**14, progress: bool = False,
    selection=None,
) -> ScoreSample:
    """Draw `n` points from a distribution function and evaluate its scores there.

    Works chunk by chunk so that 2^20 points and more fit in memory.

    **Arguments:**

    - `df`: a distribution function (`deeppot.flows.AbstractDF`).
    - `key`: a typed PRNG key.
    - `n`: number of points.
    - `chunk_size`: points drawn and differentiated at a time.
    - `progress`: show a progress bar.
    - `selection`: the known selection function S(x) of the stars the DF was trained on
      (`deeppot.selection.AbstractSelection`); the scores are then those of the
      underlying DF (see `correct_selection`).

    **Returns:** a `ScoreSample` of n rows.
    """
    if n < 1 or chunk_size < 1:
        raise ValueError(f"n and chunk_size must be positive, got {n=}, {chunk_size=}")
    sizes = [chunk_size] * (n // chunk_size) + ([n % chunk_size] if n % chunk_size else [])
    keys = jax.random.split(key, len(sizes))
    chunks = []
    iterator = zip(keys, sizes)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(sizes), desc="scores", unit="chunk")
    for k, m in iterator:
        w, ln_f, dx, dv = df.sample_and_score(k, m)
        chunks.append(tuple(np.asarray(a) for a in (w[:, :3], w[:, 3:], dx, dv, ln_f)))
    scores = ScoreSample(*(np.concatenate(parts) for parts in zip(*chunks)))
    return scores if selection is None else correct_selection(scores, selection)
