"""Shared jaxtyping aliases."""

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Position = Float[Array, "3"]
Positions = Float[Array, "*batch 3"]
Scalar = Float[Array, ""]
ScalarLike = float | Float[ArrayLike, ""]
PhasePoint = Float[Array, "6"]
Key = PRNGKeyArray

__all__ = ["Array", "Float", "Key", "PhasePoint", "Position", "Positions", "Scalar", "ScalarLike"]
