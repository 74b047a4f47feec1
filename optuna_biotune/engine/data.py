"""Datasets as tensors: the data types, train/val/test splits and stratified folds.

Images are decoded and resized once (by :mod:`optuna_biotune.engine.sources`) and held as
``uint8`` tensors (``N x C x H x W``, ``C`` 1 or 3); :meth:`TensorData.batch` turns a batch into
normalised float RGB for the backbone, so nothing is decoded or resized per epoch. Sets without
their own validation or test split are cut 60/20/20 with a fixed seed, stratified by class.

The fitness of generation ``g`` trains and validates on fold ``g mod n_folds`` of the
training and validation splits, with ``n_folds = ceil(1 / p)`` for a data fraction ``p``
(BioTune paper, Sec. III-C); see :func:`fold_indices` and the fold policy in
:mod:`optuna_biotune.biotune.memetic`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from optuna_biotune.errors import UsageError

#: Fixed seed of the stratified 60/20/20 split of sets without their own splits.
SPLIT_SEED = 0
SPLIT_SHARES = (0.6, 0.2, 0.2)
#: Share of a training split cut off as validation for sets that ship only train and test.
VAL_SHARE = 0.2


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


def to_uint8_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
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


def check_classes(labels: np.ndarray, what: str) -> None:
    classes = np.unique(labels)
    if classes.size < 2:
        raise UsageError(
            f"{what} has a single class ({classes.tolist()}); give at least two classes."
        )


def splits_from_arrays(
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
    check_classes(labels, f"dataset {name!r}")
    x = resize_uint8(to_uint8_nchw(images), image_size)
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


def splits_from_parts(
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
    check_classes(y, f"dataset {name!r}")
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
    "SPLIT_SEED",
    "SPLIT_SHARES",
    "VAL_SHARE",
    "ArrayDataset",
    "Splits",
    "TensorData",
    "check_classes",
    "fold_indices",
    "n_folds",
    "resize_uint8",
    "splits_from_arrays",
    "splits_from_parts",
    "stratified_split",
    "to_uint8_nchw",
]
