"""Property tests for the analytic DFs (Plummer, Hernquist isotropic and Osipkov–Merritt)
and the chunked DF interface, parametrised over every analytic DF."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from deeppot.flows import HernquistDF, PlummerDF

# name -> (DF, escape speed at radius r)
DFS = {
    "plummer": (PlummerDF(r_max=None), lambda r: math.sqrt(2.0) * (1 + r * r) ** -0.25),
    "hernquist": (HernquistDF(), lambda r: math.sqrt(2.0 / (1 + r))),
    "hernquist_om": (HernquistDF(r_a=0.8), lambda r: math.sqrt(2.0 / (1 + r))),
    "hernquist_scaled": (
        HernquistDF(m_tot=2.5, r_s=0.4, r_a=1.5, r_max=30.0),
        lambda r: math.sqrt(2.0 * 2.5 / (r + 0.4)),
    ),
}


@st.composite
def bound_points(draw, name):
    """Phase-space points with r < 20 and |v| < 0.95 v_esc(r), inside the DF's support."""
    df, v_esc = DFS[name]
    r = draw(st.floats(0.01, 20.0))
    q = draw(st.floats(0.01, 0.95))
    ux = draw(st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda u: sum(a * a for a in u) > 0.01))
    uv = draw(st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda u: sum(a * a for a in u) > 0.01))
    ux, uv = np.array(ux), np.array(uv)
    x = r * ux / np.linalg.norm(ux)
    v = q * v_esc(r) * uv / np.linalg.norm(uv)
    return np.concatenate([x, v])


@pytest.mark.parametrize("name", sorted(DFS))
@given(data=st.data())
def test_score_is_gradient_of_log_prob(name, data):
    df = DFS[name][0]
    w = data.draw(bound_points(name))
    with jax.enable_x64(True):
        w = jnp.asarray(w, jnp.float64)
        lp = df._log_prob_chunk(w[None])[0]
        assume(bool(jnp.isfinite(lp)))  # Osipkov–Merritt: Q < 0 for some bound orbits
        auto = jax.grad(lambda p: df._log_prob_chunk(p[None])[0])(w)
        dx, dv = df.score(w)
        np.testing.assert_allclose(jnp.concatenate([dx, dv]), auto, rtol=1e-8,
                                   atol=1e-11 * float(jnp.abs(auto).max()))


@settings(max_examples=6)  # each new (n, chunk) pair compiles (HernquistDF: tests/unit)
@given(st.sampled_from([1, 5, 33]), st.sampled_from([1, 4, 64]))
def test_chunked_evaluation_matches_unchunked(n, chunk):
    df = DFS["plummer"][0]
    w = df.sample(jax.random.key(n), n)
    ref = df.log_prob(w)
    chunked = df.with_chunk_size(chunk)
    np.testing.assert_allclose(chunked.log_prob(w), ref, rtol=1e-6)
    np.testing.assert_allclose(chunked.score(w)[1], df.score(w)[1], rtol=1e-6)
    w2, lp2 = chunked.sample_and_log_prob(jax.random.key(0), n)
    assert w2.shape == (n, 6) and lp2.shape == (n,)
    assert bool(jnp.all(jnp.isfinite(lp2)))
    np.testing.assert_allclose(lp2, df.log_prob(w2), rtol=1e-5)
