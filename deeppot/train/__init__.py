"""One training loop for distribution functions and potentials.

`fit` trains any Equinox model on any loss `loss_fn(model, batch, key) -> scalar` with an
optax optimiser, under the settings of one `TrainSettings`: a learning-rate schedule with a
linear warm-up (or any `optax.Schedule`), halving on plateaus, early stopping, gradient
clipping, a shuffled validation split, atomic checkpoints that resume bit-for-bit, a
progress bar and detection of non-finite losses or gradients. An optimiser with a line
search (L-BFGS) runs in the same loop on one fixed batch. `fit_df` applies it to the DF
models of `deeppot.flows` (recipe `DF_SETTINGS`), `fit_potential` to potentials
(`POTENTIAL_SETTINGS`) and `refine_potential` with L-BFGS.
"""

from ._fits import fit_df as fit_df
from ._fits import fit_potential as fit_potential
from ._fits import potential_loss_fn as potential_loss_fn
from ._fits import refine_potential as refine_potential
from ._loop import TrainHistory as TrainHistory
from ._loop import default_filter_spec as default_filter_spec
from ._loop import fit as fit
from ._settings import DF_SETTINGS as DF_SETTINGS
from ._settings import LR_SCHEDULES as LR_SCHEDULES
from ._settings import OPTIMIZERS as OPTIMIZERS
from ._settings import POTENTIAL_SETTINGS as POTENTIAL_SETTINGS
from ._settings import TrainSettings as TrainSettings
from ._step import make_train_step as make_train_step

__all__ = [
    "DF_SETTINGS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "POTENTIAL_SETTINGS",
    "TrainHistory",
    "TrainSettings",
    "default_filter_spec",
    "fit",
    "fit_df",
    "fit_potential",
    "make_train_step",
    "potential_loss_fn",
    "refine_potential",
]
