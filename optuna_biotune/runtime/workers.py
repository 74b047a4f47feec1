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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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

    @property
    def atomic_claims(self) -> bool:
        """Whether :meth:`claim_slot` and :meth:`open_generation` are offered (PostgreSQL and
        SQLite: the dialects whose serialisation they rely on)."""
        return self.engine.dialect.name in ("postgresql", "sqlite")

    def _updatable(self, session: Any, trial_id: int) -> None:
        from optuna.storages._rdb import models

        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        self.check_trial_is_updatable(trial_id, trial.state)

    def _upsert_trial_system_attrs(
        self, session: Any, trial_id: int, attrs: Mapping[str, Any]
    ) -> None:
        """Write ``attrs`` on trial ``trial_id`` in one statement (insert or update each)."""
        import json

        if not attrs:
            return

        from optuna.storages._rdb import models

        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        table = models.TrialSystemAttributeModel.__table__
        stmt = insert(table).values(
            [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in attrs.items()
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.key],
            set_={"value_json": stmt.excluded.value_json},
        )
        session.execute(stmt)

    def _held_slots(
        self,
        session: Any,
        study_id: int,
        trial_id: int,
        key: str,
        min_number: int,
        generation: int,
    ) -> set[int]:
        """The slots of ``generation`` claimed under the trial system attr ``key`` by the study's
        live trials (RUNNING, WAITING, COMPLETE) numbered ``min_number`` or more, trial
        ``trial_id`` left out."""
        import json

        from optuna.storages._rdb import models

        attr = models.TrialSystemAttributeModel
        live = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
        rows = (
            session.query(attr.value_json)
            .join(models.TrialModel, attr.trial_id == models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study_id)
            .filter(models.TrialModel.number >= min_number)
            .filter(models.TrialModel.trial_id != trial_id)
            .filter(models.TrialModel.state.in_(live))
            .filter(attr.key == key)
            .all()
        )
        held = set()
        for (value,) in rows:
            claim = json.loads(value)
            if isinstance(claim, dict) and int(claim.get("generation", -1)) == int(generation):
                held.add(int(claim.get("slot", -1)))
        return held

    def claim_slot(
        self,
        study_id: int,
        trial_id: int,
        key: str,
        *,
        min_number: int,
        generation: int,
        candidates: Sequence[int],
        claim_for: Callable[[int], dict[str, Any]],
    ) -> int | None:
        """Claim for trial ``trial_id`` the first of ``candidates`` (slots of ``generation``)
        that no other live trial numbered ``min_number`` or more holds: one transaction,
        serialised with every other claim on that generation of the study (PostgreSQL: an
        advisory lock on the study and generation; SQLite: the database's write lock, taken
        by writing first), so a claim written here is never withdrawn (the sampler's
        write-then-read, ``Generations.assign``, in one round trip and without conflicts).

        ``claim_for(slot)`` gives the value written under the trial system attr ``key`` (a
        dict with ``"generation"`` and ``"slot"``). Returns the slot claimed, or ``None`` when
        every candidate is held (nothing is written).
        """
        import hashlib

        import sqlalchemy
        from optuna.storages._rdb.storage import _create_scoped_session

        if not candidates:
            return None
        with _create_scoped_session(self.scoped_session) as session:
            self._updatable(session, trial_id)
            if self.engine.dialect.name == "postgresql":
                name = f"optuna-biotune:{study_id}:{key}:{int(generation)}".encode()
                lock = int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big")
                session.execute(
                    sqlalchemy.text("SELECT pg_advisory_xact_lock(:lock)"),
                    {"lock": lock - 2**63},  # a signed bigint
                )
                held = self._held_slots(session, study_id, trial_id, key, min_number, generation)
                slot = next((int(s) for s in candidates if int(s) not in held), None)
                if slot is None:
                    return None
                self._upsert_trial_system_attrs(session, trial_id, {key: claim_for(slot)})
                return slot
            # SQLite: the first write takes the write lock the read below relies on.
            slot = int(candidates[0])
            self._upsert_trial_system_attrs(session, trial_id, {key: claim_for(slot)})
            held = self._held_slots(session, study_id, trial_id, key, min_number, generation)
            if slot in held:
                slot = next((int(s) for s in candidates if int(s) not in held), None)
                if slot is None:
                    session.rollback()
                    return None
                self._upsert_trial_system_attrs(session, trial_id, {key: claim_for(slot)})
        return slot

    def open_generation(
        self,
        study_id: int,
        trial_id: int,
        *,
        head_key: str,
        generation: int,
        attrs: Mapping[str, Any],
        study_attrs: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write ``attrs`` (the generation's record) on trial ``trial_id`` and name it the
        study's head (study system attr ``head_key`` = ``{"generation", "trial"}``) in one
        transaction, only while the head names the generation before (for generation 0: no
        head yet): a compare-and-set on the head's row, so of workers opening the same
        generation at once exactly one does. Otherwise nothing is written and the answer is
        ``False`` (another worker opened it first; its record is the generation's).

        ``study_attrs``: study system attrs the opening was computed with (the sampler's seed
        at generation 0), stored in the same transaction where absent; where one is stored with
        another value nothing is written either (``False``: read them and open again).
        """
        import json

        import sqlalchemy
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        table = models.StudySystemAttributeModel.__table__
        head = json.dumps({"generation": int(generation), "trial": int(trial_id)})
        with _create_scoped_session(self.scoped_session) as session:
            self._updatable(session, trial_id)
            self._upsert_trial_system_attrs(session, trial_id, attrs)
            if self.engine.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            for key, value in (study_attrs or {}).items():
                new = insert(table).values(
                    study_id=study_id, key=key, value_json=json.dumps(value)
                )
                session.execute(new.on_conflict_do_nothing())
                stored = session.execute(
                    sqlalchemy.select(table.c.value_json).where(
                        table.c.study_id == study_id, table.c.key == key
                    )
                ).scalar_one()
                if json.loads(stored) != value:
                    session.rollback()
                    return False
            if generation == 0:
                stmt = insert(table).values(study_id=study_id, key=head_key, value_json=head)
                stmt = stmt.on_conflict_do_nothing()
            else:
                if self.engine.dialect.name == "postgresql":
                    before = "CAST(CAST(value_json AS json) ->> 'generation' AS integer)"
                else:
                    before = "CAST(json_extract(value_json, '$.generation') AS integer)"
                stmt = (
                    sqlalchemy.update(table)
                    .where(table.c.study_id == study_id, table.c.key == head_key)
                    .where(
                        sqlalchemy.text(f"{before} = :before").bindparams(before=generation - 1)
                    )
                    .values(value_json=head)
                )
            if self.engine.dialect.name == "postgresql":  # its driver may not count rows
                done = session.execute(stmt.returning(table.c.study_id)).first() is not None
            else:
                done = session.execute(stmt).rowcount == 1
            if not done:
                session.rollback()
        return done

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


def worker_storage_of(study: optuna.Study) -> _WorkerTrials | None:
    """The study's :class:`WorkerStorage` or :class:`WorkerJournalStorage` (``None``: another)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, _WorkerTrials) else None
