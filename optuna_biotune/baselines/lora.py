"""LoRA: low-rank adapters on the convolution and linear layers, backbone frozen (Hu et al.
2021, arXiv:2106.09685; paper Table I row 8), through peft's ``inject_adapter_in_model``.

Each adapted layer computes ``W0 x + (alpha / r) * B A x``, with ``W0`` frozen, ``A`` random and
``B`` zero at the start, so the model starts exactly as pretrained. The new head is trained in
full (it has no pretrained weights to adapt). peft serves every dense layer: ``nn.Linear`` and
``nn.Conv2d`` with ``groups == 1`` (timm's ``Conv2dSame`` too). Grouped and depthwise
convolutions stay frozen without an adapter, because peft only adapts a grouped convolution
when the rank is divisible by the number of groups, which for depthwise layers means ranks of
hundreds; in EfficientNet-Lite0 they hold 182,016 weights, 5.4 % of the model with a
10-class head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from optuna_biotune.baselines._plan import BlockParams, Plan, count_params, set_trainable

if TYPE_CHECKING:
    from torch import nn


def lora_targets(model: nn.Module, head: str) -> list[str]:
    """Dotted names of the modules that get an adapter: dense convs and linears, not the head."""
    from torch import nn

    targets = []
    for name, module in model.named_modules():
        if name == head or name.startswith(head + "."):
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            targets.append(name)
    return targets


def prepare_lora(
    model: nn.Module,
    backbone: Sequence[BlockParams],
    head_params: Sequence[str],
    *,
    head: str,
    lr: float,
    rank: int,
    alpha: float,
    dropout: float,
) -> Plan:
    """LoRA: inject adapters in place; only the adapters and the new head train, at ``lr``."""
    from peft import LoraConfig, inject_adapter_in_model

    total = count_params(model)
    targets = lora_targets(model, head)
    if not targets:
        raise ValueError("the model has no Conv2d (groups=1) or Linear layer outside the head.")
    pattern = "^(?:" + "|".join(re.escape(t) for t in targets) + ")$"
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; it scales by alpha / r
        lora_dropout=dropout,
        target_modules=pattern,
    )
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    set_trainable(model, head_params, trainable=True)
    params = dict(model.named_parameters())
    adapters = [p for n, p in params.items() if "lora_" in n]
    groups = [
        {"name": "adapters", "params": adapters, "lr": lr},
        {"name": "head", "params": [params[n] for n in head_params], "lr": lr},
    ]
    return Plan(method="LoRA", model=model, param_groups=groups, total_params=total)
