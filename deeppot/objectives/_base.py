"""The interface of a DF training objective and its lookup by name."""

from __future__ import annotations

import abc
import typing

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray

from .. import registry

if typing.TYPE_CHECKING:
    from ..flows import AbstractFlowDF, AbstractTrainableDF

__all__ = ["AbstractObjective", "as_objective"]


class AbstractObjective(eqx.Module):
    """A training objective of a distribution function: `objective(df, w, key) -> scalar`.

    Calling it asks the DF for `df.objective_loss(objective, w, key)`: a wrapper carries the
    batch to its inner flow's coordinates and forwards it, and the flow at the bottom calls
    `flow_loss`. Write an objective by implementing `flow_loss` with the primitives of the
    flows it supports, and set `likelihood` if its value is a mean negative
    log-likelihood (a change of coordinates then shifts it by the mean log-Jacobian, which
    the wrappers add, so that the value is in physical units and compares across models).
    """

    likelihood: typing.ClassVar[bool] = False

    @abc.abstractmethod
    def flow_loss(self, flow: AbstractFlowDF, w: Float[Array, "m d"], key: PRNGKeyArray
                  ) -> Float[Array, ""]:
        """The loss of a flow on a batch of points in its own (physical, unstandardised)
        coordinates.

        **Arguments:**

        - `flow`: the trainable flow (the innermost DF of any wrappers).
        - `w`: the batch, shape `(m, d)`.
        - `key`: a typed key for stochastic objectives.

        **Returns:** a scalar loss.
        """

    def __call__(self, df: AbstractTrainableDF, w: Float[Array, "m 6"], key: PRNGKeyArray
                 ) -> Float[Array, ""]:
        """The loss of `df` on a batch of phase-space points `w` (shape `(m, 6)`)."""
        return df.objective_loss(self, w, key)


def as_objective(objective: AbstractObjective | str | None, df) -> AbstractObjective:
    """The objective `fit_df` trains `df` with, checked against the ones `df` supports.

    **Arguments:**

    - `objective`: an objective, the registered name of one (built with its defaults), or
      `None` for the DF's default (the first of `df.objectives`).
    - `df`: a trainable DF.

    **Returns:** the objective.

    **Raises:** `ValueError` if `df` does not support it; `UnknownName` for an unknown name.
    """
    supported = tuple(df.objectives)
    if objective is None:
        objective = supported[0]
    if isinstance(objective, str):
        objective = registry.objectives[objective]()
    if not isinstance(objective, AbstractObjective):
        raise TypeError(f"objective must be a deeppot objective or a registered name; got "
                        f"{type(objective).__name__}")
    name = registry.objectives.name_of(objective)
    if name not in supported:
        raise ValueError(f"{type(df).__name__} supports the objectives {supported}; got "
                         f"{type(objective).__name__} ({name or 'not registered'})")
    return objective
