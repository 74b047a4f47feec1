"""The comparison methods of paper Table I on the one training engine (``train.py``).

FT, LP, L1-SP, L2-SP, G-LF, G-FL, AutoRGN and LoRA differ from FT only in which parameters
train, at which rates, and what is added to the loss (a :class:`Plan`); data, splits, seeds,
epochs and early stopping are the engine's, shared with BioTune's objective.

Example:
    >>> from optuna_biotune.baselines import run_baseline
    >>> result = run_baseline("LP", dataset="digits", seeds=1, max_epochs=1)  # doctest: +SKIP
    >>> result["test_accuracy_mean"], result["trainable_share"]  # doctest: +SKIP
"""

from __future__ import annotations

from optuna_biotune.baselines._plan import BlockParams, Plan
from optuna_biotune.baselines.config import BaselineConfig
from optuna_biotune.baselines.methods import METHODS, canonical_method, prepare_plan
from optuna_biotune.baselines.run import run_baseline

__all__ = [
    "METHODS",
    "BaselineConfig",
    "BlockParams",
    "Plan",
    "canonical_method",
    "prepare_plan",
    "run_baseline",
]
