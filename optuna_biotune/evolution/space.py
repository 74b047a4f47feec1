"""The normalised gene space: float and int parameter values (log and step too) <-> ``[0, 1]``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from optuna.distributions import (
    BaseDistribution,
    FloatDistribution,
    IntDistribution,
)

if TYPE_CHECKING:
    pass


__all__ = ["denormalize", "evolvable", "normalize"]


# --------------------------------------------------------------------------- [0, 1] <-> values


def normalize(value: float, distribution: BaseDistribution) -> float:
    """Map a float/int parameter value to ``[0, 1]`` (in log space for ``log=True``)."""
    if not isinstance(distribution, FloatDistribution | IntDistribution):
        raise ValueError(f"only float and int distributions are evolved, got {distribution}.")
    low, high, v = float(distribution.low), float(distribution.high), float(value)
    if distribution.log:
        low, high, v = math.log(low), math.log(high), math.log(v)
    if high <= low:
        return 0.5
    return min(1.0, max(0.0, (v - low) / (high - low)))


def denormalize(x: float, distribution: BaseDistribution) -> float | int:
    """Map ``x`` in ``[0, 1]`` to a valid value of a float/int distribution (step and log too)."""
    x = min(1.0, max(0.0, float(x)))
    if isinstance(distribution, FloatDistribution):
        low, high = distribution.low, distribution.high
        if distribution.log:
            v = math.exp(math.log(low) + x * (math.log(high) - math.log(low)))
        elif distribution.step is not None:
            n = round(x * (high - low) / distribution.step)
            v = low + n * distribution.step
        else:
            v = low + x * (high - low)
        return float(min(high, max(low, v)))
    if isinstance(distribution, IntDistribution):
        low, high = distribution.low, distribution.high
        if distribution.log:
            v = math.exp(math.log(low) + x * (math.log(high) - math.log(low)))
            iv = round(v)
        else:
            iv = low + round(x * (high - low) / distribution.step) * distribution.step
        return int(min(high, max(low, iv)))
    raise ValueError(f"only float and int distributions are evolved, got {distribution}.")


def evolvable(distribution: BaseDistribution) -> bool:
    """Whether a parameter is evolved in ``[0, 1]`` (float and int distributions)."""
    return isinstance(distribution, FloatDistribution | IntDistribution)
