"""`Reflected` against exact truth.

The isotropic Plummer DF f(E) has every reflection of `REFLECTIONS`. Multiplying it by
1 + ε tanh c(w), with c a coordinate that a reflection g negates (c(g w) = −c(w)), gives a
normalised DF without that symmetry; its average over {1, g} is exactly f again, because
the tanh terms cancel. So `Reflected` must give back `PlummerDF` — log-density, scores and
samples — from the perturbed DF.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeppot.flows import (
    FFJORD,
    REFLECTIONS,
    AbstractDF,
    PlummerDF,
    Reflected,
    SphericalDF,
    autodiff_score,
    reflect,
)
from deeppot.modelfile import load_model, save_model
from deeppot.train import fit_df

EPS = 0.6


def _odd_coordinate(name, w):
    """A coordinate that the reflection `name` negates."""
    x, v = w[..., :3], w[..., 3:]
    if name == "radial_velocity":
        return jnp.sum(x * v, -1) / jnp.linalg.norm(x, axis=-1)  # v_r
    if name == "meridional_velocity":
        return jnp.sum(x[..., :2] * v[..., :2], -1) / jnp.linalg.norm(x[..., :2], axis=-1)
    if name == "mirror_z":
        return x[..., 2]
    return v[..., 0]  # time reversal


class _Perturbed(AbstractDF):
    """f(w) Π_k (1 + ε tanh c_k(w)): Plummer tilted along coordinates that the named
    reflections negate (each c_k unchanged by the other reflections, so the product's
    cross terms integrate to zero and it stays normalised)."""

    names: tuple[str, ...] = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(self, *names):
        self.names, self.chunk_size = names, 4096

    def _log_prob_chunk(self, w):
        tilt = sum(jnp.log1p(EPS * jnp.tanh(_odd_coordinate(n, w))) for n in self.names)
        return PlummerDF()._log_prob_chunk(w) + tilt

    def _score_chunk(self, w):
        return autodiff_score(self._log_prob_chunk, w)

    def _sample_chunk(self, key, m):
        # reflect a Plummer point by each g_k with probability (1 − ε tanh c_k)/2: f(g w) =
        # f(w) makes the result's density f(w) (1 + ε tanh c_k(w)) for each k
        k_w, *k_flips = jax.random.split(key, 1 + len(self.names))
        w, _ = PlummerDF()._sample_chunk(k_w, m)
        for name, k in zip(self.names, k_flips):
            c = _odd_coordinate(name, w)
            flip = jax.random.uniform(k, (m,), w.dtype) < (1 - EPS * jnp.tanh(c)) / 2
            w = jnp.where(flip[:, None], reflect(w, name), w)
        return w, self._log_prob_chunk(w)


@pytest.fixture
def points(x64):
    return PlummerDF().sample(jax.random.key(0), 256)


@pytest.mark.parametrize("name", sorted(REFLECTIONS))
def test_each_reflection_is_a_volume_preserving_involution(name, points):
    np.testing.assert_allclose(reflect(reflect(points, name), name), points, atol=1e-12)
    jac = jax.vmap(jax.jacfwd(lambda p: reflect(p, name)))(points[:16])
    np.testing.assert_allclose(np.abs(np.linalg.det(np.asarray(jac))), 1.0, rtol=1e-12)
    c = _odd_coordinate(name, points)
    np.testing.assert_allclose(_odd_coordinate(name, reflect(points, name)), -c, atol=1e-12)
    # and the Plummer DF has it
    np.testing.assert_allclose(PlummerDF().log_prob(reflect(points, name)),
                               PlummerDF().log_prob(points), atol=1e-12)


@pytest.mark.parametrize("name", sorted(REFLECTIONS))
def test_averaging_removes_an_odd_perturbation_exactly(name, points):
    perturbed = _Perturbed(name)
    assert float(jnp.abs(perturbed.log_prob(points) - PlummerDF().log_prob(points)).max()) > 0.1
    df = Reflected(perturbed, [name])
    np.testing.assert_allclose(df.log_prob(points), PlummerDF().log_prob(points), atol=1e-12)
    lp, sx, sv = df.log_prob_and_score(points)
    ex, ev = PlummerDF().score(points)
    np.testing.assert_allclose(lp, PlummerDF().log_prob(points), atol=1e-12)
    np.testing.assert_allclose(sx, ex, atol=1e-10)
    np.testing.assert_allclose(sv, ev, atol=1e-10)
    # the same through the fused sampling path, at the points it draws
    w, lp_s, sx_s, sv_s = df.sample_and_score(jax.random.key(1), 512)
    ex_s, ev_s = PlummerDF().score(w)
    np.testing.assert_allclose(lp_s, PlummerDF().log_prob(w), atol=1e-12)
    np.testing.assert_allclose(sx_s, ex_s, atol=1e-10)
    np.testing.assert_allclose(sv_s, ev_s, atol=1e-10)


def test_samples_have_the_symmetry_the_inner_lacks():
    """Mean tanh v_r over 2^14 draws: ε E[tanh² v_r] > 0 for the perturbed DF, 0 once
    reflected."""
    n, name = 2**14, "radial_velocity"
    inner = _Perturbed(name)
    for df, nonzero in ((inner, True), (Reflected(inner, [name]), False)):
        t = np.tanh(np.asarray(_odd_coordinate(name, df.sample(jax.random.key(2), n))))
        mean, err = t.mean(), t.std() / math.sqrt(n)
        assert (abs(mean) > 10 * err) == nonzero, (name, nonzero, mean, err)


def test_two_reflections_average_over_four_elements(points):
    """Tilted along v_r and along z: averaging over one reflection leaves the other tilt;
    over the group of both (four elements) it gives back the Plummer DF."""
    both = ("radial_velocity", "mirror_z")
    inner = _Perturbed(*both)
    truth = PlummerDF().log_prob(points)
    np.testing.assert_allclose(Reflected(inner, both).log_prob(points), truth, atol=1e-12)
    np.testing.assert_allclose(jnp.concatenate(Reflected(inner, both).score(points), -1),
                               jnp.concatenate(PlummerDF().score(points), -1), atol=1e-10)
    one = Reflected(inner, both[:1]).log_prob(points)
    np.testing.assert_allclose(one, truth + jnp.log1p(EPS * jnp.tanh(points[:, 2])),
                               atol=1e-12)


def test_trains_its_inner_flow_and_round_trips_a_model_file(tmp_path):
    stars = PlummerDF(r_max=10.0).sample(jax.random.key(4), 1024)
    inner = SphericalDF(FFJORD(jax.random.key(5), dim=3, n_blocks=1, width=4, depth=1))
    df = fit_df(Reflected(inner, "radial_velocity"), stars, key=jax.random.key(6),
                max_steps=3, batch_size=32, progress=False)
    assert df.objectives == inner.objectives
    assert not bool(jnp.allclose(df.inner.inner.scale, inner.inner.scale))  # standardised
    save_model(tmp_path / "df.eqx", df)
    back, _ = load_model(tmp_path / "df.eqx")
    assert isinstance(back, Reflected) and back.reflections == ("radial_velocity",)
    np.testing.assert_allclose(back.log_prob(stars[:64]), df.log_prob(stars[:64]), rtol=1e-6)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="reflections must be from"):
        Reflected(PlummerDF(), ["radial"])
    with pytest.raises(ValueError, match="repeat"):
        Reflected(PlummerDF(), ["mirror_z", "mirror_z"])
    with pytest.raises(ValueError, match="at least one"):
        Reflected(PlummerDF(), [])
    with pytest.raises(TypeError, match="wraps a deeppot DF"):
        Reflected(object(), ["mirror_z"])
    with pytest.raises(ValueError, match="reflection must be one of"):
        reflect(jnp.zeros((1, 6)), "spin")
    with pytest.raises(TypeError, match="not trainable"):
        Reflected(PlummerDF(), ["mirror_z"]).standardise(jnp.ones((4, 6)))
