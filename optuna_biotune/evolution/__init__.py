"""GA machinery both samplers share (no torch): the base sampler and the storage bookkeeping.

:mod:`~optuna_biotune.evolution.base` holds ``GenerationalSampler`` (the one Optuna sampler
class both samplers subclass), :mod:`~optuna_biotune.evolution.layout` the generation keys in
the storage (their one reader and writer: records, claims, the slots' state),
:mod:`~optuna_biotune.evolution.ledger` the generation records (reading, the scan of recent
trials, opening a generation) and
:mod:`~optuna_biotune.evolution.generations` the claims on them (slots, reissue, sampling),
through one of :mod:`~optuna_biotune.evolution.claiming`'s two claim protocols. A
method's own operators and strategy live in its folder (:mod:`optuna_biotune.biotune.memetic`,
:mod:`optuna_biotune.evoprune.strategy`).
"""

from optuna_biotune.evolution.layout import trial_generation

__all__ = ["trial_generation"]
