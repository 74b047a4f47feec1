"""Workers that survive storage outages and leave no trial behind (many workers, one study).

:class:`WorkerStorage` is the RDB storage of every ``optuna-biotune`` process: Optuna's
:class:`~optuna.storages.RDBStorage` (heartbeat included) that

- keeps its heartbeat thread alive through a short outage (a PostgreSQL restart, a dropped
  connection): a failed beat is skipped and the next one retries, where Optuna's thread would
  die with a traceback and let a live trial go stale;
- remembers the trials this process opened and has not finished, so that after a lost
  connection, a Ctrl-C or a SIGTERM they are marked FAIL at once
  (:meth:`WorkerStorage.fail_open_trials`) instead of waiting for the heartbeat's grace period
  (a trial that died before its first heartbeat would otherwise stay RUNNING forever);
- marks each trial it fails by an interruption (a lost storage, a signal:
  :mod:`optuna_biotune.runtime.interrupts`, a dead worker's trial failed as stale) with the
  trial system attr ``biotune:interrupted`` (the reason) before the FAIL: such a trial spends
  none of its slot's attempts, only a failed evaluation does;
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
- answers the samplers in one query or one transaction each (the live claims of a slot, the
  study's system attrs, a trial's parameters, an atomic slot claim or generation opening):
  :class:`~optuna_biotune.runtime.queries.SamplerQueries`, mixed in.

:class:`WorkerJournalStorage` is Optuna's journal-file storage with the same worker identity and
same-machine recovery (Optuna gives it no heartbeat).

:func:`storage_error` tells a lost or failing storage apart from other errors, so the CLI
retries those and prints one line about them (the loop every worker runs:
:mod:`optuna_biotune.runtime.loop`). No torch here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from optuna_biotune.evolution.claiming import backend
from optuna_biotune.evolution.claims import INTERRUPTED_ATTR
from optuna_biotune.runtime import interrupts
from optuna_biotune.runtime.queries import SamplerQueries

__all__ = [
    "INTERRUPTED_ATTR",
    "RETRY_DELAY",
    "SILENT_FACTOR",
    "STORAGE_PATIENCE",
    "WORKER_ATTR",
    "WORKER_LOST",
    "WorkerJournalStorage",
    "WorkerStorage",
    "describe_storage_error",
    "storage_error",
    "worker_alive",
    "worker_identity",
    "worker_storage_of",
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
#: The :data:`INTERRUPTED_ATTR` of a trial failed because its worker died (heartbeat silent,
#: process gone).
WORKER_LOST = "worker lost"


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
    """What both worker storages add: the trials this process opened, marked FAIL on demand,
    and the mark on a trial failed by an interruption (:data:`INTERRUPTED_ATTR`: a signal, a
    lost storage, a dead worker), which spends none of its slot's attempts."""

    def _init_worker_trials(self) -> None:
        self._open_lock = threading.Lock()
        self._open_trials: set[int] = set()
        # trial id -> why the next FAIL written for it is an interruption
        self._interrupting: dict[int, str] = {}
        interrupts.register_storage(self)

    def _interrupting_ids(self, trial_ids: Any, reason: str) -> None:
        with self._open_lock:
            self._interrupting.update(dict.fromkeys(trial_ids, reason))

    def _mark_if_interrupted(self, trial_id: int, state: TrialState) -> None:
        """Before ``trial_id`` is set to ``state``: when that is a FAIL by an interruption (a
        trial noted by :meth:`fail_open_trials` or as stale, or one this process runs after a
        signal stopped it), write the reason as :data:`INTERRUPTED_ATTR` first."""
        if state != TrialState.FAIL:
            return
        with self._open_lock:
            reason = self._interrupting.pop(trial_id, None)
            if reason is None and trial_id in self._open_trials:
                reason = interrupts.interrupted()
        if reason is not None:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.set_trial_system_attr(trial_id, INTERRUPTED_ATTR, reason)  # type: ignore[attr-defined]

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

    def fail_open_trials(self, reason: str | None = None) -> list[int]:
        """Mark every trial this process opened and did not finish FAIL, as interrupted by
        ``reason`` (default: the signal that stopped the process); return their ids.

        A trial finished meanwhile by someone else (the heartbeat of another worker) is left
        as it is. Storage errors propagate: call again when the storage is back.
        """
        failed = []
        open_trials = self.open_trials
        self._interrupting_ids(open_trials, reason or interrupts.interrupted() or "interrupted")
        for trial_id in open_trials:
            try:
                if self.set_trial_state_values(trial_id, state=TrialState.FAIL):  # type: ignore[attr-defined]
                    failed.append(trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
            self._closed(trial_id)
        return failed


class WorkerStorage(_WorkerTrials, SamplerQueries, RDBStorage):
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
        self._mark_if_interrupted(trial_id, state)
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
        self._interrupting_ids(found, WORKER_LOST)  # Optuna fails them next
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
        self._mark_if_interrupted(trial_id, state)
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
        found = [
            t._trial_id for t in running if worker_alive(t.system_attrs.get(WORKER_ATTR)) is False
        ]
        self._interrupting_ids(found, WORKER_LOST)  # Optuna fails them next
        return found

    def get_heartbeat_interval(self) -> int | None:
        return _JOURNAL_BEAT

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return None


#: Seconds between the journal storage's (empty) beats: its thread only sleeps.
_JOURNAL_BEAT = 3600


def worker_storage_of(study: optuna.Study) -> _WorkerTrials | None:
    """The study's :class:`WorkerStorage` or :class:`WorkerJournalStorage` (``None``: another)."""
    storage = backend(study._storage)
    return storage if isinstance(storage, _WorkerTrials) else None
