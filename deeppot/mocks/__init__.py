"""Mock catalogues with known truth: Plummer sphere, Miyamoto–Nagai disk, barred galaxies,
noise, selection."""

from ._bar import azimuthal_circular_velocity as azimuthal_circular_velocity
from ._bar import bar_initial_conditions as bar_initial_conditions
from ._bar import barred_disk as barred_disk
from ._bar import barred_potential as barred_potential
from ._bar import corotation_radius as corotation_radius
from ._bar import jacobi_bar as jacobi_bar
from ._bar import lagrange_point as lagrange_point
from ._common import describe_potential as describe_potential
from ._common import truth_df as truth_df
from ._common import truth_potential as truth_potential
from ._disk import disk_initial_conditions as disk_initial_conditions
from ._disk import midplane_periods as midplane_periods
from ._disk import miyamoto_nagai_disk as miyamoto_nagai_disk
from ._observe import observe as observe
from ._observe import sample_selected as sample_selected
from ._observe import select as select
from ._observe import select_sphere as select_sphere
from ._observe import sphere_mask as sphere_mask
from ._plummer import plummer as plummer

__all__ = [
    "azimuthal_circular_velocity",
    "bar_initial_conditions",
    "barred_disk",
    "barred_potential",
    "corotation_radius",
    "jacobi_bar",
    "lagrange_point",
    "describe_potential",
    "disk_initial_conditions",
    "midplane_periods",
    "miyamoto_nagai_disk",
    "observe",
    "plummer",
    "sample_selected",
    "select",
    "select_sphere",
    "sphere_mask",
    "truth_df",
    "truth_potential",
]
