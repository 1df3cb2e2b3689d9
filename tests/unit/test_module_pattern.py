"""Every concrete Module in deeppot is `@typing.final` (equinox's abstract/final pattern)."""

import importlib
import inspect
import pkgutil

import equinox as eqx

import deeppot


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_concrete_modules_are_final():
    for info in pkgutil.walk_packages(deeppot.__path__, prefix="deeppot."):
        if info.name.split(".")[-1] == "__main__":
            continue
        importlib.import_module(info.name)
    ours = {c for c in _all_subclasses(eqx.Module) if c.__module__.startswith("deeppot")}
    assert len(ours) >= 15, "module walk found too few classes"
    offenders = []
    for cls in ours:
        abstract = cls.__name__.startswith("Abstract")
        if abstract:
            if getattr(cls, "__final__", False):
                offenders.append(f"{cls.__qualname__}: abstract class marked final")
            continue
        if not getattr(cls, "__final__", False):
            offenders.append(f"{cls.__module__}.{cls.__qualname__} is concrete but not final")
        if inspect.isabstract(cls):
            offenders.append(f"{cls.__qualname__} has unimplemented abstract methods")
    assert not offenders, "\n".join(offenders)
