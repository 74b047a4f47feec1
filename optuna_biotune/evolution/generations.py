"""Generational bookkeeping in the Optuna storage, shared by every evolutionary sampler here.

One mechanism for :class:`~optuna_biotune.BioTuneSampler` and ``EvoPruneSampler``: a
*generation* has ``N`` *slots*; a pluggable :class:`GenerationStrategy` decides, when a
generation opens, how many slots it has and what each proposes (role, parents, genes). This
module claims slots for trials, issues a slot again when its trial FAILED, was PRUNED or was
left RUNNING by a dead worker (failed by Optuna's heartbeat), opens the next generation from the
results, and keeps everything in the storage, so a new process continues exactly where the last
stopped. No torch, no in-memory state that cannot be rebuilt from the storage.

Storage layout (``ns`` is the sampler's class name, e.g. ``BioTuneSampler``):

* study system attr ``{ns}:head``: ``{"generation": g, "trial": id}``, the newest generation and
  the trial whose system attrs hold its record (one small row: reading it costs the same at any
  study size);
* trial system attr ``{ns}:record:<g>`` (on the trial that opened generation ``g``; chunked
  above 2045 characters as ``{ns}:record:<g>:<i>``): ``generation``, ``names`` (evolved
  parameters), ``space`` (their distributions), ``state`` (the strategy's population),
  ``slots`` (the proposals), ``pending`` (trials of older generations still running, merged
  when they finish) and ``window`` (the lowest trial number that can still matter);
* trial system attr ``{ns}:slot`` = ``{"generation", "slot", "role", "parents"}``: the claim,
  the only write per trial (``slot`` is ``-1`` for a claim withdrawn after a conflict); read
  by :func:`~optuna_biotune.evolution.trial_generation`.

Randomness is derived from ``(seed, generation, slot)`` (and the parameter name), never from
process history, so a sequential run resumed in a new process proposes exactly what an
uninterrupted run proposes.

Parallel policy: a worker first takes a free slot of the newest generation (never issued, or
whose trial failed/was pruned, at most ``slot_attempts`` times per slot). When every slot is
taken but some are still running, it does not wait: it opens the next generation from the
results completed so far, and the stragglers' results are merged into the population when the
generation after that opens ("pending"). Sequential runs never hit this case, so they follow the
paper's generations exactly; parallel workers never idle.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState

from optuna_biotune.errors import RuntimeFailure

if TYPE_CHECKING:
    from optuna.study import Study

from optuna_biotune.evolution.records import read_chunked, write_chunked
from optuna_biotune.evolution.space import denormalize, evolvable, normalize
from optuna_biotune.evolution.strategy import (
    Assignment,
    GenerationStrategy,
    Individual,
    SlotPlan,
)

__all__ = ["Generations", "SlotView"]

_LIVE = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
_DEAD = (TrialState.FAIL, TrialState.PRUNED)
# Stream tags of the seed sequences (distinct from any generation number).
_OPEN_STREAM = -1
_UNASSIGNED_STREAM = -2
# Trial numbers can become visible slightly out of order under concurrent creation.
_WINDOW_MARGIN = 8
# Before opening the next generation because every slot is taken, wait this often (this long
# each) for slots whose only claims are unconfirmed (no parameter yet): such a claim may be
# one that is stepping back after a conflict, which would leave its slot never evaluated.
_CONFIRM_WAITS = 40
_CONFIRM_DELAY = 0.05
# How many generations a running straggler's result is still waited for.
_PENDING_GENERATIONS = 3
# Genes are kept to 10 decimals in records (shorter rows; everyone reads the same JSON).
_DIGITS = 10


def _gene_tag(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


# --------------------------------------------------------------------------- the bookkeeping


@dataclass
class SlotView:
    """What the window of trials says about the newest generation."""

    live: dict[int, list[FrozenTrial]]
    dead: dict[int, int]
    running_numbers: list[int]  # running or waiting trials without a claim yet
    earlier_unclaimed: int


class Generations:
    """Slot claiming, reissue and generation opening for one sampler (one namespace).

    Args:
        namespace: Prefix of every attr, the sampler's class name.
        strategy: Decides each generation's slots.
        seed: Base seed of all randomness; ``None``: the seed stored in the study (study system
            attr ``{ns}:seed``), or, in a study without one, a drawn seed that is stored there
            on first use, so a resumed process continues with the same randomness.
        slot_attempts: How many times a slot is issued in all (a slot whose trials failed or
            were pruned this often is given up).
    """

    def __init__(
        self,
        *,
        namespace: str,
        strategy: GenerationStrategy,
        seed: int | None,
        slot_attempts: int = 3,
    ) -> None:
        if not namespace or ":" in namespace:
            raise ValueError(
                f"`namespace` must be a non-empty name without ':', got {namespace!r}."
            )
        if not isinstance(slot_attempts, int) or slot_attempts < 1:
            raise ValueError(f"`slot_attempts` must be an int >= 1, got {slot_attempts!r}.")
        self.namespace = namespace
        self.strategy = strategy
        self.fixed_seed = seed is not None
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self._seeded_study: int | None = None  # the study whose stored seed self.seed is
        self.slot_attempts = slot_attempts
        self.head_key = f"{namespace}:head"
        self.seed_key = f"{namespace}:seed"
        self.record_key = f"{namespace}:record"
        self.slot_key = f"{namespace}:slot"
        self._lock = threading.Lock()
        # (opener trial id, generation) -> record; records never change once written.
        self._records: dict[tuple[int, int], dict[str, Any]] = {}
        self._spaces: dict[tuple[int, int], dict[str, BaseDistribution]] = {}
        self._assignments: dict[int, Assignment] = {}  # trial id -> assignment
        # thread -> (study id, head) read by search_space for the assign() that follows it
        self._head_read: dict[int, tuple[int, Any]] = {}

    # ---- randomness

    def rng(self, generation: int, slot: int, *more: int) -> np.random.Generator:
        """The generator of ``(seed, generation, slot, ...)``; ``slot=-1``: the generation's."""
        key = [self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF]
        key += [(int(k) + 2**31) & 0xFFFFFFFF for k in (generation, slot, *more)]
        return np.random.default_rng(np.random.SeedSequence(key))

    def use_study_seed(self, study: Study) -> int:
        """Store the seed in ``study`` if it has none; without a fixed seed, adopt the stored one.

        Called before the first claim in each study. Two processes that draw seeds for a new
        study at once both write and read back; both go on with what they read, which is the
        same value unless their writes interleave between the other's write and read (then a
        generation-0 trial may come from the other seed; every later draw uses the stored one).
        """
        if self._seeded_study == study._study_id:
            return self.seed
        storage, study_id = study._storage, study._study_id
        stored = storage.get_study_system_attrs(study_id).get(self.seed_key)
        if stored is None:
            storage.set_study_system_attr(study_id, self.seed_key, int(self.seed))
            stored = storage.get_study_system_attrs(study_id).get(self.seed_key, self.seed)
        if not self.fixed_seed:
            self.seed = int(stored)
        self._seeded_study = study_id
        return self.seed

    # ---- reading the storage

    def head(self, study: Study) -> dict[str, Any] | None:
        """The study's head ``{"generation", "trial"}`` (``None`` before generation 0 opens)."""
        return study._storage.get_study_system_attrs(study._study_id).get(self.head_key)

    def record_key_of(self, generation: int) -> str:
        """The trial system attr holding ``generation``'s record: ``{ns}:record:<g>``.

        One key per generation, so a trial that opens a generation, finds its slots already
        taken and opens the next one too keeps both records.
        """
        return f"{self.record_key}:{int(generation)}"

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
        key = self.record_key_of(generation)
        if opener is not None and key in opener.system_attrs:
            attrs = opener.system_attrs
        else:
            attrs = study._storage.get_trial_system_attrs(trial_id)
        record = read_chunked(attrs, key)
        if record is None:
            raise RuntimeFailure(
                f"the {self.namespace} record of trial id {trial_id} is missing from the "
                "storage; resume with the storage the study was created in."
            )
        with self._lock:
            self._records[(trial_id, generation)] = record
        return record

    def search_space(self, study: Study) -> dict[str, BaseDistribution]:
        """Distributions of the evolved parameters of the newest generation (``{}`` at first)."""
        head = self.head(study)
        with self._lock:  # Optuna calls assign() next, in this thread: it starts from this read
            self._head_read[threading.get_ident()] = (study._study_id, head)
        if head is None:
            return {}
        key = (int(head["trial"]), int(head["generation"]))
        with self._lock:
            space = self._spaces.get(key)
        if space is None:
            record = self.record_of(study, head)
            space = {n: json_to_distribution(d) for n, d in record["space"].items()}
            with self._lock:
                self._spaces[key] = space
        return dict(space)

    def _first_opening(
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
        key = self.record_key_of(generation)
        for t in reversed(trials):
            if t.number < int(record["window"]):
                break
            if t.number >= best or key not in t.system_attrs:
                continue
            rival = read_chunked(t.system_attrs, key)
            if isinstance(rival, dict) and int(rival.get("generation", -1)) == generation:
                best, found = t.number, t._trial_id
        if found is None:
            return head
        return {"generation": generation, "trial": found}

    def _claim_of(self, trial: FrozenTrial) -> dict[str, Any] | None:
        claim = trial.system_attrs.get(self.slot_key)
        if isinstance(claim, dict) and int(claim.get("slot", -1)) >= 0:
            return claim
        return None

    def scan(self, trials: Sequence[FrozenTrial], record: Mapping[str, Any], me: int) -> SlotView:
        """Which slots of ``record``'s generation are live or dead (trial ``me`` left out)."""
        generation = int(record["generation"])
        view = SlotView(live={}, dead={}, running_numbers=[], earlier_unclaimed=0)
        for t in reversed(trials):
            if t.number < int(record["window"]):
                break
            if t.number == me:
                continue
            claim = self._claim_of(t)
            if claim is None:
                if t.state in (TrialState.RUNNING, TrialState.WAITING):
                    view.running_numbers.append(t.number)  # may still claim a slot
                    if t.number < me:
                        view.earlier_unclaimed += 1
                continue
            if int(claim["generation"]) != generation:
                continue
            slot = int(claim["slot"])
            if t.state in _LIVE:
                view.live.setdefault(slot, []).append(t)
            elif t.state in _DEAD:
                view.dead[slot] = view.dead.get(slot, 0) + 1
        return view

    @staticmethod
    def _unconfirmed(view: SlotView) -> bool:
        """Whether a taken slot's claims are all still without any parameter (maybe a claim
        stepping back after a conflict)."""
        return any(
            all(t.state == TrialState.RUNNING and not t.params for t in ts)
            for ts in view.live.values()
        )

    def _free_slots(self, record: Mapping[str, Any], view: SlotView) -> list[int]:
        return [
            s
            for s in range(len(record["slots"]))
            if s not in view.live and view.dead.get(s, 0) < self.slot_attempts
        ]

    # ---- the public operations

    def assignment(self, trial_id: int) -> Assignment | None:
        """The assignment this process made for ``trial_id`` (``None`` when none)."""
        with self._lock:
            return self._assignments.get(trial_id)

    def assign(self, study: Study, trial: FrozenTrial) -> Assignment:
        """Claim a slot for ``trial`` (opening generations as needed) and return its plan."""
        known = self.assignment(trial._trial_id)
        if known is not None:
            return known
        self.use_study_seed(study)
        storage, study_id = study._storage, study._study_id
        conflicts = waits = 0
        with self._lock:
            just_read = self._head_read.pop(threading.get_ident(), None)
        while True:
            if just_read is not None and just_read[0] == study_id:
                head, just_read = just_read[1], None
            else:
                head = self.head(study)
            trials = storage.get_all_trials(study_id, deepcopy=False)
            if head is None:
                self.open_next(study, trial, trials, head=None, record=None, view=None)
                continue
            head = self._first_opening(study, head, trials)
            record = self.record_of(study, head, trials)
            view = self.scan(trials, record, trial.number)
            free = self._free_slots(record, view)
            if not free:
                if waits < _CONFIRM_WAITS and self._unconfirmed(view):
                    waits += 1
                    time.sleep(_CONFIRM_DELAY)
                    continue
                self.open_next(study, trial, trials, head=head, record=record, view=view)
                continue
            slot = free[view.earlier_unclaimed % len(free)] if conflicts == 0 else free[0]
            while True:  # after a conflict, the other slots this read found free, then read again
                if conflicts > 0:
                    slot = free[random.randrange(len(free))]
                plan = record["slots"][slot]
                if plan.get("deferred"):
                    plan = self._plan_deferred(study, record, slot, plan, view)
                claim = {
                    "generation": int(record["generation"]),
                    "slot": slot,
                    "role": plan["role"],
                    "parents": list(plan["parents"]),
                }
                storage.set_trial_system_attr(trial._trial_id, self.slot_key, claim)
                # Write, then read: of two trials that claimed the same slot at least one sees
                # the other, and whoever sees another live claim steps back (so at most one
                # keeps it).
                held = self._held_slots(study, record, trial.number)
                if slot not in held:
                    break
                storage.set_trial_system_attr(
                    trial._trial_id, self.slot_key, {**claim, "slot": -1}
                )
                conflicts += 1
                time.sleep(random.uniform(0.0, 0.01 * min(conflicts, 10)))
                free = [s for s in free if s not in held]  # those still free at that read
                if not free:
                    break
            if not free:
                continue
            names = record["names"]
            x = {} if plan["x"] is None else dict(zip(names, plan["x"], strict=True))
            result = Assignment(
                generation=int(record["generation"]),
                slot=slot,
                role=plan["role"],
                parents=tuple(int(p) for p in plan["parents"]),
                x=x,
            )
            with self._lock:
                self._assignments[trial._trial_id] = result
            return result

    def _plan_deferred(
        self,
        study: Study,
        record: Mapping[str, Any],
        slot: int,
        plan: Mapping[str, Any],
        view: SlotView,
    ) -> dict[str, Any]:
        """The plan of a deferred slot, from the generation's slots completed so far."""
        generation, names = int(record["generation"]), list(record["names"])
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        siblings = sorted(
            (
                ind
                for trials in view.live.values()
                for t in trials
                if (ind := self._individual(t, names, minimize)) is not None
            ),
            key=lambda ind: ind.number,
        )
        decided = self.strategy.plan_slot(
            generation=generation,
            slot=slot,
            names=names,
            state=record["state"],
            plan=SlotPlan(
                role=str(plan["role"]),
                parents=tuple(int(p) for p in plan["parents"]),
                x=None if plan["x"] is None else tuple(plan["x"]),
            ),
            siblings=siblings,
            rng=self.rng(generation, slot),
        )
        x = None if decided.x is None else [round(float(v), _DIGITS) for v in decided.x]
        if x is not None and len(x) != len(names):
            raise RuntimeFailure(
                f"{type(self.strategy).__name__}.plan_slot() planned {len(x)} genes for "
                f"{len(names)} evolved parameters; plan one gene per parameter."
            )
        return {"role": decided.role, "parents": [int(p) for p in decided.parents], "x": x}

    def _slot_held(self, study: Study, record: Mapping[str, Any], slot: int, me: int) -> bool:
        """Whether a trial other than number ``me`` holds a live claim on ``slot``."""
        return slot in self._held_slots(study, record, me)

    def _held_slots(self, study: Study, record: Mapping[str, Any], me: int) -> set[int]:
        """The slots of ``record``'s generation that trials other than number ``me`` hold with
        a live claim, read fresh from the storage (the "read" of write-then-read).

        A storage that offers ``live_claims(study_id, key, min_number)`` (the CLI's
        ``WorkerStorage``: one query) answers it directly; any other is read whole.
        """
        backend = getattr(study._storage, "_backend", study._storage)
        live_claims = getattr(backend, "live_claims", None)
        if live_claims is None:
            fresh = study._storage.get_all_trials(study._study_id, deepcopy=False)
            return set(self.scan(fresh, record, me).live)
        generation = int(record["generation"])
        return {
            int(claim.get("slot", -1))
            for number, claim in live_claims(study._study_id, self.slot_key, int(record["window"]))
            if number != me
            and isinstance(claim, dict)
            and int(claim.get("generation", -1)) == generation
            and int(claim.get("slot", -1)) >= 0
        }

    def forget(self, trial_id: int) -> None:
        """Drop this process's note of ``trial_id``'s assignment (after the trial finished)."""
        with self._lock:
            self._assignments.pop(trial_id, None)

    def sample(
        self,
        trial: FrozenTrial,
        name: str,
        distribution: BaseDistribution,
        *,
        drawn: Mapping[str, float] | None = None,
    ) -> Any:
        """The value of ``name`` for ``trial``: its slot's planned gene, else a seeded draw.

        Planned genes are mapped through the distribution the objective asks with (so dynamic
        ranges stay valid); unplanned float/int genes come from
        :meth:`GenerationStrategy.initial_x`, categorical ones uniformly, all from generators
        derived from ``(seed, generation, slot, name)``. ``drawn`` adds genes (in ``[0, 1]``)
        already drawn for the trial but not yet in ``trial.params`` (relative sampling draws
        them all before any is stored), so :meth:`GenerationStrategy.draw_gene` sees them.
        """
        a = self.assignment(trial._trial_id)
        if a is not None and name in a.x and not isinstance(distribution, CategoricalDistribution):
            return denormalize(a.x[name], distribution)  # planned: no generator needed
        if a is not None:
            slot_rng = self.rng(a.generation, a.slot)
            gene_rng = self.rng(a.generation, a.slot, _gene_tag(name))
        else:
            slot_rng = self.rng(_UNASSIGNED_STREAM, trial.number)
            gene_rng = self.rng(_UNASSIGNED_STREAM, trial.number, _gene_tag(name))
        if isinstance(distribution, CategoricalDistribution):
            return distribution.choices[int(gene_rng.integers(0, len(distribution.choices)))]
        if a is not None and name in a.x:
            return denormalize(a.x[name], distribution)
        known = {
            n: normalize(v, d)
            for n, v in trial.params.items()
            if n != name and (d := trial.distributions.get(n)) is not None and evolvable(d)
        }
        drawn = {**known, **{n: v for n, v in (drawn or {}).items() if n != name}}
        return denormalize(self.strategy.draw_gene(name, drawn, slot_rng, gene_rng), distribution)

    # ---- opening a generation

    def _individual(
        self,
        t: FrozenTrial,
        names: Sequence[str],
        minimize: bool,
    ) -> Individual | None:
        claim = self._claim_of(t)
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
        )

    def open_next(
        self,
        study: Study,
        trial: FrozenTrial,
        trials: Sequence[FrozenTrial],
        *,
        head: Mapping[str, Any] | None,
        record: Mapping[str, Any] | None,
        view: SlotView | None,
    ) -> None:
        """Open the generation after ``record``'s (generation 0 when ``record`` is ``None``)
        from the completed results, with ``trial`` as its opener; called by :meth:`assign`
        when every slot is taken (public for tests that stage a race between two openers)."""
        storage, study_id = study._storage, study._study_id
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
            finished, running = [], []
            for number in record["pending"]:
                t = by_number(int(number))
                if t is None or t.state in _DEAD:
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
                if (claim := self._claim_of(t)) is not None  # it may have stepped back since
                and generation - int(claim["generation"]) <= _PENDING_GENERATIONS
            ]
            if not names:
                names, space = self._names(finished)
            window = max(0, min([trial.number, *pending, *view.running_numbers]) - _WINDOW_MARGIN)
        results = [
            ind for t in finished if (ind := self._individual(t, names, minimize)) is not None
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
                    "x": None if p.x is None else [round(float(v), _DIGITS) for v in p.x],
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
        current = self.head(study)
        current_gen = -1 if current is None else int(current["generation"])
        if current_gen >= generation:  # another worker opened it meanwhile: theirs is used
            return
        write_chunked(
            lambda k, v: storage.set_trial_system_attr(trial._trial_id, k, v),
            self.record_key_of(generation),
            new_record,
        )
        with self._lock:
            self._records[(trial._trial_id, generation)] = new_record
        if current_gen == generation - 1:  # nobody had opened it before the write
            storage.set_study_system_attr(
                study_id, self.head_key, {"generation": generation, "trial": trial._trial_id}
            )

    def _names(self, finished: Sequence[FrozenTrial]) -> tuple[list[str], dict[str, Any]]:
        """The evolved parameters: float/int parameters every completed claim shares."""
        common: dict[str, BaseDistribution] | None = None
        for t in finished:
            if t.state != TrialState.COMPLETE or self._claim_of(t) is None:
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

    # ---- slots left behind (their trial died after the generation had moved on)

    def _scanned_record(
        self, trials: Sequence[FrozenTrial], generation: int
    ) -> dict[str, Any] | None:
        """``generation``'s record, found by scanning ``trials`` (of concurrent openings, the
        lowest trial number's); ``None`` when no trial holds it."""
        key, best = self.record_key_of(generation), None
        for t in trials:
            if key in t.system_attrs and (best is None or t.number < best[0]):
                record = read_chunked(t.system_attrs, key)
                if isinstance(record, dict) and int(record.get("generation", -1)) == generation:
                    best = (t.number, record)
        return None if best is None else best[1]

    def reissue(
        self, study: Study, trial: FrozenTrial | optuna.Trial, *, generation: int, slot: int
    ) -> Assignment | None:
        """Claim ``slot`` of an older ``generation`` for ``trial``, before it samples anything.

        :meth:`assign` issues the slots of the newest generation only; a slot whose trial died
        after its generation had moved on (a worker killed while its trial was pending) is left
        behind. The run loop that ends a search (``optuna_biotune.runtime.loop.run_generations``)
        evaluates such slots with this: same plan as :meth:`assign` gives (a deferred slot is
        planned from its generation's completed slots), same claim protocol (write, read, step
        back on a conflict). Its result does not join the population: the generations after it
        were already opened. Scans the whole study: meant for the end of a search.

        Returns:
            The assignment, or ``None`` when the slot is complete, held by a live trial, used
            up, taken meanwhile by another worker, or ``trial`` already has one.
        """
        if self.assignment(trial._trial_id) is not None:
            return None
        self.use_study_seed(study)
        storage, study_id = study._storage, study._study_id
        trials = storage.get_all_trials(study_id, deepcopy=False)
        record = self._scanned_record(trials, int(generation))
        if record is None or not 0 <= slot < len(record["slots"]):
            return None
        view = self.scan(trials, record, trial.number)
        if slot in view.live or view.dead.get(slot, 0) >= self.slot_attempts:
            return None
        plan = record["slots"][slot]
        if plan.get("deferred"):
            plan = self._plan_deferred(study, record, slot, plan, view)
        claim = {
            "generation": int(record["generation"]),
            "slot": int(slot),
            "role": plan["role"],
            "parents": list(plan["parents"]),
        }
        storage.set_trial_system_attr(trial._trial_id, self.slot_key, claim)
        if self._slot_held(study, record, slot, trial.number):
            storage.set_trial_system_attr(trial._trial_id, self.slot_key, {**claim, "slot": -1})
            return None
        names = record["names"]
        result = Assignment(
            generation=int(record["generation"]),
            slot=int(slot),
            role=str(plan["role"]),
            parents=tuple(int(p) for p in plan["parents"]),
            x={} if plan["x"] is None else dict(zip(names, plan["x"], strict=True)),
        )
        with self._lock:
            self._assignments[trial._trial_id] = result
        return result
