"""Hyperparameters of the comparison methods of paper Table I.

One dataclass for the whole family; validation is eager, in ``__post_init__``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optuna_biotune.errors import UsageError


def _option(default: float, text: str) -> Any:
    """A field with its default and its help text (the ``baseline`` command's option help)."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class BaselineConfig:
    """Method-specific settings; everything else (data, seeds, epochs, ...) is shared with FT.

    Each field is one option of ``optuna-biotune baseline`` (``--sp-alpha``, ...), with the help
    text in its metadata; :data:`~optuna_biotune.baselines.methods.REGISTRY` says which methods
    read it. The defaults are the common published ones.
    """

    sp_alpha: float = _option(
        0.01,
        "weight of the pull toward the pretrained start weights w0 (Li et al. 2018; 0.01 in a "
        "common implementation)",
    )
    sp_beta: float = _option(0.01, "weight of the new head's plain L2 decay beta/2 ||w||^2")
    unfreeze_every: int = _option(
        1, "epochs between two unfreezings of one more block (ULMFiT: one block per epoch)"
    )
    rgn_batches: int = _option(
        4,
        "training batches whose relative gradient norms are averaged at the start of each "
        "epoch (Lee et al. 2023)",
    )
    lora_rank: int = _option(8, "rank r of the adapters (Hu et al. 2021)")
    lora_alpha: float = _option(8.0, "scaling numerator: the update is (alpha / r) * B @ A")
    lora_dropout: float = _option(0.0, "dropout on the adapter input, in [0, 1)")

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
