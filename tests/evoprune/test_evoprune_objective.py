"""EvoPruneObjective: pruned head on cached features, memoised fitness, final test score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from optuna_biotune import EvoPruneObjective, EvoPruneSampler
from optuna_biotune.engine.data import ArrayDataset, TensorData, stratified_split
from optuna_biotune.errors import UsageError
from optuna_biotune.evoprune import features as feats
from optuna_biotune.evoprune.head import build_head, train_head
from optuna_biotune.evoprune.objective import neuron_param

optuna.logging.set_verbosity(optuna.logging.WARNING)
HIDDEN = 32


def digits_pixels(*, shuffle_test_labels: bool = False) -> feats.FeatureSplits:
    """Real features: scikit-learn's digits as 64 pixel intensities (a tiny "backbone")."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    train, val, test = (torch.as_tensor(i) for i in stratified_split(d.target))
    test_y = y[test]
    if shuffle_test_labels:
        test_y = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(0))]
    return feats.FeatureSplits(
        key="digits-pixels",
        train_x=x[train],
        train_y=y[train],
        val_x=x[val],
        val_y=y[val],
        test_x=x[test],
        test_y=test_y,
        classes=[str(c) for c in range(10)],
    )


def objective(**kwargs) -> EvoPruneObjective:
    kwargs.setdefault("features", digits_pixels())
    kwargs.setdefault("hidden", HIDDEN)
    kwargs.setdefault("max_epochs", 8)
    kwargs.setdefault("batch_size", 256)
    kwargs.setdefault("lr", 3e-3)
    return EvoPruneObjective(**kwargs)


def mask(share: float, seed: int, n: int = HIDDEN) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < share).astype(np.int8)


def params_of(bits: np.ndarray, layer: int = 0, hidden: int = HIDDEN) -> dict[str, int]:
    return {neuron_param(layer, i, hidden=hidden): int(b) for i, b in enumerate(bits)}


@pytest.mark.parametrize(
    ("layer", "index", "name"), [(0, 17, "neuron:0:017"), (1, 511, "neuron:1:511")]
)
def test_parameter_names(layer, index, name) -> None:
    assert neuron_param(layer, index) == name


@pytest.mark.parametrize(("layers", "n"), [("first", HIDDEN), ("both", 2 * HIDDEN)])
def test_param_names_cover_the_pruned_layers_in_order(layers, n) -> None:
    names = objective(layers=layers).param_names
    assert len(names) == n and names == sorted(names)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": "last"}, "layers"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr": 0}, "lr"),
        ({"hidden": 0}, "hidden"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"image_size": 4}, "image_size"),
        ({"num_threads": 0}, "num_threads"),
        ({"device": "tpu"}, "device"),
        ({"precision": "fp16"}, "precision"),
    ],
)
def test_rejects_bad_arguments(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        EvoPruneObjective(**kwargs)


@pytest.mark.parametrize("both", [False, True])
def test_pruned_head_keeps_exactly_the_active_neurons_with_their_initial_weights(both) -> None:
    m1, m2 = mask(0.5, 1), mask(0.3, 2)
    full = build_head(in_features=64, num_classes=10, masks=[None, None], hidden=HIDDEN, seed=5)
    head = build_head(
        in_features=64, num_classes=10, masks=[m1, m2 if both else None], hidden=HIDDEN, seed=5
    )
    k1, k2 = m1.astype(bool), (m2 if both else np.ones(HIDDEN)).astype(bool)
    assert head[0].out_features == k1.sum() and head[2].out_features == k2.sum()
    assert torch.equal(head[0].weight, full[0].weight[torch.as_tensor(k1)])
    expected = full[2].weight[torch.as_tensor(k2)][:, torch.as_tensor(k1)]
    assert torch.equal(head[2].weight, expected)
    assert torch.equal(head[4].weight, full[4].weight[:, torch.as_tensor(k2)])


@pytest.mark.parametrize(
    ("masks", "message"),
    [([np.zeros(HIDDEN), None], "keeps no neuron"), ([np.ones(HIDDEN + 1), None], "entries")],
)
def test_build_head_rejects_bad_masks(masks, message) -> None:
    with pytest.raises(UsageError, match=message):
        build_head(in_features=8, num_classes=3, masks=masks, hidden=HIDDEN)


def test_fitness_is_a_deterministic_function_of_the_chromosome() -> None:
    obj = objective()
    a, b = obj.train([mask(0.5, 3)]), obj.train([mask(0.5, 3)])
    c = obj.train([mask(0.5, 4)])
    assert a.val_accuracy == b.val_accuracy and a.epochs == b.epochs
    assert 0.5 < a.val_accuracy <= 1.0
    assert (c.val_accuracy, c.epochs) != (a.val_accuracy, a.epochs) or c.best_epoch != a.best_epoch


def test_bf16_precision_trains_in_bfloat16_and_reaches_the_fp32_accuracy(monkeypatch) -> None:
    """The objective's bf16 setting reaches the head's training, which then computes in
    bfloat16, deterministically, and learns the task as well as float32 does."""
    from optuna_biotune.evoprune import head as head_mod

    asked = []
    real = head_mod.train_head

    def spy(*args, **kwargs):
        asked.append(kwargs.get("bf16"))
        return real(*args, **kwargs)

    monkeypatch.setattr(head_mod, "train_head", spy)
    m = [mask(0.5, 3)]
    fp32 = objective().train(m)
    bf16 = objective(precision="bf16")
    a, b = bf16.train(m), bf16.train(m)
    assert asked == [False, True, True]
    assert (a.val_accuracy, a.epochs) == (b.val_accuracy, b.epochs)
    assert abs(a.val_accuracy - fp32.val_accuracy) < 0.05
    head = build_head(in_features=64, num_classes=10, masks=[m[0], None], hidden=HIDDEN)
    seen = []
    head[0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    train_head(
        head,
        train=TensorData(torch.randn(32, 64), torch.arange(32) % 10),
        val=TensorData(torch.randn(8, 64), torch.arange(8) % 10),
        max_epochs=1,
        bf16=True,
    )
    assert seen and set(seen) == {torch.bfloat16}


def test_fitness_never_looks_at_the_test_split() -> None:
    clean = objective(features=digits_pixels())
    scrambled = objective(features=digits_pixels(shuffle_test_labels=True))
    m = [mask(0.6, 5)]
    assert clean.train(m).val_accuracy == scrambled.train(m).val_accuracy
    # ... while the final test score does see it.
    assert clean.train(m, test=True).test_accuracy > scrambled.train(m, test=True).test_accuracy


def test_trial_records_mask_and_memoises_a_repeated_chromosome(tmp_path: Path) -> None:
    obj = objective()
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'e.db'}")
    bits = mask(0.4, 6)
    study.enqueue_trial(params_of(bits))
    study.enqueue_trial(params_of(bits))
    study.optimize(obj, n_trials=2)
    first, second = study.trials
    assert first.user_attrs["memoised"] is False and second.user_attrs["memoised"] is True
    assert first.value == second.value
    assert first.user_attrs["active"] == [int(bits.sum())]
    assert first.user_attrs["active_share"] == pytest.approx(bits.mean())
    assert first.user_attrs["epochs"] >= 1
    # A new process (fresh objective, empty memo) finds the value in the storage.
    study.enqueue_trial(params_of(bits))
    study.optimize(objective(), n_trials=1)
    assert study.trials[2].user_attrs["memoised"] is True
    assert study.trials[2].value == first.value


def test_a_layer_without_neurons_gets_the_worst_fitness() -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(params_of(np.zeros(HIDDEN, dtype=np.int8)))
    study.optimize(objective(), n_trials=1)
    assert study.trials[0].value == 0.0 and study.trials[0].user_attrs["invalid"] is True


@pytest.mark.parametrize("layers", ["first", "both"])
def test_search_and_final_report_the_best_mask_beside_the_unpruned_head(layers) -> None:
    obj = objective(layers=layers)
    study = optuna.create_study(
        direction="maximize", sampler=EvoPruneSampler(seed=0, population_size=4)
    )
    study.optimize(obj, n_trials=8)
    result = obj.final(study, seeds=(0, 1))
    best = obj.best_trial(study)
    assert result["best_trial"] == best.number
    assert best.value == max(t.value for t in study.trials)
    n = HIDDEN * (2 if layers == "both" else 1)
    assert result["neurons"] == n
    assert result["active_share"] == pytest.approx(sum(result["active"]) / n)
    assert 0 < result["active_share"] < 1
    for head in ("pruned", "unpruned"):
        assert len(result[head]["test_accuracies"]) == 2
        assert 0.5 < result[head]["test_accuracy"] <= 1.0
        tests = result[head]["test_accuracies"]  # mean and standard error, as every method
        assert result[head]["test_accuracy"] == pytest.approx(np.mean(tests))
        stderr = np.std(tests, ddof=1) / np.sqrt(2)
        assert result[head]["test_accuracy_stderr"] == pytest.approx(stderr)
    # Seed 0 of the final run is the search's own training: same validation accuracy.
    assert obj.train(obj.masks_from_params(best.params)).val_accuracy == best.value


def test_spec_round_trip_rebuilds_the_same_objective() -> None:
    obj = objective(layers="both", lr=2e-3, seed=3)
    again = EvoPruneObjective.from_spec(obj.spec(), features=digits_pixels())
    assert again.spec() == obj.spec()


def test_backbone_features_are_computed_once_and_cached_on_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 12, 12), dtype=np.uint8)
    data = ArrayDataset(images=images, labels=np.repeat([0, 1, 2], 10), name="tiny")
    feats.clear_memory()
    first = feats.load_features(
        dataset=data, model="efficientnet_lite0", image_size=32, cache_dir=tmp_path
    )
    files = list(tmp_path.glob("tiny-*-efficientnet_lite0-32-v1.pt"))
    assert len(files) == 1
    assert first.dim == 1280  # EfficientNet-Lite0's pooled features
    assert len(first.train_y) + len(first.val_y) + len(first.test_y) == 30
    assert first.classes == ["0", "1", "2"]
    # In memory: the very same object; from disk (new process): the same numbers.
    assert (
        feats.load_features(
            dataset=data, model="efficientnet_lite0", image_size=32, cache_dir=tmp_path
        )
        is first
    )
    feats.clear_memory()
    again = feats.load_features(
        dataset=data, model="efficientnet_lite0", image_size=32, cache_dir=tmp_path
    )
    assert again is not first and torch.equal(again.train_x, first.train_x)
    # Different images are a different cache entry.
    other = ArrayDataset(images=255 - images, labels=data.labels, name="tiny")
    assert feats.cache_key(dataset=other, model="m", image_size=32) != feats.cache_key(
        dataset=data, model="m", image_size=32
    )


def test_planned_bits_are_stored_in_one_transaction_with_the_same_values(
    storage_url: str, study_name: str, monkeypatch
) -> None:
    """On the CLI's storage (SQLite, PostgreSQL) the sampler's planned bits are written
    together; the study holds exactly what a plain Optuna storage holds for the same search."""
    from optuna_biotune.runtime.storage import open_storage
    from optuna_biotune.runtime.workers import WorkerStorage

    batches = []
    real = WorkerStorage.set_trial_params

    def spy(self, trial_id, values, distribution):
        batches.append(len(values))
        return real(self, trial_id, values, distribution)

    monkeypatch.setattr(WorkerStorage, "set_trial_params", spy)
    runs = {}
    for kind in ("worker", "plain"):
        name = f"{study_name}-{kind}"
        study = optuna.create_study(
            study_name=name,
            direction="maximize",
            storage=open_storage(storage_url) if kind == "worker" else storage_url,
            sampler=EvoPruneSampler(seed=3, population_size=4),
        )
        study.optimize(objective(layers="both"), n_trials=9)
        stored = optuna.load_study(study_name=name, storage=storage_url).trials
        runs[kind] = [(t.params, t.value) for t in stored]
    assert runs["worker"] == runs["plain"]
    assert all(len(params) == 2 * HIDDEN for params, _ in runs["worker"])
    # Generation 0 (4 trials) is drawn bit by bit, and so is trial 4, which opens generation 1
    # (the relative search space is the newest generation's, known only after it opened);
    # the 4 children after it come planned, each in one batch.
    assert batches == [2 * HIDDEN] * 4


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_bulk_parameter_write_checks_like_optuna_and_writes_nothing_on_failure(
    tmp_path: Path,
) -> None:
    from optuna.distributions import FloatDistribution, IntDistribution

    from optuna_biotune.runtime.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    study = optuna.create_study(storage=storage)
    study.optimize(lambda t: t.suggest_int("a", 0, 1), n_trials=1)
    trial = study.ask()
    backend = storage  # the WorkerStorage itself (the study wraps it in Optuna's cache)
    with pytest.raises(ValueError, match=r"compatib|Cannot set different distribution"):
        backend.set_trial_params(
            trial._trial_id, {"b": 1.0, "a": 0.5}, FloatDistribution(0.0, 1.0)
        )
    assert study._storage.get_trial(trial._trial_id).params == {}
    backend.set_trial_params(trial._trial_id, {"a": 1.0, "b": 0.0}, IntDistribution(0, 1))
    assert study._storage.get_trial(trial._trial_id).params == {"a": 1, "b": 0}
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError, match=r"finished|updat"):
        backend.set_trial_params(trial._trial_id, {"c": 1.0}, IntDistribution(0, 1))
