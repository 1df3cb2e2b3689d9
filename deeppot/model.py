"""What the potential fit trains: a potential together with the frame it is stationary in."""

from typing import Literal, final

import equinox as eqx
from jaxtyping import Array, Float

from .frames import AbstractFrame, InertialFrame
from .laplacian import METHODS, value_grad_laplacian
from .potentials import AbstractPotential, WithTail
from .validity import ValidityRegion


@final
class PotentialModel(eqx.Module):
    """A potential and the frame in which the stellar system is stationary.

    **Arguments:**

    - `potential`: any potential module (neural, analytic, symmetric, composite).
    - `frame`: an inertial (default), moving or rotating frame; its parameters train too
      unless filtered out with `trainable=`.
    - `laplacian_method`: how loss terms get ∇Φ and ∇²Φ (`"forward"`, `"hessian"`, `"hvp"`).
    - `region`: where the potential is constrained (`deeppot.validity.ValidityRegion`; the
      pipeline records the score points' region after the fit). Never trained; saved in
      the model file (files from before regions read back with `None`).
    """

    potential: AbstractPotential
    frame: AbstractFrame
    laplacian_method: Literal["forward", "hessian", "hvp"] = eqx.field(static=True)
    region: ValidityRegion | None = None

    def __init__(
        self,
        potential: AbstractPotential,
        frame: AbstractFrame | None = None,
        laplacian_method: Literal["forward", "hessian", "hvp"] = "forward",
        region: ValidityRegion | None = None,
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
        if region is not None and not isinstance(region, ValidityRegion):
            raise TypeError(f"region must be a ValidityRegion, got {type(region).__name__}")
        self.region = region

    def _region(self) -> ValidityRegion:
        if self.region is None:
            raise ValueError("this model has no validity region (fitted before regions were "
                             "recorded?); give it one with model.with_region(scores.x)")
        return self.region

    def with_region(self, x, *, quantiles=None) -> "PotentialModel":
        """This model with the validity region of positions `x` (n, 3) (e.g. its score
        points), of the kind its potential's symmetry suggests
        (`deeppot.validity.region_for`)."""
        from .validity import DEFAULT_QUANTILES, region_for

        region = region_for(self.potential, x,
                            quantiles=DEFAULT_QUANTILES if quantiles is None else quantiles)
        return PotentialModel(self.potential, self.frame, self.laplacian_method, region)

    def validity(self, x):
        """How far positions (..., 3) can be trusted: 1 inside the region, falling smoothly
        to 0 across its outer shell, 0 outside (`ValidityRegion.validity`)."""
        return self._region().validity(x)

    def classify(self, x):
        """`deeppot.validity.INSIDE`, `SHELL` or `OUTSIDE` for positions (..., 3)."""
        return self._region().classify(x)

    def with_tail(self, tail: AbstractPotential | str = "kepler") -> "PotentialModel":
        """This model with its potential continued beyond the region by `tail` (a
        `WithTail`: Keplerian by default, or a deeppot potential's shape)."""
        return PotentialModel(WithTail(self.potential, self._region(), tail=tail),
                              self.frame, self.laplacian_method, self.region)

    def value_grad_laplacian(
        self, x: Float[Array, "*batch 3"]
    ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch 3"], Float[Array, "*batch"]]:
        """Φ, ∇Φ and ∇²Φ of the potential at x, by the model's Laplacian method."""
        return value_grad_laplacian(self.potential, x, method=self.laplacian_method)
