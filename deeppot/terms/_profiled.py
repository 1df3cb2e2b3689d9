"""The selection-free stationarity of a conditional DF: ∇ln ν profiled out."""

from typing import Literal, final

import jax
import jax.numpy as jnp

from .. import registry
from ._base import AbstractTerm
from ._physics import PENALTIES, _positive, penalised_mean


def profiled_residuals(frame, grad_phi, x, v, dlnp_dx, dlnp_dv, ridge: float = 1e-6):
    """The stationarity residuals at each position with ∇ln ν set to its least-squares
    value over the position's velocities.

    With f = ν(x) p(v|x), ∂ln f/∂t = r₀ + c·g is linear in g = ∇ln ν(x), where r₀ is the
    residual of the velocity factor alone and c its coefficient (−(v − u₀ − Ω × (x − x₀)) in
    a frame moving with u₀ and rotating with Ω; −v in an inertial one). Per position, g
    minimises Σ_k (r₀ₖ + cₖ·g)² (normal equations with a relative `ridge`), and the
    residuals left are returned.

    **Arguments:**

    - `frame`: the model's frame (`deeppot.frames.AbstractFrame`).
    - `grad_phi`: ∇Φ at the positions, shape `(n, 3)`.
    - `x`: positions, shape `(n, 3)`; `v`, `dlnp_dx`, `dlnp_dv`: shape `(n, k, 3)`.
    - `ridge`: Tikhonov regularisation relative to the trace of the normal matrix.

    **Returns:** `(residuals, g)` of shapes `(n, k)` and `(n, 3)`.
    """
    shape = v.shape
    g_phi = jnp.broadcast_to(grad_phi[:, None, :], shape)
    xs = jnp.broadcast_to(x[:, None, :], shape)
    r0 = frame.residual(g_phi, xs, v, dlnp_dx, dlnp_dv)
    eye = jnp.eye(3, dtype=v.dtype)
    # the coefficient of g: the residual is affine in ∂ln f/∂x
    c = jnp.stack([frame.residual(g_phi, xs, v, dlnp_dx + eye[i], dlnp_dv) - r0
                   for i in range(3)], -1)
    a = jnp.einsum("nki,nkj->nij", c, c)
    a = a + ridge * jnp.trace(a, axis1=-2, axis2=-1)[:, None, None] / 3 * eye
    g = -jnp.linalg.solve(a, jnp.einsum("nki,nk->ni", c, r0)[..., None])[..., 0]
    return r0 + jnp.einsum("nki,ni->nk", c, g), g


@registry.terms.register
@final
class ProfiledStationarity(AbstractTerm):
    """Stationarity of a conditional DF f = ν(x) p(v|x) with ∇ln ν profiled out: needs
    p(v|x) alone, so no density model and no selection function.

    At each position of the batch (a `deeppot.VelocityScoreSample`: k velocities per
    position from p(·|x), with ∇ₓln p and ∇ᵥln p), stationarity
    v·∇ln ν + v·∇ₓln p − ∇Φ·∇ᵥln p = 0 is linear in g = ∇ln ν; g is solved for by least
    squares over the k velocities (`profiled_residuals`) and the loss is the mean penalty of
    the k − 3 degrees of freedom left, as in `Stationarity`. It vanishes at the true
    potential for exact scores; where p(v|x) is close to a Maxwellian (the isothermal
    degeneracy) it constrains ∇Φ weakly. Composes with the terms that use only Φ's fields
    (`PositiveDensity`, `L2Weights`, ...).

    **Arguments:**

    - `alpha`: the residual at which the penalty turns from linear (or quadratic) to
      logarithmic.
    - `penalty`: `"asinh"`, `"cauchy"` or `"square"` (see `Stationarity`).
    - `ridge`: relative regularisation of the per-position least squares.
    """

    alpha: float = 1.0
    penalty: Literal["asinh", "cauchy", "square"] = "asinh"
    ridge: float = 1e-6

    def __check_init__(self):
        _positive("alpha", self.alpha)
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if not float(self.ridge) >= 0:
            raise ValueError(f"ridge must be non-negative, got {self.ridge}")

    def residual(self, model, batch, fields):
        """The profiled residuals, shape `(n, k)`."""
        from ..scores import VelocityScoreSample

        if not isinstance(batch, VelocityScoreSample):
            raise TypeError("ProfiledStationarity trains on a VelocityScoreSample (from "
                            f"sample_velocity_scores); got {type(batch).__name__}")
        if batch.v.shape[1] < 4:
            raise ValueError(f"ProfiledStationarity needs at least 4 velocities per position; "
                             f"got {batch.v.shape[1]}")
        res, _ = profiled_residuals(model.frame, fields.grad, batch.x, batch.v,
                                    batch.dlnp_dx, batch.dlnp_dv, self.ridge)
        return res

    def evaluate(self, model, batch, fields):
        return penalised_mean(self.alpha * self.residual(model, batch, fields), self.penalty)



def profiled_scores(model, sample, *, chunk_size: int = 2**14, ridge: float = 1e-6):
    """The joint scores of a `deeppot.VelocityScoreSample` under a potential model, with
    ∇ln ν at each position set to its profiled value (`profiled_residuals`): one row per
    (position, velocity), as a `deeppot.ScoreSample` whose ∂ln f/∂x is ∇ₓln p + ∇ln ν.

    The stationarity residual of a row is then the profiled residual
    `ProfiledStationarity` trains on, so every check and diagnostic of a score sample
    (`deeppot.check_potential_fit`, `deeppot.evaluate.fit_quality`) reads a selection-free
    fit as it reads an ordinary one. `ln_f` is not known (ν is not modelled): NaN.

    **Arguments:**

    - `model`: a `deeppot.PotentialModel`.
    - `sample`: a `deeppot.VelocityScoreSample`.
    - `chunk_size`: positions evaluated at a time.
    - `ridge`: as in `profiled_residuals`.

    **Returns:** a `deeppot.ScoreSample` of n · k rows.
    """
    import numpy as np

    from ..scores import ScoreSample, VelocityScoreSample

    if not isinstance(sample, VelocityScoreSample):
        raise TypeError(f"profiled_scores reads a VelocityScoreSample; got "
                        f"{type(sample).__name__}")
    parts = []
    for start in range(0, len(sample), chunk_size):
        part = sample[start : start + chunk_size]
        x = jnp.asarray(part.x)
        grad = jax.vmap(model.potential._gradient)(x)
        _, g = profiled_residuals(model.frame, grad, x, jnp.asarray(part.v),
                                  jnp.asarray(part.dlnp_dx), jnp.asarray(part.dlnp_dv), ridge)
        parts.append([np.asarray(a).reshape(-1, 3) for a in (
            jnp.broadcast_to(x[:, None, :], part.v.shape), part.v,
            jnp.asarray(part.dlnp_dx) + g[:, None, :], part.dlnp_dv)])
    return ScoreSample(*(np.concatenate(a) for a in zip(*parts)))
