"""Gravitational potentials: analytic families, neural networks, symmetry wrappers, sums."""

from ._analytic import NFW as NFW
from ._analytic import Hernquist as Hernquist
from ._analytic import Isochrone as Isochrone
from ._analytic import Kepler as Kepler
from ._analytic import Logarithmic as Logarithmic
from ._analytic import LongMuraliBar as LongMuraliBar
from ._analytic import MiyamotoNagai as MiyamotoNagai
from ._analytic import Plummer as Plummer
from ._analytic import PowerLawCutoff as PowerLawCutoff
from ._base import AbstractPotential as AbstractPotential
from ._base import batched_value_grad_laplacian as batched_value_grad_laplacian
from ._composite import CompositePotential as CompositePotential
from ._mlp_laplacian import mlp_forward_laplacian as mlp_forward_laplacian
from ._neural import FEATURES as FEATURES
from ._neural import AbstractNeuralPotential as AbstractNeuralPotential
from ._neural import Axisymmetric as Axisymmetric
from ._neural import NeuralPotential as NeuralPotential
from ._neural import Spherical as Spherical
from ._neural import TanhMLP as TanhMLP
from ._neural import axisymmetric_plus_neural as axisymmetric_plus_neural
from ._tail import RAY_BLEND_WIDTHS as RAY_BLEND_WIDTHS
from ._tail import WithTail as WithTail
from ._tail import shell_points as shell_points
