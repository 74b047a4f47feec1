"""SIGTERM ends a command as Ctrl-C does (no torch here).

SIGTERM is what Slurm, Kubernetes and spot instances send before they stop a job. While
:func:`stop_on_signals` is active (``optuna_biotune.cli.main`` runs every command inside it):

- SIGINT (Ctrl-C) and SIGTERM raise :class:`Interrupted`, a :class:`KeyboardInterrupt`, in the
  main thread, so the run loop unwinds as on Ctrl-C: Optuna marks the trial it runs FAIL and
  :func:`~optuna_biotune.runtime.loop.run_until` fails the other trials this process opened;
- from that moment every trial this process's worker storage fails carries the trial system
  attr :data:`~optuna_biotune.evolution.ledger.INTERRUPTED_ATTR` (the signal's name), so the
  sampler issues its slot again without spending one of its attempts
  (:mod:`optuna_biotune.runtime.workers`);
- a watchdog thread ends the process within :data:`GRACE` seconds when it cannot unwind (with
  ``--n-jobs`` Optuna's thread pool waits for its other threads' evaluations): it fails the
  open trials itself, prints the command's line and exits with the signal's code;
- the command, once it has printed its line, leaves at once (:func:`leave`), without the
  interpreter's slow teardown.

A second signal while the first one unwinds is ignored (the cleanup must not be cut short).
The exit code is ``128 + signal``: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import typing
import weakref
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "GRACE",
    "Interrupted",
    "cause",
    "exit_code",
    "interrupted",
    "leave",
    "register_storage",
    "stop_on_signals",
]

#: Seconds the process is given to unwind after a signal before the watchdog ends it.
GRACE = 3.0


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT or SIGTERM) stopped the command; ``signum`` names it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def leave(code: int) -> typing.NoReturn:
    """End the process now with ``code`` (output flushed), without the interpreter's teardown:
    the work is stopped and stored, and unloading torch and its kin takes seconds on a loaded
    machine, where a scheduler that sent SIGTERM waits for the process to go."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def cause(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or signal behind ``exc``, if any: a signal can land inside code whose own
    cleanup then fails (Optuna's tell, interrupted mid-write, raises ``UnboundLocalError``)."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def exit_code(exc: BaseException) -> int:
    """The exit code of a command stopped by ``exc``: ``128 + signal`` (130 for Ctrl-C)."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


_lock = threading.Lock()
#: The signal that stopped this process (its name), ``None`` while none did.
_reason: str | None = None
#: The worker storages of this process (what the watchdog fails the open trials of).
_storages: weakref.WeakSet[Any] = weakref.WeakSet()


def interrupted() -> str | None:
    """The name of the signal that stopped this process (``"SIGTERM"``), else ``None``."""
    return _reason


def register_storage(storage: Any) -> None:
    """Note a worker storage (it has ``fail_open_trials()``) for the watchdog."""
    with _lock:
        _storages.add(storage)


def _fail_open_trials() -> None:
    with _lock:
        storages = list(_storages)
    for storage in storages:
        with contextlib.suppress(Exception):  # the storage may be away: the heartbeat remains
            storage.fail_open_trials()


@contextlib.contextmanager
def stop_on_signals(*, line: Callable[[BaseException], str]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM stop the work as described in the module docstring.

    ``line(exc)`` is what the command prints when it stops; the watchdog prints it when it has
    to end the process itself. Outside the main thread, or for a signal the process was started
    with ignored (``nohup``, a background job), nothing changes.
    """
    global _reason
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    done = threading.Event()

    def watchdog(exc: Interrupted) -> None:
        if done.wait(GRACE):
            return
        _fail_open_trials()
        with contextlib.suppress(Exception):
            print(line(exc), file=sys.stderr, flush=True)
        leave(exit_code(exc))

    def handler(signum: int, frame: Any) -> None:
        global _reason
        with _lock:
            if _reason is not None:
                return  # already stopping
            _reason = signal.Signals(signum).name
        exc = Interrupted(signum)
        threading.Thread(target=watchdog, args=(exc,), name="biotune-stop", daemon=True).start()
        raise exc

    previous: dict[signal.Signals, Any] = {}
    for signum, default in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGTERM, signal.SIG_DFL),
    ):
        if signal.getsignal(signum) is default:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        done.set()
        for signum, old in previous.items():
            signal.signal(signum, old)
        with _lock:
            _reason = None
