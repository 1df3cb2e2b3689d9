"""Analytic potential families with closed-form Φ, ∇Φ and ∇²Φ.

Each family is a thin final class over a pure function `(G, params…, x) -> (Φ, ∇Φ, ∇²Φ)`.
Positive parameters are stored as logarithms (fields `log_…`); the physical values are read
back through properties of the same name as the constructor argument.

Every constructor takes `units=` (a `deeppot.units.UnitSystem` or a name such as
`"galactic"`) or, for a dimensionless model, `G=` (default 1). Parameters may be astropy
quantities of the right dimension (`MiyamotoNagai(m_tot=6e10 * u.Msun, a=3 * u.kpc,
b=0.28 * u.kpc)` is in `galactic` units); bare numbers are in the model's units.
"""

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jaxtyping import Array, Float

from .. import registry
from .._custom_types import Position, Scalar, ScalarLike
from .._params import finite_scalar, positive_log, scalar_in_range, to_model_units
from ..units import UnitSystem, resolve_units
from ._base import AbstractPotential

VGL = tuple[Scalar, Position, Scalar]


def _radial(x: Position, phi, dphi_over_r, lap) -> VGL:
    """Assemble (Φ, ∇Φ, ∇²Φ) for a spherical potential given dΦ/dr / r."""
    return phi, dphi_over_r * x, lap


def plummer_vgl(G, m, b, x: Position) -> VGL:
    s2 = jnp.sum(x * x) + b * b
    inv_s = 1 / jnp.sqrt(s2)
    gm = G * m
    return _radial(x, -gm * inv_s, gm * inv_s**3, 3 * gm * b * b * inv_s**5)


def _radius(x: Position) -> Scalar:
    """|x| without overflow for huge coordinates (float32 squares overflow past ~1e19)."""
    big = jnp.max(jnp.abs(x))
    return big * jnp.sqrt(jnp.sum((x / jnp.where(big > 0, big, 1)) ** 2))


def kepler_vgl(G, m, x: Position) -> VGL:
    r = _radius(x)
    gm = G * m
    return _radial(x, -gm / r, gm / r**3, jnp.zeros_like(r))


def hernquist_vgl(G, m, a, x: Position) -> VGL:
    r = _radius(x)
    gm = G * m
    safe = jnp.where(r > 0, r, 1)  # at the cusp the force's direction is undefined: ∇Φ = 0
    dphi_over_r = jnp.where(r > 0, gm / (safe * (r + a) ** 2), 0)
    return _radial(x, -gm / (r + a), dphi_over_r, 2 * gm * a / (r * (r + a) ** 3))


def nfw_vgl(G, m_s, r_s, x: Position) -> VGL:
    r = _radius(x)
    s = r / r_s
    small = s < 1e-3  # series of ln(1 + s)/s and of the enclosed mass, exact to ~1e-13
    safe = jnp.where(small, 1.0, s)
    ln_over_s = jnp.where(small, 1 - s / 2 + s**2 / 3 - s**3 / 4 + s**4 / 5,
                          jnp.log1p(safe) / safe)
    # M(<r)/(m_s s³) = (ln(1 + s) − s/(1 + s)) / s³ = 1/(2s) − 2/3 + 3s/4 − 4s²/5 + 5s³/6
    series = 0.5 / jnp.where(s > 0, s, 1) - 2 / 3 + 0.75 * s - 0.8 * s**2 + 5 / 6 * s**3
    mass_over_s3 = jnp.where(small, series,
                             (jnp.log1p(safe) - safe / (1 + safe)) / safe**3)
    dphi_over_r = jnp.where(r > 0, G * m_s * mass_over_s3 / r_s**3, 0)
    return _radial(x, -G * m_s * ln_over_s / r_s, dphi_over_r,
                   G * m_s / (r * (r + r_s) ** 2))


def isochrone_vgl(G, m, b, x: Position) -> VGL:
    r2 = jnp.sum(x * x)
    a = jnp.sqrt(r2 + b * b)
    gm = G * m
    lap = gm * (3 * (b + a) * a * a - r2 * (b + 3 * a)) / ((b + a) ** 3 * a**3)
    return _radial(x, -gm / (b + a), gm / (a * (b + a) ** 2), lap)


def miyamoto_nagai_vgl(G, m, a, b, x: Position) -> VGL:
    R2 = x[0] ** 2 + x[1] ** 2
    zeta = jnp.sqrt(x[2] ** 2 + b * b)
    azeta = a + zeta
    D = R2 + azeta**2
    gm = G * m
    # rsqrt and integer powers: XLA:CPU's general pow for D**-1.5 is ~7x slower.
    inv_sqrt_D = jax.lax.rsqrt(D)
    inv_D32 = inv_sqrt_D**3
    grad = gm * inv_D32 * jnp.stack([x[0], x[1], x[2] * azeta / zeta])
    lap = gm * b * b * (a * R2 + (a + 3 * zeta) * azeta**2) * inv_sqrt_D**5 / zeta**3
    return -gm * inv_sqrt_D, grad, lap


def long_murali_bar_vgl(G, m, a, b, c, angle, x: Position) -> VGL:
    """Long & Murali's (1992) softened needle: a line of Miyamoto–Nagai disks along the
    bar's long axis, in the bar's own axes rotated by `angle` about z."""
    ca, sa = jnp.cos(angle), jnp.sin(angle)
    xb = ca * x[0] + sa * x[1]  # coordinates along and across the bar
    yb = -sa * x[0] + ca * x[1]
    zeta = jnp.sqrt(x[2] ** 2 + c * c)
    B = b + zeta
    C = yb**2 + B**2
    t_plus = jnp.sqrt((a + xb) ** 2 + C)
    t_minus = jnp.sqrt((a - xb) ** 2 + C)
    # ln[(x − a + T−)/(x + a + T+)] without cancellation: where x − a < 0 (x + a < 0) the
    # numerator (denominator) is C / (T− + a − x) (C / (T+ − a − x)).
    num = jnp.where(xb < a, C / (t_minus + a - xb), xb - a + t_minus)
    den = jnp.where(xb > -a, xb + a + t_plus, C / (t_plus - a - xb))
    gm = G * m
    phi = gm / (2 * a) * jnp.log(num / den)
    tsum = t_plus + t_minus
    tprod = t_plus * t_minus
    common = gm * (tsum - 4 * xb**2 / tsum) / (2 * tprod * C)
    gx = 2 * gm * xb / (tprod * tsum)
    gy = yb * common
    gz = x[2] * common * B / zeta
    grad = jnp.stack([ca * gx - sa * gy, sa * gx + ca * gy, gz])
    # ∇²Φ = 4πGρ, the needle's density (the Miyamoto–Nagai density integrated along x).
    big_a = b * yb**2 + (b + 3 * zeta) * B**2
    k = 2 * big_a + b * C

    def h(s, t):
        return s * (3 * big_a * C + k * s * s) / t**3

    lap = gm * c * c / (6 * a * C**2 * zeta**3) * (h(xb + a, t_plus) - h(xb - a, t_minus))
    return phi, grad, lap




def logarithmic_vgl(G, v_c, r_c, q, x: Position) -> VGL:
    # G does not enter: v_c sets the amplitude.
    c = jnp.stack([jnp.ones_like(q), jnp.ones_like(q), 1 / q**2])
    S = r_c**2 + jnp.sum(c * x * x)
    v2 = v_c**2
    lap = v2 * (jnp.sum(c) / S - 2 * jnp.sum(c * c * x * x) / S**2)
    return 0.5 * v2 * jnp.log(S), v2 * c * x / S, lap


@jax.custom_jvp
def _exp1(x):
    """E₁(x), with a derivative rule that can be differentiated again (jax's cannot)."""
    return jsp.exp1(x)


@_exp1.defjvp
def _exp1_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _exp1(x), -jnp.exp(-x) / x * dx


def _upper_gamma_over_gamma(a, s, x):
    """Γ(a, x) / Γ(s) for a ∈ (−½, 1½), x ≥ 0 (the upper incomplete gamma, unregularised).

    a > 0 directly; a < 0 from Γ(a, x) = (Γ(a + 1, x) − xᵃ e⁻ˣ) / a (which loses digits as
    |a| → 0, about ε/|a|); a = 0 is the exponential integral E₁(x).
    """
    pos = jnp.where(a > 0, a, 1.0)
    neg = jnp.where(a < 0, a, -0.5)
    safe_x = jnp.where(x > 0, x, 1.0)
    upper_pos = jsp.gammaincc(pos, x) * jnp.exp(jsp.gammaln(pos) - jsp.gammaln(s))
    upper_next = jsp.gammaincc(neg + 1, x) * jnp.exp(jsp.gammaln(neg + 1) - jsp.gammaln(s))
    upper_neg = (upper_next - jnp.exp(neg * jnp.log(safe_x) - x - jsp.gammaln(s))) / neg
    upper_zero = _exp1(safe_x) / jnp.exp(jsp.gammaln(s))
    return jnp.where(a > 0, upper_pos, jnp.where(a < 0, upper_neg, upper_zero))


def power_law_cutoff_vgl(G, m, alpha, r_c, x: Position) -> VGL:
    # ρ ∝ r^−α exp(−r²/r_c²) with total mass m: M(<r) = m P(s, r²/r_c²), s = (3 − α)/2, and
    # Φ = −G M(<r)/r − G m Γ(s − ½, r²/r_c²) / (Γ(s) r_c).
    r = _radius(x)
    s = (3 - alpha) / 2
    u = (r / r_c) ** 2
    safe = jnp.where(r > 0, r, 1)
    enclosed = m * jsp.gammainc(s, u)
    tail = m * _upper_gamma_over_gamma(s - 0.5, s, u) / r_c
    phi = -G * (jnp.where(r > 0, enclosed / safe, 0) + tail)
    dphi_over_r = jnp.where(r > 0, G * enclosed / safe**3, 0)
    rho_norm = m / (2 * jnp.pi * r_c ** (3 - alpha) * jnp.exp(jsp.gammaln(s)))
    lap = 4 * jnp.pi * G * rho_norm * safe ** (-alpha) * jnp.exp(-u)
    return _radial(x, phi, dphi_over_r, lap)


@registry.potentials.register
@final
class Kepler(AbstractPotential):
    """Point mass: Φ = −G m_tot / r."""

    log_m_tot: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(self, m_tot: ScalarLike, *, G: float | None = None, units=None):
        self.units = resolve_units(units, G, m_tot)
        self.log_m_tot = positive_log("m_tot", m_tot, "mass", self.units)

    @property
    def m_tot(self):
        return jnp.exp(self.log_m_tot)

    def _potential(self, x: Position) -> Scalar:
        return kepler_vgl(self.G, self.m_tot, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return kepler_vgl(self.G, self.m_tot, x)


@registry.potentials.register
@final
class Plummer(AbstractPotential):
    """Plummer sphere: Φ = −G m_tot / sqrt(r² + r_s²)."""

    log_m_tot: Float[Array, ""]
    log_r_s: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        r_s: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, m_tot, r_s)
        self.log_m_tot = positive_log("m_tot", m_tot, "mass", self.units)
        self.log_r_s = positive_log("r_s", r_s, "length", self.units)

    @property
    def m_tot(self):
        return jnp.exp(self.log_m_tot)

    @property
    def r_s(self):
        return jnp.exp(self.log_r_s)

    def _potential(self, x: Position) -> Scalar:
        return plummer_vgl(self.G, self.m_tot, self.r_s, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return plummer_vgl(self.G, self.m_tot, self.r_s, x)


@registry.potentials.register
@final
class Hernquist(AbstractPotential):
    """Hernquist sphere: Φ = −G m_tot / (r + r_s)."""

    log_m_tot: Float[Array, ""]
    log_r_s: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        r_s: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, m_tot, r_s)
        self.log_m_tot = positive_log("m_tot", m_tot, "mass", self.units)
        self.log_r_s = positive_log("r_s", r_s, "length", self.units)

    @property
    def m_tot(self):
        return jnp.exp(self.log_m_tot)

    @property
    def r_s(self):
        return jnp.exp(self.log_r_s)

    def _potential(self, x: Position) -> Scalar:
        return hernquist_vgl(self.G, self.m_tot, self.r_s, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return hernquist_vgl(self.G, self.m_tot, self.r_s, x)


@registry.potentials.register
@final
class NFW(AbstractPotential):
    """Navarro–Frenk–White halo: Φ = −G m_s ln(1 + r/r_s) / r, with m_s = 4π ρ_0 r_s³."""

    log_m_s: Float[Array, ""]
    log_r_s: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_s: ScalarLike = 1.0,
        r_s: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, m_s, r_s)
        self.log_m_s = positive_log("m_s", m_s, "mass", self.units)
        self.log_r_s = positive_log("r_s", r_s, "length", self.units)

    @property
    def m_s(self):
        return jnp.exp(self.log_m_s)

    @property
    def r_s(self):
        return jnp.exp(self.log_r_s)

    def _potential(self, x: Position) -> Scalar:
        return nfw_vgl(self.G, self.m_s, self.r_s, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return nfw_vgl(self.G, self.m_s, self.r_s, x)


@registry.potentials.register
@final
class Isochrone(AbstractPotential):
    """Hénon's isochrone: Φ = −G m_tot / (b + sqrt(r² + b²))."""

    log_m_tot: Float[Array, ""]
    log_b: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        b: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, m_tot, b)
        self.log_m_tot = positive_log("m_tot", m_tot, "mass", self.units)
        self.log_b = positive_log("b", b, "length", self.units)

    @property
    def m_tot(self):
        return jnp.exp(self.log_m_tot)

    @property
    def b(self):
        return jnp.exp(self.log_b)

    def _potential(self, x: Position) -> Scalar:
        return isochrone_vgl(self.G, self.m_tot, self.b, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return isochrone_vgl(self.G, self.m_tot, self.b, x)


@registry.potentials.register
@final
class MiyamotoNagai(AbstractPotential):
    """Miyamoto–Nagai disk: Φ = −G m_tot / sqrt(R² + (a + sqrt(z² + b²))²)."""

    log_m_tot: Float[Array, ""]
    log_a: Float[Array, ""]
    log_b: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        a: ScalarLike = 1.0,
        b: ScalarLike = 0.1,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, m_tot, a, b)
        self.log_m_tot = positive_log("m_tot", m_tot, "mass", self.units)
        self.log_a = positive_log("a", a, "length", self.units)
        self.log_b = positive_log("b", b, "length", self.units)

    @property
    def m_tot(self):
        return jnp.exp(self.log_m_tot)

    @property
    def a(self):
        return jnp.exp(self.log_a)

    @property
    def b(self):
        return jnp.exp(self.log_b)

    def _potential(self, x: Position) -> Scalar:
        return miyamoto_nagai_vgl(self.G, self.m_tot, self.a, self.b, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return miyamoto_nagai_vgl(self.G, self.m_tot, self.a, self.b, x)


@registry.potentials.register
@final
class Logarithmic(AbstractPotential):
    """Flattened logarithmic potential: Φ = ½ v_c² ln(r_c² + R² + z²/q²).

    `G` does not enter Φ (the amplitude is v_c²); it only converts ∇²Φ to a density.
    """

    log_v_c: Float[Array, ""]
    log_r_c: Float[Array, ""]
    log_q: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        v_c: ScalarLike = 1.0,
        r_c: ScalarLike = 1.0,
        q: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, v_c, r_c, q)
        self.log_v_c = positive_log("v_c", v_c, "velocity", self.units)
        self.log_r_c = positive_log("r_c", r_c, "length", self.units)
        self.log_q = positive_log("q", q, "dimensionless", self.units)

    @property
    def v_c(self):
        return jnp.exp(self.log_v_c)

    @property
    def r_c(self):
        return jnp.exp(self.log_r_c)

    @property
    def q(self):
        return jnp.exp(self.log_q)

    def _potential(self, x: Position) -> Scalar:
        return logarithmic_vgl(self.G, self.v_c, self.r_c, self.q, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return logarithmic_vgl(self.G, self.v_c, self.r_c, self.q, x)


@registry.potentials.register
@final
class PowerLawCutoff(AbstractPotential):
    """Power-law density with a Gaussian cut-off: ρ ∝ r^−α exp(−r²/r_c²), total mass m_tot.

    The bulge of galpy's `MWPotential2014` (galpy's `PowerSphericalPotentialwCutoff`, gala's
    `PowerLawCutoffPotential`). The enclosed mass is m_tot P((3 − α)/2, r²/r_c²) (P the
    regularised lower incomplete gamma function) and
    Φ = −G M(<r)/r − G m_tot Γ(1 − α/2, r²/r_c²) / (Γ((3 − α)/2) r_c). `alpha` lies in
    (0, 3) and is stored as is (not as a logarithm); Φ diverges at the centre for α ≥ 2, and
    within about 1e-3 of α = 2 it loses digits (about 1e-16/|1 − α/2|).
    """

    log_m_tot: Float[Array, ""]
    alpha: Float[Array, ""]
    log_r_c: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        alpha: ScalarLike = 1.8,
        r_c: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, m_tot, alpha, r_c)
        self.log_m_tot = positive_log("m_tot", m_tot, "mass", self.units)
        self.alpha = scalar_in_range("alpha", to_model_units("alpha", alpha, "dimensionless",
                                                              self.units), 0.0, 3.0)
        self.log_r_c = positive_log("r_c", r_c, "length", self.units)

    @property
    def m_tot(self):
        return jnp.exp(self.log_m_tot)

    @property
    def r_c(self):
        return jnp.exp(self.log_r_c)

    def _potential(self, x: Position) -> Scalar:
        return power_law_cutoff_vgl(self.G, self.m_tot, self.alpha, self.r_c, x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return power_law_cutoff_vgl(self.G, self.m_tot, self.alpha, self.r_c, x)


@registry.potentials.register
@final
class LongMuraliBar(AbstractPotential):
    """Long & Murali's (1992) softened-needle bar (galpy's `SoftenedNeedleBarPotential`).

    Φ = (G m_tot / 2a) ln[(x − a + T₋)/(x + a + T₊)], T± = sqrt((a ± x)² + y² + (b +
    sqrt(z² + c²))²), in the bar's axes: its long axis lies at position angle `angle`
    (radians, anticlockwise from the x axis) in the plane z = 0. It is a needle of mass
    m_tot and half-length a smoothed by Miyamoto–Nagai disks of scales b (in-plane) and c
    (vertical); the density is positive everywhere. Φ, ∇Φ and ∇²Φ are closed forms. The
    potential is static: a rotating bar is this potential seen in a `RotatingFrame`, and
    `angle` is the bar's angle at the snapshot.
    """

    log_m_tot: Float[Array, ""]
    log_a: Float[Array, ""]
    log_b: Float[Array, ""]
    log_c: Float[Array, ""]
    angle: Float[Array, ""]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        a: ScalarLike = 1.0,
        b: ScalarLike = 0.1,
        c: ScalarLike = 0.1,
        angle: ScalarLike = 0.0,
        *,
        G: float | None = None,
        units=None,
    ):
        self.units = resolve_units(units, G, m_tot, a, b, c, angle)
        self.log_m_tot = positive_log("m_tot", m_tot, "mass", self.units)
        self.log_a = positive_log("a", a, "length", self.units)
        self.log_b = positive_log("b", b, "length", self.units)
        self.log_c = positive_log("c", c, "length", self.units)
        self.angle = finite_scalar(  # radians
            "angle", to_model_units("angle", angle, "dimensionless", self.units))

    @property
    def m_tot(self):
        return jnp.exp(self.log_m_tot)

    @property
    def a(self):
        return jnp.exp(self.log_a)

    @property
    def b(self):
        return jnp.exp(self.log_b)

    @property
    def c(self):
        return jnp.exp(self.log_c)

    def _args(self):
        return self.G, self.m_tot, self.a, self.b, self.c, self.angle

    def _potential(self, x: Position) -> Scalar:
        return long_murali_bar_vgl(*self._args(), x)[0]

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return long_murali_bar_vgl(*self._args(), x)
