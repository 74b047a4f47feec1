from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from product_studies import earlier_first_seeds

from optuna_biotune import BioTuneObjective
from optuna_biotune.biotune.genome import gene_names
from optuna_biotune.engine.data import ArrayDataset
from optuna_biotune.engine.seeds import AUTHOR_SEEDS, resolve_seeds
from optuna_biotune.errors import UsageError

CONTRACT_ATTRS = {
    "blocks",
    "mask",
    "lr_weights",
    "trainable_params",
    "total_params",
    "trainable_share",
    "seed_accuracies",
    "epochs",
    "seconds",
    "fold",
    "generation",
}
LITE0_BLOCKS = [
    "stem",
    *(f"blocks.{i}" for i in range(7)),
    "conv_head",
    "classifier",
]


@pytest.fixture(scope="module")
def objective() -> BioTuneObjective:
    return BioTuneObjective(
        seeds=[684, 559],
        data_fraction=0.1,
        max_epochs=2,
        patience=1,
        image_size=16,
        device="cpu",
    )


def _genes(values: list[float], threshold: float) -> dict[str, float]:
    return dict(zip(gene_names(LITE0_BLOCKS), [*values, threshold], strict=True))


def _run(
    objective: BioTuneObjective,
    params: dict[str, float],
    *,
    generation: int = 0,
    **study_kwargs: Any,
) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="maximize", **study_kwargs)
    earlier_first_seeds(study, objective.param_names)  # so that a first seed above 0 goes on
    study.enqueue_trial(params)

    def with_generation(trial: optuna.Trial) -> float:
        trial.storage.set_trial_system_attr(trial._trial_id, "TestSampler:generation", generation)
        return objective(trial)

    study.optimize(with_generation, n_trials=1)
    return study.trials[-1]


def test_names_follow_the_blocks(objective: BioTuneObjective) -> None:
    assert objective.blocks == LITE0_BLOCKS
    assert objective.param_names == gene_names(LITE0_BLOCKS)
    assert objective.tuner.head_index == len(LITE0_BLOCKS) - 1


def test_trial_records_the_contract_attrs(objective: BioTuneObjective, sqlite_url: str) -> None:
    # stem..blocks.3 frozen (genes 0.2 <= 0.5), the rest trains at W = 10 ** (2 * (g - 0.5)).
    values = [0.2] * 5 + [0.6, 0.7, 0.8, 0.9, 1.0]
    trial = _run(objective, _genes(values, 0.5), generation=3, storage=sqlite_url)
    attrs = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert set(attrs) >= CONTRACT_ATTRS
    assert attrs["blocks"] == LITE0_BLOCKS
    assert attrs["mask"] == [False] * 5 + [True] * 5
    expected = [0.0] * 5 + [10 ** (2 * (g - 0.5)) for g in values[5:]]
    assert attrs["lr_weights"] == pytest.approx(expected)
    assert attrs["generation"] == 3 and attrs["fold"] == 3 % 10
    assert len(attrs["seed_accuracies"]) == 2 and len(attrs["epochs"]) == 2
    assert trial.value == pytest.approx(np.mean(attrs["seed_accuracies"]))
    assert 0 < attrs["trainable_params"] < attrs["total_params"]
    assert attrs["trainable_share"] == pytest.approx(
        attrs["trainable_params"] / attrs["total_params"]
    )
    assert attrs["head_forced"] is False
    # Each epoch of each seed was reported to the trial (steps k * max_epochs + epoch).
    assert set(trial.intermediate_values) <= {1, 2, 3, 4} and 1 in trial.intermediate_values


def test_frozen_head_gene_still_trains_the_head(objective: BioTuneObjective) -> None:
    values = [0.9] + [0.1] * 8 + [0.3]  # stem trains; the head's gene is below the threshold
    trial = _run(objective, _genes(values, 0.5))
    assert trial.user_attrs["mask"] == [True] + [False] * 8 + [True]
    assert trial.user_attrs["head_forced"] is True
    assert trial.user_attrs["lr_weights"][-1] == pytest.approx(10 ** (2 * (0.3 - 0.5)))


def test_invalid_individual_gets_the_worst_fitness_untrained(objective: BioTuneObjective) -> None:
    trial = _run(objective, _genes([0.4] * 10, 0.5))
    assert trial.value == 0.0 and trial.user_attrs["invalid"] is True
    assert trial.user_attrs["epochs"] == [] and trial.user_attrs["trainable_params"] == 0
    assert not trial.intermediate_values


def test_pruner_stops_a_trial(
    objective: BioTuneObjective, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objective, "prune", True)  # pruning is asked for (off by default)
    trial = _run(
        objective,
        _genes([0.2] * 9 + [0.9], 0.5),
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),  # nothing reaches it
    )
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]


def test_nan_loss_fails_the_trial_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss that turns NaN (a learning rate far too high for the data) fails the trial."""
    loss_forward = torch.nn.CrossEntropyLoss.forward
    monkeypatch.setattr(
        torch.nn.CrossEntropyLoss,
        "forward",
        lambda self, x, y: loss_forward(self, x, y) * float("nan"),
    )
    objective = BioTuneObjective(
        seeds=1, data_fraction=0.1, max_epochs=1, image_size=16, device="cpu"
    )
    trial = _run(objective, _genes([0.9] * 10, 0.5))
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "`base_lr`" in trial.user_attrs["fail_reason"]


def test_retrain_and_test_scores_the_test_split(objective: BioTuneObjective) -> None:
    n = len(LITE0_BLOCKS)
    scores = objective.retrain_and_test([False] * (n - 1) + [True], [1.0] * n, seeds=[684])
    assert len(scores) == 1 and 0.15 < scores[0] <= 1.0  # beats chance (0.1) on 359 images
    with pytest.raises(UsageError, match="`mask`"):
        objective.retrain_and_test([False] * n, [1.0] * n, seeds=[684])


def test_spec_round_trips_through_json(objective: BioTuneObjective) -> None:
    spec = json.loads(json.dumps(objective.spec()))
    again = BioTuneObjective.from_spec(spec)
    assert again.spec() == objective.spec()
    assert spec["seeds"] == [684, 559] and spec["image_size"] == 16
    with pytest.raises(UsageError, match="unknown keys"):
        BioTuneObjective.from_spec({**spec, "epochs": 3})


def test_arrays_have_no_storable_spec() -> None:
    images = np.random.default_rng(0).random((30, 8, 8))
    objective = BioTuneObjective(dataset=ArrayDataset(images, np.repeat([0, 1, 2], 10)))
    with pytest.raises(UsageError, match="ImageFolder"):
        objective.spec()


def test_seeds() -> None:
    assert resolve_seeds(3) == list(AUTHOR_SEEDS)
    assert resolve_seeds(1) == [684]
    assert resolve_seeds(5) == [684, 559, 629, 1, 2]
    assert resolve_seeds([7, 8]) == [7, 8]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "resnet5000"}, "`model`"),
        ({"dataset": "imagenet-99"}, "`dataset`"),
        ({"dataset": "/no/such/folder"}, "does not exist"),
        ({"data_fraction": 0.0}, "`data_fraction`"),
        ({"seeds": 0}, "`seeds`"),
        ({"seeds": [1, 1]}, "`seeds`"),
        ({"max_epochs": 0}, "`max_epochs`"),
        ({"base_lr": -1.0}, "`base_lr`"),
        ({"base_lr": 3e37}, "`base_lr`"),
        ({"optimizer": "lion"}, "`optimizer`"),
        ({"metric": "f1"}, "`metric`"),
        ({"model": "vit_b_16", "image_size": 32}, "`image_size`"),
        ({"partition": "resnet"}, "`partition`"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        BioTuneObjective(**kwargs)


def test_threads_share_one_objective_safely(objective: BioTuneObjective) -> None:
    study = optuna.create_study(direction="maximize")
    params = _genes([0.2] * 6 + [0.8] * 4, 0.5)
    for _ in range(2):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=2, n_jobs=2)
    values = [t.value for t in study.trials]
    assert len(values) == 2 and values[0] == values[1]


def test_reset_restores_every_trained_block_and_leaves_frozen_ones(
    objective: BioTuneObjective,
) -> None:
    import torch

    n = len(LITE0_BLOCKS)
    mask = np.arange(n) >= 6
    train, val = objective.tuner.fold("train", 0), objective.tuner.fold("val", 0)
    objective.tuner.train_config(
        mask, np.where(mask, 1.0, 0.0), seed=1, train=train, val=val, data_key=("fold", 0)
    )
    state = objective.tuner.net.state_dict()
    changed = [k for k in state if not torch.equal(state[k], objective.tuner.pretrained_state[k])]
    assert changed and all(
        k.startswith(("blocks.5", "blocks.6", "conv_head", "bn2", "classifier")) for k in changed
    )
    objective.tuner.reset_to_pretrained()
    state = objective.tuner.net.state_dict()
    assert all(torch.equal(state[k], objective.tuner.pretrained_state[k]) for k in state)
