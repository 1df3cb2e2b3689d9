"""The registry entries the pipeline defines itself: the `file` source (a catalogue file)
and the `exact` DF kind (the catalogue's own analytic DF). Every other source and DF kind
is registered where it is defined (`deeppot.mocks`, `deeppot.survey`, `deeppot.flows`)."""

from __future__ import annotations

from .. import registry
from ..catalog import PhaseSpaceCatalog

__all__ = ["catalogue_file", "exact"]


@registry.sources.register("file")
def catalogue_file(path: str, *, units: str = "dimensionless") -> PhaseSpaceCatalog:
    """`[data] source = "file"`: a catalogue file, which must be in the run's units.

    **Arguments:**

    - `path`: a `.npz`, `.h5`/`.hdf5` or `.csv` catalogue (`PhaseSpaceCatalog.load`).
    - `units`: the run's unit system (`[run] units`).

    **Returns:** the catalogue.

    **Raises:** `ValueError` if the catalogue is in other units.
    """
    from ..units import get_units

    cat = PhaseSpaceCatalog.load(path)
    if not cat.units.same_units(get_units(units)):
        raise ValueError(f"catalogue {path!r} is in {cat.units!r} but [run] units = "
                         f"{units!r}")
    return cat


catalogue_file.suffixes = (".npz", ".h5", ".hdf5", ".csv")  # the files it reads


@registry.distribution_functions.register("exact")
def exact(catalog: PhaseSpaceCatalog):
    """`[df] kind = "exact"`: the analytic DF the catalogue's mock generator recorded
    (`deeppot.mocks.truth_df`), with exact scores; nothing is trained.

    **Arguments:**

    - `catalog`: the run's catalogue.

    **Returns:** the DF (e.g. `PlummerDF(r_max=10.0)`).
    """
    from ..mocks import truth_df

    return truth_df(catalog.meta)


exact.needs_truth_df = True  # only a source whose catalogues record one (`exact_df`)
