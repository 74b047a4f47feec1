"""EvoPruneSampler from OptunaHub on a toy pruning problem (runs in seconds).

Each trial keeps or prunes 60 pretend neurons, one 0/1 parameter each (``neuron:0:017``), as
EvoPruneDeepTL does for a network's head (Poyatos et al., Neural Networks 2023). The made-up
"validation accuracy" rises with every useful neuron kept (every third one) and drops a little
with every useless one, so the best mask keeps exactly the useful third. No network is
trained: the point is the sampler. The paper's budget, population 30 and 200 evaluations, is
compared with random search.

    python hub/samplers/evoprune/example.py

The package is loaded from this folder; from the registry it is
``optunahub.load_module("samplers/evoprune")``.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import optunahub

N_NEURONS = 60
USEFUL = frozenset(range(0, N_NEURONS, 3))
N_TRIALS = 200

evoprune = optunahub.load_local_module(
    package="samplers/evoprune", registry_root=str(Path(__file__).resolve().parents[2])
)


def objective(trial: optuna.Trial) -> float:
    """A pretend accuracy: share of useful neurons kept, minus 0.02 per useless one kept."""
    keep = [trial.suggest_int(f"neuron:0:{i:03d}", 0, 1) for i in range(N_NEURONS)]
    kept = {i for i, bit in enumerate(keep) if bit}
    return len(kept & USEFUL) / len(USEFUL) - 0.02 * len(kept - USEFUL)


def main() -> optuna.Study:
    """Run EvoPrune and random search for ``N_TRIALS`` each; print both, return EvoPrune's."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=evoprune.EvoPruneSampler(seed=0))
    study.optimize(objective, n_trials=N_TRIALS)
    random = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    random.optimize(objective, n_trials=N_TRIALS)

    best = study.best_trial
    kept = sorted(int(name.rsplit(":", 1)[1]) for name, bit in best.params.items() if bit)
    print(f"EvoPrune: best {best.value:.4f} (trial #{best.number} of {len(study.trials)})")
    print(f"random:   best {random.best_value:.4f} (same budget)")
    print(
        f"  kept {len(kept)} of {N_NEURONS} neurons, {len(USEFUL.intersection(kept))} of the "
        f"{len(USEFUL)} useful ones (best possible: 1.0000 with exactly those {len(USEFUL)})"
    )
    return study


if __name__ == "__main__":
    main()
