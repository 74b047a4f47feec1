"""Exceptions with one-line messages that name the problem and the fix.

The CLI prints ``str(error)`` alone (no traceback) and exits with :attr:`exit_code`:
2 for usage errors (bad arguments, specs, paths, datasets), 1 for runtime errors.
"""

from __future__ import annotations


class BioTuneError(Exception):
    """Base class of the package's user-facing errors."""

    exit_code = 1


class UsageError(BioTuneError, ValueError):
    """The user asked for something that cannot work (exit code 2): fix the input."""

    exit_code = 2


class RuntimeFailure(BioTuneError, RuntimeError):
    """Something failed while running (exit code 1): storage lost, out of memory, ..."""

    exit_code = 1


__all__ = ["BioTuneError", "RuntimeFailure", "UsageError"]
