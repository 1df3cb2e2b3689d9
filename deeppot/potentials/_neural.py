"""Neural potentials: a tanh MLP, free-form or behind a symmetry.

Every neural potential is `Φ(x) = MLP(u(x))` for input features `u` (scaled Cartesian
coordinates, or symmetry invariants). The forward Laplacian carries the value, the
Jacobian with respect to x and the Laplacian through the network in one pass, which is
exact for an MLP: for a layer `h ↦ W h + b` the Jacobian maps as `J ↦ J Wᵀ` and the
Laplacian as `L ↦ W L`; for an elementwise `σ` it is `J ↦ σ'(h) J` and
`L ↦ σ'(h) L + σ''(h) Σ_k J_k²`.
"""

import math
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .. import registry
from .._custom_types import Position, Scalar
from .._params import vector3
from ._base import AbstractPotential


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


def _unit(v: Float[Array, "3"]) -> Float[Array, "3"]:
    return v / jnp.sqrt(jnp.sum(v * v))


@final
class NeuralPotential(AbstractPotential):
    """Free-form potential Φ(x) = MLP(x / input_scale), the paper's 4×512 tanh network.

    `input_scale` is a fixed length (a Python float, so it never trains) that brings the
    positions of interest to order unity.

    **Arguments:**

    - `key`: a typed PRNG key (`jax.random.key`).
    - `width`, `depth`: hidden-layer size and number of hidden layers.
    - `input_scale`: length by which positions are divided before the network.
    - `G`: gravitational constant used by `density`.
    """

    net: TanhMLP
    input_scale: float
    G: float

    def __init__(
        self,
        *,
        key: PRNGKeyArray,
        width: int = 512,
        depth: int = 4,
        input_scale: float = 1.0,
        G: float = 1.0,
    ):
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        self.net = TanhMLP(3, width, depth, key=key)
        self.input_scale = float(input_scale)
        self.G = G

    def _potential(self, x: Position) -> Scalar:
        return self.net(x / self.input_scale)

    def _value_grad_laplacian(self, x: Position):
        s = self.input_scale
        eye = jnp.eye(3, dtype=x.dtype)
        return self.net.forward_laplacian(x / s, eye / s, jnp.zeros(3, x.dtype))


@final
class Spherical(AbstractPotential):
    """Spherically symmetric potential Φ(r), a network of r²/input_scale².

    The network sees r² rather than r so that Φ is smooth at the centre.
    Build one with `Spherical.mlp(key=..., width=..., depth=...)`.
    """

    net: TanhMLP
    input_scale: float
    G: float

    def __init__(self, net: TanhMLP, *, input_scale: float = 1.0, G: float = 1.0):
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        if net.weights[0].shape[1] != 1:
            raise ValueError(f"Spherical needs a network of 1 input, got {net.weights[0].shape[1]}")
        self.net = net
        self.input_scale = float(input_scale)
        self.G = G

    @classmethod
    def mlp(cls, *, key, width=128, depth=3, input_scale=1.0, G=1.0) -> "Spherical":
        return cls(TanhMLP(1, width, depth, key=key), input_scale=input_scale, G=G)

    def _potential(self, x: Position) -> Scalar:
        return self.net(jnp.sum(x * x, keepdims=True) / self.input_scale**2)

    def _value_grad_laplacian(self, x: Position):
        s2 = self.input_scale**2
        u = jnp.sum(x * x, keepdims=True) / s2
        return self.net.forward_laplacian(u, 2 * x[:, None] / s2, jnp.full((1,), 6 / s2, x.dtype))


@final
class Axisymmetric(AbstractPotential):
    """Axisymmetric potential Φ(R, z), a network of (R²/s², z/s) about a symmetry axis.

    Without `axis` the axis is ẑ and fixed. With `axis` (any non-zero 3-vector) it is a
    learnable parameter, used through `axis / |axis|` so it always acts as a unit vector;
    `unit_axis` reads it back. Build one with `Axisymmetric.mlp(key=..., ...)`.
    """

    net: TanhMLP
    axis: Float[Array, "3"] | None
    input_scale: float
    G: float

    def __init__(
        self,
        net: TanhMLP,
        *,
        axis: Float[Array, "3"] | None = None,
        input_scale: float = 1.0,
        G: float = 1.0,
    ):
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        if net.weights[0].shape[1] != 2:
            raise ValueError(
                f"Axisymmetric needs a network of 2 inputs, got {net.weights[0].shape[1]}"
            )
        if axis is not None:
            axis = vector3("axis", axis)
            if not isinstance(axis, jax.core.Tracer) and not jnp.any(axis != 0):
                raise ValueError("parameter 'axis' must be a non-zero vector")
        self.net = net
        self.axis = axis
        self.input_scale = float(input_scale)
        self.G = G

    @classmethod
    def mlp(
        cls, *, key, width=128, depth=3, axis=None, input_scale=1.0, G=1.0
    ) -> "Axisymmetric":
        return cls(TanhMLP(2, width, depth, key=key), axis=axis, input_scale=input_scale, G=G)

    @property
    def unit_axis(self) -> Float[Array, "3"]:
        if self.axis is None:
            return jnp.array([0.0, 0.0, 1.0])
        return _unit(self.axis)

    def _features(self, x: Position):
        n = self.unit_axis.astype(x.dtype)
        s = self.input_scale
        z = jnp.dot(x, n)
        R2 = jnp.sum(x * x) - z * z
        u = jnp.stack([R2 / s**2, z / s])
        Ju = jnp.stack([2 * (x - z * n) / s**2, n / s], axis=1)
        Lu = jnp.stack([jnp.asarray(4 / s**2, x.dtype), jnp.zeros((), x.dtype)])
        return u, Ju, Lu

    def _potential(self, x: Position) -> Scalar:
        return self.net(self._features(x)[0])

    def _value_grad_laplacian(self, x: Position):
        return self.net.forward_laplacian(*self._features(x))


def axisymmetric_plus_neural(
    *,
    key: PRNGKeyArray,
    width: int = 128,
    depth: int = 3,
    input_scale: float = 1.0,
    free_width: int | None = None,
    free_depth: int | None = None,
    G: float = 1.0,
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
    - `G`: gravitational constant used by `density`.

    **Returns:** the `CompositePotential`.
    """
    from ._composite import CompositePotential

    k_axi, k_free = jax.random.split(key)
    return CompositePotential(
        axisymmetric=Axisymmetric.mlp(key=k_axi, width=width, depth=depth,
                                      input_scale=input_scale, G=G),
        neural_potential=NeuralPotential(key=k_free, width=free_width or width,
                                         depth=free_depth or depth, input_scale=input_scale,
                                         G=G),
    )


# `[potential] model = ...` names of the learned families (each takes a key).
registry.potentials.register("neural")(NeuralPotential)
registry.potentials.register("spherical")(Spherical.mlp)
registry.potentials.register("axisymmetric")(Axisymmetric.mlp)
registry.potentials.register("axisymmetric_plus_neural")(axisymmetric_plus_neural)
