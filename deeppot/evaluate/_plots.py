"""Figures of residuals and profiles, written as PNGs (matplotlib is imported when a plot is
drawn, not with the package)."""

from collections.abc import Mapping

import numpy as np

from ..potentials import AbstractPotential
from ._fields import potential_of


def _unit_label(pot, dimension: str) -> str:
    """" [unit]" for a potential with a physical unit system, "" (model units) otherwise."""
    from ..export import unit_system

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
    """Scatter of |residuals| against r for Φ, force and density (those in `res`); writes
    a PNG.

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
    panels = [(name, label) for name, label in (
        ("phi", "|ΔΦ| / spread of Φ (offset removed)"), ("force", "|ΔF| / |F|"),
        ("density", "|Δρ| / ρ")) if name in res]  # a star-by-star truth may lack some
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5),
                             constrained_layout=True, squeeze=False)
    axes = axes[0]
    for ax, (name, label) in zip(axes, panels):
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
    pot = potential_of(pot)
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

    fitted = potential_of(pot)
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
