"""``BioTuneObjective``: the fitness of a BioTune individual, as an Optuna objective.

For a trial it suggests the ``B + 2`` genes (``importance:<block>`` .., ``threshold``),
decodes them (``genome.decode``: block ``b`` trains iff ``gene_b > threshold``, at
``lr_b = base_lr * 10 ** (2 * (gene_b - 0.5))``, paper eq. 2, 4, 5), takes the generation's
stratified fold (``generation mod ceil(1 / data_fraction)``), fine-tunes once per seed from the
pretrained weights with ``train.fit`` and returns the mean over seeds of the best validation
accuracy (maximise; paper Sec. III-C minimises ``1 - acc``).

Decisions the paper leaves open (METHOD.md):

- **The new head always trains.** A freshly initialised head that stays frozen makes a
  useless classifier, so the last block (the head) trains whatever its gene says; its rate is
  still ``base_lr * W_head`` from its own gene (eq. 5). The recorded ``mask`` and
  ``lr_weights`` show what was trained; ``head_forced`` says when the head's gene was at or
  below the threshold.
- **Invalid individuals** (no block above the threshold, head included) are not trained: they
  get the worst fitness, accuracy ``0.0``, and the user attr ``invalid=True``.
- **Folds**: every evaluation is scored on its own generation's fold; elites carried into a
  later generation keep the fitness of the fold they were scored on (the sampler owns
  re-scoring).
- **A NaN training loss** fails the trial: the reason is stored in the user attr
  ``fail_reason`` and the objective returns NaN, which Optuna records as a failed trial while
  the search goes on.

Speed: the model is built once per objective and reset from its pretrained state for every
seed; data lives as tensors on the device; the output of a frozen prefix is cached
(``cache.ActivationCache``) across epochs, seeds and trials.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from optuna_biotune import genome
from optuna_biotune.errors import RuntimeFailure, UsageError
from optuna_biotune.evolution import trial_generation
from optuna_biotune.genome import MAX_BASE_LR

#: The authors' seeds (METHOD.md, "Fitness").
AUTHOR_SEEDS = (684, 559, 629)
#: Default memory bound of the activation cache.
DEFAULT_CACHE_BYTES = 2 * 2**30
#: Keys of :meth:`BioTuneObjective.spec`, the constructor's arguments.
SPEC_KEYS = (
    "dataset",
    "model",
    "partition",
    "seeds",
    "data_fraction",
    "max_epochs",
    "patience",
    "batch_size",
    "base_lr",
    "optimizer",
    "metric",
    "device",
    "image_size",
    "cache_bytes",
    "use_cache",
    "compile",
    "prune",
)


def resolve_seeds(seeds: int | Sequence[int]) -> list[int]:
    """``n`` -> the authors' first ``n`` seeds (then 1, 2, ..); a list -> itself."""
    if isinstance(seeds, bool):
        raise UsageError(f"`seeds` must be a count or a list of integers, got {seeds!r}.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise UsageError(f"`seeds` must be >= 1, got {seeds}.")
        extra = [i for i in range(1, seeds + 1) if i not in AUTHOR_SEEDS]
        return [*AUTHOR_SEEDS, *extra][:seeds]
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out):
        raise UsageError(f"`seeds` must be a non-empty list of integers, got {seeds!r}.")
    if len(set(out)) != len(out):
        raise UsageError(f"`seeds` must be distinct, got {out}.")
    return out


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"`{name}` must be an integer >= {low}, got {value!r}.")


class BioTuneObjective:
    """Fitness of a BioTune individual: mean best validation accuracy over seeds.

    Args:
        dataset: ``digits`` (default), ``mnist5k``, a torchvision dataset name, an ImageFolder
            directory, or a ``data.ArrayDataset`` (see ``data.load_dataset``).
        model: Backbone name (``models.available_models``), default ``efficientnet_lite0``.
        partition: Block partition (``None``: the model family's default, see ``blocks``).
        seeds: Number of seeds (the authors' 684, 559, 629 first) or a list of seeds.
        data_fraction: Share ``p`` of the train and val splits per generation (paper 0.5);
            folds are ``ceil(1 / p)``.
        max_epochs: Epoch limit per training run (paper 30).
        patience: Early-stopping patience on the validation metric (paper 3).
        batch_size: Training batch size (paper 64-96).
        base_lr: Base learning rate, scaled per block by ``W_b`` (paper 1e-3).
        optimizer: ``"adam"`` (paper) or ``"sgd"``.
        metric: ``"accuracy"`` or ``"macro"`` (mean per-class recall, the authors' choice).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        image_size: Image side; ``None``: 32 for ``digits``/``mnist5k`` (8x8 digits upscaled
            4x: seconds per evaluation on a CPU), else the backbone's pretraining size.
        cache_bytes: Memory bound of the frozen-prefix activation cache.
        use_cache: Train from cached prefix activations (same results; off for benchmarks).
        compile: Train through ``torch.compile`` (GPU).
        prune: Let the study's pruner stop an evaluation (each seed's epochs are reported as
            steps ``seed_index * max_epochs + epoch``). Off by default: the paper trains every
            individual to its early stop, and Optuna's default ``MedianPruner`` (which
            ``optuna.create_study`` installs unless told otherwise) would otherwise cut about
            half of a small search's evaluations. Epochs are reported either way, so the
            dashboard shows the curves. To prune, pass ``prune=True`` and choose the pruner
            in ``optuna.create_study(pruner=...)``.

    Example:
        >>> import optuna
        >>> from optuna_biotune import BioTuneObjective
        >>> objective = BioTuneObjective(dataset="digits", seeds=1, max_epochs=2)
        >>> study = optuna.create_study(direction="maximize")
        >>> study.optimize(objective, n_trials=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        dataset: Any = "digits",
        model: str = "efficientnet_lite0",
        partition: Any = None,
        seeds: int | Sequence[int] = AUTHOR_SEEDS,
        data_fraction: float = 0.5,
        max_epochs: int = 30,
        patience: int = 3,
        batch_size: int = 64,
        base_lr: float = 1e-3,
        optimizer: str = "adam",
        metric: str = "accuracy",
        device: str = "auto",
        image_size: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        use_cache: bool = True,
        compile: bool = False,
        prune: bool = False,
    ) -> None:
        from optuna_biotune.engine import models
        from optuna_biotune.engine.data import n_folds
        from optuna_biotune.engine.sources import EMBEDDED, EMBEDDED_IMAGE_SIZE, dataset_kind
        from optuna_biotune.engine.train import METRICS, OPTIMIZERS, resolve_device

        models.preprocessing(model)  # validates the name
        dataset_kind(dataset)  # checks the spec without reading it
        self.seeds = resolve_seeds(seeds)
        self.n_folds = n_folds(data_fraction)
        _check_int("max_epochs", max_epochs, 1)
        _check_int("patience", patience, 1)
        _check_int("batch_size", batch_size, 1)
        _check_int("cache_bytes", cache_bytes, 0)
        if image_size is not None:
            _check_int("image_size", image_size, 8)
        if not (
            isinstance(base_lr, (int, float))
            and math.isfinite(base_lr)
            and 0 < base_lr <= MAX_BASE_LR
        ):
            raise UsageError(
                f"`base_lr` must be a number in (0, {MAX_BASE_LR:g}] (paper 1e-3), "
                f"got {base_lr!r}."
            )
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
        self.prune = bool(prune)
        self._ready = False
        # One model per objective: parallel trials of one process (`n_jobs` threads) take
        # turns on it (set-up and training); a shared model trained by two threads at once
        # fails autograd's in-place checks.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ spec round trip

    def spec(self) -> dict[str, Any]:
        """The constructor's arguments as a JSON-able dict (stored in the study)."""
        from optuna_biotune.engine.data import ArrayDataset

        if isinstance(self.dataset, ArrayDataset):
            raise UsageError(
                "an objective on in-memory arrays has no storable spec; save the images as an "
                "ImageFolder directory to resume or run `final` from the storage."
            )
        partition = self.partition_spec
        if isinstance(partition, Mapping):
            partition = {
                str(k): ([v] if isinstance(v, str) else list(v)) for k, v in partition.items()
            }
        elif partition is not None:
            partition = [p if isinstance(p, str) else list(p) for p in partition]
        return {
            "dataset": str(self.dataset),
            "model": self.model_name,
            "partition": partition,
            "seeds": list(self.seeds),
            "data_fraction": self.data_fraction,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "batch_size": self.batch_size,
            "base_lr": self.base_lr,
            "optimizer": self.optimizer,
            "metric": self.metric,
            "device": self.device_name,
            "image_size": self.image_size,
            "cache_bytes": self.cache_bytes,
            "use_cache": self.use_cache,
            "compile": self.compile,
            "prune": self.prune,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BioTuneObjective:
        """Rebuild the objective from :meth:`spec` (unknown keys are a usage error)."""
        if not isinstance(spec, Mapping):
            raise UsageError(f"`spec` must be a dict from BioTuneObjective.spec(), got {spec!r}.")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise UsageError(
                f"`spec` has unknown keys {unknown}; it must come from BioTuneObjective.spec()."
            )
        return cls(**dict(spec))

    # ------------------------------------------------------------------ lazy set-up

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
        self._pretrained = clone_state(self.net)
        # State keys (parameters and buffers) per block; keys of no block are always restored.
        keys = list(self._pretrained)
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
        """Block names, in the order of the importance genes."""
        self._setup()
        return [b.name for b in self._blocks]

    @property
    def param_names(self) -> list[str]:
        """The ``B + 2`` parameter names: ``importance:<block>`` .., ``threshold``."""
        return genome.gene_names(self.blocks)

    @property
    def head_index(self) -> int:
        """Index of the block that holds the new head (it always trains)."""
        self._setup()
        return self._head_index

    def _fold(self, split: str, fold: int | None) -> Any:
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

    # ------------------------------------------------------------------ training

    def plan(
        self, mask: Sequence[bool], weights: Sequence[float], *, head_gene: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Effective ``(mask, weights, head_forced)``: the head always trains (module doc).

        A head forced to train gets ``W = 10 ** (2 * (head_gene - 0.5))`` (eq. 5) when its gene
        is given, else its weight in ``weights`` when positive, else 1.
        """
        self._setup()
        mask = np.asarray(mask, dtype=bool).copy()
        weights = np.asarray(weights, dtype=float).copy()
        if mask.shape != (len(self._blocks),) or weights.shape != mask.shape:
            raise UsageError(
                f"`mask` and `weights` must have one entry per block ({len(self._blocks)})."
            )
        h = self._head_index
        forced = not mask[h]
        if forced:
            mask[h] = True
            if head_gene is not None:
                weights[h] = float(genome.lr_weight(head_gene))
            elif not weights[h] > 0:
                weights[h] = 1.0
        weights = np.where(mask, weights, 0.0)
        return mask, weights, forced

    def train_config(
        self,
        mask: Sequence[bool],
        weights: Sequence[float],
        *,
        seed: int,
        train: Any,
        val: Any,
        data_key: Any,
        report: Any = None,
        restore_best: bool = False,
    ) -> Any:
        """Reset the model, fine-tune blocks ``mask`` at ``base_lr * weights`` for one seed.

        Returns the ``train.FitResult``. The frozen prefix is served from the cache.
        """

        self._setup()
        with self._lock:
            return self._train_locked(
                mask,
                weights,
                seed=seed,
                train=train,
                val=val,
                data_key=data_key,
                report=report,
                restore_best=restore_best,
            )

    def _train_locked(
        self,
        mask: Sequence[bool],
        weights: Sequence[float],
        *,
        seed: int,
        train: Any,
        val: Any,
        data_key: Any,
        report: Any,
        restore_best: bool,
    ) -> Any:
        from torch import nn

        from optuna_biotune.engine import models
        from optuna_biotune.engine.blocks import block_param_groups, frozen_prefix_length
        from optuna_biotune.engine.train import fit

        self.reset_to_pretrained()
        self._dirty.update(i for i, m in enumerate(mask) if m)
        models.reset_head(self.net, seed)
        groups = block_param_groups(self.net, self._blocks, list(weights), base_lr=self.base_lr)
        bf16 = self.device.type == "cuda"
        target: nn.Module = self.net
        if self.chain is not None:
            frozen = {
                id(p) for ps, m in zip(self._block_params, mask, strict=True) if not m for p in ps
            }
            cut = frozen_prefix_length(self.chain, frozen) if self.use_cache else 0
            if cut > 0:
                feats_train = self.cache.features(
                    (data_key, "train"), train, self.chain, cut, bf16=bf16
                )
                feats_val = self.cache.features((data_key, "val"), val, self.chain, cut, bf16=bf16)
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
                live[key].copy_(self._pretrained[key])
        self._dirty.clear()

    def trainable_params(self, mask: Sequence[bool]) -> int:
        """Number of scalar parameters in the blocks of ``mask``."""
        self._setup()
        return int(
            sum(p.numel() for ps, m in zip(self._block_params, mask, strict=True) if m for p in ps)
        )

    def __call__(self, trial: optuna.Trial) -> float:
        """Suggest the genes, fine-tune per seed on the generation's fold, return the fitness."""
        started = time.perf_counter()
        names = self.param_names
        params = {name: trial.suggest_float(name, 0.0, 1.0) for name in names}
        genes_mask, genes_weights = genome.decode_params(params, self.blocks)
        generation = trial_generation(trial)
        fold = generation % self.n_folds
        trial.set_user_attr("blocks", self.blocks)
        trial.set_user_attr("generation", int(generation))
        trial.set_user_attr("fold", int(fold))
        if not genome.is_valid(genes_mask):
            trial.set_user_attr("invalid", True)
            trial.set_user_attr("mask", [False] * len(self._blocks))
            trial.set_user_attr("lr_weights", [0.0] * len(self._blocks))
            trial.set_user_attr("trainable_params", 0)
            trial.set_user_attr("total_params", int(self.total_params))
            trial.set_user_attr("trainable_share", 0.0)
            trial.set_user_attr("seed_accuracies", [])
            trial.set_user_attr("epochs", [])
            trial.set_user_attr("seconds", time.perf_counter() - started)
            return 0.0
        head_gene = params[genome.importance_param(self.blocks[self._head_index])]
        mask, weights, forced = self.plan(genes_mask, genes_weights, head_gene=head_gene)
        trainable = self.trainable_params(mask)
        trial.set_user_attr("mask", [bool(m) for m in mask])
        trial.set_user_attr("lr_weights", [float(w) for w in weights])
        trial.set_user_attr("head_forced", bool(forced))
        trial.set_user_attr("trainable_params", trainable)
        trial.set_user_attr("total_params", int(self.total_params))
        trial.set_user_attr("trainable_share", trainable / self.total_params)
        train, val = self._fold("train", fold), self._fold("val", fold)
        accs: list[float] = []
        epochs: list[int] = []
        for k, seed in enumerate(self.seeds):

            def report(epoch: int, value: float, k: int = k) -> None:
                trial.report(value, k * self.max_epochs + epoch)
                if self.prune and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at seed {k + 1}, epoch {epoch}")

            try:
                with self._lock:
                    result = self.train_config(
                        mask,
                        weights,
                        seed=seed,
                        train=train,
                        val=val,
                        data_key=("fold", fold),
                        report=report,
                    )
            except RuntimeFailure as exc:
                trial.set_user_attr("fail_reason", str(exc))
                trial.set_user_attr("seconds", time.perf_counter() - started)
                return float("nan")
            accs.append(float(result.best_val_metric))
            epochs.append(int(result.epochs_run))
            trial.set_user_attr("seed_accuracies", accs)
            trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return float(np.mean(accs))

    def retrain_and_test(
        self, mask: Sequence[bool], weights: Sequence[float], *, seeds: Sequence[int]
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


__all__ = ["AUTHOR_SEEDS", "BioTuneObjective", "resolve_seeds"]
