"""Rotating systems (bars): the loss against the pattern speed, exact stationarity tests of a
catalogue in a frame, the non-axisymmetric force, and ∂ln f/∂t maps in several frames."""

import math
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..laplacian import value_grad_laplacian
from ..model import PotentialModel
from ..potentials import AbstractPotential
from ..scores import ScoreSample
from ._fields import fields, potential_of


def omega_landscape(
    model: PotentialModel,
    scores: ScoreSample,
    loss: Callable,
    omegas: Sequence[float],
    *,
    axis: int = 2,
    max_points: int = 2**16,
) -> dict[str, np.ndarray]:
    """The loss against one component of the frame's Ω, everything else held fixed.

    At a fitted potential this shows how sharply the data pin the pattern speed: the
    minimum's position and curvature. With exact scores of a DF stationary in a rotating
    frame the stationarity term vanishes at the true Ω only (unless Φ is axisymmetric).

    **Arguments:**

    - `model`: a `PotentialModel` whose frame has an `omega` (a `RotatingFrame`).
    - `scores`: the score sample; the first `max_points` rows are used.
    - `loss`: a loss term, `loss(model, batch) -> scalar`.
    - `omegas`: values of Ω's component `axis`.
    - `axis`: which component (2: about z).

    **Returns:** `{"omega": values, "loss": loss at each}`.
    """
    if not hasattr(model.frame, "omega"):
        raise ValueError(f"the model's frame ({type(model.frame).__name__}) has no omega; "
                         "use a RotatingFrame")
    batch = scores[: min(max_points, len(scores))]
    omegas = np.asarray(omegas, dtype=float)

    def at(value):
        m = eqx.tree_at(lambda mm: mm.frame.omega, model, model.frame.omega.at[axis].set(value))
        return loss(m, batch)

    values = jax.lax.map(eqx.filter_jit(at), jnp.asarray(omegas, model.frame.omega.dtype))
    return {"omega": omegas, "loss": np.asarray(values)}


# d⟨g⟩/dt test functions: quadrupole moments of positions and velocities, which a rotating
# bar changes in the inertial frame, and ones that every stationary state keeps.
MOMENTS: dict[str, Callable] = {
    "x²−y²": lambda w: w[0] ** 2 - w[1] ** 2,
    "2xy": lambda w: 2 * w[0] * w[1],
    "x v_x − y v_y": lambda w: w[0] * w[3] - w[1] * w[4],
    "x v_y + y v_x": lambda w: w[0] * w[4] + w[1] * w[3],
    "v_x²−v_y²": lambda w: w[3] ** 2 - w[4] ** 2,
    "2 v_x v_y": lambda w: 2 * w[3] * w[4],
    "R²": lambda w: w[0] ** 2 + w[1] ** 2,
    "z²": lambda w: w[2] ** 2,
    "x·v": lambda w: w[0] * w[3] + w[1] * w[4] + w[2] * w[5],
}


def stationarity_moments(
    potential: AbstractPotential,
    frame,
    x,
    v,
    moments: Mapping[str, Callable] | None = None,
    *,
    chunk_size: int = 2**15,
) -> dict[str, dict[str, float]]:
    """Rates of change d⟨g⟩/dt of a catalogue's moments in a frame, from exact dynamics.

    In a frame the phase-space flow is ẋ = v − u0 − Ω × (x − x0), v̇ = −∇Φ − Ω × (v − u0)
    (divergence-free), so for any g(x, v), d⟨g⟩/dt = ⟨∇_x g · ẋ + ∇_v g · v̇⟩: a mean over
    the stars with no density estimate. A stationary catalogue has every rate consistent
    with zero within its standard error; a bar seen from the inertial frame changes its
    quadrupole moments at a rate ∝ Ω_p.

    **Arguments:**

    - `potential`: the (true) potential, static in the frame.
    - `frame`: an `AbstractFrame` (`InertialFrame()`, `RotatingFrame(omega=...)`).
    - `x`, `v`: the catalogue's positions and velocities, shape (n, 3).
    - `moments`: `{name: g}` with g a function of one phase-space point (6,) (default
      `MOMENTS`).

    **Returns:** `{name: {"rate": d⟨g⟩/dt, "stderr": its standard error, "z": rate/stderr,
    "scale": ⟨|ġ|⟩}}`.
    """
    moments = MOMENTS if moments is None else moments
    x = np.asarray(x, dtype=float)
    v = np.asarray(v, dtype=float)
    names = list(moments)

    @eqx.filter_jit
    def rates(pot, frame, xc, vc):
        grad = jax.vmap(pot._gradient)(xc)
        xdot = frame.relative_velocity(xc, vc)
        vdot = -(grad + frame.fictitious_acceleration(xc, vc))
        w = jnp.concatenate([xc, vc], -1)
        wdot = jnp.concatenate([xdot, vdot], -1)
        return jnp.stack([jax.vmap(lambda p, t, g=g: jax.jvp(g, (p,), (t,))[1])(w, wdot)
                          for g in moments.values()], -1)

    parts = [np.asarray(rates(potential, frame, jnp.asarray(x[i : i + chunk_size]),
                              jnp.asarray(v[i : i + chunk_size])))
             for i in range(0, len(x), chunk_size)]
    gdot = np.concatenate(parts)
    out = {}
    for k, name in enumerate(names):
        col = gdot[:, k]
        rate, err = float(col.mean()), float(col.std(ddof=1) / math.sqrt(len(col)))
        out[name] = {"rate": rate, "stderr": err, "z": rate / err if err > 0 else math.inf,
                     "scale": float(np.mean(np.abs(col)))}
    return out


def _rotate_z(a, angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * a[..., 0] - s * a[..., 1], s * a[..., 0] + c * a[..., 1], a[..., 2]],
                    -1)


def nonaxisymmetric_force(potential, x, *, n_phi: int = 16,
                          chunk_size: int = 2**14) -> np.ndarray:
    """The non-axisymmetric part of the force at x: F − its azimuthal average about z.

    The average is over n_phi equally spaced rotations of x about z (each force rotated
    back), which removes every Fourier component m = 0, ±n_phi, … of the force field; a
    bar's force is what remains.

    **Arguments:**

    - `potential`: a potential or a `PotentialModel`.
    - `x`: positions, shape (..., 3).
    - `n_phi`: azimuths averaged over.

    **Returns:** F − ⟨F⟩_φ, shape (..., 3) (F = −∇Φ).
    """
    pot = potential_of(potential)
    shape = np.shape(x)
    xf = np.asarray(x, dtype=float).reshape(-1, 3)
    force = -fields(pot, xf, chunk_size)[1]
    mean = np.zeros_like(force)
    for k in range(n_phi):
        angle = 2 * np.pi * k / n_phi
        mean += _rotate_z(-fields(pot, _rotate_z(xf, angle), chunk_size)[1], -angle)
    return (force - mean / n_phi).reshape(shape)


def bar_force_residuals(model, truth: AbstractPotential, x, *, n_phi: int = 16) -> dict:
    """The recovered non-axisymmetric in-plane force against the truth's, per position.

    **Arguments:**

    - `model`: a `PotentialModel` or a potential.
    - `truth`: the true potential.
    - `x`: positions, shape (n, 3).
    - `n_phi`: azimuths of the average (`nonaxisymmetric_force`).

    **Returns:** `{"bar_force": |ΔF_bar,xy| / |F_xy,true|` (the error in the bar's force
    relative to the total in-plane force), `"bar_force_rel"`: |ΔF_bar,xy| / |F_bar,xy,true|,
    `"F_bar"`, `"F_bar_true"`: the non-axisymmetric forces (n, 3), and `R`, `z`}.
    """
    x = np.asarray(x, dtype=float)
    fb = nonaxisymmetric_force(model, x, n_phi=n_phi)
    fb_t = nonaxisymmetric_force(truth, x, n_phi=n_phi)
    f_t = -fields(truth, x, 2**14)[1]
    d = np.linalg.norm(fb[:, :2] - fb_t[:, :2], axis=-1)
    return {"bar_force": d / np.linalg.norm(f_t[:, :2], axis=-1),
            "bar_force_rel": d / np.linalg.norm(fb_t[:, :2], axis=-1),
            "F_bar": fb, "F_bar_true": fb_t, "R": np.hypot(x[:, 0], x[:, 1]), "z": x[:, 2]}


def frame_dfdt_maps(potential, scores: ScoreSample, frames: Mapping, *, extent: float,
                    bins: int = 48, relative: bool = True) -> dict[str, np.ndarray]:
    """Mean ∂ln f/∂t over the samples in x–y bins, in each of several frames.

    The bin mean over samples of f is (1/ρ) ∂ρ/∂t: a bar seen from the inertial frame shows
    its four-lobed −Ω_p ∂ln ρ/∂φ pattern, and nothing in its own rotating frame.

    **Arguments:**

    - `potential`: the potential (e.g. the truth, or a fitted model's).
    - `scores`: samples with their scores.
    - `frames`: `{label: frame}`.
    - `extent`: half-width of the x–y map.
    - `bins`: bins per axis.
    - `relative`: divide each residual by the size of its two terms (as `fit_quality`), so
      the map is dimensionless and bounded by 1.

    **Returns:** `{label: map of shape (bins, bins)}` (rows y, columns x; empty bins NaN)
    and `"edges"`.
    """
    pot = potential_of(potential)
    _, grad, _ = value_grad_laplacian(pot, scores.x)
    edges = np.linspace(-extent, extent, bins + 1)
    xs, ys = np.asarray(scores.x[:, 0]), np.asarray(scores.x[:, 1])
    count, _, _ = np.histogram2d(ys, xs, bins=[edges, edges])
    out: dict[str, np.ndarray] = {"edges": edges}
    for label, frame in frames.items():
        r = frame.residual(grad, scores.x, scores.v, scores.dlnf_dx, scores.dlnf_dv)
        if relative:
            acc = grad + frame.fictitious_acceleration(scores.x, scores.v)
            size = (jnp.abs(jnp.sum(acc * scores.dlnf_dv, -1))
                    + jnp.abs(jnp.sum(frame.relative_velocity(scores.x, scores.v)
                                      * scores.dlnf_dx, -1)))
            r = r / size
        total, _, _ = np.histogram2d(ys, xs, bins=[edges, edges], weights=np.asarray(r))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[label] = np.where(count > 0, total / count, np.nan)
    return out
