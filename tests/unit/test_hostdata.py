"""Score files and host data: streamed scores equal in-memory ones; fits from a file equal
fits from memory; the in-memory/out-of-core choice."""

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.hostdata import AbstractHostData, HostBatches, batch_indices, fits_in_memory
from deeppot.train import fit
from tests.dfs import GaussianDF

FIELDS = ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f")


def _same(a, b):
    return all(np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)))
               for f in FIELDS)


def _scores(path, df=None):
    df = GaussianDF() if df is None else df
    on_disk = dp.sample_scores(df, jax.random.key(3), 1000, chunk_size=300, path=path)
    return dp.sample_scores(df, jax.random.key(3), 1000, chunk_size=300), on_disk


@pytest.fixture(scope="module")
def gaussian_scores(tmp_path_factory):
    return _scores(tmp_path_factory.mktemp("scores") / "gaussian.h5")


def test_streamed_scores_equal_in_memory_ones(gaussian_scores, tmp_path):
    in_memory, on_disk = gaussian_scores
    assert isinstance(on_disk, dp.ScoreFile) and len(on_disk) == 1000
    assert on_disk.nbytes == 1000 * 13 * 4
    assert not list(on_disk.path.parent.glob("*.tmp"))  # renamed into place
    assert _same(on_disk.load(), in_memory)
    assert _same(dp.ScoreSample.load(on_disk.path), in_memory)
    rows = np.array([7, 3, 3, 999, 0, 7])  # any order, repeats
    batch = on_disk.take(rows)
    assert isinstance(batch, dp.ScoreSample) and isinstance(batch.x, np.ndarray)
    assert _same(batch, in_memory[rows])
    # ScoreSample.save writes the same format
    in_memory.save(tmp_path / "again.hdf5", meta={"n": 1000})
    again = dp.ScoreFile(tmp_path / "again.hdf5")
    assert again.meta == {"n": 1000} and _same(again.load(), in_memory)


def test_a_score_file_slices_and_saves_like_a_sample(gaussian_scores, tmp_path):
    in_memory, _ = gaussian_scores
    path = tmp_path / "s.h5"
    in_memory.save(path, meta={"a": 1})
    on_disk = dp.ScoreFile(path)
    assert _same(on_disk[290:310], in_memory[290:310]) and len(on_disk[995:2000]) == 5
    with pytest.raises(TypeError, match="take"):
        on_disk[3]
    on_disk.save(tmp_path / "copy.hdf5", meta={"b": 2})  # a copy, its own meta
    copy = dp.ScoreFile(tmp_path / "copy.hdf5")
    assert copy.meta == {"b": 2} and _same(copy.load(), in_memory)
    assert dp.ScoreFile(path).meta == {"a": 1}
    on_disk.save(path, meta={"c": 3})  # its own file: the rows stay, the meta is new
    assert on_disk.meta == dp.ScoreFile(path).meta == {"c": 3}
    assert _same(on_disk.load(), in_memory)
    on_disk.save(tmp_path / "s.npz")
    assert _same(dp.ScoreSample.load(tmp_path / "s.npz"), in_memory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.hdf5", "s.h5", "s.npz"]


def test_load_scores_chooses_memory_or_file(gaussian_scores):
    _, on_disk = gaussian_scores
    assert isinstance(dp.load_scores(on_disk.path), dp.ScoreSample)  # 52 kB fits
    assert isinstance(dp.load_scores(on_disk.path, in_memory=False), dp.ScoreFile)
    assert fits_in_memory(10**6) and not fits_in_memory(2**62)


def test_score_file_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.h5 or \.hdf5"):
        dp.sample_scores(dp.flows.PlummerDF(), jax.random.key(0), 10, path=tmp_path / "s.npz")
    with pytest.raises(ValueError, match="cannot read score file"):
        dp.ScoreFile(tmp_path / "missing.h5")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="not a deeppot score file"):
        dp.ScoreFile(tmp_path / "other.h5")


def test_failed_stream_leaves_no_file(tmp_path):
    @typing.final
    class _Broken(dp.flows.AbstractDF):
        chunk_size: int = eqx.field(static=True, default=8)

        def _log_prob_chunk(self, w):
            return jnp.zeros(w.shape[0])

        def _score_chunk(self, w):
            return w

        def _sample_chunk(self, key, m):
            if m < 8:  # the short last chunk fails
                raise RuntimeError("broken")
            return jnp.zeros((m, 6)), jnp.zeros(m)

    with pytest.raises(RuntimeError, match="broken"):
        dp.sample_scores(_Broken(), jax.random.key(0), 20, chunk_size=8,
                         path=tmp_path / "s.h5")
    assert list(tmp_path.iterdir()) == []


@typing.final
class _Arrays(AbstractHostData):
    """Host data over NumPy arrays (what an out-of-core store looks like to `fit`)."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = np.asarray(x), np.asarray(y), 0

    def __len__(self):
        return len(self.x)

    @property
    def nbytes(self):
        return self.x.nbytes + self.y.nbytes

    def take(self, rows):
        self.reads += 1
        return self.x[rows], self.y[rows]


@typing.final
class _Line(eqx.Module):
    a: jax.Array
    b: jax.Array

    def __call__(self, x):
        return self.a * x + self.b


def _mse(model, batch, key):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


@pytest.mark.parametrize(("keep_best", "weighted"), [(False, False), (True, True)])
def test_fit_from_host_data_equals_in_memory(keep_best, weighted):
    x = np.asarray(jax.random.normal(jax.random.key(0), (300,)))
    y = 2.0 * x - 1.0
    weights = 0.5 + np.arange(300) % 4 if weighted else None  # rows drawn ∝ weight
    kw = dict(key=jax.random.key(1), max_steps=24, batch_size=32, learning_rate=0.05,
              validate_every=3, ema_decay=0.9, keep_best=keep_best, weights=weights,
              progress=False)
    source = _Arrays(x, y)
    streamed, h_host = fit(_Line(jnp.array(0.0), jnp.array(0.0)), _mse, source, **kw)
    in_memory, h_mem = fit(_Line(jnp.array(0.0), jnp.array(0.0)), _mse, (x, y), **kw)
    assert source.reads >= 24
    # the same rows in the same order; only XLA's fusion of the gather into the loss
    # differs (the host batch arrives gathered), so sums may round differently
    np.testing.assert_allclose([streamed.a, streamed.b], [in_memory.a, in_memory.b],
                               rtol=1e-6)
    np.testing.assert_allclose(h_host.train_loss, h_mem.train_loss, rtol=1e-6)
    np.testing.assert_allclose(h_host.val_loss, h_mem.val_loss, rtol=1e-6)
    assert h_host.val_step == h_mem.val_step and h_host.best_step == h_mem.best_step


def test_host_batches_read_the_rows_of_batch_indices():
    source = _Arrays(np.arange(100.0), np.zeros(100))
    rows = np.arange(100)[::-2]  # some split of the rows
    batches = HostBatches(source, rows, jax.random.key(4), 8, lambda t: t)
    for step in (0, 1, 5, 2):  # in and out of order: read-ahead is only a hint
        expected = rows[np.asarray(batch_indices(jax.random.key(4), step, 8, len(rows)))]
        np.testing.assert_array_equal(batches(step)[0], expected.astype(float))
    batches.close()
    whole = HostBatches(source, rows[:5], jax.random.key(4), 8, lambda t: t, whole=True)
    np.testing.assert_array_equal(whole(3)[0], rows[:5].astype(float))
    whole.close()


@pytest.mark.slow
def test_fit_potential_from_score_file_equals_in_memory(tmp_path):
    in_memory, on_disk = _scores(tmp_path / "plummer.h5", dp.flows.PlummerDF(r_max=10.0))
    model = dp.PotentialModel(dp.Plummer(m_tot=2.0, r_s=0.5))
    kw = dict(key=jax.random.key(9), max_steps=20, batch_size=64, learning_rate=1e-2,
              warmup_steps=5, progress=False)
    a = dp.fit_potential(model, in_memory, **kw)
    b = dp.fit_potential(model, on_disk, **kw)
    assert float(a.potential.m_tot) != 2.0
    np.testing.assert_allclose([a.potential.m_tot, a.potential.r_s],
                               [b.potential.m_tot, b.potential.r_s], rtol=1e-6)
