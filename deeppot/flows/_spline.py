"""Discrete rational-quadratic spline flows (flowjax) as distribution functions."""

from __future__ import annotations

import typing
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import AbstractDistribution, StandardNormal
from flowjax.flows import coupling_flow, masked_autoregressive_flow
from jaxtyping import Array, Float, PRNGKeyArray

from .. import registry
from ._base import AbstractFlowDF

__all__ = ["SplineFlow"]


@registry.distribution_functions.register("spline")
@typing.final
class SplineFlow(AbstractFlowDF):
    """A flowjax rational-quadratic spline flow on standardised phase-space coordinates.

    Fast to train and evaluate, but its scores are much noisier than a continuous flow's
    (see `benchmarks/bench_scores.py`). The spline acts on [-`interval`, `interval`] in
    standardised units and is the identity outside.

    **Arguments:**

    - `key`: a typed key.
    - `kind`: `"coupling"` (RealNVP-style coupling layers) or `"autoregressive"` (MAF).
    - `dim`: dimension of the points (6 for phase space).
    - `flow_layers`: number of spline layers.
    - `knots`: inner knots per spline.
    - `interval`: half-width of the spline interval, in standard deviations.
    - `nn_width`, `nn_depth`: conditioner network size.
    - `nn_activation`: conditioner activation (smooth by default so scores are smooth).
    - `chunk_size`: points per evaluation chunk.
    """

    flow: AbstractDistribution
    loc: Float[Array, " d"]
    scale: Float[Array, " d"]
    kind: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    architecture: tuple[tuple[str, typing.Any], ...] = eqx.field(static=True)
    objectives: typing.ClassVar[tuple[str, ...]] = ("nll",)

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        kind: str = "coupling",
        dim: int = 6,
        flow_layers: int = 8,
        knots: int = 8,
        interval: float = 5.0,
        nn_width: int = 128,
        nn_depth: int = 2,
        nn_activation: Callable = jax.nn.silu,
        chunk_size: int = 16384,
    ):
        builders = {"coupling": coupling_flow, "autoregressive": masked_autoregressive_flow}
        if kind not in builders:
            raise ValueError(f"kind must be one of {tuple(builders)}; got {kind!r}")
        self.flow = builders[kind](
            key,
            base_dist=StandardNormal((dim,)),
            transformer=RationalQuadraticSpline(knots=knots, interval=interval),
            flow_layers=flow_layers,
            nn_width=nn_width,
            nn_depth=nn_depth,
            nn_activation=nn_activation,
        )
        dtype = jnp.result_type(float)
        self.loc = jnp.zeros(dim, dtype)
        self.scale = jnp.ones(dim, dtype)
        self.kind = kind
        self.chunk_size = int(chunk_size)
        self.architecture = (("kind", kind), ("dim", dim), ("flow_layers", flow_layers),
                             ("knots", knots), ("interval", float(interval)),
                             ("nn_width", nn_width), ("nn_depth", nn_depth),
                             ("nn_activation", nn_activation))

    def __check_init__(self):
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")

    @property
    def constructor_arguments(self) -> dict[str, typing.Any]:
        """The arguments that rebuild this flow's structure (used by model files, since
        flowjax's internals hold closures that a file cannot name)."""
        return {**dict(self.architecture), "chunk_size": self.chunk_size}

    @property
    def distribution(self) -> AbstractDistribution:
        """The underlying flowjax distribution over *standardised* coordinates."""
        return self.flow

    def _log_prob_std(self, u):
        return paramax.unwrap(self.flow).log_prob(u)

    def _sample_std(self, key, m):
        return paramax.unwrap(self.flow).sample_and_log_prob(key, (m,))
