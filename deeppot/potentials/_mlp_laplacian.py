"""The forward Laplacian of a dense network over a whole batch, with a hand-derived backward pass.

An MLP `Φ = w·h_{L-1} + c`, `h_l = σ(z_l)`, `z_l = W_l h_{l-1} + b_l`, fed features `u`
with Jacobian `J_u = ∂u/∂x` (d rows) and Laplacian `L_u = ∇²u`, carries per point

    value  h_l = σ(z_l)
    rows   J_l = σ'(z_l) ⊙ Z_l,              Z_l = W_l J_{l-1}   (one per direction)
    Lapl.  L_l = σ'(z_l) ⊙ m_l + σ''(z_l) ⊙ s_l,   m_l = W_l L_{l-1},  s_l = Σ_rows Z_l²

so that Φ, ∇Φ = J_{L-1} wᵀ and ∇²Φ = w·L_{L-1} come out of one pass. The value, the d
Jacobian rows and the Laplacian of the whole batch are stacked into one `(d + 2, n, width)`
array, so every layer is a single matrix product with `(d + 2)·n` rows.

The backward pass (`jax.custom_vjp`) is written by hand: with cotangents h̄, J̄, L̄ of a
layer's outputs,

    m̄ = σ' L̄,   s̄ = σ'' L̄,   Z̄ = σ' J̄ + 2 Z s̄,
    z̄ = σ' h̄ + σ'' (m·L̄ + Σ_rows Z·J̄) + σ''' s·L̄,

and `[z̄; Z̄; m̄]` goes through the layer as one product for the input cotangent and one for
the weight cotangent — three products per layer in all, against the many smaller products
and stored intermediates that autodiff of the per-point rule produces. Every quantity is
exact (tested against autodiff in float64).

It needs reverse mode only: `jax.jvp` through it raises (use the per-point rule,
`TanhMLP.forward_laplacian`, for forward-mode derivatives).
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Activation = Callable[[Array], Array]


def activation_derivatives(activation: Activation, z: Array, order: int) -> list[Array]:
    """`[σ(z), σ'(z), …]` up to the given derivative order, for an elementwise `σ`.

    tanh uses its closed forms (everything from t = tanh z); any other activation is
    differentiated by nested forward-mode autodiff.
    """
    if activation is jnp.tanh:
        t = jnp.tanh(z)
        d1 = 1 - t * t
        out = [t, d1, -2 * t * d1, (6 * t * t - 2) * d1]
        return out[: order + 1]
    fns = [activation]
    for _ in range(order):
        f = fns[-1]
        fns.append(lambda x, f=f: jax.jvp(f, (x,), (jnp.ones_like(x),))[1])
    return [f(z) for f in fns]


def _stack(u, Ju, Lu):
    """(n, k), (n, d, k), (n, k) → (d + 2, n, k): value, d Jacobian rows, Laplacian."""
    return jnp.concatenate([u[None], jnp.moveaxis(Ju, 1, 0), Lu[None]], axis=0)


def _matmul_rows(X, W):
    """Each row of every row-set through `W` (out, in): one product over all rows."""
    r, n, k = X.shape
    return (X.reshape(r * n, k) @ W.T).reshape(r, n, W.shape[0])


def _row_sum(a):
    """Σ over the leading (row-set) axis, unrolled: elementwise adds fuse into the layer's
    one elementwise pass, where XLA:CPU would otherwise emit a separate reduction."""
    return sum((a[i] for i in range(1, a.shape[0])), a[0])


def _layer_out(Y, b, activation):
    """Output row-sets of a hidden layer from its pre-activation row-sets Y = W X (no bias)."""
    t, d1, d2 = activation_derivatives(activation, Y[0] + b, 2)
    Z, m = Y[1:-1], Y[-1]
    s = _row_sum(Z * Z)
    return jnp.concatenate([t[None], d1 * Z, (d1 * m + d2 * s)[None]], axis=0)


def _forward(activation, weights, biases, u, Ju, Lu):
    X = _stack(u, Ju, Lu)
    xs, ys = [], []
    for W, b in zip(weights[:-1], biases[:-1]):
        Y = _matmul_rows(X, W)
        xs.append(X)
        ys.append(Y)
        X = _layer_out(Y, b, activation)
    w, c = weights[-1], biases[-1]
    r, n, k = X.shape
    out = (X.reshape(r * n, k) @ w[0]).reshape(r, n)
    result = (out[0] + c[0], out[1:-1].T, out[-1])
    return result, (xs, ys, X)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _forward_laplacian(activation, weights, biases, u, Ju, Lu):
    return _forward(activation, weights, biases, u, Ju, Lu)[0]


def _fwd(activation, weights, biases, u, Ju, Lu):
    result, (xs, ys, top) = _forward(activation, weights, biases, u, Ju, Lu)
    return result, (weights, biases, xs, ys, top)


def _bwd(activation, residuals, cotangents):
    weights, biases, xs, ys, top = residuals
    phi_bar, grad_bar, lap_bar = cotangents
    # output layer: Φ = w·h + c, ∇Φ = J wᵀ, ∇²Φ = w·L, one cotangent per row
    c_rows = jnp.concatenate([phi_bar[None], grad_bar.T, lap_bar[None]], axis=0)  # (r, n)
    r, n, k = top.shape
    w = weights[-1]
    w_bar = c_rows.reshape(1, r * n) @ top.reshape(r * n, k)
    c_bar = jnp.sum(phi_bar, keepdims=True)
    X_bar = c_rows[..., None] * w[0]  # rank one per point; fused into the next pass
    w_bars, b_bars = [w_bar], [c_bar]
    for W, b, X, Y in zip(weights[-2::-1], biases[-2::-1], xs[::-1], ys[::-1]):
        _, d1, d2, d3 = activation_derivatives(activation, Y[0] + b, 3)
        Z, m = Y[1:-1], Y[-1]
        h_bar, J_bar, L_bar = X_bar[0], X_bar[1:-1], X_bar[-1]
        s = _row_sum(Z * Z)
        s_bar = d2 * L_bar
        d1_bar = m * L_bar + _row_sum(Z * J_bar)
        z_bar = d1 * h_bar + d2 * d1_bar + d3 * (s * L_bar)
        Y_bar = jnp.concatenate([z_bar[None], d1 * J_bar + 2 * Z * s_bar, (d1 * L_bar)[None]])
        rows, width = Y_bar.shape[0] * Y_bar.shape[1], Y_bar.shape[2]
        flat = Y_bar.reshape(rows, width)
        w_bars.append(flat.T @ X.reshape(rows, X.shape[2]))
        b_bars.append(jnp.sum(z_bar, axis=0))
        X_bar = (flat @ W).reshape(Y_bar.shape[0], Y_bar.shape[1], W.shape[1])
    u_bar = X_bar[0]
    Ju_bar = jnp.moveaxis(X_bar[1:-1], 0, 1)
    Lu_bar = X_bar[-1]
    w_bars = [a.astype(W.dtype) for a, W in zip(w_bars[::-1], weights)]
    b_bars = [a.astype(b.dtype) for a, b in zip(b_bars[::-1], biases)]
    return w_bars, b_bars, u_bar, Ju_bar, Lu_bar


_forward_laplacian.defvjp(_fwd, _bwd)


def mlp_forward_laplacian(
    weights: Sequence[Float[Array, "out in"]],
    biases: Sequence[Float[Array, " out"]],
    u: Float[Array, "n k"],
    Ju: Float[Array, "n d k"],
    Lu: Float[Array, "n k"],
    activation: Activation = jnp.tanh,
) -> tuple[Float[Array, " n"], Float[Array, "n d"], Float[Array, " n"]]:
    """Value, gradient and Laplacian of a dense network at a batch of points, in one pass.

    The network maps features `u` through hidden layers `σ(W h + b)` to a linear scalar
    output (the last weight matrix has one row). Its reverse-mode derivative with respect
    to every argument is hand-derived (see the module docstring) and exact.

    **Arguments:**

    - `weights`, `biases`: the layers' parameters, input layer first; the last is the
      output layer, of shape `(1, width)` and `(1,)`.
    - `u`: the input features at n points.
    - `Ju`: their Jacobians with respect to the d coordinates, `Ju[i, a, j] = ∂u_j/∂x_a`.
    - `Lu`: their Laplacians with respect to the coordinates.
    - `activation`: an elementwise function (default tanh, which uses closed-form
      derivatives; others are differentiated by autodiff).

    **Returns:** `(Φ, ∇Φ, ∇²Φ)` with shapes (n,), (n, d) and (n,).
    """
    weights, biases = list(weights), list(biases)
    if len(weights) != len(biases) or len(weights) < 2:
        raise ValueError("need matching weights and biases for at least one hidden layer")
    if weights[-1].shape[0] != 1:
        raise ValueError(f"the output layer must have one row, got {weights[-1].shape}")
    n, k = u.shape
    if Ju.ndim != 3 or Ju.shape[0] != n or Ju.shape[2] != k or Lu.shape != (n, k):
        raise ValueError(
            f"features must have shapes (n, k), (n, d, k), (n, k); got {u.shape}, "
            f"{Ju.shape}, {Lu.shape}"
        )
    dtype = jnp.result_type(u, Ju, Lu, *weights)
    return _forward_laplacian(
        activation, weights, biases, u.astype(dtype), Ju.astype(dtype), Lu.astype(dtype)
    )
