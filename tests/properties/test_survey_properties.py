"""Hypothesis: Galactocentric → observables → Galactocentric is exact to 1e-10 (float64),
for any stars and any solar parameters, and agrees with astropy called directly."""

import astropy.coordinates as coord
import astropy.units as u
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import deeppot as dp
from deeppot import survey

N = 16
offsets = arrays(np.float64, (N, 3), elements=st.floats(-30.0, 30.0)).filter(
    lambda a: np.all(np.linalg.norm(a, axis=1) > 0.01)  # not at the Sun itself
)
velocities = arrays(np.float64, (N, 3), elements=st.floats(-500.0, 500.0))
suns = st.builds(
    survey.Sun,
    distance=st.floats(7.0, 9.0),
    z=st.floats(-30.0, 30.0),
    velocity=st.tuples(st.floats(-20, 20), st.floats(200, 260), st.floats(-10, 10)),
    roll=st.floats(-1.0, 1.0),
)


@given(offset=offsets, v=velocities, sun=suns)
def test_round_trip_and_astropy_agreement(offset, v, sun):
    x = sun.position() + offset  # stars anywhere within 30 kpc of the Sun
    cat = dp.PhaseSpaceCatalog(x, v, units="galactic")
    table = survey.to_observables(cat, sun=sun, errors=survey.GaiaLikeErrors())
    back = survey.from_observables(table, sun=sun)
    dx = np.linalg.norm(back.x - cat.x, axis=1) / np.linalg.norm(cat.x, axis=1)
    dv = np.linalg.norm(back.v - cat.v, axis=1) / np.maximum(np.linalg.norm(cat.v, axis=1), 1.0)
    assert dx.max() <= 1e-10 and dv.max() <= 1e-10, (dx.max(), dv.max())
    # astropy directly, ICRS → Galactocentric
    direct = coord.SkyCoord(
        ra=table["ra"].quantity, dec=table["dec"].quantity,
        distance=table["parallax"].quantity.to(u.kpc, u.parallax()),
        pm_ra_cosdec=table["pmra"].quantity, pm_dec=table["pmdec"].quantity,
        radial_velocity=table["radial_velocity"].quantity,
    ).transform_to(sun.frame())
    np.testing.assert_allclose(back.x, direct.cartesian.xyz.to_value(u.kpc).T, rtol=1e-14,
                               atol=1e-12)
    np.testing.assert_allclose(back.v, direct.velocity.d_xyz.to_value(u.km / u.s).T,
                               rtol=1e-14, atol=1e-12)
    # covariances are symmetric and positive semi-definite
    eig = np.linalg.eigvalsh(back.cov)
    assert np.all(eig >= -1e-9 * np.abs(eig).max(axis=1, keepdims=True))
