"""gala ↔ deeppot: `to_gala` exports a deeppot potential, `from_gala` imports gala's.

Registered in `deeppot.registry.exporters` as `"gala"` through the `deeppot.plugins` entry
point. Importing this package does not import gala; the two functions do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deeppot import registry

if TYPE_CHECKING:
    from gala.potential import PotentialBase

    from deeppot.potentials import AbstractPotential

    from ._export import DeeppotPotential

__all__ = ["from_gala", "register", "to_gala"]
__version__ = "0.1.0.dev0"


def to_gala(potential: AbstractPotential, *, units=None, tail=True,
            region=None) -> DeeppotPotential:
    """A gala potential (`gala.potential.PotentialBase`) that evaluates a deeppot potential.

    Energy, gradient, density and Hessian come from the JAX model, compiled in float64 and
    vectorised over gala's arrays; `Hamiltonian(pot).integrate_orbit(...)` and
    `pot.integrate_orbit(...)` use gala's Python integrators (e.g. `DOPRI853Integrator`,
    `LeapfrogIntegrator`), vectorised over orbits.

    **Arguments:**

    - `potential`: any deeppot potential.
    - `units`: gala's unit system for the exported potential. A dimensionless model is
      exported in gala's `dimensionless` system (the default; its density is ∇²Φ/4π, i.e.
      deeppot's density times the model's `G`). A model with a physical unit system
      (`potential.units`) is converted to `units` (default `gala.units.galactic`).

    - `tail`, `region`: a `PotentialModel` carries the validity region of its fit (or give
      `region=`); with `tail=True` (default) the potential is continued beyond it by a
      Keplerian tail (`deeppot.export.for_export`; `False` exports it as it is, or give
      the tail's shape).

    **Returns:** a `deeppot_gala.DeeppotPotential`; its `region` is the validity region
    (or `None`) and `validity(q)` grades positions (3, n) in gala's units (1 inside, 0
    outside).
    """
    from deeppot.export import for_export

    from ._export import DeeppotPotential

    potential, region = for_export(potential, tail=tail, region=region)
    return DeeppotPotential(potential, units=units, region=region)


def from_gala(pot: PotentialBase) -> AbstractPotential:
    """A deeppot potential equal to a gala potential or composite.

    Maps gala's `KeplerPotential`, `PlummerPotential`, `HernquistPotential`, spherical
    `NFWPotential`, `IsochronePotential`, `MiyamotoNagaiPotential`, `LogarithmicPotential`
    with q1 = q2 = 1 and `PowerLawCutoffPotential`, and composites of them (`CompositePotential`,
    `CCompositePotential`, e.g. `MilkyWayPotential`, keyed by gala's component names), at the
    origin and unrotated. Parameters are in the gala potential's unit system and the deeppot
    model's `G` is gala's `G` in that system, so energies, gradients and densities agree.

    **Arguments:**

    - `pot`: a gala potential.

    **Returns:** a deeppot family, or a `CompositePotential`.

    **Raises:** `ValueError` naming a gala class or setting deeppot cannot represent.
    """
    from ._import import convert

    return convert(pot)


def register() -> None:
    """Register `to_gala` as `deeppot.registry.exporters["gala"]` (the entry point)."""
    registry.exporters.register("gala")(to_gala)


def __getattr__(name: str):
    if name == "DeeppotPotential":
        from ._export import DeeppotPotential

        return DeeppotPotential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
