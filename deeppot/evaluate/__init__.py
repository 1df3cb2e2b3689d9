"""Accuracy of a recovered potential against a known truth, maps and plots.

Residuals (at tracer positions or on grids; `residuals_at` against a truth known only at
the stars, such as a simulation's recorded accelerations):

- potential: Φ − Φ_true with the constant offset (the median difference) removed,
  relative to the spread of Φ_true;
- force: |ΔF| / |F_true| and the per-component errors ΔF_i / |F_true|; the in-plane force
  |ΔF_xy| / |F_xy,true| (what a bar's pattern speed and torque depend on);
- density: (ρ − ρ_true) / ρ_true.

They are summarised as medians and percentiles inside regions (a radial range, a
cylinder, or ρ_true > fraction · ρ_max).

Rotating systems: `omega_landscape` (the loss against the pattern speed at a fitted
potential), `stationarity_moments` (d⟨g⟩/dt of a catalogue in a frame, from the true
potential: an exact test of a mock's stationarity), `nonaxisymmetric_force` and
`bar_force_residuals` (the recovered against the true non-axisymmetric force), and
`frame_dfdt_maps` (∂ln f/∂t in the x–y plane in several frames).

Modules: `_metrics` (residuals against a truth, their summaries, score errors),
`_diagnostics` (fit quality, loss landscapes, ∂ln f/∂t maps: no truth needed), `_regions`
(masks and grids), `_bar` (rotating systems), `_plots` (figures; matplotlib is imported
only when one is drawn), and `_fields` (Φ, ∇Φ, ρ at many points, which they share).
"""

from ._bar import MOMENTS as MOMENTS
from ._bar import bar_force_residuals as bar_force_residuals
from ._bar import frame_dfdt_maps as frame_dfdt_maps
from ._bar import nonaxisymmetric_force as nonaxisymmetric_force
from ._bar import omega_landscape as omega_landscape
from ._bar import stationarity_moments as stationarity_moments
from ._diagnostics import dfdt_map as dfdt_map
from ._diagnostics import fit_quality as fit_quality
from ._diagnostics import loss_landscape as loss_landscape
from ._fields import fields as fields
from ._metrics import PERCENTILES as PERCENTILES
from ._metrics import residuals as residuals
from ._metrics import residuals_at as residuals_at
from ._metrics import residuals_from_fields as residuals_from_fields
from ._metrics import score_errors as score_errors
from ._metrics import summarise as summarise
from ._plots import _unit_label as unit_label
from ._plots import plot_maps as plot_maps
from ._plots import plot_profiles as plot_profiles
from ._plots import plot_radial as plot_radial
from ._plots import radial_profiles as radial_profiles
from ._regions import cylinder_region as cylinder_region
from ._regions import density_region as density_region
from ._regions import midplane_grid as midplane_grid
from ._regions import radial_region as radial_region
from ._regions import rz_grid as rz_grid

__all__ = [
    "MOMENTS",
    "PERCENTILES",
    "bar_force_residuals",
    "cylinder_region",
    "density_region",
    "dfdt_map",
    "fields",
    "fit_quality",
    "frame_dfdt_maps",
    "loss_landscape",
    "midplane_grid",
    "nonaxisymmetric_force",
    "omega_landscape",
    "plot_maps",
    "plot_profiles",
    "plot_radial",
    "radial_profiles",
    "radial_region",
    "residuals",
    "residuals_at",
    "residuals_from_fields",
    "rz_grid",
    "score_errors",
    "stationarity_moments",
    "summarise",
    "unit_label",
]
