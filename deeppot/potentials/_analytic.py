"""Analytic potential families with closed-form Φ, ∇Φ and ∇²Φ.

Each family is a thin final class over a pure function `(G, params…, x) -> (Φ, ∇Φ, ∇²Φ)`:
its fields and that function. A positive parameter is declared once, as a field
`log_<name>: … = positive_field(dimension)`: it is stored as a logarithm, set by
`init_parameters` from the constructor argument `<name>` (a number or a quantity), and read
back through a property `<name>` that the base class adds.

Every constructor takes `units=` (a `deeppot.units.UnitSystem` or a name such as
`"galactic"`) or, for a dimensionless model, `G=` (default 1). Parameters may be astropy
quantities of the right dimension (`MiyamotoNagai(m_tot=6e10 * u.Msun, a=3 * u.kpc,
b=0.28 * u.kpc)` is in `galactic` units); bare numbers are in the model's units.
"""

import dataclasses
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jaxtyping import Array, Float

from .. import registry
from .._custom_types import Position, Scalar, ScalarLike
from .._params import (
    finite_scalar,
    init_parameters,
    positive_field,
    scalar_in_range,
    to_model_units,
)
from ..units import UnitSystem
from ._base import AbstractPotential

VGL = tuple[Scalar, Position, Scalar]


@jax.custom_jvp
def _norm(v: Float[Array, "*batch n"]) -> Float[Array, "*batch"]:
    """|v| without overflow or underflow (float32 squares overflow past ~1e19).

    Its derivative rule is v̂·dv, written with `_norm` again so that it can be
    differentiated any number of times: the largest component's derivative splits where
    components tie (|z| = c, say), which leaves the scaled form's second derivative wrong
    there (`jnp.hypot` has the same fault).
    """
    big = jnp.max(jnp.abs(v), axis=-1, keepdims=True)
    scaled = v / jnp.where(big > 0, big, 1)
    return big[..., 0] * jnp.sqrt(jnp.sum(scaled**2, axis=-1))


@_norm.defjvp
def _norm_jvp(primals, tangents):
    (v,), (dv,) = primals, tangents
    n = _norm(v)
    return n, jnp.sum(v / jnp.where(n > 0, n, 1)[..., None] * dv, axis=-1)


def _hypot(a: Scalar, b: Scalar) -> Scalar:
    """sqrt(a² + b²), differentiable any number of times also where |a| = |b|."""
    return _norm(jnp.stack(jnp.broadcast_arrays(a, b), axis=-1))


def _radius(x: Position) -> Scalar:
    return _norm(x)


def _radial(x: Position, r: Scalar, phi, dphi_dr, lap) -> VGL:
    """Assemble (Φ, ∇Φ, ∇²Φ) of a spherical potential from dΦ/dr. At r = 0 the force's
    direction is undefined: ∇Φ = 0 there."""
    return phi, jnp.where(r > 0, dphi_dr, 0) * (x / jnp.where(r > 0, r, 1)), lap


# Every family below is written in ratios of lengths (each at most about one) and scaled
# norms, so that no square of a coordinate is formed: Φ, ∇Φ and ∇²Φ stay finite (and as
# accurate as the result's precision allows) from the centre out to the largest float32
# (Logarithmic: while z/q is a float32 too).


def plummer_vgl(G, m, b, x: Position) -> VGL:
    r = _radius(x)
    s = _hypot(r, b)
    phi_s = G * m / s
    return _radial(x, r, -phi_s, phi_s * (r / s) / s, 3 * phi_s * (b / s) ** 2 / s / s)


def kepler_vgl(G, m, x: Position) -> VGL:
    r = _radius(x)
    phi_r = G * m / r
    return _radial(x, r, -phi_r, phi_r / r, jnp.zeros_like(r))


def hernquist_vgl(G, m, a, x: Position) -> VGL:
    r = _radius(x)
    p = r + a
    phi_p = G * m / p
    return _radial(x, r, -phi_p, phi_p / p, 2 * phi_p * (a / p) / p / r)


def nfw_vgl(G, m_s, r_s, x: Position) -> VGL:
    r = _radius(x)
    s = r / r_s
    small = s < 1e-3  # series of ln(1 + s)/s and of the enclosed mass, exact to ~1e-13
    safe = jnp.where(small, 1.0, s)
    ln_over_s = jnp.where(small, 1 - s / 2 + s**2 / 3 - s**3 / 4 + s**4 / 5,
                          jnp.log1p(safe) / safe)
    # M(<r)/(m_s s²) = (ln(1 + s) − s/(1 + s)) / s² = Σ_k (−s)ᵏ (k + 1)/(k + 2), summed where
    # the difference loses more than a few digits (s < 0.1 in float32)
    series = s < (1e-3 if s.dtype == jnp.float64 else 0.1)
    safe_m = jnp.where(series, 1.0, s)
    mass_over_s2 = jnp.where(series, sum((-s) ** k * (k + 1) / (k + 2) for k in range(8)),
                             (jnp.log1p(safe_m) - safe_m / (1 + safe_m)) / safe_m / safe_m)
    gm = G * m_s
    return _radial(x, r, -gm * ln_over_s / r_s, gm / r_s * mass_over_s2 / r_s,
                   gm / (r + r_s) / (r + r_s) / r)


def isochrone_vgl(G, m, b, x: Position) -> VGL:
    r = _radius(x)
    a = _hypot(r, b)
    p = b + a
    phi_p = G * m / p
    # ∇²Φ = G m b (2a + b) / ((a + b)² a³)
    ba = b / a  # (2a + b) / (a + b) without forming 2a, which overflows near the largest float
    return _radial(x, r, -phi_p, phi_p * (r / a) / p, phi_p * ((2 + ba) / (1 + ba)) * ba / a / a)


def miyamoto_nagai_vgl(G, m, a, b, x: Position) -> VGL:
    zeta = _hypot(x[2], b)
    azeta = a + zeta
    S = _norm(jnp.stack([x[0], x[1], azeta]))  # sqrt(R² + (a + ζ)²)
    u = jnp.stack([x[0], x[1], azeta]) / S
    phi_S = G * m / S
    grad = phi_S / S * jnp.stack([u[0], u[1], x[2] / zeta * u[2]])
    # ∇²Φ = G m b² (a R² + (a + 3ζ)(a + ζ)²) / (S⁵ ζ³)
    big_a = a * (u[0] ** 2 + u[1] ** 2) + (a + 3 * zeta) * u[2] ** 2
    lap = phi_S * (b / zeta) ** 2 * (big_a / zeta) / S / S
    return -phi_S, grad, lap


def long_murali_bar_vgl(G, m, a, b, c, angle, x: Position) -> VGL:
    """Long & Murali's (1992) softened needle: a line of Miyamoto–Nagai disks along the
    bar's long axis, in the bar's own axes rotated by `angle` about z.

    Φ, ∇Φ and ∇²Φ are even in the coordinate along the bar, so they are written for
    |x| (the sign comes back in ∂Φ/∂x), in forms free of cancellation near and far.
    """
    ca, sa = jnp.cos(angle), jnp.sin(angle)
    xb = ca * x[0] + sa * x[1]  # coordinates along and across the bar
    yb = -sa * x[0] + ca * x[1]
    xp = jnp.abs(xb)
    zeta = _hypot(x[2], c)
    B = b + zeta
    sqrt_c = _hypot(yb, B)  # C = y² + B²
    t_plus = _hypot(xp + a, sqrt_c)
    t_minus = _hypot(xp - a, sqrt_c)
    tsum = t_plus + t_minus
    u_plus, u_minus = (xp + a) / t_plus, (xp - a) / t_minus
    outside = xp >= a
    gm = G * m
    # Φ = (G m / 2a) ln[(x − a + T−)/(x + a + T+)]. Inside |x| < a the numerator is
    # C / (T− + a − x); the ratio minus one is −2a (1 + 2x/(T+ + T−)) / (x + a + T+),
    # taken through log1p where the ratio is close to one (far from the bar).
    den = xp + a + t_plus
    num = jnp.where(outside, xp - a + t_minus, sqrt_c * (sqrt_c / (t_minus + a - xp)))
    ratio_m1 = -2 * a * (1 + 2 * xp / tsum) / den
    near_one = ratio_m1 > -0.5
    log_ratio = jnp.where(near_one, jnp.log1p(jnp.where(near_one, ratio_m1, 0.0)),
                          jnp.log(num / den))
    phi = gm / (2 * a) * log_ratio
    # ∂Φ/∂x = 2 G m x / (T+ T− (T+ + T−)); ∂Φ/∂y = y G m Q / (C T+ T− (T+ + T−)) with
    # Q/C = 1 + (2a² + 2x² + C) / (T+T− + x² − a²) outside, (a² − x² + C + T+T−)/C inside.
    rc_plus, rc_minus = sqrt_c / t_plus, sqrt_c / t_minus
    q_out = 1 + (t_plus / t_minus + t_minus / t_plus - rc_plus * rc_minus) / (
        1 + u_plus * jnp.where(outside, u_minus, 0.0))
    q_in = 1 + ((xp + a) / sqrt_c) * ((a - xp) / sqrt_c) + (t_plus / sqrt_c) * (t_minus / sqrt_c)
    q_over_c = jnp.where(outside, q_out, q_in)
    g_t = gm / t_plus / t_minus
    gx = 2 * g_t * (xb / tsum)
    gy = g_t * (yb / tsum) * q_over_c
    gz = g_t * (x[2] / zeta) * (B / tsum) * q_over_c
    grad = jnp.stack([ca * gx - sa * gy, sa * gx + ca * gy, gz])
    # ∇²Φ = 4πGρ, the needle's density (the Miyamoto–Nagai density integrated along x):
    # G m c² (u+ − u−) [A (3 − P) + b C P] / (6 a C² ζ³), u± = (x ± a)/T±, P = u+² + u+u− +
    # u−², A = b y² + (b + 3ζ) B², with (u+ − u−)/a = ((T+ + T−)² − 4x²) / ((T+ + T−) T+ T−)
    # = 2Q / ((T+ + T−) T+ T−) and (3 − P)/C = 1/T+² + 1/T−² + (T+T− − (x + a)(x − a)) /
    # (C T+ T−).
    du_over_a = 2 * rc_plus * rc_minus * q_over_c / tsum
    p = u_plus**2 + u_plus * u_minus + u_minus**2
    w_out = ((xp + a) / t_plus * (xp + a) / t_minus + (xp - a) / t_plus * (xp - a) / t_minus
             + rc_plus * rc_minus) / (1 + u_plus * jnp.where(outside, u_minus, 0.0))
    w_in = ((t_plus / sqrt_c) * (t_minus / sqrt_c)
            + ((xp + a) / sqrt_c) * ((a - xp) / sqrt_c)) / (t_plus * t_minus)
    three_minus_p_over_c = (1 / t_plus**2 + 1 / t_minus**2
                            + jnp.where(outside, w_out / t_plus / t_minus, w_in))
    a_over_c = b * (yb / sqrt_c) ** 2 + (b + 3 * zeta) * (B / sqrt_c) ** 2
    bracket = a_over_c * three_minus_p_over_c + b * p / sqrt_c / sqrt_c
    lap = gm / 6 * (c / zeta) ** 2 / zeta * du_over_a * bracket
    return phi, grad, lap


def logarithmic_vgl(G, v_c, r_c, q, x: Position) -> VGL:
    # G does not enter: v_c sets the amplitude. N = sqrt(r_c² + R² + z²/q²).
    c = jnp.stack([jnp.ones_like(q), jnp.ones_like(q), 1 / q**2])
    N = _norm(jnp.stack([r_c, x[0], x[1], x[2] / q]))
    u = x / N
    v2 = v_c**2
    lap = v2 / N * (jnp.sum(c) - 2 * jnp.sum(c * c * u * u)) / N
    return v2 * jnp.log(N), v2 / N * c * u, lap


@jax.custom_jvp
def _exp1(x):
    """E₁(x) for x ≥ 1, with a derivative rule that can be differentiated again (jax's
    cannot). Only called with x ≥ 1: jax's E₁ never returns for tiny x under `vmap`."""
    return jsp.exp1(x)


@_exp1.defjvp
def _exp1_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _exp1(x), -jnp.exp(-x) / x * dx


# ln Γ(1 + a) = −γ a + Σ_{k≥2} (−1)ᵏ ζ(k) aᵏ / k, for |a| ≤ 0.1 to 1e-17 with k ≤ 16
_EULER_GAMMA = 0.5772156649015329
_ZETA = (1.6449340668482264, 1.2020569031595942, 1.0823232337111382, 1.0369277551433699,
         1.0173430619844491, 1.0083492773819228, 1.0040773561979443, 1.0020083928260822,
         1.0009945751278181, 1.0004941886041195, 1.0002460865533080, 1.0001227133475785,
         1.0000612481350587, 1.0000305882363070, 1.0000152822594087)


def _exprel(y):
    """(eʸ − 1)/y, 1 at y = 0. Near 0 a Taylor polynomial with enough terms that its
    second derivative (the function rules take it) is exact too, not just its value."""
    small = jnp.abs(y) < 1e-3
    safe = jnp.where(small, 1.0, y)
    series = 1 + y / 2 * (1 + y / 3 * (1 + y / 4 * (1 + y / 5 * (1 + y / 6 * (1 + y / 7)))))
    return jnp.where(small, series, jnp.expm1(safe) / safe)


def _gamma1p_m1_over_a(a):
    """(Γ(1 + a) − 1)/a for a ∈ (−½, 1½), exact also at and near a = 0 (−γ there)."""
    small = jnp.abs(a) <= 0.1
    t = jnp.where(small, a, 0.0)
    lg_over_a = -_EULER_GAMMA + sum((-1) ** k * z / k * t ** (k - 1)
                                    for k, z in enumerate(_ZETA, 2))
    safe = jnp.where(small, 1.0, a)
    return jnp.where(small, lg_over_a * _exprel(t * lg_over_a),
                     jnp.expm1(jsp.gammaln(1 + safe)) / safe)


def _upper_gamma_large(a, x):
    """Γ(a, x) for a ∈ (−½, 1), x ≥ 1: a > 0 directly, a < 0 from Γ(a, x) = (Γ(a + 1, x)
    − xᵃ e⁻ˣ) / a (which loses digits as |a| → 0, about ε/|a|), a = 0 as E₁(x)."""
    pos = jnp.where(a > 0, a, 1.0)
    neg = jnp.where(a < 0, a, -0.5)
    upper_pos = jsp.gammaincc(pos, x) * jnp.exp(jsp.gammaln(pos))
    upper_next = jsp.gammaincc(neg + 1, x) * jnp.exp(jsp.gammaln(neg + 1))
    upper_neg = (upper_next - jnp.exp(neg * jnp.log(x) - x)) / neg
    return jnp.where(a > 0, upper_pos, jnp.where(a < 0, upper_neg, _exp1(x)))


_SERIES_TERMS = 24  # terms of the small-r series (u < 1): 1/24! ≈ 1.6e-24


def power_law_cutoff_vgl(G, m, alpha, r_c, x: Position) -> VGL:
    # ρ ∝ r^−α exp(−r²/r_c²) with total mass m: M(<r) = m P(s, u), u = r²/r_c²,
    # s = (3 − α)/2, and Φ = −G M(<r)/r − G m Γ(a, u) / (Γ(s) r_c), a = s − ½.
    # For u < 1, with Σ_b = Σ_k (−u)ᵏ/(k! (b + k)) and Γ(a, u) = Γ(a) − uᵃ Σ_a:
    #   M(<r)/r² = m r^(1−α) Σ_s / (Γ(s) r_c^(3−α)),
    #   Φ = −G m / (Γ(s) r_c) [Γ(a) − uᵃ/a + uᵃ/s − ½ uᵃ Σ_{k≥1} (−u)ᵏ/(k! (s + k)(a + k))],
    #   Γ(a) − uᵃ/a = (Γ(1 + a) − 1)/a − ln u (e^(a ln u) − 1)/(a ln u),
    # bounded sums exact to rounding, finite at a = 0 (α = 2) and at r → 0 for α < 2.
    # For u ≥ 1 the incomplete gamma functions.
    r = _radius(x)
    s = (3 - alpha) / 2
    a = s - 0.5
    gm = G * m
    lgs = jsp.gammaln(s)
    ln_r = jnp.log(r / r_c)  # −inf at r = 0
    ln_u = 2 * ln_r
    u = jnp.exp(jnp.minimum(ln_u, 10.0))  # capped where exp(−u) = 0 and P(s, u) = 1
    small = u < 1
    us = jnp.where(small, u, 0.0)
    k = jnp.arange(1, _SERIES_TERMS + 1, dtype=us.dtype)
    powers = jnp.cumprod(-us / k)  # (−u)ᵏ / k!
    sum_s = 1 / s + jnp.sum(powers / (s + k))
    sum_sa = jnp.sum(powers / ((s + k) * (a + k)))
    ua = jnp.exp(a * jnp.where(small, ln_u, 0.0))
    lnu_s = jnp.where(small, ln_u, -1.0)
    head = jnp.where(jnp.abs(a * lnu_s) < 1e-3, -lnu_s * _exprel(a * lnu_s),
                     -jnp.expm1(a * lnu_s) / a)  # −ln u (uᵃ − 1)/(a ln u)
    bracket = _gamma1p_m1_over_a(a) + head + ua / s - 0.5 * ua * sum_sa
    phi_small = -gm / r_c * jnp.exp(-lgs) * bracket
    force_small = gm / r_c / r_c * jnp.exp((1 - alpha) * jnp.where(small, ln_r, 0.0) - lgs) * sum_s
    # u ≥ 1
    ul = jnp.where(small, 1.0, u)
    enclosed_over_r = gm * jsp.gammainc(s, ul) / jnp.where(small, 1.0, r)
    phi_large = -enclosed_over_r - gm / r_c * _upper_gamma_large(a, ul) * jnp.exp(-lgs)
    force_large = enclosed_over_r / jnp.where(small, 1.0, r)
    at_centre = r == 0
    phi_centre = jnp.where(a > 0, -gm / r_c * jnp.exp(jsp.gammaln(jnp.where(a > 0, a, 1.0))
                                                       - lgs), -jnp.inf)
    phi = jnp.where(at_centre, phi_centre, jnp.where(small, phi_small, phi_large))
    dphi_dr = jnp.where(small, force_small, force_large)
    # ∇²Φ = 4πGρ = 2 G m r^−α exp(−u) / (Γ(s) r_c^(3−α))
    lap = 2 * gm / r_c**3 * jnp.exp(-alpha * ln_r - u - lgs)
    return _radial(x, r, phi, dphi_dr, lap)


class AbstractAnalyticPotential(AbstractPotential):
    """A closed-form family: Φ is the first of its (Φ, ∇Φ, ∇²Φ), and each positive field
    `log_<name>` (declared with `positive_field`) is read back as a property `<name>`."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if isinstance(value, dataclasses.Field) and "positive" in value.metadata:
                setattr(cls, name.removeprefix("log_"), property(
                    lambda self, field=name: jnp.exp(getattr(self, field)),
                    doc=f"exp({name}), in the model's units ({value.metadata['positive']})."))

    def _potential(self, x: Position) -> Scalar:
        return self._value_grad_laplacian(x)[0]


@registry.potentials.register
@final
class Kepler(AbstractAnalyticPotential):
    """Point mass: Φ = −G m_tot / r."""

    log_m_tot: Float[Array, ""] = positive_field("mass")
    units: UnitSystem = eqx.field(static=True)

    def __init__(self, m_tot: ScalarLike, *, G: float | None = None, units=None):
        init_parameters(self, units, G, m_tot=m_tot)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return kepler_vgl(self.G, self.m_tot, x)


@registry.potentials.register
@final
class Plummer(AbstractAnalyticPotential):
    """Plummer sphere: Φ = −G m_tot / sqrt(r² + r_s²)."""

    log_m_tot: Float[Array, ""] = positive_field("mass")
    log_r_s: Float[Array, ""] = positive_field("length")
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        r_s: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        init_parameters(self, units, G, m_tot=m_tot, r_s=r_s)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return plummer_vgl(self.G, self.m_tot, self.r_s, x)


@registry.potentials.register
@final
class Hernquist(AbstractAnalyticPotential):
    """Hernquist sphere: Φ = −G m_tot / (r + r_s)."""

    log_m_tot: Float[Array, ""] = positive_field("mass")
    log_r_s: Float[Array, ""] = positive_field("length")
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        r_s: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        init_parameters(self, units, G, m_tot=m_tot, r_s=r_s)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return hernquist_vgl(self.G, self.m_tot, self.r_s, x)


@registry.potentials.register
@final
class NFW(AbstractAnalyticPotential):
    """Navarro–Frenk–White halo: Φ = −G m_s ln(1 + r/r_s) / r, with m_s = 4π ρ_0 r_s³."""

    log_m_s: Float[Array, ""] = positive_field("mass")
    log_r_s: Float[Array, ""] = positive_field("length")
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_s: ScalarLike = 1.0,
        r_s: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        init_parameters(self, units, G, m_s=m_s, r_s=r_s)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return nfw_vgl(self.G, self.m_s, self.r_s, x)


@registry.potentials.register
@final
class Isochrone(AbstractAnalyticPotential):
    """Hénon's isochrone: Φ = −G m_tot / (b + sqrt(r² + b²))."""

    log_m_tot: Float[Array, ""] = positive_field("mass")
    log_b: Float[Array, ""] = positive_field("length")
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        m_tot: ScalarLike = 1.0,
        b: ScalarLike = 1.0,
        *,
        G: float | None = None,
        units=None,
    ):
        init_parameters(self, units, G, m_tot=m_tot, b=b)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return isochrone_vgl(self.G, self.m_tot, self.b, x)


@registry.potentials.register
@final
class MiyamotoNagai(AbstractAnalyticPotential):
    """Miyamoto–Nagai disk: Φ = −G m_tot / sqrt(R² + (a + sqrt(z² + b²))²)."""

    log_m_tot: Float[Array, ""] = positive_field("mass")
    log_a: Float[Array, ""] = positive_field("length")
    log_b: Float[Array, ""] = positive_field("length")
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
        init_parameters(self, units, G, m_tot=m_tot, a=a, b=b)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return miyamoto_nagai_vgl(self.G, self.m_tot, self.a, self.b, x)


@registry.potentials.register
@final
class Logarithmic(AbstractAnalyticPotential):
    """Flattened logarithmic potential: Φ = ½ v_c² ln(r_c² + R² + z²/q²).

    `G` does not enter Φ (the amplitude is v_c²); it only converts ∇²Φ to a density.
    """

    log_v_c: Float[Array, ""] = positive_field("velocity")
    log_r_c: Float[Array, ""] = positive_field("length")
    log_q: Float[Array, ""] = positive_field("dimensionless")
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
        init_parameters(self, units, G, v_c=v_c, r_c=r_c, q=q)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return logarithmic_vgl(self.G, self.v_c, self.r_c, self.q, x)


@registry.potentials.register
@final
class PowerLawCutoff(AbstractAnalyticPotential):
    """Power-law density with a Gaussian cut-off: ρ ∝ r^−α exp(−r²/r_c²), total mass m_tot.

    The bulge of galpy's `MWPotential2014` (galpy's `PowerSphericalPotentialwCutoff`, gala's
    `PowerLawCutoffPotential`). The enclosed mass is m_tot P((3 − α)/2, r²/r_c²) (P the
    regularised lower incomplete gamma function) and
    Φ = −G M(<r)/r − G m_tot Γ(1 − α/2, r²/r_c²) / (Γ((3 − α)/2) r_c). `alpha` lies in
    (0, 3) and is stored as is (not as a logarithm); Φ diverges at the centre for α ≥ 2.
    Within r_c, Φ and its force are exact bounded series (finite down to r → 0 for α < 2);
    beyond r_c, within about 1e-3 of α = 2, Φ's tail loses digits (about ε/|1 − α/2|).
    """

    log_m_tot: Float[Array, ""] = positive_field("mass")
    alpha: Float[Array, ""]
    log_r_c: Float[Array, ""] = positive_field("length")
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
        init_parameters(self, units, G, alpha, m_tot=m_tot, r_c=r_c)
        self.alpha = scalar_in_range("alpha", to_model_units("alpha", alpha, "dimensionless",
                                                              self.units), 0.0, 3.0)

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return power_law_cutoff_vgl(self.G, self.m_tot, self.alpha, self.r_c, x)


@registry.potentials.register
@final
class LongMuraliBar(AbstractAnalyticPotential):
    """Long & Murali's (1992) softened-needle bar (galpy's `SoftenedNeedleBarPotential`).

    Φ = (G m_tot / 2a) ln[(x − a + T₋)/(x + a + T₊)], T± = sqrt((a ± x)² + y² + (b +
    sqrt(z² + c²))²), in the bar's axes: its long axis lies at position angle `angle`
    (radians, anticlockwise from the x axis) in the plane z = 0. It is a needle of mass
    m_tot and half-length a smoothed by Miyamoto–Nagai disks of scales b (in-plane) and c
    (vertical); the density is positive everywhere. Φ, ∇Φ and ∇²Φ are closed forms. The
    potential is static: a rotating bar is this potential seen in a `RotatingFrame`, and
    `angle` is the bar's angle at the snapshot.
    """

    log_m_tot: Float[Array, ""] = positive_field("mass")
    log_a: Float[Array, ""] = positive_field("length")
    log_b: Float[Array, ""] = positive_field("length")
    log_c: Float[Array, ""] = positive_field("length")
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
        init_parameters(self, units, G, angle, m_tot=m_tot, a=a, b=b, c=c)
        self.angle = finite_scalar(  # radians
            "angle", to_model_units("angle", angle, "dimensionless", self.units))

    def _args(self):
        return self.G, self.m_tot, self.a, self.b, self.c, self.angle

    def _value_grad_laplacian(self, x: Position) -> VGL:
        return long_murali_bar_vgl(*self._args(), x)
