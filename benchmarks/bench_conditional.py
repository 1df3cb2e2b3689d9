"""Conditional DFs f = ν(x) p(v|x) (`deeppot.flows.ConditionalDF`) on Plummer spheres.

    python -m benchmarks.bench_conditional --case scores --transformer affine
    python -m benchmarks.bench_conditional --case window --route selection free

Cases:
  scores   2^16 exact Plummer stars (r_max = 10), the general (no symmetry) conditional DF;
           median relative score errors ∂ln f/∂x, ∂ln f/∂v against `PlummerDF` at 2^14
           fresh truth points, as `benchmarks/bench_scores.py` measures the 6-D DFs.
  window   the Plummer sphere seen through a sphere of radius 1 centred at (1, 0, 0)
           (`--n` stars kept), a conditional DF with a spherical velocity factor and a
           general density factor, and a `Spherical` neural potential fitted by each
           `--route`: `selection` (scores of ν corrected by the known S: inside a hard
           window ∇ln S = 0, so these are the observed DF's own) or `free` (∇ln ν profiled
           out, `ProfiledStationarity`, with `--k` velocities drawn at each catalogue
           position); median relative force error at the kept stars. `--exact` uses the
           exact `ConditionalPlummerDF` instead of a trained one (the route's floor).

Each row is printed when measured; JSON goes to benchmarks/results/conditional_<case>_<tag>.json.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import deeppot as dp
from deeppot.flows import ConditionalDF, ConditionalPlummerDF, PlummerDF

from . import _harness as harness


def _df(args, symmetry, density_symmetry):
    return ConditionalDF(jax.random.key(args.seed), symmetry=symmetry,
                         density_symmetry=density_symmetry, kind=args.kind,
                         transformer=args.transformer, flow_layers=args.layers,
                         nn_width=args.width, nn_depth=args.depth, knots=args.knots)


def _train(args, df, w):
    t0, c0 = time.perf_counter(), harness.cpu_seconds()
    df = dp.fit_df(df, w, key=jax.random.key(args.seed + 1), max_steps=args.steps,
                   batch_size=args.batch_size, learning_rate=args.lr, progress=False)
    return df, {"train_wall_s": time.perf_counter() - t0,
                "train_cpu_s": harness.cpu_seconds() - c0}


def _rel(a, b):
    return jnp.linalg.norm(a - b, axis=-1) / jnp.linalg.norm(b, axis=-1)


def _scores_case(args):
    truth = PlummerDF(r_max=10.0)
    w = truth.sample(jax.random.key(2024), args.n)
    test = truth.sample(jax.random.key(7), 2**14)
    df, row = _train(args, _df(args, "none", None), w)
    sx, sv = df.score(test)
    tx, tv = truth.score(test)
    ex, ev = _rel(sx, tx), _rel(sv, tv)
    row.update(heldout_nll=float(-jnp.mean(df.log_prob(test))),
               median_err_dlnf_dx=float(jnp.median(ex)),
               median_err_dlnf_dv=float(jnp.median(ev)),
               p90_err_dlnf_dx=float(jnp.quantile(ex, 0.9)),
               p90_err_dlnf_dv=float(jnp.quantile(ev, 0.9)))
    print(row, flush=True)
    return [row]


def _window_stars(n, key):
    """n Plummer stars inside the sphere |x − (1, 0, 0)| < 1."""
    centre = jnp.array([1.0, 0.0, 0.0])
    kept, k = [], key
    total = 0
    while total < n:
        k, sub = jax.random.split(k)
        w = PlummerDF(r_max=10.0).sample(sub, 4 * n)
        w = w[jnp.linalg.norm(w[:, :3] - centre, axis=-1) < 1.0]
        kept.append(w)
        total += w.shape[0]
    return jnp.concatenate(kept)[:n]


def _force_error(model, x):
    true = x * (1.0 + jnp.sum(x**2, -1, keepdims=True)) ** -1.5
    got = jax.vmap(model.potential._gradient)(x)
    return float(jnp.median(_rel(got, true)))


def _window_case(args):
    stars = _window_stars(args.n, jax.random.key(2024))
    if args.exact:
        df, base = ConditionalPlummerDF(r_max=10.0), {"df": "exact"}
    else:
        df, base = _train(args, _df(args, "spherical", "none"), stars)
        base["df"] = "trained"
    rows = []
    test_x = _window_stars(2**13, jax.random.key(9))[:, :3]
    for route in args.route:
        t0 = time.perf_counter()
        pot = dp.Spherical.mlp(key=jax.random.key(3), width=64, depth=3)
        if route == "selection":
            # a hard window: ∇ln S = 0 inside, so the corrected scores are the observed DF's
            scores = dp.sample_scores(df, jax.random.key(4), args.n_scores)
            if args.exact:  # the truth's own scores at stars inside the window
                w = _window_stars(args.n_scores, jax.random.key(4))
                sx, sv = df.score(w)
                scores = dp.ScoreSample(w[:, :3], w[:, 3:], sx, sv)
            loss = dp.terms.Stationarity()
        else:
            scores = dp.sample_velocity_scores(df, jax.random.key(4), stars[:, :3], args.k)
            loss = dp.terms.ProfiledStationarity()
        model = dp.fit_potential(dp.PotentialModel(pot), scores, loss + dp.terms.PositiveDensity(),
                                 key=jax.random.key(5), max_steps=args.fit_steps,
                                 progress=False)
        row = {**base, "route": route, "fit_wall_s": time.perf_counter() - t0,
               "median_force_err": _force_error(model, test_x)}
        print(row, flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("--case", choices=("scores", "window"), default="scores")
    p.add_argument("--route", nargs="+", choices=("selection", "free"),
                   default=["selection", "free"])
    p.add_argument("--exact", action="store_true")
    p.add_argument("--n", type=int, default=2**16)
    p.add_argument("--n-scores", type=int, default=2**16)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--kind", default="coupling")
    p.add_argument("--transformer", default="affine")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--knots", type=int, default=8)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fit-steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    rows = _scores_case(args) if args.case == "scores" else _window_case(args)
    stem = f"conditional_{args.case}" + (f"_{args.tag}" if args.tag else "")
    harness.write_results(stem, {"command": harness.command(__file__), "args": vars(args),
                                 "rows": rows}, None)


if __name__ == "__main__":
    main()
