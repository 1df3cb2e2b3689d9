"""Replica sets: K fits of one system, and the bands they give.

A run with `[run] replicas = K` fits K replicas that differ in what a scientist would vary
(the DF's seed and a bootstrap resample of the stars, `deeppot.pipeline.replicas`). Their
fitted `PotentialModel`s form one `ReplicaSet`, saved as one model file; its methods return
the K values stacked, and `band(method, x)` their summary:

- `centre="median"` (every replica a bootstrap resample, as in sets written before the
  `centre` field existed): the centre is the median over the replicas, and the 68% and 95%
  bands are the centre ± t_q(K − 1) · s · √(1 + 1/K) · f, with s the standard deviation
  over the replicas, t_q the Student-t quantile for q = 0.84 and 0.975 and f that level's
  inflation (1 unless calibrated): the prediction interval of a normal variable from K
  draws, which keeps its coverage for small K (the empirical 16–84% and 2.5–97.5%
  percentiles of 8 replicas contain a new draw at most 7/9 of the time, whatever the
  spread). `kind="percentile"` gives those empirical percentiles instead (the same band for
  large K), their distances from the median times f.
- `centre="full"` (replica 0 fitted to every star once, the others bootstrap resamples):
  the standard bootstrap construction. The centre is replica 0's value c, the full-data
  estimate (on the mocks measured, no closer to the truth than the median: the spread
  between fits comes mostly from the DF's seed; docs/results.md), and the bands are
  c ± t_q(K − 1) · s_c · f, with s_c = √(Σ (b_i − c)² / (K − 1)) the K − 1 bootstrap
  replicas' spread about c; `kind="percentile"` gives the basic bootstrap
  interval [2c − P_hi(b), 2c − P_lo(b)] of their percentiles, its distances from c times f.

`coverage` counts the positions where a known truth lies inside a band. When replica errors
are not normal about the truth (they are correlated along r, and a bootstrap does not see
the DF's own bias), no single factor makes both levels nominal: `calibrate` learns one
inflation per level on a mock with a known truth — the q-quantile of the truth's distance
from the centre in units of the band's half-width on its side, q the level's nominal
coverage — and `band(..., inflation={"68": f68, "95": f95})` applies it to another system.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, final

import equinox as eqx
import numpy as np

from .model import PotentialModel
from .units import is_quantity

__all__ = ["BAND_KINDS", "CENTRES", "LEVELS", "METHODS", "Band", "ReplicaSet",
           "analytic_parameters", "band", "calibrate", "coverage", "inflation_factors",
           "t_quantile", "z_scores"]

# the potential methods a band can be taken of
METHODS = ("potential", "gradient", "acceleration", "density", "laplacian",
           "circular_velocity")
BAND_KINDS = ("t", "percentile")
# what a band is centred on: the replicas' median (every replica a bootstrap resample), or
# replica 0's value (replica 0 fitted to every star; the others bootstrap resamples)
CENTRES = ("median", "full")
# the two bands: each level's nominal coverage (the one-sided quantile is (1 + it) / 2)
LEVELS = {"68": 0.68, "95": 0.95}


def t_quantile(q: float, dof: int) -> float:
    """The q-quantile of Student's t distribution with `dof` degrees of freedom (q ≥ 0.5).

    Bisection on the distribution function, written with the regularised incomplete beta
    function: P(T ≤ t) = 1 − ½ I_{ν/(ν + t²)}(ν/2, ½) for t ≥ 0.
    """
    import jax
    from jax.scipy.special import betainc

    if not 0.5 <= q < 1 or dof < 1:
        raise ValueError(f"t_quantile needs 0.5 <= q < 1 and dof >= 1; got q={q}, dof={dof}")

    def cdf(t):
        with jax.enable_x64(True):
            tail = betainc(np.float64(dof / 2.0), np.float64(0.5), np.float64(dof / (dof + t * t)))
        return 1.0 - 0.5 * float(tail)

    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class Band:
    """The summary of K replica values at each point: the centre and two bands.

    Arrays (or `Quantity`s) of the values' shape less the replica axis: `median` (the
    band's centre: the replicas' median, or the full-data replica's value when the set is
    centred on it; see `band`), `lo68`, `hi68` (the 68% band), `lo95`, `hi95` (the 95%
    band), and `n_replicas`.
    """

    median: Any
    lo68: Any
    hi68: Any
    lo95: Any
    hi95: Any
    n_replicas: int

    def as_dict(self) -> dict[str, Any]:
        """`{"median", "lo68", "hi68", "lo95", "hi95"}` as plain lists (JSON-able)."""
        return {k: np.asarray(getattr(self, k)).tolist()
                for k in ("median", "lo68", "hi68", "lo95", "hi95")}


def inflation_factors(inflation) -> dict[str, float]:
    """Each band level's inflation, `{"68": f68, "95": f95}`, from a number (both levels)
    or a mapping with one positive, finite factor for each of `LEVELS` (as `calibrate`
    returns; keys may be the numbers 68 and 95).

    **Raises:** `ValueError` (one line) for a missing, unknown or non-positive factor.
    """
    if isinstance(inflation, Mapping):
        given = {str(k): v for k, v in inflation.items()}
        unknown = sorted(set(given) - set(LEVELS))
        missing = [lvl for lvl in LEVELS if lvl not in given]
        if unknown or missing:
            raise ValueError(f"a band inflation by level needs exactly the levels "
                             f"{', '.join(LEVELS)}; got {', '.join(given) or 'none'}")
        out = given
    else:
        out = dict.fromkeys(LEVELS, inflation)
    for lvl, f in out.items():
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(f) and f > 0):
            raise ValueError(f"the band inflation must be a positive number; got {f!r}"
                             + (f" for the {lvl}% band" if isinstance(inflation, Mapping)
                                else ""))
    return {lvl: float(f) for lvl, f in out.items()}


def band(values, *, axis: int = 0, kind: str = "t", inflation=1.0,
         centre: str = "median") -> Band:
    """The centre and the 68% and 95% bands of replica values along `axis`.

    **Arguments:**

    - `values`: array (or `Quantity`) with the replicas along `axis`.
    - `kind`: `"t"` (Student-t half-widths from the replicas' spread) or `"percentile"`
      (from their empirical 16th/84th and 2.5th/97.5th percentiles, linearly interpolated);
      see the module docstring.
    - `inflation`: factor on each band's distances from the centre: one number for both
      bands, or `{"68": f68, "95": f95}` (`inflation_factors`), e.g. a calibration learned
      on a mock whose truth is known (`calibrate`). Where the factors would make the 68%
      band reach past the 95% band, the 95% band is widened to hold it.
    - `centre`: `"median"` (the replicas' median; every replica a bootstrap resample) or
      `"full"` (the first value along `axis` is the fit to every star, the band's centre;
      the others are bootstrap replicas, whose spread about it gives the width).

    **Returns:** a `Band` (its `median` holds the centre).

    **Raises:** `ValueError` for an unknown kind or centre, fewer than two replicas with
    `"t"` or with `centre="full"`, or a non-positive inflation.
    """
    unit = values.unit if is_quantity(values) else None
    v = np.asarray(values.value if unit is not None else values, dtype=float)
    v = np.moveaxis(v, axis, 0)
    k = v.shape[0]
    if kind not in BAND_KINDS:
        raise ValueError(f"band kind must be one of {BAND_KINDS}; got {kind!r}")
    if centre not in CENTRES:
        raise ValueError(f"band centre must be one of {CENTRES}; got {centre!r}")
    f = inflation_factors(inflation)
    if (kind == "t" or centre == "full") and k < 2:
        raise ValueError(f"a band from replicas needs at least 2 of them; got {k}")
    if centre == "full":
        mid, boot = v[0], v[1:]
        if kind == "percentile":  # the basic bootstrap interval: 2c − the reflected percentiles
            p_lo95, p_lo68, p_hi68, p_hi95 = np.percentile(boot, [2.5, 16, 84, 97.5], axis=0)
            lo68, hi68 = 2 * mid - p_hi68, 2 * mid - p_lo68
            lo95, hi95 = 2 * mid - p_hi95, 2 * mid - p_lo95
        else:
            n = boot.shape[0]
            s = np.sqrt(np.sum((boot - mid) ** 2, axis=0) / n)
            w68, w95 = (t_quantile((1 + LEVELS[lvl]) / 2, n) * s for lvl in LEVELS)
            lo68, hi68, lo95, hi95 = mid - w68, mid + w68, mid - w95, mid + w95
    else:
        mid = np.median(v, axis=0)
        if kind == "percentile":
            lo95, lo68, hi68, hi95 = np.percentile(v, [2.5, 16, 84, 97.5], axis=0)
        else:
            s = np.std(v, axis=0, ddof=1) * math.sqrt(1 + 1 / k)
            w68, w95 = (t_quantile((1 + LEVELS[lvl]) / 2, k - 1) * s for lvl in LEVELS)
            lo68, hi68, lo95, hi95 = mid - w68, mid + w68, mid - w95, mid + w95
    lo68, hi68 = mid + f["68"] * (lo68 - mid), mid + f["68"] * (hi68 - mid)
    lo95, hi95 = mid + f["95"] * (lo95 - mid), mid + f["95"] * (hi95 - mid)
    # factors that would make the 68% band reach past the 95% one: the 95% band holds it
    lo95, hi95 = np.minimum(lo95, lo68), np.maximum(hi95, hi68)
    parts = (mid, lo68, hi68, lo95, hi95)
    if unit is not None:
        parts = tuple(p * unit for p in parts)
    return Band(*parts, n_replicas=k)


def coverage(b: Band, truth) -> dict[str, float]:
    """The fraction of points where `truth` lies inside each band of `b`.

    **Arguments:**

    - `b`: a `Band` over points (any shape).
    - `truth`: the true values, of the band's shape (points whose truth is not finite are
      left out).

    **Returns:** `{"68": fraction, "95": fraction, "n": points counted}`.
    """
    t = np.asarray(getattr(truth, "value", truth), dtype=float)

    def plain(a):
        return np.asarray(getattr(a, "value", a), dtype=float)

    ok = np.isfinite(t)
    out: dict[str, float] = {}
    for level in ("68", "95"):
        lo, hi = plain(getattr(b, f"lo{level}")), plain(getattr(b, f"hi{level}"))
        inside = (t >= lo) & (t <= hi)
        out[level] = float(np.mean(inside[ok])) if ok.any() else math.nan
    out["n"] = int(ok.sum())
    return out


def calibrate(b: Band, truth) -> dict[str, float]:
    """The inflation of each band level that makes `b` cover `truth` at that level's
    nominal rate (`LEVELS`) over these points: a quantile calibration.

    At each point u = |truth − centre| / (the band's distance from its centre on the
    truth's side); the level's factor is the smallest u that at least 68% (95%) of the
    points do not exceed. `band(values, inflation=factors)` of the same values then covers
    the truth at ≥ the nominal rate here; learned on one mock, the factors are a
    calibration to test on another. Computed from an uninflated band, they are absolute.

    **Arguments:**

    - `b`: a `Band` over points (any shape).
    - `truth`: the true values, of the band's shape (points whose truth is not finite are
      left out).

    **Returns:** `{"68": f68, "95": f95}`.

    **Raises:** `ValueError` when no point has a finite truth, or when a band of zero width
    (or, for a basic bootstrap band, with its edge past the centre) misses the truth at so
    many points that no factor reaches the level.
    """
    t = np.asarray(getattr(truth, "value", truth), dtype=float)
    med = np.asarray(getattr(b.median, "value", b.median), dtype=float)
    t, med = np.broadcast_arrays(t, med)
    ok = np.isfinite(t)
    if not ok.any():
        raise ValueError("a calibration needs at least one point with a finite truth")
    out = {}
    for lvl, q in LEVELS.items():
        lo, hi = (np.broadcast_to(np.asarray(getattr(e, "value", e), dtype=float), t.shape)
                  for e in (getattr(b, f"lo{lvl}"), getattr(b, f"hi{lvl}")))
        d = t - med
        width = np.where(d < 0, med - lo, hi - med)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(d == 0, 0.0, np.abs(d) / width)
        # zero width (or, for a basic bootstrap band that excludes its centre, a band edge on
        # the other side of the centre) with the truth on that side: no factor reaches it
        u = np.where((d != 0) & ~(width > 0), np.inf, u)[ok]
        f = float(np.quantile(u, q, method="inverted_cdf"))
        if not math.isfinite(f):
            raise ValueError(f"the {lvl}% band has zero width (or its edge past the centre) "
                             f"on the truth's side at more than "
                             f"{100 * (1 - q):.0f}% of the points where the truth lies "
                             "outside it: no inflation calibrates it")
        out[lvl] = f
    return out


def z_scores(b: Band, truth) -> np.ndarray:
    """(centre − truth) / half-width of the 68% band: a standard normal when calibrated."""
    t = np.asarray(getattr(truth, "value", truth), dtype=float)
    med, lo, hi = (np.asarray(getattr(getattr(b, k), "value", getattr(b, k)), dtype=float)
                   for k in ("median", "lo68", "hi68"))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (med - t) / (0.5 * (hi - lo))


def analytic_parameters(potential) -> dict[str, float]:
    """The physical parameters of an analytic family (its `log_<name>` fields), by name;
    `{}` for a learned potential."""
    return {f.name[4:]: float(np.exp(getattr(potential, f.name)))
            for f in dataclasses.fields(potential) if f.name.startswith("log_")}


@final
class ReplicaSet(eqx.Module):
    """K fitted `PotentialModel`s of one system, read as one model with bands.

    Every method of `METHODS` takes positions like a potential's (plain numbers in the
    models' units, or a length `Quantity`) and returns the K replicas' values stacked on a
    leading axis; `band(method, x)` returns their `Band`, `parameter_bands()` that of each
    analytic parameter.

    **Arguments:**

    - `models`: the replicas' `PotentialModel`s (at least one; all in one unit system).
    - `centre`: what the bands are centred on (`CENTRES`): `"median"`, the replicas'
      median (every replica a bootstrap resample), or `"full"`, the first model (fitted to
      every star; the others bootstrap resamples). A model file written before this field
      existed loads as `"median"`, what its bands meant.
    """

    models: tuple[PotentialModel, ...]
    centre: str = eqx.field(static=True, default="median")

    def __init__(self, models, centre: str = "median"):
        self.models = tuple(models)
        self.centre = centre

    def __check_init__(self):
        if not self.models:
            raise ValueError("a ReplicaSet needs at least one model")
        if self.centre not in CENTRES:
            raise ValueError(f"a ReplicaSet's centre must be one of {CENTRES}; "
                             f"got {self.centre!r}")
        for m in self.models:
            if not isinstance(m, PotentialModel):
                raise TypeError(f"a ReplicaSet holds PotentialModels; got {type(m).__name__}")
        units = self.models[0].potential.units
        if any(not m.potential.units.same_units(units) for m in self.models):
            raise ValueError("the replicas of a ReplicaSet must share one unit system")

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, k: int) -> PotentialModel:
        return self.models[k]

    @property
    def units(self):
        """The replicas' unit system."""
        return self.models[0].potential.units

    def values(self, method: str, x):
        """`method` (one of `METHODS`) of every replica at `x`, stacked: shape (K, ...)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; a band is taken of one of {METHODS}")
        out = [getattr(m.potential, method)(x) for m in self.models]
        if is_quantity(out[0]):
            unit = out[0].unit
            return np.stack([np.asarray(o.to_value(unit)) for o in out]) * unit
        return np.stack([np.asarray(o) for o in out])

    def band(self, method: str, x, *, kind: str = "t", inflation=1.0) -> Band:
        """The centre and 68%/95% bands of `method` over the replicas at positions `x`
        (see `band`; centred as the set's `centre`)."""
        return band(self.values(method, x), kind=kind, inflation=inflation, centre=self.centre)

    def parameters(self) -> dict[str, np.ndarray]:
        """Each analytic parameter's value in every replica (shape (K,)); `{}` for learned
        potentials."""
        per = [analytic_parameters(m.potential) for m in self.models]
        return {name: np.array([p[name] for p in per]) for name in per[0]}

    def parameter_bands(self, *, kind: str = "t", inflation=1.0) -> Mapping[str, Band]:
        """The `Band` of each analytic parameter over the replicas."""
        return {k: band(v, kind=kind, inflation=inflation, centre=self.centre)
                for k, v in self.parameters().items()}
