"""Tiny pipeline runs for the integration tests."""


def tiny_run(*, seed: int, n: int, width: int, depth: int, steps: int) -> dict:
    """The raw config of a tiny run: `n` exact Plummer scores (no flow to train) and a small
    spherical network fitted for `steps` steps in batches of n/4, checkpointed three times
    and evaluated on n/2 points, so that a test spends its time on the pipeline's logic, not
    on training."""
    return {
        "run": {"seed": seed, "progress": False},
        "data": {"source": "plummer", "n": n},
        "df": {"kind": "exact"},
        "scores": {"n": n, "chunk_size": 1024},
        "potential": {"model": "spherical", "width": width, "depth": depth, "input_scale": 2.0},
        "fit": {"steps": steps, "batch_size": n // 4, "warmup_steps": 5,
                "checkpoint_every": steps // 3},
        "evaluate": {"n_points": n // 2, "plots": False},
    }
