"""Loss terms on exact Plummer scores, composition, and a user-written term."""

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.potentials import AbstractPotential
from deeppot.units import UnitSystem, dimensionless


@pytest.fixture
def plummer_scores(x64):
    return dp.sample_scores(dp.flows.PlummerDF(r_max=10.0), jax.random.key(0), 4096)


def test_true_potential_is_stationary_and_perturbed_is_not(plummer_scores):
    term = dp.terms.Stationarity(alpha=1.0)
    truth = dp.PotentialModel(dp.Plummer(1.0, 1.0))
    assert float(term(truth, plummer_scores)) < 1e-13
    for wrong in (dp.Plummer(1.05, 1.0), dp.Plummer(1.0, 0.95), dp.Hernquist(1.0, 1.0)):
        assert float(term(dp.PotentialModel(wrong), plummer_scores)) > 1e-3


def test_f_and_ln_f_forms_agree_at_the_truth(plummer_scores):
    truth = dp.PotentialModel(dp.Plummer(1.0, 1.0))
    lnf = dp.terms.Stationarity(form="ln_f")
    f = dp.terms.Stationarity(form="f")
    fields = dp.terms.Fields(*truth.value_grad_laplacian(plummer_scores.x))
    r_ln = lnf.residual(truth, plummer_scores, fields)
    r_f = f.residual(truth, plummer_scores, fields)
    np.testing.assert_allclose(r_f, r_ln * jnp.exp(plummer_scores.ln_f), rtol=1e-12)
    assert float(f(truth, plummer_scores)) < 1e-13
    # Away from the truth the two forms weight phase space differently.
    wrong = dp.PotentialModel(dp.Plummer(1.2, 1.0))
    assert float(f(wrong, plummer_scores)) != pytest.approx(float(lnf(wrong, plummer_scores)))


@typing.final
class _Inverted(AbstractPotential):
    """Φ = −|x|², whose Laplacian is −6 everywhere (a negative density)."""

    units: UnitSystem = eqx.field(default=dimensionless, static=True)

    def _potential(self, x):
        return -jnp.sum(x * x)

    def _value_grad_laplacian(self, x):
        return -jnp.sum(x * x), -2 * x, jnp.asarray(-6.0, x.dtype)


def test_positive_density_penalises_negative_laplacians(plummer_scores):
    term = dp.terms.PositiveDensity(beta=2.0)
    assert float(term(dp.PotentialModel(dp.Plummer()), plummer_scores)) == 0.0
    np.testing.assert_allclose(term(dp.PotentialModel(_Inverted()), plummer_scores),
                               np.arcsinh(12.0), rtol=1e-12)


def test_l2_weights_is_the_global_mean_of_squared_weights(plummer_scores):
    nn = dp.NeuralPotential(key=jax.random.key(1), width=16, depth=2)
    term = dp.terms.L2Weights(l2=0.1)
    ws = nn.net.weights
    expected = 0.1 * sum(float(jnp.sum(w**2)) for w in ws) / sum(w.size for w in ws)
    np.testing.assert_allclose(term(dp.PotentialModel(nn), plummer_scores), expected, rtol=1e-12)
    assert float(term(dp.PotentialModel(dp.Plummer()), plummer_scores)) == 0.0


def test_symmetry_penalty_measures_the_free_form_part(plummer_scores):
    axi = dp.Axisymmetric.mlp(key=jax.random.key(2), width=8, depth=2)
    free = dp.NeuralPotential(key=jax.random.key(3), width=8, depth=2)
    term = dp.terms.SymmetryPenalty()
    model = dp.PotentialModel(axi + free)
    assert float(term(model, plummer_scores)) > 0
    silent = eqx.tree_at(lambda p: p.net.weights[-1], free, jnp.zeros_like(free.net.weights[-1]))
    assert float(term(dp.PotentialModel(axi + silent), plummer_scores)) == 0.0
    with pytest.raises(ValueError, match="neural_potential"):
        term(dp.PotentialModel(axi), plummer_scores)


def test_terms_compose_with_plus_and_scalar_times(plummer_scores):
    model = dp.PotentialModel(dp.Plummer(1.1, 0.9))
    s, p, l2 = dp.terms.Stationarity(), dp.terms.PositiveDensity(), dp.terms.L2Weights(0.3)
    combo = s + 2.0 * p + l2 * 0.5
    assert isinstance(combo, dp.terms.WeightedSum) and len(combo.terms) == 3
    assert combo.weights == (1.0, 2.0, 0.5)
    expected = s(model, plummer_scores) + 2 * p(model, plummer_scores) + 0.5 * l2(
        model, plummer_scores
    )
    np.testing.assert_allclose(combo(model, plummer_scores), expected, rtol=1e-12)
    parts = combo.parts(model, plummer_scores)
    assert set(parts) == {"Stationarity", "PositiveDensity", "L2Weights"}
    np.testing.assert_allclose(sum(parts.values()), expected, rtol=1e-12)
    logged = dp.terms.Log(s + p) + l2
    np.testing.assert_allclose(
        logged(model, plummer_scores),
        jnp.log(s(model, plummer_scores) + p(model, plummer_scores)) + l2(model, plummer_scores),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="alpha"):
        dp.terms.Stationarity(alpha=0.0)


@typing.final
class _PotentialAt(dp.terms.AbstractTerm):
    """A user term: squared deviation of Φ at a point from a target value."""

    point: tuple[float, float, float]
    target: float

    def evaluate(self, model, batch, fields):
        return (model.potential._potential(jnp.asarray(self.point)) - self.target) ** 2


def test_user_written_term_composes_and_differentiates(plummer_scores):
    user = _PotentialAt((1.0, 0.0, 0.0), -0.5)
    loss = dp.terms.Stationarity() + 3.0 * user
    model = dp.PotentialModel(dp.Plummer(1.0, 1.0))
    expected = 3.0 * (-1 / np.sqrt(2) + 0.5) ** 2  # the truth is stationary: only the user term
    np.testing.assert_allclose(loss(model, plummer_scores), expected, rtol=1e-10, atol=1e-13)
    grads = eqx.filter_grad(loss)(model, plummer_scores)
    assert np.isfinite(float(grads.potential.log_m_tot)) and float(grads.potential.log_m_tot) != 0


def test_stationarity_penalties(plummer_scores):
    """asinh(α|ρ|), ln(1 + (αρ)²) and (αρ)² of the same residuals; all vanish at the truth."""
    wrong = dp.PotentialModel(dp.Plummer(1.2, 1.0))
    fields = dp.terms.Fields(*wrong.value_grad_laplacian(plummer_scores.x))
    rho = 0.7 * dp.terms.Stationarity().residual(wrong, plummer_scores, fields)
    expected = {"asinh": np.arcsinh(np.abs(rho)), "cauchy": np.log1p(rho**2), "square": rho**2}
    truth = dp.PotentialModel(dp.Plummer(1.0, 1.0))
    for penalty, values in expected.items():
        term = dp.terms.Stationarity(alpha=0.7, penalty=penalty)
        np.testing.assert_allclose(term(wrong, plummer_scores), np.mean(values), rtol=1e-12)
        assert float(term(truth, plummer_scores)) < 1e-13
    with pytest.raises(ValueError, match="penalty"):
        dp.terms.Stationarity(penalty="huber")


def test_relative_stationarity_is_the_relative_force_error_along_v(plummer_scores):
    """For f(E), ∂ln f/∂t / (|∂ln f/∂x| |v|) = -v̂ · (∇Φ - ∇Φ_true) / |∇Φ_true| (f' < 0)."""
    b = plummer_scores
    wrong = dp.PotentialModel(dp.Plummer(1.2, 0.9))
    fields = dp.terms.Fields(*wrong.value_grad_laplacian(b.x))
    rel = dp.terms.Stationarity(relative=True).residual(wrong, b, fields)
    scale = np.linalg.norm(b.dlnf_dx, axis=-1) * np.linalg.norm(b.v, axis=-1)
    rel = np.asarray(rel) * (scale + 0.01 * scale.mean()) / scale  # undo the floor
    true_grad = np.asarray(dp.Plummer(1.0, 1.0).gradient(b.x))
    v_hat = b.v / np.linalg.norm(b.v, axis=-1, keepdims=True)
    expected = -np.sum(v_hat * (np.asarray(fields.grad) - true_grad), -1)
    expected /= np.linalg.norm(true_grad, axis=-1)
    np.testing.assert_allclose(rel, expected, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="relative"):
        dp.terms.Stationarity(relative=True, form="f")
