"""The disk and halo systems of the DF benchmarks: their catalogues (cached), the DF
variants as `[df]` settings built by `deeppot.pipeline.build_df`, and case (c)'s analytic
Miyamoto–Nagai fits."""

from __future__ import annotations

import os
import re

import diffrax
import jax
import numpy as np

import deeppot as dp
from deeppot import pipeline
from deeppot.flows import FFJORD, AxisymmetricDF, ODESettings

from ._harness import CONFIGS

CACHE = os.environ.get("DEEPPOT_BENCH_CACHE", "/tmp/deeppot_bench_cache")
HEUN4 = ODESettings(solver=diffrax.Heun(), n_steps=4)
# the potential fits of benchmarks/reproduce.py's case (c), and its smoke-run sizes
QUICK_FIT = ["fit.steps=100", "fit.warmup_steps=10", "fit.batch_size=512"]


def map_ffjords(df, fn):
    """Apply `fn` to every `FFJORD` inside `df` (wrappers, ensembles)."""
    def is_ffjord(x):
        return isinstance(x, FFJORD)

    return jax.tree.map(lambda x: fn(x) if is_ffjord(x) else x, df, is_leaf=is_ffjord)


def case_config(name: str, quick: bool):
    """The settings of `benchmarks/configs/<name>.toml` (smoke-run fit sizes if `quick`)."""
    return pipeline.load_config(CONFIGS / f"{name}.toml", QUICK_FIT if quick else ())


def fit_miyamoto_nagai(scores, key, quick):
    """Case (c)'s analytic fits: (m_tot, a, b) free, and (a, b) with the mass fixed."""
    out = {}
    for label, name in (("free_mass", "case-c-mn"), ("fixed_mass", "case-c-mn-fixed")):
        cfg = case_config(name, quick)
        fitted, info = pipeline.train_potential(cfg.potential, cfg.fit, scores, key)
        out[label] = {p: float(getattr(fitted.potential, p)) for p in ("m_tot", "a", "b")}
        out[label]["fit"] = info
    return out


def _cached(name, make):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, name + ".npz")
    if os.path.exists(path):
        with np.load(path) as d:
            return dp.PhaseSpaceCatalog(d["x"], d["v"])
    cat = make()
    np.savez(path, x=np.asarray(cat.x), v=np.asarray(cat.v))
    return cat


def load_system(system: str, n: int):
    """(training catalogue, truth potential, held-out catalogue, exact scores or None)."""
    if system in ("disk", "disk8"):
        n_dyn = 128 if system == "disk" else 8

        def make(seed, m):
            return dp.mocks.miyamoto_nagai_disk(jax.random.key(seed), m, n_dyn=n_dyn, workers=2)

        train = _cached(f"{system}_{n}", lambda: make(0, n))
        test = _cached(f"{system}_test_16384", lambda: make(1, 2**14))
        return train, dp.MiyamotoNagai(1.0, 1.0, 0.1), test, None
    from . import _galpy_halo as halos

    if system == "halo":
        train = _cached(f"hernquist_om_{n}", lambda: halos.hernquist_halo(0, n)[0])
        test = _cached("hernquist_om_test_16384", lambda: halos.hernquist_halo(1, 2**14)[0])
        return train, dp.Hernquist(1.0, 1.0), test, halos.hernquist_exact_scores()
    train = _cached(f"halo_{n}", lambda: halos.nfw_halo(0, n)[0])
    test = _cached("halo_test_16384", lambda: halos.nfw_halo(1, 2**14)[0])
    return train, dp.NFW(1.0, 1.0), test, halos.NFWGalpyScores()


# the DF variants: `[df]` settings of a one-block FFJORD (`None`: the system's group)
_SPHERICAL = {"symmetry": "spherical", "tangential": "speed", "scale_velocities": False}
VARIANTS = {
    "general": {},
    "general-aug": {"augment": None},
    "axisymmetric": {"symmetry": "axisymmetric"},
    "axisymmetric-mirror": {"symmetry": "axisymmetric", "augment": "mirror_z"},
    "spherical": _SPHERICAL,
    "spherical-scaled": _SPHERICAL | {"scale_velocities": True},
    "spherical-vector": _SPHERICAL | {"tangential": "vector"},
    "spherical-vector-scaled": _SPHERICAL | {"tangential": "vector", "scale_velocities": True},
}
# a variant name: one of VARIANTS, then `-q<Q>` (an AxisymmetricDF's z₀ quantile, which
# [df] does not set; default 0.2), then `-reflect` ([df] reflect = true)
_NAME = re.compile(r"(?P<base>.+?)(?:-q(?P<q>[0-9.]+))?(?P<reflect>-reflect)?")


def df_settings(variant: str, system: str, width: int, depth: int, activation: str):
    """(`[df]` section as `DFConfig`, AxisymmetricDF quantile or None) of a variant."""
    m = _NAME.fullmatch(variant)
    if m is None or m["base"] not in VARIANTS or (m["q"] and "axisymmetric" not in m["base"]):
        raise ValueError(f"unknown variant {variant!r}: one of {sorted(VARIANTS)}, "
                         "then -q<Q> (axisymmetric), then -reflect")
    settings = dict(VARIANTS[m["base"]])
    if "augment" in settings and settings["augment"] is None:
        settings["augment"] = ("spherical" if system.startswith("halo")
                               else "axisymmetric_mirror_z")
    df = {"kind": "ffjord", "reflect": bool(m["reflect"]), **settings,
          "params": {"n_blocks": 1, "width": width, "depth": depth, "activation": activation}}
    return pipeline.parse_config({"df": df}).df, float(m["q"]) if m["q"] else None


def make_df(variant: str, system: str, key, width: int, depth: int, activation: str):
    """The untrained DF of a variant (`deeppot.pipeline.build_df`)."""
    cfg, quantile = df_settings(variant, system, width, depth, activation)
    df = pipeline.build_df(cfg, key)
    if quantile is None:
        return df

    def is_axisymmetric(x):
        return isinstance(x, AxisymmetricDF)

    return jax.tree.map(lambda x: AxisymmetricDF(x.inner, quantile=quantile)
                        if is_axisymmetric(x) else x, df, is_leaf=is_axisymmetric)
