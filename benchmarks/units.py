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


def ft_unit(*, tuner: Any) -> dict[str, Any]:
    """Time one FT run (seed 1001) with ``tuner`` (:func:`fine_tuner`: lr 1e-3, data loaded)."""
    from optuna_biotune.baselines import run_baseline

    c0, t0 = time.process_time(), time.perf_counter()
    r = run_baseline("FT", tuner, seeds=[UNIT_SEED])
    return {
        "unit_cpu_s": round(time.process_time() - c0, 2),
        "unit_wall_s": round(time.perf_counter() - t0, 2),
        "epochs": r["epochs_run"][0],
        "test_accuracy": r["test_accuracies"][0],
        "seed": UNIT_SEED,
    }


def fine_tuner(
    dataset: str,
    *,
    base_lr: float = UNIT_LR,
    max_epochs: int = 30,
    patience: int = 3,
    image_size: int = 32,
) -> Any:
    """The fine-tuner the objective and the baselines train with (EfficientNet-Lite0, CPU),
    its data loaded and its model built (so that a timing leaves the loading out)."""
    import hard_sets

    from optuna_biotune.engine.finetune import FineTuner

    tuner = FineTuner(
        dataset=hard_sets.resolve(dataset),
        model="efficientnet_lite0",
        base_lr=base_lr,
        max_epochs=max_epochs,
        patience=patience,
        image_size=image_size,
        device="cpu",
    )
    tuner.blocks  # noqa: B018 - load the data and build the model now
    return tuner
