"""Observational effects: Gaia-like noise (paper §4.1), a spherical selection (§4.2) and
selection by acceptance with a known selection function S(x)."""

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..catalog import PhaseSpaceCatalog
from ..selection import AbstractSelection
from ._common import check_draw, check_key, check_positive, key_meta

_ACCEPT_STREAM = 1_000_003  # fold_in tag of the acceptance draws in sample_selected


def observe(
    catalog: PhaseSpaceCatalog,
    key: jax.Array,
    observer: Sequence[float] = (1.0, 0.0, 0.0),
    *,
    distance_frac: float = 0.1,
    distance_scale: float = 1.0,
    sigma_vr: float = 0.0015,
    sigma_vt_per_distance: float = 1.5e-4,
) -> PhaseSpaceCatalog:
    """Add the paper's Gaia-like errors in the observer's spherical frame (§4.1).

    With d the distance from the observer and n̂ the line of sight: the distance gets Gaussian
    noise σ_d = distance_frac · d · min(d / distance_scale, 1) (defaults: min(0.1 d², 0.1 d));
    the radial velocity v·n̂ gets σ_vr; the tangential velocity gets isotropic Gaussian noise
    in the plane of the sky with σ_vt = sigma_vt_per_distance · d per component. The
    directions on the sky are exact. Errors are independent (tangential velocities are not
    rescaled by the distance error), as in the paper. The observer is at rest: only the
    frame's orientation matters for additive noise.

    **Arguments:**

    - `catalog`: the true catalogue.
    - `key`: a typed key, `jax.random.key(seed)`.
    - `observer`: the observer's position, shape (3,).
    - `distance_frac`, `distance_scale`, `sigma_vr`, `sigma_vt_per_distance`: error model.

    **Returns:** a new `PhaseSpaceCatalog` with the noisy coordinates; `meta["observe"]`
    records the error model and key.
    """
    check_key(key)
    obs = np.asarray(observer, dtype=np.float64)
    if obs.shape != (3,) or not np.all(np.isfinite(obs)):
        raise ValueError(f"observer must be a finite 3-vector, got {observer!r}")
    with jax.enable_x64(True):
        g = np.asarray(jax.random.normal(key, (len(catalog), 5), dtype=jnp.float64))
    eps_d, eps_r, eps_t = g[:, 0], g[:, 1], g[:, 2:5]
    rel = catalog.x - obs
    d = np.linalg.norm(rel, axis=1)
    safe = np.where(d > 0, d, 1.0)
    los = rel / safe[:, None]
    sigma_d = distance_frac * d * np.minimum(d / distance_scale, 1.0)
    d_obs = d + sigma_d * eps_d
    x = obs + d_obs[:, None] * los
    eps_t = eps_t - np.sum(eps_t * los, axis=1, keepdims=True) * los  # project onto the sky
    sigma_vt = sigma_vt_per_distance * d
    v = catalog.v + (sigma_vr * eps_r)[:, None] * los + sigma_vt[:, None] * eps_t
    at_observer = d == 0
    x[at_observer] = catalog.x[at_observer]
    v[at_observer] = catalog.v[at_observer]
    meta = catalog.meta
    meta.pop("truth_df", None)  # the noisy catalogue is no longer drawn from it
    meta["observe"] = {
        "observer": obs.tolist(),
        "distance_frac": float(distance_frac),
        "distance_scale": float(distance_scale),
        "sigma_vr": float(sigma_vr),
        "sigma_vt_per_distance": float(sigma_vt_per_distance),
        "key": key_meta(key),
    }
    return PhaseSpaceCatalog(x, v, catalog.weights, meta)


def sphere_mask(
    x: np.ndarray, center: Sequence[float] = (1.0, 0.0, 0.0), radius: float = 1.0
) -> np.ndarray:
    """Boolean mask of positions with |x − center| ≤ radius.

    **Arguments:**

    - `x`: positions, shape (n, 3).
    - `center`: the sphere's centre, shape (3,).
    - `radius`: its radius (> 0).

    **Returns:** mask of shape (n,).
    """
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (3,) or not np.all(np.isfinite(c)):
        raise ValueError(f"center must be a finite 3-vector, got {center!r}")
    check_positive(radius=radius)
    return np.sum((np.asarray(x) - c) ** 2, axis=1) <= radius**2


def select_sphere(
    catalog: PhaseSpaceCatalog,
    center: Sequence[float] = (1.0, 0.0, 0.0),
    radius: float = 1.0,
) -> PhaseSpaceCatalog:
    """Keep the stars inside a sphere (paper §4.2: unit sphere centred on (1, 0, 0)).

    **Arguments:**

    - `catalog`: the parent catalogue.
    - `center`: the sphere's centre, shape (3,).
    - `radius`: its radius; stars with |x − center| ≤ radius are kept.

    **Returns:** a new `PhaseSpaceCatalog`; `meta["selection"]` records the sphere and the
    parent size. Raises `ValueError` if no star is inside.
    """
    mask = sphere_mask(catalog.x, center, radius)
    if not mask.any():
        raise ValueError(f"no star lies within {radius} of {list(center)}")
    selection = {
        "type": "sphere",
        "center": [float(c) for c in center],
        "radius": float(radius),
        "n_parent": len(catalog),
    }
    return _kept(catalog, mask, selection)


def select(
    catalog: PhaseSpaceCatalog, selection: AbstractSelection, key: jax.Array
) -> PhaseSpaceCatalog:
    """Keep each star independently with probability S(x) (selection by acceptance).

    The kept stars follow S(x) f(x, v), what a survey with selection function S sees.

    **Arguments:**

    - `catalog`: the parent catalogue.
    - `selection`: the selection function (`deeppot.selection.AbstractSelection`) in the
      catalogue's units.
    - `key`: a typed key, `jax.random.key(seed)`.

    **Returns:** a new `PhaseSpaceCatalog`; `meta["selection"]` holds the selection's
    description and the parent size `n_parent`. Raises `ValueError` if no star is kept.
    """
    check_key(key)
    if not isinstance(selection, AbstractSelection):
        raise TypeError(f"selection must be an AbstractSelection, got {type(selection).__name__}")
    if not selection.units.same_units(catalog.units):
        raise ValueError(f"the selection is in {selection.units!r} but the catalogue in "
                         f"{catalog.units!r}")
    with jax.enable_x64(True):
        p = np.asarray(selection.probability(jnp.asarray(catalog.x)))
        u = np.asarray(jax.random.uniform(key, (len(catalog),), jnp.float64))
    keep = u < p
    if not keep.any():
        raise ValueError(f"no star of {len(catalog)} was selected")
    desc = {**selection.describe(), "n_parent": len(catalog), "key": key_meta(key)}
    return _kept(catalog, keep, desc)


def _kept(catalog: PhaseSpaceCatalog, rows, selection: dict) -> PhaseSpaceCatalog:
    """The selected stars, with `meta["selection"]`; a truth DF is dropped from `meta`,
    since the selected stars are no longer drawn from it."""
    meta = catalog.meta
    meta.pop("truth_df", None)
    rows = np.asarray(rows)
    return PhaseSpaceCatalog(
        catalog.x[rows], catalog.v[rows], None if catalog.weights is None
        else catalog.weights[rows], {**meta, "selection": selection},
        cov=None if catalog.cov is None else catalog.cov[rows],
    )


def sample_selected(
    sampler: Callable[[jax.Array, int], PhaseSpaceCatalog],
    key: jax.Array,
    n: int,
    select: Callable[[PhaseSpaceCatalog], PhaseSpaceCatalog] | AbstractSelection,
    *,
    pilot: int | None = None,
    margin: float = 1.05,
    max_rounds: int = 20,
) -> PhaseSpaceCatalog:
    """Draw parent stars until exactly n survive a selection.

    A pilot draw estimates the selected fraction; later rounds draw enough for the remainder
    (times `margin`). Stars are independent, so keeping the first n selected is unbiased.
    E.g. the paper's §4.2 mock:
    `sample_selected(lambda k, m: miyamoto_nagai_disk(k, m), key, 2**19, select_sphere)`.

    **Arguments:**

    - `sampler`: `(key, m) -> PhaseSpaceCatalog` drawing m parent stars.
    - `key`: a typed key, `jax.random.key(seed)`; round i uses `jax.random.fold_in(key, i)`.
    - `n`: stars wanted after selection.
    - `select`: the selection, `catalog -> catalog` (may raise `ValueError` when empty), or
      an `AbstractSelection` S(x): round i then keeps each star with probability S(x)
      (`select(parent, S, k)` with `k = fold_in(fold_in(key, 1_000_003), i)`).
    - `pilot`: size of the first draw (default: n).
    - `margin`: over-draw factor for later rounds.
    - `max_rounds`: give up (with `RuntimeError`) after this many draws.

    **Returns:** a `PhaseSpaceCatalog` of exactly n stars; `meta["selection"]["n_parent"]` is
    the total number of parent stars drawn and `meta["selection"]["rounds"]` the draws.
    """
    n = check_draw(key, n)
    parts: list[PhaseSpaceCatalog] = []
    n_sel = n_parent = 0
    m = int(pilot) if pilot is not None else n
    for i in range(max_rounds):
        parent = sampler(jax.random.fold_in(key, i), m)
        n_parent += len(parent)
        try:
            if isinstance(select, AbstractSelection):
                k_accept = jax.random.fold_in(jax.random.fold_in(key, _ACCEPT_STREAM), i)
                part = _select_module(parent, select, k_accept)
            else:
                part = select(parent)
        except ValueError as err:
            if n_sel == 0:  # bad parameters, or a region the mock does not reach
                raise ValueError(f"the selection keeps none of the {n_parent} stars drawn: "
                                 f"{err}") from None
            part = None  # an unlucky small round
        if part is not None:
            parts.append(part)
            n_sel += len(part)
        if n_sel >= n:
            out = PhaseSpaceCatalog.concatenate(parts).subset(np.arange(n))
            selection = {**out.meta.get("selection", {}), "n_parent": n_parent, "rounds": i + 1}
            selection.pop("key", None)  # the per-round acceptance keys derive from `key`
            return out.with_meta(selection=selection, key=key_meta(key))
        frac = max(n_sel, 1) / n_parent
        m = max(math.ceil((n - n_sel) / frac * margin), 16)
    raise RuntimeError(f"only {n_sel} of {n} stars selected after {max_rounds} draws")


_select_module = select  # `sample_selected`'s argument named `select` shadows the function
