"""Seeds and the spread over seeds: one place for every method (no torch).

The authors' fitness seeds are 684, 559, 629 (Colan et al. 2025, Sec. IV: three runs per
evaluation); a count of seeds takes those first, then 1, 2, 3, ... The final retraining uses
seeds 1001, 1002, ..., disjoint from the search's. BioTune's objective and ``final``, EvoPrune
and every baseline report the spread over seeds with :func:`mean_sem`.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna_biotune.errors import UsageError, check_int

#: The authors' fitness seeds, in their order.
AUTHOR_SEEDS: tuple[int, ...] = (684, 559, 629)
#: First seed of the final retraining. The fitness seeds are 684, 559, 629, 1, 2, ...: the
#: test scores of ``final`` share no head initialisation or batch order with the runs that chose
#: the configuration unless a search used over a thousand seeds.
FINAL_SEED_START = 1001
#: Fewest seeds of an evaluation or a final retraining (the objective, the study spec, the CLI).
MIN_SEEDS = 1


def resolve_seeds(seeds: int | Sequence[int]) -> list[int]:
    """``n`` -> the authors' first ``n`` seeds (then 1, 2, .., skipping theirs); a list ->
    itself (non-empty, distinct integers)."""
    if isinstance(seeds, bool):
        raise UsageError(f"`seeds` must be a count or a list of integers, got {seeds!r}.")
    if isinstance(seeds, int):
        check_int("seeds", seeds, MIN_SEEDS)
        extra = [i for i in range(1, seeds + 1) if i not in AUTHOR_SEEDS]
        return [*AUTHOR_SEEDS, *extra][:seeds]
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out):
        raise UsageError(f"`seeds` must be a non-empty list of integers, got {seeds!r}.")
    if len(set(out)) != len(out):
        raise UsageError(f"`seeds` must be distinct, got {out}.")
    return out


def seed_list(n: int) -> tuple[int, ...]:
    """The first ``n`` fitness seeds (:func:`resolve_seeds` of a count)."""
    check_int("seeds", n, MIN_SEEDS)
    return tuple(resolve_seeds(n))


def final_seed_list(n: int) -> tuple[int, ...]:
    """The first ``n`` seeds of the final retraining: 1001, 1002, 1003, ..."""
    check_int("final_seeds", n, MIN_SEEDS)
    return tuple(range(FINAL_SEED_START, FINAL_SEED_START + n))


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean over seeds: how every method reports test spread.

    The standard error is the sample standard deviation (``n - 1`` in the denominator) over
    ``sqrt(n)``; it is 0 for a single value. BioTune's ``final``, EvoPrune's ``final`` and every
    baseline use this one function, so their ``±`` figures mean the same thing.

    Raises:
        UsageError: ``values`` is empty.
    """
    x = [float(v) for v in values]
    n = len(x)
    if n == 0:
        raise UsageError("`values` must hold at least one accuracy; train at least one seed.")
    mean = sum(x) / n
    if n == 1:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in x) / (n - 1)
    return mean, (variance / n) ** 0.5


__all__ = [
    "AUTHOR_SEEDS",
    "FINAL_SEED_START",
    "final_seed_list",
    "mean_sem",
    "resolve_seeds",
    "seed_list",
]
