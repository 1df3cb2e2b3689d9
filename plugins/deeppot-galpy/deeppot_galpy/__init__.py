"""galpy ↔ deeppot: `to_galpy` exports a deeppot potential, `from_galpy` imports galpy's.

Registered in `deeppot.registry.exporters` as `"galpy"` through the `deeppot.plugins`
entry point. Importing this package does not import galpy; the two functions do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deeppot import registry

if TYPE_CHECKING:
    from galpy.potential import Potential

    from deeppot.potentials import AbstractPotential

    from ._export import DeeppotPotential

__all__ = ["from_galpy", "register", "to_galpy"]
__version__ = "0.1.0.dev0"


def to_galpy(potential: AbstractPotential, *, ro=None, vo=None, tail=True,
             region=None) -> DeeppotPotential:
    """A galpy `Potential` that evaluates a deeppot potential.

    Φ, the forces, the density and all second derivatives galpy uses (orbits, actions,
    frequencies) come from the JAX model, compiled in float64 and vectorised over galpy's
    arrays. Orbits integrate with galpy's Python integrators (`method="dop853"`).

    **Arguments:**

    - `potential`: any deeppot potential (analytic, neural, symmetric, composite).
    - `ro`, `vo`: galpy's length (kpc) and velocity (km/s) units. For a dimensionless model
      they state what its units are (and switch on galpy's physical outputs); for a model
      with a physical unit system they default to galpy's configuration.
    - `tail`, `region`: a `PotentialModel` carries the validity region of its fit (or give
      `region=`); with `tail=True` (default) the potential is continued beyond it by a
      Keplerian tail (`deeppot.export.for_export`; `False` exports it as it is, or give
      the tail's shape).

    **Returns:** a `deeppot_galpy.DeeppotPotential` (a galpy `Potential`); its `region`
    is the validity region (or `None`) and `validity(R, z, phi)` grades positions in
    galpy's units (1 inside the region, 0 outside).
    """
    from deeppot.export import for_export

    from ._export import DeeppotPotential

    potential, region = for_export(potential, tail=tail, region=region)
    return DeeppotPotential(potential, ro=ro, vo=vo, region=region)


def from_galpy(pot: Potential | list) -> AbstractPotential:
    """A deeppot potential equal to a galpy potential, a list of them or their sum.

    Maps galpy's `PlummerPotential`, `HernquistPotential`, `NFWPotential`,
    `TwoPowerSphericalPotential` (Hernquist and NFW exponents), `MiyamotoNagaiPotential`,
    `IsochronePotential`, `KeplerPotential`, axisymmetric `LogarithmicHaloPotential` and
    `PowerSphericalPotentialwCutoff` to deeppot families; lists and sums (e.g.
    `MWPotential2014`) become a `CompositePotential` keyed by family name. Parameters are in
    galpy's natural units (lengths in `ro`, velocities in `vo`, G = 1), so galpy's forces
    and densities in natural units are reproduced exactly; Φ too, except for
    `PowerSphericalPotentialwCutoff`, whose galpy Φ is not zero at infinity (a constant).

    **Arguments:**

    - `pot`: a galpy potential, a list or tuple of them, or a galpy `CompositePotential`.

    **Returns:** a deeppot family, or a `CompositePotential` for several components.

    **Raises:** `ValueError` naming a galpy class that has no deeppot family.
    """
    from ._import import convert

    return convert(pot)


def register() -> None:
    """Register `to_galpy` as `deeppot.registry.exporters["galpy"]` (the entry point)."""
    registry.exporters.register("galpy")(to_galpy)


def __getattr__(name: str):
    if name == "DeeppotPotential":
        from ._export import DeeppotPotential

        return DeeppotPotential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
