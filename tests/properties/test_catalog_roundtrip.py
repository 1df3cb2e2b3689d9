"""Hypothesis: any valid catalogue survives save/load exactly, in every format."""

import tempfile
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
from hypothesis import given
from hypothesis.extra.numpy import arrays

from deeppot.catalog import PhaseSpaceCatalog
from deeppot.units import galactic

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def catalogs(draw):
    n = draw(st.integers(1, 12))
    x = draw(arrays(np.float64, (n, 3), elements=finite))
    v = draw(arrays(np.float64, (n, 3), elements=finite))
    weights = draw(
        st.none() | arrays(np.float64, (n,), elements=st.floats(0, 1e300, allow_nan=False))
    )
    meta = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "units"), json_values,
                                max_size=4))
    cov = None
    if draw(st.booleans()):
        a = draw(arrays(np.float64, (n, 6, 6), elements=st.floats(-1e100, 1e100)))
        cov = a @ np.swapaxes(a, 1, 2)  # symmetric, non-negative diagonal
    units = draw(st.sampled_from([None, "galactic"]))
    truth = {}
    for name in draw(st.sets(st.sampled_from(["acceleration", "potential"]))):
        truth[name] = draw(arrays(np.float64, (n, 3) if name == "acceleration" else (n,),
                                  elements=finite))
    return PhaseSpaceCatalog(x, v, weights, meta, cov=cov, units=units, truth=truth)


@given(cat=catalogs(), ext=st.sampled_from([".npz", ".h5", ".csv"]))
def test_round_trip(cat, ext):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"cat{ext}"
        cat.save(path)
        back = PhaseSpaceCatalog.load(path, check_fit=False)
    assert back == cat
    assert back.meta == cat.meta
    assert back.units == cat.units
    np.testing.assert_array_equal(back.w, cat.w)
    if cat.cov is not None:
        np.testing.assert_array_equal(back.cov, cat.cov)
    assert back.truth.keys() == cat.truth.keys()
    for name, arr in cat.truth.items():  # the per-star truth a snapshot carries
        np.testing.assert_array_equal(back.truth[name], arr)
    assert cat.units in (galactic, back.units)
