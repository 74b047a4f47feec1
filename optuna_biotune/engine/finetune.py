"""The fine-tuner every method shares: a pretrained model trained with a block mask and
per-block learning-rate weights.

A :class:`FineTuner` loads the dataset (:func:`.sources.load_dataset`) and builds the model once
(:func:`.models.build_model`, partitioned into blocks by :func:`.blocks.partition`), then trains
configurations ``(mask, weights)`` one seed at a time: block ``b`` trains iff ``mask[b]``, at
``base_lr * weights[b]`` (BioTune paper, eq. 4-5; a baseline's plain fine-tuning is every block
at weight 1). Before every run only the blocks trained since their last reset are restored from
the pretrained state, and a new head is drawn from the seed.

**The new head always trains** (:meth:`FineTuner.plan`): a freshly initialised head that stays
frozen makes a useless classifier, so the head trains whatever the mask says; the returned mask
and weights show what was trained, and ``head_forced`` says when the mask had it frozen.

Speed: the model is built once and reset from its pretrained state for every seed; data lives
as tensors on the device; the output of a frozen prefix is cached (:class:`.cache.ActivationCache`)
across epochs, seeds and configurations. One model per tuner: parallel callers of one process
(Optuna's ``n_jobs`` threads) take turns on it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from optuna_biotune.engine import budget
from optuna_biotune.engine.seeds import resolve_seeds
from optuna_biotune.errors import UsageError, check_int

if TYPE_CHECKING:
    from optuna_biotune.engine.data import TensorData
    from optuna_biotune.engine.train import FitResult

#: Largest accepted base learning rate: block rates reach 10x it (BioTune's ``W_b <= 10``, eq. 5),
#: and far beyond this every optimiser diverges (above ~3e37 the rates do not even fit a float32).
MAX_BASE_LR = 10.0
#: Lower bounds of the fine-tuner's integer arguments: a training run's (:data:`.budget.MINIMUM`,
#: which :func:`.train.fit` and the study spec check against too) and the fine-tuner's own.
MINIMUM = {**budget.MINIMUM, "cache_bytes": 0, "image_size": 8}
#: Default memory bound of the activation cache.
DEFAULT_CACHE_BYTES = 2 * 2**30


def check_base_lr(base_lr: Any) -> float:
    """The base learning rate check the fine-tuner and the study spec share: a number in
    ``(0, MAX_BASE_LR]``."""
    if not (
        isinstance(base_lr, (int, float)) and math.isfinite(base_lr) and 0 < base_lr <= MAX_BASE_LR
    ):
        raise UsageError(
            f"`base_lr` must be in (0, {MAX_BASE_LR:g}] (paper 1e-3), got {base_lr!r}."
        )
    return base_lr


class FineTuner:
    """A pretrained model fine-tuned with a block mask and learning-rate weights.

    Args:
        dataset: ``digits``, ``mnist5k``, a torchvision dataset name, an ImageFolder
            directory, or an :class:`.data.ArrayDataset` (see :func:`.sources.load_dataset`).
        model: Backbone name (:func:`.models.available_models`).
        partition: Block partition (``None``: the model family's default, see :mod:`.blocks`).
        data_fraction: Share ``p`` of the train and val splits per fold; folds are
            ``ceil(1 / p)`` (:func:`.data.n_folds`).
        max_epochs: Epoch limit per training run.
        patience: Early-stopping patience on the validation metric.
        batch_size: Training batch size.
        base_lr: Base learning rate, scaled per block by its weight.
        optimizer: ``"adam"`` or ``"sgd"``.
        metric: ``"accuracy"`` or ``"macro"`` (mean per-class recall).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        image_size: Image side; ``None``: 32 for the embedded sets, else the backbone's
            pretraining size.
        cache_bytes: Memory bound of the frozen-prefix activation cache.
        use_cache: Train from cached prefix activations (same results; off for benchmarks).
        compile: Train through ``torch.compile`` (GPU).
    """

    def __init__(
        self,
        *,
        dataset: Any,
        model: str,
        partition: Any = None,
        data_fraction: float = 0.5,
        max_epochs: int = budget.EPOCHS,
        patience: int = budget.PATIENCE,
        batch_size: int = budget.BATCH_SIZE,
        base_lr: float = budget.BASE_LR,
        optimizer: str = budget.OPTIMIZER,
        metric: str = budget.METRIC,
        device: str = "auto",
        image_size: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        use_cache: bool = True,
        compile: bool = False,
    ) -> None:
        from optuna_biotune.engine import models
        from optuna_biotune.engine.data import n_folds
        from optuna_biotune.engine.sources import EMBEDDED, EMBEDDED_IMAGE_SIZE, dataset_kind
        from optuna_biotune.engine.train import METRICS, OPTIMIZERS, resolve_device

        models.preprocessing(model)  # validates the name
        dataset_kind(dataset)  # checks the spec without reading it
        self.n_folds = n_folds(data_fraction)
        for name, value in (
            ("max_epochs", max_epochs),
            ("patience", patience),
            ("batch_size", batch_size),
            ("cache_bytes", cache_bytes),
        ):
            check_int(name, value, MINIMUM[name])
        if image_size is not None:
            check_int("image_size", image_size, MINIMUM["image_size"])
        check_base_lr(base_lr)
        if optimizer not in OPTIMIZERS:
            raise UsageError(f"`optimizer` must be one of {list(OPTIMIZERS)}, got {optimizer!r}.")
        if metric not in METRICS:
            raise UsageError(f"`metric` must be one of {list(METRICS)}, got {metric!r}.")
        if partition is not None and (isinstance(partition, str) or not partition):
            raise UsageError(
                "`partition` must be None (the default) or a list of module-name prefixes."
            )
        pre = models.preprocessing(model)
        if image_size is None:
            embedded = isinstance(dataset, str) and dataset in EMBEDDED
            image_size = EMBEDDED_IMAGE_SIZE if embedded else pre.image_size
        if pre.fixed_size and image_size != pre.image_size:
            raise UsageError(
                f"`model` {model!r} only takes {pre.image_size} px images; set "
                f"`image_size`={pre.image_size}."
            )
        self.dataset = dataset
        self.model_name = model
        self.partition_spec = partition
        self.data_fraction = float(data_fraction)
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.base_lr = float(base_lr)
        self.optimizer = optimizer
        self.metric = metric
        self.device_name = device
        self.device = resolve_device(device)
        self.image_size = int(image_size)
        self.cache_bytes = cache_bytes
        self.use_cache = bool(use_cache)
        self.compile = bool(compile)
        self._ready = False
        # One model per objective: parallel trials of one process (`n_jobs` threads) take
        # turns on it (set-up and training); a shared model trained by two threads at once
        # fails autograd's in-place checks.
        self._lock = threading.RLock()

    def _setup(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self._build()

    def _build(self) -> None:
        with self._lock:
            self._setup_once()

    def _setup_once(self) -> None:
        if self._ready:
            return
        from optuna_biotune.engine import blocks as blocks_mod
        from optuna_biotune.engine import models
        from optuna_biotune.engine.cache import ActivationCache
        from optuna_biotune.engine.sources import load_dataset
        from optuna_biotune.engine.train import clone_state

        pre = models.preprocessing(self.model_name)
        self.splits = load_dataset(
            self.dataset, image_size=self.image_size, mean=pre.mean, std=pre.std
        )
        self.net = models.build_model(self.model_name, self.splits.num_classes, pretrained=True)
        self.net.to(self.device)
        self._blocks = blocks_mod.partition(self.net, self.partition_spec)
        self.chain = blocks_mod.stages(self.net)
        self.pretrained_state = clone_state(self.net)
        # State keys (parameters and buffers) per block; keys of no block are always restored.
        keys = list(self.pretrained_state)
        self._block_keys = [[k for k in keys if b.owns(k)] for b in self._blocks]
        owned = {k for ks in self._block_keys for k in ks}
        self._loose_keys = [k for k in keys if k not in owned]
        self._dirty: set[int] = set()  # blocks trained since their last reset
        self._block_params = [b.parameters(self.net) for b in self._blocks]
        self._head_index = next(
            i
            for i, b in enumerate(self._blocks)
            if b.owns(f"{models.head_name(self.net)}.weight")
            or b.owns(f"{models.head_name(self.net)}.bias")
        )
        self.total_params = sum(p.numel() for p in self.net.parameters())
        self.cache = ActivationCache(max_bytes=self.cache_bytes)
        self._train = self.splits.train.to(self.device)
        self._val = self.splits.val.to(self.device)
        self._test = self.splits.test.to(self.device)
        self._folds: dict[tuple[str, int], Any] = {}
        self._ready = True

    @property
    def blocks(self) -> list[str]:
        """Block names, in partition order (BioTune's importance genes follow it)."""
        self._setup()
        return [b.name for b in self._blocks]

    @property
    def head_index(self) -> int:
        """Index of the block that holds the new head (it always trains)."""
        self._setup()
        return self._head_index

    def fold(self, split: str, fold: int | None) -> TensorData:
        """The ``train`` or ``val`` split's stratified fold ``fold`` (:func:`.data.fold_indices`
        with this tuner's ``data_fraction``), on the device and kept; ``None``: the whole split.
        """
        from optuna_biotune.engine.data import fold_indices

        self._setup()
        full = self._train if split == "train" else self._val
        if fold is None:
            return full
        key = (split, fold)
        if key not in self._folds:
            idx = fold_indices(full.y, data_fraction=self.data_fraction, fold=fold)
            self._folds[key] = full.subset(idx)
        return self._folds[key]

    def plan(
        self,
        mask: Sequence[bool] | np.ndarray,
        weights: Sequence[float] | np.ndarray,
        *,
        head_weight: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Effective ``(mask, weights, head_forced)``: the head always trains (module doc).

        A head forced to train gets ``head_weight`` when given, else its weight in ``weights``
        when positive, else 1.
        """
        self._setup()
        mask_arr = np.array(mask, dtype=bool)
        weights_arr = np.array(weights, dtype=float)
        if mask_arr.shape != (len(self._blocks),) or weights_arr.shape != mask_arr.shape:
            raise UsageError(
                f"`mask` and `weights` must have one entry per block ({len(self._blocks)})."
            )
        h = self._head_index
        forced = not mask_arr[h]
        if forced:
            mask_arr[h] = True
            if head_weight is not None:
                weights_arr[h] = float(head_weight)
            elif not weights_arr[h] > 0:
                weights_arr[h] = 1.0
        return mask_arr, np.where(mask_arr, weights_arr, 0.0), forced

    def train_config(
        self,
        mask: Sequence[bool] | np.ndarray,
        weights: Sequence[float] | np.ndarray,
        *,
        seed: int,
        train: TensorData,
        val: TensorData,
        data_key: Hashable,
        report: Callable[[int, float], None] | None = None,
        restore_best: bool = False,
    ) -> FitResult:
        """Reset the model, fine-tune blocks ``mask`` at ``base_lr * weights`` for one seed.

        Returns the ``train.FitResult``. The frozen prefix is served from the cache.
        """
        from torch import nn

        from optuna_biotune.engine import models
        from optuna_biotune.engine.blocks import block_param_groups, frozen_prefix_length
        from optuna_biotune.engine.train import fit

        self._setup()
        with self._lock:  # one model per tuner: parallel callers take turns
            self.reset_to_pretrained()
            self.mark_trained(i for i, m in enumerate(mask) if m)
            models.reset_head(self.net, seed)
            groups = block_param_groups(
                self.net, self._blocks, list(weights), base_lr=self.base_lr
            )
            bf16 = self.device.type == "cuda"
            target: nn.Module = self.net
            if self.chain is not None:
                frozen = {
                    id(p)
                    for ps, m in zip(self._block_params, mask, strict=True)
                    if not m
                    for p in ps
                }
                cut = frozen_prefix_length(self.chain, frozen) if self.use_cache else 0
                if cut > 0:
                    feats_train = self.cache.features(
                        (data_key, "train"), train, self.chain, cut, bf16=bf16
                    )
                    feats_val = self.cache.features(
                        (data_key, "val"), val, self.chain, cut, bf16=bf16
                    )
                    if feats_train is not None and feats_val is not None:
                        train, val = feats_train, feats_val
                    else:
                        cut = 0
                target = nn.Sequential(*self.chain[cut:])
            return fit(
                target,
                param_groups=groups,
                train=train,
                val=val,
                max_epochs=self.max_epochs,
                patience=self.patience,
                seed=seed,
                batch_size=self.batch_size,
                lr=self.base_lr,
                optimizer=self.optimizer,
                metric=self.metric,
                num_classes=self.splits.num_classes,
                report=report,
                device=self.device,
                bf16=bf16,
                compile=self.compile,
                restore_best=restore_best,
            )

    def reset_to_pretrained(self) -> None:
        """Restore the pretrained weights and statistics of every block trained since its
        last reset (frozen blocks never change: no gradients, batch norm in eval mode)."""
        import torch

        self._setup()
        live = self.net.state_dict(keep_vars=True)
        keys = [k for i in sorted(self._dirty) for k in self._block_keys[i]]
        with torch.no_grad():
            for key in (*keys, *self._loose_keys):
                live[key].copy_(self.pretrained_state[key])
        self._dirty.clear()

    def mark_trained(self, blocks: Iterable[int]) -> None:
        """Note blocks (indices) whose weights a caller changed, so that
        :meth:`reset_to_pretrained` restores them."""
        self._dirty.update(int(i) for i in blocks)

    def trainable_params(self, mask: Sequence[bool] | np.ndarray) -> int:
        """Number of scalar parameters in the blocks of ``mask``."""
        self._setup()
        return int(
            sum(p.numel() for ps, m in zip(self._block_params, mask, strict=True) if m for p in ps)
        )

    def retrain_and_test(
        self,
        mask: Sequence[bool] | np.ndarray,
        weights: Sequence[float] | np.ndarray,
        *,
        seeds: Sequence[int],
    ) -> list[float]:
        """Paper protocol after the search: train on the whole training split (early stopping
        on the whole validation split, best epoch restored), score the held-out test split.

        ``mask`` all ``True`` with ``weights`` all ``1.0`` is the FT reference. Returns one
        test score (``metric``) per seed.
        """
        from optuna_biotune.engine.train import evaluate

        self._setup()
        seeds = resolve_seeds(list(seeds))
        mask_arr = np.asarray(mask, dtype=bool)
        if mask_arr.shape != (len(self._blocks),) or not mask_arr.any():
            raise UsageError(
                f"`mask` must have {len(self._blocks)} entries with at least one True."
            )
        mask_arr, weights_arr, _ = self.plan(mask_arr, weights)
        scores = []
        for seed in seeds:
            with self._lock:  # train and score the same weights
                self.train_config(
                    mask_arr,
                    weights_arr,
                    seed=seed,
                    train=self._train,
                    val=self._val,
                    data_key="all",
                    restore_best=True,
                )
                scores.append(
                    evaluate(
                        self.net,
                        self._test,
                        metric=self.metric,
                        num_classes=self.splits.num_classes,
                        bf16=self.device.type == "cuda",
                    )
                )
        return scores


__all__ = ["DEFAULT_CACHE_BYTES", "MAX_BASE_LR", "MINIMUM", "FineTuner", "check_base_lr"]
