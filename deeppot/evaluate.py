"""Accuracy of a recovered potential against a known truth, maps and plots.

Residuals (at tracer positions or on grids):

- potential: Φ − Φ_true with the constant offset (the median difference) removed,
  relative to the spread of Φ_true;
- force: |ΔF| / |F_true| and the per-component errors ΔF_i / |F_true|; the in-plane force
  |ΔF_xy| / |F_xy,true| (what a bar's pattern speed and torque depend on);
- density: (ρ − ρ_true) / ρ_true.

They are summarised as medians and percentiles inside regions (a radial range, a
cylinder, or ρ_true > fraction · ρ_max).

Rotating systems: `omega_landscape` (the loss against the pattern speed at a fitted
potential), `stationarity_moments` (d⟨g⟩/dt of a catalogue in a frame, from the true
potential: an exact test of a mock's stationarity), `nonaxisymmetric_force` and
`bar_force_residuals` (the recovered against the true non-axisymmetric force), and
`frame_dfdt_maps` (∂ln f/∂t in the x–y plane in several frames).
"""

import math
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .laplacian import value_grad_laplacian
from .model import PotentialModel
from .potentials import AbstractPotential
from .scores import ScoreSample

PERCENTILES = (16, 50, 84, 95)


def _potential_of(model) -> AbstractPotential:
    return model.potential if isinstance(model, PotentialModel) else model


def _fields(pot: AbstractPotential, x, chunk_size: int):
    """Φ, ∇Φ and ρ at x, in chunks so grids of any size fit in memory."""
    x = np.asarray(x, dtype=float).reshape(-1, 3)
    out = [[], [], []]
    for i in range(0, len(x), chunk_size):
        phi, grad, lap = value_grad_laplacian(pot, jnp.asarray(x[i : i + chunk_size]))
        for store, value in zip(out, (phi, grad, lap / (4 * math.pi * pot.G))):
            store.append(np.asarray(value))
    return tuple(np.concatenate(parts) for parts in out)


def residuals(model, truth: AbstractPotential, x, *, chunk_size: int = 2**14) -> dict:
    """Per-point residuals of a recovered potential against the truth.

    **Arguments:**

    - `model`: a `PotentialModel` or a potential.
    - `truth`: the true potential.
    - `x`: positions, shape (..., 3).

    **Returns:** a dict of arrays with one row per position: `phi` (offset removed, relative
    to the spread of the true Φ), `force` (|ΔF|/|F|), `force_plane` (|ΔF_xy|/|F_xy|),
    `force_x`/`force_y`/`force_z` (ΔF_i/|F|), `density` (Δρ/ρ), and the true values
    `rho_true`, `r`, `R`, `z`.
    """
    pot = _potential_of(model)
    shape = np.shape(x)[:-1]
    phi, grad, rho = _fields(pot, x, chunk_size)
    phi_t, grad_t, rho_t = _fields(truth, x, chunk_size)
    dphi = phi - phi_t
    dphi = (dphi - np.median(dphi)) / (np.percentile(phi_t, 95) - np.percentile(phi_t, 5))
    f_norm = np.linalg.norm(grad_t, axis=-1)
    dforce = (grad_t - grad) / f_norm[:, None]  # F = −∇Φ, so ΔF = ∇Φ_true − ∇Φ
    plane = np.linalg.norm(grad_t[:, :2] - grad[:, :2], axis=-1) / np.linalg.norm(
        grad_t[:, :2], axis=-1)
    xf = np.asarray(x, dtype=float).reshape(-1, 3)
    out = {
        "phi": dphi,
        "force": np.linalg.norm(dforce, axis=-1),
        "force_plane": plane,
        "force_x": dforce[:, 0],
        "force_y": dforce[:, 1],
        "force_z": dforce[:, 2],
        "density": (rho - rho_t) / rho_t,
        "rho_true": rho_t,
        "r": np.linalg.norm(xf, axis=-1),
        "R": np.hypot(xf[:, 0], xf[:, 1]),
        "z": xf[:, 2],
    }
    return {k: v.reshape(shape) for k, v in out.items()}


def summarise(res: Mapping[str, np.ndarray], mask=None) -> dict[str, dict[str, float]]:
    """Median and percentiles of |residual| for each quantity, inside `mask` (all if None).

    **Returns:** `{quantity: {"median": ..., "p16": ..., "p84": ..., "p95": ..., "n": ...}}`
    for the absolute residuals of `phi`, `force`, `force_plane`, `force_x`, `force_y`,
    `force_z` and `density` (those present in `res`).
    """
    mask = np.ones(np.shape(res["force"]), bool) if mask is None else np.asarray(mask, bool)
    out = {}
    names = ("phi", "force", "force_plane", "force_x", "force_y", "force_z", "density")
    for name in (n for n in names if n in res):
        values = np.abs(np.asarray(res[name])[mask])
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError(f"no finite {name} residuals inside the region")
        stats = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
        stats["median"] = stats.pop("p50")
        stats["n"] = int(values.size)
        out[name] = stats
    return out


def radial_region(res, r_min: float, r_max: float):
    """Mask of points with r_min ≤ r ≤ r_max."""
    return (res["r"] >= r_min) & (res["r"] <= r_max)


def cylinder_region(res, R_min: float, R_max: float, z_max: float):
    """Mask of points with R_min ≤ R ≤ R_max and |z| ≤ z_max (e.g. a bar's region)."""
    return (res["R"] >= R_min) & (res["R"] <= R_max) & (np.abs(res["z"]) <= z_max)


def density_region(res, fraction: float = 0.1):
    """Mask of points where the true density exceeds `fraction` of its maximum there."""
    return res["rho_true"] > fraction * np.nanmax(res["rho_true"])


def midplane_grid(extent: float, n: int = 64, z: float = 0.0) -> np.ndarray:
    """An n × n grid of positions in the plane at height z, |x|, |y| ≤ extent; (n, n, 3)."""
    u = np.linspace(-extent, extent, n)
    X, Y = np.meshgrid(u, u, indexing="xy")
    return np.stack([X, Y, np.full_like(X, z)], axis=-1)


def rz_grid(R_max: float, z_max: float, n_R: int = 48, n_z: int = 48, n_phi: int = 16):
    """Positions on an (R, z) grid repeated over n_phi azimuths; shape (n_z, n_R, n_phi, 3).

    Average residuals over the azimuth axis (-1 of the residual arrays) for the paper's
    azimuthally averaged (R, z) maps.
    """
    R = np.linspace(R_max / n_R, R_max, n_R)
    z = np.linspace(-z_max, z_max, n_z)
    phi = np.linspace(0, 2 * np.pi, n_phi, endpoint=False)
    Z, RR, P = np.meshgrid(z, R, phi, indexing="ij")
    return np.stack([RR * np.cos(P), RR * np.sin(P), Z], axis=-1)


def loss_landscape(
    model: PotentialModel,
    scores: ScoreSample,
    loss: Callable,
    grid: Mapping[str, Sequence[float]],
    *,
    max_points: int = 2**16,
) -> dict[str, np.ndarray]:
    """The loss on a grid of two (or more) potential parameters (paper Fig. 8).

    **Arguments:**

    - `model`: a `PotentialModel` with an analytic potential.
    - `scores`: the score sample; the first `max_points` rows are used.
    - `loss`: a loss term, `loss(model, batch) -> scalar`.
    - `grid`: `{parameter name: values}`, e.g. `{"a": np.linspace(0.9, 1.1, 21), "b": ...}`;
      names are the potential's physical parameters (set through their `log_` fields).

    **Returns:** `{name: values..., "loss": array of shape (len(v1), len(v2), ...)}`.
    """
    batch = scores[: min(max_points, len(scores))]
    names = list(grid)
    for name in names:
        if not hasattr(model.potential, f"log_{name}"):
            raise ValueError(f"the potential {type(model.potential).__name__} has no parameter "
                             f"{name!r}")
    axes = [np.asarray(grid[k], dtype=float) for k in names]
    mesh = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=-1)

    def at(values):
        m = model
        for i, name in enumerate(names):
            m = eqx.tree_at(lambda mm: getattr(mm.potential, f"log_{name}"), m, jnp.log(values[i]))
        return loss(m, batch)

    values = jax.lax.map(eqx.filter_jit(at), jnp.asarray(mesh))
    out = {k: a for k, a in zip(names, axes)}
    out["loss"] = np.asarray(values).reshape([len(a) for a in axes])
    return out


def dfdt_map(model: PotentialModel, scores: ScoreSample, dims=(0, 3), bins: int = 48):
    """Mean ∂ln f/∂t over samples in bins of two phase-space coordinates (paper Fig. 12).

    Samples are drawn from f, so the bin mean is the f-weighted average over the other
    four dimensions.

    **Arguments:**

    - `dims`: two indices into (x, y, z, vx, vy, vz).

    **Returns:** `(mean residual per bin, edges_1, edges_2)`; empty bins are NaN.
    """
    _, grad, _ = value_grad_laplacian(model.potential, scores.x, method=model.laplacian_method)
    r = np.asarray(model.frame.residual(grad, scores.x, scores.v, scores.dlnf_dx, scores.dlnf_dv))
    w = np.concatenate([np.asarray(scores.x), np.asarray(scores.v)], axis=-1)
    a, b = w[:, dims[0]], w[:, dims[1]]
    total, e1, e2 = np.histogram2d(a, b, bins=bins, weights=r)
    count, _, _ = np.histogram2d(a, b, bins=[e1, e2])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan), e1, e2


def score_errors(df, truth, w) -> dict[str, dict[str, float]]:
    """Relative errors of a DF's scores against an exact DF's, at points `w`.

    **Arguments:**

    - `df`: the learned distribution function.
    - `truth`: the exact one (e.g. `deeppot.flows.PlummerDF`, `deeppot.mocks.truth_df`).
    - `w`: phase-space points, shape (n, 6) (e.g. stars drawn from the truth).

    **Returns:** `{"dlnf_dx": {...}, "dlnf_dv": {...}}`, each with the median, p16, p84
    and p95 of |s − s_true| / |s_true| and the number of points.
    """
    w = jnp.asarray(w)
    out = {}
    for name, a, e in zip(("dlnf_dx", "dlnf_dv"), df.score(w), truth.score(w)):
        err = np.asarray(jnp.linalg.norm(a - e, axis=-1) / jnp.linalg.norm(e, axis=-1))
        err = err[np.isfinite(err)]
        stats = {f"p{p}": float(np.percentile(err, p)) for p in PERCENTILES}
        stats["median"] = stats.pop("p50")
        stats["n"] = int(err.size)
        out[name] = stats
    return out


def fit_quality(model: PotentialModel, scores: ScoreSample, *,
                max_points: int = 2**14) -> dict[str, float]:
    """How well a fitted model makes the sampled DF stationary, without knowing the truth.

    The relative residual at a point is |∂ln f/∂t| divided by the sum of the sizes of its
    two terms, |(∇Φ + Ω × (v − u0)) · ∂ln f/∂v| + |(v − u0 − Ω × (x − x0)) · ∂ln f/∂x|: 0
    when they cancel, about 1 when they are unrelated (an untrained or diverged potential).
    Score errors of 10% leave medians of about 0.1.

    **Arguments:**

    - `model`: the fitted `PotentialModel`.
    - `scores`: the sample it was fitted to (the first `max_points` rows are used).

    **Returns:** `{"median_relative_residual", "p84_relative_residual",
    "negative_density_fraction"}`.
    """
    batch = scores[: min(max_points, len(scores))]
    _, grad, lap = value_grad_laplacian(model.potential, batch.x, method=model.laplacian_method)
    frame = model.frame
    acc = grad + frame.fictitious_acceleration(batch.x, batch.v)
    term_v = jnp.sum(acc * batch.dlnf_dv, -1)
    term_x = jnp.sum(frame.relative_velocity(batch.x, batch.v) * batch.dlnf_dx, -1)
    rel = np.asarray(jnp.abs(term_v - term_x) / (jnp.abs(term_v) + jnp.abs(term_x)))
    rel = rel[np.isfinite(rel)]
    return {"median_relative_residual": float(np.median(rel)) if rel.size else math.nan,
            "p84_relative_residual": float(np.percentile(rel, 84)) if rel.size else math.nan,
            "negative_density_fraction": float(np.mean(np.asarray(lap) < 0))}


def _unit_label(pot, dimension: str) -> str:
    """" [unit]" for a potential with a physical unit system, "" (model units) otherwise."""
    from .export import unit_system

    units = unit_system(pot) if pot is not None else None
    if units is None:
        return ""
    try:
        return f" [{units.unit(dimension)}]"
    except (AttributeError, KeyError, ValueError):
        return ""


def _mark_region(ax, region) -> None:
    """Shade what lies outside the accuracy region (r_min, r_max) on a radial axis."""
    if region is None:
        return
    r_min, r_max = region
    ax.axvspan(r_min, r_max, color="tab:green", alpha=0.08, lw=0, label="accuracy region")
    for r in (r_min, r_max):
        ax.axvline(r, color="tab:green", lw=0.8, ls=":")


def plot_radial(res: Mapping[str, np.ndarray], path, title: str = "", *, region=None,
                potential=None):
    """Scatter of |residuals| against r for Φ, force and density; writes a PNG.

    **Arguments:**

    - `res`: `residuals(...)` at the tracer positions.
    - `path`: the PNG to write.
    - `title`: the figure's title.
    - `region`: `(r_min, r_max)` of the accuracy region, shaded (`None`: not marked).
    - `potential`: the fitted potential, whose unit system (if any) labels the r axis.

    **Returns:** the (closed) matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r_label = "r" + _unit_label(potential, "length")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), constrained_layout=True)
    for ax, name, label in zip(
        axes, ("phi", "force", "density"),
        ("|ΔΦ| / spread of Φ (offset removed)", "|ΔF| / |F|", "|Δρ| / ρ"),
    ):
        ax.scatter(res["r"], np.abs(res[name]), s=1, alpha=0.3, rasterized=True)
        ax.set(xscale="log", yscale="log", xlabel=r_label, ylabel=label)
        _mark_region(ax, region)
    if region is not None:
        axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def plot_maps(maps: Mapping[str, np.ndarray], extent, path, title: str = "", *,
              labels=("x", "y"), region=None, potential=None):
    """Side-by-side images of 2-D residual maps (e.g. midplane or R–z); writes a PNG.

    **Arguments:**

    - `maps`: name → image (rows along the second axis of `extent`).
    - `extent`: `(left, right, bottom, top)` in the model's length unit.
    - `path`: the PNG to write.
    - `title`: the figure's title.
    - `labels`: names of the horizontal and vertical coordinates (e.g. `("R", "z")`).
    - `region`: `(r_min, r_max)` of the accuracy region, drawn as circles about the origin.
    - `potential`: the fitted potential, whose unit system (if any) labels the axes.

    **Returns:** the (closed) matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    unit = _unit_label(potential, "length")
    fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 3.6), constrained_layout=True)
    for ax, (name, image) in zip(np.atleast_1d(axes), maps.items()):
        lim = np.nanpercentile(np.abs(image), 98) or 1.0
        im = ax.imshow(image, origin="lower", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set(title=name, xlabel=labels[0] + unit, ylabel=labels[1] + unit)
        if region is not None:
            for r in region:
                ax.add_patch(matplotlib.patches.Circle((0, 0), r, fill=False, ls=":",
                                                       color="k", lw=0.8))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def radial_profiles(pot: AbstractPotential, r, *, n_directions: int = 16) -> dict:
    """Angle-averaged Φ(r) and midplane circular speed v_c(R) of a potential.

    Φ is averaged over `n_directions` fixed directions (a Fibonacci sphere); v_c is
    sqrt(R ∂Φ/∂R) averaged over `n_directions` azimuths in the plane z = 0 (NaN where the
    force points outwards).

    **Arguments:**

    - `pot`: a potential (or a `PotentialModel`).
    - `r`: radii, shape (n,).
    - `n_directions`: directions (and azimuths) averaged over.

    **Returns:** `{"r": (n,), "phi": (n,), "v_c": (n,)}` as NumPy arrays.
    """
    pot = _potential_of(pot)
    r = np.asarray(r, dtype=float)
    k = np.arange(n_directions) + 0.5
    cos_t = 1 - 2 * k / n_directions
    sin_t = np.sqrt(1 - cos_t**2)
    az = np.pi * (1 + 5**0.5) * k
    dirs = np.stack([sin_t * np.cos(az), sin_t * np.sin(az), cos_t], -1)
    phi = np.asarray(pot.potential(r[:, None, None] * dirs)).mean(-1)
    ring = 2 * np.pi * np.arange(n_directions) / n_directions
    plane = np.stack([np.cos(ring), np.sin(ring), 0 * ring], -1)
    v_c = np.asarray(pot.circular_velocity(r[:, None, None] * plane)).mean(-1)
    return {"r": r, "phi": phi, "v_c": v_c}


def plot_profiles(pot, path, *, r, truth=None, region=None, title: str = ""):
    """Φ(r) and v_c(R) of a fitted potential, against the truth when one is known.

    Φ is only determined up to a constant: the fitted Φ is shifted to the truth's at the
    middle (geometric mean) of the accuracy region (or of `r`).

    **Arguments:**

    - `pot`: the fitted potential (or `PotentialModel`).
    - `path`: the PNG to write.
    - `r`: radii to plot, shape (n,), positive.
    - `truth`: the true potential, or `None`.
    - `region`: `(r_min, r_max)` of the accuracy region, shaded.
    - `title`: the figure's title.

    **Returns:** the (closed) matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitted = _potential_of(pot)
    r = np.asarray(r, dtype=float)
    if r.ndim != 1 or r.size < 2 or np.any(r <= 0):
        raise ValueError("r must be a 1-D array of at least two positive radii")
    ours = radial_profiles(fitted, r)
    length = _unit_label(fitted, "length")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    if truth is not None:
        true = radial_profiles(truth, r)
        lo, hi = region if region is not None else (r[0], r[-1])
        i = int(np.argmin(np.abs(np.log(r) - 0.5 * np.log(lo * hi))))
        ours["phi"] = ours["phi"] - ours["phi"][i] + true["phi"][i]
        axes[0].plot(r, true["phi"], "k--", lw=1.2, label="truth")
        axes[1].plot(r, true["v_c"], "k--", lw=1.2, label="truth")
    axes[0].plot(r, ours["phi"], "tab:blue", lw=1.5, label="fitted")
    axes[1].plot(r, ours["v_c"], "tab:blue", lw=1.5, label="fitted")
    axes[0].set(xscale="log", xlabel="r" + length,
                ylabel="Φ (angle-averaged)" + _unit_label(fitted, "potential"))
    axes[1].set(xscale="log", xlabel="R (z = 0)" + length,
                ylabel="v_c" + _unit_label(fitted, "velocity"))
    for ax in axes:
        _mark_region(ax, region)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# Rotating systems


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
    pot = _potential_of(potential)
    shape = np.shape(x)
    xf = np.asarray(x, dtype=float).reshape(-1, 3)
    force = -_fields(pot, xf, chunk_size)[1]
    mean = np.zeros_like(force)
    for k in range(n_phi):
        angle = 2 * np.pi * k / n_phi
        mean += _rotate_z(-_fields(pot, _rotate_z(xf, angle), chunk_size)[1], -angle)
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
    f_t = -_fields(truth, x, 2**14)[1]
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
    pot = _potential_of(potential)
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
