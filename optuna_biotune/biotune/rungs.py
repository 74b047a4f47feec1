"""The default search's multi-fidelity schedule: rungs on the first seed, then promotion.

BioTune's fitness (Colan et al. 2025, Sec. III-C) trains every seed of the spec to its early
stop. The default search (``BioTuneObjective(exact_protocol=False)``) spends that full
fidelity only on candidates that can still matter, and stores every other value at the
fidelity it was measured at (the user attr ``fidelity``, :mod:`.fidelity`):

1. **Rungs on the first seed** (asynchronous successive halving, Li et al. 2020, "A System for
   Massively Parallel Hyperparameter Tuning", Sec. 3: no evaluation waits for others). After
   epoch ``r`` of :data:`RUNGS`, the first seed goes on only if its best validation accuracy
   so far is at least the ``1 - 1/ETA`` quantile of what the study's earlier first seeds had
   reached at the same epoch (each trial's reported steps ``1..max_epochs``); while fewer than
   ``ETA`` earlier first seeds reached the rung, it always goes on. A first seed stopped at a
   rung leaves a partial value, its best so far.
2. **Promotion to the remaining seeds** once the first seed trained to its end. A candidate
   bred from the population (roles ``exploit``, ``child``, ``random``) trains the other seeds
   only if its first seed reaches its bar (:func:`.racing.entry_bar`: it would replace its
   elite, beat its parents, or rank among the ``n_elites`` best at full fidelity). A fresh
   individual (role ``initial``), a bred candidate without a bar (its generation's population
   has fewer full members than elites) and a trial of a sampler that keeps no population are
   promoted only when their first seed is at least every earlier first seed that trained to
   its end, and at least ``ETA - 1`` earlier first seeds trained to their end (a record among
   fewer is no evidence: the study's first evaluation was always promoted before, and in the
   three mnist5k searches its two extra seeds cost 0.9 / 2.6 / 1.0 full-data FT runs, of 9.9 /
   11.7 / 10.2). Everything else stays a one-seed value, below full fidelity. The promoted
   seeds are still raced (:class:`.racing.Race`). A one-seed value can so stand above every
   full value (or no full value exist); ``final`` re-scores such values before it ranks
   (:func:`.report.rescore_candidates`).

   Why fresh individuals need a record: their bar, the ``n_elites``-th best so far, is low
   while generation 0 fills (with it, six of the ten fresh individuals of a live digits-low
   search were promoted). Why a tie goes on: a tied neighbour of an elite left at one seed
   cost a digits search's top-1 (98.42 test against 99.63). Why a bred candidate without a
   bar needs a record too: promoting it always cost more FT runs for the same top-1s.
   The measurements: ``benchmarks/results/design_decisions.md``.

So the population's elites and ``final``'s top-k are full-fidelity evaluations, and every other
member is ranked below them by its partial value (:func:`.fidelity.rank_key`).

The rung epochs and ``ETA`` were chosen on the exact protocol's stored curves (three
digits-low searches replayed by ``benchmarks/fidelity_replay.py`` with this module's own
promotion rule): rungs (2, 6) kept every search's top-1 configuration for at most 7.9 full-data
FT runs of search where the exact protocol spent 21.1 or more; earlier or more rungs lost one
(the figures: ``benchmarks/results/design_decisions.md``).

No torch: reads the study only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import optuna
from optuna.trial import TrialState

from optuna_biotune.biotune.fidelity import COMPLETE_STOPS, FIDELITY_ATTR
from optuna_biotune.biotune.racing import Bar

#: Epochs of the first seed after which it must be in the top ``1/ETA`` to go on.
RUNGS = (2, 6)
#: Reduction factor of the rungs: the share ``1/ETA`` of first seeds that go on at each.
ETA = 3
#: Roles of candidates bred from the population (:func:`.racing.entry_bar` gives their bars).
BRED = ("exploit", "child", "random")
#: A first seed this close to its bar counts as reaching it.
TIE = 1e-9

__all__ = ["BRED", "ETA", "RUNGS", "TIE", "Rungs"]


def _first_seed(t: optuna.trial.FrozenTrial, max_epochs: int) -> dict[int, float]:
    """Best-so-far validation accuracy of ``t``'s first seed after each epoch it reported."""
    out: dict[int, float] = {}
    best = float("-inf")
    for epoch in range(1, max_epochs + 1):
        value = t.intermediate_values.get(epoch)
        if value is None:
            break
        best = max(best, float(value))
        out[epoch] = best
    return out


def _completed_first(t: optuna.trial.FrozenTrial) -> float | None:
    """The first seed's value of a complete evaluation whose first seed trained to its end."""
    if t.state != TrialState.COMPLETE:
        return None
    record = t.user_attrs.get(FIDELITY_ATTR)
    accs = t.user_attrs.get("seed_accuracies")
    if not isinstance(record, Mapping) or not isinstance(accs, list) or not accs:
        return None
    stops = record.get("stops") or []
    if not stops or stops[0] not in COMPLETE_STOPS:
        return None
    return float(accs[0])


class Rungs:
    """The rungs and the promotion of one evaluation (module docstring).

    Args:
        at_rung: Per rung epoch, the best-so-far values the study's earlier first seeds had
            reached at that epoch.
        completed: The first-seed values of earlier evaluations whose first seed trained to
            its end.
    """

    def __init__(self, *, at_rung: Mapping[int, list[float]], completed: list[float]) -> None:
        self.at_rung = {int(r): list(v) for r, v in at_rung.items()}
        self.completed = list(completed)
        self.bar: Bar = Bar(float("nan"), "")
        self.bound = float("nan")

    @classmethod
    def for_trial(cls, trial: optuna.Trial, *, max_epochs: int) -> Rungs:
        """The rungs of a running trial, from the study's other trials (no rung at or after
        the epoch limit ``max_epochs``: nothing is left to save there)."""
        at_rung: dict[int, list[float]] = {r: [] for r in RUNGS if r < max_epochs}
        completed: list[float] = []
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        for t in trial.study.get_trials(deepcopy=False, states=states):
            if t.number == trial.number:
                continue
            curve = _first_seed(t, max_epochs)
            for r, seen in at_rung.items():
                if r in curve:
                    seen.append(curve[r])
            value = _completed_first(t)
            if value is not None:
                completed.append(value)
        return cls(at_rung=at_rung, completed=completed)

    def cut(self, epoch: int, best: float) -> bool:
        """Whether the first seed, at ``best`` after ``epoch``, stops at this rung."""
        seen = self.at_rung.get(epoch)
        if seen is None or len(seen) < ETA:
            return False
        need = float(np.quantile(seen, 1.0 - 1.0 / ETA))
        self.bar = Bar(need, f"top 1/{ETA} of {len(seen)} first seeds at epoch {epoch}")
        self.bound = float(best)
        return best < need

    def promote(self, first: float, bar: Bar | None, *, role: str | None = None) -> bool:
        """Whether an evaluation (slot ``role``) whose first seed scored ``first`` trains its
        other seeds (a tie with its bar goes on: validation accuracies are multiples of one
        image's share, and a mean of equal seeds can differ from them in the last bit)."""
        self.bound = float(first)
        if role in BRED and bar is not None:
            self.bar = bar
            return first >= bar.value - TIE
        best = max(self.completed, default=float("-inf"))
        if len(self.completed) < ETA - 1:
            self.bar = Bar(float("inf"), f"fewer than {ETA - 1} completed first seeds before it")
            return False
        self.bar = Bar(best, "best completed first seed so far")
        return first >= best - TIE
