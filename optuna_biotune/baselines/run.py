"""``run_baseline``: train one comparison method per seed with ``train.fit`` and test it.

Everything but the method is FT's and the objective's, because it is the same
:class:`~optuna_biotune.engine.finetune.FineTuner`: the dataset's train/val/test splits, the
pretrained model and its partition, batch size, base learning rate, optimizer, epochs and
early-stopping patience on the validation metric. Each seed trains a copy of the tuner's model
with a fresh head seeded per seed (``models.reset_head``); the best validation epoch's weights
are restored and scored on the held-out test set (plain accuracy, as paper Table I).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from optuna_biotune.baselines._plan import ProbeBatches
from optuna_biotune.baselines.config import BaselineConfig
from optuna_biotune.baselines.methods import canonical_method, prepare_plan
from optuna_biotune.engine.finetune import FineTuner
from optuna_biotune.engine.seeds import resolve_seeds
from optuna_biotune.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from optuna_biotune.engine.blocks import Block
    from optuna_biotune.engine.data import TensorData

#: What ``run_baseline`` uses when no ``dataset`` or ``model`` is given.
_DEFAULTS: dict[str, Any] = {"dataset": "digits", "model": "efficientnet_lite0"}


def _block_summary(
    plan_history: list[dict[str, Any]], blocks: Sequence[Block], model: nn.Module
) -> dict[str, Any]:
    """The schedule's last state, per block (gradual: trained blocks; AutoRGN: mean rate)."""
    if not plan_history:
        return {}
    last = plan_history[-1]
    if "trained_blocks" in last:
        return {"last_epoch_trained_blocks": last["trained_blocks"]}
    multipliers = last["multipliers"]
    per_block = {}
    for block in blocks:
        values = [multipliers[n] for n, _ in block.named_parameters(model) if n in multipliers]
        if values:
            per_block[block.name] = round(float(np.mean(values)), 4)
    return {"last_epoch_mean_lr_multiplier": per_block}


def _probe_batches(
    train: TensorData, *, seed: int, n_batches: int, batch_size: int
) -> ProbeBatches:
    """AutoRGN's probe: ``n_batches`` training batches per epoch, drawn from (seed, epoch)."""
    import torch

    def probe(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = np.random.default_rng([seed, epoch])
        n = min(len(train), n_batches * batch_size)
        index = gen.choice(len(train), size=n, replace=False)
        return [
            train.batch(torch.as_tensor(index[i : i + batch_size], device=train.x.device))
            for i in range(0, n, batch_size)
        ]

    return probe


def _fine_tuner(tuner: FineTuner | None, settings: dict[str, Any]) -> FineTuner:
    if tuner is not None:
        if settings:
            raise UsageError(
                f"pass {sorted(settings)} to the FineTuner, not beside `tuner`: its data, model "
                "and training settings are the run's."
            )
        return tuner
    try:
        return FineTuner(**{**_DEFAULTS, **settings})
    except TypeError as exc:
        raise UsageError(
            f"{exc}; run_baseline takes the FineTuner's settings (dataset, model, max_epochs, "
            "patience, batch_size, base_lr, optimizer, metric, image_size, partition, device)."
        ) from exc


def run_baseline(
    method: str,
    tuner: FineTuner | None = None,
    *,
    seeds: int | Sequence[int] = 3,
    config: BaselineConfig | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train ``method`` once per seed and score the test set (paper Table I, one cell).

    Args:
        method: One of :data:`~optuna_biotune.baselines.METHODS` (any case).
        tuner: The :class:`~optuna_biotune.engine.finetune.FineTuner` whose data, model,
            partition and per-run budget to use (one tuner serves several methods and loads
            its data once); ``None``: one is built from ``settings``.
        seeds: A count (the authors' 684, 559, 629 first, as the objective) or a list.
        config: Method hyperparameters (:class:`BaselineConfig`).
        log: Called with one progress line per seed.
        **settings: Without ``tuner``, the FineTuner's keywords: ``dataset`` (default
            ``digits``), ``model`` (default ``efficientnet_lite0``), ``max_epochs`` (paper:
            30), ``patience`` (paper: 3), ``batch_size``, ``base_lr`` (FT's rate; the methods
            scale it or not), ``optimizer``, ``metric`` (early stopping's; the test score is
            plain accuracy), ``image_size``, ``partition``, ``device``.

    Returns:
        A JSON-able dict: ``method``, ``dataset``, ``model``, ``seeds``, ``test_accuracies``,
        ``test_accuracy_mean``, ``test_accuracy_stderr`` (standard error of the mean over
        seeds), ``val_accuracies``, ``epochs_run``, ``trainable_params``, ``total_params``,
        ``trainable_share`` (at the end of training, mean over seeds), ``seconds``, the
        training settings, ``config`` and a one-line ``summary``.
    """
    from optuna_biotune.engine import blocks as blocks_mod
    from optuna_biotune.engine import models
    from optuna_biotune.engine.seeds import mean_sem
    from optuna_biotune.engine.train import evaluate, fit

    name = canonical_method(method)
    seed_list = resolve_seeds(seeds)
    cfg = config or BaselineConfig()
    ft = _fine_tuner(tuner, settings)
    log = log or (lambda line: None)
    started = time.perf_counter()
    ft.blocks  # noqa: B018 - load the data and build the model
    splits, dev = ft.splits, ft.device
    train, val = ft.fold("train", None), ft.fold("val", None)
    test = splits.test.to(dev)
    dataset = ft.dataset if isinstance(ft.dataset, str) else splits.name
    rows = []
    for seed in seed_list:
        ft.reset_to_pretrained()
        net = copy.deepcopy(ft.net)
        models.reset_head(net, seed)
        blocks = blocks_mod.partition(net, ft.partition_spec)
        plan = prepare_plan(
            name,
            model=net,
            blocks=blocks,
            head=models.head_name(net),
            lr=ft.base_lr,
            config=cfg,
            probe_batches=_probe_batches(
                train, seed=seed, n_batches=cfg.rgn_batches, batch_size=ft.batch_size
            ),
        )
        result = fit(
            plan.model,
            param_groups=plan.param_groups,
            train=train,
            val=val,
            max_epochs=ft.max_epochs,
            patience=ft.patience,
            seed=seed,
            batch_size=ft.batch_size,
            lr=ft.base_lr,
            optimizer=cast("Literal['adam', 'sgd']", ft.optimizer),  # FineTuner checked both
            metric=ft.metric,
            num_classes=splits.num_classes,
            penalty=plan.penalty,
            on_epoch_start=plan.on_epoch_start,
            device=dev,
            restore_best=True,
        )
        test_acc = evaluate(plan.model, test, metric="accuracy", num_classes=splits.num_classes)
        rows.append(
            {
                "seed": seed,
                "test_accuracy": test_acc,
                "val_accuracy": result.best_val_metric,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "train_losses": [round(r.train_loss, 6) for r in result.history],
                "trainable_params": plan.trainable_params(),
                "total_params": plan.total_params,
                "seconds": round(result.seconds, 2),
                **_block_summary(plan.history, blocks, plan.model),
            }
        )
        log(
            f"{name} seed {seed}: test {test_acc:.4f}, val {result.best_val_metric:.4f}, "
            f"{result.epochs_run} epochs, {result.seconds:.0f} s"
        )
    accs = [r["test_accuracy"] for r in rows]
    mean, sem = mean_sem(accs)
    shares = [r["trainable_params"] / r["total_params"] for r in rows]
    share = float(np.mean(shares))
    return {
        "command": "baseline",
        "method": name,
        "dataset": dataset,
        "model": ft.model_name,
        "seeds": seed_list,
        "test_accuracies": accs,
        "test_accuracy_mean": mean,
        "test_accuracy_stderr": sem,
        "val_accuracies": [r["val_accuracy"] for r in rows],
        "epochs_run": [r["epochs_run"] for r in rows],
        "trainable_params": round(float(np.mean([r["trainable_params"] for r in rows]))),
        "total_params": rows[0]["total_params"],
        "trainable_share": share,
        "max_epochs": ft.max_epochs,
        "patience": ft.patience,
        "batch_size": ft.batch_size,
        "base_lr": ft.base_lr,
        "optimizer": ft.optimizer,
        "metric": ft.metric,
        "image_size": ft.image_size,
        "device": str(dev),
        "config": dataclasses.asdict(cfg),
        "per_seed": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": (
            f"{name} on {dataset} ({ft.model_name}): test accuracy {mean:.4f} ± {sem:.4f} over "
            f"{len(accs)} seed(s), trainable share {100 * share:.2f} %"
        ),
    }
