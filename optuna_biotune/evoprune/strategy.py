"""EvoPruneDeepTL's steady-state binary GA as a :class:`GenerationStrategy` (no torch).

Poyatos et al., "EvoPruneDeepTL", Neural Networks 2023 (https://doi.org/10.1016/j.neunet.2022.10.011):

* generation 0: ``population_size`` random chromosomes, each keeping a share of neurons drawn
  from the fill interval (paper: 0.3-0.7);
* every later generation is one steady-state step: two parents (roulette or negative
  assortative mating), crossover with probability 1 (uniform or one-point), bit-flip mutation
  of each child (paper: 0.07), so **two child slots per generation**;
* when a generation opens, the previous step's children are inserted one after the other: a
  child replaces the worst member if it is strictly better (ties toward fewer active neurons),
  so the best member always survives (elitism). 30 + 2 x 85 = 200 evaluations is the paper's
  budget for one layer.

The shared bookkeeping (:mod:`optuna_biotune.evolution.generations`) claims the slots, reissues
failed ones and stores this strategy's state: the population as hex-packed chromosomes with
their fitness and active-neuron counts. Genes are 0/1; the bookkeeping's normalised ``x`` of a
0/1 parameter is exactly the bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from optuna_biotune.evolution.strategy import (
    ROLE_INITIAL,
    GenerationStrategy,
    Individual,
    Opening,
    SlotPlan,
)
from optuna_biotune.evoprune import operators as ops

__all__ = ["ROLE_CHILD", "SteadyStateStrategy"]

ROLE_CHILD = "child"
#: Children bred per steady-state step (the paper's two).
CHILDREN_PER_STEP = 2


class SteadyStateStrategy(GenerationStrategy):
    """The paper's steady-state GA over 0/1 genes.

    Args:
        population_size: Chromosomes in the population (paper: 30).
        crossover: ``"uniform"`` or ``"one_point"``.
        selection: ``"roulette"`` or ``"nam"`` (negative assortative mating).
        mutation: Per-bit flip probability (paper: 0.07).
        fill: Initial share of active neurons: an interval ``(low, high)``, a number, or
            ``None`` for fair coin flips.
    """

    def __init__(
        self,
        *,
        population_size: int,
        crossover: str,
        selection: str,
        mutation: float,
        fill: tuple[float, float] | float | None,
    ) -> None:
        self.population_size = population_size
        self.crossover = ops.CROSSOVERS[crossover]
        self.selection = selection
        self.mutation = mutation
        self.fill = fill

    def initial_x(self, slot_rng: np.random.Generator, gene_rng: np.random.Generator) -> float:
        """A bit of an initial chromosome: 1 with the slot's fill share (drawn once per slot)."""
        share = ops.fill_share(slot_rng, self.fill)
        return 1.0 if gene_rng.random() < share else 0.0

    def open(
        self,
        *,
        generation: int,
        names: Sequence[str],
        state: Mapping[str, Any] | None,
        results: Sequence[Individual],
        rng: Callable[[int], np.random.Generator],
    ) -> Opening:
        """Fold the finished children into the population and plan the next step's slots."""
        n_bits = len(names)
        population: list[dict[str, Any]] = list((state or {}).get("population", []))
        if population and int((state or {}).get("n_bits", -1)) != n_bits:
            population = []  # the evolved parameters changed: start over from the results
        for ind in results:
            bits = (np.asarray(ind.x) >= 0.5).astype(np.int8)
            member: dict[str, Any] = {
                "number": ind.number,
                "bits": ops.pack(bits) if n_bits else "",
                "fitness": float(ind.fitness),
                "active": int(bits.sum()),
            }
            if len(population) < self.population_size:
                population.append(member)
                continue
            # Scores are "higher is better": the bookkeeping's fitness is minimised.
            out = ops.replace_worst(
                [-m["fitness"] for m in population],
                [m["active"] for m in population],
                child_score=-member["fitness"],
                child_active=member["active"],
            )
            if out is not None:
                population[out] = member
        order = ops.rank_order(
            [-m["fitness"] for m in population], [m["active"] for m in population]
        )
        population = [population[int(i)] for i in order]
        new_state = {"n_bits": n_bits, "population": population}
        if generation == 0:
            return Opening(new_state, [SlotPlan(ROLE_INITIAL)] * self.population_size)
        if n_bits == 0 or len(population) < 2:
            # Nothing to breed from yet (e.g. parallel workers outran generation 0).
            return Opening(new_state, [SlotPlan(ROLE_INITIAL)] * CHILDREN_PER_STEP)
        step_rng = rng(-1)
        chromosomes = np.stack([ops.unpack(m["bits"], n_bits=n_bits) for m in population])
        scores = [-m["fitness"] for m in population]
        i, j = ops.select_parents(step_rng, chromosomes, scores, method=self.selection)
        children = self.crossover(step_rng, chromosomes[i], chromosomes[j])
        parents = (int(population[i]["number"]), int(population[j]["number"]))
        slots = []
        for child in children:
            mutated = ops.bit_flip(step_rng, child, probability=self.mutation)
            slots.append(SlotPlan(ROLE_CHILD, parents, tuple(float(b) for b in mutated)))
        return Opening(new_state, slots)
