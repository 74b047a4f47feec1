"""GA machinery both samplers share (no torch): the base sampler and the storage bookkeeping.

:mod:`~optuna_biotune.evolution.base` holds ``GenerationalSampler`` (the one Optuna sampler
class both samplers subclass), :mod:`~optuna_biotune.evolution.ledger` the generation records
in the storage (reading, the scan of recent trials, opening a generation) and
:mod:`~optuna_biotune.evolution.generations` the claims on them (slots, reissue, sampling). A
method's own operators and strategy live in its folder (:mod:`optuna_biotune.biotune.memetic`,
:mod:`optuna_biotune.evoprune.strategy`).
"""

from __future__ import annotations

from typing import Any

import optuna

#: Suffix of the trial system attr that holds the trial's generation (namespaced by sampler).
GENERATION_SUFFIX = ":generation"
#: Suffix of the trial system attr holding a slot claim ``{"generation", "slot", ...}``.
SLOT_SUFFIX = ":slot"


def _system_attrs(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    if isinstance(trial, optuna.trial.FrozenTrial):
        return trial.system_attrs
    if isinstance(trial, optuna.Trial):
        # The samplers claim a trial's slot (and so its generation) in `sample_relative`,
        # which Optuna runs lazily at the first suggest: run it now if it has not run yet.
        _ = trial.relative_params
        return trial.storage.get_trial_system_attrs(trial._trial_id)
    return {}


def trial_generation(trial: optuna.trial.BaseTrial) -> int:
    """Return the generation a trial belongs to, as its evolutionary sampler recorded it.

    Works for a running :class:`optuna.Trial` (inside an objective, even before its first
    ``suggest_*``: the sampler is made to claim the trial's slot first) and a
    :class:`~optuna.trial.FrozenTrial`. Reads the slot claim ``{ns}:slot`` of this package's
    samplers (or a ``{ns}:generation`` int, as Optuna's GA samplers write). Trials of other
    samplers (or enqueued ones) are in generation 0.
    """
    for key, value in _system_attrs(trial).items():
        if key.endswith(SLOT_SUFFIX) and isinstance(value, dict) and "generation" in value:
            return int(value["generation"])
        if key.endswith(GENERATION_SUFFIX) and isinstance(value, int | float):
            return int(value)
    return 0


__all__ = ["GENERATION_SUFFIX", "SLOT_SUFFIX", "trial_generation"]
