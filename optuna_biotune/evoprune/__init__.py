"""EvoPruneDeepTL (Poyatos et al., Neural Networks 2023): evolutionary pruning of the head.

``EvoPruneSampler`` (the steady-state binary GA, no torch) and ``EvoPruneObjective`` (a frozen
pretrained backbone's cached features -> a pruned fully connected head). The objective is
loaded on first access so that importing the sampler stays light.

Paper: https://doi.org/10.1016/j.neunet.2022.10.011
"""

from __future__ import annotations

from typing import Any

from optuna_biotune.evoprune.sampler import EvoPruneSampler

__all__ = ["EvoPruneObjective", "EvoPruneSampler"]


def __getattr__(name: str) -> Any:
    if name == "EvoPruneObjective":
        from optuna_biotune.evoprune.objective import EvoPruneObjective

        return EvoPruneObjective
    raise AttributeError(f"module 'optuna_biotune.evoprune' has no attribute {name!r}")
