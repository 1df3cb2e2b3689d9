"""Case (c)'s analytic Miyamoto–Nagai fits from a run's trained DF, as it is and averaged
over reflections (`deeppot.flows.Reflected`).

    python -m benchmarks.bench_reflect_fits runs/disk_axidf none meridional_velocity \\
        meridional_velocity+mirror_z --tag c
    python -m benchmarks.bench_reflect_fits runs/cased_axi256 none meridional_velocity \\
        meridional_velocity+mirror_z --tag d

Each variant names the reflections joined by `+` (`none`: the DF unchanged; a run made
with `[df] reflect = true` already holds the velocity reflection). For each, 2^16 scores
are drawn (the same key for every variant; `--score-seed` changes it) and fitted with
`benchmarks/configs/case-c-mn.toml` (m_tot, a, b free) and `case-c-mn-fixed.toml` (the
mass fixed at the truth); truth a = 1, b = 0.1. Rows are printed as measured and written to
`benchmarks/results/reflect_fits_<tag>.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

import deeppot as dp
from deeppot.flows import Reflected
from deeppot.modelfile import load_model

from . import _harness as harness
from ._systems import fit_miyamoto_nagai


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("run_dir")
    p.add_argument("variants", nargs="+")
    p.add_argument("--n-scores", type=int, default=2**16)
    p.add_argument("--score-seed", type=int, default=11,
                   help="key of the score sample (vary it to see the sampling noise)")
    p.add_argument("--tag", required=True)
    args = p.parse_args(argv)
    df, _ = load_model(Path(args.run_dir) / "df.eqx")
    rows = []
    for variant in args.variants:
        names = [] if variant == "none" else variant.split("+")
        model = Reflected(df, names) if names else df
        t = time.perf_counter()
        scores = dp.sample_scores(model, jax.random.key(args.score_seed), args.n_scores)
        row = {"run": args.run_dir, "df": type(df).__name__, "reflections": names,
               "score_seed": args.score_seed,
               "score_s": round(time.perf_counter() - t, 1)}
        row |= fit_miyamoto_nagai(scores, jax.random.key(5), quick=False)
        rows.append(row)
        print(json.dumps(row), flush=True)
    harness.write_results(f"reflect_fits_{args.tag}",
                          {"command": harness.command(__file__, argv), "rows": rows})


if __name__ == "__main__":
    main()
