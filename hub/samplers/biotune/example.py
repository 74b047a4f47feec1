"""BioTuneSampler from OptunaHub on a toy selective fine-tuning problem (runs in seconds).

Each trial is a BioTune genome for five pretend blocks: one importance gene per block and a
freezing threshold (Colan et al., IEEE Access 2025, eq. 2-5). A block trains when its gene is
above the threshold, at a learning-rate weight ``10 ** (2 * (gene - 0.5))``; the made-up
"validation accuracy" is highest when only ``stage3`` (weight 3) and ``head`` (weight 1)
train. No network is trained: the point is the sampler. The paper's budget of 140 evaluations
(population 10, 3 elites, 10 generations) is compared with random search.

    python hub/samplers/biotune/example.py

The package is loaded from this folder; from the registry it is
``optunahub.load_module("samplers/biotune")``.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import optunahub

BLOCKS = ("stem", "stage1", "stage2", "stage3", "head")
#: The learning-rate weight each block should train at in this toy problem; 0: frozen.
WANTED = {"stem": 0.0, "stage1": 0.0, "stage2": 0.0, "stage3": 3.0, "head": 1.0}
N_TRIALS = 140

biotune = optunahub.load_local_module(
    package="samplers/biotune", registry_root=str(Path(__file__).resolve().parents[2])
)


def objective(trial: optuna.Trial) -> float:
    """A pretend validation accuracy in [0, 1]: 1 for the wanted blocks at the wanted weights."""
    genes = [trial.suggest_float(name, 0.0, 1.0) for name in biotune.gene_names(BLOCKS)]
    mask, weights = biotune.decode(genes[:-1], genes[-1])
    error = 0.0
    for block, trained, weight in zip(BLOCKS, mask, weights, strict=True):
        wanted = WANTED[block]
        if bool(trained) != (wanted > 0):
            error += 1.0  # frozen where it should train, or the other way round
        elif trained:
            error += abs(math.log10(weight / wanted)) / 2  # at most 1: weights span 0.1-10
    return 1.0 - error / len(BLOCKS)


def main() -> optuna.Study:
    """Run BioTune and random search for ``N_TRIALS`` each; print both and return BioTune's."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=biotune.BioTuneSampler(seed=0))
    study.optimize(objective, n_trials=N_TRIALS)
    random = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    random.optimize(objective, n_trials=N_TRIALS)

    best = study.best_trial
    print(f"BioTune: best {best.value:.4f} (trial #{best.number} of {len(study.trials)})")
    print(f"random:  best {random.best_value:.4f} (same budget)")
    genes = [best.params[name] for name in biotune.gene_names(BLOCKS)]
    mask, weights = biotune.decode(genes[:-1], genes[-1])
    for block, trained, weight in zip(BLOCKS, mask, weights, strict=True):
        chosen = f"{weight:.2f}" if trained else "frozen"
        wanted = f"{WANTED[block]:.2f}" if WANTED[block] else "frozen"
        print(f"  {block:<7} {chosen:>7}   (wanted {wanted})")
    return study


if __name__ == "__main__":
    main()
