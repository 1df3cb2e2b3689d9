"""Accuracy against a known truth: per-point residuals of a recovered potential, their
summaries, and the errors of a DF's scores."""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from ..potentials import AbstractPotential
from ._fields import fields, potential_of

PERCENTILES = (16, 50, 84, 95)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    """The median, the other `PERCENTILES` (as `"p16"`, …) and the count of `values`."""
    stats = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    stats["median"] = stats.pop("p50")
    stats["n"] = int(values.size)
    return stats


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
    pot = potential_of(model)
    shape = np.shape(x)[:-1]
    phi, grad, rho = fields(pot, x, chunk_size)
    phi_t, grad_t, rho_t = fields(truth, x, chunk_size)
    out = residuals_from_fields(phi, grad, rho, phi_t, grad_t, rho_t, x)
    return {k: v.reshape(shape) for k, v in out.items()}


def residuals_from_fields(phi, grad, rho, phi_t, grad_t, rho_t, x) -> dict:
    """`residuals` from Φ, ∇Φ, ρ and their true values at positions `x` (flat: (n,),
    (n, 3)), e.g. a replica set's medians; returns `residuals`' dict of (n,) arrays. A
    truth given as `None` leaves out the keys it determines (`phi_t`: `phi`; `grad_t`: the
    forces; `rho_t`: `density` and `rho_true`)."""
    xf = np.asarray(x, dtype=float).reshape(-1, 3)
    out: dict[str, np.ndarray] = {}
    if phi_t is not None:
        dphi = phi - phi_t
        out["phi"] = (dphi - np.median(dphi)) / (np.percentile(phi_t, 95)
                                                 - np.percentile(phi_t, 5))
    if grad_t is not None:
        f_norm = np.linalg.norm(grad_t, axis=-1)
        dforce = (grad_t - grad) / f_norm[:, None]  # F = −∇Φ, so ΔF = ∇Φ_true − ∇Φ
        out.update({
            "force": np.linalg.norm(dforce, axis=-1),
            "force_plane": np.linalg.norm(grad_t[:, :2] - grad[:, :2], axis=-1)
            / np.linalg.norm(grad_t[:, :2], axis=-1),
            "force_x": dforce[:, 0], "force_y": dforce[:, 1], "force_z": dforce[:, 2]})
    if rho_t is not None:
        out["density"] = (rho - rho_t) / rho_t
        out["rho_true"] = rho_t
    out.update({"r": np.linalg.norm(xf, axis=-1), "R": np.hypot(xf[:, 0], xf[:, 1]),
                "z": xf[:, 2]})
    return out


def residuals_at(model, x, *, acceleration=None, potential=None,
                 chunk_size: int = 2**14) -> dict:
    """Per-point residuals of a recovered potential against a truth known only at the
    points: the acceleration and/or potential a simulation recorded at each star
    (`PhaseSpaceCatalog.truth`).

    **Arguments:**

    - `model`: a `PotentialModel` or a potential.
    - `x`: positions, shape (n, 3).
    - `acceleration`: the true −∇Φ at `x`, shape (n, 3), or `None`.
    - `potential`: the true Φ at `x`, shape (n,), or `None`.

    **Returns:** the keys of `residuals` that the given truth determines: `force`,
    `force_plane`, `force_x`/`force_y`/`force_z` with `acceleration`; `phi` with
    `potential`; always `r`, `R`, `z` (no density: a per-star truth has none).
    """
    if acceleration is None and potential is None:
        raise ValueError("residuals_at needs the true acceleration or potential")
    xf = np.asarray(x, dtype=float).reshape(-1, 3)
    n = len(xf)
    phi, grad, _ = fields(potential_of(model), xf, chunk_size)
    grad_t = None if acceleration is None else -np.asarray(acceleration, float).reshape(n, 3)
    phi_t = None if potential is None else np.asarray(potential, float).reshape(n)
    return residuals_from_fields(phi, grad, None, phi_t, grad_t, None, xf)


def summarise(res: Mapping[str, np.ndarray], mask=None) -> dict[str, dict[str, float]]:
    """Median and percentiles of |residual| for each quantity, inside `mask` (all if None).

    **Returns:** `{quantity: {"median": ..., "p16": ..., "p84": ..., "p95": ..., "n": ...}}`
    for the absolute residuals of `phi`, `force`, `force_plane`, `force_x`, `force_y`,
    `force_z` and `density` (those present in `res`).
    """
    mask = np.ones(np.shape(res["r"]), bool) if mask is None else np.asarray(mask, bool)
    out = {}
    names = ("phi", "force", "force_plane", "force_x", "force_y", "force_z", "density")
    for name in (n for n in names if n in res):
        values = np.abs(np.asarray(res[name])[mask])
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError(f"no finite {name} residuals inside the region")
        out[name] = _percentiles(values)
    return out


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
        out[name] = _percentiles(err[np.isfinite(err)])
    return out
