"""What :class:`~optuna_biotune.runtime.workers.WorkerStorage` answers for the samplers in one
query or one transaction each, where Optuna's RDB storage takes many (no torch here).

:class:`SamplerQueries` is mixed into ``WorkerStorage`` before Optuna's
:class:`~optuna.storages.RDBStorage` (it uses its engine and sessions):

- :meth:`~SamplerQueries.set_trial_params`: many parameters of one trial in one transaction
  (EvoPrune's 512 neuron bits);
- :meth:`~SamplerQueries.live_claims` and :meth:`~SamplerQueries.get_study_system_attrs`: the
  sampler's two hottest reads, one query each;
- :meth:`~SamplerQueries.claim_slot` and :meth:`~SamplerQueries.open_generation`: a slot claim
  and a generation's opening, each one serialised transaction (PostgreSQL and SQLite,
  :attr:`~SamplerQueries.atomic_claims`), the ``evolution.claiming.AtomicClaims`` protocol
  (``LiveClaims`` for :meth:`~SamplerQueries.live_claims`) that ``evolution.claiming.Atomic``
  and ``WriteThenRead`` use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.trial import TrialState

from optuna_biotune.evolution.claims import INTERRUPTED_ATTR

if TYPE_CHECKING:
    import sqlalchemy.engine

__all__ = ["SamplerQueries"]


class SamplerQueries:
    """The samplers' reads and writes on an RDB storage in one query or transaction each
    (module docstring). Needs ``self._known_distributions`` (a dict), set by the storage's
    ``__init__``."""

    if TYPE_CHECKING:  # what Optuna's RDBStorage, which this is mixed into, provides
        engine: sqlalchemy.engine.Engine
        scoped_session: Any
        _known_distributions: dict[int, dict[str, optuna.distributions.BaseDistribution]]

        def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None: ...

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
            study_id = cast(int, trial.study_id)  # a stored trial always has its study
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
        check that nobody else claimed its slot, ``evolution.claiming.WriteThenRead.held``)."""
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

    def _insert(self) -> Any:
        """The dialect's INSERT that takes ``ON CONFLICT`` (PostgreSQL's or SQLite's)."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert

    def _upsert_trial_system_attrs(
        self, session: Any, trial_id: int, attrs: Mapping[str, Any]
    ) -> None:
        """Write ``attrs`` on trial ``trial_id`` in one statement (insert or update each)."""
        import json

        if not attrs:
            return

        from optuna.storages._rdb import models

        table = models.TrialSystemAttributeModel.__table__
        stmt = self._insert()(table).values(
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
        attempts: int | None = None,
        holders: dict[int, int] | None = None,
    ) -> set[int]:
        """The slots of ``generation`` claimed under the trial system attr ``key`` by the study's
        live trials (RUNNING, WAITING, COMPLETE) numbered ``min_number`` or more, trial
        ``trial_id`` left out; with ``attempts``, also those whose claims ended FAIL or
        PRUNED that often (used up; a trial failed by an interruption, ``INTERRUPTED_ATTR``,
        is no attempt). ``holders``, when given, is filled with each live claim's slot and
        trial number."""
        import json

        from optuna.storages._rdb import models
        from sqlalchemy.orm import aliased

        attr = models.TrialSystemAttributeModel
        mark = aliased(attr)
        live = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
        dead = (TrialState.FAIL, TrialState.PRUNED)
        states = live if attempts is None else live + dead
        rows = (
            session.query(
                models.TrialModel.state,
                models.TrialModel.number,
                attr.value_json,
                mark.trial_system_attribute_id,
            )
            .join(models.TrialModel, attr.trial_id == models.TrialModel.trial_id)
            .outerjoin(
                mark,
                (mark.trial_id == models.TrialModel.trial_id) & (mark.key == INTERRUPTED_ATTR),
            )
            .filter(models.TrialModel.study_id == study_id)
            .filter(models.TrialModel.number >= min_number)
            .filter(models.TrialModel.trial_id != trial_id)
            .filter(models.TrialModel.state.in_(states))
            .filter(attr.key == key)
            .all()
        )
        held: set[int] = set()
        failed: dict[int, int] = {}
        for state, number, value, interrupted in rows:
            claim = json.loads(value)
            if not isinstance(claim, dict) or int(claim.get("generation", -1)) != int(generation):
                continue
            slot = int(claim.get("slot", -1))
            if state in live:
                held.add(slot)
                if holders is not None and slot >= 0:
                    holders[slot] = int(number)
            elif interrupted is None:
                failed[slot] = failed.get(slot, 0) + 1
        if attempts is not None:
            held.update(s for s, n in failed.items() if n >= attempts)
        return held

    def claim_slot(
        self,
        study_id: int,
        trial_id: int,
        key: str,
        *,
        min_number: int,
        generation: int,
        claims: Mapping[int, Mapping[str, Any]],
        attempts: int | None = None,
        holders: dict[int, int] | None = None,
    ) -> int | None:
        """Claim for trial ``trial_id`` the first slot of ``claims`` (slots of ``generation``)
        that no other live trial numbered ``min_number`` or more holds (and, with ``attempts``,
        whose claims did not end FAIL or PRUNED that often): one transaction,
        serialised with every other claim on that generation of the study (PostgreSQL: an
        advisory lock on the study and generation; SQLite: the database's write lock, taken
        by writing first), so a claim written here is never withdrawn (the sampler's
        write-then-read, ``Generations.assign``, in one round trip and without conflicts).

        ``claims[slot]`` is the value written under the trial system attr ``key`` (a dict with
        ``"generation"`` and ``"slot"``), decided before the transaction (the sampler's plan
        of each candidate slot: nothing here calls back into the sampler). Returns the slot
        claimed, or ``None`` when every candidate is held (nothing is written). ``holders``,
        when given, is filled with the slot and trial number of every other live claim on the
        generation the transaction saw (so a caller whose claim failed knows who holds the
        slots without reading the study again).
        """
        import hashlib

        import sqlalchemy
        from optuna.storages._rdb.storage import _create_scoped_session

        candidates = [int(s) for s in claims]
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
                held = self._held_slots(
                    session, study_id, trial_id, key, min_number, generation, attempts, holders
                )
                slot = next((s for s in candidates if s not in held), None)
                if slot is None:
                    return None
                self._upsert_trial_system_attrs(session, trial_id, {key: claims[slot]})
                return slot
            # SQLite: the first write takes the write lock the read below relies on.
            slot = candidates[0]
            self._upsert_trial_system_attrs(session, trial_id, {key: claims[slot]})
            held = self._held_slots(
                session, study_id, trial_id, key, min_number, generation, attempts, holders
            )
            if slot in held:
                slot = next((s for s in candidates if s not in held), None)
                if slot is None:
                    session.rollback()
                    return None
                self._upsert_trial_system_attrs(session, trial_id, {key: claims[slot]})
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
            insert = self._insert()
            stmt: Any
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
                result: Any = session.execute(stmt)
                done = result.rowcount == 1
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
