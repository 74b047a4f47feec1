"""Exceptions with one-line messages that name the problem and the fix.

The CLI prints ``str(error)`` alone (no traceback) and exits with :attr:`exit_code`:
2 for usage errors (bad arguments, specs, paths, datasets), 1 for runtime errors.
"""

from __future__ import annotations

from typing import Any


class BioTuneError(Exception):
    """Base class of the package's user-facing errors."""

    exit_code = 1


class UsageError(BioTuneError, ValueError):
    """The user asked for something that cannot work (exit code 2): fix the input."""

    exit_code = 2


class RuntimeFailure(BioTuneError, RuntimeError):
    """Something failed while running (exit code 1): storage lost, out of memory, ..."""

    exit_code = 1


def check_int(name: str, value: Any, low: int, *, why: str = "", fix: str = "") -> int:
    """The one integer check of the package (spec, objective, fine-tuner, samplers).

    Returns ``value`` when it is an ``int`` (not a ``bool``) of at least ``low``; otherwise
    raises :class:`UsageError`: ``"`name` must be an integer >= low[ (why)], got value[; fix]."``.
    The bounds themselves live with the rule they belong to (``engine.finetune.MINIMUM``,
    ``evolution.base.MIN_POPULATION``) and are imported wherever they are checked.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        reason = f" ({why})" if why else ""
        tail = f"; {fix}" if fix else ""
        raise UsageError(f"`{name}` must be an integer >= {low}{reason}, got {value!r}{tail}.")
    return value


__all__ = ["BioTuneError", "RuntimeFailure", "UsageError", "check_int"]
