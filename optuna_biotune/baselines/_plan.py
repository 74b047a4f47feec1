"""What a comparison method changes relative to FT: a :class:`Plan` for the training engine.

Every method of paper Table I trains the same model on the same data with the same engine; it
differs from FT only in which parameters train (``requires_grad`` and the schedule in
``on_epoch_start``), at which rates (``param_groups``), and what is added to the loss
(``penalty``). A plan carries exactly those three things, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna_biotune.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: ``penalty(model) -> scalar tensor`` added to the cross-entropy of every training batch.
Penalty = Callable[["nn.Module"], "torch.Tensor"]
#: ``on_epoch_start(epoch, model, optimizer)`` called by the engine before each epoch.
EpochHook = Callable[[int, "nn.Module", "torch.optim.Optimizer"], None]
#: ``probe_batches(epoch) -> iterable of (inputs, targets)`` (AutoRGN's gradient probe).
ProbeBatches = Callable[[int], Iterable[tuple["torch.Tensor", "torch.Tensor"]]]


@dataclass(frozen=True)
class BlockParams:
    """One block of a partition, by name, with the dotted names of its parameters."""

    name: str
    params: tuple[str, ...]


@dataclass
class Plan:
    """Which parameters train, at which rates, and what the loss adds, for one method.

    Attributes:
        method: The method's name as in paper Table I.
        model: The model to train (LoRA injects adapters into it in place).
        param_groups: Optimizer parameter groups (``params``, ``lr`` and a ``name``).
        total_params: Parameters of the model before any adapter was added: the denominator
            of the trainable share (paper Table II counts shares of the backbone + head).
        penalty: Added to the loss, or ``None``.
        on_epoch_start: The per-epoch schedule, or ``None``.
        history: What the schedule did each epoch (trainable counts, AutoRGN multipliers).
    """

    method: str
    model: nn.Module
    param_groups: list[dict[str, Any]]
    total_params: int
    penalty: Penalty | None = None
    on_epoch_start: EpochHook | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def trainable_params(self) -> int:
        """Parameters that receive gradients now (adapters included, frozen ones not)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def trainable_share(self) -> float:
        """:meth:`trainable_params` over :attr:`total_params`, in [0, 1] (LoRA may be small)."""
        return self.trainable_params() / self.total_params


def split_head(
    model: nn.Module, blocks: Sequence[BlockParams], head: str
) -> tuple[list[BlockParams], list[str]]:
    """Split a partition into backbone blocks (input first) and the new head's parameter names.

    Args:
        model: The model the names refer to.
        blocks: Every parameter of ``model`` in exactly one block, input to output.
        head: Dotted module name of the new classification head (``model.biotune_head``).

    Returns:
        The blocks with the head's parameters removed (empty blocks dropped) and the head's
        parameter names.
    """
    names = [n for n, _ in model.named_parameters()]
    listed = [p for b in blocks for p in b.params]
    if sorted(listed) != sorted(names):
        missing = sorted(set(names) - set(listed))[:3]
        raise UsageError(
            f"`blocks` must hold every parameter of the model exactly once (missing or doubled "
            f"e.g. {missing}); build them with blocks.partition()."
        )
    prefix = head + "."
    head_params = [n for n in names if n.startswith(prefix)]
    if not head_params:
        raise UsageError(f"`head` {head!r} names no parameters of the model; pass its head name.")
    backbone = []
    for block in blocks:
        kept = tuple(p for p in block.params if not p.startswith(prefix))
        if kept:
            backbone.append(BlockParams(block.name, kept))
    return backbone, head_params


def set_trainable(model: nn.Module, names: Iterable[str], *, trainable: bool) -> None:
    """Set ``requires_grad`` of the named parameters."""
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(trainable)


def block_groups(
    model: nn.Module, blocks: Sequence[BlockParams], head_params: Sequence[str], lr: float
) -> list[dict[str, Any]]:
    """One optimizer group per backbone block plus one for the head, all at ``lr``."""
    params = dict(model.named_parameters())
    groups = [{"name": b.name, "params": [params[n] for n in b.params], "lr": lr} for b in blocks]
    groups.append({"name": "head", "params": [params[n] for n in head_params], "lr": lr})
    return groups


def count_params(model: nn.Module) -> int:
    """All parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
