"""What the potential fit trains: a potential together with the frame it is stationary in."""

from typing import Literal, final

import equinox as eqx
from jaxtyping import Array, Float

from .frames import AbstractFrame, InertialFrame
from .laplacian import METHODS, value_grad_laplacian
from .potentials import AbstractPotential


@final
class PotentialModel(eqx.Module):
    """A potential and the frame in which the stellar system is stationary.

    **Arguments:**

    - `potential`: any potential module (neural, analytic, symmetric, composite).
    - `frame`: an inertial (default), moving or rotating frame; its parameters train too
      unless filtered out with `trainable=`.
    - `laplacian_method`: how loss terms get ∇Φ and ∇²Φ (`"forward"`, `"hessian"`, `"hvp"`).
    """

    potential: AbstractPotential
    frame: AbstractFrame
    laplacian_method: Literal["forward", "hessian", "hvp"] = eqx.field(static=True)

    def __init__(
        self,
        potential: AbstractPotential,
        frame: AbstractFrame | None = None,
        laplacian_method: Literal["forward", "hessian", "hvp"] = "forward",
    ):
        if not isinstance(potential, AbstractPotential):
            raise TypeError(f"potential must be a deeppot potential, got {type(potential)}")
        if laplacian_method not in METHODS:
            raise ValueError(f"laplacian_method must be one of {METHODS}, got {laplacian_method!r}")
        frame = InertialFrame() if frame is None else frame
        if frame.units is not None and not frame.units.same_units(potential.units):
            raise ValueError(
                f"the frame is in {frame.units!r} but the potential in {potential.units!r}: "
                "build both in one unit system (units=...)"
            )
        self.potential = potential
        self.frame = frame
        self.laplacian_method = laplacian_method

    def value_grad_laplacian(
        self, x: Float[Array, "*batch 3"]
    ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch 3"], Float[Array, "*batch"]]:
        """Φ, ∇Φ and ∇²Φ of the potential at x, by the model's Laplacian method."""
        return value_grad_laplacian(self.potential, x, method=self.laplacian_method)
