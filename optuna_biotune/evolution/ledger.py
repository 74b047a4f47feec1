"""The generation ledger in the Optuna storage: where each generation's record lives, what
the window of recent trials says about its slots, and how the next generation opens.

:class:`GenerationLedger` is the base of :class:`~optuna_biotune.evolution.generations.
Generations` (which claims slots, reissues them and samples values). No torch, no in-memory
state that cannot be rebuilt from the storage.

Every key is read and written through :class:`~optuna_biotune.evolution.layout.Layout` (the
storage layout is described there).

Randomness is derived from ``(seed, generation, slot)`` (and the parameter name), never from
process history, so a sequential run resumed in a new process proposes exactly what an
uninterrupted run proposes.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.trial import FrozenTrial, TrialState

from optuna_biotune.errors import RuntimeFailure
from optuna_biotune.evolution.claiming import ClaimProtocol, OpenRequest, backend, protocol_for
from optuna_biotune.evolution.claims import DEAD, settled, spent_attempt
from optuna_biotune.evolution.layout import Layout
from optuna_biotune.evolution.space import evolvable, normalize
from optuna_biotune.evolution.strategy import GenerationStrategy, Individual

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.study import Study

__all__ = ["DIGITS", "GenerationLedger", "SlotView"]

_LIVE = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
# Trial numbers can become visible slightly out of order under concurrent creation.
_WINDOW_MARGIN = 8
# How many generations a running straggler's result is still waited for.
_PENDING_GENERATIONS = 3
#: Genes are kept to 10 decimals in records (shorter rows; everyone reads the same JSON).
DIGITS = 10


@dataclass
class SlotView:
    """What the window of trials says about the newest generation."""

    live: dict[int, list[FrozenTrial]]
    dead: dict[int, int]
    running_numbers: list[int]  # running or waiting trials without a claim yet
    earlier_unclaimed: int
    # Trials that may still claim a slot of a later generation, or hold one: a running claim
    # on another generation not yet confirmed (it may step back and claim again), or any claim
    # on a newer generation (a concurrent opening's). The next opening's window keeps them.
    unsettled: list[int] = field(default_factory=list)


class GenerationLedger:
    """The generation records of one sampler (one namespace): reading, scanning, opening.

    Args:
        namespace: Prefix of every attr, the sampler's class name.
        strategy: Decides each generation's slots.
        seed: Base seed of all randomness; ``None``: the seed stored in the study (study system
            attr ``{ns}:seed``), or, in a study without one, a drawn seed that is stored there
            on first use, so a resumed process continues with the same randomness.
    """

    def __init__(
        self,
        *,
        namespace: str,
        strategy: GenerationStrategy,
        seed: int | None,
    ) -> None:
        self.layout = Layout(namespace)
        self.namespace = namespace
        self.strategy = strategy
        self.fixed_seed = seed is not None
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self._seeded_study: int | None = None  # the study whose stored seed self.seed is
        self._lock = threading.Lock()
        self._chosen: tuple[BaseStorage, ClaimProtocol] | None = None
        # (opener trial id, generation) -> record; records never change once written.
        self._records: dict[tuple[int, int], dict[str, Any]] = {}

    # ---- randomness

    def rng(self, generation: int, slot: int, *more: int) -> np.random.Generator:
        """The generator of ``(seed, generation, slot, ...)``; ``slot=-1``: the generation's."""
        key = [self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF]
        key += [(int(k) + 2**31) & 0xFFFFFFFF for k in (generation, slot, *more)]
        return np.random.default_rng(np.random.SeedSequence(key))

    def use_study_seed(self, study: Study, attrs: Mapping[str, Any] | None = None) -> int:
        """Store the seed in ``study`` if it has none; without a fixed seed, adopt the stored one.

        Called before the first claim in each study (``attrs``: the study's system attrs just
        read, if at hand). Two processes that draw seeds for a new study at once both write and
        read back; both go on with what they read, which is the same value unless their writes
        interleave between the other's write and read (then a generation-0 trial may come from
        the other seed; every later draw uses the stored one). A storage with atomic openings
        (:class:`~optuna_biotune.evolution.claiming.Atomic`) stores the seed with generation 0's
        record and head instead, in one transaction: every worker adopts it before its first
        claim, and nobody writes it before (no write while the study has no head).
        """
        if self._seeded_study == study._study_id:
            return self.seed
        storage, study_id = study._storage, study._study_id
        if attrs is None:
            attrs = storage.get_study_system_attrs(study_id)
        stored = self.layout.seed(attrs)
        if stored is None and self.layout.head(attrs) is None and self.protocol(study).atomic:
            return self.seed  # stored when generation 0 opens (open_next)
        if stored is None:
            storage.set_study_system_attr(study_id, self.layout.seed_key, int(self.seed))
            stored = self.layout.seed(storage.get_study_system_attrs(study_id))
            stored = self.seed if stored is None else stored
        if not self.fixed_seed:
            self.seed = int(stored)
        self._seeded_study = study_id
        return self.seed

    def protocol(self, study: Study) -> ClaimProtocol:
        """How claims and openings reach ``study``'s storage (:func:`~optuna_biotune.evolution.
        claiming.protocol_for`), chosen once per storage."""
        chosen = self._chosen
        if chosen is None or chosen[0] is not study._storage:
            chosen = self._chosen = (study._storage, protocol_for(study._storage))
        return chosen[1]

    # ---- reading the storage

    def head(self, study: Study) -> dict[str, Any] | None:
        """The study's head ``{"generation", "trial"}`` (``None`` before generation 0 opens)."""
        return self.head_and_attrs(study)[0]

    def head_and_attrs(self, study: Study) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The head and the study system attrs it was read with (one read)."""
        attrs = study._storage.get_study_system_attrs(study._study_id)
        return self.layout.head(attrs), attrs

    def cached_record(self, head: Mapping[str, Any]) -> dict[str, Any] | None:
        """The record of the generation ``head`` names if this process has read it (no I/O)."""
        with self._lock:
            return self._records.get((int(head["trial"]), int(head["generation"])))

    def record_of(
        self,
        study: Study,
        head: Mapping[str, Any],
        trials: Sequence[FrozenTrial] | None = None,
    ) -> dict[str, Any]:
        """The record of the generation ``head`` names (cached; read from ``trials`` when its
        opener is among them, else from the storage)."""
        trial_id, generation = int(head["trial"]), int(head["generation"])
        with self._lock:
            cached = self._records.get((trial_id, generation))
        if cached is not None:
            return cached
        # `trials`, read after the head, hold the record (written before the head names it):
        # no storage round trip when the opener is among them (it is recent).
        opener = next((t for t in reversed(trials or ()) if t._trial_id == trial_id), None)
        if opener is not None and self.layout.holds_record(opener.system_attrs, generation):
            attrs = opener.system_attrs
        else:
            # The storage behind Optuna's cache reads the attrs alone (the cache would read
            # the whole unfinished trial).
            storage = study._storage
            attrs = backend(storage).get_trial_system_attrs(trial_id)
        record = self.layout.record_in(attrs, generation)
        if record is None:
            raise RuntimeFailure(
                f"the {self.namespace} record of trial id {trial_id} is missing from the "
                "storage; resume with the storage the study was created in."
            )
        with self._lock:
            self._records[(trial_id, generation)] = record
        return record

    def first_opening(
        self, study: Study, head: Mapping[str, Any], trials: Sequence[FrozenTrial]
    ) -> Mapping[str, Any]:
        """The head, or the record of the same generation opened by a lower trial number.

        Two workers may open a generation at the same moment (each finds no free slot, writes
        its record and sets the head); the opening of the lowest trial number is the
        generation's, so every process converges on the same record as soon as it sees both.
        """
        record = self.record_of(study, head, trials)
        generation, best = int(record["generation"]), int(record["opened_by"])
        found = None
        for t in reversed(trials):
            if t.number < int(record["window"]):
                break
            if t.number >= best or not self.layout.holds_record(t.system_attrs, generation):
                continue
            if self.layout.record_in(t.system_attrs, generation) is not None:
                best, found = t.number, t._trial_id
        if found is None:
            return head
        return {"generation": generation, "trial": found}

    def claim_of(self, trial: FrozenTrial) -> dict[str, Any] | None:
        """``trial``'s live slot claim (``None``: none, or one withdrawn after a conflict)."""
        return self.layout.live_claim(trial.system_attrs)

    def scan(self, trials: Sequence[FrozenTrial], record: Mapping[str, Any], me: int) -> SlotView:
        """Which slots of ``record``'s generation are live or dead (trial ``me`` left out)."""
        generation = int(record["generation"])
        view = SlotView(live={}, dead={}, running_numbers=[], earlier_unclaimed=0)
        for t in reversed(trials):
            if t.number < int(record["window"]):
                break
            if t.number == me:
                continue
            claim = self.claim_of(t)
            if claim is None:
                if t.state in (TrialState.RUNNING, TrialState.WAITING):
                    view.running_numbers.append(t.number)  # may still claim a slot
                    if t.number < me:
                        view.earlier_unclaimed += 1
                continue
            if int(claim["generation"]) != generation:
                if int(claim["generation"]) > generation or (
                    t.state in (TrialState.RUNNING, TrialState.WAITING) and not settled(t, claim)
                ):
                    view.unsettled.append(t.number)
                continue
            slot = int(claim["slot"])
            if t.state in _LIVE:
                view.live.setdefault(slot, []).append(t)
            elif spent_attempt(t):
                view.dead[slot] = view.dead.get(slot, 0) + 1
        return view

    # ---- opening a generation

    def individual(
        self,
        t: FrozenTrial,
        names: Sequence[str],
        minimize: bool,
    ) -> Individual | None:
        """``t`` as the strategy sees it (``names`` order); ``None`` unless a COMPLETE claim
        with a finite value and every evolved parameter."""
        claim = self.claim_of(t)
        if claim is None or t.state != TrialState.COMPLETE or t.values is None:
            return None
        value = float(t.values[0])
        if not math.isfinite(value):
            return None
        x = []
        for n in names:
            d = t.distributions.get(n)
            if d is None or not evolvable(d):
                return None
            x.append(normalize(t.params[n], d))
        return Individual(
            number=t.number,
            x=np.asarray(x, dtype=float),
            fitness=value if minimize else -value,
            generation=int(claim["generation"]),
            slot=int(claim["slot"]),
            role=str(claim["role"]),
            parents=tuple(int(p) for p in claim["parents"]),
            full=self.strategy.full_fidelity(t.user_attrs),
        )

    def open_next(
        self,
        study: Study,
        trial: FrozenTrial,
        trials: Sequence[FrozenTrial],
        *,
        record: Mapping[str, Any] | None,
        view: SlotView | None,
        also_pending: Sequence[int] = (),
    ) -> dict[str, Any] | None:
        """Open the generation after ``record``'s (generation 0 when ``record`` is ``None``)
        from the completed results, with ``trial`` as its opener; called by
        :meth:`Generations.assign` when every slot is taken (public for tests that stage a race
        between two openers).

        ``also_pending``: numbers of trials holding slots of ``record``'s generation that
        ``trials`` does not hold (created after that read); they are pending, as running
        trials are, and the next opening reads their results.

        The storage's claim protocol (:meth:`protocol`) writes it: on an atomic one (the CLI's
        ``WorkerStorage``) the record and the head in one transaction, serialised with every
        other opening, so a generation is opened once; on any other the record, then the head,
        and concurrent openings are settled by :meth:`first_opening`.

        Returns:
            The new head (``{"generation", "trial"}``) when the storage opened it atomically
            with ``trial``'s record, else ``None`` (read the head again).
        """
        study_id = study._study_id
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE

        def by_number(number: int) -> FrozenTrial | None:
            if 0 <= number < len(trials) and trials[number].number == number:
                return trials[number]
            return next((t for t in trials if t.number == number), None)

        if record is None or view is None:
            generation, names, state, space = 0, [], None, {}
            finished: list[FrozenTrial] = []
            pending: list[int] = []
            window = max(0, trial.number - _WINDOW_MARGIN)
        else:
            generation = int(record["generation"]) + 1
            names, state, space = list(record["names"]), record["state"], dict(record["space"])
            running: list[FrozenTrial] = []
            finished = []
            for number in record["pending"]:
                t = by_number(int(number))
                if t is None or t.state in DEAD:
                    continue
                (finished if t.state == TrialState.COMPLETE else running).append(t)
            for slot_trials in view.live.values():
                for t in slot_trials:
                    (finished if t.state == TrialState.COMPLETE else running).append(t)
            # A straggler is waited for at most _PENDING_GENERATIONS generations (a worker that
            # died without a heartbeat leaves its trial RUNNING forever; it must not pin the
            # window, which bounds the scan).
            pending = [
                t.number
                for t in running
                if (claim := self.claim_of(t)) is not None  # it may have stepped back since
                and generation - int(claim["generation"]) <= _PENDING_GENERATIONS
            ] + [int(n) for n in also_pending]
            if not names:
                names, space = self._names(finished)
            # The window (the lowest trial number any scan of this generation reads) keeps every
            # trial that may still claim one of its slots: without claim, not confirmed, pending.
            keep = [trial.number, *pending, *view.running_numbers, *view.unsettled]
            window = max(0, min(keep) - _WINDOW_MARGIN)
        results = [
            ind for t in finished if (ind := self.individual(t, names, minimize)) is not None
        ]
        results.sort(key=lambda ind: ind.number)
        opening = self.strategy.open(
            generation=generation,
            names=names,
            state=state,
            results=results,
            rng=lambda slot: self.rng(generation, slot),
        )
        if not opening.slots:
            raise RuntimeFailure(
                f"{type(self.strategy).__name__}.open() returned no slots; return at least one."
            )
        new_record = {
            "generation": generation,
            "names": names,
            "space": space,
            "state": opening.state,
            "slots": [
                {
                    "role": p.role,
                    "parents": [int(q) for q in p.parents],
                    "x": None if p.x is None else [round(float(v), DIGITS) for v in p.x],
                    **({"deferred": True} if p.deferred else {}),
                }
                for p in opening.slots
            ],
            "pending": sorted(int(n) for n in pending),
            "window": window,
            "opened_by": trial.number,
        }
        # Everyone uses the record as read back from JSON, so a resumed process (which reads
        # it from the storage) computes with bit-identical numbers.
        new_record = json.loads(json.dumps(new_record))
        new_head = {"generation": generation, "trial": trial._trial_id}
        # Generation 0 stores the seed it was opened with (on a storage whose openings are
        # atomic), unless this process has seen one stored (use_study_seed); a seed stored
        # meanwhile with another value: not opened, read again.
        seed = None
        if generation == 0 and self._seeded_study != study_id:
            seed = {self.layout.seed_key: int(self.seed)}
        opened = self.protocol(study).open(
            OpenRequest(
                study=study,
                trial_id=trial._trial_id,
                generation=generation,
                attrs=self.layout.record_attrs(generation, new_record),
                head_key=self.layout.head_key,
                seed_attrs=seed,
                head_generation=self._head_generation(study),
            )
        )
        if opened is None:
            return None  # another worker opened it first (or stored a seed): read again
        with self._lock:
            self._records[(trial._trial_id, generation)] = new_record
        if opened == "head" and seed is not None:
            self._seeded_study = study_id
        return new_head if opened == "head" else None

    def _head_generation(self, study: Study) -> Callable[[], int]:
        """A reader of the head's generation (-1 before generation 0 opens)."""
        return lambda: -1 if (h := self.head(study)) is None else int(h["generation"])

    def _names(self, finished: Sequence[FrozenTrial]) -> tuple[list[str], dict[str, Any]]:
        """The evolved parameters: float/int parameters every completed claim shares."""
        common: dict[str, BaseDistribution] | None = None
        for t in finished:
            if t.state != TrialState.COMPLETE or self.claim_of(t) is None:
                continue
            numeric = {n: d for n, d in t.distributions.items() if evolvable(d)}
            if common is None:
                common = numeric
            else:
                common = {n: d for n, d in common.items() if numeric.get(n) == d}
        if not common:
            return [], {}
        names = sorted(common)
        return names, {n: distribution_to_json(common[n]) for n in names}
