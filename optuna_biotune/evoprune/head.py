"""The pruned fully connected head of EvoPruneDeepTL, trained on cached backbone features.

Poyatos et al. 2023 put ``features -> dense 512 -> dense 512 -> softmax`` on a frozen
backbone and evolve a 0/1 mask over the neurons of one hidden layer (or both). Here a masked
neuron is *removed*: the head is built with only the active neurons, so a pruned network is
really smaller and faster to train. Which neurons survive matters, not only how many: the
full-width layers are first initialised from the training seed and the active rows/columns
are then cut out of them, so neuron ``i`` starts from the same weights in every mask.

Training uses the package's one engine, :func:`optuna_biotune.engine.train.fit`. Torch is
imported when a head is built or trained, so the objective imports this module freely.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from optuna_biotune.engine import budget
from optuna_biotune.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from optuna_biotune.engine.data import TensorData

__all__ = ["HEAD_BATCH_SIZE", "HeadResult", "build_head", "threads", "train_head"]

#: The head's training batch: 128, not the fine-tuning budget's 64
#: (:data:`optuna_biotune.engine.budget.BATCH_SIZE`); a deviation with Adam, see
#: :mod:`.objective`. The objective and the ``evoprune`` command take it from here.
HEAD_BATCH_SIZE = 128


@dataclass(frozen=True)
class HeadResult:
    """One head trained to early stopping.

    Attributes:
        val_accuracy: Best validation accuracy over the epochs (the fitness).
        epochs: Epochs run.
        best_epoch: Epoch of the best validation accuracy.
        seconds: Wall time of the training.
        test_accuracy: Test accuracy of the best epoch's weights (only when asked).
    """

    val_accuracy: float
    epochs: int
    best_epoch: int
    seconds: float
    test_accuracy: float | None = None


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (``None``: leave the setting alone)."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_head(
    *,
    in_features: int,
    num_classes: int,
    masks: Sequence[np.ndarray | None],
    hidden: int = 512,
    seed: int = 0,
) -> nn.Sequential:
    """The head ``in -> hidden -> hidden -> classes`` with masked neurons removed.

    Args:
        in_features: Backbone feature width.
        num_classes: Output classes.
        masks: One entry per hidden layer (2): a 0/1 array of length ``hidden`` or ``None``
            (layer not pruned: all neurons active).
        hidden: Width of each hidden layer before pruning (paper: 512).
        seed: Seed of the full-width initialisation.

    Returns:
        ``Linear -> ReLU -> Linear -> ReLU -> Linear`` with only the active neurons.
    """
    import torch
    from torch import nn

    if len(masks) != 2:
        raise UsageError(f"`masks` must have one entry per hidden layer (2), got {len(masks)}.")
    keep = []
    for i, m in enumerate(masks):
        if m is None:
            keep.append(torch.ones(hidden, dtype=torch.bool))
            continue
        a = np.asarray(m)
        if a.shape != (hidden,):
            raise UsageError(f"`masks[{i}]` must have {hidden} entries, got shape {a.shape}.")
        if not a.any():
            raise UsageError(f"`masks[{i}]` keeps no neuron; keep at least one.")
        keep.append(torch.as_tensor(a.astype(bool)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        full = [
            nn.Linear(in_features, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, num_classes),
        ]
    k1, k2 = keep
    first = nn.Linear(in_features, int(k1.sum()))
    second = nn.Linear(int(k1.sum()), int(k2.sum()))
    out = nn.Linear(int(k2.sum()), num_classes)
    with torch.no_grad():
        first.weight.copy_(full[0].weight[k1])
        first.bias.copy_(full[0].bias[k1])
        second.weight.copy_(full[1].weight[k2][:, k1])
        second.bias.copy_(full[1].bias[k2])
        out.weight.copy_(full[2].weight[:, k2])
        out.bias.copy_(full[2].bias)
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), out)


def train_head(
    head: nn.Module,
    *,
    train: TensorData,
    val: TensorData,
    test: TensorData | None = None,
    optimizer: str = budget.OPTIMIZER,
    lr: float = budget.BASE_LR,
    batch_size: int = HEAD_BATCH_SIZE,
    max_epochs: int = budget.EPOCHS,
    patience: int = budget.PATIENCE,
    seed: int = 0,
    device: str = "cpu",
    bf16: bool = False,
) -> HeadResult:
    """Train ``head`` on features with :func:`optuna_biotune.engine.train.fit` (early stopping).

    With ``test``, the best epoch's weights are restored and scored on it (used only for the
    final report, never for fitness). ``bf16``: bfloat16 autocast for training and scoring.
    """
    from optuna_biotune.engine.train import evaluate, fit

    num_classes = int(max(int(train.y.max()), int(val.y.max()))) + 1
    result = fit(
        head,
        param_groups=[{"params": list(head.parameters())}],
        train=train,
        val=val,
        max_epochs=max_epochs,
        patience=patience,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        momentum=0.9,
        nesterov=optimizer == "sgd",
        num_classes=num_classes,
        device=device,
        restore_best=test is not None,
        eval_batch_size=1024,
        bf16=bf16,
    )
    test_accuracy = None
    if test is not None:
        test_accuracy = evaluate(head, test, batch_size=1024, device=device, bf16=bf16)
    return HeadResult(
        val_accuracy=float(result.best_val_metric),
        epochs=int(result.epochs_run),
        best_epoch=int(result.best_epoch),
        seconds=float(result.seconds),
        test_accuracy=test_accuracy,
    )
