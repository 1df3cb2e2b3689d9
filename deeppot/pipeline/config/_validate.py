"""Validation of a whole configuration: every problem reported at once, each naming its
section, key and value."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ... import registry
from ..._errors import ConfigError
from ._fields import check_value, typename
from ._kinds import (
    REGISTRIES,
    check_params,
    conditional,
    learned_model,
    parameters,
    takes,
    trainable,
)
from ._schema import SECTIONS, SELECTOR, Config, applies

__all__ = ["MOVED", "MOVED_TO_OBJECTIVE", "parse_config"]

# keys that were a kind's own before they became its registry entry's parameters: old key
# → the parameter's name in the section's `params` table
MOVED: dict[str, dict[str, str]] = {
    "data": {k: k for k in ("r_max", "a", "b", "h_R", "h_z", "n_dyn", "workers")},
    "df": {**{k: k for k in ("flow_layers", "knots", "interval", "nn_width", "nn_depth",
                             "n_blocks", "width", "depth", "activation")},
           "spline_kind": "kind", "ode_steps": "ode"},
}
# FFJORD's loss settings before objectives held them: old `[df.params]` name → the parameter
# of `[df] objective_params` (an `objective = "nll_exact"` became `trace = "exact"`)
MOVED_TO_OBJECTIVE: dict[str, str] = {"reg_kinetic": "reg_kinetic", "reg_jacobian":
                                      "reg_jacobian", "hutchinson": "probe",
                                      "cfm_sigma_min": "sigma_min"}


def _moved(section: str, key: str, value, chosen) -> str | None:
    """Where a key that is a kind's parameter now lives, or None if it is no such key."""
    new = MOVED.get(section, {}).get(key)
    reg = REGISTRIES.get(section)
    if new is None and reg is not None and isinstance(chosen, str) and chosen in reg:
        new = key if key in parameters(reg[chosen], section)[0] else None
    if new is None:
        return None
    return (f"key {key!r} in [{section}] moved: a {SELECTOR[section]}'s own settings are its "
            f"parameters, in [{section}.params] ({new} = {value!r})")


def _parse_section(name: str, cls: type, table, base_dir: Path, errors: list[str]):
    if not isinstance(table, dict):
        errors.append(f"[{name}] must be a table, got {typename(table)} {table!r}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    selector = SELECTOR.get(name)
    chosen = table.get(selector, fields[selector].default) if selector else None
    values = {}
    for key, value in table.items():
        if key not in fields:
            errors.append(_moved(name, key, value, chosen) or
                          f"unknown key {key!r} in [{name}]; valid keys: {', '.join(fields)}")
            continue
        meta = fields[key].metadata
        value, err = check_value(f"key {key!r} in [{name}]", meta["kind"], value, meta)
        if err:
            errors.append(err)
            continue
        if meta["kind"] == "path" and value:
            value = str((base_dir / value).expanduser()) if not os.path.isabs(value) else value
        values[key] = value
    if selector is not None and selector in values:
        chosen = values[selector]
    if selector is not None and not any(e.startswith(f"key {selector!r} in [{name}]")
                                        for e in errors):
        for key in values:
            if not applies(name, fields[key], chosen):
                errors.append(f"key {key!r} in [{name}] applies only when {selector} = "
                              f"{fields[key].metadata['only'].text}; this config has "
                              f"{selector} = {chosen!r}")
    return cls(**values)


def _check_data(cfg: Config, errors: list[str]) -> dict[str, Any]:
    data = cfg.data
    source = registry.sources[data.source]
    where = f"[data] source {data.source!r}"
    if takes(source, "path"):
        suffixes = getattr(source, "suffixes", None)
        if not data.path:
            errors.append(f"key 'path' in [data] is required when source = {data.source!r}")
        elif not os.path.isfile(data.path):
            errors.append(f"key 'path' in [data]: file {data.path!r} not found")
        elif suffixes and not data.path.lower().endswith(tuple(suffixes)):
            errors.append(f"key 'path' in [data]: {data.path!r} is not a file {where} reads "
                          f"({', '.join(suffixes)})")
    if cfg.run.units == "dimensionless" and getattr(source, "physical_units", False):
        errors.append(f"{where} needs physical units: set units = 'galactic' in [run]")
    if cfg.run.units != "dimensionless" and not takes(source, "units"):
        errors.append(f"{where} is a dimensionless mock (its function has no units "
                      "parameter); it needs units = 'dimensionless' in [run]")
    return check_params(f"key 'params' in [data]: source {data.source!r}", source,
                        data.params, "data", errors)


def _check_df(cfg: Config, errors: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`[df]`: its cross-key checks; returns its `params` and `objective_params`, converted."""
    df = cfg.df
    entry = registry.distribution_functions[df.kind]
    if getattr(entry, "needs_truth_df", False) and (
            not getattr(registry.sources[cfg.data.source], "exact_df", False)
            or cfg.data.observe or cfg.data.select_radius > 0):
        with_df = [s for s in registry.sources if getattr(registry.sources[s], "exact_df", 0)]
        errors.append(f"kind = {df.kind!r} in [df] (the mock's own analytic DF) needs a "
                      f"[data] source that records one ({', '.join(with_df)}), without "
                      "observe or selection")
    if df.reflect and df.symmetry == "none":
        errors.append("reflect = true in [df] averages over the velocity reflection of a "
                      "symmetry; it needs symmetry = 'spherical' or 'axisymmetric' (for the "
                      "mid-plane alone use mirror_z = true)")
    if df.symmetry != "none" and df.augment not in ("none", "mirror_z"):
        errors.append(f"augment = {df.augment!r} in [df] is redundant with symmetry = "
                      f"{df.symmetry!r} (only 'mirror_z' adds to a reduced DF)")
    if df.symmetry != "none" and not (takes(entry, "dim") or takes(entry, "symmetry")):
        errors.append(f"symmetry = {df.symmetry!r} in [df] models the DF in reduced "
                      f"coordinates; kind {df.kind!r} has no dim parameter to take them")
    params = dict(df.params)
    own = parameters(entry, "df")[0]
    for old, new in MOVED_TO_OBJECTIVE.items():
        if old in params and old not in own:
            errors.append(f"parameter {old!r} in [df.params] moved: a training objective's "
                          f"settings are its parameters, in [df.objective_params] "
                          f"({new} = {params.pop(old)!r})")
    return check_params(f"key 'params' in [df]: kind {df.kind!r}", entry, params, "df",
                        errors), _check_objective(df, entry, errors)


def _check_objective(df, entry, errors: list[str]) -> dict[str, Any]:
    """`[df] objective` (one the kind supports) and its `objective_params`, converted."""
    if not trainable(df.kind):
        return df.objective_params
    name = df.objective or entry.objectives[0]
    if df.objective == "nll_exact":
        errors.append("key 'objective' in [df]: 'nll_exact' moved: it is objective = 'nll' "
                      "with trace = 'exact' in [df.objective_params]")
    elif name not in entry.objectives or name not in registry.objectives:
        errors.append(f"key 'objective' in [df] must be one of {entry.objectives} for kind = "
                      f"{df.kind!r}; got {df.objective!r}")
    else:
        return check_params(f"key 'objective_params' in [df]: objective {name!r}",
                            registry.objectives[name], df.objective_params, "objective", errors)
    return df.objective_params


def _check_potential(cfg: Config, errors: list[str]) -> dict[str, Any]:
    pot = cfg.potential
    entry = registry.potentials[pot.model]
    if pot.fixed:
        free = [] if learned_model(pot.model) else \
            [p for p in inspect.signature(entry).parameters if p not in ("key", "G")]
        for name in pot.fixed:
            if name not in free:
                errors.append(f"key 'fixed' in [potential]: {pot.model} has no parameter "
                              f"{name!r} to hold fixed; parameters: {', '.join(free) or 'none'}")
    if pot.train_frame_params and pot.frame != "rotating":
        errors.append("key 'train_frame_params' in [potential] names parameters of a rotating "
                      f"frame; frame = {pot.frame!r}")
    return check_params(f"key 'params' in [potential]: {pot.model}", entry, pot.params,
                        "potential", errors)


def _check_processes(cfg: Config, errors: list[str]) -> None:
    """A multi-host start names its coordinator as host:port, with this process's index
    below the number of processes; without one (or with auto) the count and index are
    not set here."""
    run = cfg.run
    if run.coordinator in ("", "auto"):
        if (run.num_processes, run.process_id) != (1, 0):
            errors.append(f"keys 'num_processes' and 'process_id' in [run] apply with a "
                          f"coordinator = 'host:port'; this config has coordinator = "
                          f"{run.coordinator!r}")
        return
    host, _, port = run.coordinator.rpartition(":")
    if not host or not port.isdigit():
        errors.append(f"key 'coordinator' in [run] must be host:port (or 'auto', or '' for "
                      f"one process); got {run.coordinator!r}")
    if run.process_id >= run.num_processes:
        errors.append(f"key 'process_id' in [run] must be below num_processes = "
                      f"{run.num_processes}; got {run.process_id}")


def _check_score_file(cfg: Config, errors: list[str]) -> None:
    """`[scores] path` is an HDF5 file in a directory that exists, and replaces only a
    score file."""
    from ...scores import ScoreFile

    path = cfg.scores.path
    where = "key 'path' in [scores]"
    if not path.lower().endswith((".h5", ".hdf5")):
        errors.append(f"{where}: scores stream into an HDF5 file (.h5, .hdf5); got {path!r}")
    elif not os.path.isdir(os.path.dirname(path) or "."):
        errors.append(f"{where}: the directory of {path!r} does not exist")
    elif os.path.exists(path):
        try:
            ScoreFile(path)
        except ValueError as err:
            errors.append(f"{where}: {path!r} exists and is not a score file "
                          f"({str(err).splitlines()[0]}); refusing to replace it")


def _check_position(cfg: Config, errors: list[str]) -> None:
    """`[scores] position`: the selection route has its selection function, and the
    selection-free route a conditional DF whose velocity factor it can sample, a sample in
    memory and a loss without f."""
    scores, df = cfg.scores, cfg.df
    where = f"position = {scores.position!r} in [scores]"
    if scores.position == "selection" and not scores.selection:
        errors.append(f"{where} subtracts ∂ln S/∂x of a known selection function: give it "
                      "as key 'selection' in [scores] (or use position = 'free', which "
                      "needs none)")
    if scores.position != "selection" and scores.selection:
        errors.append(f"key 'selection' in [scores] applies with position = 'selection'; "
                      f"this config has {where}")
    if scores.position != "free":
        return
    if not conditional(df.kind):
        kinds = [k for k in registry.distribution_functions if conditional(k)]
        errors.append(f"{where} needs a conditional DF, f = ν(x) p(v|x) (kind = "
                      f"{' | '.join(repr(k) for k in kinds)} in [df]); this config has "
                      f"kind = {df.kind!r}")
    else:
        hiding = [name for name, on in (("ensemble > 1", df.ensemble > 1),
                                        ("reflect", df.reflect), ("mirror_z", df.mirror_z),
                                        (f"augment = {df.augment!r}", df.augment != "none"))
                  if on and trainable(df.kind)]
        if hiding:
            errors.append(f"{where} samples the velocity factor of a bare conditional DF; "
                          f"drop {', '.join(hiding)} in [df]")
    if scores.path:
        errors.append(f"key 'path' in [scores] streams a sample of joint scores into HDF5; "
                      f"{where} keeps its velocity sample in memory (path = '')")
    if cfg.fit.form == "f":
        errors.append(f"form = 'f' in [fit] weighs each residual by f, which {where} does "
                      "not know (ν is profiled out); use form = 'ln_f'")


def _cross_checks(cfg: Config, errors: list[str]) -> Config:
    """The checks across keys and sections; returns the config with its `params` tables
    converted."""
    _check_processes(cfg, errors)
    data_params = _check_data(cfg, errors)
    if cfg.scores.path:
        _check_score_file(cfg, errors)
    if cfg.scores.selection:
        from ...selection import selection_from_description

        try:
            selection_from_description({**cfg.scores.selection, "units": cfg.run.units})
        except (KeyError, TypeError, ValueError) as err:
            missing = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            errors.append(f"key 'selection' in [scores]: {missing}")
    _check_position(cfg, errors)
    df_params, objective_params = _check_df(cfg, errors)
    pot_params = _check_potential(cfg, errors)
    if cfg.evaluate.r_min >= cfg.evaluate.r_max:
        errors.append(f"[evaluate] needs r_min < r_max; got r_min = {cfg.evaluate.r_min}, "
                      f"r_max = {cfg.evaluate.r_max}")
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, params=data_params),
        df=dataclasses.replace(cfg.df, params=df_params, objective_params=objective_params),
        potential=dataclasses.replace(cfg.potential, params=pot_params))


def parse_config(raw: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> Config:
    """Validate a configuration dictionary (as read from TOML).

    **Arguments:**

    - `raw`: `{section: {key: value}}`; missing sections and keys take their defaults.
    - `base_dir`: directory against which relative paths (`[data] path`) are resolved.

    **Returns:** a `Config`.

    **Raises:** `ConfigError` listing every problem, each naming its section and key.
    """
    errors: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config is a table of sections, got {typename(raw)}")
    base = Path(base_dir)
    sections = {}
    for name, table in raw.items():
        if name not in SECTIONS:
            kind = "section" if isinstance(table, dict) else "top-level key"
            errors.append(f"unknown {kind} [{name}]; valid sections: "
                          + ", ".join(f"[{s}]" for s in SECTIONS))
            continue
        sections[name] = _parse_section(name, SECTIONS[name], table, base, errors)
    cfg = Config(**sections)
    scores = raw.get("scores")
    if isinstance(scores, Mapping) and scores.get("selection") and "position" not in scores:
        # a config from before `position`: its selection meant the selection route
        cfg = dataclasses.replace(cfg, scores=dataclasses.replace(cfg.scores,
                                                                  position="selection"))
    if not errors:
        cfg = _cross_checks(cfg, errors)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return cfg
