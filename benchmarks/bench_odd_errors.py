"""Which score errors bias a potential fit: errors of ln f that are odd under a symmetry of
the system against errors that are even (exact Plummer scores, perturbed on purpose).

    python -m benchmarks.bench_odd_errors

The CBE operator D = v·∂_x − ∇Φ·∂_v flips the parity of a function under v_r → −v_r in a
spherical potential, and ∂R/∂θ = −∇(∂Φ/∂θ)·∂ln f/∂v is odd for a spherical family. So an
error δ(w) of ln f that is odd in v_r leaves a residual D δ that is even, whose product with
the odd ∂R/∂θ averages to zero over stars that have the symmetry: it cannot bias the fit to
first order. An even error can. This script checks it on 2^16 exact Plummer stars: it adds
ε ∇δ to the exact scores, for an odd δ = tanh(v_r) and an even δ = tanh(r) (the density
profile misjudged), and fits `Plummer(m_tot, r_s)` (started at (1.3, 1.5); 1500 steps of
4096, cosine, the loss ln(Stationarity)). Truth: m_tot = r_s = 1. Rows are printed as
measured and written to `benchmarks/results/odd_errors_cpu.json`.

This is why `Reflected` (which removes the odd part of a flow's error exactly) lowers the
median score errors but not the force errors of spherical or axisymmetric fits
(docs/results.md).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

import deeppot as dp

from . import _harness as harness


def v_r(w):
    return jnp.sum(w[:3] * w[3:]) / jnp.linalg.norm(w[:3])


PERTURBATIONS = {
    "odd: tanh(v_r)": lambda w: jnp.tanh(v_r(w)),
    "even: tanh(r)": lambda w: jnp.tanh(jnp.linalg.norm(w[:3])),
}


def median_rel(a, b):
    return float(jnp.median(jnp.linalg.norm(a - b, axis=-1) / jnp.linalg.norm(b, axis=-1)))


def fit(w, sx, sv, key):
    scores = dp.ScoreSample(w[:, :3], w[:, 3:], sx, sv)
    model = dp.PotentialModel(dp.Plummer(m_tot=1.3, r_s=1.5))
    fitted = dp.fit_potential(model, scores, dp.terms.Log(dp.terms.Stationarity()), key=key,
                              max_steps=1500, batch_size=4096, learning_rate=2e-2,
                              warmup_steps=500, progress=False)
    return float(fitted.potential.m_tot), float(fitted.potential.r_s)


def main(argv=None):
    harness.parser(__doc__, __file__).parse_args(argv)
    truth = dp.flows.PlummerDF(r_max=10.0)
    w = truth.sample(jax.random.key(0), 2**16)
    sx, sv = truth.score(w)
    rows = []
    m, r = fit(w, sx, sv, jax.random.key(1))
    rows.append({"perturbation": "none", "eps": 0.0, "m_tot": m, "r_s": r})
    print(json.dumps(rows[-1]), flush=True)
    for name, delta in PERTURBATIONS.items():
        grad = jax.vmap(jax.grad(delta))(w)
        for eps in (0.1, 0.3):
            px, pv = sx + eps * grad[:, :3], sv + eps * grad[:, 3:]
            m, r = fit(w, px, pv, jax.random.key(1))
            rows.append({"perturbation": name, "eps": eps, "m_tot": m, "r_s": r,
                         "score_err_x": median_rel(px, sx), "score_err_v": median_rel(pv, sv)})
            print(json.dumps(rows[-1]), flush=True)
    harness.write_results("odd_errors_cpu", {"command": harness.command(__file__, argv),
                                             "rows": rows})


if __name__ == "__main__":
    main()
