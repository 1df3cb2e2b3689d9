"""Write the small trained networks the export tests use (tests/data/trained_*.eqx).

Each of a `NeuralPotential`, a `Spherical` and an `Axisymmetric` network (width 32, depth 2,
as in `tests/models.py`) is fitted to exact scores of the Plummer sphere (`PlummerDF`, 2^14
points) for 1500 steps, in float32 as a user would train it. The files are small (a few
kB); regenerate them with

    PYTHONPATH=. python tests/data/make_trained_models.py

(about 2 CPU minutes).
"""

from pathlib import Path

import jax
import numpy as np

import deeppot as dp
from deeppot.evaluate import radial_region, residuals, summarise
from tests.models import NEURAL

HERE = Path(__file__).parent
NAMES = ("neural", "spherical", "axisymmetric")


def main() -> None:
    scores = dp.sample_scores(dp.flows.PlummerDF(), jax.random.key(0), 2**14)
    x = np.asarray(scores.x[:4096])
    for i, name in enumerate(NAMES):
        model = dp.fit_potential(dp.PotentialModel(NEURAL[name]()), scores,
                                 key=jax.random.key(10 + i), max_steps=1500, batch_size=1024,
                                 warmup_steps=100, progress=False)
        res = residuals(model, dp.Plummer(), x)
        err = summarise(res, radial_region(res, 0.1, 3.0))["force"]["median"]
        meta = {"trained_on": "PlummerDF exact scores, 2^14 points, 1500 steps",
                "median_force_error_r_0.1_3": err}
        dp.save_model(HERE / f"trained_{name}.eqx", model.potential, meta)
        print(f"{name}: median force error {100 * err:.1f}% for r in [0.1, 3]", flush=True)


if __name__ == "__main__":
    main()
