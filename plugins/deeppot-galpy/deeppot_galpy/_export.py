"""A galpy `Potential` whose Φ, forces, second derivatives and density come from deeppot."""

from __future__ import annotations

import math
import typing

import astropy.units as u
import numpy as np
from galpy.potential import Potential
from galpy.util import conversion

from deeppot.export import FieldEvaluator, unit_system
from deeppot.potentials import AbstractPotential


def _check_scale(name: str, value, unit) -> None:
    """`ValueError` naming galpy's unit `name` unless it is None or positive and finite."""
    if value is None:
        return
    number = value.to_value(unit) if isinstance(value, u.Quantity) else value
    try:
        number = float(number)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


@typing.final
class DeeppotPotential(Potential):
    """A deeppot potential as a galpy `Potential` (build it with `to_galpy`).

    galpy calls `_evaluate`, `_Rforce`, `_zforce`, `_phitorque`, `_dens`, `_R2deriv`,
    `_z2deriv`, `_Rzderiv`, `_phi2deriv`, `_Rphideriv` and `_phizderiv` with floats or
    arrays of cylindrical coordinates in its natural units; each is answered by one call of
    a compiled, vectorised float64 JAX function (the gradient or the Hessian at all points
    at once; the last point set is cached, so galpy's three force calls per orbit step cost
    one evaluation). There is no C implementation: integrate orbits with galpy's Python
    integrators (`method="dop853"` or `"odeint"`).

    `region` is the validity region the model was exported with (a
    `deeppot.validity.ValidityRegion`, or `None`; `region.to_dict()` for its numbers) and
    `validity(R, z, phi)` grades positions by it.

    **Units.** galpy's natural units are a length `ro` (kpc) and a velocity `vo` (km/s),
    with G = 1. For a dimensionless deeppot model they are the model's own units (give
    `ro`/`vo` to say what they are in kpc and km/s and switch on galpy's physical outputs);
    the density galpy sees is then ∇²Φ/4π, i.e. deeppot's density times the model's `G`.
    For a model with a physical unit system (`potential.units`), positions and fields are
    converted between the two, `ro`/`vo` default to galpy's configured values and galpy's
    physical outputs are on.
    """

    def __init__(self, potential: AbstractPotential, *, ro=None, vo=None, region=None):
        if not isinstance(potential, AbstractPotential):
            raise TypeError(f"to_galpy needs a deeppot potential, got {type(potential).__name__}")
        _check_scale("ro", ro, u.kpc)
        _check_scale("vo", vo, u.km / u.s)
        Potential.__init__(self, amp=1.0, ro=ro, vo=vo)
        self.potential = potential
        self._fields = FieldEvaluator(potential)
        self.isNonAxi = self._fields.symmetry == "none"
        self.hasC = False
        self.hasC_dxdv = False
        self.hasC_dens = False
        units = unit_system(potential)
        if units is None:
            self._length, self._velocity = 1.0, 1.0
        else:
            phys = conversion.get_physical(self)
            self.turn_physical_on(ro=phys["ro"], vo=phys["vo"])
            self._length = float(units.to_value(phys["ro"] * u.kpc, "length", "ro"))
            self._velocity = float(units.to_value(phys["vo"] * u.km / u.s, "velocity", "vo"))
        self._cache: dict[str, tuple] = {}
        self.region = region

    def validity(self, R, z, phi=0.0):
        """The validity region's graded trust at (R, z, φ) in galpy's natural units: 1
        inside, falling to 0 across its outer shell, 0 outside (`None` without a region)."""
        if self.region is None:
            return None
        return self._out(np.asarray(self.region.validity(self._points(R, z, phi)[0])))

    # -- evaluation ----------------------------------------------------------------------

    @staticmethod
    def _key(R, z, phi):
        """A hashable key of the inputs (galpy's orbit integrators pass floats)."""
        if phi is None:
            phi = 0.0
        if np.ndim(R) == 0 and np.ndim(z) == 0 and np.ndim(phi) == 0:
            return (float(R), float(z), float(phi))
        arrays = np.broadcast_arrays(np.asarray(R, dtype=np.float64),
                                     np.asarray(z, dtype=np.float64),
                                     np.asarray(phi, dtype=np.float64))
        return b"".join(a.tobytes() for a in arrays) + repr(arrays[0].shape).encode()

    def _points(self, R, z, phi):
        """Broadcast cylindrical (R, z, φ) in galpy's units to model Cartesian positions.

        **Returns:** `(x, R, cos φ, sin φ)` with x of shape (..., 3) and R in model units.
        """
        R, z, phi = np.broadcast_arrays(np.asarray(R, dtype=np.float64),
                                        np.asarray(z, dtype=np.float64),
                                        np.asarray(0.0 if phi is None else phi,
                                                   dtype=np.float64))
        c, s = np.cos(phi), np.sin(phi)
        R_m = R * self._length
        x = np.stack([R_m * c, R_m * s, z * self._length], axis=-1)
        return x, R_m, c, s

    def _fields_at(self, kind: str, R, z, phi):
        """(gradient, (gradient, Hessian) or Laplacian in model units, R in model units,
        cos φ, sin φ) at the points; the last point set of each kind is cached."""
        key = self._key(R, z, phi)
        cached = self._cache.get(kind)
        if cached is not None and cached[0] == key:
            return cached[1]
        x, R_m, c, s = self._points(R, z, phi)
        if kind == "gradient":
            value = self._fields.gradient_at(x)
        elif kind == "hessian":
            value = (self._fields.gradient_at(x), self._fields.hessian_at(x))
        else:
            value = self._fields.laplacian_at(x)
        result = (value, R_m, c, s)
        self._cache[kind] = (key, result)
        return result

    @staticmethod
    def _out(value):
        value = np.asarray(value)
        return float(value) if value.ndim == 0 else value

    def _evaluate(self, R, z, phi=0.0, t=0.0):
        x = self._points(R, z, phi)[0]
        return self._out(self._fields.potential_at(x) / self._velocity**2)

    def _dphi(self, R, z, phi):
        """(∂Φ/∂R, ∂Φ/∂z, ∂Φ/∂φ) in galpy's natural units."""
        g, R_m, c, s = self._fields_at("gradient", R, z, phi)
        scale = self._length / self._velocity**2
        d_R = (g[..., 0] * c + g[..., 1] * s) * scale
        d_z = g[..., 2] * scale
        d_phi = R_m * (-g[..., 0] * s + g[..., 1] * c) / self._velocity**2
        return d_R, d_z, d_phi

    def _Rforce(self, R, z, phi=0.0, t=0.0):
        return self._out(-self._dphi(R, z, phi)[0])

    def _zforce(self, R, z, phi=0.0, t=0.0):
        return self._out(-self._dphi(R, z, phi)[1])

    def _zero(self, R, z, phi):
        return self._out(np.zeros(np.broadcast_shapes(np.shape(R), np.shape(z),
                                                      np.shape(0.0 if phi is None else phi))))

    def _phitorque(self, R, z, phi=0.0, t=0.0):
        if not self.isNonAxi:
            return self._zero(R, z, phi)
        return self._out(-self._dphi(R, z, phi)[2])

    def _dens(self, R, z, phi=0.0, t=0.0):
        lap, _, _, _ = self._fields_at("laplacian", R, z, phi)
        return self._out(lap * (self._length / self._velocity) ** 2 / (4 * math.pi))

    def _second(self, R, z, phi):
        """The six second derivatives in (R, z, φ), galpy's natural units."""
        (g, H), R_m, c, s = self._fields_at("hessian", R, z, phi)
        Hxx, Hxy, Hxz = H[..., 0, 0], H[..., 0, 1], H[..., 0, 2]
        Hyy, Hyz, Hzz = H[..., 1, 1], H[..., 1, 2], H[..., 2, 2]
        g_R = g[..., 0] * c + g[..., 1] * s
        g_t = -g[..., 0] * s + g[..., 1] * c  # (1/R) ∂Φ/∂φ
        v2 = self._velocity**2
        L2, L = self._length**2, self._length
        return {
            "RR": (c * c * Hxx + 2 * c * s * Hxy + s * s * Hyy) * L2 / v2,
            "zz": Hzz * L2 / v2,
            "Rz": (c * Hxz + s * Hyz) * L2 / v2,
            "pp": (R_m**2 * (s * s * Hxx - 2 * s * c * Hxy + c * c * Hyy) - R_m * g_R) / v2,
            "Rp": (g_t + R_m * ((Hyy - Hxx) * s * c + (c * c - s * s) * Hxy)) * L / v2,
            "pz": R_m * (-s * Hxz + c * Hyz) * L / v2,
        }

    def _R2deriv(self, R, z, phi=0.0, t=0.0):
        return self._out(self._second(R, z, phi)["RR"])

    def _z2deriv(self, R, z, phi=0.0, t=0.0):
        return self._out(self._second(R, z, phi)["zz"])

    def _Rzderiv(self, R, z, phi=0.0, t=0.0):
        return self._out(self._second(R, z, phi)["Rz"])

    def _phi2deriv(self, R, z, phi=0.0, t=0.0):
        if not self.isNonAxi:
            return self._zero(R, z, phi)
        return self._out(self._second(R, z, phi)["pp"])

    def _Rphideriv(self, R, z, phi=0.0, t=0.0):
        if not self.isNonAxi:
            return self._zero(R, z, phi)
        return self._out(self._second(R, z, phi)["Rp"])

    def _phizderiv(self, R, z, phi=0.0, t=0.0):
        if not self.isNonAxi:
            return self._zero(R, z, phi)
        return self._out(self._second(R, z, phi)["pz"])

    def __repr__(self) -> str:
        return f"DeeppotPotential({type(self.potential).__name__}, isNonAxi={self.isNonAxi})"
