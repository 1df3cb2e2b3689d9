"""Physical units at the edges: unit systems, quantity parameters and quantity results."""

import pickle

import astropy.constants as const
import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.units import UnitSystem, dimensionless, galactic, get_units, resolve_units


def test_galactic_G_is_astropys():
    expected = const.G.to_value(u.kpc * (u.km / u.s) ** 2 / u.Msun)
    assert galactic.G == expected
    assert galactic.length == u.kpc and galactic.velocity == u.km / u.s
    assert galactic.mass == u.Msun and galactic.time == u.Myr
    assert galactic.unit("time") == u.kpc / (u.km / u.s)
    assert galactic.quantity(1.0, "time").unit == u.Myr
    np.testing.assert_allclose(galactic.quantity(1.0, "time").value, 977.792, rtol=1e-6)


def test_unit_system_description_round_trips():
    custom = UnitSystem(u.pc, u.Unit(100 * u.km / u.s), 1e10 * u.Msun, name="custom")
    for system in (galactic, dimensionless, UnitSystem.dimensionless(2.5), custom):
        assert UnitSystem.from_dict(system.to_dict()) == system
        assert pickle.loads(pickle.dumps(system)) == system
        assert hash(get_units(system.to_dict())) == hash(system)
    np.testing.assert_allclose(
        custom.G, const.G.to_value(u.pc * (100 * u.km / u.s) ** 2 / (1e10 * u.Msun)), rtol=1e-14
    )
    assert custom != galactic and not custom.same_units(galactic)
    assert dimensionless.same_units(UnitSystem.dimensionless(3.0))
    assert dimensionless != UnitSystem.dimensionless(3.0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((u.s, u.km / u.s, u.Msun), "length unit must be a length"),
        ((u.kpc, u.kpc, u.Msun), "velocity unit must be a velocity"),
        ((u.kpc, u.km / u.s, u.s), "mass unit must be a mass"),
        (("parsnip", u.km / u.s, u.Msun), "not a unit"),
    ],
)
def test_bad_unit_systems(args, match):
    with pytest.raises(ValueError, match=match):
        UnitSystem(*args)


def test_get_units_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown unit system 'furlongs'"):
        get_units("furlongs")
    with pytest.raises(TypeError):
        get_units(3)


def test_resolve_units_rules():
    assert resolve_units(None, None, 1.0) == dimensionless
    assert resolve_units(None, 2.0, 1.0) == UnitSystem.dimensionless(2.0)
    assert resolve_units(None, None, 1.0, 2 * u.kpc) == galactic
    assert resolve_units("galactic", None, 1.0) == galactic
    with pytest.raises(ValueError, match="G is fixed by the unit system"):
        resolve_units("galactic", 1.0)
    with pytest.raises(ValueError, match="G is fixed by the unit system"):
        resolve_units(None, 1.0, 3 * u.kpc)


def test_quantities_are_converted_not_stripped():
    """The issue's regression: 1e10 Msun was read as 1e10 model units."""
    pot = dp.Plummer(m_tot=1e10 * u.Msun, r_s=1 * u.kpc)
    assert pot.units == galactic
    np.testing.assert_allclose(pot.m_tot, 1e10, rtol=1e-6)
    # other units of the same dimension convert
    other = dp.Plummer(m_tot=(1e10 * u.Msun).to(u.kg), r_s=1000 * u.pc)
    np.testing.assert_allclose(other.m_tot, 1e10, rtol=1e-6)
    np.testing.assert_allclose(other.r_s, 1.0, rtol=1e-6)
    # bare numbers next to quantities are in the model's (galactic) units
    mixed = dp.Plummer(m_tot=1e10 * u.Msun, r_s=1.0)
    np.testing.assert_allclose(mixed.r_s, 1.0)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: dp.Plummer(m_tot=1 * u.kpc, r_s=1 * u.kpc), "'m_tot' must be a mass"),
        (lambda: dp.MiyamotoNagai(1e10 * u.Msun, a=3 * u.km / u.s), "'a' must be a length"),
        (lambda: dp.Logarithmic(v_c=200 * u.kpc), "'v_c' must be a velocity"),
        (lambda: dp.Logarithmic(v_c=200 * u.km / u.s, q=0.9 * u.kpc), "'q' must be a dimen"),
        (lambda: dp.Plummer(m_tot=1 * u.Msun, units="dimensionless"), "model is dimensionless"),
        (lambda: dp.Plummer(m_tot=1 * u.Msun, G=1.0), "G is fixed"),
        (lambda: dp.NeuralPotential(key=jax.random.key(0), width=4, depth=1,
                                    input_scale=2 * u.Msun), "'input_scale' must be a length"),
    ],
)
def test_wrong_quantities_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_quantity_axis_is_refused():
    with pytest.raises(TypeError, match="'axis' has no physical dimension"):
        dp.Axisymmetric.mlp(key=jax.random.key(0), width=4, depth=1, axis=[0, 0, 1] * u.kpc)


def test_issue_example_circular_velocity_matches_gala():
    gala_potential = pytest.importorskip("gala.potential")
    gala_units = pytest.importorskip("gala.units")
    with jax.enable_x64(True):
        mw = dp.MiyamotoNagai(m_tot=6e10 * u.Msun, a=3 * u.kpc, b=0.28 * u.kpc)
        v = mw.circular_velocity([8.0, 0.0, 0.0] * u.kpc)
        g = gala_potential.MiyamotoNagaiPotential(m=6e10, a=3, b=0.28, units=gala_units.galactic)
        assert v.unit == u.km / u.s
        np.testing.assert_allclose(v.value, g.circular_velocity([8, 0, 0] * u.kpc).to_value(
            u.km / u.s), rtol=1e-10)
        x = np.array([[8.0, 0.5, 0.3], [2.0, -1.0, 1.0]]) * u.kpc
        np.testing.assert_allclose(mw.potential(x).to_value(u.km**2 / u.s**2),
                                   g.energy(x.T).to_value(u.km**2 / u.s**2), rtol=1e-10)
        np.testing.assert_allclose(mw.acceleration(x).to_value(u.km / u.s / u.Myr),
                                   g.acceleration(x.T).T.to_value(u.km / u.s / u.Myr), rtol=1e-10)
        np.testing.assert_allclose(mw.density(x).to_value(u.Msun / u.pc**3),
                                   g.density(x.T).to_value(u.Msun / u.pc**3), rtol=1e-10)


def test_results_are_quantities_only_when_asked():
    mw = dp.MiyamotoNagai(m_tot=6e10 * u.Msun, a=3 * u.kpc, b=0.28 * u.kpc)
    x = jnp.array([[8.0, 0.0, 0.1]])
    assert not isinstance(mw.potential(x), u.Quantity)
    units = {"potential": u.km**2 / u.s**2, "gradient": u.km**2 / u.s**2 / u.kpc,
             "acceleration": u.km**2 / u.s**2 / u.kpc, "hessian": u.km**2 / u.s**2 / u.kpc**2,
             "laplacian": u.km**2 / u.s**2 / u.kpc**2, "density": u.Msun / u.kpc**3,
             "circular_velocity": u.km / u.s}
    for verb, unit in units.items():
        plain = getattr(mw, verb)(x)
        q = getattr(mw, verb)(x * u.kpc)
        assert q.unit == unit, verb
        np.testing.assert_array_equal(q.value, np.asarray(plain))
        # positions in pc give the same physical answer
        np.testing.assert_allclose(getattr(mw, verb)((x * u.kpc).to(u.pc)).value, q.value,
                                   rtol=1e-6)
    assert mw.units.quantity(mw.a, "length") == 3 * u.kpc


def test_quantity_positions_need_physical_units():
    with pytest.raises(ValueError, match="model is dimensionless"):
        dp.Plummer().potential([1.0, 0, 0] * u.kpc)
    with pytest.raises(ValueError, match="positions must be a length"):
        dp.Plummer(units="galactic").potential([1.0, 0, 0] * u.km / u.s)
    with pytest.raises(TypeError, match="positions are an astropy Quantity"):
        dp.value_grad_laplacian(dp.Plummer(units="galactic"), [1.0, 0, 0] * u.kpc)


def test_dimensionless_models_are_unchanged(x64):
    """Plain numbers are model units with G = 1, as before units existed."""
    pot = dp.MiyamotoNagai(1.1, 0.9, 0.15)
    assert pot.units == dimensionless and pot.G == 1.0
    x = np.array([[0.5, -0.2, 0.1], [1.5, 0.3, -0.4]])
    R2, z = x[:, 0] ** 2 + x[:, 1] ** 2, x[:, 2]
    phi = -1.1 / np.sqrt(R2 + (0.9 + np.sqrt(z**2 + 0.15**2)) ** 2)  # G = 1
    np.testing.assert_allclose(pot.potential(x), phi, rtol=1e-14)
    assert dp.MiyamotoNagai(1.1, 0.9, 0.15, G=2.0).G == 2.0


def test_composites_refuse_mixed_unit_systems():
    disk = dp.MiyamotoNagai(6e10 * u.Msun, 3 * u.kpc, 0.28 * u.kpc)
    halo = dp.NFW(m_s=8e11 * u.Msun, r_s=16 * u.kpc)
    both = disk + halo
    assert both.units == galactic
    np.testing.assert_allclose(both.circular_velocity([8.0, 0, 0] * u.kpc).value,
                               np.hypot(disk.circular_velocity([8.0, 0, 0] * u.kpc).value,
                                        halo.circular_velocity([8.0, 0, 0] * u.kpc).value),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="must share one unit system"):
        disk + dp.NFW(m_s=1.0, r_s=2.0)


def test_frames_carry_units():
    omega = [0.0, 0.0, 30.0] * u.km / u.s / u.kpc
    frame = dp.RotatingFrame(omega=omega)
    assert frame.units == galactic
    np.testing.assert_allclose(frame.omega, [0, 0, 30.0])
    np.testing.assert_allclose(dp.RotatingFrame(omega=omega.to(1 / u.Myr)).omega, [0, 0, 30.0],
                               rtol=1e-6)
    disk = dp.MiyamotoNagai(6e10 * u.Msun, 3 * u.kpc, 0.28 * u.kpc)
    dp.PotentialModel(disk, frame)
    dp.PotentialModel(disk)  # the inertial frame has no units
    with pytest.raises(ValueError, match="the frame is in"):
        dp.PotentialModel(dp.MiyamotoNagai(), frame)
    with pytest.raises(ValueError, match="'u0' must be a velocity"):
        dp.MovingFrame(u0=[1, 2, 3] * u.kpc)


def test_neural_potentials_take_a_length_scale():
    pot = dp.NeuralPotential(key=jax.random.key(0), width=4, depth=1, input_scale=500 * u.pc)
    assert pot.units == galactic and pot.input_scale == pytest.approx(0.5)
    sph = dp.Spherical.mlp(key=jax.random.key(1), width=4, depth=1, units="galactic")
    assert sph.units == galactic
    assert isinstance(sph.potential([1.0, 2.0, 3.0] * u.kpc), u.Quantity)


def test_truth_description_keeps_units():
    pot = dp.MiyamotoNagai(6e10 * u.Msun, 3 * u.kpc, 0.28 * u.kpc)
    desc = dp.mocks.describe_potential(pot)
    assert desc["units"]["name"] == "galactic"
    back = dp.mocks.truth_potential(desc)
    assert back.units == galactic
    np.testing.assert_allclose(back.a, 3.0, rtol=1e-6)
