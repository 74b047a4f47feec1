"""The CLI with a loss that is always NaN (what a far too high learning rate ends in), for
``test_bad_input``: ``python tests/nan_loss_cli.py search ...`` runs ``optuna-biotune search ...``
in a process whose cross-entropy returns NaN."""

from __future__ import annotations

import sys

import torch

_forward = torch.nn.CrossEntropyLoss.forward


def _nan_forward(
    self: torch.nn.CrossEntropyLoss, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    return _forward(self, x, y) * float("nan")


if __name__ == "__main__":
    torch.nn.CrossEntropyLoss.forward = _nan_forward  # type: ignore[method-assign]
    from optuna_biotune.cli import main

    raise SystemExit(main(sys.argv[1:]))
