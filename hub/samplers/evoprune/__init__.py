"""EvoPruneDeepTL's steady-state binary genetic algorithm as an OptunaHub package.

EvoPruneDeepTL (Poyatos et al., Neural Networks 2023) evolves one bit per neuron of a
transfer-learning network's head, which neurons survive pruning; the sampler evolves any 0/1
int parameters. It lives in the ``optuna-biotune`` package, which this folder exposes under
the registry's layout: ``pip install -r requirements.txt`` first.
"""

from __future__ import annotations

try:
    from optuna_biotune import EvoPruneSampler
except ImportError as exc:  # pragma: no cover - depends on the user's environment
    raise ImportError(
        "samplers/evoprune needs the optuna-biotune package: pip install optuna-biotune"
    ) from exc

__all__ = ["EvoPruneSampler"]
