"""The one unit of compute of every benchmark: one full-data FT run (issue 21).

One FT training run: every block trained at lr 1e-3 (``run_baseline("FT")``), on the full
training split, early stopping on the full validation split, at the per-run budget of the
command that times it (the paper's: at most 30 epochs, patience 3, Adam, batch 64, 32 px),
seed 1001 (the first final seed, so the run and its epoch count are the same in every command),
timed in CPU seconds (``time.process_time``: every thread of the process) with the command's
torch threads (1 in every committed result), **in the same command** as what it measures, so
the machine's load at the time cancels out of the ratio.

A search's cost in this unit is its CPU seconds over the unit, plus the final retraining of its
top-1 configuration with seeds 1001-1003, measured the same way.
"""

from __future__ import annotations

import time
from typing import Any

UNIT_SEED = 1001
UNIT_LR = 1e-3


def ft_unit(*, splits: Any, epochs: int = 30, patience: int = 3) -> dict[str, Any]:
    """Time one FT run (seed 1001, lr 1e-3) on ``splits``' full training split."""
    from optuna_biotune.baselines import run_baseline

    c0, t0 = time.process_time(), time.perf_counter()
    r = run_baseline(
        "FT",
        dataset=splits.name,
        seeds=[UNIT_SEED],
        epochs=epochs,
        patience=patience,
        base_lr=UNIT_LR,
        device="cpu",
        splits=splits,
    )
    return {
        "unit_cpu_s": round(time.process_time() - c0, 2),
        "unit_wall_s": round(time.perf_counter() - t0, 2),
        "epochs": r["epochs_run"][0],
        "test_accuracy": r["test_accuracies"][0],
        "seed": UNIT_SEED,
    }


def load_splits(dataset: str, *, image_size: int = 32) -> Any:
    """The dataset's splits as the objective and the baselines load them (EfficientNet-Lite0's
    normalisation)."""
    import hard_sets

    from optuna_biotune.engine.models import preprocessing
    from optuna_biotune.engine.sources import load_dataset

    pre = preprocessing("efficientnet_lite0")
    return load_dataset(
        hard_sets.resolve(dataset), image_size=image_size, mean=pre.mean, std=pre.std
    )
