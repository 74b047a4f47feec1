"""``BioTuneSampler``: BioTune's memetic evolution (Colan et al. 2025) as an Optuna sampler.

No torch here: ``import optuna_biotune; BioTuneSampler()`` stays light.
"""

from __future__ import annotations

from optuna_biotune.biotune.genome import THRESHOLD_PARAM
from optuna_biotune.biotune.memetic import MemeticStrategy, check_elites, check_exploit_step
from optuna_biotune.errors import UsageError
from optuna_biotune.evolution.base import GenerationalSampler, check_population

__all__ = ["BioTuneSampler"]


class BioTuneSampler(GenerationalSampler):
    """The evolutionary search of BioTune (paper Sec. III; BioIK's memetic evolution).

    Generation 0 draws ``population_size`` individuals uniformly (paper eq. 3). Every later
    generation exploits each of the ``n_elites`` best twice (one random gene ``+/- d``,
    ``d = exploit_step * U(-1, 1)``, clipped, kept only if better: greedy local search) and
    breeds ``population_size - n_elites`` children (rank-weighted parents from a mating pool
    rebuilt from the whole population each generation, which a parent leaves when its child
    beats it; per-gene crossover, extinction-driven mutation, adoption towards a prototype);
    the elites after exploitation and the children form the next population, and a stagnating
    population is wiped out but for its best (BioIK's scheme, adapted to ask/tell as
    :mod:`optuna_biotune.biotune.memetic` describes). With the defaults: 10 + 13
    evaluations per generation, the paper's 140 evaluations in 10 generations. Operators:
    :mod:`optuna_biotune.evolution`.

    Float and int parameters (log and step too) are evolved in a normalised ``[0, 1]`` space;
    categorical parameters, and parameters first seen after a generation opened, are sampled
    independently at random. Works for ``minimize`` and ``maximize`` (single objective).

    **Fitness across folds:** elites keep the fitness of the fold they were scored on; see
    :mod:`optuna_biotune.biotune.memetic` for what that costs (measured).

    **Storage and resume.** All state is in the storage (system attrs namespaced
    ``BioTuneSampler:``; see :mod:`optuna_biotune.evolution.generations`). Randomness derives
    from ``seed`` and the trial's (generation, slot), so a sequential run interrupted after any
    trial and resumed in a new process proposes exactly what an uninterrupted run proposes.

    **Parallel workers.** Each evaluation fills one slot of a generation; no slot is filled
    twice, and a slot whose trial failed, was pruned or was left running by a dead worker
    (failed by Optuna's heartbeat, e.g. ``RDBStorage(url, heartbeat_interval=60)``) is issued
    again, at most ``slot_attempts`` times. When all slots of the newest generation are taken
    and some still run, a worker does not wait: it opens the next generation from the results
    completed so far; the stragglers' results join the population one generation later.

    Example:
        .. code-block:: python

            import optuna
            from optuna_biotune import BioTuneSampler

            def objective(trial):
                x = [trial.suggest_float(f"x{i}", -5, 5) for i in range(7)]
                return sum(v * v for v in x)

            study = optuna.create_study(sampler=BioTuneSampler(seed=0))
            study.optimize(objective, n_trials=140)

    Args:
        population_size: Individuals per generation (paper: 10); at least 3.
        n_elites: Elites exploited each generation (paper: 3); ``0 <= n_elites <
            population_size``.
        exploit_step: Exploitation perturbation ``d_max`` in the normalised space (paper: 0.25).
        threshold_param: Name of the freezing-threshold parameter. The default is
            ``BioTuneObjective``'s, so a BioTune study is recognised without being told: when
            the study evolves a parameter of this name, exploitation moves only the genes above
            it (the trained blocks, paper eq. 4) and no individual without a gene above it (an
            invalid one, which trains nothing) is ever proposed. A study without it is evolved
            with no such rule (exploitation moves any gene); ``None`` turns the rule off.
        wipeout: Re-initialise all but the best when a generation stagnates (BioIK; not in
            the authors' BioTune). Off by default: it never helped in the searches measured
            and once cost a search's top-1 5.4 test points (``benchmarks/results/
            comparison.md``, "Wipeout on and off").
        slot_attempts: How often a slot is issued in all when its trials fail or are pruned.
        seed: Seed of all randomness; ``None`` draws one, which is stored in the study on
            first use, so a resumed process (also with ``seed=None``) continues with it.

    Papers: Colan, Davila, Hasegawa, "Transfer learning optimization based on evolutionary
    selective fine tuning", IEEE Access 2025 (BioTune); Starke et al., "A memetic evolutionary
    algorithm for real-time articulated kinematic motion", IEEE TEC 2019 (BioIK).
    """

    def __init__(
        self,
        *,
        population_size: int = 10,
        n_elites: int = 3,
        exploit_step: float = 0.25,
        threshold_param: str | None = THRESHOLD_PARAM,
        wipeout: bool = False,
        slot_attempts: int = 3,
        seed: int | None = None,
    ) -> None:
        check_population(population_size)
        check_elites(n_elites, population_size)
        check_exploit_step(exploit_step)
        if threshold_param is not None and (
            not isinstance(threshold_param, str) or not threshold_param
        ):
            raise UsageError(
                f"`threshold_param` must be a parameter name or None, got {threshold_param!r}."
            )
        self._memetic = MemeticStrategy(
            population_size=population_size,
            n_elites=n_elites,
            exploit_step=float(exploit_step),
            threshold_param=threshold_param,
            wipeout=bool(wipeout),
        )
        super().__init__(strategy=self._memetic, slot_attempts=slot_attempts, seed=seed)

    @property
    def n_elites(self) -> int:
        """Elites exploited per generation (read-only; :mod:`.racing` sets its bars with it)."""
        return self._memetic.n_elites
