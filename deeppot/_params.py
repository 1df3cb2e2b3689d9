"""Validation and parametrisation of physical model parameters.

Every helper takes the parameter's physical dimension and the model's unit system: an
astropy `Quantity` is converted to that system (or refused with an error naming the
parameter); plain numbers are taken to be in the system's units already. A new model family
gets quantity support by declaring each parameter's dimension: a positive one as a field
`log_r_s: Float[Array, ""] = positive_field("length")` set by `init_parameters(self, units, G,
r_s=r_s)`, others through `to_model_units` (or `positive_log(...)` directly).
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .units import UnitSystem, dimensionless, is_quantity, resolve_units


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def to_model_units(name: str, value, dimension: str | None, units: UnitSystem | None):
    """Plain numbers for a parameter: a `Quantity` converted to `units`, else `value`.

    **Arguments:**

    - `name`: the parameter's name, used in error messages.
    - `value`: a `Quantity` or plain numbers.
    - `dimension`: its physical dimension (`deeppot.units.DIMENSIONS`); `None` for a
      parameter that takes no quantity.
    - `units`: the model's unit system (`None`: dimensionless).

    **Returns:** `value` in the model's units, as plain numbers.
    """
    if not is_quantity(value):
        return value
    if dimension is None:
        raise TypeError(f"parameter {name!r} has no physical dimension: pass a plain number")
    return (units or dimensionless).to_value(value, dimension, f"parameter {name!r}")


def _finite_real_scalar(name: str, value) -> np.ndarray:
    """`value` as a 0-d array, or `ValueError` naming the parameter: not a scalar, not a
    real number, or not finite."""
    arr = np.asarray(value)
    if arr.shape != ():
        raise ValueError(f"parameter {name!r} must be a scalar, got shape {arr.shape}")
    if not np.isrealobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"parameter {name!r} must be a real number, got {value!r}")
    if not np.isfinite(arr):
        raise ValueError(f"parameter {name!r} must be finite, got {float(arr)}")
    return arr


def positive_log(
    name: str, value, dimension: str | None = None, units: UnitSystem | None = None
) -> Float[Array, ""]:
    """Validate a positive scalar parameter and return its logarithm.

    Positive parameters (masses, scale lengths, flattenings) are stored as logarithms so
    that unconstrained optimisers keep them positive; the model exposes the physical value
    as a property.

    **Arguments:**

    - `name`: the parameter's name, used in error messages.
    - `value`: a real scalar, or a scalar `Quantity` of the right dimension.
    - `dimension`: the parameter's physical dimension (`"mass"`, `"length"`, ...).
    - `units`: the model's unit system, to which a `Quantity` is converted.

    **Returns:** `log(value)` (in the model's units) as a 0-d floating array.

    **Raises:** `ValueError` naming the parameter for a non-scalar, NaN, infinite or
    non-positive value, or a quantity of the wrong dimension.
    """
    value = to_model_units(name, value, dimension, units)
    if _is_concrete(value):
        arr = _finite_real_scalar(name, value)
        if arr <= 0:
            raise ValueError(f"parameter {name!r} must be positive, got {float(arr)}")
        dtype = jnp.result_type(float)
        with np.errstate(over="ignore", under="ignore"):
            stored = np.asarray(arr, dtype=dtype)
        if not (np.isfinite(stored) and stored > 0):
            raise ValueError(f"parameter {name!r} = {float(arr)!r} is outside the range of "
                             f"{np.dtype(dtype).name}; use other units or jax.enable_x64")
    return jnp.log(jnp.asarray(value, dtype=float))


def positive_field(dimension: str | None):
    """Declare a positive parameter: a field `log_<name>` holding its logarithm.

    **Arguments:**

    - `dimension`: the parameter's physical dimension (`"mass"`, `"length"`, ...), used to
      convert a `Quantity` given for it.

    **Returns:** an `eqx.field` for the final class's declaration; `init_parameters` fills it.
    """
    return eqx.field(metadata={"positive": dimension})


def init_parameters(module, units, G, *others, **positive) -> None:
    """Set a model's unit system and its positive parameters, in its `__init__`.

    **Arguments:**

    - `module`: the model being initialised.
    - `units`, `G`: its constructor's arguments (`deeppot.units.resolve_units`).
    - `others`: its other parameter values, which only take part in choosing the units.
    - `positive`: each positive parameter by name: stored as `log_<name>` (declared with
      `positive_field`, whose dimension converts a `Quantity`).
    """
    module.units = resolve_units(units, G, *positive.values(), *others)
    fields = {f.name: f for f in dataclasses.fields(module)}
    for name, value in positive.items():
        dimension = fields[f"log_{name}"].metadata["positive"]
        setattr(module, f"log_{name}", positive_log(name, value, dimension, module.units))


def vector3(
    name: str, value, dimension: str | None = None, units: UnitSystem | None = None
) -> Float[Array, "3"]:
    """Validate a finite 3-vector parameter.

    **Arguments:**

    - `name`: the parameter's name, used in error messages.
    - `value`: anything convertible to an array of shape (3,), or a `Quantity`.
    - `dimension`, `units`: as for `positive_log`.

    **Returns:** the value (in the model's units) as a floating array of shape (3,).
    """
    value = to_model_units(name, value, dimension, units)
    if _is_concrete(value):
        arr = np.asarray(value)
        if arr.shape != (3,):
            raise ValueError(f"parameter {name!r} must have shape (3,), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"parameter {name!r} must be finite, got {arr.tolist()}")
    return jnp.asarray(value, dtype=float)


def check_positions(x) -> Float[Array, "*batch 3"]:
    """Convert positions to a floating array and check the trailing axis has length 3.

    A `Quantity` is refused (it would lose its unit here): a potential's public methods
    convert quantities to its unit system before calling this.
    """
    if is_quantity(x):
        raise TypeError(
            "positions are an astropy Quantity: pass them to a potential's methods (which "
            "convert them to its unit system) or convert them to plain numbers first"
        )
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != 3:
        raise ValueError(f"positions must have shape (..., 3), got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    return x


def scalar_in_range(name: str, value, lo: float, hi: float) -> Float[Array, ""]:
    """Validate a real scalar parameter in the open interval (lo, hi).

    **Arguments:**

    - `name`: the parameter's name, used in error messages.
    - `value`: a real scalar.
    - `lo`, `hi`: the open bounds.

    **Returns:** the value as a 0-d floating array.

    **Raises:** `ValueError` naming the parameter for a non-scalar, non-finite or
    out-of-range value.
    """
    if _is_concrete(value):
        arr = _finite_real_scalar(name, value)
        if not lo < arr < hi:
            raise ValueError(f"parameter {name!r} must lie in ({lo:g}, {hi:g}), got {float(arr)}")
    return jnp.asarray(value, dtype=float)


def finite_scalar(name: str, value) -> Float[Array, ""]:
    """Validate a finite real scalar parameter (e.g. an angle) and return it as an array.

    **Arguments:**

    - `name`: the parameter's name, used in error messages.
    - `value`: a real scalar.

    **Returns:** the value as a 0-d floating array.
    """
    if _is_concrete(value):
        _finite_real_scalar(name, value)
    return jnp.asarray(value, dtype=float)
