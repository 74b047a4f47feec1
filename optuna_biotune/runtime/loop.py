"""The loop every worker runs (no torch here).

:func:`run_until` optimises until the study holds a target of completed trials, retrying a
lost storage (:mod:`optuna_biotune.runtime.workers`) and stopping after two rounds that complete
nothing; :func:`fail_on_out_of_memory` makes a device out of memory fail only its trial; the
progress bar is the commands' one bar. A generational search's rounds of this loop
(``run_generations``) are in :mod:`optuna_biotune.runtime.generational`, which imports this
module (never the other way round).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optuna_biotune.runtime import interrupts
from optuna_biotune.runtime.workers import (
    RETRY_DELAY,
    STORAGE_PATIENCE,
    describe_storage_error,
    storage_error,
    worker_storage_of,
)

__all__ = [
    "completed",
    "fail_on_out_of_memory",
    "out_of_memory",
    "progress_bar",
    "run_until",
    "run_with_progress",
]


def completed(study: optuna.Study) -> int:
    """How many trials of ``study`` are COMPLETE."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def run_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    target: int,
    n_jobs: int = 1,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    catch: tuple[type[Exception], ...] = (),
    patience: float | None = None,
    log: Callable[[str], None] | None = None,
    enough: Callable[[], bool] | None = None,
) -> int:
    """Optimise until ``target`` trials of the study are COMPLETE (earlier runs count), or
    until ``enough()`` says so (checked after each trial).

    Every worker of a study runs this loop; they stop together once the study holds
    ``target`` completed trials. A lost storage (server restarted, connection dropped) is
    retried for ``patience`` seconds (default :data:`STORAGE_PATIENCE`, or the environment
    variable ``BIOTUNE_STORAGE_PATIENCE``): the trials this process had open are marked FAIL
    once the storage answers again (the sampler issues their slots again) and the loop goes
    on. Ctrl-C or SIGTERM (:mod:`optuna_biotune.runtime.interrupts`) marks them FAIL too, then
    propagates. Trials failed either way are marked as interrupted (no attempt spent).

    Returns:
        The number of completed trials in the study.

    Raises:
        RuntimeFailure: The storage stayed away longer than ``patience``, or two rounds in a
            row completed no trial (the message carries the last failure's reason).
    """
    from optuna_biotune.errors import RuntimeFailure

    if patience is None:
        patience = float(os.environ.get("BIOTUNE_STORAGE_PATIENCE", STORAGE_PATIENCE))
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    storage = worker_storage_of(study)

    def reached() -> bool:
        return enough is not None and enough()

    def stop_at_target(st: optuna.Study, trial: FrozenTrial) -> None:
        if reached() or completed(st) >= target:
            st.stop()

    outage: float | None = None
    stalled = 0
    done = -1
    try:
        while True:
            try:
                if storage is not None and storage.open_trials:
                    failed = storage.fail_open_trials("storage outage")
                    if failed:
                        say(f"storage is back; marked {len(failed)} interrupted trial(s) FAIL")
                now = completed(study)
                outage = None
                if now >= target or reached():
                    return now
                stalled = stalled + 1 if now == done else 0
                if stalled >= 2:
                    failed_trials = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                    reason = failed_trials[-1].system_attrs.get("fail_reason", "") or (
                        failed_trials[-1].user_attrs.get("fail_reason", "")
                        if failed_trials
                        else ""
                    )
                    raise RuntimeFailure(
                        f"no trial finished in two rounds; last failure: {str(reason)[:200]!r}; "
                        "fix its cause and rerun the same command to resume."
                    )
                done = now
                study.optimize(
                    objective,
                    n_trials=target - now,
                    n_jobs=n_jobs,
                    callbacks=[*callbacks, stop_at_target],
                    catch=catch,
                    gc_after_trial=False,
                )
            except Exception as exc:
                stop = interrupts.cause(exc)  # a signal that landed in Optuna's own cleanup
                if stop is not None:
                    raise stop from None
                if not storage_error(exc):
                    raise
                outage = time.monotonic() if outage is None else outage
                done = -1  # a round cut short by the storage is no stalled round
                waited = time.monotonic() - outage
                if waited > patience:
                    raise RuntimeFailure(
                        f"the storage has been unreachable for {waited:.0f} s "
                        f"({describe_storage_error(exc)}); check the server, then rerun the "
                        "same command to resume."
                    ) from None
                say(f"storage error ({describe_storage_error(exc)}); retrying")
                time.sleep(min(RETRY_DELAY, max(0.0, patience - waited)))
    except KeyboardInterrupt:
        if storage is not None:
            # If the storage is away too, the heartbeat fails them after its grace period.
            with contextlib.suppress(Exception):
                storage.fail_open_trials()
        raise


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (CUDA, MPS or the CPU allocator)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def fail_on_out_of_memory(
    objective: Callable[[optuna.Trial], float],
) -> Callable[[optuna.Trial], float]:
    """Wrap ``objective`` so that a device out of memory fails only the trial.

    The reason goes to the trial's user attr ``fail_reason`` (as the objective does for a NaN
    loss) and the trial returns NaN, which Optuna records as FAIL; the search goes on with
    the next trial (the sampler issues the slot again).
    """

    def guarded(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            first = " ".join(str(exc).split())[:200]
            trial.set_user_attr(
                "fail_reason",
                f"device out of memory ({type(exc).__name__}: {first}); lower --batch-size or "
                "--image-size, or free the device.",
            )
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
            return float("nan")

    return guarded


def progress_bar(*, desc: str, total: int, initial: int) -> Any:
    """The commands' progress bar of evaluations (tqdm on standard error)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="eval",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def run_with_progress(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    bar: Any,
    target: int,
    n_jobs: int,
    generation: Callable[[FrozenTrial], int],
    enough: Callable[[], bool] | None = None,
    postfix: Callable[[FrozenTrial], Mapping[str, str]] | None = None,
) -> int:
    """:func:`run_until` as the commands run it, advancing ``bar`` as trials complete.

    A device out of memory fails only the trial (:func:`fail_on_out_of_memory`), a
    :class:`~optuna_biotune.errors.RuntimeFailure` of one trial (a NaN loss) fails that trial
    and the loop goes on, each finished trial sets the bar's postfix (generation, trial, best
    so far, and what ``postfix`` returns for it), and log lines are written through the bar.

    Returns:
        The number of completed trials in the study.
    """
    from optuna_biotune.errors import RuntimeFailure

    def progress(st: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            bar.update(1)
        try:
            best = f"{st.best_value:.4f}"
        except ValueError:
            best = "-"
        extra = dict(postfix(trial)) if postfix is not None else {}
        bar.set_postfix(generation=generation(trial), trial=trial.number, best=best, **extra)

    return run_until(
        study,
        fail_on_out_of_memory(objective),
        target=target,
        n_jobs=n_jobs,
        callbacks=[progress],
        catch=(RuntimeFailure,),
        log=lambda line: bar.write(line, file=sys.stderr),
        enough=enough,
    )
