"""The paper's per-run training budget, written once (no torch).

Colan et al. 2025, Sec. IV: every training run is at most 30 epochs, stops early after 3
epochs without a better validation metric, and trains with Adam at base learning rate 1e-3 and
batch 64, accuracy being the validation metric. These are the defaults of
:class:`~optuna_biotune.engine.finetune.FineTuner`, :func:`~optuna_biotune.engine.train.fit`,
the baselines (``run_baseline`` and the ``baseline`` command), the study spec
(:class:`~optuna_biotune.biotune.spec.StudySpec`) and EvoPrune's head (``train_head``,
``EvoPruneObjective``, which trains with its own batch size, see
:data:`optuna_biotune.evoprune.head.HEAD_BATCH_SIZE`). Import the module
(``from optuna_biotune.engine import budget``) and read ``budget.EPOCHS``. :data:`MINIMUM` holds
the lower bounds of the integer settings, which :func:`~optuna_biotune.engine.train.fit`, the
fine-tuner and the study spec check against.
"""

from __future__ import annotations

#: Epoch limit of a training run.
EPOCHS = 30
#: Early-stopping patience: epochs without a strictly better validation metric.
PATIENCE = 3
#: Training batch size.
BATCH_SIZE = 64
#: Base learning rate (BioTune scales it per block by the block's weight, 0.1-10).
BASE_LR = 1e-3
#: Optimiser: ``"adam"`` (``"sgd"`` the alternative).
OPTIMIZER = "adam"
#: Validation metric: ``"accuracy"`` (``"macro"``: mean per-class recall, the alternative).
METRIC = "accuracy"
#: Lower bounds of a training run's integer settings (``errors.check_int``); the fine-tuner adds
#: its own (:data:`optuna_biotune.engine.finetune.MINIMUM`).
MINIMUM = {"max_epochs": 1, "patience": 1, "batch_size": 1}
