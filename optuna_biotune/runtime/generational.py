"""A generational search's rounds of the worker loop, until every planned slot is complete.

:func:`run_generations` runs rounds of :func:`~optuna_biotune.runtime.loop.run_until` until
every slot of the planned generations is complete: slots left behind by dead workers are
evaluated (``Generations.reissue``), other workers' running trials waited for;
:func:`slot_progress` says where the search stands (:class:`SlotProgress`). No torch here.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optuna_biotune.errors import RuntimeFailure, UsageError
from optuna_biotune.evolution.base import GenerationalSampler
from optuna_biotune.evolution.claiming import backend
from optuna_biotune.evolution.generations import Generations
from optuna_biotune.evolution.layout import Layout
from optuna_biotune.runtime.loop import completed, run_until, run_with_progress
from optuna_biotune.runtime.workers import SILENT_FACTOR, WORKER_ATTR

__all__ = ["SlotProgress", "run_generations", "slot_progress"]


@dataclass(frozen=True)
class SlotProgress:
    """Where a generational search stands against its last planned generation.

    Attributes:
        newest: The newest opened generation (-1 before any).
        done: Every slot of generations ``0..last`` has a COMPLETE trial or used up its
            attempts.
        left: Unfinished slots of the newest generation.
        free: Unfinished slots of the newest generation (when it is planned) that no trial
            holds: the sampler issues them.
        behind: ``(generation, slot)`` of older planned generations that no trial holds and
            that have attempts left: their trial died after the generation moved on, and the
            sampler issues only the newest generation's slots.
        running: RUNNING or WAITING trials that hold unfinished slots of planned generations.
    """

    newest: int
    done: bool
    left: int
    free: int
    behind: tuple[tuple[int, int], ...]
    running: tuple[FrozenTrial, ...]


def slot_progress(
    study: optuna.Study, *, namespace: str, last: int, attempts: int = 3
) -> SlotProgress:
    """Read the generation records and slot claims of ``namespace`` (scans the whole study:
    once per generation or per wait, not per trial)."""
    states = Layout(namespace).slot_states(study)
    records, complete, dead, holders = states.records, states.complete, states.dead, states.holders
    newest = len(records) - 1

    def unfinished(g: int) -> list[int]:
        return [
            s
            for s in range(len(records[g].get("slots", [])))
            if (g, s) not in complete and dead.get((g, s), 0) < attempts
        ]

    planned = {g: unfinished(g) for g in range(min(newest, last) + 1)}
    return SlotProgress(
        newest=newest,
        done=newest >= last and not any(planned.values()),
        left=len(unfinished(newest)) if newest >= 0 else 0,
        free=len([s for s in planned.get(newest, []) if (newest, s) not in holders]),
        behind=tuple(
            (g, s)
            for g, slots in planned.items()
            if g < newest
            for s in slots
            if (g, s) not in holders
        ),
        running=tuple(
            sorted(
                (t for (g, s), t in holders.items() if s in planned.get(g, [])),
                key=lambda t: t.number,
            )
        ),
    )


def _fail_stale(study: optuna.Study) -> None:
    """Optuna's heartbeat check: marks FAIL the trials of dead workers it can recognise."""
    import warnings

    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def _wait_limit(study: optuna.Study) -> float:
    """How long the end of a search waits for other workers' trials: twice the longest
    evaluation so far, and at least long enough for the heartbeat to fail a dead worker's
    trial (even one that never beat), or a minute."""
    longest = max(
        (
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.datetime_complete is not None and t.datetime_start is not None
        ),
        default=0.0,
    )
    storage = backend(study._storage)
    grace = float(getattr(storage, "grace_period", None) or 0)
    beat = float(getattr(storage, "heartbeat_interval", None) or 0)
    return max(2.0 * longest, SILENT_FACTOR * grace + 2 * beat, 60.0)


def _describe(t: FrozenTrial, namespace: str) -> str:
    claim = Layout(namespace).claim(t.system_attrs) or {}
    worker = t.system_attrs.get(WORKER_ATTR)
    where = f"pid {worker.get('pid')} on {worker.get('host')}" if isinstance(worker, dict) else "?"
    place = f"generation {claim.get('generation')} slot {claim.get('slot')}"
    return f"trial {t.number} ({place}, {where})"


def run_generations(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    last: int,
    n_jobs: int = 1,
    bar: Any = None,
    per_generation: int = 0,
    generation: Callable[[FrozenTrial], int] | None = None,
    postfix: Callable[[FrozenTrial], Mapping[str, str]] | None = None,
    wait_limit: float | None = None,
    poll: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> SlotProgress:
    """Run a generational search (the study's sampler a ``GenerationalSampler``) until every
    slot of generations ``0..last`` is complete or used up; earlier runs count.

    Rounds of :func:`run_until` (:func:`run_with_progress` with a ``bar``) fill the newest
    generation; while it is not the last, a worker that finds every slot taken opens the next
    (the sampler's never-wait policy). The search is not declared complete while a slot of a
    planned generation is unfinished:

    - a slot left behind (its trial died after its generation moved on) is evaluated here
      (``Generations.reissue``), its result kept in the study but no longer bred from;
    - a slot held by another worker's running trial is waited for, with a line on standard
      error naming the trials; a dead worker's trial is failed as soon as it can be
      recognised (at once on this machine, after the heartbeat's grace period elsewhere) and
      its slot evaluated here. A wait with no progress for ``wait_limit`` seconds (default:
      :func:`_wait_limit`) ends in :class:`~optuna_biotune.errors.RuntimeFailure`.

    Ends by failing the RUNNING trials of dead workers it can recognise. ``postfix`` adds
    figures of each finished trial to the bar's postfix (:func:`run_with_progress`).

    Returns:
        The final :class:`SlotProgress` (``done`` is true).
    """
    if not isinstance(study.sampler, GenerationalSampler):
        raise UsageError(
            f"run_generations needs a generational sampler (BioTuneSampler, EvoPruneSampler), "
            f"got {type(study.sampler).__name__}."
        )
    gens = study.sampler.generations
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if bar is not None:
        say = lambda line: bar.write(line, file=sys.stderr)  # noqa: E731

    def progress() -> SlotProgress:
        return slot_progress(
            study, namespace=gens.namespace, last=last, attempts=gens.slot_attempts
        )

    def run_round(obj: Callable[[optuna.Trial], float], target: int, enough: Any = None) -> None:
        if bar is not None:
            run_with_progress(
                study,
                obj,
                bar=bar,
                target=target,
                n_jobs=n_jobs,
                generation=generation or (lambda t: 0),
                enough=enough,
                postfix=postfix,
            )
        else:
            run_until(study, obj, target=target, n_jobs=n_jobs, log=say, enough=enough)

    waited: tuple[int, ...] = ()
    since = time.monotonic()
    while True:
        p = progress()
        if bar is not None:
            bar.total = (
                completed(study)
                + p.left
                + len(p.behind)
                + max(last - max(p.newest, 0), 0) * per_generation
            )
            bar.refresh()
        if p.done:
            break
        if p.newest < last or p.free > 0:
            waited = ()
            # Before generation 0 opens a round asks for its whole population (a round that
            # completes nothing counts towards run_until's two stalled rounds).
            first = int(getattr(gens.strategy, "population_size", 1)) if p.newest < 0 else 1
            run_round(objective, completed(study) + max(p.free, first))
        elif p.behind:
            waited = ()
            say(
                f"evaluating {len(p.behind)} slot(s) whose worker died after their generation "
                f"moved on: {', '.join(f'generation {g} slot {s}' for g, s in p.behind)}"
            )
            run_round(*_behind_round(study, gens, objective, p.behind))
        else:
            _fail_stale(study)  # a dead worker's trial: failed now if it can be recognised
            again = progress()
            if again.behind or again.free or again.done:
                continue
            numbers = tuple(t.number for t in again.running)
            if numbers != waited:
                waited, since = numbers, time.monotonic()
                named = "; ".join(_describe(t, gens.namespace) for t in again.running)
                say(
                    f"waiting for {len(numbers)} evaluation(s) of other workers before the "
                    f"search is complete: {named}"
                )
            limit = _wait_limit(study) if wait_limit is None else wait_limit
            if time.monotonic() - since > limit:
                raise RuntimeFailure(
                    f"gave up after {limit:.0f} s waiting for {len(numbers)} evaluation(s) "
                    f"still RUNNING in other workers (trials {list(numbers)}); the study is not "
                    "complete: rerun the same command once they finish or their workers died."
                )
            time.sleep(poll)
    with contextlib.suppress(Exception):
        _fail_stale(study)  # no trial of a dead worker left RUNNING behind this search
    return p


def _behind_round(
    study: optuna.Study,
    gens: Generations,
    objective: Callable[[optuna.Trial], float],
    behind: Sequence[tuple[int, int]],
) -> tuple[Callable[[optuna.Trial], float], int, Callable[[], bool]]:
    """The objective, target and stop test of a round that evaluates slots left behind."""
    queue = list(behind)
    lock = threading.Lock()

    def evaluate(trial: optuna.Trial) -> float:
        while True:
            with lock:
                if not queue:
                    break
                g, s = queue.pop(0)
            if gens.reissue(study, trial, generation=g, slot=s) is not None:
                return objective(trial)
        raise optuna.TrialPruned("another worker took the slots left behind")

    return evaluate, completed(study) + len(queue), lambda: not queue
