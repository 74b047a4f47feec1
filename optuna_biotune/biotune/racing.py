"""Compute cuts of a BioTune search that keep its decisions: racing and memoisation.

An evaluation of BioTune's search (Colan et al. 2025, Sec. III-C: the mean over seeds of the
best validation accuracy, each seed trained to its early stop) shapes the search only through
comparisons with the population it was bred from (BioIK's memetic evolution, Starke et al.
2019, Sec. IV, as :mod:`optuna_biotune.biotune.memetic` runs it):

- an elite's neighbour (role ``exploit``) replaces the elite only if it beats the elite's
  fitness (greedy local search); otherwise it leaves no trace in the population;
- a child (role ``child``, or ``random`` once the mating pool is empty) removes a parent from
  the mating pool only if it beats that parent, becomes an elite only if it beats the
  population's ``n_elites``-th best, and a wipeout is decided by whether any child beat
  its parents;
- a fresh individual (role ``initial``: generation 0, or after a wipeout) becomes an elite
  only if it ranks among the ``n_elites`` best.

So an evaluation whose fitness ends below its bar (:func:`entry_bar`) changes none of these
decisions, whatever its exact value; what changes with a cut is only its rank among the
non-elites (a cut evaluation ranks below every full one, :mod:`.fidelity`), which weights
parent selection and sets the extinction factors (BioIK Sec. IV) of the next generation, and
whether it can enter ``final``'s top-k (it cannot: only full-fidelity values do).

:class:`Race` stops an evaluation, between seeds (seed racing) or after any epoch (a pruner
that knows the population), once an *optimistic estimate* of its fitness is below the bar:

- the running seed's best can still rise as far as the study's complete training curves that
  stood near it (within ``NEAR``) at the same epoch and trained on rose afterwards
  (:class:`Margins`, learned per evaluation from the curves of the evaluations before it:
  every seed and fold of the population and its ancestors; with such curves from fewer than
  ``MIN_NEAR`` evaluations, or at the first epoch, up to 1);
- each seed not yet trained can still score the best seed so far plus the largest excess of a
  later seed over the best of the earlier ones seen in the study's evaluations.

**The estimate is not a bound.** Both margins are sample maxima over the study's uncut
evaluations (``Race.bound`` and the ``raced`` attr's ``bound`` keep the old name). Only the
``1 - best`` fallbacks bound anything. A seed that rises more than every near curve did, or a
later seed that exceeds the earlier ones by more than any seen, can be cut although it would
have beaten its bar. If the new evaluation is exchangeable with the ``m`` it learned from, the
chance that it exceeds their maximum is at most ``1 / (m + 1)``: up to 1/4 for the running
seed (``MIN_NEAR`` = 3 evaluations) and 1/3 for a seed not yet trained (2 evaluations), at each
check. What a wrong cut costs: the decision the evaluation would have changed (an elite not
replaced, a parent kept in the mating pool, a child not made an elite) is lost; the cut value
itself decides nothing, because a value below full fidelity
(:mod:`~optuna_biotune.biotune.fidelity`) ranks below every full one, beats no value, sets no
extinction factor and never enters ``final``'s top-k. ``tests/biotune/test_racing.py`` shows such a
cut. Bounding honestly (each open seed up to accuracy 1) would cut only evaluations whose
finished seeds are far below the bar; the multi-fidelity search that will replace racing is
where a sounder rule belongs.

A cut evaluation completes (it is not pruned: the sampler would issue its slot again) with the
mean of what it measured, below the estimate and so below the bar, and the user attr
``fidelity`` says it is partial. :func:`find_same` finds an earlier full-fidelity evaluation of
the same configuration (same mask and weights as stored, same fold and seeds), whose result is
reused: training it again would repeat the same computation.

``BioTuneObjective(exact_protocol=True)`` turns both off (the paper's protocol, every
evaluation trained in full).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from optuna_biotune.biotune.fidelity import is_full
from optuna_biotune.evolution.layout import Layout, trial_claim

#: Trial user attr of a cut evaluation: ``{"seed", "epoch", "bar", "bound", "against"}``
#: (1-based seed and epoch of the cut; 0 epochs: cut before the seed trained).
RACED_ATTR = "raced"
#: Trial user attr of an evaluation whose result was reused: the trial number it came from.
MEMO_ATTR = "memoised"
#: Complete training curves needed before anything is cut.
MIN_CURVES = 6
#: Curves within this distance of a running seed at the same epoch say how far it can rise.
NEAR = 0.05
#: Curves of fewer evaluations near a running seed: it may still rise to 1.
MIN_NEAR = 3


class Cut(Exception):
    """Raised from an epoch report when the evaluation can no longer reach its bar."""


@dataclass(frozen=True)
class Bar:
    """The fitness an evaluation must beat to change a decision of the search.

    Attributes:
        value: The fitness (maximised) to beat.
        against: What it is: ``"elite #n"`` or ``"population worst #n"``.
    """

    value: float
    against: str


@dataclass(frozen=True)
class Margins:
    """How far an evaluation can still rise, learned from the study's complete evaluations.

    Attributes:
        running: Per complete training curve, the number of its trial, the epochs it ran and
            its best validation metric after each epoch ``1..max_epochs`` (after its early stop,
            its final best).
        seed: ``seed[k]``: the largest excess of a later seed's result over the best of the
            first ``k`` seeds of the same evaluation (``seed[0]`` unused).
    """

    running: tuple[tuple[int, int, tuple[float, ...]], ...]
    seed: tuple[float, ...]

    @property
    def curves(self) -> int:
        """Number of curves learned from."""
        return len(self.running)

    def rise(self, best: float, epoch: int) -> float:
        """How far a seed whose best is ``best`` after ``epoch`` (1-based) can still rise: the
        largest later rise of the curves that were within ``NEAR`` of it at that epoch and
        still training after it, when they come from at least ``MIN_NEAR`` evaluations (else
        ``1 - best``: the seeds of one configuration rise alike, so one hopeless configuration
        must not speak for a slow start; a curve that had stopped says nothing of one that
        still improves); the first epoch never cuts (every curve starts low)."""
        e = epoch - 1
        near: dict[int, float] = {}
        for number, ran, r in self.running:
            if e > 0 and ran > epoch and abs(r[e] - best) <= NEAR:
                near[number] = max(near.get(number, 0.0), r[-1] - r[e])
        if len(near) < MIN_NEAR:
            return 1.0 - best
        return max(near.values())


def _n_elites(study: optuna.Study) -> int | None:
    n = getattr(study.sampler, "n_elites", None)  # BioTuneSampler.n_elites
    return n if isinstance(n, int) and n > 0 else None


def _siblings(study: optuna.Study, layout: Layout, generation: int, before: int) -> list[float]:
    """Values of the complete fresh individuals (role ``initial``) of ``generation`` numbered
    below ``before``, at full fidelity."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        claim = layout.claim(t.system_attrs)
        if (
            t.number < before
            and isinstance(claim, dict)
            and claim.get("generation") == generation
            and claim.get("role") == "initial"
            and t.value is not None
            and is_full(t.user_attrs)
        ):
            out.append(float(t.value))
    return out


def slot_role(trial: optuna.Trial | optuna.trial.FrozenTrial) -> str | None:
    """The role of a trial's slot in a generational sampler's plan (``initial``, ``exploit``,
    ``child``, ``random``), or ``None`` for a trial no such sampler planned."""
    claim = trial_claim(trial)
    return None if claim is None else str(claim[1].get("role"))


def entry_bar(trial: optuna.Trial | optuna.trial.FrozenTrial, study: optuna.Study) -> Bar | None:
    """The bar of a trial of ``BioTuneSampler`` in ``study`` (``None``: never cut it).

    Read from the sampler's record of the trial's generation (the population it was bred
    from, fitness as stored) and the sampler's ``n_elites``; per role (module docstring):

    - ``exploit``: the elite's fitness (its neighbour replaces it only if better);
    - ``child``: the lower of its parents' fitness and the population's ``n_elites``-th best
      (below both it removes no parent from the mating pool, wins no wipeout vote and
      becomes no elite);
    - ``random``: the population's ``n_elites``-th best;
    - ``initial`` (generation 0, the fresh individuals after a wipeout and those refilling a
      population short of members, :mod:`.planning`): the
      ``n_elites``-th best of the population so far and of the generation's complete fresh
      individuals, once there are ``n_elites`` of them (below it, it becomes no elite).

    The ``n_elites``-th best is taken over the values at full fidelity: a partial member ranks
    below every full one (:func:`.fidelity.rank_key`), so with fewer than ``n_elites`` full
    values any full evaluation becomes an elite and nothing is cut.

    ``None`` for other samplers, minimised studies and ``n_elites = 0``.
    """
    if study.direction != StudyDirection.MAXIMIZE:
        return None
    claim = trial_claim(trial)
    n_elites = _n_elites(study)
    if claim is None or n_elites is None:
        return None
    layout, slot = Layout(claim[0]), claim[1]
    role, generation = slot.get("role"), int(slot["generation"])
    record = layout.record(study, generation)
    state = record.get("state") if record else None
    if not isinstance(state, dict):
        state = {}
    members = state.get("members", [])
    # Stored fitness is minimised: the negated value of a maximised study.
    values = {int(n): -float(state["ind"][str(n)][0]) for n in members}
    partial = set(state.get("partial", ()))
    full = [v for n, v in values.items() if n not in partial]
    if role == "initial":
        known = sorted([*full, *_siblings(study, layout, generation, trial.number)])
        if len(known) < n_elites:
            return None
        return Bar(known[-n_elites], f"{n_elites}th best so far")
    if len(full) < n_elites:
        return None
    elite = sorted(full)[-n_elites]
    parents = [int(p) for p in slot.get("parents") or [] if int(p) in values]
    if role == "exploit":
        return Bar(values[parents[0]], f"elite #{parents[0]}") if parents else None
    if role == "child" and parents:
        low = min(parents[:2], key=lambda n: values[n])
        if values[low] < elite:
            return Bar(values[low], f"parent #{low}")
        return Bar(elite, f"{n_elites}th best")
    if role in ("child", "random"):
        return Bar(elite, f"{n_elites}th best")
    return None


def _full(t: optuna.trial.FrozenTrial, n_seeds: int) -> bool:
    """Trained here at full fidelity with ``n_seeds`` seeds (a memoised one trained nothing)."""
    accs = t.user_attrs.get("seed_accuracies")
    return (
        isinstance(accs, list)
        and len(accs) == n_seeds
        and is_full(t.user_attrs)
        and not t.user_attrs.get(MEMO_ATTR)
    )


def margins(
    trials: Sequence[optuna.trial.FrozenTrial], *, n_seeds: int, max_epochs: int
) -> Margins | None:
    """:class:`Margins` from complete, uncut evaluations (``None``: fewer than ``MIN_CURVES``
    curves, or no evaluation with two seeds when there are several)."""
    running: list[tuple[int, int, tuple[float, ...]]] = []
    seed = [0.0] * n_seeds
    seeded = 0
    for t in trials:
        if t.state != TrialState.COMPLETE or not _full(t, n_seeds):
            continue
        steps = t.intermediate_values
        for k in range(n_seeds):
            span = range(k * max_epochs + 1, (k + 1) * max_epochs + 1)
            curve = [steps[s] for s in span if s in steps]
            if not curve:
                continue
            best, out = float("-inf"), []
            for e in range(max_epochs):
                best = max(best, curve[min(e, len(curve) - 1)])
                out.append(best)
            running.append((t.number, len(curve), tuple(out)))
        accs = [float(a) for a in t.user_attrs["seed_accuracies"]]
        if n_seeds > 1:
            seeded += 1
            for k in range(1, n_seeds):
                seed[k] = max(seed[k], max(accs[k:]) - max(accs[:k]))
    if len(running) < MIN_CURVES or (n_seeds > 1 and seeded < 2):
        return None
    return Margins(running=tuple(running), seed=tuple(seed))


class Race:
    """Decides, after each epoch and between seeds, whether an evaluation can still matter.

    Args:
        bar: What the evaluation must beat (:func:`entry_bar`).
        margins: How far it can still rise (:func:`margins`).
        n_seeds: Seeds of a full evaluation.
    """

    def __init__(self, *, bar: Bar, margins: Margins, n_seeds: int) -> None:
        self.bar = bar
        self.margins = margins
        self.n_seeds = n_seeds
        self.bound = float("inf")

    @classmethod
    def for_trial(
        cls, trial: optuna.Trial, *, bar: Bar | None, n_seeds: int, max_epochs: int
    ) -> Race | None:
        """The race of a running trial whose bar is ``bar`` (:func:`entry_bar`), or ``None``
        when it must be trained in full."""
        if bar is None:
            return None
        trials = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        m = margins(trials, n_seeds=n_seeds, max_epochs=max_epochs)
        return None if m is None else cls(bar=bar, margins=m, n_seeds=n_seeds)

    def optimistic(self, done: Sequence[float], best: float | None, epoch: int) -> float:
        """An optimistic estimate of the fitness (not a bound: module docstring): finished
        seeds ``done``, the running seed's best ``best`` after ``epoch`` (``None``: between
        seeds), the rest untrained."""
        known = [float(a) for a in done]
        if best is not None:
            known.append(min(1.0, best + self.margins.rise(best, epoch)))
        rest = self.n_seeds - len(known)
        if not known:
            return 1.0
        fresh = min(1.0, max(known) + (self.margins.seed[len(known)] if rest else 0.0))
        return (sum(known) + rest * fresh) / self.n_seeds

    def cut(self, done: Sequence[float], best: float | None = None, epoch: int = 0) -> bool:
        """Whether the optimistic estimate is below the bar (then stop the evaluation)."""
        self.bound = self.optimistic(done, best, epoch)
        return self.bound < self.bar.value


def find_same(
    study: optuna.Study,
    *,
    mask: Sequence[bool],
    weights: Sequence[float],
    fold: int,
    n_seeds: int,
) -> optuna.trial.FrozenTrial | None:
    """An earlier complete evaluation of the same configuration on ``fold`` (mask and weights
    equal as stored) at full fidelity with the same number of seeds; ``None`` when there is
    none."""
    mask, weights = [bool(m) for m in mask], [float(w) for w in weights]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if (
            a.get("fold") == fold
            and a.get("mask") == mask
            and a.get("lr_weights") == weights
            and isinstance(a.get("seed_accuracies"), list)
            and len(a["seed_accuracies"]) == n_seeds
            and is_full(a)
        ):
            return t
    return None


__all__ = [
    "MEMO_ATTR",
    "RACED_ATTR",
    "Bar",
    "Cut",
    "Margins",
    "Race",
    "entry_bar",
    "find_same",
    "margins",
    "slot_role",
]
