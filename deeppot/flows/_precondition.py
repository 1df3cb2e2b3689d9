"""`Precondition`: the fixed elementwise map (log r, asinh(z/z₀), …) applied to reduced
coordinates before a flow sees them, and the weighted quantiles it is fitted with."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from flowjax.bijections import AbstractBijection
from jaxtyping import Array, Float

__all__ = ["Precondition"]

PRECONDITION_KINDS = ("identity", "log", "asinh")  # the kinds `Precondition` accepts


@typing.final
class Precondition(AbstractBijection):
    """A fixed elementwise map `u_i = g_i(q_i)` with its exact log-Jacobian (a flowjax
    bijection), applied to coordinates before a flow sees them, so that a cusp or a
    half-line boundary is smooth in the flow's coordinates.

    Kinds, per coordinate:

    - `"identity"`: `u = q`;
    - `"log"`: `u = ln q`, for a positive coordinate (r, v_t, R): maps the half line onto
      the line, and a power-law cusp at q → 0 onto an exponential tail;
    - `"asinh"`: `u = asinh(q / s)`, linear for |q| < s and logarithmic beyond, centred at 0
      (the system's centre or midplane). `fit` sets s to the `quantile` of |q| in the
      training data.

    **Arguments:**

    - `kinds`: one kind per coordinate.
    - `scale`: the asinh scales s, shape `(d,)` (ignored for other kinds; default ones,
      usually set by `fit`).
    - `quantile`: which quantile of |q| `fit` uses as the asinh scale.
    """

    kinds: tuple[str, ...] = eqx.field(static=True)
    scale: Float[Array, " d"]
    quantile: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    cond_shape: None = eqx.field(static=True)

    def __init__(self, kinds: Sequence[str], *, scale=None, quantile: float = 0.2):
        self.kinds = tuple(kinds)
        d = len(self.kinds)
        dtype = jnp.result_type(float)
        self.scale = jnp.ones(d, dtype) if scale is None else jnp.asarray(scale, dtype)
        self.quantile = float(quantile)
        self.shape = (d,)
        self.cond_shape = None

    def __check_init__(self):
        bad = [k for k in self.kinds if k not in PRECONDITION_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"precondition kinds must be a non-empty sequence of "
                             f"{PRECONDITION_KINDS}; got {self.kinds}")
        if self.scale.shape != self.shape:
            raise ValueError(f"scale must have shape {self.shape}; got {self.scale.shape}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1); got {self.quantile}")

    def _masks(self):
        return tuple(jnp.array([k == kind for k in self.kinds]) for kind in ("log", "asinh"))

    def transform_and_log_det(self, x, condition=None):
        """`q → u` and `ln |du/dq|` (summed over coordinates)."""
        is_log, is_asinh = self._masks()
        s = jax.lax.stop_gradient(self.scale).astype(x.dtype)
        safe = jnp.where(is_log, x, 1.0)
        u = jnp.where(is_log, jnp.log(safe), jnp.where(is_asinh, jnp.arcsinh(x / s), x))
        log_det = jnp.where(is_log, -jnp.log(safe),
                            jnp.where(is_asinh, -0.5 * jnp.log(s**2 + x**2), 0.0))
        return u, jnp.sum(log_det)

    def inverse_and_log_det(self, y, condition=None):
        """`u → q` and `ln |dq/du|` (summed over coordinates)."""
        is_log, is_asinh = self._masks()
        s = jax.lax.stop_gradient(self.scale).astype(y.dtype)
        x = jnp.where(is_log, jnp.exp(y), jnp.where(is_asinh, s * jnp.sinh(y), y))
        log_det = jnp.where(is_log, y, jnp.where(is_asinh, jnp.log(s * jnp.cosh(y)), 0.0))
        return x, jnp.sum(log_det)

    def fit(self, q: Float[Array, "n d"], weights: Float[Array, " n"] | None = None
            ) -> Precondition:
        """Copy whose asinh scales are the `quantile` of |q| per coordinate.

        **Arguments:**

        - `q`: training coordinates, shape `(n, d)`.
        - `weights`: optional non-negative per-point weights, shape `(n,)` (weighted
          quantile: a weighted point counts like that many copies of it).

        **Returns:**

        The same map with `scale` set from `q` (ones where the kind is not asinh).
        """
        q = jnp.asarray(q)
        if q.ndim != 2 or q.shape[1:] != self.shape:
            raise ValueError(f"expected coordinates of shape (n, {self.shape[0]}); got {q.shape}")
        if weights is None:
            s = jnp.quantile(jnp.abs(q), self.quantile, axis=0)
        else:
            p = jnp.asarray(weights, q.dtype)
            if p.shape != q.shape[:1]:
                raise ValueError(f"weights must have shape ({q.shape[0]},), got {p.shape}")
            s = jax.vmap(lambda a: weighted_quantile(a, p, self.quantile), 1)(jnp.abs(q))
        is_asinh = jnp.array([k == "asinh" for k in self.kinds])
        if not bool(jnp.all(jnp.where(is_asinh, s > 0, True))):
            raise ValueError("an asinh coordinate of the training data is mostly zero")
        scale = jnp.where(is_asinh, s, 1.0).astype(self.scale.dtype)
        return eqx.tree_at(lambda p: p.scale, self, scale)


def weighted_quantile(a: Float[Array, " n"], p: Float[Array, " n"], q):
    """The lower weighted quantile(s) `q` of `a`: the smallest value whose cumulative weight
    reaches the fraction q (a weighted point counts like that many copies of it)."""
    order = jnp.argsort(a)
    cdf = jnp.cumsum(p[order]) / jnp.sum(p)
    return a[order][jnp.searchsorted(cdf, q)]


def as_precondition(precondition, quantile) -> Precondition:
    """`precondition` itself if it is a `Precondition`, else one built from its kinds."""
    if isinstance(precondition, Precondition):
        return precondition
    if isinstance(precondition, str):
        raise TypeError("precondition must be a Precondition or a sequence of kinds, "
                        f"one per reduced coordinate; got the string {precondition!r}")
    return Precondition(precondition, quantile=quantile)

