"""FT (every layer at one learning rate) and LP (linear probe: only the new head trains).

Paper Table I's first two rows; LP follows Kumar et al. 2022 (reference [1] of the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from optuna_biotune.baselines._plan import (
    BlockParams,
    Plan,
    block_groups,
    count_params,
    set_trainable,
)

if TYPE_CHECKING:
    from torch import nn


def prepare_ft(
    model: nn.Module, backbone: Sequence[BlockParams], head_params: Sequence[str], *, lr: float
) -> Plan:
    """FT: every parameter trains at ``lr``; nothing is added to the loss."""
    set_trainable(model, [n for b in backbone for n in b.params], trainable=True)
    set_trainable(model, head_params, trainable=True)
    return Plan(
        method="FT",
        model=model,
        param_groups=block_groups(model, backbone, head_params, lr),
        total_params=count_params(model),
    )


def prepare_lp(
    model: nn.Module, backbone: Sequence[BlockParams], head_params: Sequence[str], *, lr: float
) -> Plan:
    """LP: the pretrained backbone is frozen; only the new head trains, at ``lr``."""
    set_trainable(model, [n for b in backbone for n in b.params], trainable=False)
    set_trainable(model, head_params, trainable=True)
    params = dict(model.named_parameters())
    return Plan(
        method="LP",
        model=model,
        param_groups=[{"name": "head", "params": [params[n] for n in head_params], "lr": lr}],
        total_params=count_params(model),
    )
