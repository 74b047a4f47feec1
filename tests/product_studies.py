"""Small real studies for the product-layer tests (report, dashboard, CLI).

The objective here is cheap (no training) but writes exactly the trial user attrs of
``BioTuneObjective`` (CONTRIBUTING.md) and a generation system attr the way an evolutionary
sampler does, so reports, ``final`` and the dashboard read it like a real BioTune study.
"""

from __future__ import annotations

import optuna

from optuna_biotune.biotune.genome import decode, gene_names

BLOCKS = ["stem", "stage1", "stage2", "stage3", "head"]
#: Parameters per block of the pretend model (for the trainable share).
BLOCK_PARAMS = [1_000, 4_000, 8_000, 16_000, 500]
PER_GENERATION = 5


def cheap_objective(trial: optuna.Trial) -> float:
    """Validation "accuracy" that rewards training the head and the last stage."""
    genes = [trial.suggest_float(name, 0.0, 1.0) for name in gene_names(BLOCKS)]
    mask, weights = decode(genes[:-1], genes[-1])
    generation = trial.number // PER_GENERATION
    trial.storage.set_trial_system_attr(trial._trial_id, "CheapSampler:generation", generation)
    trainable = int(sum(p for p, m in zip(BLOCK_PARAMS, mask, strict=True) if m))
    accuracy = 0.5 + 0.3 * float(mask[-1]) + 0.15 * float(mask[-2]) - 0.05 * float(mask[0])
    accuracy -= 0.01 * abs(float(weights[-1]) - 3.0) if mask[-1] else 0.0
    trial.set_user_attr("blocks", BLOCKS)
    trial.set_user_attr("mask", [bool(m) for m in mask])
    trial.set_user_attr("lr_weights", [float(w) for w in weights])
    trial.set_user_attr("trainable_params", trainable)
    trial.set_user_attr("total_params", sum(BLOCK_PARAMS))
    trial.set_user_attr("trainable_share", trainable / sum(BLOCK_PARAMS))
    trial.set_user_attr("seed_accuracies", [accuracy - 0.01, accuracy + 0.01])
    trial.set_user_attr("epochs", [3, 4])
    trial.set_user_attr("seconds", 0.01)
    trial.set_user_attr("fold", generation % 2)
    trial.set_user_attr("generation", generation)
    return accuracy


def make_study(storage: str, name: str, *, n_trials: int = 15, seed: int = 0) -> optuna.Study:
    """A maximised study of ``n_trials`` cheap trials in ``n_trials // 5`` generations."""
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    study.set_user_attr(
        "biotune:spec", {"dataset": "cheap", "model": "pretend", "seeds": [684, 559]}
    )
    study.optimize(cheap_objective, n_trials=n_trials)
    return study


class CheapRetrainer:
    """A ``retrain_and_test`` that counts its calls (for ``final``'s no-recompute contract)."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[bool, ...], tuple[int, ...]]] = []

    def retrain_and_test(self, mask, weights, *, seeds):
        self.calls.append((tuple(bool(m) for m in mask), tuple(seeds)))
        base = 0.6 + 0.3 * float(mask[-1]) + 0.05 * sum(bool(m) for m in mask) / len(mask)
        return [base + 0.001 * (s % 7) for s in seeds]


def earlier_first_seeds(
    study: optuna.Study, names: list[str], *, n: int | None = None, value: float = 0.0
) -> None:
    """Add ``n`` (default ``ETA - 1``) earlier default-protocol evaluations to ``study``, each a
    first seed that trained to its end at ``value`` and was not promoted (gene 0.5 everywhere,
    threshold 0.6). The default search promotes a record first seed only after that many
    (:meth:`optuna_biotune.biotune.rungs.Rungs.promote`), so a test evaluation after them that
    beats ``value`` trains every seed."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from optuna_biotune.biotune import rungs

    for _ in range(rungs.ETA - 1 if n is None else n):
        study.add_trial(
            create_trial(
                params={name: (0.6 if name == "threshold" else 0.5) for name in names},
                distributions={name: FloatDistribution(0, 1) for name in names},
                value=value,
                user_attrs={
                    "seed_accuracies": [value],
                    "fidelity": {"seeds": 1, "of": 2, "stops": ["patience"], "full": False},
                },
            )
        )
