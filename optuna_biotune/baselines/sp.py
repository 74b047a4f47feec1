"""L1-SP and L2-SP: fine-tuning pulled toward the starting point (Li, Grandvalet, Davoine 2018).

The loss adds ``Omega(w)`` to the cross-entropy, with ``w0`` the pretrained backbone weights
at the start of training (detached copies) and ``w_head`` the new head's weights:

- L2-SP: ``alpha/2 * ||w - w0||_2^2 + beta/2 * ||w_head||_2^2``
- L1-SP: ``alpha * ||w - w0||_1 + beta/2 * ||w_head||_2^2``

Everything trains at one learning rate, as FT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from optuna_biotune.baselines._plan import BlockParams, Plan
from optuna_biotune.baselines.full import prepare_ft

if TYPE_CHECKING:
    import torch
    from torch import nn


class StartPointPenalty:
    """``penalty(model)`` of L1-SP (``norm=1``) or L2-SP (``norm=2``), Li et al. 2018 eq. 3-4.

    Args:
        model: The model at its starting point; the named backbone weights are copied now.
        backbone: Dotted names of the pretrained parameters pulled toward their start.
        head: Dotted names of the new head's parameters (plain L2 decay).
        alpha: Weight of the start-point term.
        beta: Weight of the head's L2 term.
        norm: 1 (L1-SP) or 2 (L2-SP).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        backbone: Sequence[str],
        head: Sequence[str],
        alpha: float,
        beta: float,
        norm: int,
    ) -> None:
        if norm not in (1, 2):
            raise ValueError(f"`norm` must be 1 (L1-SP) or 2 (L2-SP), got {norm!r}.")
        params = dict(model.named_parameters())
        self.start = {n: params[n].detach().clone() for n in backbone}
        self.head = tuple(head)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.norm = norm

    def __call__(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        start_term = head_term = None
        for name, w0 in self.start.items():
            diff = params[name] - w0
            term = diff.abs().sum() if self.norm == 1 else diff.pow(2).sum()
            start_term = term if start_term is None else start_term + term
        for name in self.head:
            term = params[name].pow(2).sum()
            head_term = term if head_term is None else head_term + term
        assert head_term is not None  # split_head: a head has at least one parameter
        scale = self.alpha if self.norm == 1 else self.alpha / 2
        total = self.beta / 2 * head_term
        return total if start_term is None else total + scale * start_term


def prepare_sp(
    model: nn.Module,
    backbone: Sequence[BlockParams],
    head_params: Sequence[str],
    *,
    lr: float,
    alpha: float,
    beta: float,
    norm: int,
) -> Plan:
    """L1-SP (``norm=1``) or L2-SP (``norm=2``): FT plus :class:`StartPointPenalty`."""
    plan = prepare_ft(model, backbone, head_params, lr=lr)
    plan.method = f"L{norm}-SP"
    plan.penalty = StartPointPenalty(
        model=model,
        backbone=[n for b in backbone for n in b.params],
        head=head_params,
        alpha=alpha,
        beta=beta,
        norm=norm,
    )
    return plan
