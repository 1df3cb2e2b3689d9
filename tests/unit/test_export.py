"""deeppot.export: compiled float64 fields for exporters, symmetry, unit systems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.export import FieldEvaluator, as_float64, mirror_symmetric_z, symmetry, unit_system
from tests.models import ALL, exported_model


def test_fields_equal_the_potentials_verbs_for_any_batch_shape(x64):
    pot = dp.Plummer(m_tot=1.3, r_s=0.7) + dp.MiyamotoNagai(m_tot=1.1, a=0.9, b=0.15)
    fields = FieldEvaluator(pot, chunk_size=4)  # 13 points: four chunks, the last padded
    rng = np.random.default_rng(0)
    for shape in [(3,), (5, 3), (2, 3, 3), (0, 3), (13, 3)]:
        x = rng.normal(size=shape)
        for got, verb in ((fields.potential_at(x), pot.potential),
                          (fields.gradient_at(x), pot.gradient),
                          (fields.hessian_at(x), pot.hessian),
                          (fields.laplacian_at(x), pot.laplacian)):
            want = np.asarray(verb(x))
            assert got.shape == want.shape and got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_fields_are_float64_even_for_a_float32_model():
    pot = dp.Plummer(m_tot=1.0, r_s=1.0)  # built outside x64: float32 parameters
    x = np.array([[0.3, 0.1, 1e-3]])
    phi = FieldEvaluator(pot).potential_at(x)
    assert phi.dtype == np.float64
    assert phi[0] == pytest.approx(-1 / np.sqrt(1 + np.sum(x**2)), rel=1e-15)


@pytest.mark.parametrize(("bad", "error", "match"), [
    (lambda: FieldEvaluator("plummer"), TypeError, "deeppot potential"),
    (lambda: FieldEvaluator(dp.Plummer(), chunk_size=3), ValueError, "power of two"),
    (lambda: FieldEvaluator(dp.Plummer()).potential_at(np.ones((4, 2))), ValueError,
     r"shape \(\.\.\., 3\)"),
    (lambda: FieldEvaluator(dp.Plummer()).gradient_at(1.0), ValueError, r"shape \(\.\.\., 3\)"),
])
def test_bad_input_is_refused(bad, error, match):
    with pytest.raises(error, match=match):
        bad()


@pytest.mark.parametrize(("name", "expected"), [
    ("plummer", "spherical"), ("kepler", "spherical"), ("power_law_cutoff", "spherical"),
    ("miyamoto_nagai", "axisymmetric"), ("logarithmic", "axisymmetric"),
    ("spherical", "spherical"), ("axisymmetric", "axisymmetric"),
    ("axisymmetric_tilted", "none"), ("neural", "none"), ("composite", "none"),
])
def test_symmetry(name, expected):
    assert symmetry(ALL[name]()) == expected


@pytest.mark.parametrize("name", ["miyamoto_nagai", "long_murali_bar", "trained_spherical",
                                  "trained_axisymmetric", "trained_neural"])
def test_mirror_symmetry_in_z_is_claimed_exactly_when_it_holds(name, x64):
    """`mirror_symmetric_z` is true where Φ(x, y, −z) = Φ(x, y, z) and false where the
    potential is measurably odd in z (a learned network)."""
    pot = exported_model(name)
    x = np.random.default_rng(1).normal(size=(64, 3)) * [1.0, 1.0, 0.3]
    phi, mirrored = (np.asarray(pot.potential(p)) for p in (x, x * [1, 1, -1]))
    odd = np.max(np.abs(phi - mirrored)) / np.max(np.abs(phi))
    if mirror_symmetric_z(pot):
        assert odd < 1e-12
    else:
        assert odd > 1e-6


def test_composite_symmetry_is_its_lowest():
    assert symmetry(dp.Plummer() + dp.NFW(m_s=1.0, r_s=2.0)) == "spherical"
    assert symmetry(dp.Plummer() + dp.MiyamotoNagai(m_tot=1.0, a=1.0, b=0.1)) == "axisymmetric"
    assert mirror_symmetric_z(dp.Plummer() + dp.MiyamotoNagai(m_tot=1.0, a=1.0, b=0.1))
    assert not mirror_symmetric_z(dp.Plummer() + ALL["axisymmetric"]())


def test_dimensionless_models_have_no_unit_system():
    assert unit_system(dp.Plummer()) is None


def test_as_float64_casts_only_floating_arrays():
    pot = ALL["composite"]()
    with jax.enable_x64(True):
        cast = as_float64(pot)
        leaves = [a for a in jax.tree.leaves(cast) if isinstance(a, jax.Array)]
        assert leaves and all(a.dtype == jnp.float64 for a in leaves
                              if jnp.issubdtype(a.dtype, jnp.floating))
