"""The Deep Potential loss terms (paper Eqs. 9, 10, 13)."""

from typing import Literal, final

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import registry
from ..potentials import CompositePotential
from ._base import AbstractTerm

PENALTIES = ("asinh", "cauchy", "square")  # the values of Stationarity's `penalty`


def penalised_mean(a, penalty: str):
    """The mean of `penalty` (one of `PENALTIES`) over the scaled residuals `a`."""
    if penalty == "asinh":
        return jnp.mean(jnp.arcsinh(jnp.abs(a)))
    if penalty == "cauchy":
        return jnp.mean(jnp.log1p(a * a))
    return jnp.mean(a * a)


def _free_component(term, pot):
    """The component `term.component` of a composite potential, or a `ValueError` naming
    the term and what the potential has."""
    if not isinstance(pot, CompositePotential) or term.component not in pot:
        names = list(pot) if isinstance(pot, CompositePotential) else type(pot).__name__
        raise ValueError(f"{type(term).__name__} needs a CompositePotential with a component "
                         f"{term.component!r}; the model's potential has {names}")
    return pot[term.component]


def _positive(name, value) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


@registry.terms.register
@final
class Stationarity(AbstractTerm):
    """Non-stationarity, mean over the batch of asinh(α |∂f/∂t|) (paper Eq. 9).

    The residual is the Collisionless Boltzmann Equation in the model's frame
    (`AbstractFrame.residual`). Because the batch is drawn from f, the mean is the paper's
    f-weighted integral (Eq. 10).

    The penalty of a residual ρ is the paper's asinh(α|ρ|) by default: linear near zero
    (an ℓ1 loss) and logarithmic beyond 1/α, robust to outlying scores. `"cauchy"`,
    ln(1 + (αρ)²), is as robust but smooth and quadratic near zero, which is what a
    second-order finish (`refine_potential`) needs; `"square"`, (αρ)², is plain least
    squares, for exact scores only.

    **Arguments:**

    - `alpha`: the residual at which the penalty turns from linear (or quadratic) to
      logarithmic.
    - `form`: `"ln_f"` uses ∂ln f/∂t (scale-free, the default); `"f"` uses the paper's
      ∂f/∂t = f ∂ln f/∂t, which needs `batch.ln_f`.
    - `penalty`: `"asinh"` (the paper's), `"cauchy"` or `"square"`, as above.
    - `relative`: divide each point's ∂ln f/∂t by |∂ln f/∂x| |v| (floored at 1% of its
      batch mean), the size of its v · ∇ln f term. For f(E) this residual is
      v̂ · ΔF / |F|, the relative force error along the velocity, so every star counts by
      its relative error rather than by |∂ln f/∂E| (which makes the loosely bound outskirts
      dominate). A per-point weight from the data alone: the truth still makes it vanish.
      Needs `form="ln_f"`.
    """

    alpha: float = 1.0
    form: Literal["ln_f", "f"] = "ln_f"
    penalty: Literal["asinh", "cauchy", "square"] = "asinh"
    relative: bool = False

    def __check_init__(self):
        _positive("alpha", self.alpha)
        if self.form not in ("ln_f", "f"):
            raise ValueError(f"form must be 'ln_f' or 'f', got {self.form!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.relative and self.form != "ln_f":
            raise ValueError("relative=True needs form='ln_f'")

    def residual(self, model, batch, fields):
        """∂ln f/∂t (∂f/∂t for `form="f"`, scaled for `relative`) at each point."""
        r = model.frame.residual(fields.grad, batch.x, batch.v, batch.dlnf_dx, batch.dlnf_dv)
        if self.relative:
            scale = jnp.linalg.norm(batch.dlnf_dx, axis=-1) * jnp.linalg.norm(batch.v, axis=-1)
            return r / (scale + 0.01 * jnp.mean(scale))
        return r * jnp.exp(batch.ln_f) if self.form == "f" else r

    def evaluate(self, model, batch, fields):
        return penalised_mean(self.alpha * self.residual(model, batch, fields), self.penalty)


@registry.terms.register
@final
class PositiveDensity(AbstractTerm):
    """Negative-density penalty, mean of asinh(β max(−∇²Φ, 0)) (paper Eq. 9)."""

    beta: float = 1.0

    def __check_init__(self):
        _positive("beta", self.beta)

    def evaluate(self, model, batch, fields):
        return jnp.mean(jnp.arcsinh(self.beta * jnp.maximum(-fields.lap, 0.0)))


@registry.terms.register
@final
class L2Weights(AbstractTerm):
    """ℓ2 times the mean of the squared network weights of the potential (paper Eq. 13).

    The mean runs over every weight-matrix entry (arrays of two or more dimensions; biases
    and analytic parameters are not weights), as the paper writes it: ℓ2/N_w Σ w_i². The
    TensorFlow code instead sums per-layer means, ~130× larger for the 4×512 network at
    initialisation; we follow the paper so that ℓ2 does not depend on the layer count.
    """

    l2: float = 0.1

    def __check_init__(self):
        if not float(self.l2) >= 0:
            raise ValueError(f"l2 must be non-negative, got {self.l2}")

    def evaluate(self, model, batch, fields):
        leaves = jax.tree.leaves(eqx.filter(model.potential, eqx.is_inexact_array))
        weights = [w for w in leaves if w.ndim >= 2]
        if not weights:
            return jnp.zeros(())
        total = sum(jnp.sum(w * w) for w in weights)
        return self.l2 * total / sum(w.size for w in weights)


@registry.terms.register
@final
class SymmetryPenalty(AbstractTerm):
    """Size of the free-form part of a "symmetric + free-form" composite potential.

    mean |∇Φ_free|² / mean |∇Φ|² over the batch: the fraction of the force (squared) that
    the named free-form component carries. A small weight on it lets the data pull away from
    the symmetry only where they must.

    **Arguments:**

    - `component`: the name of the free-form component in the `CompositePotential`
      (`Axisymmetric.mlp(...) + NeuralPotential(...)` names it `"neural_potential"`).
    """

    component: str = "neural_potential"

    def evaluate(self, model, batch, fields):
        free = jax.vmap(_free_component(self, model.potential)._gradient)(batch.x)
        return jnp.mean(jnp.sum(free**2, -1)) / jnp.mean(jnp.sum(fields.grad**2, -1))


@registry.terms.register
@final
class AzimuthalMeanPenalty(AbstractTerm):
    """The axisymmetric part of the free-form component of a composite potential.

    For `Axisymmetric + NeuralPotential` (`axisymmetric_plus_neural`) the split of an
    axisymmetric field between the two parts is arbitrary. This term makes it unique
    without biasing the total: it penalises the free part's azimuthal mean about z,

        mean_x [ (1/K) Σ_k Φ_free(R_z(2πk/K) x) ]² / var_x Φ,

    so the free part carries the non-axisymmetric field (a bar's, Fourier modes m ≠ 0 up
    to aliasing at multiples of K) and the axisymmetric network the rest. Unlike
    `SymmetryPenalty` it does not shrink the free part's genuine non-axisymmetric force.
    It is evaluated on the first `max_points` points of the batch (K forward passes each).

    **Arguments:**

    - `component`: the free-form component's name.
    - `n_phi`: K, the azimuths of the mean (odd, so that a bar's even modes do not alias
      below 2K).
    - `max_points`: points of the batch used.
    """

    component: str = "neural_potential"
    n_phi: int = 7
    max_points: int = 512

    def __check_init__(self):
        if int(self.n_phi) < 2 or int(self.max_points) < 1:
            raise ValueError(f"n_phi must be ≥ 2 and max_points ≥ 1, got {self.n_phi}, "
                             f"{self.max_points}")

    def evaluate(self, model, batch, fields):
        free = _free_component(self, model.potential)
        x = batch.x[: self.max_points]
        angles = 2 * jnp.pi * jnp.arange(self.n_phi, dtype=x.dtype) / self.n_phi
        c, s = jnp.cos(angles), jnp.sin(angles)
        rotated = jnp.stack([c[:, None] * x[None, :, 0] - s[:, None] * x[None, :, 1],
                             s[:, None] * x[None, :, 0] + c[:, None] * x[None, :, 1],
                             jnp.broadcast_to(x[None, :, 2], (self.n_phi, x.shape[0]))], -1)
        mean = jnp.mean(jax.vmap(jax.vmap(free._potential))(rotated), axis=0)
        return jnp.mean(mean**2) / jnp.var(fields.phi)
