"""Value, gradient and Laplacian of a scalar field in one call.

`value_grad_laplacian(fn, x, method=...)` is the single entry point. `fn` is a potential
module or any function from a (3,) position to a scalar.

Methods:

- `"forward"` (default): a forward Laplacian. Potential modules supply their own one-pass
  rule (closed forms for analytic families; Jacobian and Laplacian carried through the
  network for MLPs, over the whole batch at once with a hand-derived backward pass, see
  `deeppot.potentials.mlp_forward_laplacian`). For a plain function it falls back to
  forward-over-forward derivatives along the three axes. For networks this method is
  reverse-mode differentiable only (what training needs); take forward-mode derivatives
  through `"hessian"`/`"hvp"` or the per-point verbs (`potential.hessian`).
- `"hessian"`: the trace of `jax.hessian` — the reference.
- `"hvp"`: three forward-over-reverse Hessian-vector products.
"""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import Position, Positions, Scalar
from ._params import check_positions
from .potentials import AbstractPotential, batched_value_grad_laplacian

Method = Literal["forward", "hessian", "hvp"]
METHODS: tuple[str, ...] = ("forward", "hessian", "hvp")


def _generic_forward(fn: Callable, x: Position):
    def along(e):
        (value, d1), (_, d2) = jax.jvp(lambda y: jax.jvp(fn, (y,), (e,)), (x,), (e,))
        return value, d1, d2

    values, grad, second = jax.vmap(along)(jnp.eye(3, dtype=x.dtype))
    return values[0], grad, jnp.sum(second)


def _hessian_trace(fn: Callable, x: Position):
    value, grad = jax.value_and_grad(fn)(x)
    return value, grad, jnp.trace(jax.hessian(fn)(x))


def _hvp(fn: Callable, x: Position):
    value, grad = jax.value_and_grad(fn)(x)
    _, hvp = jax.linearize(jax.grad(fn), x)
    columns = jax.vmap(hvp)(jnp.eye(3, dtype=x.dtype))
    return value, grad, jnp.trace(columns)


def pointwise_vgl(
    fn: Callable[[Position], Scalar] | AbstractPotential, method: Method = "forward"
) -> Callable[[Position], tuple[Scalar, Position, Scalar]]:
    """The per-point function x ↦ (Φ, ∇Φ, ∇²Φ) for one position of shape (3,)."""
    if method not in METHODS:
        raise ValueError(f"unknown Laplacian method {method!r}; choose one of {METHODS}")
    if isinstance(fn, AbstractPotential):
        if method == "forward":
            return fn._value_grad_laplacian
        fn = fn._potential
    rule = {"forward": _generic_forward, "hessian": _hessian_trace, "hvp": _hvp}[method]
    return lambda x: rule(fn, x)


def value_grad_laplacian(
    fn: Callable[[Position], Scalar] | AbstractPotential,
    x: Positions,
    method: Method = "forward",
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch 3"], Float[Array, "*batch"]]:
    """Φ, ∇Φ and ∇²Φ of a scalar field at positions of shape (..., 3).

    **Arguments:**

    - `fn`: a potential module, or a function mapping a (3,) position to a scalar.
    - `x`: positions, shape (..., 3).
    - `method`: `"forward"` (default), `"hessian"` or `"hvp"`; see the module docstring.

    **Returns:** `(value, gradient, laplacian)` with shapes (...), (..., 3) and (...).
    """
    return _value_grad_laplacian(fn, check_positions(x), method)


@eqx.filter_jit
def _value_grad_laplacian(fn, x, method):
    batch = x.shape[:-1]
    if method == "forward" and isinstance(fn, AbstractPotential):
        value, grad, lap = batched_value_grad_laplacian(fn, x.reshape(-1, 3))
    else:
        value, grad, lap = jax.vmap(pointwise_vgl(fn, method))(x.reshape(-1, 3))
    return value.reshape(batch), grad.reshape(batch + (3,)), lap.reshape(batch)
