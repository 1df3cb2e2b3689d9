"""Maximum likelihood, with the continuous flows' stochastic trace and regularisers."""

from __future__ import annotations

import typing

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import registry
from ..flows import AbstractContinuousFlowDF
from ._base import AbstractObjective

__all__ = ["MaximumLikelihood"]

TRACES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")


@registry.objectives.register("nll")
@typing.final
class MaximumLikelihood(AbstractObjective):
    """Maximum likelihood: the mean negative log-density of the batch, in physical units.

    For a flow with an exact log-determinant (`SplineFlow`) that is all, and the settings
    below do not apply. A continuous flow (`FFJORD`) integrates its log-determinant along
    the ODE, with the trace of the Jacobian of its velocity field computed exactly or
    estimated by Hutchinson's estimator, and the loss adds the kinetic-energy and
    Jacobian-Frobenius regularisers of Finlay et al. (2020), integrated along the same
    solve; the defaults are the paper's recipe.

    **Arguments:**

    - `trace`: `"hutchinson"` (one random probe per point and block; unbiased) or
      `"exact"` (the full Jacobian; `d` times the cost).
    - `probe`: the Hutchinson probe distribution, `"rademacher"` or `"gaussian"`.
    - `reg_kinetic`: weight of the kinetic energy ∫ |f|² dt.
    - `reg_jacobian`: weight of the Jacobian's squared Frobenius norm ∫ |∂f/∂z|²_F dt
      (Hutchinson estimates with `trace = "hutchinson"`).
    """

    trace: str = eqx.field(static=True, default="hutchinson")
    probe: str = eqx.field(static=True, default="rademacher")
    reg_kinetic: float = eqx.field(static=True, default=1e-4)
    reg_jacobian: float = eqx.field(static=True, default=1e-4)
    likelihood: typing.ClassVar[bool] = True

    def __check_init__(self):
        if self.trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}; got {self.trace!r}")
        if self.probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}; got {self.probe!r}")
        if not (self.reg_kinetic >= 0 and self.reg_jacobian >= 0):
            raise ValueError("reg_kinetic and reg_jacobian must be non-negative; got "
                             f"{self.reg_kinetic} and {self.reg_jacobian}")

    def flow_loss(self, flow, w, key):
        """−mean ln p(w), plus the regularisers for a continuous flow (see above)."""
        if not isinstance(flow, AbstractContinuousFlowDF):
            return -jnp.mean(flow.batch_log_prob(w))
        u = flow.to_standard(w)
        probes = None
        if self.trace == "hutchinson":
            draw = jax.random.rademacher if self.probe == "rademacher" else jax.random.normal
            probes = jnp.swapaxes(draw(key, (len(flow.velocity_fields), *u.shape), u.dtype),
                                  0, 1)
        lp, kinetic, frobenius = flow.regularised_log_prob_std(u, probes)
        nll = -jnp.mean(lp) - flow.log_det_standard()
        return nll + self.reg_kinetic * jnp.mean(kinetic) + \
            self.reg_jacobian * jnp.mean(frobenius)
