"""A potential continued beyond its validity region by an analytic tail.

`WithTail(inner, region, tail="kepler")` is Φ = (1 − s) Φ_mid + s (A Φ_tail + c), with
s(r) the C2 switch `deeppot.validity.smootherstep` over the spherical-radius shell
[region.radii[1], region.radii[2]] (by default the radii holding 90% and 99% of the score
points). Inside the shell it is Φ_mid, beyond it the tail; Φ, ∇Φ and ∇²Φ are continuous
everywhere (C2), and ∇²Φ is the exact Laplacian of the blend:

    ∇²Φ = ∇²Φ_mid + s ∇²D + 2 s' r̂·∇D + D (s'' + 2 s'/r),   D = A Φ_tail + c − Φ_mid.

For a spherical region Φ_mid is the inner potential. A flattened or elongated region (a
disc's is a thin ellipse in (R, z)) ends well inside the join's radius in some directions
(above a disc's poles), and there the inner potential is unconstrained; so Φ_mid replaces
it, outside the region, by its **ray continuation**: along each ray from the centre, from
the point x₁ where the ray leaves the region (where the region's scaled extent e(x) is
`region.bounds[1]`, the start of its outer shell; the extent is homogeneous of degree one,
so x₁ = x bounds[1] / e(x)), the potential rises as a shifted point mass's would,
matching the inner potential's value and radial derivative at x₁ and approaching the
tail's value Φ_top where the tail takes over (at r = radii[2] on the same ray):

    Φ_ray(x) = Φ_top − ΔΦ ℓ / (r − t₁ + ℓ),   ΔΦ = Φ_top − Φ_in(x₁),   ℓ = ΔΦ / ∂ᵣΦ_in(x₁),

t₁ = |x₁| (a Miyamoto–Nagai disc's Φ above its pole has this form, ℓ about its scale
length). Its radial force ΔΦ ℓ / (r − t₁ + ℓ)² points inwards wherever, on the region's
surface, the inner potential lies below the tail's and its radial force points inwards
(ΔΦ and ∂ᵣΦ_in are floored at a tiny positive number where they do not), and it stays
below Φ_top. Φ_mid = Φ_in + v (Φ_ray − Φ_in), with v = smootherstep of e(x) from the
start of the region's outer shell over `RAY_BLEND_WIDTHS` (4) widths of it (bounds[1] →
bounds[1] + 4 (bounds[2] − bounds[1]); a box uses the smooth 8-norm of its scaled
coordinates, so that Φ_mid is C2 across its edges too). Φ_mid's gradient and Laplacian
come from autodiff of the continuation (third derivatives of the inner potential at x₁).

The tail's amplitude A and constant c are fitted to the inner potential on the outer
shell, at points that lie in the region (for a disc, near its plane), each weighted by the
tail's share s(r) there: A by least squares on the relative radial force, c on Φ. The
default tail is a point mass (Φ → −A G/r + c, so A is the Keplerian mass); any deeppot
potential can be the tail's shape (`tail=dp.Hernquist(...)`).
"""

from __future__ import annotations

import math
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._custom_types import Position, Scalar
from .._errors import TailFitError
from ..units import UnitSystem
from ..validity import ValidityRegion, fibonacci_directions, smootherstep
from ._analytic import Kepler
from ._base import AbstractPotential

__all__ = ["RAY_BLEND_WIDTHS", "WithTail", "shell_points"]

# the ray continuation blends in from the start of a non-spherical region's outer shell
# over this many widths of the shell (in the scaled extent): a blend as thin as the shell
# itself puts angular structure into Φ that a multipole expansion resolves only at
# l_max ≫ 64 (an agama multipole of the disk config's tailed potential: median force
# difference 1e-2 at l_max = 64 with 1 width, 5e-4 with 2, 9e-5 with 4)
RAY_BLEND_WIDTHS = 4


def shell_points(region: ValidityRegion, *, n_directions: int = 4096,
                 n_radii: int = 8) -> np.ndarray:
    """Points on the outer shell (spherical radii between `region.radii[1]` and
    `radii[2]`) that lie in the region (`region.validity > 0`); shape (m, 3).

    Spread over the shell's radii and over directions (a Fibonacci sphere), keeping those in
    the region; where none are (a region thinner than the directions' spacing), the
    directions in the plane z = 0.
    """
    radii = np.linspace(region.radii[1], region.radii[2], n_radii)
    x = (radii[:, None, None] * fibonacci_directions(n_directions)[None]).reshape(-1, 3)
    keep = np.asarray(region.extent(x)) <= region.bounds[2]
    if keep.sum() >= 16:
        return x[keep]
    angle = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    ring = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], axis=-1)
    return (radii[:, None, None] * ring[None]).reshape(-1, 3)


@final
class WithTail(AbstractPotential):
    """A potential that becomes an analytic tail beyond its validity region.

    **Arguments:**

    - `inner`: the potential trusted inside the region (e.g. a learned network).
    - `region`: its `deeppot.validity.ValidityRegion`; the switch runs over the spherical
      radii `region.radii[1]` → `region.radii[2]`.
    - `tail`: `"kepler"` (default: a point mass) or a deeppot potential giving the tail's
      shape; its amplitude and an additive constant are fitted to `inner` on the shell.

    **Raises:** `TailFitError` when the inner force on the shell does not point inwards
    along the tail's (a fitted amplitude ≤ 0), or is not finite; `TypeError` for a tail
    that is not a potential.

    `validity(x)` is the region's graded validity (`ValidityRegion.validity`).
    """

    inner: AbstractPotential
    tail: AbstractPotential
    amplitude: Float[Array, ""]
    offset: Float[Array, ""]
    region: ValidityRegion
    units: UnitSystem = eqx.field(static=True)

    def __init__(self, inner: AbstractPotential, region: ValidityRegion,
                 tail: AbstractPotential | str = "kepler"):
        if not isinstance(inner, AbstractPotential):
            raise TypeError(f"inner must be a deeppot potential, got {type(inner).__name__}")
        if isinstance(inner, WithTail):
            raise TypeError("this potential already has a tail")
        if not isinstance(region, ValidityRegion):
            raise TypeError(f"region must be a ValidityRegion, got {type(region).__name__}")
        if isinstance(tail, str):
            if tail != "kepler":
                raise ValueError(f"tail must be 'kepler' or a deeppot potential, got {tail!r}")
            tail = Kepler(1.0, units=inner.units)
        elif not isinstance(tail, AbstractPotential):
            raise TypeError(f"tail must be 'kepler' or a deeppot potential, got "
                            f"{type(tail).__name__}")
        if not tail.units.same_units(inner.units):
            raise ValueError(f"the tail is in {tail.units!r} but the potential in "
                             f"{inner.units!r}: build both in one unit system")
        self.inner, self.tail, self.region, self.units = inner, tail, region, inner.units
        # fitted to the inner potential itself (where the shell's points are, it is
        # constrained by them; the ray continuation's weaker far force would bias it)
        amplitude, offset = _fit_tail(inner, tail, region)
        self.amplitude = jnp.asarray(amplitude)
        self.offset = jnp.asarray(offset)

    @property
    def join(self) -> tuple[float, float]:
        """The spherical radii over which the inner potential gives way to the tail."""
        return self.region.radii[1], self.region.radii[2]

    def validity(self, x):
        """The region's graded validity at positions (..., 3) (1 inside, 0 outside)."""
        return self.region.validity(x)

    def _switch(self, r):
        """s, s', s'' of the switch at radius r."""
        r0, r1 = self.join
        w = r1 - r0
        t = jnp.clip((r - r0) / w, 0.0, 1.0)
        s = smootherstep(t)
        ds = 30 * t**2 * (t - 1) ** 2 / w
        d2s = 60 * t * (t - 1) * (2 * t - 1) / w**2
        return s, ds, d2s

    @property
    def continued(self) -> bool:
        """Whether the inner potential is continued along rays outside a non-spherical
        region before the tail takes over (False for a spherical region: its shell is the
        join's)."""
        return self.region.kind != "spherical"

    def _ray_extent(self, x):
        """The scaled extent whose level sets the ray continuation starts on: the region's,
        with a box's max-norm made smooth (the 8-norm of the scaled coordinates)."""
        if self.region.kind == "box":
            return jnp.sum((x / jnp.asarray(self.region.scales, dtype=x.dtype)) ** 8,
                           axis=-1) ** 0.125
        return self.region.extent(x)

    def _ray_correction(self, x: Position) -> Scalar:
        """v (Φ_ray − Φ_in) at one position: zero inside the region (before its outer
        shell), the ray continuation's difference to the inner potential beyond it."""
        e0, e1 = self.region.bounds[1], self.region.bounds[2]
        # up to the shell's start (where v and the correction are zero), one fixed point on
        # the x axis at its start instead of x (the extent there is x / scales[0]): the
        # continuation needs r ≥ t₁ (e ≥ e0), or r − t₁ + ℓ may pass through zero, and its
        # derivatives must stay finite; v is flat to second order at e0, so this is C2
        fixed = jnp.asarray([e0 * self.region.scales[0], 0.0, 0.0], dtype=x.dtype)
        x = jnp.where(self._ray_extent(x) > e0, x, fixed)
        e = self._ray_extent(x)
        v = smootherstep((e - e0) / (RAY_BLEND_WIDTHS * (e1 - e0)))
        x1 = x * (e0 / e)
        phi1, g1 = jax.value_and_grad(self.inner._potential)(x1)
        r = jnp.linalg.norm(x)
        t1 = r * e0 / e
        dr = jnp.dot(g1, x) / r
        # the tail's potential where it takes over along this ray (r = radii[2])
        top = self._tail_vgl(x * (self.join[1] / r), self.join[1])[0]
        tiny = jnp.finfo(x.dtype).tiny ** 0.5
        rise, dr = jnp.maximum(top - phi1, tiny), jnp.maximum(dr, tiny)
        ell = rise / dr
        phi_ray = top - rise * ell / (r - t1 + ell)
        return v * (phi_ray - self.inner._potential(x))

    def _mid_potential(self, x: Position) -> Scalar:
        phi = self.inner._potential(x)
        return phi + self._ray_correction(x) if self.continued else phi

    def _mid_value_grad_laplacian(self, x: Position):
        """Φ_mid, ∇Φ_mid, ∇²Φ_mid: the inner potential, continued along rays outside a
        non-spherical region."""
        p, g, lap = self.inner._value_grad_laplacian(x)
        if not self.continued:
            return p, g, lap
        c, gc = jax.value_and_grad(self._ray_correction)(x)
        lap_c = jnp.trace(jax.jacfwd(jax.grad(self._ray_correction))(x))
        return p + c, g + gc, lap + lap_c

    def _tail_point(self, x: Position, r) -> Position:
        """x where the tail is used; inside the shell (where it is not, and may be singular,
        e.g. a point mass at the centre) a fixed point on the shell."""
        r0 = self.join[0]
        return jnp.where(r >= r0, x, jnp.array([r0, 0.0, 0.0], dtype=x.dtype))

    def _tail_vgl(self, x: Position, r):
        phi, grad, lap = self.tail._value_grad_laplacian(self._tail_point(x, r))
        a = self.amplitude
        return a * phi + self.offset, a * grad, a * lap

    def _potential(self, x: Position) -> Scalar:
        r = jnp.linalg.norm(x)
        s = self._switch(r)[0]
        phi_t = self.amplitude * self.tail._potential(self._tail_point(x, r)) + self.offset
        return (1 - s) * self._mid_potential(x) + s * phi_t

    def _value_grad_laplacian(self, x: Position):
        r = jnp.linalg.norm(x)
        s, ds, d2s = self._switch(r)
        r_safe = jnp.where(r > 0, r, 1.0)
        rhat = x / r_safe
        p_i, g_i, l_i = self._mid_value_grad_laplacian(x)
        p_t, g_t, l_t = self._tail_vgl(x, r)
        d, gd, ld = p_t - p_i, g_t - g_i, l_t - l_i
        phi = p_i + s * d
        grad = g_i + s * gd + d * ds * rhat
        lap_s = d2s + 2 * ds / r_safe
        lap = l_i + s * ld + 2 * ds * jnp.dot(rhat, gd) + d * lap_s
        return phi, grad, lap


def _fit_tail(inner: AbstractPotential, tail: AbstractPotential,
              region: ValidityRegion) -> tuple[float, float]:
    """(A, c) by least squares on the shell's points, each weighted by the tail's share
    s(r) of the blend there (so the tail continues the potential from the shell's outer
    part): A of the relative radial forces, c of Φ."""
    from ..laplacian import value_grad_laplacian  # (it imports this package)

    x = jnp.asarray(shell_points(region))
    r = jnp.linalg.norm(x, axis=-1, keepdims=True)
    vgl_in = value_grad_laplacian(inner, x)
    vgl_t = value_grad_laplacian(tail, x)
    g_in = np.asarray(jnp.sum(vgl_in[1] * x / r, axis=-1), dtype=np.float64)
    g_t = np.asarray(jnp.sum(vgl_t[1] * x / r, axis=-1), dtype=np.float64)
    p_in = np.asarray(vgl_in[0], dtype=np.float64)
    p_t = np.asarray(vgl_t[0], dtype=np.float64)
    if not (np.all(np.isfinite(g_in)) and np.all(np.isfinite(p_in))):
        raise TailFitError("the potential is not finite on its outer shell; no tail can be "
                           "fitted there")
    if not (np.all(np.isfinite(g_t)) and np.all(np.isfinite(p_t)) and np.sum(g_t * g_t) > 0):
        raise TailFitError("the tail's force is zero or not finite on the outer shell")
    # relative residuals of the radial force, weighted by the tail's share s(r) of the blend
    r0, r1 = region.radii[1], region.radii[2]
    w = np.asarray(smootherstep((np.asarray(r)[:, 0] - r0) / (r1 - r0)), dtype=np.float64)
    w = w / np.where(g_t != 0, g_t * g_t, np.inf)
    amplitude = float(np.sum(w * g_in * g_t) / np.sum(w * g_t * g_t))
    if not amplitude > 0:
        raise TailFitError(f"the radial force on the outer shell (radii {region.radii[1]:.4g}"
                           f"–{region.radii[2]:.4g}) points away from the tail's (fitted "
                           f"amplitude {amplitude:.3g}): the potential cannot be continued "
                           "by this tail")
    offset = float(np.sum(w * g_t * g_t * (p_in - amplitude * p_t)) / np.sum(w * g_t * g_t))
    return amplitude, offset
