"""The paper's phase-mixed Miyamoto–Nagai disk (§3.2)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import registry
from .._params import to_model_units
from ..catalog import PhaseSpaceCatalog
from ..orbits import integrate_orbits, steps_for_duration
from ..potentials import MiyamotoNagai
from ._common import check_draw, check_positive, describe_potential, key_meta


def midplane_periods(potential, R: Float[Array, " n"]) -> Float[Array, "3 n"]:
    """Orbital, epicyclic and vertical periods of near-circular orbits at radii R (z = 0).

    Uses the potential's gradient and Hessian at (R, 0, 0): Ω² = Φ_R / R,
    κ² = Φ_RR + 3 Ω², ν² = Φ_zz (valid for any axisymmetric potential).

    **Arguments:**

    - `potential`: an axisymmetric deeppot potential.
    - `R`: cylindrical radii, shape (n,).

    **Returns:** the periods (T_orbit, T_epicycle, T_vertical) stacked, shape (3, n).
    """
    R = jnp.asarray(R)
    pos = jnp.stack([R, jnp.zeros_like(R), jnp.zeros_like(R)], axis=-1)
    omega2 = potential.gradient(pos)[..., 0] / R
    hess = potential.hessian(pos)
    kappa2 = hess[..., 0, 0] + 3 * omega2
    nu2 = hess[..., 2, 2]
    return 2 * jnp.pi / jnp.sqrt(jnp.stack([omega2, kappa2, nu2]))


@eqx.filter_jit
def _initial_conditions(pot, key, n: int, h_R, h_z):
    """The paper's initial positions/velocity draws, azimuths, v_c(R) and periods."""
    # One normal draw (fast to compile); exact transforms: Gamma(2) = χ²₄/2,
    # Exp(1) = χ²₂/2, a uniform azimuth is the angle of a 2-D Gaussian vector.
    g = jax.random.normal(key, (n, 12), dtype=jnp.float64)
    R = 0.5 * jnp.sum(g[:, 0:4] ** 2, axis=1) * h_R
    z = 0.5 * jnp.sum(g[:, 4:6] ** 2, axis=1) * h_z * jnp.sign(g[:, 6])
    delta = g[:, 7:10]
    phi = jnp.arctan2(g[:, 11], g[:, 10])
    pos_mid = jnp.stack([R, jnp.zeros(n), jnp.zeros(n)], axis=1)
    v_c = pot.circular_velocity(pos_mid)
    return R, z, delta, phi, v_c, midplane_periods(pot, R)


def disk_initial_conditions(
    key: jax.Array,
    n: int,
    a: float = 1.0,
    b: float = 0.1,
    h_R: float = 1.0,
    h_z: float = 0.1,
    n_dyn: float = 128,
    *,
    m_tot: float = 1.0,
    steps_per_period: int = 16,
    units=None,
):
    """The disk's initial conditions and per-star steps (see `miyamoto_nagai_disk`).

    **Arguments:** as `miyamoto_nagai_disk`.

    **Returns:** `(potential, x0, v0, dt, n_steps, phi)`: the float64 `MiyamotoNagai`, initial
    positions and velocities at azimuth 0 (n, 3), per-star steps and step counts (n,), and
    the final azimuthal rotation angles (n,).
    """
    n = check_draw(key, n)
    with jax.enable_x64(True):
        pot = MiyamotoNagai(m_tot, a, b, units=units)
    h_R = to_model_units("h_R", h_R, "length", pot.units)
    h_z = to_model_units("h_z", h_z, "length", pot.units)
    n_dyn = to_model_units("n_dyn", n_dyn, "dimensionless", pot.units)
    check_positive(h_R=h_R, h_z=h_z, n_dyn=n_dyn)
    if steps_per_period < 1:
        raise ValueError(f"steps_per_period must be positive, got {steps_per_period}")
    with jax.enable_x64(True):
        R, z, delta, phi, v_c, periods = (
            np.asarray(o) for o in _initial_conditions(pot, key, n, h_R, h_z)
        )
    t_dyn, t_min = periods.max(axis=0), periods.min(axis=0)
    dt, n_steps = steps_for_duration(n_dyn * t_dyn, t_min / steps_per_period)
    x0 = np.stack([R, np.zeros(n), z], axis=1)
    v0 = np.stack(
        [
            0.05 * v_c * delta[:, 0],
            v_c * (1 - 0.1 * np.abs(delta[:, 1])),
            0.05 * v_c * delta[:, 2],
        ],
        axis=1,
    )
    return pot, x0, v0, dt, n_steps, phi


@registry.sources.register("disk")
def miyamoto_nagai_disk(
    key: jax.Array,
    n: int,
    a: float = 1.0,
    b: float = 0.1,
    h_R: float = 1.0,
    h_z: float = 0.1,
    n_dyn: float = 128,
    *,
    m_tot: float = 1.0,
    steps_per_period: int = 16,
    method: str = "yoshida6",
    batch_size: int = 2048,
    workers: int = 1,
    progress: bool = False,
    units=None,
) -> PhaseSpaceCatalog:
    """Phase-mixed tracers in a Miyamoto–Nagai disk, following the paper's §3.2 recipe.

    Initial conditions: R ~ Gamma(2, h_R) (surface density ∝ exp(−R/h_R)), z = ±Exp(h_z),
    v_R = 0.05 v_c δ₁, v_T = v_c (1 − 0.1 |δ₂|), v_z = 0.05 v_c δ₃ with δᵢ ~ N(0, 1) and v_c
    the midplane circular speed at R. Each star is integrated for `n_dyn` of its own
    dynamical times (the longest of its orbital, epicyclic and vertical periods at R) with a
    step of at most 1/`steps_per_period` of the shortest, then rotated to a uniform azimuth
    (exact, as the potential is axisymmetric). `n_dyn=8` is the paper's non-stationary
    variant. G = 1 unless the disk is built in physical units: `a`, `b`, `m_tot`, `h_R`,
    `h_z` may be astropy quantities (then the catalogue is in `galactic` units, e.g.
    `miyamoto_nagai_disk(key, n, a=3 * u.kpc, b=0.3 * u.kpc, m_tot=1e11 * u.Msun,
    h_R=3 * u.kpc, h_z=0.3 * u.kpc)`), or `units=` names the system of plain numbers. The
    disk rotates counter-clockwise seen from +z (L_z > 0).

    **Arguments:**

    - `key`: a typed key, `jax.random.key(seed)`.
    - `n`: number of stars.
    - `a`, `b`, `m_tot`: the Miyamoto–Nagai parameters.
    - `h_R`, `h_z`: radial and vertical scale lengths of the initial density.
    - `n_dyn`: integration time in dynamical times.
    - `steps_per_period`: steps per shortest period (16 in the paper).
    - `method`, `batch_size`, `workers`, `progress`: passed to
      `deeppot.orbits.integrate_orbits`.
    - `units`: the unit system (`deeppot.units`) of plain-number arguments and of the
      catalogue.

    **Returns:** a `PhaseSpaceCatalog` whose `meta` records the generator, parameters, key,
    step statistics and the truth potential `{"class": "MiyamotoNagai", ...}`.
    """
    n = int(n)
    pot, x0, v0, dt, n_steps, phi = disk_initial_conditions(
        key, n, a, b, h_R, h_z, n_dyn, m_tot=m_tot, steps_per_period=steps_per_period,
        units=units,
    )
    def length(name, value):
        return float(to_model_units(name, value, "length", pot.units))

    x1, v1 = integrate_orbits(
        pot,
        x0,
        v0,
        dt,
        n_steps,
        method=method,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    c, s = np.cos(phi), np.sin(phi)
    x = np.stack([c * x1[:, 0] - s * x1[:, 1], s * x1[:, 0] + c * x1[:, 1], x1[:, 2]], axis=1)
    v = np.stack([c * v1[:, 0] - s * v1[:, 1], s * v1[:, 0] + c * v1[:, 1], v1[:, 2]], axis=1)
    meta = {
        "generator": "deeppot.mocks.miyamoto_nagai_disk",
        "params": {
            "n": n,
            "a": length("a", a),
            "b": length("b", b),
            "m_tot": float(to_model_units("m_tot", m_tot, "mass", pot.units)),
            "h_R": length("h_R", h_R),
            "h_z": length("h_z", h_z),
            "n_dyn": float(to_model_units("n_dyn", n_dyn, "dimensionless", pot.units)),
            "steps_per_period": int(steps_per_period),
            "method": method,
        },
        "key": key_meta(key),
        "integration": {
            "n_steps_min": int(n_steps.min()),
            "n_steps_max": int(n_steps.max()),
            "orbit_steps": int(n_steps.sum()),
        },
        "truth": describe_potential(pot),
    }
    units = pot.units if pot.units.is_physical else None
    return PhaseSpaceCatalog(x, v, meta=meta, units=units)
