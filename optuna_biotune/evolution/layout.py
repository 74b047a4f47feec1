"""The generation keys in the Optuna storage: their one reader and writer (no torch).

Every key an evolutionary sampler keeps is named, read and written here (:class:`Layout`);
the samplers' bookkeeping (:mod:`~optuna_biotune.evolution.ledger`,
:mod:`~optuna_biotune.evolution.generations`), the end of a search
(``optuna_biotune.runtime.generational``) and BioTune's racing (``optuna_biotune.biotune.
racing``) ask it for what they need: a generation's record, every record, a trial's slot
claim, the slots' state.

Storage layout (``ns`` is the sampler's class name, e.g. ``BioTuneSampler``):

* study system attr ``{ns}:seed``: the seed of all randomness, stored on first use;
* study system attr ``{ns}:head``: ``{"generation": g, "trial": id}``, the newest generation and
  the trial whose system attrs hold its record (one small row: reading it costs the same at any
  study size);
* trial system attr ``{ns}:record:<g>`` (on the trial that opened generation ``g``; chunked
  above 2045 characters as ``{ns}:record:<g>:<i>``, :mod:`~optuna_biotune.evolution.records`):
  ``generation``, ``names`` (evolved parameters), ``space`` (their distributions), ``state``
  (the strategy's population), ``slots`` (the proposals), ``pending`` (trials of older
  generations still running, merged when they finish), ``window`` (the lowest trial number
  that can still matter) and ``opened_by`` (the opener's trial number);
* trial system attr ``{ns}:slot`` = ``{"generation", "slot", "role", "parents"}`` (and
  ``"atomic": true`` when claimed in one transaction): the claim, the only write per trial
  (``slot`` is ``-1`` for a claim withdrawn after a conflict).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optuna_biotune.evolution.claims import spent_attempt
from optuna_biotune.evolution.records import read_chunked, write_chunked

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["Layout", "SlotStates", "generation_records", "trial_claim", "trial_generation"]

#: Suffix of the trial system attr holding a slot claim ``{"generation", "slot", ...}``.
_SLOT = ":slot"
#: Suffix of the trial system attr holding a trial's generation as Optuna's GA samplers write it.
_GENERATION = ":generation"


@dataclass(frozen=True)
class SlotStates:
    """The slots of every generation of one sampler, as the whole study says (a scan).

    Attributes:
        records: The generation records, oldest first.
        complete: ``(generation, slot)`` with a COMPLETE trial.
        holders: ``(generation, slot)`` -> the RUNNING or WAITING trial holding it.
        dead: ``(generation, slot)`` -> how many of its trials spent an attempt (FAIL or
            PRUNED by their evaluation, not interrupted).
    """

    records: list[dict[str, Any]]
    complete: frozenset[tuple[int, int]]
    holders: dict[tuple[int, int], FrozenTrial]
    dead: dict[tuple[int, int], int]


class Layout:
    """The generation keys of one sampler (one namespace) and how each is read and written.

    Args:
        namespace: Prefix of every key, the sampler's class name (no ``:``).
    """

    def __init__(self, namespace: str) -> None:
        if not namespace or ":" in namespace:
            raise ValueError(
                f"`namespace` must be a non-empty name without ':', got {namespace!r}."
            )
        self.namespace = namespace
        self.head_key = f"{namespace}:head"
        self.seed_key = f"{namespace}:seed"
        self.slot_key = namespace + _SLOT
        self._record_prefix = f"{namespace}:record:"

    # ---- one value

    def record_key(self, generation: int) -> str:
        """The trial system attr holding ``generation``'s record: ``{ns}:record:<g>``.

        One key per generation, so a trial that opens a generation, finds its slots already
        taken and opens the next one too keeps both records.
        """
        return f"{self._record_prefix}{int(generation)}"

    def head(self, study_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
        """The head ``{"generation", "trial"}`` in the study's system attrs (``None``: none)."""
        head = study_attrs.get(self.head_key)
        return head if isinstance(head, dict) else None

    def seed(self, study_attrs: Mapping[str, Any]) -> int | None:
        """The seed stored in the study's system attrs (``None``: none yet)."""
        seed = study_attrs.get(self.seed_key)
        return None if seed is None else int(seed)

    def claim(self, trial_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
        """The slot claim in a trial's system attrs, withdrawn ones included."""
        claim = trial_attrs.get(self.slot_key)
        return claim if isinstance(claim, dict) else None

    def live_claim(self, trial_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
        """The claim unless it is absent or withdrawn (``slot`` -1)."""
        claim = self.claim(trial_attrs)
        return claim if claim is not None and int(claim.get("slot", -1)) >= 0 else None

    def holds_record(self, trial_attrs: Mapping[str, Any], generation: int) -> bool:
        """Whether a trial's system attrs hold a record of ``generation`` (unread)."""
        return self.record_key(generation) in trial_attrs

    def record_in(self, trial_attrs: Mapping[str, Any], generation: int) -> dict[str, Any] | None:
        """``generation``'s record in a trial's system attrs (``None``: none there)."""
        record = read_chunked(trial_attrs, self.record_key(generation))
        if isinstance(record, dict) and int(record.get("generation", -1)) == int(generation):
            return record
        return None

    def write_record(
        self, set_attr: Callable[[str, Any], None], generation: int, record: Any
    ) -> None:
        """Write ``generation``'s record through ``set_attr(key, value)`` (chunked if long)."""
        write_chunked(set_attr, self.record_key(generation), record)

    def record_attrs(self, generation: int, record: Any) -> dict[str, Any]:
        """The trial system attrs that hold ``generation``'s record (for one transaction)."""
        attrs: dict[str, Any] = {}
        self.write_record(attrs.__setitem__, generation, record)
        return attrs

    # ---- the whole study

    def scanned_record(
        self, trials: Sequence[FrozenTrial], generation: int
    ) -> dict[str, Any] | None:
        """``generation``'s record, found by scanning ``trials`` (of concurrent openings, the
        lowest trial number's); ``None`` when no trial holds it."""
        best: tuple[int, dict[str, Any]] | None = None
        for t in trials:
            if self.holds_record(t.system_attrs, generation) and (
                best is None or t.number < best[0]
            ):
                record = self.record_in(t.system_attrs, generation)
                if record is not None:
                    best = (t.number, record)
        return None if best is None else best[1]

    def records(self, study: Study) -> list[dict[str, Any]]:
        """Every generation record in ``study``, oldest first (scans the whole study: for the
        end of a search and reports; the samplers never call it)."""
        records: dict[int, dict[str, Any]] = {}
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            for key in t.system_attrs:
                tail = (
                    key[len(self._record_prefix) :] if key.startswith(self._record_prefix) else ""
                )
                if not tail.isdigit():  # "<g>" is a record, "<g>:<i>" one of its chunks
                    continue
                # Of concurrent openings of a generation, the lowest trial number's is the one.
                records.setdefault(int(tail), read_chunked(t.system_attrs, key))
        return [records[g] for g in sorted(records)]

    def record(self, study: Study, generation: int) -> dict[str, Any] | None:
        """``generation``'s record: through the head when it is the newest (two small reads),
        else by scanning the study."""
        storage = study._storage
        head = self.head(storage.get_study_system_attrs(study._study_id))
        if head is not None and int(head.get("generation", -1)) == int(generation):
            record = self.record_in(storage.get_trial_system_attrs(int(head["trial"])), generation)
            if record is not None:
                return record
        return next(
            (r for r in self.records(study) if int(r.get("generation", -1)) == int(generation)),
            None,
        )

    def slot_states(self, study: Study) -> SlotStates:
        """The slots' state of every generation (scans the whole study)."""
        complete: set[tuple[int, int]] = set()
        dead: dict[tuple[int, int], int] = {}
        holders: dict[tuple[int, int], FrozenTrial] = {}
        for t in study.get_trials(deepcopy=False):
            claim = self.live_claim(t.system_attrs)
            if claim is None:
                continue
            key = (int(claim["generation"]), int(claim["slot"]))
            if t.state == TrialState.COMPLETE:
                complete.add(key)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                holders[key] = t
            elif spent_attempt(t):  # an interrupted trial spent no attempt
                dead[key] = dead.get(key, 0) + 1
        return SlotStates(self.records(study), frozenset(complete), holders, dead)


def generation_records(study: Study, namespace: str) -> list[dict[str, Any]]:
    """All generation records of ``namespace`` in ``study``, oldest first
    (:meth:`Layout.records`)."""
    return Layout(namespace).records(study)


def _claim_in(attrs: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for key, value in attrs.items():
        if key.endswith(_SLOT) and isinstance(value, dict) and "generation" in value:
            return key[: -len(_SLOT)], value
    return None


def trial_claim(trial: optuna.trial.BaseTrial) -> tuple[str, dict[str, Any]] | None:
    """The sampler namespace and slot claim of a running or stored trial (``None``: no
    generational sampler here claimed a slot for it)."""
    if isinstance(trial, FrozenTrial):
        return _claim_in(trial.system_attrs)
    if isinstance(trial, optuna.Trial):
        return _claim_in(trial.storage.get_trial_system_attrs(trial._trial_id))
    return None


def trial_generation(trial: optuna.trial.BaseTrial) -> int:
    """Return the generation a trial belongs to, as its evolutionary sampler recorded it.

    Works for a running :class:`optuna.Trial` (inside an objective, even before its first
    ``suggest_*``: the sampler is made to claim the trial's slot first) and a
    :class:`~optuna.trial.FrozenTrial`. Reads the slot claim ``{ns}:slot`` of this package's
    samplers (or a ``{ns}:generation`` int, as Optuna's GA samplers write). Trials of other
    samplers (or enqueued ones) are in generation 0.
    """
    if isinstance(trial, optuna.Trial):
        # The samplers claim a trial's slot (and so its generation) in `sample_relative`,
        # which Optuna runs lazily at the first suggest: run it now if it has not run yet.
        _ = trial.relative_params
        attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
    else:
        attrs = trial.system_attrs if isinstance(trial, FrozenTrial) else {}
    claim = _claim_in(attrs)
    if claim is not None:
        return int(claim[1]["generation"])
    for key, value in attrs.items():
        if key.endswith(_GENERATION) and isinstance(value, int | float):
            return int(value)
    return 0
