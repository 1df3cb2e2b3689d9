"""Phase-space geometry shared by the symmetric and analytic DFs and the reflections."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def safe_norm(a):
    """|a| with a zero gradient at a = 0 (instead of NaN)."""
    sq = jnp.sum(a**2, axis=-1)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)


def unit_vectors(key, m, dtype):
    """m independent uniformly random unit vectors, shape (m, 3)."""
    g = jax.random.normal(key, (m, 3), dtype)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def radial_tangential(x, v):
    """(r, v_r, v_t) of points x, v of shape (..., 3): the radius, the radial velocity and
    the tangential speed |x × v| / r."""
    r = safe_norm(x)
    return r, jnp.sum(x * v, -1) / r, safe_norm(jnp.cross(x, v)) / r
