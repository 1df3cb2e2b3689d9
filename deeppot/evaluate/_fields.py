"""Φ, ∇Φ and ρ of a potential (or a `PotentialModel`'s) at many positions."""

import math

import jax.numpy as jnp
import numpy as np

from ..laplacian import value_grad_laplacian
from ..model import PotentialModel
from ..potentials import AbstractPotential


def potential_of(model) -> AbstractPotential:
    """The potential of a `PotentialModel`, or `model` itself if it is a potential."""
    return model.potential if isinstance(model, PotentialModel) else model


def fields(pot: AbstractPotential, x, chunk_size: int):
    """Φ, ∇Φ and ρ at x, in chunks so grids of any size fit in memory."""
    x = np.asarray(x, dtype=float).reshape(-1, 3)
    out = [[], [], []]
    for i in range(0, len(x), chunk_size):
        phi, grad, lap = value_grad_laplacian(pot, jnp.asarray(x[i : i + chunk_size]))
        for store, value in zip(out, (phi, grad, lap / (4 * math.pi * pot.G))):
            store.append(np.asarray(value))
    return tuple(np.concatenate(parts) for parts in out)
