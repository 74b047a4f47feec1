"""The eight methods of paper Table I as one table: name -> how its :class:`Plan` is built.

:data:`REGISTRY` maps each method's name (the paper's spelling, in the paper's row order) to a
:class:`Method`: its plan builder, the :class:`BaselineConfig` fields it reads, and whether it
probes training batches (AutoRGN). :func:`prepare_plan` looks the name up and builds the plan;
adding a method is one row here. No torch at import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optuna_biotune.baselines._plan import BlockParams, Plan, ProbeBatches, split_head
from optuna_biotune.baselines.autorgn import prepare_autorgn
from optuna_biotune.baselines.config import BaselineConfig
from optuna_biotune.baselines.full import prepare_ft, prepare_lp
from optuna_biotune.baselines.gradual import prepare_gradual
from optuna_biotune.baselines.lora import prepare_lora
from optuna_biotune.baselines.sp import prepare_sp
from optuna_biotune.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from optuna_biotune.engine.blocks import Block


@dataclass(frozen=True)
class PlanInputs:
    """What every plan builder may read: the model split into backbone and head, the base
    rate, the method settings and (AutoRGN) the probe batches."""

    model: nn.Module
    backbone: list[BlockParams]
    head_params: list[str]
    head: str
    lr: float
    config: BaselineConfig
    probe_batches: ProbeBatches | None


@dataclass(frozen=True)
class Method:
    """One row of paper Table I.

    Attributes:
        build: Builds the method's :class:`Plan` from the :class:`PlanInputs`.
        options: The :class:`BaselineConfig` fields it reads (the CLI names the method in
            their help).
        probes: It needs ``probe_batches`` (training batches, AutoRGN).
    """

    build: Callable[[PlanInputs], Plan]
    options: tuple[str, ...] = ()
    probes: bool = False


def _sp(norm: int) -> Method:
    return Method(
        lambda i: prepare_sp(
            i.model,
            i.backbone,
            i.head_params,
            lr=i.lr,
            alpha=i.config.sp_alpha,
            beta=i.config.sp_beta,
            norm=norm,
        ),
        options=("sp_alpha", "sp_beta"),
    )


def _gradual(order: str) -> Method:
    return Method(
        lambda i: prepare_gradual(
            i.model, i.backbone, i.head_params, lr=i.lr, order=order, every=i.config.unfreeze_every
        ),
        options=("unfreeze_every",),
    )


def _autorgn(i: PlanInputs) -> Plan:
    assert i.probe_batches is not None  # prepare_plan checks it (Method.probes)
    return prepare_autorgn(
        i.model, i.backbone, i.head_params, lr=i.lr, probe_batches=i.probe_batches
    )


def _lora(i: PlanInputs) -> Plan:
    cfg = i.config
    return prepare_lora(
        i.model,
        i.backbone,
        i.head_params,
        head=i.head,
        lr=i.lr,
        rank=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
    )


#: The methods of paper Table I, in the paper's row order: name -> :class:`Method`.
REGISTRY: dict[str, Method] = {
    "FT": Method(lambda i: prepare_ft(i.model, i.backbone, i.head_params, lr=i.lr)),
    "LP": Method(lambda i: prepare_lp(i.model, i.backbone, i.head_params, lr=i.lr)),
    "L1-SP": _sp(1),
    "L2-SP": _sp(2),
    "G-LF": _gradual("last_first"),
    "G-FL": _gradual("first_last"),
    "AutoRGN": Method(_autorgn, options=("rgn_batches",), probes=True),
    "LoRA": Method(_lora, options=("lora_rank", "lora_alpha", "lora_dropout")),
}
#: The method names, in the paper's row order.
METHODS: tuple[str, ...] = tuple(REGISTRY)

_ALIASES = {m.lower().replace("-", "").replace("_", ""): m for m in METHODS}


def canonical_method(method: str) -> str:
    """Return the paper's spelling of ``method`` (case, ``-`` and ``_`` are ignored).

    Raises:
        UsageError: ``method`` is not one of :data:`METHODS`.
    """
    if not isinstance(method, str):
        raise UsageError(f"`method` must be a string, got {type(method).__name__}.")
    key = method.lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise UsageError(f"`method` {method!r} is unknown; use one of {list(METHODS)}.")
    return _ALIASES[key]


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
        method: One of :data:`METHODS` (any case).
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
    entry = REGISTRY[name]
    if not (isinstance(lr, int | float) and lr > 0):
        raise UsageError(f"`lr` must be a number > 0, got {lr!r}.")
    if entry.probes and probe_batches is None:
        raise UsageError(f"`probe_batches` is required by {name}: pass training batches.")
    named = [
        b
        if isinstance(b, BlockParams)
        else BlockParams(b.name, tuple(n for n, _ in b.named_parameters(model)))
        for b in blocks
    ]
    backbone, head_params = split_head(model, named, head)
    inputs = PlanInputs(
        model=model,
        backbone=backbone,
        head_params=head_params,
        head=head,
        lr=lr,
        config=config or BaselineConfig(),
        probe_batches=probe_batches,
    )
    return entry.build(inputs)
