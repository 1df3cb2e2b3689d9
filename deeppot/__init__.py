"""deeppot: gravitational potentials from phase-space snapshots (Deep Potential) in JAX."""

from . import evaluate as evaluate
from . import flows as flows
from . import mocks as mocks
from . import orbits as orbits
from . import pipeline as pipeline
from . import potentials as potentials
from . import registry as registry
from . import terms as terms
from ._errors import CheckpointError as CheckpointError
from ._errors import ConfigError as ConfigError
from ._errors import DeeppotError as DeeppotError
from ._errors import TrainingError as TrainingError
from .catalog import PhaseSpaceCatalog as PhaseSpaceCatalog
from .frames import AbstractFrame as AbstractFrame
from .frames import InertialFrame as InertialFrame
from .frames import MovingFrame as MovingFrame
from .frames import RotatingFrame as RotatingFrame
from .laplacian import value_grad_laplacian as value_grad_laplacian
from .model import PotentialModel as PotentialModel
from .modelfile import load_model as load_model
from .modelfile import save_model as save_model
from .potentials import NFW as NFW
from .potentials import AbstractPotential as AbstractPotential
from .potentials import Axisymmetric as Axisymmetric
from .potentials import CompositePotential as CompositePotential
from .potentials import Hernquist as Hernquist
from .potentials import Isochrone as Isochrone
from .potentials import Kepler as Kepler
from .potentials import Logarithmic as Logarithmic
from .potentials import LongMuraliBar as LongMuraliBar
from .potentials import MiyamotoNagai as MiyamotoNagai
from .potentials import NeuralPotential as NeuralPotential
from .potentials import Plummer as Plummer
from .potentials import Spherical as Spherical
from .scores import ScoreSample as ScoreSample
from .scores import sample_scores as sample_scores
from .train import TrainHistory as TrainHistory
from .train import fit as fit
from .train import fit_df as fit_df
from .train import fit_potential as fit_potential

__version__ = "0.1.0.dev0"
