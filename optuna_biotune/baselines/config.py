"""Hyperparameters of the comparison methods of paper Table I.

One dataclass for the whole family: each field says which method reads it; the defaults are
the common published ones. Validation is eager, in ``__post_init__``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optuna_biotune.errors import UsageError


@dataclass(frozen=True)
class BaselineConfig:
    """Method-specific settings; everything else (data, seeds, epochs, ...) is shared with FT.

    Attributes:
        sp_alpha: L1-SP / L2-SP weight of the pull toward the start weights ``w0`` of the
            pretrained backbone (Li et al. 2018; 0.01 in a common implementation).
        sp_beta: L1-SP / L2-SP weight of the plain L2 decay ``beta/2 ||w||^2`` of the new head.
        unfreeze_every: G-LF / G-FL: epochs between two unfreezings of one more block
            (ULMFiT, Howard and Ruder 2018: one block per epoch).
        rgn_batches: AutoRGN: training batches whose gradients are averaged for the relative
            gradient norms at the start of each epoch (Lee et al. 2023).
        lora_rank: LoRA rank ``r`` of the adapters (Hu et al. 2021).
        lora_alpha: LoRA scaling numerator; the update is ``(alpha / r) * B @ A``.
        lora_dropout: dropout on the adapter input.
    """

    sp_alpha: float = 0.01
    sp_beta: float = 0.01
    unfreeze_every: int = 1
    rgn_batches: int = 4
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sp_alpha", "sp_beta", "lora_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise UsageError(f"`{name}` must be a finite number >= 0, got {value!r}.")
        for name in ("unfreeze_every", "rgn_batches", "lora_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if not (0.0 <= self.lora_dropout < 1.0):
            raise UsageError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout!r}.")
