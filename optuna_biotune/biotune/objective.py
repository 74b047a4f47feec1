"""``BioTuneObjective``: the fitness of a BioTune individual, as an Optuna objective.

The Optuna adapter on the engine's fine-tuner (:class:`optuna_biotune.engine.finetune.FineTuner`).
For a trial it suggests the ``B + 2`` genes (``importance:<block>`` .., ``threshold``), decodes
them (:func:`.genome.decode`: block ``b`` trains iff ``gene_b > threshold``, at
``lr_b = base_lr * 10 ** (2 * (gene_b - 0.5))``, paper eq. 2, 4, 5), takes the generation's
stratified fold (``generation mod ceil(1 / data_fraction)``, paper Sec. III-C; the fold policy
is written once in :mod:`optuna_biotune.biotune.memetic`), fine-tunes once per seed from the
pretrained weights and returns the mean over seeds of the best validation accuracy (maximise;
the paper minimises ``1 - acc``).

Decisions the paper leaves open:

- **The new head always trains** (:meth:`.FineTuner.plan`); its rate is still
  ``base_lr * W_head`` from its own gene (eq. 5). The recorded ``mask`` and ``lr_weights`` show
  what was trained; ``head_forced`` says when the head's gene was at or below the threshold.
- **Invalid individuals** (no block above the threshold, head included) are not trained: they
  get the worst fitness, accuracy ``0.0``, and the user attr ``invalid=True``.
- **A NaN training loss** fails the trial: the reason is stored in the user attr
  ``fail_reason`` and the objective returns NaN, which Optuna records as a failed trial while
  the search goes on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from optuna_biotune.biotune import genome
from optuna_biotune.engine.finetune import DEFAULT_CACHE_BYTES, FineTuner
from optuna_biotune.engine.seeds import AUTHOR_SEEDS, resolve_seeds
from optuna_biotune.errors import RuntimeFailure, UsageError
from optuna_biotune.evolution import trial_generation

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


class BioTuneObjective(FineTuner):
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
        self.seeds = resolve_seeds(seeds)
        super().__init__(
            dataset=dataset,
            model=model,
            partition=partition,
            data_fraction=data_fraction,
            max_epochs=max_epochs,
            patience=patience,
            batch_size=batch_size,
            base_lr=base_lr,
            optimizer=optimizer,
            metric=metric,
            device=device,
            image_size=image_size,
            cache_bytes=cache_bytes,
            use_cache=use_cache,
            compile=compile,
        )
        self.prune = bool(prune)

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

    @property
    def param_names(self) -> list[str]:
        """The ``B + 2`` parameter names: ``importance:<block>`` .., ``threshold``."""
        return genome.gene_names(self.blocks)

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
            trial.set_user_attr("mask", [False] * len(self.blocks))
            trial.set_user_attr("lr_weights", [0.0] * len(self.blocks))
            trial.set_user_attr("trainable_params", 0)
            trial.set_user_attr("total_params", int(self.total_params))
            trial.set_user_attr("trainable_share", 0.0)
            trial.set_user_attr("seed_accuracies", [])
            trial.set_user_attr("epochs", [])
            trial.set_user_attr("seconds", time.perf_counter() - started)
            return 0.0
        head_gene = params[genome.importance_param(self.blocks[self.head_index])]
        mask, weights, forced = self.plan(
            genes_mask, genes_weights, head_weight=genome.lr_weight(head_gene)
        )
        trainable = self.trainable_params(mask)
        trial.set_user_attr("mask", [bool(m) for m in mask])
        trial.set_user_attr("lr_weights", [float(w) for w in weights])
        trial.set_user_attr("head_forced", bool(forced))
        trial.set_user_attr("trainable_params", trainable)
        trial.set_user_attr("total_params", int(self.total_params))
        trial.set_user_attr("trainable_share", trainable / self.total_params)
        train, val = self.fold("train", fold), self.fold("val", fold)
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


__all__ = ["SPEC_KEYS", "BioTuneObjective"]
