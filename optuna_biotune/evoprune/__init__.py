"""EvoPruneDeepTL (Poyatos et al., Neural Networks 2023): evolutionary pruning of the head.

``EvoPruneSampler`` (the steady-state binary GA) and ``EvoPruneObjective`` (a frozen
pretrained backbone's cached features -> a pruned fully connected head). Neither imports torch
until the objective computes features or trains a head, so importing the package stays light.

Paper: https://doi.org/10.1016/j.neunet.2022.10.011
"""

from __future__ import annotations

from optuna_biotune.evoprune.objective import EvoPruneObjective
from optuna_biotune.evoprune.sampler import EvoPruneSampler

__all__ = ["EvoPruneObjective", "EvoPruneSampler"]
