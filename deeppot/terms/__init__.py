"""Loss terms for the potential fit; they compose with `+` and scalar `*`.

A user-written term subclasses `AbstractTerm` and implements `evaluate`:

```python
import typing
import jax.numpy as jnp
import deeppot as dp

@typing.final
class CircularSpeedAt(dp.terms.AbstractTerm):
    '''Pull v_c at radius r0 in the midplane towards a measured value.'''
    r0: float
    v_c: float
    sigma: float

    def evaluate(self, model, batch, fields):
        x = jnp.array([self.r0, 0.0, 0.0])
        v_model = jnp.sqrt(self.r0 * model.potential._gradient(x)[0])
        return ((v_model - self.v_c) / self.sigma) ** 2

loss = dp.terms.Stationarity() + dp.terms.PositiveDensity() + 0.01 * CircularSpeedAt(1.0, 0.7, 0.01)
```
"""

from ._base import AbstractTerm as AbstractTerm
from ._base import Fields as Fields
from ._base import Log as Log
from ._base import WeightedSum as WeightedSum
from ._physics import AzimuthalMeanPenalty as AzimuthalMeanPenalty
from ._physics import L2Weights as L2Weights
from ._physics import PositiveDensity as PositiveDensity
from ._physics import Stationarity as Stationarity
from ._physics import SymmetryPenalty as SymmetryPenalty
from ._profiled import ProfiledStationarity as ProfiledStationarity
from ._profiled import profiled_residuals as profiled_residuals
from ._profiled import profiled_scores as profiled_scores
