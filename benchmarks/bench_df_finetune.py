"""Fine-tune a flow-matching DF on the Plummer sphere and follow its score error.

Loads a DF saved by `python -m benchmarks.bench_scores --save-dir` (a
`SphericalDF(FFJORD(dim=3))` or a 6-D `FFJORD`), then trains it further in segments with
one objective and prints, after each segment, the median score errors against the exact
`PlummerDF` at 2^14 truth points, the held-out NLL and the held-out score-matching loss
(Hyvärinen: ½|∇ln q|² + Δln q, which is the Fisher divergence ½E|∇ln q − ∇ln p|² up to a
constant, so it ranks models by score accuracy without knowing p). Objectives:

  nll_exact   exact-trace maximum likelihood of the flow as its fixed-step solver
              discretises it (the flow's own objective)
  sm          score matching on the flow's coordinates (prototype; loss below)

    python -m benchmarks.bench_df_finetune MODEL.eqx --symmetry spherical \
        --objective sm --segments 6 --segment-steps 250
"""

from __future__ import annotations

import json

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from deeppot.flows import FFJORD, ODESettings, PlummerDF, SphericalDF
from deeppot.objectives import MaximumLikelihood
from deeppot.train import fit, fit_df

from . import _harness as harness
from ._harness import cpu_seconds

TSIT4 = ODESettings(solver=diffrax.Tsit5(), n_steps=4)


def skeleton(symmetry, width, depth, activation):
    act = {"tanh": jnp.tanh, "silu": jax.nn.silu}[activation]
    dim = 3 if symmetry == "spherical" else 6
    flow = FFJORD(jax.random.key(0), dim=dim, n_blocks=1, width=width, depth=depth,
                  activation=act, chunk_size=2048).with_ode(TSIT4)
    return SphericalDF(flow) if symmetry == "spherical" else flow


def _flow_and_coords(df):
    """(the standardised flow, physical points → the flow's standardised coordinates)."""
    if isinstance(df, SphericalDF):
        return df.inner, lambda w: df.inner._to_std(df._features_batch(w)[0])
    return df, df._to_std


def _log_prob_direct(flow, u):
    """`flow._log_prob_std` at one point, solved as the evaluation solver does (Tsit5, four
    fixed steps) but with diffrax's `DirectAdjoint`, which any order and mode of
    differentiation goes through (the default checkpointed adjoint is reverse-mode only)."""
    z, total = u, jnp.zeros((), u.dtype)
    for block in reversed(flow.blocks):
        n = block.ode.n_steps
        term = diffrax.ODETerm(lambda t, y, args, b=block: b._exact_dynamics(t, y))
        sol = diffrax.diffeqsolve(term, block.ode.solver, 1.0, 0.0, -1.0 / n,
                                  (z, jnp.zeros((), u.dtype)),
                                  stepsize_controller=diffrax.ConstantStepSize(),
                                  adjoint=diffrax.DirectAdjoint(), max_steps=n)
        z, delta = (a[-1] for a in sol.ys)
        total = total + delta
    return -0.5 * jnp.sum(z**2) - 0.5 * z.shape[0] * jnp.log(2 * jnp.pi) + total


def sm_loss_std(flow, u):
    """Hyvärinen score matching on standardised coordinates, mean over the batch:
    ½|∇ln q|² + Δln q, with the Laplacian by forward-over-reverse differentiation."""
    grad = jax.grad(lambda p: _log_prob_direct(flow, p))

    def point(p):
        eye = jnp.eye(p.shape[0], dtype=p.dtype)
        g, hess = jax.vmap(lambda e: jax.jvp(grad, (p,), (e,)))(eye)
        return 0.5 * jnp.sum(g[0] ** 2) + jnp.trace(hess)

    return jnp.mean(jax.vmap(point)(u))


def metrics(df, truth, w_test):
    s = jnp.concatenate(df.score(w_test), -1)
    t = jnp.concatenate(truth.score(w_test), -1)

    def rel(a, b):
        return jnp.linalg.norm(a - b, axis=-1) / jnp.linalg.norm(b, axis=-1)

    flow, coords = _flow_and_coords(df)
    sm = float(eqx.filter_jit(sm_loss_std)(flow, coords(w_test[:2048])))
    return {"err_x": float(jnp.median(rel(s[:, :3], t[:, :3]))),
            "err_v": float(jnp.median(rel(s[:, 3:], t[:, 3:]))),
            "heldout_nll": float(-jnp.mean(df.log_prob(w_test))), "heldout_sm": sm}


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("model")
    p.add_argument("--symmetry", choices=("none", "spherical"), default="spherical")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--activation", choices=("tanh", "silu"), default="tanh")
    p.add_argument("--objective", choices=("nll_exact", "sm"), required=True)
    p.add_argument("--segments", type=int, default=6)
    p.add_argument("--segment-steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--n-train", type=int, default=2**16)
    p.add_argument("--tag", default="cpu")
    args = p.parse_args(argv)

    truth = PlummerDF(r_max=10.0)
    w_train = truth.sample(jax.random.key(2024), args.n_train)  # as bench_scores
    w_test = truth.sample(jax.random.key(7), 2**14)
    df = eqx.tree_deserialise_leaves(
        args.model, skeleton(args.symmetry, args.width, args.depth, args.activation))
    rows = [{"segment": 0, "steps": 0, "cpu_s": 0.0, **metrics(df, truth, w_test)}]
    print(json.dumps(rows[-1]), flush=True)
    cpu0 = cpu_seconds()
    for seg in range(1, args.segments + 1):
        key = jax.random.key(1000 + seg)
        if args.objective == "nll_exact":
            df = fit_df(df, w_train, key=key, objective=MaximumLikelihood(trace="exact"),
                        standardise=False,
                        max_steps=args.segment_steps, batch_size=args.batch,
                        learning_rate=args.lr, warmup_steps=20 if seg == 1 else 0,
                        lr_schedule="cosine", validate_every=50, progress=False)
        else:
            flow, coords = _flow_and_coords(df)
            u = coords(w_train)
            spec = jax.tree.map(eqx.is_inexact_array, flow)
            spec = eqx.tree_at(lambda f: (f.loc, f.scale), spec, (False, False))
            flow = fit(flow, lambda f, b, k: sm_loss_std(f, b), u, key=key,
                       max_steps=args.segment_steps, batch_size=args.batch,
                       learning_rate=args.lr, warmup_steps=20 if seg == 1 else 0,
                       lr_schedule="cosine", validate_every=50, trainable=spec,
                       progress=False)[0]
            df = eqx.tree_at(lambda d: d.inner, df, flow) if isinstance(df, SphericalDF) \
                else flow
        rows.append({"segment": seg, "steps": seg * args.segment_steps,
                     "cpu_s": round(cpu_seconds() - cpu0, 1), **metrics(df, truth, w_test)})
        print(json.dumps(rows[-1]), flush=True)
    out = {"command": harness.command(__file__, argv), "rows": rows}
    lines = ["| steps | CPU s | err ∂x | err ∂v | held-out NLL | held-out SM loss |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['steps']} | {r['cpu_s']:.0f} | {r['err_x']:.4f} | {r['err_v']:.4f} | "
              f"{r['heldout_nll']:.4f} | {r['heldout_sm']:.4f} |" for r in rows]
    harness.write_results(f"finetune_{args.tag}_{args.objective}", out,
                          f"Command: `{out['command']}`\n\n" + "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
