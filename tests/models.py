"""Every potential model, built the same way for every parametrised test."""

import functools
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import deeppot as dp

# Factories take keyword arguments passed on to the constructor (e.g. `G=`, `units=`).
ANALYTIC = {
    "plummer": lambda **kw: dp.Plummer(m_tot=1.3, r_s=0.7, **kw),
    "miyamoto_nagai": lambda **kw: dp.MiyamotoNagai(m_tot=1.1, a=0.9, b=0.15, **kw),
    "hernquist": lambda **kw: dp.Hernquist(m_tot=2.0, r_s=0.5, **kw),
    "nfw": lambda **kw: dp.NFW(m_s=3.0, r_s=1.7, **kw),
    "logarithmic": lambda **kw: dp.Logarithmic(v_c=0.8, r_c=0.4, q=0.7, **kw),
    "isochrone": lambda **kw: dp.Isochrone(m_tot=1.5, b=0.6, **kw),
    "kepler": lambda **kw: dp.Kepler(m_tot=0.9, **kw),
    "long_murali_bar": lambda **kw: dp.LongMuraliBar(m_tot=0.4, a=1.2, b=0.3, c=0.2, angle=0.7,
                                                     **kw),
    "power_law_cutoff": lambda **kw: dp.PowerLawCutoff(m_tot=1.3, alpha=1.8, r_c=1.9, **kw),
}

NEURAL = {
    # the paper's network (position only); "composite" has the default features (x, r)
    "neural": lambda: dp.NeuralPotential(key=jax.random.key(0), width=32, depth=2, input_scale=2.0,
                                         features=("x",)),
    "spherical": lambda: dp.Spherical.mlp(key=jax.random.key(1), width=32, depth=2),
    "axisymmetric": lambda: dp.Axisymmetric.mlp(key=jax.random.key(2), width=32, depth=2),
    "axisymmetric_tilted": lambda: dp.Axisymmetric.mlp(
        key=jax.random.key(3), width=32, depth=2, axis=jnp.array([0.3, -0.2, 1.0])
    ),
    # every radial input feature of the free-form and spherical networks (cusps)
    "neural_radial": lambda: dp.NeuralPotential(
        key=jax.random.key(6), width=16, depth=2, input_scale=1.5, features=("x", "r", "log_r")
    ),
    "spherical_radial": lambda: dp.Spherical.mlp(
        key=jax.random.key(7), width=16, depth=2, features=("r2", "r", "log_r")
    ),
    "composite": lambda: dp.Axisymmetric.mlp(key=jax.random.key(4), width=16, depth=2)
    + dp.NeuralPotential(key=jax.random.key(5), width=8, depth=2)
    + dp.Plummer(0.3, 0.4),
}

ALL = {**ANALYTIC, **NEURAL}


@functools.cache
def _build(name: str, x64: bool):
    return ALL[name]()


def build(name: str):
    """The named model, built once per float precision."""
    return _build(name, jnp.zeros(()).dtype == jnp.float64)


@eqx.filter_jit
def autodiff_reference(pot, x):
    """(Φ, ∇Φ, Hessian) of `pot._potential` by plain autodiff, for comparisons."""
    f = pot._potential
    return jax.vmap(f)(x), jax.vmap(jax.grad(f))(x), jax.vmap(jax.hessian(f))(x)


# Small networks fitted to exact Plummer scores (tests/data/make_trained_models.py).
TRAINED = ("trained_neural", "trained_spherical", "trained_axisymmetric")
DATA = Path(__file__).parent / "data"


@functools.cache
def _trained(name: str, x64: bool):
    from deeppot.export import as_float64

    pot = dp.load_model(DATA / f"{name}.eqx")[0]
    return as_float64(pot) if x64 else pot


def trained(name: str):
    """A trained network from tests/data (`name` in `TRAINED`), in the current precision."""
    if name not in TRAINED:
        raise KeyError(name)
    return _trained(name, jnp.zeros(()).dtype == jnp.float64)


# Models every exporter (galpy, gala, agama plugins) is checked on: one spherical and one
# axisymmetric family and the three trained networks in `make test`, the rest under `slow`
# (the exporters do not depend on the family beyond its symmetry).
EXPORTED = (*sorted(ANALYTIC), *TRAINED, "composite", "axisymmetric_tilted")
EXPORTED_FAST = ("plummer", "miyamoto_nagai", *TRAINED)


def exported_params():
    """`EXPORTED` as pytest parameters, those outside `EXPORTED_FAST` marked slow."""
    import pytest

    return [pytest.param(n, marks=() if n in EXPORTED_FAST else pytest.mark.slow)
            for n in EXPORTED]


def exported_model(name: str):
    """A model of `EXPORTED` by name, in the current precision."""
    if name in TRAINED:
        return trained(name)
    return ALL[name]()


def assert_close(ours, theirs, rtol: float = 1e-10):
    """`ours` equals another library's `theirs` to `rtol` of each value or of the largest
    |theirs| (values near zero compare at the scale of the field)."""
    theirs = np.asarray(theirs)
    scale = np.max(np.abs(theirs)) + 1e-300
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale)
