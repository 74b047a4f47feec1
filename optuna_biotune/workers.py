"""Workers that survive storage outages and leave no trial behind (many workers, one study).

:class:`WorkerStorage` is the RDB storage of every ``optuna-biotune`` process: Optuna's
:class:`~optuna.storages.RDBStorage` (heartbeat included) that

- keeps its heartbeat thread alive through a short outage (a PostgreSQL restart, a dropped
  connection): a failed beat is skipped and the next one retries, where Optuna's thread would
  die with a traceback and let a live trial go stale;
- remembers the trials this process opened and has not finished, so that after a lost
  connection or a Ctrl-C they are marked FAIL at once (:meth:`WorkerStorage.fail_open_trials`)
  instead of waiting for the heartbeat's grace period (a trial that died before its first
  heartbeat would otherwise stay RUNNING forever);
- writes on each trial it creates, in the same transaction, which worker runs it (system attr
  ``biotune:worker``: host, process id, process start time) and fails at once a RUNNING trial
  whose process is gone from this machine (:meth:`WorkerStorage._get_stale_trial_ids`, which
  Optuna calls before every trial), so a killed worker's slot is issued again without waiting
  for the heartbeat's grace period; workers on other machines are judged by the heartbeat;
- puts a SQLite file in write-ahead-log mode with ``synchronous=NORMAL``: a commit no longer
  waits for the disk twice, which cuts the cost of Optuna's one-transaction-per-parameter
  writes (1.18 -> 0.35 s for a trial of 512 parameters on this machine,
  ``benchmarks/results/evoprune-overhead.json``, RandomSampler), and readers such as
  optuna-dashboard no longer block writers. A commit survives a crash of the process; a power
  loss may roll back the last commits but never corrupts the file. While a worker runs, the
  study's recent writes live in ``<file>-wal`` beside it (copy both, or copy after the
  workers exit, when SQLite folds the log back into the file);
- answers the sampler's two hottest reads in one query each: the live claims of a slot
  (:meth:`WorkerStorage.live_claims`) and the study's system attrs.

:class:`WorkerJournalStorage` is Optuna's journal-file storage with the same worker identity and
same-machine recovery (Optuna gives it no heartbeat).

:func:`storage_error` tells a lost or failing storage apart from other errors, so the CLI
retries those and prints one line about them; :func:`run_until` is the loop every worker
runs, and :func:`run_generations` the search's rounds of it up to the last planned generation,
which end only when every planned slot is complete (slots left behind by dead workers are
evaluated, other workers' running trials waited for). No torch here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "RETRY_DELAY",
    "SILENT_FACTOR",
    "STORAGE_PATIENCE",
    "WORKER_ATTR",
    "SlotProgress",
    "WorkerJournalStorage",
    "WorkerStorage",
    "describe_storage_error",
    "fail_on_out_of_memory",
    "out_of_memory",
    "progress_bar",
    "run_generations",
    "run_until",
    "run_with_progress",
    "slot_progress",
    "storage_error",
    "worker_alive",
    "worker_identity",
]

#: Seconds a worker keeps retrying a lost storage before it gives up with a clear message.
STORAGE_PATIENCE = 120.0
#: Seconds between two attempts while the storage is away.
RETRY_DELAY = 2.0
#: A RUNNING trial without any heartbeat is stale after this many grace periods.
SILENT_FACTOR = 5
#: Attempts at opening an RDB storage whose tables another worker is creating at that moment.
_SCHEMA_ATTEMPTS = 5


def storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is a storage that failed or went away."""
    import sqlalchemy.exc

    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, optuna.exceptions.StorageInternalError | sqlalchemy.exc.DBAPIError):
            return True
        if isinstance(err, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        err = err.__cause__ or err.__context__
    return False


def describe_storage_error(exc: BaseException) -> str:
    """A one-line description of a storage error: its innermost cause, shortened."""
    err: BaseException = exc
    seen: set[int] = set()
    while (err.__cause__ or err.__context__) is not None and id(err) not in seen:
        seen.add(id(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:160]}"


def _sqlite_write_ahead_log(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


# --------------------------------------------------------------------------- worker identity

#: Trial system attr naming the worker that runs the trial (written when the trial starts).
WORKER_ATTR = "biotune:worker"


@functools.cache
def _machine() -> str | None:
    """This machine's kernel instance and process-id namespace (``None`` without ``/proc``).

    Two processes may judge each other by process id only when both are equal: the boot id
    changes at every boot, and containers on one kernel have their own process ids.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``None``: no such process)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # "pid (name) state ... starttime ...": the name may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie runs no code any more
        return None
    return int(fields[19])


@functools.cache
def _identity_of(pid: int) -> dict[str, Any]:
    ticks = _start_ticks(pid) if _machine() is not None else None
    started = None
    if ticks is not None:
        with contextlib.suppress(OSError, ValueError, StopIteration):
            lines = Path("/proc/stat").read_text().splitlines()
            boot = int(next(line for line in lines if line.startswith("btime ")).split()[1])
            started = round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started": started,  # Unix time, for people; `ticks` is what liveness compares
        "machine": _machine() if ticks is not None else None,
        "ticks": ticks,
    }


def worker_identity() -> dict[str, Any]:
    """Who this process is, as written to each of its trials (:data:`WORKER_ATTR`).

    ``host`` and ``pid``; ``started``, the process start time (Unix seconds); ``machine`` and
    ``ticks`` (the start in clock ticks since boot), with which another process on the same
    machine tells a dead worker (or a recycled process id) from a live one. ``machine`` is
    ``None`` where ``/proc`` is missing (not Linux): such trials are left to the heartbeat.
    """
    return dict(_identity_of(os.getpid()))


def worker_alive(identity: Any) -> bool | None:
    """Whether the worker ``identity`` (a :data:`WORKER_ATTR` value) still runs.

    ``None`` when this process cannot tell (another machine, no ``/proc``, no identity);
    ``False`` when it ran on this machine and its process is gone, a zombie, or its process id
    now belongs to a process started at another moment.
    """
    if not isinstance(identity, dict) or identity.get("machine") is None:
        return None
    if identity["machine"] != _machine():
        return None
    try:
        pid, ticks = int(identity["pid"]), int(identity["ticks"])
    except (KeyError, TypeError, ValueError):
        return None
    now = _start_ticks(pid)
    if now is not None:
        return now == ticks
    if Path(f"/proc/{pid}").exists():
        return False  # a zombie: it runs no code any more
    try:  # no /proc entry: gone, or hidden from this user (`hidepid`)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return None
    return None


def _running_template() -> FrozenTrial:
    """A new RUNNING trial that carries this worker's identity (one write creates both)."""
    import datetime

    return FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={WORKER_ATTR: worker_identity()},
        intermediate_values={},
        trial_id=-1,
    )


class _WorkerTrials:
    """What both worker storages add: the trials this process opened, marked FAIL on demand."""

    def _init_worker_trials(self) -> None:
        self._open_lock = threading.Lock()
        self._open_trials: set[int] = set()

    def _opened(self, trial_id: int) -> None:
        with self._open_lock:
            self._open_trials.add(trial_id)

    def _closed(self, trial_id: int) -> None:
        with self._open_lock:
            self._open_trials.discard(trial_id)

    @property
    def open_trials(self) -> list[int]:
        """Ids of the trials this process created and has not finished."""
        with self._open_lock:
            return sorted(self._open_trials)

    def fail_open_trials(self) -> list[int]:
        """Mark every trial this process opened and did not finish FAIL; return their ids.

        A trial finished meanwhile by someone else (the heartbeat of another worker) is left
        as it is. Storage errors propagate: call again when the storage is back.
        """
        failed = []
        for trial_id in self.open_trials:
            try:
                if self.set_trial_state_values(trial_id, state=TrialState.FAIL):  # type: ignore[attr-defined]
                    failed.append(trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
            self._closed(trial_id)
        return failed


class WorkerStorage(_WorkerTrials, RDBStorage):
    """:class:`~optuna.storages.RDBStorage` whose heartbeat outlives a short outage, which
    names the worker of each trial and fails dead workers' trials on this machine at once
    (module docstring).

    Takes the arguments of :class:`~optuna.storages.RDBStorage`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for attempt in range(_SCHEMA_ATTEMPTS):
            try:
                super().__init__(*args, **kwargs)
                break
            except Exception as exc:
                # Workers that start together on a new database all create Optuna's tables;
                # the losers see "already exists" (or a duplicate version row): the tables are
                # there now, so opening again succeeds.
                text = " ".join(str(exc).split()).lower()
                race = "already exists" in text or "unique constraint failed" in text
                if not race or attempt == _SCHEMA_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 + 0.3 * attempt)
        self._init_worker_trials()
        # study id -> parameter name -> its distribution (fixed once a trial has the name)
        self._known_distributions: dict[int, dict[str, Any]] = {}
        if self.engine.dialect.name == "sqlite" and self.engine.url.database not in (
            None,
            "",
            ":memory:",
        ):
            from sqlalchemy import event

            event.listen(self.engine, "connect", _sqlite_write_ahead_log)
            self.engine.dispose()  # connections opened by Optuna's set-up get the pragmas too

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> Any:
        if template_trial is None:  # a trial to run now: it carries its worker, same commit
            template_trial = _running_template()
        frozen = super()._create_new_trial(study_id, template_trial)
        if frozen.state == TrialState.RUNNING:
            self._opened(frozen._trial_id)
        return frozen

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        done = super().set_trial_state_values(trial_id, state=state, values=values)
        if state.is_finished():
            self._closed(trial_id)
        elif state == TrialState.RUNNING and done:  # an enqueued trial this worker now runs
            self.set_trial_system_attr(trial_id, WORKER_ATTR, worker_identity())
            self._opened(trial_id)
        return done

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not storage_error(exc):
                raise
            # The server is away for a moment: skip this beat, the next one retries. A trial
            # is only failed as stale after `grace_period` seconds without any beat.

    def set_trial_params(
        self,
        trial_id: int,
        values: dict[str, float],
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        """Write many parameters of one RUNNING trial, all of ``distribution``, in one
        transaction (``values``: name -> internal representation).

        Optuna writes a trial's parameters one transaction each; for EvoPrune's 512 neuron
        bits that is most of a trial's storage time. Same checks as Optuna's own write: the
        trial must be updatable and each name's distribution compatible with the one it has
        in the study; on a failed check nothing is written.
        """
        import sqlalchemy
        from optuna.distributions import (
            check_distribution_compatibility,
            distribution_to_json,
            json_to_distribution,
        )
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        as_json = distribution_to_json(distribution)
        with _create_scoped_session(self.scoped_session, False) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            study_id = trial.study_id
            known = self._known_distributions.setdefault(study_id, {})
            unknown = [n for n in values if n not in known]
            for i in range(0, len(unknown), 500):  # SQLite's bound on query variables
                rows = (
                    session.query(
                        models.TrialParamModel.param_name, models.TrialParamModel.distribution_json
                    )
                    .join(models.TrialModel)
                    .filter(models.TrialModel.study_id == study_id)
                    .filter(models.TrialParamModel.param_name.in_(unknown[i : i + 500]))
                    .distinct()
                    .all()
                )
                for name, text in rows:
                    known.setdefault(name, json_to_distribution(text))
            for name in values:
                if name in known:
                    check_distribution_compatibility(known[name], distribution)
            # One multi-row INSERT, not the ORM's object per row (10x faster for 512 rows).
            session.execute(
                sqlalchemy.insert(models.TrialParamModel),
                [
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": float(value),
                        "distribution_json": as_json,
                    }
                    for name, value in values.items()
                ],
            )
        for name in values:
            known.setdefault(name, distribution)

    def live_claims(self, study_id: int, key: str, min_number: int) -> list[tuple[int, Any]]:
        """``(number, value)`` of the trial system attr ``key`` on the study's trials numbered
        ``min_number`` or more that are RUNNING, WAITING or COMPLETE: one query (the sampler's
        check that nobody else claimed its slot, ``Generations._slot_held``)."""
        import json

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        attr = models.TrialSystemAttributeModel
        live = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
        with _create_scoped_session(self.scoped_session) as session:
            rows = (
                session.query(models.TrialModel.number, attr.value_json)
                .join(attr, attr.trial_id == models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.number >= min_number)
                .filter(models.TrialModel.state.in_(live))
                .filter(attr.key == key)
                .all()
            )
        return [(int(number), json.loads(value)) for number, value in rows]

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """The study's system attrs in one query (Optuna's takes two: the study, its attrs)."""
        import json

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        attr = models.StudySystemAttributeModel
        with _create_scoped_session(self.scoped_session) as session:
            rows = (
                session.query(models.StudyModel.study_id, attr.key, attr.value_json)
                .outerjoin(attr, attr.study_id == models.StudyModel.study_id)
                .filter(models.StudyModel.study_id == study_id)
                .all()
            )
        if not rows:
            raise KeyError(f"No study with study_id {study_id} exists.")
        return {key: json.loads(value) for _, key, value in rows if key is not None}

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials (heartbeat silent for the grace period), plus RUNNING trials

        - whose worker ran on this machine and is gone (:func:`worker_alive`), at once;
        - that never sent a heartbeat for :data:`SILENT_FACTOR` grace periods (their worker,
          on another machine, died between creating the trial and starting it).
        """
        import datetime
        import json

        from optuna.storages._rdb import models

        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        # The column holds naive UTC (`TrialModel.datetime_start` converts it to local time).
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        limit = now - datetime.timedelta(seconds=SILENT_FACTOR * grace)
        attr = models.TrialSystemAttributeModel
        session = self.scoped_session()
        try:
            rows = (
                session.query(
                    models.TrialModel.trial_id,
                    models.TrialModel._datetime_start_utc,
                    models.TrialHeartbeatModel.trial_heartbeat_id,
                    attr.value_json,
                )
                .outerjoin(
                    models.TrialHeartbeatModel,
                    models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id,
                )
                .outerjoin(
                    attr, (attr.trial_id == models.TrialModel.trial_id) & (attr.key == WORKER_ATTR)
                )
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .all()
            )
        finally:
            session.close()
        found = set(stale)
        for trial_id, started, beat, worker in rows:
            silent = beat is None and started is not None and started < limit
            dead = worker is not None and worker_alive(json.loads(worker)) is False
            if silent or dead:
                found.add(trial_id)
        return sorted(found)


class WorkerJournalStorage(_WorkerTrials, JournalStorage, BaseHeartbeat):
    """Optuna's :class:`~optuna.storages.JournalStorage` that names the worker of each trial and
    fails a RUNNING trial whose worker is gone from this machine before each new trial.

    Optuna gives the journal storage no heartbeat; this one takes part in Optuna's heartbeat
    protocol only to be asked for stale trials (its beat writes nothing), so a trial of a dead
    worker on another machine stays RUNNING (the search's end waits for it, then says so).

    Takes the arguments of :class:`~optuna.storages.JournalStorage`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_worker_trials()

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial or _running_template())
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self._opened(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        done = super().set_trial_state_values(trial_id, state=state, values=values)
        if state.is_finished():
            self._closed(trial_id)
        elif state == TrialState.RUNNING and done:
            self.set_trial_system_attr(trial_id, WORKER_ATTR, worker_identity())
            self._opened(trial_id)
        return done

    def record_heartbeat(self, trial_id: int) -> None:
        """Nothing: a journal has no heartbeat table (liveness is judged by process)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            t._trial_id for t in running if worker_alive(t.system_attrs.get(WORKER_ATTR)) is False
        ]

    def get_heartbeat_interval(self) -> int | None:
        return _JOURNAL_BEAT

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return None


#: Seconds between the journal storage's (empty) beats: its thread only sleeps.
_JOURNAL_BEAT = 3600


def _worker_storage(study: optuna.Study) -> _WorkerTrials | None:
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, _WorkerTrials) else None


def _complete(study: optuna.Study) -> int:
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
    on. Ctrl-C marks them FAIL too, then propagates.

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
    storage = _worker_storage(study)

    def reached() -> bool:
        return enough is not None and enough()

    def stop_at_target(st: optuna.Study, trial: FrozenTrial) -> None:
        if reached() or _complete(st) >= target:
            st.stop()

    outage: float | None = None
    stalled = 0
    done = -1
    try:
        while True:
            try:
                if storage is not None and storage.open_trials:
                    failed = storage.fail_open_trials()
                    if failed:
                        say(f"storage is back; marked {len(failed)} interrupted trial(s) FAIL")
                now = _complete(study)
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
) -> int:
    """:func:`run_until` as the commands run it, advancing ``bar`` as trials complete.

    A device out of memory fails only the trial (:func:`fail_on_out_of_memory`), a
    :class:`~optuna_biotune.errors.RuntimeFailure` of one trial (a NaN loss) fails that trial
    and the loop goes on, each finished trial sets the bar's postfix (generation, trial, best
    so far), and log lines are written through the bar.

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
        bar.set_postfix(generation=generation(trial), trial=trial.number, best=best)

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


# --------------------------------------------------------------------------- ending a search


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
    from optuna_biotune.evolution.generations import generation_records

    records = generation_records(study, namespace)
    complete: set[tuple[int, int]] = set()
    dead: dict[tuple[int, int], int] = {}
    holders: dict[tuple[int, int], FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):
        claim = t.system_attrs.get(f"{namespace}:slot")
        if not isinstance(claim, dict) or int(claim.get("slot", -1)) < 0:
            continue
        key = (int(claim["generation"]), int(claim["slot"]))
        if t.state == TrialState.COMPLETE:
            complete.add(key)
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            holders[key] = t
        else:
            dead[key] = dead.get(key, 0) + 1
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
    storage = getattr(study._storage, "_backend", study._storage)
    grace = float(getattr(storage, "grace_period", None) or 0)
    beat = float(getattr(storage, "heartbeat_interval", None) or 0)
    return max(2.0 * longest, SILENT_FACTOR * grace + 2 * beat, 60.0)


def _describe(t: FrozenTrial, namespace: str) -> str:
    claim = t.system_attrs.get(f"{namespace}:slot", {})
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

    Ends by failing the RUNNING trials of dead workers it can recognise.

    Returns:
        The final :class:`SlotProgress` (``done`` is true).
    """
    from optuna_biotune.errors import RuntimeFailure

    gens = study.sampler.generations  # type: ignore[attr-defined]
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
            )
        else:
            run_until(study, obj, target=target, n_jobs=n_jobs, log=say, enough=enough)

    waited: tuple[int, ...] = ()
    since = time.monotonic()
    while True:
        p = progress()
        if bar is not None:
            bar.total = (
                _complete(study)
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
            run_round(objective, _complete(study) + max(p.free, first))
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
    gens: Any,
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

    return evaluate, _complete(study) + len(queue), lambda: not queue
