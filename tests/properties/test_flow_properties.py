"""Property tests for the analytic Plummer DF and the chunked DF interface."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from deeppot.flows import PlummerDF

_DF = PlummerDF(r_max=None)


@st.composite
def bound_points(draw):
    """Bound phase-space points: r < 20, |v| < 0.95 v_esc(r)."""
    r = draw(st.floats(0.01, 20.0))
    q = draw(st.floats(0.01, 0.95))
    ux = draw(st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda u: sum(a * a for a in u) > 0.01))
    uv = draw(st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda u: sum(a * a for a in u) > 0.01))
    ux, uv = np.array(ux), np.array(uv)
    x = r * ux / np.linalg.norm(ux)
    v = q * np.sqrt(2.0) * (1 + r * r) ** -0.25 * uv / np.linalg.norm(uv)
    return np.concatenate([x, v])


@given(bound_points())
def test_plummer_score_is_gradient_of_log_prob(w):
    with jax.enable_x64(True):
        w = jnp.asarray(w, jnp.float64)
        auto = jax.grad(lambda p: _DF._log_prob_chunk(p[None])[0])(w)
        dx, dv = _DF.score(w)
        np.testing.assert_allclose(jnp.concatenate([dx, dv]), auto, rtol=1e-9, atol=1e-12)


@settings(max_examples=6)  # each new (n, chunk) pair compiles
@given(st.sampled_from([1, 5, 33]), st.sampled_from([1, 4, 64]))
def test_chunked_evaluation_matches_unchunked(n, chunk):
    w = _DF.sample(jax.random.key(n), n)
    ref = _DF.log_prob(w)
    chunked = _DF.with_chunk_size(chunk)
    np.testing.assert_allclose(chunked.log_prob(w), ref, rtol=1e-6)
    np.testing.assert_allclose(chunked.score(w)[1], _DF.score(w)[1], rtol=1e-6)
    w2, lp2 = chunked.sample_and_log_prob(jax.random.key(0), n)
    assert w2.shape == (n, 6) and lp2.shape == (n,)
    np.testing.assert_allclose(lp2, _DF.log_prob(w2), rtol=1e-5)
