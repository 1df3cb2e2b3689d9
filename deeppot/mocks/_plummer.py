"""Exact samples of the isotropic Plummer sphere (G = M = b = 1)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import registry
from ..catalog import PhaseSpaceCatalog
from ..potentials import Plummer
from ._common import check_draw, check_positive, describe_potential, key_meta


@functools.partial(jax.jit, static_argnums=1)
def _sample(key: jax.Array, n: int, r_max: float):
    # All randomness from one normal draw (one threefry call keeps compilation fast); the
    # transforms below are exact: Exp(1) = χ²₂/2, U(0,1) = exp(−Exp(1)), isotropic
    # directions are normalised Gaussian vectors, Beta(3/2, 9/2) = χ²₃ / (χ²₃ + χ²₉).
    g = jax.random.normal(key, (n, 20), dtype=jnp.float64)
    u = jnp.exp(-0.5 * (g[:, 0] ** 2 + g[:, 1] ** 2))
    m_max = r_max**3 / (1 + r_max**2) ** 1.5
    m = jnp.maximum(u * m_max, 1e-300)
    r = 1.0 / jnp.sqrt(m ** (-2.0 / 3.0) - 1.0)
    x = r[:, None] * _unit(g[:, 2:5])
    s3 = jnp.sum(g[:, 5:8] ** 2, axis=1)
    s9 = jnp.sum(g[:, 8:17] ** 2, axis=1)
    q = jnp.sqrt(s3 / (s3 + s9))
    v_esc = jnp.sqrt(2.0 / jnp.sqrt(1.0 + r**2))
    v = (q * v_esc)[:, None] * _unit(g[:, 17:20])
    return x, v


def _unit(g: jax.Array) -> jax.Array:
    return g / jnp.linalg.norm(g, axis=1, keepdims=True)


@registry.sources.register
def plummer(key: jax.Array, n: int, r_max: float = 10.0) -> PhaseSpaceCatalog:
    """Draw n stars from the isotropic Plummer distribution function, truncated at r_max.

    The DF is f(E) ∝ (−E)^{7/2} in the potential Φ = −1/sqrt(1 + r²) (G = M = b = 1).
    Radii come from inverting the enclosed-mass fraction m(r) = r³ / (1 + r²)^{3/2} on
    [0, m(r_max)] (no rejection); the speed is q·v_esc(r) with q² ~ Beta(3/2, 9/2), which is
    the exact conditional p(q) ∝ q² (1 − q²)^{7/2}; directions are isotropic. Velocities are
    not truncated (stars near r_max may have orbits that leave the sphere), as in the paper.

    **Arguments:**

    - `key`: a typed key, `jax.random.key(seed)`.
    - `n`: number of stars.
    - `r_max`: truncation radius (> 0).

    **Returns:** a `PhaseSpaceCatalog` whose `meta` records the generator, parameters, key
    and the truth potential `{"class": "Plummer", "m_tot": 1.0, "r_s": 1.0, "G": 1.0}`.
    """
    n = check_draw(key, n)
    check_positive(r_max=r_max)
    with jax.enable_x64(True):
        # Draw a power-of-two bucket (fewer compilations across sizes) and keep n stars.
        n_draw = max(16, 1 << (n - 1).bit_length())
        x, v = (np.asarray(o)[:n] for o in _sample(key, n_draw, float(r_max)))
        truth = describe_potential(Plummer(1.0, 1.0))
    meta = {
        "generator": "deeppot.mocks.plummer",
        "params": {"n": n, "r_max": float(r_max)},
        "key": key_meta(key),
        "truth": truth,
        "truth_df": {"class": "PlummerDF", "r_max": float(r_max)},
    }
    return PhaseSpaceCatalog(x, v, meta=meta)


plummer.exact_df = True  # its catalogues record their exact DF (meta["truth_df"])
