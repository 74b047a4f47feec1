"""G-LF and G-FL: gradual unfreezing, last block first (ULMFiT, Howard and Ruder 2018) or first
block first (Mukherjee and Awadallah 2019), paper Table I rows 5-6.

Both start as a linear probe: in epoch 0 only the new head trains (a fresh head must learn
before the backbone moves). Every ``every`` epochs one more pretrained block is unfrozen, from
the block nearest the head (G-LF) or from the input stem (G-FL), until all train. Every block
is in the optimizer from the start at one learning rate; a frozen block simply gets no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from optuna_biotune.baselines._plan import BlockParams, Plan, set_trainable
from optuna_biotune.baselines.full import prepare_ft

if TYPE_CHECKING:
    import torch
    from torch import nn


class GradualUnfreezing:
    """``on_epoch_start`` hook: which backbone blocks train in epoch ``e``.

    Args:
        backbone: The pretrained blocks, input first.
        order: ``"last_first"`` (G-LF) or ``"first_last"`` (G-FL).
        every: Epochs between two unfreezings.
        history: A list the hook appends ``{"epoch", "trained_blocks"}`` to.
    """

    def __init__(
        self,
        *,
        backbone: Sequence[BlockParams],
        order: str,
        every: int,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        if order not in ("last_first", "first_last"):
            raise ValueError(f"`order` must be 'last_first' or 'first_last', got {order!r}.")
        if every < 1:
            raise ValueError(f"`every` must be >= 1, got {every!r}.")
        blocks = list(backbone)
        self.sequence = blocks[::-1] if order == "last_first" else blocks
        self.every = every
        self.history = history if history is not None else []

    def unfrozen(self, epoch: int) -> list[BlockParams]:
        """Backbone blocks that train in ``epoch`` (0-based), in unfreezing order."""
        return self.sequence[: min(epoch // self.every, len(self.sequence))]

    def freeze(self, epoch: int, model: nn.Module) -> list[BlockParams]:
        """Set which backbone blocks of ``model`` train in ``epoch``; return those."""
        trained = self.unfrozen(epoch)
        names = {b.name for b in trained}
        for block in self.sequence:
            set_trainable(model, block.params, trainable=block.name in names)
        return trained

    def __call__(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        trained = self.freeze(epoch, model)
        self.history.append({"epoch": epoch, "trained_blocks": [b.name for b in trained]})


def prepare_gradual(
    model: nn.Module,
    backbone: Sequence[BlockParams],
    head_params: Sequence[str],
    *,
    lr: float,
    order: str,
    every: int,
) -> Plan:
    """G-LF (``order="last_first"``) or G-FL (``order="first_last"``): FT's groups, with the
    backbone frozen before the first epoch and unfrozen block by block."""
    plan = prepare_ft(model, backbone, head_params, lr=lr)
    plan.method = "G-LF" if order == "last_first" else "G-FL"
    hook = GradualUnfreezing(backbone=backbone, order=order, every=every, history=plan.history)
    hook.freeze(0, model)  # the state before the first epoch: head only
    plan.on_epoch_start = hook
    return plan
