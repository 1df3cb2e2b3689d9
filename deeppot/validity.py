"""Where a learned potential is constrained: the validity region of its score points.

A network potential is fitted where the score points are and extrapolates arbitrarily
elsewhere. `ValidityRegion.from_positions(x, kind)` (or `region_for(potential, x)`, which
picks the kind from the potential's symmetry) records the points' extent as quantiles:

- `"spherical"`: the radius r;
- `"axisymmetric"`: an ellipse in (R, |z|) about ẑ, scaled by the points' R and |z|
  quantiles (a disc's region is flat);
- `"box"`: an axis-aligned box about the origin, scaled by the |x|, |y|, |z| quantiles.

Each kind maps a position to a scaled extent s(x) (r for a sphere; the elliptical radius
sqrt((R/R_q)² + (z/z_q)²); the box's max |x_i|/h_i) and stores the quantiles of s over the
points: a position is **inside** where s ≤ s at `quantiles[1]` (by default 90% of the
points lie inside), in the **outer shell** up to s at `quantiles[2]` (99%), and **outside**
beyond. `region.validity(x)` grades this: 1 inside, falling smoothly (C2) to 0 across the
shell, 0 outside; `region.classify(x)` gives the labels (`INSIDE`, `SHELL`, `OUTSIDE`).
Every kind also keeps the quantiles of the spherical radius r (`radii`): the outer tail of
a potential (`deeppot.potentials.WithTail`) switches on across that shell.

Regions hold plain floats (static fields), so a `PotentialModel` carrying one is saved in,
and read back from, its model file, and is never trained.
"""

from __future__ import annotations

from typing import Literal, final

import equinox as eqx
import jax.numpy as jnp
import numpy as np

__all__ = ["DEFAULT_QUANTILES", "INSIDE", "LABELS", "OUTSIDE", "SHELL", "RegionKind",
           "ValidityRegion", "fibonacci_directions", "region_for", "smootherstep"]

RegionKind = Literal["spherical", "axisymmetric", "box"]
_KINDS = ("spherical", "axisymmetric", "box")
INSIDE, SHELL, OUTSIDE = 0, 1, 2
LABELS = ("inside", "shell", "outside")
# (inner edge, start of the outer shell, outer edge) as fractions of the points
DEFAULT_QUANTILES = (0.01, 0.9, 0.99)


def fibonacci_directions(n: int) -> np.ndarray:
    """`n` unit vectors spread almost evenly over the sphere (a Fibonacci lattice), shape
    `(n, 3)`: the directions on which regions' shells and tails are probed."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    rho = np.sqrt(1 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)


def smootherstep(t):
    """6t⁵ − 15t⁴ + 10t³ on [0, 1] (0 below, 1 above): C2, with zero first and second
    derivatives at both ends."""
    t = jnp.clip(t, 0.0, 1.0)
    return t**3 * (t * (6 * t - 15) + 10)


def _check_quantiles(quantiles) -> tuple[float, float, float]:
    q = tuple(float(v) for v in quantiles)
    if len(q) != 3 or not (0 <= q[0] < q[1] < q[2] <= 1):
        raise ValueError(f"quantiles must be three increasing fractions in [0, 1] "
                         f"(inner edge, shell, outer edge), got {quantiles!r}")
    return q


@final
class ValidityRegion(eqx.Module):
    """The extent of the points a potential was fitted to (build with `from_positions`).

    **Fields** (plain floats, in the potential's length unit):

    - `kind`: `"spherical"`, `"axisymmetric"` or `"box"`.
    - `quantiles`: the fractions of the points (inner edge, shell start, outer edge).
    - `scales`: the divisors of the scaled extent s(x): `()` for a sphere, `(R_q, z_q)`,
      or the box's half-widths `(h_x, h_y, h_z)` (each the outer quantile).
    - `bounds`: s at the three quantiles.
    - `radii`: the spherical radius r at the three quantiles.
    - `n`: how many points it was measured on.
    """

    kind: str = eqx.field(static=True)
    quantiles: tuple[float, float, float] = eqx.field(static=True)
    scales: tuple[float, ...] = eqx.field(static=True)
    bounds: tuple[float, float, float] = eqx.field(static=True)
    radii: tuple[float, float, float] = eqx.field(static=True)
    n: int = eqx.field(static=True)

    def __check_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        _check_quantiles(self.quantiles)
        want = {"spherical": 0, "axisymmetric": 2, "box": 3}[self.kind]
        if len(self.scales) != want or not all(np.isfinite(s) and s > 0 for s in self.scales):
            raise ValueError(f"a {self.kind} region needs {want} positive scales, got "
                             f"{self.scales!r}")
        for name in ("bounds", "radii"):
            v = getattr(self, name)
            if len(v) != 3 or not all(np.isfinite(b) and b >= 0 for b in v) \
                    or not v[0] <= v[1] < v[2]:
                raise ValueError(f"region {name} must be three increasing non-negative "
                                 f"numbers with a shell of positive width, got {v!r}")

    @classmethod
    def from_positions(cls, x, kind: RegionKind = "spherical", *,
                       quantiles=DEFAULT_QUANTILES) -> ValidityRegion:
        """The region of positions `x` (shape (n, 3), in the potential's coordinates).

        **Arguments:**

        - `x`: the positions (e.g. a score sample's `x`).
        - `kind`: `"spherical"`, `"axisymmetric"` (about ẑ) or `"box"`.
        - `quantiles`: fractions of the points at the inner edge, where the outer shell
          starts and at the outer edge.

        **Raises:** `ValueError` for an unknown kind, bad quantiles, fewer than 16 points,
        non-finite positions, or points that all sit at the origin.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        q = _check_quantiles(quantiles)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"positions must have shape (n, 3), got {x.shape}")
        if len(x) < 16:
            raise ValueError(f"a validity region needs at least 16 points, got {len(x)}")
        if not np.all(np.isfinite(x)):
            raise ValueError("positions for a validity region must be finite")
        r = np.linalg.norm(x, axis=1)
        if kind == "spherical":
            scales: tuple[float, ...] = ()
        elif kind == "axisymmetric":
            scales = (float(np.quantile(np.hypot(x[:, 0], x[:, 1]), q[2])),
                      float(np.quantile(np.abs(x[:, 2]), q[2])))
        else:
            scales = tuple(float(v) for v in np.quantile(np.abs(x), q[2], axis=0))
        if not all(s > 0 for s in scales) or np.quantile(r, q[2]) <= 0:
            raise ValueError(f"the positions have no extent in some direction (scales "
                             f"{scales}); use a region kind with fewer dimensions")
        s = np.asarray(_scaled(x, kind, scales))
        bounds = tuple(float(v) for v in np.quantile(s, q))
        radii = tuple(float(v) for v in np.quantile(r, q))
        return cls(kind=kind, quantiles=q, scales=scales, bounds=bounds, radii=radii,
                   n=len(x))

    def extent(self, x):
        """The scaled extent s(x) of positions of shape (..., 3); returns shape (...)."""
        return _scaled(jnp.asarray(x), self.kind, self.scales)

    def validity(self, x):
        """How far positions (..., 3) can be trusted: 1 inside, falling smoothly (C2) to 0
        across the outer shell, 0 outside; shape (...)."""
        lo, hi = self.bounds[1], self.bounds[2]
        return 1.0 - smootherstep((self.extent(x) - lo) / (hi - lo))

    def classify(self, x):
        """`INSIDE` (0), `SHELL` (1) or `OUTSIDE` (2) for positions (..., 3) (names in
        `LABELS`); shape (...), integers."""
        s = self.extent(x)
        return jnp.where(s <= self.bounds[1], INSIDE,
                         jnp.where(s <= self.bounds[2], SHELL, OUTSIDE))

    @property
    def outer_radius(self) -> float:
        """The spherical radius within which the outer quantile of the points lie."""
        return self.radii[2]

    def to_dict(self) -> dict:
        """The region as plain JSON-ready values (what exporters attach)."""
        return {"kind": self.kind, "quantiles": list(self.quantiles),
                "scales": list(self.scales), "bounds": list(self.bounds),
                "radii": list(self.radii), "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> ValidityRegion:
        """The region `to_dict` wrote."""
        try:
            return cls(kind=d["kind"], quantiles=tuple(d["quantiles"]),
                       scales=tuple(float(v) for v in d["scales"]),
                       bounds=tuple(d["bounds"]), radii=tuple(d["radii"]), n=int(d["n"]))
        except KeyError as err:
            raise ValueError(f"a validity region needs the key {err}") from None


def _scaled(x, kind: str, scales):
    if kind == "spherical":
        return jnp.linalg.norm(x, axis=-1)
    if kind == "axisymmetric":
        R2 = x[..., 0] ** 2 + x[..., 1] ** 2
        return jnp.sqrt(R2 / scales[0] ** 2 + (x[..., 2] / scales[1]) ** 2)
    return jnp.max(jnp.abs(x) / jnp.asarray(scales), axis=-1)


def region_for(potential, x, *, quantiles=DEFAULT_QUANTILES) -> ValidityRegion:
    """The validity region of positions `x` of shape (n, 3), of the kind the potential's
    symmetry suggests (`deeppot.export.symmetry`: spherical → `"spherical"`, axisymmetric
    about ẑ → `"axisymmetric"`, otherwise `"box"`)."""
    from .export import symmetry

    kind = {"spherical": "spherical", "axisymmetric": "axisymmetric"}.get(
        symmetry(potential), "box")
    return ValidityRegion.from_positions(x, kind, quantiles=quantiles)
