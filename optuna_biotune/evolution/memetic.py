"""BioTune's generation scheme (BioIK's memetic evolution) as a :class:`GenerationStrategy`.

Per generation, with the population sorted best first (Colan et al. 2025, Sec. III; Starke et
al. 2019; ``METHOD.md``):

* generation 0: ``population_size`` individuals with every gene ``U[0, 1]`` (paper eq. 3);
* later generations: ``2 * n_elites`` exploitation slots (each elite's ``+d`` and ``-d``
  neighbours on one random gene, :func:`~.operators.exploit_neighbours`) and
  ``population_size - n_elites`` children (rank-weighted parents from a mating pool,
  :func:`~.operators.crossover`, :func:`~.operators.mutate` with the parents' extinction,
  :func:`~.operators.adopt` towards a prototype); the paper's 3 + 3 + 7 = 13 evaluations.

When a generation opens, the previous one's results are folded in: each elite is replaced by
its better neighbour only if that beats it (greedy local search); the new population is the
elites after exploitation plus the children, best first (too few: the previous non-elites
fill in; too many late results: the best ``population_size`` stay); a parent leaves the mating
pool when its child beats it and the pool is refilled from the population when fewer than
three remain; extinction factors are recomputed (from the first generation on). **Wipeout**:
when a full generation improved nothing (the best did not improve, no elite's neighbour helped,
no child beat both its parents), all but the best are re-initialised (the next generation
draws ``population_size - 1`` fresh individuals).

**Fitness across folds.** BioTune's objective scores generation ``g`` on data fold
``g mod n_folds``, so fitness values of different generations come from different folds. Elites
are *not* re-scored: they keep the fitness of the evaluation that created them, and the
neighbours of an elite (scored on the current fold) must beat that value to replace it. This
keeps the paper's budget of 13 evaluations per generation; the folds are stratified samples of
the same data, so the comparison is noisy but unbiased.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from optuna_biotune.evolution import operators as ops
from optuna_biotune.evolution.generations import (
    ROLE_INITIAL,
    GenerationStrategy,
    Individual,
    Opening,
    SlotPlan,
)

__all__ = ["ROLE_CHILD", "ROLE_EXPLOIT", "MemeticStrategy"]

ROLE_EXPLOIT = "exploit"
ROLE_CHILD = "child"


class _Ind:
    __slots__ = ("f", "number", "x")

    def __init__(self, number: int, f: float, x: np.ndarray) -> None:
        self.number, self.f, self.x = number, f, x


class MemeticStrategy(GenerationStrategy):
    """The slots of BioTune's generations; see the module docstring for the scheme.

    Args:
        population_size: Individuals per generation (paper: 10), >= 3.
        n_elites: Elites exploited each generation (paper: 3), ``0 <= n_elites < population``.
        exploit_step: The exploitation perturbation ``d_max`` (paper: 0.25).
        threshold_param: Name of the freezing-threshold gene; exploitation then moves only
            genes above it (the trained blocks). ``None``: any gene.
        wipeout: Re-initialise all but the best on stagnation (BioIK).
    """

    def __init__(
        self,
        *,
        population_size: int,
        n_elites: int,
        exploit_step: float,
        threshold_param: str | None,
        wipeout: bool,
    ) -> None:
        self.population_size = population_size
        self.n_elites = n_elites
        self.exploit_step = exploit_step
        self.threshold_param = threshold_param
        self.wipeout = wipeout

    @property
    def slots_per_generation(self) -> int:
        """Evaluations of a regular generation: ``2 * n_elites + population - n_elites``."""
        return 2 * self.n_elites + self.population_size - self.n_elites

    # ---- state (de)serialisation: one table of individuals, members and pool by number

    @staticmethod
    def _load(state: Mapping[str, Any] | None) -> tuple[list[_Ind], list[_Ind], bool]:
        if not state:
            return [], [], False
        table = {
            int(k): _Ind(int(k), float(v[0]), np.asarray(v[1])) for k, v in state["ind"].items()
        }
        members = [table[int(n)] for n in state["members"]]
        pool = [table[int(n)] for n in state["pool"]]
        return members, pool, bool(state.get("wiped", False))

    @staticmethod
    def _dump(members: list[_Ind], pool: list[_Ind], wiped: bool) -> dict[str, Any]:
        table = {
            str(i.number): [i.f, [round(float(v), 10) for v in i.x]] for i in (*members, *pool)
        }
        return {
            "ind": table,
            "members": [i.number for i in members],
            "pool": [i.number for i in pool],
            "wiped": wiped,
        }

    # ---- the generation

    def open(
        self,
        *,
        generation: int,
        names: Sequence[str],
        state: Mapping[str, Any] | None,
        results: Sequence[Individual],
        rng: Callable[[int], np.random.Generator],
    ) -> Opening:
        """Fold ``results`` into the population and plan the next generation's slots."""
        size, n_elites = self.population_size, self.n_elites
        prev, pool, _ = self._load(state)
        known = {i.number for i in prev}
        elites = prev[:n_elites]

        # Greedy exploitation: an elite is replaced by a neighbour only if it is better.
        taken: set[int] = set()
        kept: list[_Ind] = []
        any_exploit_helped = False
        exploited = False
        for elite in elites:
            neighbours = [
                r for r in results if r.role == ROLE_EXPLOIT and r.parents[:1] == (elite.number,)
            ]
            taken.update(r.number for r in neighbours)
            better = min(neighbours, key=lambda r: r.fitness, default=None)
            exploited = exploited or bool(neighbours)
            if better is not None and better.fitness < elite.f:
                kept.append(_Ind(better.number, better.fitness, better.x))
                any_exploit_helped = True
            else:
                kept.append(elite)
        newcomers = [
            _Ind(r.number, r.fitness, r.x)
            for r in results
            if r.number not in taken and r.number not in known
        ]
        population = sorted(kept + newcomers, key=lambda i: i.f)[:size]
        if len(population) < size:  # failed slots: the previous non-elites fill in
            inside = {i.number for i in population}
            spare = [i for i in prev[n_elites:] if i.number not in inside]
            population = sorted(population + spare[: size - len(population)], key=lambda i: i.f)

        # Mating pool: a parent leaves when its child beats it.
        pool_f = {i.number: i.f for i in pool}
        beaten = {
            p
            for r in results
            if r.role == ROLE_CHILD
            for p in r.parents[:2]
            if p in pool_f and r.fitness < pool_f[p]
        }
        pool = [i for i in pool if i.number not in beaten]
        child_won = any(
            r.role == ROLE_CHILD
            and all(p in pool_f and r.fitness < pool_f[p] for p in r.parents[:2])
            for r in results
        )

        # Wipeout (BioIK): a full generation that improved nothing (the best did not improve,
        # no elite's single-gene neighbour helped, no child beat both its parents) -> keep the
        # best only and draw the rest afresh.
        wiped = False
        if (
            self.wipeout
            and exploited
            and len(prev) == size
            and population
            and not population[0].f < prev[0].f
            and not any_exploit_helped
            and not child_won
        ):
            population, wiped = population[:1], True
        if wiped or len(pool) < min(3, len(population)):
            pool = list(population)
        pool.sort(key=lambda i: i.f)

        if len(population) < size or not names:
            slots = [SlotPlan(role=ROLE_INITIAL) for _ in range(size - len(population))]
            if not slots:  # nothing evolvable is known yet: draw a fresh population
                slots = [SlotPlan(role=ROLE_INITIAL) for _ in range(size)]
            return Opening(state=self._dump(population, pool, wiped), slots=slots)

        slots = self._exploit_slots(population[:n_elites], names, rng)
        slots += self._child_slots(pool, len(slots), size - n_elites, rng)
        return Opening(state=self._dump(population, pool, wiped), slots=slots)

    def _exploit_slots(
        self,
        elites: Sequence[_Ind],
        names: Sequence[str],
        rng: Callable[[int], np.random.Generator],
    ) -> list[SlotPlan]:
        slots: list[SlotPlan] = []
        t = names.index(self.threshold_param) if self.threshold_param in names else None
        for k, elite in enumerate(elites):
            if t is None:
                candidates = None
            else:
                # Trained genes: those above the threshold gene (paper eq. 4); the threshold
                # itself is not exploited. None trained: any importance gene.
                above = [j for j in range(len(names)) if j != t and elite.x[j] > elite.x[t]]
                candidates = np.asarray(above or [j for j in range(len(names)) if j != t] or [t])
            plus, minus, _ = ops.exploit_neighbours(
                rng(2 * k), elite.x, self.exploit_step, candidates
            )
            for x in (plus, minus):
                slots.append(SlotPlan(role=ROLE_EXPLOIT, parents=(elite.number,), x=tuple(x)))
        return slots

    @staticmethod
    def _child_slots(
        pool: Sequence[_Ind],
        first: int,
        count: int,
        rng: Callable[[int], np.random.Generator],
    ) -> list[SlotPlan]:
        ext = ops.extinction_factors(np.asarray([i.f for i in pool]))
        n = len(pool)
        slots: list[SlotPlan] = []
        for c in range(count):
            r = rng(first + c)
            a = ops.select_rank(r, n)
            b = a
            while n > 1 and b == a:
                b = ops.select_rank(r, n)
            proto = ops.select_rank(r, n)
            while n > 2 and proto in (a, b):
                proto = ops.select_rank(r, n)
            p1, p2, pr = pool[a], pool[b], pool[proto]
            child = ops.crossover(r, p1.x, p2.x)
            child = ops.mutate(r, child, 0.5 * (ext[a] + ext[b]))
            child = ops.adopt(r, child, p1.x, p2.x, pr.x)
            slots.append(
                SlotPlan(
                    role=ROLE_CHILD,
                    parents=(p1.number, p2.number, pr.number),
                    x=tuple(float(v) for v in child),
                )
            )
        return slots
