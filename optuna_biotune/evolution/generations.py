"""Slot claiming, reissue and sampling in the Optuna storage, shared by every evolutionary
sampler here.

One mechanism for :class:`~optuna_biotune.BioTuneSampler` and ``EvoPruneSampler``: a
*generation* has ``N`` *slots*; a pluggable :class:`GenerationStrategy` decides, when a
generation opens, how many slots it has and what each proposes (role, parents, genes). This
module claims slots for trials, issues a slot again when its trial FAILED, was PRUNED or was
left RUNNING by a dead worker (failed by Optuna's heartbeat), and gives each trial its slot's
values, through the storage's claim protocol (:mod:`~optuna_biotune.evolution.claiming`);
:mod:`~optuna_biotune.evolution.ledger` (the base class) keeps the generation records in the
storage (their keys: :mod:`~optuna_biotune.evolution.layout`) and opens the next generation
from the results, so a new process continues exactly where the last stopped. No torch, no
in-memory state that cannot be rebuilt from the storage.

Parallel policy: a worker first takes a free slot of the newest generation (never issued, or
whose trial failed/was pruned, at most ``slot_attempts`` times per slot). When every slot is
taken but some are still running, it does not wait: it opens the next generation from the
results completed so far, and the stragglers' results are merged into the population when the
generation after that opens ("pending"). Sequential runs never hit this case, so they follow the
paper's generations exactly; parallel workers never idle.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState

from optuna_biotune.errors import RuntimeFailure, check_int
from optuna_biotune.evolution.claiming import Request
from optuna_biotune.evolution.claims import settled
from optuna_biotune.evolution.ledger import DIGITS, GenerationLedger, SlotView
from optuna_biotune.evolution.space import denormalize, evolvable, normalize
from optuna_biotune.evolution.strategy import (
    Assignment,
    GenerationStrategy,
    SlotPlan,
)

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["Generations", "SlotView"]

# Stream tag of the seed sequences of trials without a slot (distinct from any generation).
_UNASSIGNED_STREAM = -2
# Before opening the next generation because every slot is taken, wait this often (this long
# each) for slots whose only claims are unconfirmed (no parameter yet): such a claim may be
# one that is stepping back after a conflict, which would leave its slot never evaluated.
_CONFIRM_WAITS = 40
_CONFIRM_DELAY = 0.05


def _gene_tag(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


class Generations(GenerationLedger):
    """Slot claiming, reissue and generation opening for one sampler (one namespace).

    Args:
        namespace, strategy, seed: As :class:`~optuna_biotune.evolution.ledger.GenerationLedger`.
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
        super().__init__(namespace=namespace, strategy=strategy, seed=seed)
        check_int("slot_attempts", slot_attempts, 1)
        self.slot_attempts = slot_attempts
        self._spaces: dict[tuple[int, int], dict[str, BaseDistribution]] = {}
        self._assignments: dict[int, Assignment] = {}  # trial id -> assignment
        # thread -> (study id, head, trials or None, study system attrs or None) read by
        # search_space for the assign() that follows it
        self._head_read: dict[int, tuple[int, Any, Any, Any]] = {}

    # ---- the search space (read by Optuna just before assign)

    def search_space(self, study: Study) -> dict[str, BaseDistribution]:
        """Distributions of the evolved parameters of the newest generation (``{}`` at first)."""
        head, attrs = self.head_and_attrs(study)
        trials = None
        if head is not None and self.cached_record(head) is None:
            # The record is on a recent trial: read the trials (as assign() would next) rather
            # than that trial alone, and hand both reads to assign().
            trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        with self._lock:  # Optuna calls assign() next, in this thread: it starts from this read
            self._head_read[threading.get_ident()] = (study._study_id, head, trials, attrs)
        if head is None:
            return {}
        key = (int(head["trial"]), int(head["generation"]))
        with self._lock:
            space = self._spaces.get(key)
        if space is None:
            record = self.record_of(study, head, trials)
            space = {n: json_to_distribution(d) for n, d in record["space"].items()}
            with self._lock:
                self._spaces[key] = space
        return dict(space)

    # ---- claiming slots

    def _unconfirmed(self, view: SlotView) -> bool:
        """Whether a taken slot's claims are all still without any parameter (maybe a claim
        stepping back after a conflict; an atomic claim never does)."""
        return any(
            all(
                t.state == TrialState.RUNNING and not settled(t, self.claim_of(t) or {})
                for t in ts
            )
            for ts in view.live.values()
        )

    def _used_up(self, view: SlotView) -> set[int]:
        """The slots whose claims ended FAIL or PRUNED ``slot_attempts`` times."""
        return {s for s, n in view.dead.items() if n >= self.slot_attempts}

    def _free_slots(self, record: Mapping[str, Any], view: SlotView) -> list[int]:
        used = self._used_up(view)
        return [s for s in range(len(record["slots"])) if s not in view.live and s not in used]

    def _open_after(
        self,
        study: Study,
        trial: FrozenTrial,
        trials: Any,
        *,
        record: Mapping[str, Any],
        view: SlotView,
        also_pending: Sequence[int] = (),
    ) -> tuple[int, Any, Any, Any] | None:
        """Open the generation after ``record``'s from this read (:meth:`open_next`); what
        :meth:`assign` goes on from (:meth:`_after_opening`)."""
        opened = self.open_next(
            study, trial, trials, record=record, view=view, also_pending=also_pending
        )
        return self._after_opening(study, opened, trials, int(record["generation"]) + 1)

    # ---- the public operations

    def assignment(self, trial_id: int) -> Assignment | None:
        """The assignment this process made for ``trial_id`` (``None`` when none)."""
        with self._lock:
            return self._assignments.get(trial_id)

    def assign(self, study: Study, trial: FrozenTrial) -> Assignment:
        """Claim a slot for ``trial`` (opening generations as needed) and return its plan.

        The claim goes through the storage's protocol (:meth:`protocol`, chosen once per
        storage): one transaction (:class:`~optuna_biotune.evolution.claiming.Atomic`) or
        write, then read (:class:`~optuna_biotune.evolution.claiming.WriteThenRead`).
        """
        known = self.assignment(trial._trial_id)
        if known is not None:
            return known
        storage, study_id = study._storage, study._study_id
        protocol = self.protocol(study)
        conflicts = waits = 0
        with self._lock:
            just_read = self._head_read.pop(threading.get_ident(), None)
        trials = None
        while True:
            if just_read is not None and just_read[0] == study_id:
                head, trials, attrs, just_read = just_read[1], just_read[2], just_read[3], None
            else:
                (head, attrs), trials = self.head_and_attrs(study), None
            self.use_study_seed(study, attrs)
            if trials is None:
                trials = storage.get_all_trials(study_id, deepcopy=False)
            if head is None:
                opened = self.open_next(study, trial, trials, record=None, view=None)
                just_read = self._after_opening(study, opened, trials, 0)
                continue
            head = self.first_opening(study, head, trials)
            record = self.record_of(study, head, trials)
            view = self.scan(trials, record, trial.number)
            free = self._free_slots(record, view)
            if not free:
                if waits < _CONFIRM_WAITS and self._unconfirmed(view):
                    waits += 1
                    time.sleep(_CONFIRM_DELAY)
                    continue
                just_read = self._open_after(study, trial, trials, record=record, view=view)
                continue
            k = view.earlier_unclaimed % len(free) if conflicts == 0 else 0
            request, plans = self._request(study, trial, record, view, free[k:] + free[:k])
            request.conflicts = conflicts
            slot = protocol.claim(request)
            conflicts = request.conflicts
            if slot is not None:
                return self._assigned(trial, record, slot, plans[slot])
            # Every slot this read found free is held by now. When an atomic claim's transaction
            # saw every slot held, the generation is full: open the next one from this read, the
            # holders it did not know waited for as pending (as a running trial is), without
            # reading the study again (at 16 workers that read was the tail).
            if set(request.holders) | self._used_up(view) >= set(range(len(record["slots"]))):
                known_numbers = {t.number for ts in view.live.values() for t in ts}
                just_read = self._open_after(
                    study,
                    trial,
                    trials,
                    record=record,
                    view=view,
                    also_pending=[n for n in request.holders.values() if n not in known_numbers],
                )

    def _after_opening(
        self,
        study: Study,
        opened: Mapping[str, Any] | None,
        trials: Any,
        generation: int,
    ) -> tuple[int, Any, Any, Any] | None:
        """What :meth:`assign` goes on from after trying to open ``generation``: ``None`` (read
        the head and the trials again), or, on a storage with atomic openings, the new head
        with the trials just read: this trial's (``opened``), or the one of the worker that
        opened it first, whose record is read alone. No slot of a generation just opened is
        known to be taken from those trials; the storage's claim sees every claim made since."""
        if opened is not None:
            return (study._study_id, opened, trials, None)
        if not self.protocol(study).atomic:
            return None
        head, attrs = self.head_and_attrs(study)
        if head is None or int(head["generation"]) != generation:
            return None
        self.record_of(study, head)  # cached for the claim
        return (study._study_id, head, trials, attrs)

    def _request(
        self,
        study: Study,
        trial: FrozenTrial | optuna.Trial,
        record: Mapping[str, Any],
        view: SlotView,
        candidates: list[int],
    ) -> tuple[Request, dict[int, Mapping[str, Any]]]:
        """A claim on one of ``candidates`` of ``record``'s generation, and the plans of the
        slots it planned: each slot's claim is planned from this read (:meth:`_slot_plan`:
        the strategy decides, never the storage)."""
        plans: dict[int, Mapping[str, Any]] = {}

        def claim_for(slot: int) -> dict[str, Any]:
            plans[slot] = plan = self._slot_plan(study, record, slot, view)
            return self._claim(record, slot, plan)

        def held_by_scan() -> set[int]:
            fresh = study._storage.get_all_trials(study._study_id, deepcopy=False)
            return set(self.scan(fresh, record, trial.number).live)

        request = Request(
            study=study,
            trial_id=trial._trial_id,
            trial_number=trial.number,
            key=self.layout.slot_key,
            generation=int(record["generation"]),
            window=int(record["window"]),
            candidates=candidates,
            claim_for=claim_for,
            held_by_scan=held_by_scan,
            attempts=self.slot_attempts,
        )
        return request, plans

    def _slot_plan(
        self, study: Study, record: Mapping[str, Any], slot: int, view: SlotView
    ) -> Mapping[str, Any]:
        """``slot``'s plan in ``record`` (a deferred slot planned now, from ``view``)."""
        plan = record["slots"][slot]
        if plan.get("deferred"):
            plan = self._plan_deferred(study, record, slot, plan, view)
        return plan

    @staticmethod
    def _claim(record: Mapping[str, Any], slot: int, plan: Mapping[str, Any]) -> dict[str, Any]:
        """The claim ``{ns}:slot`` a trial writes for ``slot`` of ``record``'s generation."""
        return {
            "generation": int(record["generation"]),
            "slot": int(slot),
            "role": plan["role"],
            "parents": list(plan["parents"]),
        }

    def _assigned(
        self,
        trial: FrozenTrial | optuna.Trial,
        record: Mapping[str, Any],
        slot: int,
        plan: Mapping[str, Any],
    ) -> Assignment:
        """Note and return ``trial``'s assignment to ``slot`` (claimed) with ``plan``."""
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
                if (ind := self.individual(t, names, minimize)) is not None
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
        x = None if decided.x is None else [round(float(v), DIGITS) for v in decided.x]
        if x is not None and len(x) != len(names):
            raise RuntimeFailure(
                f"{type(self.strategy).__name__}.plan_slot() planned {len(x)} genes for "
                f"{len(names)} evolved parameters; plan one gene per parameter."
            )
        return {"role": decided.role, "parents": [int(p) for p in decided.parents], "x": x}

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

    # ---- slots left behind (their trial died after the generation had moved on)

    def reissue(
        self, study: Study, trial: FrozenTrial | optuna.Trial, *, generation: int, slot: int
    ) -> Assignment | None:
        """Claim ``slot`` of an older ``generation`` for ``trial``, before it samples anything.

        :meth:`assign` issues the slots of the newest generation only; a slot whose trial died
        after its generation had moved on (a worker killed while its trial was pending) is left
        behind. The run loop that ends a search
        (``optuna_biotune.runtime.generational.run_generations``) evaluates such slots with this:
        same plan as :meth:`assign` gives (a deferred slot is planned from its generation's
        completed slots), same claim protocol (write, read, step back on a conflict). Its result
        does not join the population: the generations after it were already opened. Scans the
        whole study: meant for the end of a search.

        Returns:
            The assignment, or ``None`` when the slot is complete, held by a live trial, used
            up, taken meanwhile by another worker, or ``trial`` already has one.
        """
        if self.assignment(trial._trial_id) is not None:
            return None
        self.use_study_seed(study)
        storage, study_id = study._storage, study._study_id
        trials = storage.get_all_trials(study_id, deepcopy=False)
        record = self.layout.scanned_record(trials, int(generation))
        if record is None or not 0 <= slot < len(record["slots"]):
            return None
        view = self.scan(trials, record, trial.number)
        if slot in view.live or view.dead.get(slot, 0) >= self.slot_attempts:
            return None
        request, plans = self._request(study, trial, record, view, [slot])
        claimed = self.protocol(study).claim(request)
        return None if claimed is None else self._assigned(trial, record, slot, plans[slot])
