"""Registries: the one place where each pluggable thing is named.

There is one registry per kind — `potentials` (families usable as `[potential] model`),
`distribution_functions` (`[df] kind`), `terms` (the potential's loss terms), `objectives`
(the DFs' training objectives, `[df] objective`), `sources` (`[data] source`) and
`exporters` (functions that turn a deeppot potential into another library's object). A class
or function names itself once, where it is defined:

```python
from deeppot import registry

@registry.potentials.register          # name: "miyamoto_nagai" (snake_case of the class)
@typing.final
class MiyamotoNagai(AbstractPotential): ...

@registry.exporters.register("galpy")  # an explicit name
def to_galpy(potential): ...
```

The configuration, the command line, composite potentials (whose components are keyed by
these names) and model files all read the registries, so a family registered by a plugin is
usable everywhere without touching deeppot.

Plugins are packages that declare an entry point in the group `deeppot.plugins`:

```toml
[project.entry-points."deeppot.plugins"]
galpy = "deeppot_galpy"        # a module whose import registers things, or
galpy = "deeppot_galpy:register"   # a function called with no arguments
```

Built-in kinds and plugins' are configured the same way: a run config names an entry
(`[data] source`, `[df] kind`, `[potential] model`) and its section's `params` table holds
the entry's keyword arguments, checked against its signature (`deeppot.pipeline.config`).
The pipeline passes the arguments its signature names of those it supplies itself: a data
source is a function returning a `PhaseSpaceCatalog` that takes `key` and `n` (a mock
generator), or `path` (a file it reads), and may take `units` and `progress`; a DF is a
class (or function) that may take `key`, `dim` and `pair_invariant` (for the symmetry
wrappers) or the run's `catalog`, and is trained when it has `objectives`. Attributes say
the rest: `exact_df = True` on a source whose catalogues record their exact distribution
function in `meta["truth_df"]` (so `[df] kind = "exact"` can use it; the recorded class is
looked up among the registered DFs), `physical_units = True` on one that needs physical
units, `suffixes` on one that reads files.

Plugins are loaded the first time a registry is looked up. A plugin that fails to load is
reported with a warning and skipped; deeppot itself keeps working.
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

from ._errors import DeeppotError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Registry",
    "UnknownName",
    "distribution_functions",
    "exporters",
    "load_plugins",
    "objectives",
    "potentials",
    "snake_case",
    "sources",
    "terms",
]

ENTRY_POINT_GROUP = "deeppot.plugins"
T = TypeVar("T")


class UnknownName(DeeppotError, KeyError):
    """A name that no registry entry has; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0])


def snake_case(name: str) -> str:
    """`MiyamotoNagai` → `miyamoto_nagai`, `NFW` → `nfw`, `PlummerDF` → `plummer_df`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


class Registry(Mapping[str, Any]):
    """Names → objects of one kind, extended by plugins.

    **Arguments:**

    - `kind`: what the entries are, for messages (e.g. `"potential family"`).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    @overload
    def register(self, obj: T, /) -> T: ...

    @overload
    def register(self, name: str, /) -> Callable[[T], T]: ...

    def register(self, obj_or_name, /):
        """Register an object under its snake_case name, or under an explicit name.

        Use as `@registry.register` or `@registry.register("name")`. Registering the same
        object twice under one name is harmless; another object under a taken name is an
        error.

        **Returns:** the object (so it works as a decorator).
        """
        if isinstance(obj_or_name, str):
            name = obj_or_name
            return lambda obj: self._add(name, obj)
        return self._add(snake_case(obj_or_name.__name__), obj_or_name)

    def _add(self, name: str, obj: T) -> T:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{self.kind} names are lower-case snake_case, got {name!r}")
        if self._entries.get(name, obj) is not obj:
            raise ValueError(f"the {self.kind} name {name!r} is taken by "
                             f"{self._entries[name]!r}")
        self._entries[name] = obj
        return obj

    def __getitem__(self, name: str) -> Any:
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; known: "
                              f"{', '.join(sorted(self._entries))}") from None

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        load_plugins()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def name_of(self, obj: Any) -> str | None:
        """The name `obj` (a registered object, or an instance of a registered class) has."""
        for name, entry in self._entries.items():
            if entry is obj or (isinstance(entry, type) and type(obj) is entry):
                return name
        return None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


potentials = Registry("potential family")
distribution_functions = Registry("distribution function")
terms = Registry("loss term")
objectives = Registry("DF objective")
sources = Registry("data source")
exporters = Registry("exporter")

_plugins_loaded = False


def load_plugins() -> None:
    """Load every installed plugin of the `deeppot.plugins` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
        except Exception as err:  # a broken plugin must not break deeppot
            warnings.warn(f"deeppot plugin {ep.name!r} ({ep.value}) failed to load: "
                          f"{type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
