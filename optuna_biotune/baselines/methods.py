"""One entry point for the eight methods: :func:`prepare_plan` (name -> :class:`Plan`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from optuna_biotune.baselines._plan import BlockParams, Plan, ProbeBatches, split_head
from optuna_biotune.baselines.autorgn import prepare_autorgn
from optuna_biotune.baselines.config import BaselineConfig, canonical_method
from optuna_biotune.baselines.full import prepare_ft, prepare_lp
from optuna_biotune.baselines.gradual import prepare_gradual
from optuna_biotune.baselines.lora import prepare_lora
from optuna_biotune.baselines.sp import prepare_sp
from optuna_biotune.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from optuna_biotune.engine.blocks import Block


def prepare_plan(
    method: str,
    *,
    model: nn.Module,
    blocks: Sequence[Block | BlockParams],
    head: str,
    lr: float,
    config: BaselineConfig | None = None,
    probe_batches: ProbeBatches | None = None,
) -> Plan:
    """Set ``model`` up for ``method`` and return what the training engine needs.

    Args:
        method: One of :data:`~optuna_biotune.baselines.METHODS` (any case).
        model: A pretrained backbone with a new head; changed in place (``requires_grad``,
            LoRA adapters).
        blocks: Its partition (``blocks.partition(model)``), input first, every parameter
            once, the head's block included.
        head: Dotted module name of the new head (``model.biotune_head``).
        lr: The base learning rate, FT's.
        config: Method hyperparameters; defaults when ``None``.
        probe_batches: AutoRGN only: ``probe_batches(epoch)`` yields training batches.

    Returns:
        The :class:`Plan`: param groups, penalty, per-epoch hook, parameter counts.
    """
    name = canonical_method(method)
    if not (isinstance(lr, int | float) and lr > 0):
        raise UsageError(f"`lr` must be a number > 0, got {lr!r}.")
    cfg = config or BaselineConfig()
    named = [
        b
        if isinstance(b, BlockParams)
        else BlockParams(b.name, tuple(n for n, _ in b.named_parameters(model)))
        for b in blocks
    ]
    backbone, head_params = split_head(model, named, head)
    if name == "FT":
        return prepare_ft(model, backbone, head_params, lr=lr)
    if name == "LP":
        return prepare_lp(model, backbone, head_params, lr=lr)
    if name in ("L1-SP", "L2-SP"):
        norm = 1 if name == "L1-SP" else 2
        return prepare_sp(
            model, backbone, head_params, lr=lr, alpha=cfg.sp_alpha, beta=cfg.sp_beta, norm=norm
        )
    if name in ("G-LF", "G-FL"):
        order = "last_first" if name == "G-LF" else "first_last"
        return prepare_gradual(
            model, backbone, head_params, lr=lr, order=order, every=cfg.unfreeze_every
        )
    if name == "AutoRGN":
        if probe_batches is None:
            raise UsageError("`probe_batches` is required by AutoRGN: pass training batches.")
        return prepare_autorgn(model, backbone, head_params, lr=lr, probe_batches=probe_batches)
    return prepare_lora(
        model,
        backbone,
        head_params,
        head=head,
        lr=lr,
        rank=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
    )
