"""Levers on the spherical DF's score error, with the error split by radius (issue 10).

    python -m benchmarks.bench_sph_levers base                    # SphericalDF, 3×128 tanh
    python -m benchmarks.bench_sph_levers flip                    # + the v_r → −v_r copies
    python -m benchmarks.bench_sph_levers n18                     # 2^18 training stars
    python -m benchmarks.bench_sph_levers base --width 256 --activation silu
    python -m benchmarks.bench_sph_levers base --smooth 0.01 0.03 # + post-hoc smoothing
    python -m benchmarks.bench_sph_levers base --tangential vector # v_t as a 2-D vector
    python -m benchmarks.bench_sph_levers base --tangential vector --scale-velocities
    python -m benchmarks.bench_sph_levers base --log2-stars 21 --steps 45000  # data vs steps
    python -m benchmarks.bench_sph_levers base --tangential vector --reuse --reflect

Trains `SphericalDF(FFJORD(dim=3))` (with `--tangential vector`,
`SphericalDF(FFJORD(dim=4, pair_invariant=True), tangential="vector")`) by flow matching
(cosine schedule, EMA 0.998, batch 2048) on exact Plummer stars (`PlummerDF(r_max=10)`),
then prints one JSON row: the median relative score errors ∂ln f/∂x and ∂ln f/∂v at 2^14
fresh truth points (Tsit5×4), the same in radial bins ([median ∂x, median ∂v, points] per
bin), and the held-out NLL above the exact DF's. Variants:

- `base`: 2^16 stars;
- `flip`: the 2^16 stars and their copies with the radial velocity reversed
  (v → v − 2 (v·r̂) r̂, which keeps E and the angular-momentum vector, so it is a
  symmetry of every stationary spherical DF f(E, L));
- `n18`: 2^18 stars (the data-size diagnostic; the same as `base --log2-stars 18`).

`--log2-stars k` trains on 2^k stars (default 16); with k = 21 and 15000 steps of 2048 each
star is seen ~15 times, close to fresh data every batch, which separates the error that
comes from the finite sample from the error of the flow and its training.

`--smooth σ…` also scores each test point as the mean score over 8 perturbed copies
(x and v each moved by σ|x| and σ|v| times a standard normal): a test of whether the error
is small-scale ripple (smoothing would remove it) or a larger-scale bias (it would not).
`--reflect` scores the trained DF averaged over v_r → −v_r (`Reflected(df,
"radial_velocity")`, a symmetry of every stationary spherical DF). The trained DF goes to
`runs/sph/<variant>_<steps>_<width><activation>[...].eqx`; `--reuse` reads it from there
instead of training when it exists. Rows are appended to
`benchmarks/results/sph_levers_cpu.jsonl`.
"""

from __future__ import annotations

import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from deeppot.flows import FFJORD, ODESettings, PlummerDF, Reflected, SphericalDF, reflect
from deeppot.train import fit_df

from . import _harness as harness

RUNS = harness.ROOT / "runs" / "sph"
BINS = ((0.0, 0.3), (0.3, 1.0), (1.0, 3.0), (3.0, 10.0))
CHUNK = 2048


def scores(df, w):
    """(n, 6) scores; the DF evaluates them in chunks of its `chunk_size`."""
    return jnp.concatenate(df.score(w), -1)


def relative_errors(s, exact):
    def rel(a, b):
        return np.asarray(jnp.linalg.norm(a - b, axis=-1) / jnp.linalg.norm(b, axis=-1))

    return rel(s[:, :3], exact[:, :3]), rel(s[:, 3:], exact[:, 3:])


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("variant", choices=("base", "flip", "n18"))
    p.add_argument("--steps", type=int, default=15000)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--activation", choices=("tanh", "silu"), default="tanh")
    p.add_argument("--smooth", type=float, nargs="*", default=[])
    p.add_argument("--tangential", choices=("speed", "vector"), default="speed")
    p.add_argument("--scale-velocities", action="store_true",
                   help="divide the velocities by fitted dispersion profiles")
    p.add_argument("--reflect", action="store_true",
                   help="score the DF averaged over v_r -> -v_r (Reflected)")
    p.add_argument("--reuse", action="store_true",
                   help="read the trained DF from runs/sph when it is there")
    p.add_argument("--log2-stars", type=int, default=None,
                   help="train on 2^k stars (default 16; 18 for the n18 variant)")
    args = p.parse_args(argv)

    truth = PlummerDF(r_max=10.0)
    log2_stars = args.log2_stars or (18 if args.variant == "n18" else 16)
    w_train = truth.sample(jax.random.key(2024), 2**log2_stars)
    w_test = truth.sample(jax.random.key(7), 2**14)
    if args.variant == "flip":
        w_train = jnp.concatenate([w_train, reflect(w_train, "radial_velocity")])
    act = {"tanh": jnp.tanh, "silu": jax.nn.silu}[args.activation]
    vector = args.tangential == "vector"
    df = SphericalDF(FFJORD(jax.random.key(102), dim=4 if vector else 3, n_blocks=1,
                            width=args.width, depth=3, activation=act, chunk_size=CHUNK,
                            pair_invariant=vector), tangential=args.tangential,
                     scale_velocities=args.scale_velocities)
    tsit4 = ODESettings(solver=diffrax.Tsit5(), n_steps=4)
    tag = (f"{args.variant}_{args.steps}_{args.width}{args.activation}" + ("_vector" * vector)
           + ("_scaled" * args.scale_velocities)
           + (f"_n{log2_stars}" if args.log2_stars else ""))
    path = RUNS / f"{tag}.eqx"
    train_s = None
    if args.reuse and path.exists():
        df = eqx.tree_deserialise_leaves(
            path, eqx.tree_at(lambda d: d.inner, df, df.inner.with_ode(tsit4)))
    else:
        t = time.perf_counter()
        df = fit_df(df, w_train, key=jax.random.key(202), objective="cfm", progress=False,
                    max_steps=args.steps, batch_size=2048, learning_rate=2e-3,
                    ema_decay=0.998, warmup_steps=500, patience=10**9, lr_schedule="cosine")
        train_s = round(time.perf_counter() - t)
        df = eqx.tree_at(lambda d: d.inner, df, df.inner.with_ode(tsit4))
        RUNS.mkdir(parents=True, exist_ok=True)
        eqx.tree_serialise_leaves(path, df)
    if args.reflect:
        df, tag = Reflected(df, "radial_velocity"), tag + "_reflect"

    exact = scores(truth, w_test)
    ex, ev = relative_errors(scores(df, w_test), exact)
    r = np.linalg.norm(np.asarray(w_test[:, :3]), axis=-1)
    row = {"variant": tag, "train_s": train_s, "err_x": float(np.median(ex)),
           "err_v": float(np.median(ev))}
    for lo, hi in BINS:
        m = (r >= lo) & (r < hi)
        row[f"r{lo:g}-{hi:g}"] = [round(float(np.median(ex[m])), 4),
                                  round(float(np.median(ev[m])), 4), int(m.sum())]
    row["nll_minus_ideal"] = float(-df.log_prob(w_test).mean() + truth.log_prob(w_test).mean())
    rows = [row]
    scale = jnp.concatenate([jnp.repeat(jnp.linalg.norm(w_test[:, s], axis=-1, keepdims=True),
                                        3, -1) for s in (slice(0, 3), slice(3, 6))], -1)
    for sigma in args.smooth:
        total = sum(scores(df, w_test + sigma * scale * jax.random.normal(
            jax.random.key(50 + k), w_test.shape)) for k in range(8))
        sx, sv = relative_errors(total / 8, exact)
        rows.append({"variant": tag, "smooth_sigma": sigma, "K": 8,
                     "err_x": float(np.median(sx)), "err_v": float(np.median(sv))})
    harness.append_rows("sph_levers_cpu.jsonl", rows)


if __name__ == "__main__":
    main()
