"""Loss terms and their composition."""

import abc
from typing import NamedTuple, final

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..model import PotentialModel
from ..scores import ScoreSample


class Fields(NamedTuple):
    """Φ, ∇Φ and ∇²Φ at a batch's positions, computed once and shared by all terms."""

    phi: Float[Array, " n"]
    grad: Float[Array, "n 3"]
    lap: Float[Array, " n"]


class AbstractTerm(eqx.Module):
    """A loss term: `term(model, batch) -> scalar`.

    Write a term by implementing `evaluate(model, batch, fields)`, where `fields` holds Φ,
    ∇Φ and ∇²Φ at `batch.x` from one shared `value_grad_laplacian` pass. Terms compose:
    `a + b` and `c * a` give a `WeightedSum`, itself a term, and every term in a sum sees the
    same `fields`.
    """

    @abc.abstractmethod
    def evaluate(self, model: PotentialModel, batch: ScoreSample, fields: Fields) -> Array:
        """The term's value on a batch, given the shared fields."""

    def __call__(self, model: PotentialModel, batch: ScoreSample) -> Array:
        return self.evaluate(model, batch, Fields(*model.value_grad_laplacian(batch.x)))

    def __add__(self, other: "AbstractTerm") -> "WeightedSum":
        if not isinstance(other, AbstractTerm):
            return NotImplemented
        return WeightedSum.of(_pairs(self) + _pairs(other))

    def __mul__(self, c: float) -> "WeightedSum":
        if isinstance(c, AbstractTerm) or not jnp.isscalar(c):
            return NotImplemented
        return WeightedSum.of([(c * w, t) for w, t in _pairs(self)])

    __rmul__ = __mul__


def _pairs(term: AbstractTerm) -> list[tuple[float, AbstractTerm]]:
    if isinstance(term, WeightedSum):
        return list(zip(term.weights, term.terms))
    return [(1.0, term)]


@final
class WeightedSum(AbstractTerm):
    """Σ_k weight_k · term_k, with every term evaluated on one shared set of fields."""

    terms: tuple[AbstractTerm, ...]
    weights: tuple[float, ...]

    def __init__(self, terms, weights=None):
        terms = tuple(terms)
        weights = tuple(float(w) for w in (weights or [1.0] * len(terms)))
        if len(terms) != len(weights):
            raise ValueError(f"{len(terms)} terms but {len(weights)} weights")
        for t in terms:
            if not isinstance(t, AbstractTerm):
                raise TypeError(f"not a loss term: {type(t).__name__}")
        self.terms, self.weights = terms, weights

    @classmethod
    def of(cls, pairs) -> "WeightedSum":
        return cls([t for _, t in pairs], [w for w, _ in pairs])

    def evaluate(self, model, batch, fields):
        return sum(w * t.evaluate(model, batch, fields) for w, t in zip(self.weights, self.terms))

    def parts(self, model: PotentialModel, batch: ScoreSample) -> dict[str, Array]:
        """Each weighted term's value, keyed by class name (for logs and reports)."""
        fields = Fields(*model.value_grad_laplacian(batch.x))
        out = {}
        for w, t in zip(self.weights, self.terms):
            name = type(t).__name__
            key, i = name, 1
            while key in out:
                key, i = f"{name}_{i}", i + 1
            out[key] = w * t.evaluate(model, batch, fields)
        return out


@final
class Log(AbstractTerm):
    """ln of a positive term: the paper minimises ln L plus the L2 penalty (Eq. 13).

    `Log(Stationarity() + PositiveDensity()) + L2Weights(0.1)` is the paper's objective; the
    logarithm makes the penalty's weight relative to the size of L.
    """

    term: AbstractTerm

    def evaluate(self, model, batch, fields):
        return jnp.log(self.term.evaluate(model, batch, fields))
