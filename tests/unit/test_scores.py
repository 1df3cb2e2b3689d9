"""ScoreSample validation, save/load, and sample_scores chunking against exact scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp


def test_sample_scores_matches_the_exact_df_in_any_chunking(x64):
    df = dp.flows.PlummerDF(r_max=10.0)
    s = dp.sample_scores(df, jax.random.key(3), 1000, chunk_size=300)
    assert len(s) == 1000 and s.x.shape == (1000, 3)
    w = jnp.concatenate([s.x, s.v], axis=-1)
    dx, dv = df.score(w)
    np.testing.assert_allclose(s.dlnf_dx, dx, rtol=1e-12)
    np.testing.assert_allclose(s.dlnf_dv, dv, rtol=1e-12)
    np.testing.assert_allclose(s.ln_f, df.log_prob(w), rtol=1e-12)
    assert np.all(np.linalg.norm(s.x, axis=-1) <= 10.0)


def test_score_sample_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(5, 3)) for _ in range(4)]
    s = dp.ScoreSample(*arrays, ln_f=rng.normal(size=5))
    s.save(tmp_path / "s.npz")
    back = dp.ScoreSample.load(tmp_path / "s.npz")
    for name in ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f"):
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
    assert len(s[1:3]) == 2
    with pytest.raises(ValueError, match=r"dlnf_dv must have shape \(n, 3\)"):
        dp.ScoreSample(*arrays[:3], rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="v has 4 rows"):
        dp.ScoreSample(arrays[0], arrays[1][:4], *arrays[2:])
    with pytest.raises(ValueError, match=".npz"):
        s.save(tmp_path / "s.csv")
    np.savez(tmp_path / "bad.npz", x=arrays[0])
    with pytest.raises(ValueError, match="missing"):
        dp.ScoreSample.load(tmp_path / "bad.npz")
