"""How a slot claim and a generation's opening reach the storage: the two claim protocols.

- :class:`Atomic`, on a storage that implements :class:`AtomicClaims` (the CLI's
  ``WorkerStorage`` on PostgreSQL or SQLite): a claim and an opening are one transaction each,
  serialised with the others on the same generation; a claim is never withdrawn. The claim's
  value for each candidate slot (its plan: role and parents) is decided before the
  transaction and passed in as data: the storage never calls into the method's strategy.
- :class:`WriteThenRead`, on any other storage: the claim is written, the slots held are read
  back (one query on a storage that implements :class:`LiveClaims`, else the study's trials),
  and of two trials that claimed the same slot at least one sees the other; whoever sees
  another live claim steps back (``slot: -1``) and tries the other slots its read found free.
  An opening writes its record, then the head if nobody opened the generation meanwhile
  (concurrent openings are settled by ``GenerationLedger.first_opening``).

:func:`protocol_for` chooses one for a storage; ``Generations`` chooses once per storage.
No torch.
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from optuna.storages._cached_storage import _CachedStorage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.study import Study

__all__ = [
    "Atomic",
    "AtomicClaims",
    "ClaimProtocol",
    "LiveClaims",
    "OpenRequest",
    "Opened",
    "Request",
    "WriteThenRead",
    "protocol_for",
]

#: What an opening did: ``"head"``: opened, this trial's record is the head; ``"record"``: the
#: record is written, read the head again (another worker may have opened it too); ``None``:
#: nothing written (another worker opened it first).
Opened = Literal["head", "record"] | None


@runtime_checkable
class AtomicClaims(Protocol):
    """A storage that claims a slot and opens a generation in one transaction each
    (``optuna_biotune.runtime.queries.SamplerQueries``)."""

    @property
    def atomic_claims(self) -> bool:
        """Whether the two transactions are offered (they rely on the database's locks)."""

    def claim_slot(
        self,
        study_id: int,
        trial_id: int,
        key: str,
        *,
        generation: int,
        claims: Mapping[int, Mapping[str, Any]],
        min_number: int,
        holders: dict[int, int] | None = None,
        attempts: int | None = None,
    ) -> int | None:
        """Write ``claims[slot]`` under ``key`` for the first slot of ``claims`` (in order) that
        no other live trial numbered ``min_number`` or more holds; the slot, or ``None``."""

    def open_generation(
        self,
        study_id: int,
        trial_id: int,
        *,
        generation: int,
        attrs: Mapping[str, Any],
        head_key: str,
        study_attrs: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write the record ``attrs`` and name it the head, only while the head names the
        generation before; whether it did."""


@runtime_checkable
class LiveClaims(Protocol):
    """A storage that reads the live claims of a study in one query."""

    def live_claims(self, study_id: int, key: str, min_number: int) -> list[tuple[int, Any]]:
        """``(number, value)`` of ``key`` on the live trials numbered ``min_number`` or more."""


def backend(storage: BaseStorage) -> BaseStorage:
    """The storage behind Optuna's cache (``optuna.create_study`` wraps an RDB storage)."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage


@dataclass
class Request:
    """A trial's claim on one of ``candidates``, slots of one generation.

    Attributes:
        study, trial_id, trial_number: The trial.
        key: The trial system attr of claims (``Layout.slot_key``).
        generation, window: The generation, and the lowest trial number that may hold a claim.
        candidates: Slots free at the last read, the one to try first first.
        claim_for: The claim's value for a slot (the slot's plan, decided by the strategy).
        held_by_scan: The slots other trials hold, read from the study's trials.
        attempts: How often a slot is issued in all.
        conflicts: Claims withdrawn so far (kept across the caller's reads).
        holders: Filled by :class:`Atomic` with slot -> trial number of every live claim its
            transaction saw.
    """

    study: Study
    trial_id: int
    trial_number: int
    key: str
    generation: int
    window: int
    candidates: list[int]
    claim_for: Callable[[int], dict[str, Any]]
    held_by_scan: Callable[[], set[int]]
    attempts: int
    conflicts: int = 0
    holders: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenRequest:
    """A generation's opening to write.

    Attributes:
        study, trial_id: The study, and the opener whose system attrs hold the record.
        generation: The generation opened.
        attrs: Its record as trial system attrs (``Layout.record_attrs``).
        head_key: The study system attr of the head (``Layout.head_key``).
        seed_attrs: The seed generation 0 was opened with, stored with it where the protocol
            can (``None``: none to store).
        head_generation: Reads the head's generation (-1 before generation 0 opens).
    """

    study: Study
    trial_id: int
    generation: int
    attrs: Mapping[str, Any]
    head_key: str
    seed_attrs: Mapping[str, Any] | None
    head_generation: Callable[[], int]


class ClaimProtocol(abc.ABC):
    """How claims and openings are written (module docstring)."""

    #: Whether a claim is final once written and an opening is exclusive.
    atomic: bool = False

    @abc.abstractmethod
    def claim(self, request: Request) -> int | None:
        """Claim one of ``request.candidates``; the slot, or ``None`` (read again)."""

    @abc.abstractmethod
    def open(self, request: OpenRequest) -> Opened:
        """Write the request's record and name it the head (:data:`Opened`)."""


class Atomic(ClaimProtocol):
    """One transaction per claim and per opening (module docstring)."""

    atomic = True

    def __init__(self, storage: AtomicClaims) -> None:
        self.storage = storage

    def claim(self, request: Request) -> int | None:
        claims = {s: {**request.claim_for(s), "atomic": True} for s in request.candidates}
        return self.storage.claim_slot(
            request.study._study_id,
            request.trial_id,
            request.key,
            min_number=request.window,
            generation=request.generation,
            claims=claims,
            attempts=request.attempts,  # the storage counts them too: the read may be old
            holders=request.holders,
        )

    def open(self, request: OpenRequest) -> Opened:
        opened = self.storage.open_generation(
            request.study._study_id,
            request.trial_id,
            head_key=request.head_key,
            generation=request.generation,
            attrs=request.attrs,
            study_attrs=request.seed_attrs,
        )
        return "head" if opened else None


class WriteThenRead(ClaimProtocol):
    """Write, then read; step back on a conflict (module docstring)."""

    def __init__(self, storage: BaseStorage) -> None:
        self.storage = storage
        reader = backend(storage)
        self.live = reader if isinstance(reader, LiveClaims) else None

    def held(self, request: Request) -> set[int]:
        """The slots of the request's generation other trials hold with a live claim, read
        fresh (one query with :class:`LiveClaims`, else the study's trials)."""
        if self.live is None:
            return request.held_by_scan()
        rows = self.live.live_claims(request.study._study_id, request.key, request.window)
        return {
            int(claim.get("slot", -1))
            for number, claim in rows
            if number != request.trial_number
            and isinstance(claim, dict)
            and int(claim.get("generation", -1)) == request.generation
            and int(claim.get("slot", -1)) >= 0
        }

    def claim(self, request: Request) -> int | None:
        free = list(request.candidates)
        slot = free[0]
        while True:  # after a conflict, the other slots this read found free, then read again
            if request.conflicts > 0:
                slot = free[random.randrange(len(free))]
            claim = request.claim_for(slot)
            self.storage.set_trial_system_attr(request.trial_id, request.key, claim)
            held = self.held(request)
            if slot not in held:
                return slot
            self.storage.set_trial_system_attr(
                request.trial_id, request.key, {**claim, "slot": -1}
            )
            request.conflicts += 1
            time.sleep(random.uniform(0.0, 0.01 * min(request.conflicts, 10)))
            free = [s for s in free if s not in held]  # those still free at that read
            if not free:
                return None

    def open(self, request: OpenRequest) -> Opened:
        current, generation = request.head_generation(), request.generation
        if current >= generation:  # another worker opened it meanwhile: theirs is used
            return None
        for key, value in request.attrs.items():  # the chunks first, the record's header last
            self.storage.set_trial_system_attr(request.trial_id, key, value)
        if current == generation - 1:  # nobody had opened it before the write
            head = {"generation": generation, "trial": request.trial_id}
            self.storage.set_study_system_attr(request.study._study_id, request.head_key, head)
        return "record"


def protocol_for(storage: BaseStorage) -> ClaimProtocol:
    """:class:`Atomic` where the storage implements :class:`AtomicClaims` and offers it,
    else :class:`WriteThenRead`."""
    atomic = backend(storage)
    if isinstance(atomic, AtomicClaims) and atomic.atomic_claims:
        return Atomic(atomic)
    return WriteThenRead(storage)
