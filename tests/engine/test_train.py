from __future__ import annotations

import optuna
import pytest
import torch
from torch import nn

from optuna_biotune.engine.data import TensorData
from optuna_biotune.engine.sources import load_dataset
from optuna_biotune.engine.train import (
    evaluate,
    fit,
    metric_from_predictions,
    set_frozen_eval,
)
from optuna_biotune.errors import RuntimeFailure, UsageError


@pytest.fixture(scope="module")
def digits() -> tuple[TensorData, TensorData]:
    splits = load_dataset("digits", image_size=8)
    return splits.train.subset(range(400)), splits.val.subset(range(150))


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(32, 10),
    )


def _all(model: nn.Module, lr: float = 1e-2) -> list[dict]:
    return [{"params": list(model.parameters()), "lr": lr}]


def test_fit_learns_and_is_reproducible(digits) -> None:
    train, val = digits
    a = fit((net := _net()), param_groups=_all(net), train=train, val=val, max_epochs=4, seed=5)
    b = fit((net2 := _net()), param_groups=_all(net2), train=train, val=val, max_epochs=4, seed=5)
    c = fit((net3 := _net()), param_groups=_all(net3), train=train, val=val, max_epochs=4, seed=6)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert [h.train_loss for h in a.history] != [h.train_loss for h in c.history]
    assert a.history[-1].train_loss < a.history[0].train_loss
    assert a.best_val_metric > 0.3  # 10 classes: chance is 0.1
    assert a.best_val_metric == max(h.val_metric for h in a.history)


def test_params_outside_groups_are_frozen_and_their_batch_norm_stays(digits) -> None:
    train, val = digits
    net = _net()
    conv, head = net[0], net[6]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit(
        net,
        param_groups=[{"params": list(head.parameters())}],
        train=train,
        val=val,
        max_epochs=2,
        patience=5,
    )
    after = net.state_dict()
    for key in ("0.weight", "1.weight", "1.running_mean", "1.running_var"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["6.weight"], after["6.weight"])
    assert not conv.weight.requires_grad and head.weight.requires_grad


def test_trained_batch_norm_updates_its_statistics(digits) -> None:
    train, val = digits
    net = _net()
    before = net[1].running_mean.clone()
    fit(net, param_groups=_all(net), train=train, val=val, max_epochs=1)
    assert not torch.equal(before, net[1].running_mean)


def test_set_frozen_eval_only_touches_fully_frozen_modules() -> None:
    net = _net()
    net.train()
    for p in net[0].parameters():
        p.requires_grad_(False)
    set_frozen_eval(net)
    assert not net[0].training and net[1].training and net[5].training and net.training


def test_early_stopping_respects_patience(digits) -> None:
    train, val = digits
    net = _net()
    epochs = []
    # A learning rate this small cannot move the validation accuracy: no improvement after 1.
    result = fit(
        net,
        param_groups=_all(net, lr=1e-12),
        train=train,
        val=val,
        max_epochs=30,
        patience=3,
        report=lambda e, v: epochs.append((e, v)),
    )
    assert result.epochs_run == 4 and result.best_epoch == 1
    assert [e for e, _ in epochs] == [1, 2, 3, 4]


def test_penalty_is_added_to_the_loss(digits) -> None:
    train, val = digits
    plain = fit((a := _net()), param_groups=_all(a), train=train, val=val, max_epochs=2)
    shifted = fit(
        (b := _net()),
        param_groups=_all(b),
        train=train,
        val=val,
        max_epochs=2,
        penalty=lambda m: torch.tensor(0.5),
    )
    for p, s in zip(plain.history, shifted.history, strict=True):
        assert s.train_loss == pytest.approx(p.train_loss + 0.5, abs=1e-5)


def test_l2_penalty_changes_training(digits) -> None:
    train, val = digits
    a, b = _net(), _net()
    fit(a, param_groups=_all(a), train=train, val=val, max_epochs=2)
    fit(
        b,
        param_groups=_all(b),
        train=train,
        val=val,
        max_epochs=2,
        penalty=lambda m: 10.0 * sum((p**2).sum() for p in m.parameters()),
    )
    assert b[6].weight.norm() < a[6].weight.norm()


def test_on_epoch_start_can_unfreeze_gradually(digits) -> None:
    train, val = digits
    net = _net()
    conv_before = net[0].weight.detach().clone()
    seen = []
    snapshots = []

    def unfreeze(epoch: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        seen.append(epoch)
        snapshots.append(model[0].weight.detach().clone())
        for p in model[0].parameters():
            p.requires_grad_(epoch >= 1)

    fit(
        net,
        param_groups=_all(net),
        train=train,
        val=val,
        max_epochs=3,
        patience=5,
        on_epoch_start=unfreeze,
    )
    assert seen == [0, 1, 2]
    assert torch.equal(snapshots[1], conv_before)  # frozen during epoch 0
    assert not torch.equal(net[0].weight, conv_before)  # trained from epoch 1


def test_on_epoch_start_can_set_group_rates(digits) -> None:
    train, val = digits
    net = _net()
    conv_before = net[0].weight.detach().clone()

    def zero_conv(epoch: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.param_groups[0]["lr"] = 0.0

    groups = [{"params": list(net[0].parameters())}, {"params": list(net[6].parameters())}]
    fit(net, param_groups=groups, train=train, val=val, max_epochs=2, on_epoch_start=zero_conv)
    assert torch.equal(net[0].weight, conv_before)


def test_nan_loss_is_a_runtime_failure(digits) -> None:
    train, val = digits
    net = _net()
    with pytest.raises(RuntimeFailure, match="`base_lr`"):
        fit(
            net,
            param_groups=_all(net),
            train=train,
            val=val,
            max_epochs=2,
            penalty=lambda m: torch.tensor(float("nan")),
        )


def test_report_may_prune(digits) -> None:
    train, val = digits
    net = _net()

    def prune(epoch: int, value: float) -> None:
        raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        fit(net, param_groups=_all(net), train=train, val=val, report=prune)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_restore_best_matches_the_best_validation_score(digits, optimizer: str) -> None:
    train, val = digits
    net = _net()
    result = fit(
        net,
        param_groups=_all(net, lr=0.05),
        train=train,
        val=val,
        max_epochs=5,
        patience=5,
        optimizer=optimizer,
        restore_best=True,
        keep_best_state=True,
    )
    assert evaluate(net, val) == pytest.approx(result.best_val_metric)
    assert result.best_state is not None and "1.running_mean" in result.best_state


def test_macro_accuracy_weights_classes_equally() -> None:
    target = torch.tensor([0] * 8 + [1] * 2)
    pred = torch.zeros(10, dtype=torch.long)
    assert metric_from_predictions(pred, target, metric="accuracy", num_classes=2) == 0.8
    assert metric_from_predictions(pred, target, metric="macro", num_classes=2) == 0.5
    # Classes absent from the split do not count.
    assert metric_from_predictions(pred, target, metric="macro", num_classes=5) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "rmsprop"}, "`optimizer`"),
        ({"metric": "f1"}, "`metric`"),
        ({"max_epochs": 0}, "`max_epochs`"),
        ({"patience": 1.5}, "`patience`"),
        ({"param_groups": []}, "`param_groups`"),
    ],
)
def test_fit_rejects_bad_arguments(digits, kwargs: dict, match: str) -> None:
    train, val = digits
    net = _net()
    args = {"param_groups": _all(net), "train": train, "val": val, **kwargs}
    with pytest.raises(UsageError, match=match):
        fit(net, **args)


def test_channels_last_trains_in_that_layout_to_the_same_result(digits) -> None:
    """channels_last (the default) changes the memory layout, not the training."""
    train, val = digits
    layouts = []

    def spy(_module, args, _out):
        layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))

    runs = {}
    for flag in (True, False):
        net = _net()
        handle = net[0].register_forward_hook(spy)
        runs[flag] = fit(
            net, param_groups=_all(net), train=train, val=val, max_epochs=2, channels_last=flag
        )
        handle.remove()
        assert net[0].weight.is_contiguous(memory_format=torch.channels_last) is flag
    assert layouts[0] is True and layouts[-1] is False
    a, b = ([h.train_loss for h in runs[f].history] for f in (True, False))
    assert a == pytest.approx(b, rel=1e-4)


def test_bf16_autocast_computes_in_bfloat16_and_still_learns(digits) -> None:
    """The GPU default (bf16 autocast) works the same way on the CPU, where it can be asked."""
    train, val = digits
    net = _net()
    dtypes = []
    net[0].register_forward_hook(lambda _m, _a, out: dtypes.append(out.dtype))
    r = fit(net, param_groups=_all(net), train=train, val=val, max_epochs=4, seed=5, bf16=True)
    assert set(dtypes) == {torch.bfloat16}
    assert r.history[-1].train_loss < r.history[0].train_loss
    assert r.best_val_metric > 0.3


@pytest.mark.timeout(600)
def test_compile_trains_through_torch_compile_to_the_eager_result(digits) -> None:
    """``compile=True`` runs the model through ``torch.compile`` (inductor, here on the CPU)."""
    import torch._dynamo

    train, val = digits
    torch._dynamo.reset()
    # Without dropout: compiled code draws its dropout masks from another generator.
    eager_net, compiled_net = (
        nn.Sequential(*(m for m in _net() if not isinstance(m, nn.Dropout))) for _ in range(2)
    )
    eager = fit(eager_net, param_groups=_all(eager_net), train=train, val=val, max_epochs=2)
    counts_before = dict(torch._dynamo.utils.counters["stats"])
    compiled = fit(
        compiled_net,
        param_groups=_all(compiled_net),
        train=train,
        val=val,
        max_epochs=2,
        compile=True,
    )
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames > counts_before.get("unique_graphs", 0)
    a, b = ([h.train_loss for h in r.history] for r in (eager, compiled))
    assert b == pytest.approx(a, rel=1e-3)
