from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optuna_biotune.engine.data import (
    ArrayDataset,
    TensorData,
    fold_indices,
    n_folds,
    resize_uint8,
    stratified_split,
)
from optuna_biotune.engine.sources import dataset_to_tensors, load_dataset
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


def _write_images(folder, n: int, *, mode: str = "RGB", size=(20, 14), value: int = 0) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        color = (value + 10 * i) % 256
        fill = color if mode == "L" else (color, 255 - color, 40)
        Image.new(mode, size, fill).save(folder / f"img{i}.png")


def test_image_folder_without_splits_is_cut_60_20_20(tmp_path) -> None:
    for k, cls in enumerate(["cat", "dog", "owl"]):
        _write_images(tmp_path / "pets" / cls, 5, value=60 * k)
    (tmp_path / "pets" / ".DS_Store").write_text("ignored")
    splits = load_dataset(tmp_path / "pets", image_size=12)
    assert splits.classes == ["cat", "dog", "owl"]
    assert [len(splits.train), len(splits.val), len(splits.test)] == [9, 3, 3]
    assert splits.train.x.shape[1:] == (3, 12, 12)
    assert sorted(splits.val.y.tolist()) == [0, 1, 2]


def test_image_folder_with_train_val_test(tmp_path) -> None:
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        _write_images(tmp_path / "d" / split / "a", n, mode="L")
        _write_images(tmp_path / "d" / split / "b", n, mode="RGB", value=100)
    splits = load_dataset(str(tmp_path / "d"), image_size=10)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [12, 4, 6]
    assert splits.train.x.shape[1] == 3  # grey and colour mixed -> RGB


def test_image_folder_train_and_test_only_cuts_val_from_train(tmp_path) -> None:
    for split, n in (("train", 10), ("test", 2)):
        for cls in ("a", "b"):
            _write_images(tmp_path / "d" / split / cls, n)
    splits = load_dataset(tmp_path / "d", image_size=8)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [16, 4, 4]


def write_oversized_png(path: Path, side: int = 16_000) -> Path:
    """A PNG whose header says ``side`` x ``side`` pixels (what Pillow checks against its
    decompression-bomb limit when it opens a file), without the pixels: a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def write_bad_file(folder: Path, bad: str) -> str:
    """Put one bad file of kind ``bad`` in ``folder`` (a class folder with readable PNGs);
    return the file's name."""
    if bad == "empty png":
        (folder / "empty.png").write_bytes(b"")
        return "empty.png"
    if bad in ("truncated jpeg", "truncated png"):
        from PIL import Image

        name = "cut.jpg" if bad == "truncated jpeg" else "cut.png"
        Image.new("RGB", (40, 30), (200, 30, 90)).save(folder / name)
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
        return name
    if bad == "over the limit":
        write_oversized_png(folder / "huge.png")
        return "huge.png"
    if bad == "broken link":
        (folder / "gone.png").symlink_to(folder / "no-such-file.png")
        return "gone.png"
    raise ValueError(bad)


BAD_FILES = {
    "empty png": "not a readable image",
    "truncated jpeg": "not a readable image",
    "truncated png": "not a readable image",
    "over the limit": "256,000,000 pixels, over Pillow's decompression-bomb limit",
    "broken link": "broken symbolic link",
}


@pytest.mark.parametrize("bad", list(BAD_FILES))
def test_a_bad_image_file_is_one_line_naming_it(tmp_path: Path, bad: str) -> None:
    for cls in ("a", "b"):
        _write_images(tmp_path / cls, 5)
    name = write_bad_file(tmp_path / "b", bad)
    with pytest.raises(UsageError, match=BAD_FILES[bad]) as info:
        load_dataset(tmp_path, image_size=8)
    message = str(info.value)
    assert name in message and "\n" not in message
    if bad == "over the limit":
        assert "downscale it or remove it" in message


def test_an_image_over_a_lowered_limit_is_refused_with_its_pixel_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        _write_images(tmp_path / cls, 5, size=(40, 30))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # refused above twice this: 1,000
    with pytest.raises(UsageError, match=r"has 1,200 pixels, over .* limit of 1,000") as info:
        load_dataset(tmp_path, image_size=8)
    assert "img0.png" in str(info.value)


def test_files_without_an_image_extension_are_skipped_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for cls in ("a", "b"):
        _write_images(tmp_path / cls, 5)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "b" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (tmp_path / "b" / "README.md").write_text("# pets")
    (tmp_path / "b" / "old.txt").symlink_to(tmp_path / "missing.txt")  # a broken link, skipped
    (tmp_path / "a" / "UPPER.PNG").write_bytes((tmp_path / "a" / "img0.png").read_bytes())
    splits = load_dataset(tmp_path, image_size=8)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 11  # UPPER.PNG is read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "skipped 4 file(s) without an image extension" in err[0]
    assert "'a/notes.txt'" in err[0]


def test_a_folder_left_without_images_says_so(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "Thumbs.db").write_bytes(b"\x00")
    with pytest.raises(UsageError, match=r"holds no images .2 file.s. without an image") as info:
        load_dataset(tmp_path, image_size=8)
    assert "Thumbs.db" in str(info.value) and ".png" in str(info.value)


def test_bad_folders_are_usage_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(tmp_path / "missing", image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no class subfolders"):
        load_dataset(tmp_path / "empty", image_size=8)
    _write_images(tmp_path / "one" / "only", 6)
    with pytest.raises(UsageError, match="single class"):
        load_dataset(tmp_path / "one", image_size=8)
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    (tmp_path / "hollow" / "b").mkdir()
    with pytest.raises(UsageError, match="no images"):
        load_dataset(tmp_path / "hollow", image_size=8)
    for split in ("train", "val"):
        _write_images(tmp_path / "mixed" / split / "a", 4)
    _write_images(tmp_path / "mixed" / "train" / "b", 4)
    _write_images(tmp_path / "mixed" / "val" / "zebra", 4)
    with pytest.raises(UsageError, match="zebra"):
        load_dataset(tmp_path / "mixed", image_size=8)


def test_torchvision_dataset_offline_names_the_alternative(tmp_path) -> None:
    with pytest.raises(UsageError, match="digits") as info:
        load_dataset("mnist", root=tmp_path, download=False, image_size=28)
    assert "\n" not in str(info.value)


def test_dataset_to_tensors_decodes_pil_items_once() -> None:
    from torchvision.datasets import FakeData

    fake = FakeData(size=6, image_size=(3, 20, 30), num_classes=3, random_offset=1)
    x, y = dataset_to_tensors(fake, image_size=16)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.uint8
    assert y.tolist() == [int(fake[i][1]) for i in range(6)]


def test_dataset_to_tensors_uses_in_memory_arrays() -> None:
    class Mnistish:  # the attributes torchvision's MNIST exposes
        data = torch.arange(4 * 28 * 28, dtype=torch.int64).reshape(4, 28, 28).remainder(256)
        targets = torch.tensor([3, 1, 4, 1])

        def __len__(self) -> int:
            return 4

    x, y = dataset_to_tensors(Mnistish(), image_size=14)
    assert x.shape == (4, 1, 14, 14) and y.tolist() == [3, 1, 4, 1]


def test_unknown_option_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="`root`"):
        load_dataset("digits", rooot="/tmp")
