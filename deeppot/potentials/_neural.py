"""Neural potentials: a tanh MLP, free-form or behind a symmetry.

Every neural potential is `Φ(x) = MLP(u(x))` for input features `u` (scaled Cartesian
coordinates, or symmetry invariants). The forward Laplacian carries the value, the
Jacobian with respect to x and the Laplacian through the network in one pass, which is
exact for an MLP: for a layer `h ↦ W h + b` the Jacobian maps as `J ↦ J Wᵀ` and the
Laplacian as `L ↦ W L`; for an elementwise `σ` it is `J ↦ σ'(h) J` and
`L ↦ σ'(h) L + σ''(h) Σ_k J_k²`.

`TanhMLP.forward_laplacian` is that rule for one point (differentiable in forward and
reverse mode); `TanhMLP.forward_laplacian_batch` is the same pass over a whole batch as
one matrix product per layer, with a hand-derived backward pass (`mlp_forward_laplacian`),
which is what `value_grad_laplacian` and the training step use.
"""

import abc
import math
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .. import registry
from .._custom_types import Position, Scalar
from .._params import to_model_units, vector3
from ..units import UnitSystem, resolve_units
from ._base import AbstractPotential
from ._mlp_laplacian import mlp_forward_laplacian


@final
class TanhMLP(eqx.Module):
    """A dense tanh network from `in_size` features to a scalar.

    Weights use Glorot-uniform initialisation and zero biases (Keras' defaults, as in the
    paper's TensorFlow code); the output layer is linear.
    """

    weights: list[Float[Array, "out in"]]
    biases: list[Float[Array, " out"]]

    def __init__(self, in_size: int, width: int, depth: int, *, key: PRNGKeyArray):
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be positive, got {width=}, {depth=}")
        sizes = [in_size] + [width] * depth + [1]
        keys = jax.random.split(key, len(sizes) - 1)
        self.weights = []
        self.biases = []
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:]):
            limit = math.sqrt(6.0 / (n_in + n_out))
            self.weights.append(jax.random.uniform(k, (n_out, n_in), minval=-limit, maxval=limit))
            self.biases.append(jnp.zeros(n_out))

    def __call__(self, u: Float[Array, " k"]) -> Scalar:
        h = u
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            h = jnp.tanh(W @ h + b)
        return (self.weights[-1] @ h + self.biases[-1])[0]

    def forward_laplacian(
        self, u: Float[Array, " k"], Ju: Float[Array, "3 k"], Lu: Float[Array, " k"]
    ) -> tuple[Scalar, Float[Array, "3"], Scalar]:
        """Propagate features `u` with Jacobian `Ju = ∂u/∂x` and Laplacian `Lu = ∇²u`.

        **Returns:** (value, gradient with respect to x, Laplacian with respect to x).
        """
        h, J, L = u, Ju, Lu
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            h = W @ h + b
            J = J @ W.T
            L = W @ L
            t = jnp.tanh(h)
            d1 = 1 - t * t
            L = d1 * L - 2 * t * d1 * jnp.sum(J * J, axis=0)
            J = J * d1
            h = t
        W, b = self.weights[-1], self.biases[-1]
        return (W @ h + b)[0], (J @ W.T)[:, 0], (W @ L)[0]

    def forward_laplacian_batch(
        self, u: Float[Array, "n k"], Ju: Float[Array, "n 3 k"], Lu: Float[Array, "n k"]
    ) -> tuple[Float[Array, " n"], Float[Array, "n 3"], Float[Array, " n"]]:
        """`forward_laplacian` at n points at once: one matrix product per layer over all
        points, value, Jacobian rows and Laplacian together, and a hand-derived backward
        pass (`mlp_forward_laplacian`). Reverse-mode differentiable only.

        **Returns:** (values, gradients, Laplacians) with shapes (n,), (n, 3), (n,).
        """
        return mlp_forward_laplacian(self.weights, self.biases, u, Ju, Lu, jnp.tanh)


def _scale(input_scale, units: UnitSystem) -> float:
    """A positive input length in the model's units, as a Python float."""
    input_scale = to_model_units("input_scale", input_scale, "length", units)
    if not input_scale > 0:
        raise ValueError(f"input_scale must be positive, got {input_scale}")
    return float(input_scale)


def _unit(v: Float[Array, "3"]) -> Float[Array, "3"]:
    return v / jnp.sqrt(jnp.sum(v * v))


# ---------------------------------------------------------------------------------------
# Input features. Each maps one position x (3,) to features u (k,) with their exact
# Jacobian Ju[i, j] = ∂u_j/∂x_i (3, k) and Laplacian Lu = ∇²u (k,), which is all the forward
# Laplacian needs. `s` is the input scale, `n` the unit symmetry axis (used by "R2z").
# ---------------------------------------------------------------------------------------

# Softening of the radial features, in units of the input scale: ρ = √(r² + (ε s)²) keeps
# "r" and "log_r" smooth and finite at the centre, and equals r to 1e-12 relative beyond
# 1e-6 s (a cusp's force is resolved down to ~1e-5 s).
R_SOFT = 1e-6

FEATURES: dict[str, str] = {
    "x": "x / s: the Cartesian position (3 features)",
    "R2z": "(R² / s², z / s): cylindrical invariants about the symmetry axis (2 features)",
    "r2": "r² / s²: smooth at the centre (1 feature)",
    "r": "ρ / s with ρ = √(r² + (1e-6 s)²): lets Φ ≈ Φ₀ + c r, a cusp (1 feature)",
    "log_r": "ln(ρ / s): spreads many decades in radius evenly (1 feature)",
}
FEATURE_SIZES = {"x": 3, "R2z": 2, "r2": 1, "r": 1, "log_r": 1}


def _feature(name: str, x: Position, s: float, n: Float[Array, "3"] | None):
    dtype = x.dtype
    if name == "x":
        return x / s, jnp.eye(3, dtype=dtype) / s, jnp.zeros(3, dtype)
    if name == "R2z":
        z = jnp.dot(x, n)
        R2 = jnp.sum(x * x) - z * z
        u = jnp.stack([R2 / s**2, z / s])
        Ju = jnp.stack([2 * (x - z * n) / s**2, n / s], axis=1)
        Lu = jnp.stack([jnp.asarray(4 / s**2, dtype), jnp.zeros((), dtype)])
        return u, Ju, Lu
    r2 = jnp.sum(x * x)
    if name == "r2":
        return r2[None] / s**2, 2 * x[:, None] / s**2, jnp.full((1,), 6 / s**2, dtype)
    c = (R_SOFT * s) ** 2
    rho2 = r2 + c
    rho = jnp.sqrt(rho2)
    if name == "r":  # ∇ρ = x / ρ, ∇²ρ = (2ρ² + c) / ρ³
        return rho[None] / s, x[:, None] / (rho * s), ((2 * rho2 + c) / (rho2 * rho * s))[None]
    if name == "log_r":  # ∇ ln ρ = x / ρ², ∇² ln ρ = (ρ² + 2c) / ρ⁴
        return (jnp.log(rho / s))[None], x[:, None] / rho2, ((rho2 + 2 * c) / (rho2 * rho2))[None]
    raise ValueError(f"unknown feature {name!r}")  # pragma: no cover - checked in __init__


def _check_features(cls_name: str, features, allowed: tuple[str, ...], required: str | None):
    features = tuple(features)
    bad = [f for f in features if f not in allowed]
    if bad or not features or len(set(features)) != len(features):
        raise ValueError(
            f"{cls_name} features must be distinct names from {allowed}; got {features}"
        )
    if required is not None and required not in features:
        raise ValueError(f"{cls_name} features must include {required!r}; got {features}")
    return features


def _check_net(cls_name: str, net: TanhMLP, features: tuple[str, ...]):
    n_in = sum(FEATURE_SIZES[f] for f in features)
    if net.weights[0].shape[1] != n_in:
        raise ValueError(
            f"{cls_name} with features {features} needs a network of {n_in} inputs, got "
            f"{net.weights[0].shape[1]}"
        )


def _set_inputs(module, units, G, input_scale, features, allowed, required) -> None:
    """Set a network potential's unit system, input length and features (checked against
    `allowed`, including `required`), in its `__init__`."""
    module.units = resolve_units(units, G, input_scale)
    module.input_scale = _scale(input_scale, module.units)
    module.features = _check_features(type(module).__name__, features, allowed, required)


def _network(features, width: int, depth: int, key) -> TanhMLP:
    """A `TanhMLP` with an input per feature value (at least one: unknown names are left to
    the constructor's check)."""
    n_in = sum(FEATURE_SIZES.get(f, 0) for f in features)
    return TanhMLP(max(n_in, 1), width, depth, key=key)


def _stack_features(features, x, s, n=None):
    parts = [_feature(name, x, s, n) for name in features]
    if len(parts) == 1:
        return parts[0]
    return tuple(jnp.concatenate(p, axis=-1) for p in zip(*parts))


class AbstractNeuralPotential(AbstractPotential):
    """Φ(x) = MLP(u(x)) for input features `u` with known Jacobian and Laplacian.

    Subclasses give the network and `_features(x) -> (u, ∂u/∂x, ∇²u)` for one position;
    the value, gradient and Laplacian then come from the network's forward Laplacian, one
    point at a time or (`_value_grad_laplacian_batch`) over a whole batch at once.
    """

    net: eqx.AbstractVar[TanhMLP]

    @abc.abstractmethod
    def _features(
        self, x: Position
    ) -> tuple[Float[Array, " k"], Float[Array, "3 k"], Float[Array, " k"]]:
        """The network's input features u at x, their Jacobian ∂u/∂x (rows: x, y, z) and
        their Laplacian ∇²u."""

    def _potential(self, x: Position) -> Scalar:
        return self.net(self._features(x)[0])

    def _value_grad_laplacian(self, x: Position):
        return self.net.forward_laplacian(*self._features(x))

    def _value_grad_laplacian_batch(self, x: Float[Array, "n 3"]):
        """(Φ, ∇Φ, ∇²Φ) at n positions through `TanhMLP.forward_laplacian_batch`."""
        return self.net.forward_laplacian_batch(*jax.vmap(self._features)(x))


@final
class NeuralPotential(AbstractNeuralPotential):
    """Free-form potential Φ(x) = MLP(u(x)), the paper's 4×512 tanh network.

    The network's inputs u are the named `features` of the position (see `FEATURES`): by
    default the scaled position x / input_scale and the (softened) radius r / input_scale;
    `features=("x",)` is the paper's network. The radial input lets the network follow
    Φ ≈ Φ₀ + c r at a 1/r density cusp and, on exact scores, fits cored and cusped spheres
    alike 10–100× better than x alone (docs/results.md, "Fits to exact scores"); with
    `"log_r"` many decades in radius become an even range of inputs. Every feature enters
    the forward Laplacian with its exact Jacobian and Laplacian, so Φ, ∇Φ and ∇²Φ stay
    exact.

    `input_scale` is a fixed length (a Python float, so it never trains) that brings the
    positions of interest to order unity.

    **Arguments:**

    - `key`: a typed PRNG key (`jax.random.key`).
    - `width`, `depth`: hidden-layer size and number of hidden layers.
    - `input_scale`: length by which positions are divided before the network (a number
      in the model's units or a length `Quantity`).
    - `features`: names from `("x", "r2", "r", "log_r")`, including `"x"` (default
      `("x", "r")`).
    - `G`: gravitational constant of a dimensionless model (used by `density`).
    - `units`: the unit system (`deeppot.units`), instead of `G`.
    """

    net: TanhMLP
    input_scale: float
    features: tuple[str, ...] = eqx.field(static=True)
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        *,
        key: PRNGKeyArray,
        width: int = 512,
        depth: int = 4,
        input_scale: float = 1.0,
        features: tuple[str, ...] = ("x", "r"),
        G: float | None = None,
        units=None,
    ):
        _set_inputs(self, units, G, input_scale, features, ("x", "r2", "r", "log_r"), "x")
        self.net = _network(self.features, width, depth, key)

    def _features(self, x: Position):
        return _stack_features(self.features, x, self.input_scale)


@final
class Spherical(AbstractNeuralPotential):
    """Spherically symmetric potential Φ(r), a network of radial features.

    By default the network sees r²/input_scale², so that Φ is smooth at the centre; for a
    cusp add `"r"` (Φ ≈ Φ₀ + c r) or `"log_r"` (many decades in radius), see `FEATURES`.
    Build one with `Spherical.mlp(key=..., width=..., depth=...)`.

    **Arguments:**

    - `net`: a `TanhMLP` with as many inputs as the features have.
    - `input_scale`: length by which radii are divided.
    - `features`: names from `("r2", "r", "log_r")`.
    - `G`: gravitational constant used by `density`.
    """

    net: TanhMLP
    input_scale: float
    features: tuple[str, ...] = eqx.field(static=True)
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        net: TanhMLP,
        *,
        input_scale: float = 1.0,
        features: tuple[str, ...] = ("r2",),
        G: float | None = None,
        units=None,
    ):
        _set_inputs(self, units, G, input_scale, features, ("r2", "r", "log_r"), None)
        _check_net("Spherical", net, self.features)
        self.net = net

    @classmethod
    def mlp(
        cls, *, key, width=128, depth=3, input_scale=1.0, features=("r2",), G=None, units=None
    ) -> "Spherical":
        return cls(_network(features, width, depth, key), input_scale=input_scale,
                   features=features, G=G, units=units)

    def _features(self, x: Position):
        return _stack_features(self.features, x, self.input_scale)


@final
class Axisymmetric(AbstractNeuralPotential):
    """Axisymmetric potential Φ(R, z), a network of (R²/s², z/s) about a symmetry axis.

    Without `axis` the axis is ẑ and fixed. With `axis` (any non-zero 3-vector) it is a
    learnable parameter, used through `axis / |axis|` so it always acts as a unit vector;
    `unit_axis` reads it back. Radial features (`"r"`, `"log_r"`, see `FEATURES`) may be
    added to the cylindrical ones for cusped or extended systems. Build one with
    `Axisymmetric.mlp(key=..., ...)`.

    **Arguments:**

    - `net`: a `TanhMLP` with as many inputs as the features have.
    - `axis`: the symmetry axis, or `None` for a fixed ẑ.
    - `input_scale`: length by which positions are divided.
    - `features`: names from `("R2z", "r2", "r", "log_r")`, including `"R2z"`.
    - `G`: gravitational constant used by `density`.
    """

    net: TanhMLP
    axis: Float[Array, "3"] | None
    input_scale: float
    features: tuple[str, ...] = eqx.field(static=True)
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        net: TanhMLP,
        *,
        axis: Float[Array, "3"] | None = None,
        input_scale: float = 1.0,
        features: tuple[str, ...] = ("R2z",),
        G: float | None = None,
        units=None,
    ):
        _set_inputs(self, units, G, input_scale, features, ("R2z", "r2", "r", "log_r"), "R2z")
        _check_net("Axisymmetric", net, self.features)
        if axis is not None:
            axis = vector3("axis", axis)
            if not isinstance(axis, jax.core.Tracer) and not jnp.any(axis != 0):
                raise ValueError("parameter 'axis' must be a non-zero vector")
        self.net = net
        self.axis = axis

    @classmethod
    def mlp(
        cls, *, key, width=128, depth=3, axis=None, input_scale=1.0, features=("R2z",),
        G=None, units=None,
    ) -> "Axisymmetric":
        return cls(_network(features, width, depth, key), axis=axis, input_scale=input_scale,
                   features=features, G=G, units=units)

    @property
    def unit_axis(self) -> Float[Array, "3"]:
        if self.axis is None:
            return jnp.array([0.0, 0.0, 1.0])
        return _unit(self.axis)

    def _features(self, x: Position):
        n = self.unit_axis.astype(x.dtype)
        return _stack_features(self.features, x, self.input_scale, n)


def axisymmetric_plus_neural(
    *,
    key: PRNGKeyArray,
    width: int = 128,
    depth: int = 3,
    input_scale: float = 1.0,
    free_width: int | None = None,
    free_depth: int | None = None,
    G: float | None = None,
    units=None,
):
    """An axisymmetric network plus a free-form one: a potential that can carry a bar.

    `CompositePotential(axisymmetric=Axisymmetric.mlp(...), neural_potential=
    NeuralPotential(...))`; the free part's name is the default of `SymmetryPenalty` and
    `AzimuthalMeanPenalty`, which keep the split between the two identifiable.

    **Arguments:**

    - `key`: a typed PRNG key.
    - `width`, `depth`: the axisymmetric network's size.
    - `input_scale`: length dividing the positions in both networks.
    - `free_width`, `free_depth`: the free-form network's size (default: `width`, `depth`).
    - `G`, `units`: the unit system of both parts (as for `NeuralPotential`).

    **Returns:** the `CompositePotential`.
    """
    from ._composite import CompositePotential

    k_axi, k_free = jax.random.split(key)
    return CompositePotential(
        axisymmetric=Axisymmetric.mlp(key=k_axi, width=width, depth=depth,
                                      input_scale=input_scale, G=G, units=units),
        neural_potential=NeuralPotential(key=k_free, width=free_width or width,
                                         depth=free_depth or depth, input_scale=input_scale,
                                         G=G, units=units),
    )


# `[potential] model = ...` names of the learned families (each takes a key).
registry.potentials.register("neural")(NeuralPotential)
registry.potentials.register("spherical")(Spherical.mlp)
registry.potentials.register("axisymmetric")(Axisymmetric.mlp)
registry.potentials.register("axisymmetric_plus_neural")(axisymmetric_plus_neural)
