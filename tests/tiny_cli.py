"""The CLI as the tests run it (a child process), and the tiny `search` budget they share."""

from __future__ import annotations

import sys

#: ``optuna-biotune`` in a child process of the test's interpreter.
CLI = [sys.executable, "-m", "optuna_biotune.cli"]
#: Population 3, generation 0 only (3 evaluations of 1 epoch on a quarter of digits at 8 px).
TINY_SEARCH = [
    *("--population", "3", "--elites", "1", "--generations", "0", "--epochs", "1"),
    *("--seeds", "1", "--image-size", "8", "--data-fraction", "0.25", "--no-final"),
]
