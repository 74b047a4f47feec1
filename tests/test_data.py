from __future__ import annotations

import numpy as np
import pytest
import torch

from optuna_biotune.data import (
    ArrayDataset,
    TensorData,
    fold_indices,
    load_dataset,
    n_folds,
    resize_uint8,
    stratified_split,
)
from optuna_biotune.errors import UsageError


@pytest.mark.parametrize(("name", "total"), [("digits", 1797), ("mnist5k", 5000)])
def test_embedded_sets_split_60_20_20_and_normalise(name: str, total: int) -> None:
    splits = load_dataset(name, image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == total
    assert sizes[0] == pytest.approx(0.6 * total, abs=10)
    assert splits.num_classes == 10
    assert splits.train.x.dtype == torch.uint8 and splits.train.x.shape[1:] == (1, 16, 16)
    x, _ = splits.train.batch(slice(0, 8))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    # Each class keeps its share in every split.
    for part in (splits.train, splits.val, splits.test):
        counts = np.bincount(part.y.numpy(), minlength=10) / len(part)
        assert counts.min() > 0.07 and counts.max() < 0.13


def test_split_is_fixed_and_disjoint() -> None:
    a = load_dataset("digits", image_size=8)
    b = load_dataset("digits", image_size=8)
    assert torch.equal(a.val.x, b.val.x)
    rows = {bytes(r.numpy()) for part in (a.train, a.val, a.test) for r in part.x}
    assert len(rows) > 1700  # near-duplicates aside, no image is shared by two splits


@pytest.mark.parametrize("p", [0.1, 0.25, 0.3, 0.5, 1.0])
def test_folds_partition_the_split_stratified(p: float) -> None:
    labels = np.repeat(np.arange(4), 40)
    k = n_folds(p)
    folds = [fold_indices(labels, data_fraction=p, fold=g) for g in range(k)]
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(labels.size))
    for idx in folds:
        counts = np.bincount(labels[idx], minlength=4)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(fold_indices(labels, data_fraction=p, fold=k), folds[0])


def test_n_folds_is_ceil_of_inverse_fraction() -> None:
    assert [n_folds(p) for p in (1.0, 0.5, 0.34, 0.25, 0.2, 0.1)] == [1, 2, 3, 4, 5, 10]


def test_class_with_fewer_images_than_folds_is_a_usage_error() -> None:
    labels = np.array([0] * 10 + [1] * 2)
    with pytest.raises(UsageError, match="`data_fraction`"):
        fold_indices(labels, data_fraction=0.25, fold=0)


def test_array_dataset_hwc_float_and_single_class() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((30, 12, 10, 3))
    labels = np.repeat([0, 1, 2], 10)
    splits = load_dataset(ArrayDataset(images, labels, classes=["a", "b", "c"]), image_size=8)
    assert splits.classes == ["a", "b", "c"]
    assert splits.train.x.shape[1:] == (3, 8, 8)
    with pytest.raises(UsageError, match="single class"):
        load_dataset(ArrayDataset(images, np.zeros(30, dtype=int)), image_size=8)


def test_resize_keeps_a_constant_image_constant_and_crops_centre() -> None:
    x = torch.full((2, 1, 20, 40), 77, dtype=torch.uint8)
    out = resize_uint8(x, 10)
    assert out.shape == (2, 1, 10, 10) and bool((out == 77).all())


def test_stratified_split_shares() -> None:
    labels = np.repeat(np.arange(3), 50)
    parts = stratified_split(labels)
    assert [p.size for p in parts] == [90, 30, 30]
    assert np.unique(np.concatenate(parts)).size == 150


def test_tensor_data_checks_and_subset() -> None:
    with pytest.raises(UsageError, match="`y`"):
        TensorData(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    data = TensorData(torch.arange(10.0).view(5, 2), torch.arange(5))
    sub = data.subset([4, 1])
    assert sub.y.tolist() == [4, 1] and sub.x[0].tolist() == [8.0, 9.0]
    x, _ = sub.batch(slice(None))
    assert torch.equal(x, sub.x)  # float data is used as it is


def test_unknown_dataset_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="`dataset`"):
        load_dataset("imagenet-99")
