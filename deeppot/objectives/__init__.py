"""Training objectives of the distribution functions, beside the potential's `terms`.

An objective is a loss object, `objective(df, w, key) -> scalar`, holding its own settings;
the DF holds none. A trainable DF names the registered objectives it supports (its
`objectives`, the first its default) and offers the primitives they need: a log-density
for maximum likelihood, the velocity fields of a continuous flow for flow matching and for
the regularised, stochastic-trace likelihood. Wrappers (`SphericalDF`, `AxisymmetricDF`,
`Augmented`, `Reflected`) carry the batch to their inner flow's coordinates in
`objective_loss` and forward it, so one objective trains every composition.

```python
import jax
import deeppot as dp

stars = dp.mocks.plummer(jax.random.key(0), 512)
df = dp.flows.FFJORD(jax.random.key(1), width=16, depth=2)
df = dp.fit_df(df, stars, key=jax.random.key(2), max_steps=5, progress=False,
               objective=dp.objectives.MaximumLikelihood(trace="exact"))
```

A user-written objective subclasses `AbstractObjective`, implements `flow_loss` and is
registered in `deeppot.registry.objectives` so that a DF can name it.
"""

from ._base import AbstractObjective as AbstractObjective
from ._base import as_objective as as_objective
from ._likelihood import MaximumLikelihood as MaximumLikelihood
from ._matching import FlowMatching as FlowMatching
