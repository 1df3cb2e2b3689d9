"""Conditional flow matching: simulation-free training of continuous flows."""

from __future__ import annotations

import typing

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import registry
from ..flows import AbstractContinuousFlowDF
from ._base import AbstractObjective

__all__ = ["FlowMatching"]


@registry.objectives.register("cfm")
@typing.final
class FlowMatching(AbstractObjective):
    """Conditional flow matching (Lipman et al. 2023) on the straight-line path from the
    standard-normal base (t = 0) to the standardised data (t = 1): the velocity field at a
    point of the path between a base draw x₀ and a data point u regresses onto
    `u − (1 − σ_min) x₀`, with no ODE solve. With K blocks, block k covers the global time
    interval [k/K, (k+1)/K] of that path, and the k-th slice of the batch trains it. For
    continuous flows (`FFJORD`) only.

    **Arguments:**

    - `sigma_min`: width of the conditional paths at t = 1.
    """

    sigma_min: float = eqx.field(static=True, default=1e-4)

    def __check_init__(self):
        if not 0 <= self.sigma_min < 1:
            raise ValueError(f"sigma_min must be in [0, 1); got {self.sigma_min}")

    def flow_loss(self, flow, w, key):
        """The mean squared error of the velocity fields, per block K² times the mean over
        its slice (velocities are 1/K per block, so the value does not depend on K)."""
        if not isinstance(flow, AbstractContinuousFlowDF):
            raise TypeError(f"flow matching trains continuous flows; got {type(flow).__name__}")
        u = flow.to_standard(w)
        m, d = u.shape
        fields = flow.velocity_fields
        n_blocks = len(fields)
        k0, kt = jax.random.split(key)
        x0 = jax.random.normal(k0, (m, d), u.dtype)
        tau = jax.random.uniform(kt, (m,), u.dtype)
        smin = self.sigma_min
        total = jnp.zeros((), u.dtype)
        # stratify: the i-th slice of the batch trains block i on its own time interval
        bounds = [round(i * m / n_blocks) for i in range(n_blocks + 1)]
        for i, field in enumerate(fields):
            lo, hi = bounds[i], bounds[i + 1]
            if hi <= lo:
                continue
            s = (i + tau[lo:hi]) / n_blocks
            xs = (1.0 - (1.0 - smin) * s[:, None]) * x0[lo:hi] + s[:, None] * u[lo:hi]
            target = (u[lo:hi] - (1.0 - smin) * x0[lo:hi]) / n_blocks
            pred = jax.vmap(field)(tau[lo:hi], xs)
            total = total + jnp.sum((pred - target) ** 2)
        return total * n_blocks**2 / m
