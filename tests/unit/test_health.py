"""The potential-fit health check (issue 27): dead fits fail, healthy ones pass, exactly."""

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.health import FORCE_TOLERANCE


@pytest.fixture(scope="module")
def scores():
    """Exact scores of the Plummer sphere (G = M = b = 1), the truth `dp.Plummer()`."""
    return dp.sample_scores(dp.flows.PlummerDF(), jax.random.key(0), 4096)


@typing.final
class _Toy(dp.AbstractPotential):
    """Φ = s · (−1/√(r² + 1)) + g · x: s = 1 is the true Plummer sphere, s = −1 its mirror
    image (density −ρ at every point), s = 0 a uniform field −g (no force for g = 0)."""

    s: float
    g: jax.Array
    units: dp.UnitSystem = eqx.field(static=True)

    def __init__(self, s, g=(0.0, 0.0, 0.0)):
        self.s, self.g = s, jnp.asarray(g, float)
        self.units = dp.units.get_units("dimensionless")

    def _potential(self, x):
        return self._value_grad_laplacian(x)[0]

    def _value_grad_laplacian(self, x):
        q = jnp.sum(x * x) + 1.0
        phi = -self.s / jnp.sqrt(q) + jnp.dot(self.g, x)
        return phi, self.s * x / q**1.5 + self.g, 3 * self.s / q**2.5


@typing.final
class _Kepler(dp.AbstractPotential):
    """Φ = −1/r in its plain closed form: NaN force and density at r = 0."""

    units: dp.UnitSystem = eqx.field(static=True)

    def __init__(self):
        self.units = dp.units.get_units("dimensionless")

    def _potential(self, x):
        return -1 / jnp.sqrt(jnp.sum(x * x))

    def _value_grad_laplacian(self, x):
        r = jnp.sqrt(jnp.sum(x * x))
        return -1 / r, x / r**3, 0 * x[0] / r**3


def _check(model, scores, **kwargs):
    return dp.check_potential_fit(model, scores, **kwargs)


def test_the_exact_potential_passes_and_its_diagnostics_are_the_truths(scores):
    check = _check(dp.Plummer(), scores)
    assert check["n_points"] == len(scores)
    assert check["residual_ratio"] < 1e-5 and check["median_residual_zero"] > 0.1
    assert check["negative_density_fraction"] == 0
    # the force the scores call for is that of the truth along ∂ln f/∂v ∝ v: |F · v̂|
    x, v = np.asarray(scores.x), np.asarray(scores.v)
    f_true = -x / (np.sum(x * x, 1, keepdims=True) + 1) ** 1.5
    along_v = np.abs(np.sum(f_true * v, 1)) / np.linalg.norm(v, axis=1)
    assert check["force_scale"] == pytest.approx(np.median(along_v), rel=1e-4)
    assert check["rms_force"] == pytest.approx(np.sqrt(np.mean(np.sum(f_true**2, 1))), rel=1e-5)
    assert check == pytest.approx(_check(_Toy(1.0), scores), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mass", [0.3, 1.6])
def test_a_wrong_mass_beats_no_potential_by_exactly_its_error(scores, mass):
    """With Φ = m Φ_true the residual is (1 − m) times that of Φ = 0 at every point."""
    check = _check(dp.Plummer(m_tot=mass), scores)
    assert check["residual_ratio"] == pytest.approx(abs(1 - mass), rel=1e-4)


@pytest.mark.parametrize("model", [
    dp.Plummer(r_s=2.0),  # wrong scale
    dp.Plummer(r_s=0.5),
    dp.PotentialModel(dp.Plummer(), dp.MovingFrame(u0=[0.2, 0.0, 0.0])),  # wrong frame
], ids=["r_s=2", "r_s=0.5", "moving"])
def test_an_exact_family_with_a_wrong_scale_or_frame_still_passes(scores, model):
    assert 0.2 < _check(model, scores)["residual_ratio"] < 0.8


def test_a_rotating_frame_leaves_an_isotropic_sphere_stationary(scores):
    model = dp.PotentialModel(dp.Plummer(), dp.RotatingFrame(omega=[0.0, 0.0, 0.3]))
    assert _check(model, scores)["residual_ratio"] < 1e-5


@pytest.mark.parametrize("s", [0.0, 1e-5])
def test_no_force_fails(scores, s):
    with pytest.raises(dp.FitFailed, match=r"^the fitted potential has no force: rms \|∇Φ\| "
                                           r"= [0-9.e-]+ at the score points.*train longer$"):
        _check(_Toy(s), scores)


def test_a_small_force_that_helps_is_not_called_none(scores):
    s = 30 * FORCE_TOLERANCE  # far above the tolerance, still 3% of the truth
    assert _check(_Toy(s), scores)["residual_ratio"] == pytest.approx(1 - s, rel=1e-4)


def test_a_uniform_field_fails(scores):
    with pytest.raises(dp.FitFailed, match=r"same force at every score point \(a uniform "
                                           r"field, ∇Φ = \[0.1, -0.2, 0.05\]\)"):
        _check(_Toy(0.0, g=[0.1, -0.2, 0.05]), scores)


def test_a_negative_density_fails(scores):
    with pytest.raises(dp.FitFailed, match=r"negative density ∇²Φ/4πG at 100.0% of the score"):
        _check(_Toy(-1.0), scores)


@pytest.mark.parametrize("mass", [2.5, 4.0])
def test_a_residual_no_better_than_no_potential_fails(scores, mass):
    with pytest.raises(dp.FitFailed, match="no better than Φ = 0") as info:
        _check(dp.Plummer(m_tot=mass), scores, advice="lower [fit] learning_rate")
    assert isinstance(info.value, dp.TrainingError) and "\n" not in str(info.value)
    assert str(info.value).endswith("the fit failed; lower [fit] learning_rate")


def test_non_finite_forces_fail_and_are_counted(scores):
    with pytest.raises(dp.FitFailed, match=f"non-finite force or density at {len(scores)} of"):
        _check(_Toy(jnp.nan), scores)
    at_origin = scores[:100]
    at_origin = eqx.tree_at(lambda s: s.x, at_origin, at_origin.x.at[7].set(0.0))
    with pytest.raises(dp.FitFailed, match="non-finite force or density at 1 of 100 score"):
        _check(_Kepler(), at_origin)  # −1/r has no force at r = 0


def test_chunks_and_score_files_give_the_same_diagnostics(scores, tmp_path):
    model = dp.Plummer(r_s=1.5)
    whole = _check(model, scores, chunk_size=len(scores))
    assert _check(model, scores, chunk_size=1000) == pytest.approx(whole, rel=1e-6)
    scores.save(tmp_path / "s.h5")
    assert _check(model, dp.ScoreFile(tmp_path / "s.h5"), chunk_size=999) == \
        pytest.approx(whole, rel=1e-6)


def test_bad_arguments_are_named(scores):
    with pytest.raises(TypeError, match="checks a PotentialModel; got str"):
        _check("plummer", scores)
    with pytest.raises(TypeError, match="ScoreFile or VelocityScoreSample; got ndarray"):
        _check(dp.Plummer(), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        _check(dp.Plummer(), scores, chunk_size=0)
