"""What a trial's slot claim and end say to the bookkeeping (no torch): whether a claim is
final, and whether a failed trial spent one of its slot's attempts.

A claim written by write-then-read (``Generations.assign`` on a plain storage) is final once
the read after it found no rival and the trial sampled its parameters; before that it may be
withdrawn (``slot: -1``) and its trial may claim again, possibly in a later generation, which
is why the window of a generation's scans keeps such trials (``GenerationLedger.open_next``).
A claim made in one transaction (``"atomic": true``, ``WorkerStorage.claim_slot``) is final at
once.

A slot is issued ``slot_attempts`` times in all; a trial FAILED or PRUNED by its evaluation is
an attempt. A trial failed by an interruption carries :data:`INTERRUPTED_ATTR` and is not: a
signal (SIGTERM, Ctrl-C), a lost storage, a dead worker's trial failed as stale (written by
the CLI's worker storage, ``optuna_biotune.runtime.workers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial, TrialState

__all__ = ["DEAD", "INTERRUPTED_ATTR", "settled", "spent_attempt"]

#: The states of a trial whose claim no longer holds its slot.
DEAD = (TrialState.FAIL, TrialState.PRUNED)
#: Trial system attr of a trial failed by an interruption, not by its evaluation (value: why,
#: e.g. ``"SIGTERM"``, ``"worker lost"``): such a FAIL spends none of its slot's attempts.
INTERRUPTED_ATTR = "biotune:interrupted"


def settled(trial: FrozenTrial, claim: Mapping[str, Any]) -> bool:
    """Whether ``trial``'s live ``claim`` is final: made in one transaction (``atomic``), or
    confirmed by the read after its write (the trial has parameters)."""
    return bool(claim.get("atomic")) or bool(trial.params)


def spent_attempt(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is a failed or pruned attempt at its slot (not an interrupted one)."""
    return trial.state in DEAD and INTERRUPTED_ATTR not in trial.system_attrs
