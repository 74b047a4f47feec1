"""Frozen-backbone features for EvoPruneDeepTL, computed once per dataset and cached.

EvoPruneDeepTL (Poyatos et al. 2023) never trains the backbone: every fitness evaluation
trains only the fully connected head on the backbone's global-average-pooled features
(1280-d for EfficientNet-Lite0, 2048-d for ResNet-50). So the backbone runs once per dataset
split; the features are kept in memory and on disk under ``cache_dir``, keyed by dataset,
model and image size, and every later process loads them in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna_biotune.errors import RuntimeFailure, UsageError, check_int

if TYPE_CHECKING:
    import torch

    from optuna_biotune.engine.data import ArrayDataset, TensorData

__all__ = [
    "EMBEDDED_FEATURE_SIZE",
    "FeatureSplits",
    "clear_memory",
    "default_cache_dir",
    "load_features",
    "resolve_image_size",
]

#: Environment variable that overrides the default feature cache directory.
CACHE_ENV = "OPTUNA_BIOTUNE_CACHE"
_FORMAT = 1
#: Image side for the embedded 8x8 / 28x28 digit sets. A frozen backbone sees them better
#: upscaled to 64 than to the fine-tuning default 32 (digits, EfficientNet-Lite0, unpruned
#: head: 0.93 against 0.84 validation accuracy, measured), and features are computed once.
EMBEDDED_FEATURE_SIZE = 64
_MEMORY: dict[str, FeatureSplits] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class FeatureSplits:
    """Backbone features (``float32``, ``N x D``) and labels of the three splits."""

    key: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    @property
    def dim(self) -> int:
        """Feature width ``D``."""
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_cache_dir() -> Path:
    """``$OPTUNA_BIOTUNE_CACHE/features``, else ``~/.cache/optuna-biotune/features``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "optuna-biotune"
    return base / "features"


def _dataset_tag(spec: str | Path | ArrayDataset) -> str:
    from optuna_biotune.engine.data import ArrayDataset
    from optuna_biotune.engine.sources import EMBEDDED

    if isinstance(spec, ArrayDataset):
        import numpy as np

        digest = hashlib.sha1(np.ascontiguousarray(spec.images).tobytes())
        digest.update(np.ascontiguousarray(spec.labels).tobytes())
        return f"{spec.name}-{digest.hexdigest()[:12]}"
    if isinstance(spec, str) and spec in EMBEDDED:
        return spec
    path = Path(spec)
    if path.exists():
        resolved = path.resolve()
        stamp = f"{resolved}:{resolved.stat().st_mtime_ns}"
        return f"{resolved.name}-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"
    return str(spec).replace("/", "_")


def cache_key(*, dataset: str | Path | ArrayDataset, model: str, image_size: int) -> str:
    """File-name-safe key of a (dataset, model, image size) feature set."""
    tag = f"{_dataset_tag(dataset)}-{model.replace(':', '_').replace('/', '_')}-{image_size}"
    return f"{tag}-v{_FORMAT}"


def resolve_image_size(
    *, dataset: str | Path | ArrayDataset, model: str, image_size: int | None
) -> int:
    """``image_size``, else :data:`EMBEDDED_FEATURE_SIZE` for the embedded sets, else the
    backbone's pretraining size."""
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise UsageError(f"`image_size` must be an integer >= 8 or None, got {image_size!r}.")
        return image_size
    from optuna_biotune.engine import models
    from optuna_biotune.engine import sources as data_mod

    if isinstance(dataset, str) and dataset in data_mod.EMBEDDED:
        return EMBEDDED_FEATURE_SIZE
    return models.preprocessing(model).image_size


def _extract(model: Any, data: TensorData, *, batch_size: int, device: str) -> torch.Tensor:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            x, _ = data.batch(slice(start, start + batch_size))
            out.append(model(x.to(device)).float().cpu())
    if not out:
        return torch.zeros((0, 0))
    return torch.cat(out).flatten(1).contiguous()


def load_features(
    *,
    dataset: str | Path | ArrayDataset,
    model: str,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 128,
) -> FeatureSplits:
    """Global-average-pooled backbone features of ``dataset``'s splits, cached.

    The pretrained backbone of :func:`optuna_biotune.engine.models.build_model` runs once with its
    new head replaced by the identity, so its output is the pooled feature vector. Looked up
    in memory, then in ``cache_dir`` (``None``: :func:`default_cache_dir`), then computed and
    written there (atomically: a temporary file renamed into place).

    Args:
        dataset: A dataset spec of :func:`optuna_biotune.engine.sources.load_dataset`.
        model: A backbone name of :func:`optuna_biotune.engine.models.build_model`.
        image_size: Square input side; ``None``: see :func:`resolve_image_size`.
        cache_dir: Directory of the on-disk cache.
        device: Where the backbone runs (``cpu``, ``cuda``).
        batch_size: Images per backbone forward pass.

    Returns:
        The :class:`FeatureSplits`.
    """
    check_int("batch_size", batch_size, 1)
    import torch

    from optuna_biotune.engine import models
    from optuna_biotune.engine import sources as data_mod

    prep = models.preprocessing(model)
    image_size = resolve_image_size(dataset=dataset, model=model, image_size=image_size)
    key = cache_key(dataset=dataset, model=model, image_size=image_size)
    with _LOCK:
        cached = _MEMORY.get(key)
    if cached is not None:
        return cached
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.pt"
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            feats = _from_blob(key, blob)
        except Exception:  # a corrupt or foreign file: recompute and overwrite
            feats = None
        if feats is not None:
            with _LOCK:
                _MEMORY[key] = feats
            return feats
    splits = data_mod.load_dataset(dataset, image_size=image_size, mean=prep.mean, std=prep.std)
    backbone = models.build_model(model, max(2, splits.num_classes), pretrained=True)
    _drop_head(backbone)
    backbone.to(device).eval()
    parts = {}
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        parts[f"{name}_x"] = _extract(backbone, part, batch_size=batch_size, device=device)
        parts[f"{name}_y"] = part.y.clone().long()
    feats = FeatureSplits(key=key, classes=list(splits.classes), **parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        torch.save({**parts, "classes": feats.classes, "format": _FORMAT}, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise RuntimeFailure(
            f"could not write the feature cache {path} ({exc}); pass a writable `cache_dir`."
        ) from exc
    with _LOCK:
        _MEMORY[key] = feats
    return feats


def _from_blob(key: str, blob: Any) -> FeatureSplits | None:
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        return None
    names = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    return FeatureSplits(
        key=key, classes=[str(c) for c in blob["classes"]], **{n: blob[n] for n in names}
    )


def _drop_head(model: Any) -> None:
    """Replace the new head built by ``build_model`` with the identity (pooled features out)."""
    from torch import nn

    from optuna_biotune.engine.models import head_name

    dotted = head_name(model)
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())


def clear_memory() -> None:
    """Forget the in-memory features (the on-disk cache stays)."""
    with _LOCK:
        _MEMORY.clear()
