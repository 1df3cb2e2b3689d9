"""A gala potential whose energy, gradient, density and Hessian come from deeppot."""

from __future__ import annotations

import math
import typing

import astropy.units as u
import numpy as np
from gala.potential import PotentialBase
from gala.potential.potential.symmetry import CylindricalSymmetry, SphericalSymmetry
from gala.units import DimensionlessUnitSystem, galactic
from gala.units import dimensionless as gala_dimensionless

from deeppot.export import FieldEvaluator, unit_system
from deeppot.potentials import AbstractPotential


def _factor(unit, gala_units) -> float:
    """How many of gala's units one deeppot `unit` is."""
    return float(u.Quantity(1.0, unit).decompose(gala_units).value)


@typing.final
class DeeppotPotential(PotentialBase):
    """A deeppot potential as a gala potential (build it with `to_gala`).

    gala calls `_energy` (positions (n, 3)), `_gradient` ((3, n)), `_density` ((n, 3)) and
    `_hessian` ((n, 3), returning (n, 3, 3)); each is one call of a compiled, vectorised
    float64 JAX function. It has no C implementation: gala integrates its orbits with its
    Python integrators, vectorised over orbits. `region` is the validity region it was
    exported with (or `None`) and `validity(q)` grades positions by it.
    """

    ndim = 3

    def __init__(self, potential: AbstractPotential, *, units=None, region=None):
        if not isinstance(potential, AbstractPotential):
            raise TypeError(f"to_gala needs a deeppot potential, got {type(potential).__name__}")
        model_units = unit_system(potential)
        if model_units is None:
            if units is not None and not isinstance(units, DimensionlessUnitSystem):
                raise ValueError(
                    "this deeppot potential is dimensionless (it has no physical unit system), "
                    f"so it cannot be exported in gala's {units}; leave units=None (gala's "
                    "dimensionless system) or build the model with physical units")
            units = gala_dimensionless
        elif units is None:
            units = galactic
        super().__init__(units=units)
        self.potential = potential
        self.region = region
        self._fields = FieldEvaluator(potential)
        self._symmetry = {"spherical": SphericalSymmetry(),
                          "axisymmetric": CylindricalSymmetry()}.get(self._fields.symmetry)
        if model_units is None:
            # gala's dimensionless G is 1: its density is ∇²Φ / 4π
            self._scale = {"length": 1.0, "potential": 1.0, "acceleration": 1.0,
                           "hessian": 1.0, "density": float(potential.G) / self.G}
        else:
            self._scale = {dim: _factor(model_units.unit(dim), self.units)
                           for dim in ("potential", "acceleration", "hessian", "density")}
            self._scale["length"] = 1.0 / _factor(model_units.unit("length"), self.units)

    def _model_positions(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) * self._scale["length"]

    def _energy(self, q, t=0.0):
        phi = self._fields.potential_at(self._model_positions(q))
        return phi * self._scale["potential"]

    def _gradient(self, q, t=0.0):
        grad = self._fields.gradient_at(self._model_positions(np.transpose(q)))
        return np.ascontiguousarray(grad.T) * self._scale["acceleration"]

    def _density(self, q, t=0.0):
        lap = self._fields.laplacian_at(self._model_positions(q))
        return lap / (4 * math.pi * float(self.potential.G)) * self._scale["density"]

    def _hessian(self, q, t=0.0):
        return self._fields.hessian_at(self._model_positions(q)) * self._scale["hessian"]

    def validity(self, q):
        """The validity region's graded trust at positions q (3, n) or (3,) in gala's units
        (a `Quantity` or plain numbers): 1 inside, falling to 0 across its outer shell, 0
        outside (`None` without a region)."""
        if self.region is None:
            return None
        q = q.to_value(self.units["length"]) if isinstance(q, u.Quantity) else q
        x = self._model_positions(np.transpose(np.asarray(q, dtype=np.float64)))
        return np.asarray(self.region.validity(x))

    def replicate(self, **kwargs):
        """A copy with other `units` (the only setting this potential has)."""
        return DeeppotPotential(self.potential, units=kwargs.get("units", self.units),
                                region=self.region)

    def __repr__(self) -> str:
        return f"<DeeppotPotential: {type(self.potential).__name__} ({self.units})>"
