"""AutoRGN: per-tensor learning rates from relative gradient norms (Lee et al., ICLR 2023,
"Surgical fine-tuning improves adaptation to distribution shifts"; paper Table I row 7).

At the start of every epoch, for each parameter tensor ``i`` the relative gradient norm
``RGN_i = ||g_i|| / ||w_i||`` is averaged over a few training batches; the tensor's learning
rate becomes ``lr * RGN_i / max_j RGN_j``. Every tensor trains (one optimizer group each); the
layers whose gradients are large relative to their weights move most.

A tensor whose norm is ~0 (e.g. a zero-initialised bias) has no relative scale: it gets the
full rate and does not enter the maximum.

Against Lee et al.'s definition (Sec. 5, Auto-RGN): the same quantity (per tensor, gradient norm
over parameter norm), the same normalisation (divided by the largest, so the largest tensor
trains at the base rate) and the same use (a per-tensor multiplier of the base rate, recomputed
during training: here at the start of every epoch, from a few training batches). Every tensor
of the network enters the maximum, the new head included, as in their full-network setting.

Where it lands: with a freshly initialised head, the head's small bias and weight have by far
the largest relative gradients, so they set the maximum and the pretrained backbone trains
at a small fraction of the base rate: at epoch 0 on digits and mnist5k (EfficientNet-Lite0,
32 px) 99.5 % of the parameters get a multiplier below 0.1 and the median tensor 0.0026
(``benchmarks/autorgn_probe.py``). At FT's rate AutoRGN is therefore close to a linear probe
that also nudges the stem; Lee et al. tune the base rate per method, which
``benchmarks/comparison.py`` does too (AutoRGN at 1e-3, 3e-3 and 1e-2, chosen on validation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from optuna_biotune.baselines._plan import (
    BlockParams,
    Plan,
    ProbeBatches,
    count_params,
    set_trainable,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

_TINY = 1e-12


def relative_gradient_norms(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, float]:
    """``||g|| / ||w||`` per parameter tensor, averaged over ``batches`` of (inputs, targets).

    The model is probed in training mode with its buffers (batch-norm running statistics)
    restored afterwards and its gradients cleared, so the probe leaves no trace in training.
    A tensor with ``||w|| ~ 0`` gets ``inf``.
    """
    import torch
    import torch.nn.functional as F

    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    was_training = model.training
    grad_flags = {n: p.requires_grad for n, p in params.items()}
    sums = dict.fromkeys(params, 0.0)
    count = 0
    try:
        model.train()
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        for inputs, targets in batches:
            loss = F.cross_entropy(model(inputs.to(device)), targets.to(device))
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            with torch.no_grad():
                for (name, p), g in zip(params.items(), grads, strict=True):
                    w = float(p.norm())
                    gn = 0.0 if g is None else float(g.norm())
                    sums[name] += float("inf") if w <= _TINY else gn / w
            count += 1
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        for n, p in params.items():
            p.requires_grad_(grad_flags[n])
        model.train(was_training)
    if count == 0:
        raise ValueError("`batches` yielded no batch; AutoRGN needs training data to probe.")
    return {n: s / count for n, s in sums.items()}


def rgn_multipliers(rgn: dict[str, float]) -> dict[str, float]:
    """``RGN_i / max_j RGN_j`` over the finite values; ``inf`` (zero-norm tensors) -> 1."""
    finite = [v for v in rgn.values() if v != float("inf")]
    top = max(finite, default=0.0)
    if top <= 0.0:
        return dict.fromkeys(rgn, 1.0)
    return {n: 1.0 if v == float("inf") else v / top for n, v in rgn.items()}


class AutoRGNSchedule:
    """``on_epoch_start`` hook that resets each tensor group's rate to ``lr * multiplier``.

    Args:
        lr: The base learning rate (FT's).
        probe_batches: ``probe_batches(epoch)`` yields the (inputs, targets) to probe with.
        history: A list the hook appends ``{"epoch", "multipliers"}`` to.
    """

    def __init__(
        self, *, lr: float, probe_batches: ProbeBatches, history: list[dict[str, Any]]
    ) -> None:
        self.lr = float(lr)
        self.probe_batches = probe_batches
        self.history = history

    def __call__(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        multipliers = rgn_multipliers(relative_gradient_norms(model, self.probe_batches(epoch)))
        for group in optimizer.param_groups:
            group["lr"] = self.lr * multipliers[group["name"]]
        self.history.append({"epoch": epoch, "multipliers": multipliers})


def prepare_autorgn(
    model: nn.Module,
    backbone: Sequence[BlockParams],
    head_params: Sequence[str],
    *,
    lr: float,
    probe_batches: ProbeBatches,
) -> Plan:
    """AutoRGN: one optimizer group per parameter tensor, rates reset every epoch."""
    set_trainable(model, [n for b in backbone for n in b.params], trainable=True)
    set_trainable(model, head_params, trainable=True)
    groups = [{"name": n, "params": [p], "lr": lr} for n, p in model.named_parameters()]
    plan = Plan(
        method="AutoRGN", model=model, param_groups=groups, total_params=count_params(model)
    )
    plan.on_epoch_start = AutoRGNSchedule(lr=lr, probe_batches=probe_batches, history=plan.history)
    return plan
