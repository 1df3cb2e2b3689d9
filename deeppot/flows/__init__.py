"""Distribution-function models: continuous (FFJORD) and spline flows, ensembles, analytic,
symmetry-reduced wrappers."""

from ._analytic import HernquistDF as HernquistDF
from ._analytic import PlummerDF as PlummerDF
from ._augment import Augmented as Augmented
from ._augment import symmetry_transform as symmetry_transform
from ._axisymmetric import AxisymmetricDF as AxisymmetricDF
from ._base import AbstractContinuousFlowDF as AbstractContinuousFlowDF
from ._base import AbstractDF as AbstractDF
from ._base import AbstractFlowDF as AbstractFlowDF
from ._base import AbstractTrainableDF as AbstractTrainableDF
from ._base import autodiff_score as autodiff_score
from ._conditional import AbstractConditionalDF as AbstractConditionalDF
from ._conditional import ConditionalDF as ConditionalDF
from ._conditional import ConditionalPlummerDF as ConditionalPlummerDF
from ._ensemble import Ensemble as Ensemble
from ._ffjord import FFJORD as FFJORD
from ._ffjord import FFJORDBlock as FFJORDBlock
from ._ffjord import ODESettings as ODESettings
from ._ffjord import PairInvariantTimeMLP as PairInvariantTimeMLP
from ._ffjord import TimeMLP as TimeMLP
from ._jacobi import JacobiDF as JacobiDF
from ._precondition import Precondition as Precondition
from ._profile import VelocityProfile as VelocityProfile
from ._reduced import AbstractSymmetricDF as AbstractSymmetricDF
from ._reflect import REFLECTIONS as REFLECTIONS
from ._reflect import Reflected as Reflected
from ._reflect import reflect as reflect
from ._spherical import SphericalDF as SphericalDF
from ._spline import SplineFlow as SplineFlow
