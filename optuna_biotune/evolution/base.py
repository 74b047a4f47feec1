"""``GenerationalSampler``: the Optuna face of the generational bookkeeping.

One class serves every evolutionary sampler here (BioTune's memetic evolution, EvoPrune's
steady-state GA): a subclass validates its own arguments, builds its
:class:`~optuna_biotune.evolution.strategy.GenerationStrategy` and may restrict which
parameters it evolves (:meth:`GenerationalSampler._check_param`); claiming slots, sampling the
planned genes and forgetting finished trials are the same for all. No torch here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna.samplers import BaseSampler

from optuna_biotune.errors import UsageError, check_int
from optuna_biotune.evolution.generations import Generations
from optuna_biotune.evolution.space import evolvable, normalize

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial, TrialState

    from optuna_biotune.evolution.strategy import GenerationStrategy

__all__ = ["MIN_POPULATION", "GenerationalSampler", "check_population"]

#: Smallest population of either sampler: BioTune's crossover needs two parents and a prototype
#: (Starke et al. 2019, Sec. IV), EvoPrune's steady state two parents and a worst member to
#: replace.
MIN_POPULATION = 3


def check_population(population_size: Any) -> int:
    """The population check both samplers share (an int >= :data:`MIN_POPULATION`)."""
    return check_int(
        "population_size",
        population_size,
        MIN_POPULATION,
        why="two parents and a third member to breed or replace",
    )


class GenerationalSampler(BaseSampler):
    """Base of the samplers whose trials fill the slots of generations kept in the storage.

    Args:
        strategy: Decides each generation's slots (what they propose).
        slot_attempts: How often a slot is issued in all when its trials fail or are pruned.
        seed: Seed of all randomness; ``None`` draws one, stored in the study on first use
            (study system attr ``{ClassName}:seed``) and reused by any later process that also
            passes ``None``. Randomness derives from the seed and each trial's (generation,
            slot), so a resumed sequential run proposes exactly what an uninterrupted one does.
    """

    def __init__(
        self, *, strategy: GenerationStrategy, slot_attempts: int, seed: int | None
    ) -> None:
        check_int("slot_attempts", slot_attempts, 1)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise UsageError(f"`seed` must be a non-negative int or None, got {seed!r}.")
        self._strategy = strategy
        self._generations = Generations(
            namespace=type(self).__name__,
            strategy=strategy,
            seed=seed,
            slot_attempts=slot_attempts,
        )

    @property
    def generations(self) -> Generations:
        """The storage bookkeeping (slots, generations) this sampler uses."""
        return self._generations

    def _check_study(self, study: Study) -> None:
        if len(study.directions) > 1:
            raise ValueError(
                f"{type(self).__name__} supports single-objective studies only; create the "
                "study with one `direction`."
            )

    def _check_param(self, name: str, distribution: BaseDistribution) -> None:
        """Refuse a parameter this sampler cannot evolve (every parameter is fine here)."""

    def reseed_rng(self) -> None:
        """No-op: all randomness derives from ``seed`` and each trial's (generation, slot)."""

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The evolved parameters of the newest generation (``{}`` at first)."""
        self._check_study(study)
        space = self._generations.search_space(study)
        for name, distribution in space.items():
            self._check_param(name, distribution)
        return space

    def sample_relative(
        self,
        study: Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        """Claim the trial's slot and return its planned genes for ``search_space``."""
        self._check_study(study)
        self._generations.assign(study, trial)
        # Genes are drawn in the space's order (sorted names: BioTune's importance genes before
        # its threshold), each seeing those drawn before it, as one-by-one suggestions would.
        values: dict[str, Any] = {}
        drawn: dict[str, float] = {}
        for name, dist in search_space.items():
            values[name] = self._generations.sample(trial, name, dist, drawn=drawn)
            if evolvable(dist):
                drawn[name] = normalize(values[name], dist)
        return values

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The slot's planned gene if any, else a draw seeded by the trial's place."""
        self._check_study(study)
        self._check_param(param_name, param_distribution)
        return self._generations.sample(trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Forget this process's note of the trial; everything lasting is in the storage."""
        self._generations.forget(trial._trial_id)
