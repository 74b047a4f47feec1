"""``EvoPruneSampler``: EvoPruneDeepTL's steady-state binary GA as an Optuna sampler (no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from optuna.distributions import CategoricalDistribution, IntDistribution

from optuna_biotune.errors import UsageError
from optuna_biotune.evolution.base import GenerationalSampler, check_population
from optuna_biotune.evoprune import operators as ops
from optuna_biotune.evoprune.strategy import SteadyStateStrategy

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["EvoPruneSampler"]


def _is_bit(distribution: BaseDistribution) -> bool:
    return (
        isinstance(distribution, IntDistribution)
        and distribution.low == 0
        and distribution.high == 1
        and distribution.step == 1
        and not distribution.log
    )


class EvoPruneSampler(GenerationalSampler):
    """The steady-state binary GA of EvoPruneDeepTL (Poyatos et al., Neural Networks 2023).

    Evolves 0/1 int parameters (``trial.suggest_int(name, 0, 1)``, e.g. one per neuron,
    ``neuron:0:017``). Generation 0 draws ``population_size`` random chromosomes, each with a
    share of ones drawn from ``fill`` (paper: 0.3-0.7). Every later generation is one
    steady-state step with two slots: two parents (roulette, or negative assortative mating:
    the most different by Hamming distance of three candidates), crossover with probability 1
    (uniform or one-point), per-bit flip mutation (paper: 0.07); when the next step opens, each
    child replaces the worst member if strictly better, ties toward fewer ones (fewer active
    neurons), so the best always survives. The paper's budget: 30 + 2 x 85 = 200 trials.
    Memoised fitness is the objective's job (:class:`~optuna_biotune.EvoPruneObjective` returns
    the stored value of a chromosome it has seen); categorical parameters are drawn at random.

    **Storage, resume, parallel workers**: the generational bookkeeping shared with
    :class:`~optuna_biotune.BioTuneSampler` (:mod:`optuna_biotune.evolution.generations`), with
    system attrs namespaced ``EvoPruneSampler:``. Randomness derives from ``seed`` and each
    trial's (generation, slot), so a resumed sequential run proposes exactly what an
    uninterrupted one does; a failed or pruned slot is issued again; parallel workers never
    wait (when both slots of a step are taken, the next step opens from the results so far).

    Example:
        .. code-block:: python

            import optuna
            from optuna_biotune import EvoPruneSampler

            def objective(trial):
                bits = [trial.suggest_int(f"bit:{i:02d}", 0, 1) for i in range(40)]
                return sum(b == (i % 3 == 0) for i, b in enumerate(bits))

            study = optuna.create_study(direction="maximize", sampler=EvoPruneSampler(seed=0))
            study.optimize(objective, n_trials=200)

    Args:
        population_size: Chromosomes in the population (paper: 30); at least 3.
        crossover: ``"uniform"`` or ``"one_point"`` (paper: both studied).
        selection: ``"roulette"`` or ``"nam"`` (negative assortative mating).
        mutation: Per-bit flip probability in ``[0, 1]`` (paper: 0.07).
        fill: Initial share of ones: an interval ``(low, high)`` in ``[0, 1]`` (paper:
            ``(0.3, 0.7)``), a number, or ``None`` for fair coin flips.
        slot_attempts: How often a slot is issued in all when its trials fail or are pruned.
        seed: Seed of all randomness; ``None`` draws one.

    Paper: https://doi.org/10.1016/j.neunet.2022.10.011
    """

    def __init__(
        self,
        *,
        population_size: int = 30,
        crossover: str = "uniform",
        selection: str = "roulette",
        mutation: float = ops.DEFAULT_MUTATION,
        fill: tuple[float, float] | float | None = ops.DEFAULT_FILL,
        slot_attempts: int = 3,
        seed: int | None = None,
    ) -> None:
        check_population(population_size)
        if crossover not in ops.CROSSOVERS:
            raise UsageError(
                f"`crossover` must be one of {sorted(ops.CROSSOVERS)}, got {crossover!r}."
            )
        if selection not in ("roulette", "nam"):
            raise UsageError(f"`selection` must be 'roulette' or 'nam', got {selection!r}.")
        if isinstance(mutation, bool) or not isinstance(mutation, int | float):
            raise UsageError(f"`mutation` must be a probability in [0, 1], got {mutation!r}.")
        if not 0.0 <= float(mutation) <= 1.0:
            raise UsageError(f"`mutation` must be a probability in [0, 1], got {mutation}.")
        fill = ops.check_fill(fill)
        super().__init__(
            strategy=SteadyStateStrategy(
                population_size=population_size,
                crossover=crossover,
                selection=selection,
                mutation=float(mutation),
                fill=fill,
            ),
            slot_attempts=slot_attempts,
            seed=seed,
        )

    def _check_param(self, name: str, distribution: BaseDistribution) -> None:
        if not (_is_bit(distribution) or isinstance(distribution, CategoricalDistribution)):
            raise UsageError(
                f"EvoPruneSampler evolves 0/1 parameters only, but `{name}` is {distribution}: "
                "use trial.suggest_int(name, 0, 1), or BioTuneSampler for numeric genes."
            )
