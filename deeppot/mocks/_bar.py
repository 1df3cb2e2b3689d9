"""Barred galaxies rotating at a known pattern speed: an orbit-integrated disk and an exact
Jacobi-integral DF, both stationary in the bar's frame and not in the inertial one.

The potential (`barred_potential`) is a Miyamoto–Nagai disk, an NFW halo and a
Long–Murali bar, static in the frame rotating at Ω_p about z; the snapshot is taken when
that frame's axes coincide with the inertial ones, so the catalogue's positions and
velocities are inertial and the truth is the composite potential with the bar at
`bar_angle`, seen in `RotatingFrame(omega=(0, 0, Ω_p))`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import registry
from ..catalog import PhaseSpaceCatalog
from ..orbits import integrate_orbits, jacobi_integral, steps_for_duration
from ..potentials import NFW, CompositePotential, LongMuraliBar, MiyamotoNagai
from ._common import check_draw, check_positive, describe_potential, key_meta

__all__ = [
    "azimuthal_circular_velocity",
    "bar_initial_conditions",
    "barred_disk",
    "barred_potential",
    "corotation_radius",
    "jacobi_bar",
    "lagrange_point",
]

# The recommended barred galaxy: v_c ≈ 0.73 at R = 1–2, a strong bar (maximum tangential
# to radial force ratio Q_T ≈ 0.23 at R ≈ 0.3–0.5), corotation at R ≈ 1.32 = 1.3 bar
# half-lengths for Ω_p = 0.55 (a "fast" bar).
POTENTIAL_DEFAULTS = dict(disk_mass=1.0, disk_a=1.0, disk_b=0.25, halo_mass=4.0,
                          halo_r_s=5.0, bar_mass=0.3, bar_a=1.0, bar_b=0.3, bar_c=0.25,
                          bar_angle=0.0)
PATTERN_SPEED = 0.55


def barred_potential(
    *,
    disk_mass: float = 1.0,
    disk_a: float = 1.0,
    disk_b: float = 0.25,
    halo_mass: float = 4.0,
    halo_r_s: float = 5.0,
    bar_mass: float = 0.3,
    bar_a: float = 1.0,
    bar_b: float = 0.3,
    bar_c: float = 0.25,
    bar_angle: float = 0.0,
) -> CompositePotential:
    """Disk + halo + bar: `CompositePotential(disk=MiyamotoNagai, halo=NFW,
    bar=LongMuraliBar)` (G = 1).

    **Arguments:**

    - `disk_mass`, `disk_a`, `disk_b`: the Miyamoto–Nagai disk.
    - `halo_mass`, `halo_r_s`: the NFW halo's m_s and r_s.
    - `bar_mass`, `bar_a`, `bar_b`, `bar_c`, `bar_angle`: the Long–Murali bar (mass,
      half-length, in-plane and vertical softening, position angle of its long axis).

    **Returns:** the composite potential, with components `"disk"`, `"halo"`, `"bar"`.
    """
    return CompositePotential(
        disk=MiyamotoNagai(disk_mass, disk_a, disk_b),
        halo=NFW(halo_mass, halo_r_s),
        bar=LongMuraliBar(bar_mass, bar_a, bar_b, bar_c, angle=bar_angle),
    )


def _potential_params(params: dict) -> dict:
    unknown = set(params) - set(POTENTIAL_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown barred-potential parameters {sorted(unknown)}; known: "
                        f"{sorted(POTENTIAL_DEFAULTS)}")
    return {**POTENTIAL_DEFAULTS, **params}


def azimuthal_circular_velocity(potential, R, n_phi: int = 32) -> np.ndarray:
    """Circular speed of the azimuthally averaged potential in the plane z = 0.

    **Arguments:**

    - `potential`: any potential.
    - `R`: cylindrical radii, shape (n,).
    - `n_phi`: azimuths averaged over.

    **Returns:** sqrt(R ⟨∂Φ/∂R⟩_φ), shape (n,).
    """
    R = np.atleast_1d(np.asarray(R, dtype=np.float64))
    phi = np.linspace(0, 2 * np.pi, n_phi, endpoint=False)
    c, s = np.cos(phi), np.sin(phi)
    pts = np.stack([R[:, None] * c, R[:, None] * s, np.zeros((len(R), n_phi))], -1)
    with jax.enable_x64(True):
        g = np.asarray(potential.gradient(jnp.asarray(pts)))
    dphi_dR = np.mean(g[..., 0] * c + g[..., 1] * s, axis=1)
    return np.sqrt(np.maximum(R * dphi_dR, 0.0))


def corotation_radius(potential, pattern_speed: float, r_max: float = 50.0) -> float:
    """The radius where the azimuthally averaged circular frequency equals Ω_p.

    **Arguments:**

    - `potential`: the potential.
    - `pattern_speed`: Ω_p (> 0).
    - `r_max`: upper end of the search.

    **Returns:** R_CR (bisection on a log grid, relative accuracy 1e-10).
    """
    def excess(R):
        return float(azimuthal_circular_velocity(potential, [R])[0] / R - pattern_speed)

    lo, hi = 1e-3, r_max
    if excess(lo) < 0 or excess(hi) > 0:
        raise ValueError(f"no corotation radius for Ω_p = {pattern_speed} in [{lo}, {hi}]")
    while hi / lo - 1 > 1e-10:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return math.sqrt(lo * hi)


def _effective_potential(potential, pattern_speed, x):
    with jax.enable_x64(True):
        phi = np.asarray(potential.potential(jnp.asarray(x, dtype=jnp.float64)))
    x = np.asarray(x)
    return phi - 0.5 * pattern_speed**2 * (x[..., 0] ** 2 + x[..., 1] ** 2)


def lagrange_point(potential, pattern_speed: float, angle: float = 0.0) -> tuple[float, float]:
    """The Lagrange point L1 on the bar's long axis: the saddle of Φ_eff = Φ − ½Ω²R².

    **Arguments:**

    - `potential`: the potential, static in the rotating frame.
    - `pattern_speed`: Ω_p.
    - `angle`: the direction of the bar's long axis in the plane z = 0.

    **Returns:** `(R_L1, E_J(L1))`: its radius and the Jacobi energy of a star at rest
    there (the lowest energy at which stars can leave the region inside corotation).
    """
    r_cr = corotation_radius(potential, pattern_speed)
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    R = np.linspace(0.3 * r_cr, 3.0 * r_cr, 2001)
    phi = _effective_potential(potential, pattern_speed, R[:, None] * direction)
    i = int(np.argmax(phi))
    if i in (0, len(R) - 1):
        raise ValueError("Φ_eff has no maximum along the bar's axis near corotation")
    lo, hi = R[i - 1], R[i + 1]
    for _ in range(100):  # golden-section refinement of the maximum
        a, b = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
        fa, fb = _effective_potential(potential, pattern_speed, np.array([a, b])[:, None]
                                      * direction)
        lo, hi = (a, hi) if fa < fb else (lo, b)
    r = 0.5 * (lo + hi)
    return r, float(_effective_potential(potential, pattern_speed, r * direction))


def _separating_radius(potential, pattern_speed, e_max, r_l1):
    """A cylinder radius that splits {Φ_eff < E₀} into the part around the centre and the
    part beyond corotation (Φ_eff rises with |z| at fixed R for these potentials, so the
    plane z = 0 bounds both)."""
    R = np.linspace(1e-3, 3 * r_l1, 1501)
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    pts = np.stack([R[None, :] * np.cos(theta)[:, None], R[None, :] * np.sin(theta)[:, None],
                    np.zeros((len(theta), len(R)))], -1)
    above = _effective_potential(potential, pattern_speed, pts) >= e_max
    if not above.any(axis=1).all():
        raise ValueError("e_max is above the ridge of Φ_eff: stars are not bound inside "
                         "corotation")
    first_out = np.argmax(above, axis=1)  # first radius outside the inner part, per angle
    r_in = R[first_out]
    # beyond the ridge: the first radius where Φ_eff falls below E₀ again
    r_out = []
    for k in range(len(theta)):
        below = ~above[k, first_out[k]:]
        r_out.append(R[first_out[k] + np.argmax(below)] if below.any() else np.inf)
    inner, outer = float(r_in.max()), float(np.min(r_out))
    if not inner < outer:
        raise ValueError("the inner and outer parts of the Jacobi DF's support touch; lower "
                         "e_frac")
    return 0.5 * (inner + outer) if np.isfinite(outer) else inner * 1.05


def _jacobi_df(pattern_speed, e_frac, index, params):
    from ..flows import JacobiDF

    if not 0 < e_frac < 1:
        raise ValueError(f"e_frac must be in (0, 1), got {e_frac}")
    with jax.enable_x64(True):
        pot = barred_potential(**params)
        phi0 = float(_effective_potential(pot, pattern_speed, np.zeros(3)))
        r_l1, e_l1 = lagrange_point(pot, pattern_speed, params["bar_angle"])
        e_max = phi0 + e_frac * (e_l1 - phi0)
        r_cut = _separating_radius(pot, pattern_speed, e_max, r_l1)
        df = JacobiDF(pot, pattern_speed, e_max, r_cut, index)
    return df, {"r_l1": r_l1, "e_l1": e_l1}


@registry.sources.register("bar_jacobi")
def jacobi_bar(
    key: jax.Array,
    n: int,
    *,
    pattern_speed: float = PATTERN_SPEED,
    e_frac: float = 0.9,
    index: float = 3.0,
    **potential_params,
) -> PhaseSpaceCatalog:
    """Exact samples of f ∝ (E₀ − E_J)^n in the rotating barred potential (`JacobiDF`).

    The stars are bound inside corotation: E₀ = Φ_eff(0) + e_frac (E_J(L1) − Φ_eff(0)),
    between the bottom of the effective potential and the Jacobi energy of the Lagrange
    point L1. The DF depends on the Jacobi integral alone, so it is exactly stationary in
    the frame rotating at Ω_p and its scores are exact (`meta["truth_df"]`, `[df] kind =
    "exact"`); in the inertial frame its ∂f/∂t is of the order of Ω_p ∂f/∂φ.

    **Arguments:**

    - `key`: a typed key, `jax.random.key(seed)`.
    - `n`: number of stars.
    - `pattern_speed`: Ω_p about z.
    - `e_frac`: where E₀ lies between Φ_eff(0) (0) and E_J(L1) (1).
    - `index`: the power n of the DF.
    - `**potential_params`: `barred_potential`'s arguments (`bar_mass`, `bar_angle`, …).

    **Returns:** a `PhaseSpaceCatalog` (inertial x, v); `meta` records the truth potential,
    the pattern speed (`meta["frame"]`) and the exact DF.
    """
    n = check_draw(key, n)
    params = _potential_params(potential_params)
    df, lagrange = _jacobi_df(float(pattern_speed), float(e_frac), float(index), params)
    with jax.enable_x64(True):
        w = np.asarray(df.sample(key, n))
        r_cr = corotation_radius(df.potential, pattern_speed)
    meta = {
        "generator": "deeppot.mocks.jacobi_bar",
        "params": {"n": n, "pattern_speed": float(pattern_speed), "e_frac": float(e_frac),
                   "index": float(index), **{k: float(v) for k, v in params.items()}},
        "key": key_meta(key),
        "truth": describe_potential(df.potential),
        "frame": {"class": "RotatingFrame", "omega": [0.0, 0.0, float(pattern_speed)]},
        "bar": {"corotation_radius": r_cr, "lagrange_radius": lagrange["r_l1"],
                "e_l1": lagrange["e_l1"], "e_max": df.e_max, "r_cut": df.r_cut},
        "truth_df": {"class": "JacobiDF", "potential": describe_potential(df.potential),
                     "pattern_speed": df.pattern_speed, "e_max": df.e_max,
                     "r_cut": df.r_cut, "index": df.index, "z_max": df.z_max,
                     "log_norm": df.log_norm, "log_rho_max": df.log_rho_max},
    }
    return PhaseSpaceCatalog(w[:, :3], w[:, 3:], meta=meta)


jacobi_bar.exact_df = True  # its catalogues record their exact DF (meta["truth_df"])


def bar_initial_conditions(
    key: jax.Array,
    n: int,
    *,
    pattern_speed: float = PATTERN_SPEED,
    h_R: float = 0.5,
    h_z: float = 0.1,
    sigma: float = 0.15,
    n_bar: float = 32,
    steps_per_period: int = 16,
    **potential_params,
):
    """Initial conditions and per-star integration of the barred disk (see `barred_disk`).

    **Returns:** `(potential, x0, v0, dt, n_steps)`: the float64 barred potential, initial
    positions and inertial velocities (n, 3), per-star steps and step counts (n,).
    """
    n = check_draw(key, n)
    check_positive(h_R=h_R, h_z=h_z, sigma=sigma, n_bar=n_bar, pattern_speed=pattern_speed)
    if steps_per_period < 1:
        raise ValueError(f"steps_per_period must be positive, got {steps_per_period}")
    params = _potential_params(potential_params)
    with jax.enable_x64(True):
        pot = barred_potential(**params)
        g = np.asarray(jax.random.normal(key, (n, 12), dtype=jnp.float64))
        u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (n,),
                                          dtype=jnp.float64))
    # R ~ Gamma(2, h_R) (surface density ∝ exp(−R/h_R)), z = ±Exp(h_z), uniform azimuth
    R = 0.5 * np.sum(g[:, 0:4] ** 2, axis=1) * h_R
    z = 0.5 * np.sum(g[:, 4:6] ** 2, axis=1) * h_z * np.sign(g[:, 6])
    phi = np.arctan2(g[:, 8], g[:, 7])
    v_c = azimuthal_circular_velocity(pot, R)
    v_R = sigma * v_c * g[:, 9]
    v_T = v_c * (1 - 0.5 * sigma * np.abs(g[:, 10]))
    v_z = sigma * v_c * g[:, 11]
    c, s = np.cos(phi), np.sin(phi)
    x0 = np.stack([R * c, R * s, z], axis=1)
    v0 = np.stack([v_R * c - v_T * s, v_R * s + v_T * c, v_z], axis=1)
    # each star runs for a uniform random time in [0, n_bar bar periods]: it then samples its
    # orbit's time average, which is stationary in the rotating frame
    duration = u * n_bar * 2 * np.pi / pattern_speed
    # step: 1/steps_per_period of the shortest local period at half the star's radius
    # (eccentric bar orbits dive inwards), never longer than at R = 0.05
    R_step = np.maximum(0.5 * R, 0.05)
    with jax.enable_x64(True):
        from ._disk import midplane_periods

        periods = np.asarray(midplane_periods(pot, jnp.asarray(R_step)))
    dt, n_steps = steps_for_duration(duration, periods.min(axis=0) / steps_per_period)
    return pot, x0, v0, dt, n_steps


@registry.sources.register("bar")
def barred_disk(
    key: jax.Array,
    n: int,
    *,
    pattern_speed: float = PATTERN_SPEED,
    h_R: float = 0.5,
    h_z: float = 0.1,
    sigma: float = 0.15,
    n_bar: float = 32,
    steps_per_period: int = 16,
    method: str = "yoshida6",
    batch_size: int = 2048,
    workers: int = 1,
    progress: bool = False,
    **potential_params,
) -> PhaseSpaceCatalog:
    """A disk phase-mixed in a bar rotating at Ω_p: orbits integrated in the bar's frame.

    Initial conditions: an exponential disk (R ~ Gamma(2, h_R), z = ±Exp(h_z), uniform
    azimuth) on near-circular orbits of the azimuthally averaged potential (v_R, v_z ~
    N(0, (σ v_c)²), v_T = v_c (1 − ½σ|δ|)). The bar is present from the start. Each star is
    then integrated in the frame rotating at Ω_p (`integrate_orbits(...,
    pattern_speed=Ω_p)`: exact rotating free flow and kicks, symplectic, Jacobi integral
    conserved) for a uniform random time in [0, n_bar bar periods]. A star at a uniform
    random time along its orbit samples the orbit's time average, which is invariant under
    the flow, so the snapshot is stationary in the rotating frame up to O(1/(Ω n_bar 2π))
    edge terms, and not in the inertial one (the bar is not axisymmetric). Unlike
    `jacobi_bar`, the DF is not known in closed form: it depends on every integral the
    orbits have (trapped bar orbits, resonances), as a real bar's does.

    **Arguments:**

    - `key`: a typed key, `jax.random.key(seed)`.
    - `n`: number of stars.
    - `pattern_speed`: Ω_p about z.
    - `h_R`, `h_z`: scale length and height of the initial disk.
    - `sigma`: velocity dispersion in units of the circular speed.
    - `n_bar`: the longest integration, in bar periods 2π/Ω_p.
    - `steps_per_period`: steps per shortest local period.
    - `method`, `batch_size`, `workers`, `progress`: passed to `integrate_orbits`.
    - `**potential_params`: `barred_potential`'s arguments (`bar_mass`, `bar_angle`, …).

    **Returns:** a `PhaseSpaceCatalog` of inertial x, v at the moment the rotating frame's
    axes coincide with the inertial ones; `meta` records the truth potential, the pattern
    speed (`meta["frame"]`), step statistics and the Jacobi-integral errors.
    """
    params = {k: v for k, v in potential_params.items()}
    pot, x0, v0, dt, n_steps = bar_initial_conditions(
        key, n, pattern_speed=pattern_speed, h_R=h_R, h_z=h_z, sigma=sigma, n_bar=n_bar,
        steps_per_period=steps_per_period, **params)
    x1, v1 = integrate_orbits(pot, x0, v0, dt, n_steps, method=method, batch_size=batch_size,
                              workers=workers, progress=progress, pattern_speed=pattern_speed)
    e0 = jacobi_integral(pot, x0, v0, pattern_speed)
    err = np.abs(jacobi_integral(pot, x1, v1, pattern_speed) / e0 - 1)
    full = _potential_params(params)
    meta = {
        "generator": "deeppot.mocks.barred_disk",
        "params": {"n": int(n), "pattern_speed": float(pattern_speed), "h_R": float(h_R),
                   "h_z": float(h_z), "sigma": float(sigma), "n_bar": float(n_bar),
                   "steps_per_period": int(steps_per_period), "method": method,
                   **{k: float(v) for k, v in full.items()}},
        "key": key_meta(key),
        "integration": {
            "n_steps_min": int(n_steps.min()),
            "n_steps_max": int(n_steps.max()),
            "orbit_steps": int(n_steps.sum()),
            "jacobi_error_median": float(np.median(err)),
            "jacobi_error_p99": float(np.percentile(err, 99)),
            "jacobi_error_max": float(err.max()),
        },
        "truth": describe_potential(pot),
        "frame": {"class": "RotatingFrame", "omega": [0.0, 0.0, float(pattern_speed)]},
        "bar": {"corotation_radius": corotation_radius(pot, pattern_speed)},
    }
    return PhaseSpaceCatalog(x1, v1, meta=meta)
