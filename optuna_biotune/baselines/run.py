"""``run_baseline``: train one comparison method per seed with ``train.fit`` and test it.

Everything but the method is FT's and the objective's: the dataset's train/val/test splits,
the pretrained model with a fresh head seeded per seed (``models.reset_head``), the
partition, batch size, base learning rate, optimizer, epochs and early-stopping patience on
the validation metric. The best validation epoch's weights are restored and scored on the
held-out test set (plain accuracy, as paper Table I).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from optuna_biotune.baselines.config import BaselineConfig
from optuna_biotune.baselines.methods import canonical_method, prepare_plan
from optuna_biotune.engine import budget
from optuna_biotune.engine.seeds import resolve_seeds
from optuna_biotune.errors import UsageError


def _block_summary(plan_history: list[dict[str, Any]], blocks, model) -> dict[str, Any]:
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


def run_baseline(
    method: str,
    *,
    dataset: Any = "digits",
    model: str = "efficientnet_lite0",
    seeds: int | Sequence[int] = 3,
    epochs: int = budget.EPOCHS,
    patience: int = budget.PATIENCE,
    batch_size: int = budget.BATCH_SIZE,
    base_lr: float = budget.BASE_LR,
    optimizer: str = budget.OPTIMIZER,
    metric: str = budget.METRIC,
    image_size: int | None = None,
    partition: Any = None,
    config: BaselineConfig | None = None,
    device: str = "auto",
    splits: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``method`` once per seed and score the test set (paper Table I, one cell).

    Args:
        method: One of :data:`~optuna_biotune.baselines.METHODS` (any case).
        dataset: A dataset spec for ``data.load_dataset`` (``digits``, ``mnist5k``, ...).
        model: A backbone name for ``models.build_model``.
        seeds: A count (the authors' 684, 559, 629 first, as the objective) or a list.
        epochs: Maximum epochs per seed (paper: 30).
        patience: Early-stopping patience on the validation metric (paper: 3).
        batch_size: Training batch size.
        base_lr: FT's learning rate; the methods scale it (AutoRGN) or not.
        optimizer: ``"adam"`` (paper) or ``"sgd"``.
        metric: Validation metric for early stopping, ``"accuracy"`` or ``"macro"``.
        image_size: Image side (``None``: the dataset's default).
        partition: Block partition spec for ``blocks.partition`` (``None``: the default).
        config: Method hyperparameters (:class:`BaselineConfig`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        splits: Already loaded ``data.Splits`` to reuse (then ``dataset``/``image_size`` are
            only labels).
        log: Called with one progress line per seed.

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
    from optuna_biotune.engine.sources import load_dataset
    from optuna_biotune.engine.train import clone_state, evaluate, fit, resolve_device

    name = canonical_method(method)
    seed_list = resolve_seeds(seeds)
    cfg = config or BaselineConfig()
    for label, value in (("epochs", epochs), ("patience", patience), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"`{label}` must be an integer >= 1, got {value!r}.")
    log = log or (lambda line: None)
    started = time.perf_counter()
    dev = resolve_device(device)
    if splits is None:
        prep = models.preprocessing(model)
        splits = load_dataset(dataset, image_size=image_size, mean=prep.mean, std=prep.std)
    train, val, test = splits.train.to(dev), splits.val.to(dev), splits.test.to(dev)
    base = models.build_model(model, splits.num_classes, pretrained=True)
    pretrained_state = clone_state(base)

    def probe_batches_for(seed: int) -> Callable[[int], list]:
        def probe(epoch: int) -> list:
            gen = np.random.default_rng([seed, epoch])
            n = min(len(train), cfg.rgn_batches * batch_size)
            index = gen.choice(len(train), size=n, replace=False)
            return [
                train.batch(torch.as_tensor(index[i : i + batch_size], device=dev))
                for i in range(0, n, batch_size)
            ]

        return probe

    rows = []
    for seed in seed_list:
        base.load_state_dict(pretrained_state)
        net = copy.deepcopy(base)
        models.reset_head(net, seed)
        blocks = blocks_mod.partition(net, partition)
        plan = prepare_plan(
            name,
            model=net,
            blocks=blocks,
            head=models.head_name(net),
            lr=base_lr,
            config=cfg,
            probe_batches=probe_batches_for(seed),
        )
        result = fit(
            plan.model,
            param_groups=plan.param_groups,
            train=train,
            val=val,
            max_epochs=epochs,
            patience=patience,
            seed=seed,
            batch_size=batch_size,
            lr=base_lr,
            optimizer=optimizer,
            metric=metric,
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
        "dataset": dataset if isinstance(dataset, str) else getattr(splits, "name", "data"),
        "model": model,
        "seeds": seed_list,
        "test_accuracies": accs,
        "test_accuracy_mean": mean,
        "test_accuracy_stderr": sem,
        "val_accuracies": [r["val_accuracy"] for r in rows],
        "epochs_run": [r["epochs_run"] for r in rows],
        "trainable_params": round(float(np.mean([r["trainable_params"] for r in rows]))),
        "total_params": rows[0]["total_params"],
        "trainable_share": share,
        "epochs": epochs,
        "patience": patience,
        "batch_size": batch_size,
        "base_lr": base_lr,
        "optimizer": optimizer,
        "metric": metric,
        "image_size": int(train.x.shape[-1]) if train.x.ndim == 4 else None,
        "device": str(dev),
        "config": {k: v for k, v in vars(cfg).items()},
        "per_seed": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": (
            f"{name} on {dataset if isinstance(dataset, str) else 'data'} ({model}): test "
            f"accuracy {mean:.4f} ± {sem:.4f} over {len(accs)} seed(s), trainable share "
            f"{100 * share:.2f} %"
        ),
    }
