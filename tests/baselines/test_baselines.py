"""The comparison methods of paper Table I, each on a tiny model: it does what its name says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optuna_biotune.baselines import (
    METHODS,
    BaselineConfig,
    canonical_method,
    prepare_plan,
)
from optuna_biotune.baselines.autorgn import relative_gradient_norms, rgn_multipliers
from optuna_biotune.baselines.gradual import GradualUnfreezing
from optuna_biotune.baselines.lora import lora_targets
from optuna_biotune.engine.blocks import Block
from optuna_biotune.engine.data import TensorData
from optuna_biotune.engine.train import fit
from optuna_biotune.errors import UsageError


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: tiny models on a loaded 2-core machine run ~10x faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tiny(nn.Module):
    """stem (conv + BN) -> body (depthwise + pointwise conv) -> pool -> new linear head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.body = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 8, 1), nn.ReLU()
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.body(self.stem(x))))


def _tiny(seed: int = 0) -> tuple[Tiny, list[Block]]:
    torch.manual_seed(seed)
    return Tiny(), [Block(prefix, (prefix,)) for prefix in ("stem", "body", "head")]


def _batches(n: int = 2, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, 5, 5, generator=g), torch.arange(6) % 3) for _ in range(n)]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("ft", "FT"),
        ("l2sp", "L2-SP"),
        ("L1_SP", "L1-SP"),
        ("g-lf", "G-LF"),
        ("autorgn", "AutoRGN"),
    ],
)
def test_canonical_method_accepts_spellings(alias: str, name: str) -> None:
    assert canonical_method(alias) == name


def test_unknown_method_is_a_usage_error() -> None:
    model, blocks = _tiny()
    with pytest.raises(UsageError, match="`method`"):
        prepare_plan("dropout", model=model, blocks=blocks, head="head", lr=1e-3)


@pytest.mark.parametrize(
    "kwargs", [{"sp_alpha": -1.0}, {"lora_rank": 0}, {"unfreeze_every": 1.5}, {"lora_dropout": 1}]
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(UsageError, match=f"`{next(iter(kwargs))}`"):
        BaselineConfig(**kwargs)


def test_blocks_must_cover_every_parameter() -> None:
    model, blocks = _tiny()
    with pytest.raises(UsageError, match="`blocks`"):
        prepare_plan("FT", model=model, blocks=blocks[1:], head="head", lr=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_the_new_head(method: str) -> None:
    model, blocks = _tiny()
    plan = prepare_plan(
        method,
        model=model,
        blocks=blocks,
        head="head",
        lr=1e-3,
        config=BaselineConfig(lora_rank=1),  # rank 8 would outgrow this tiny model
        probe_batches=lambda e: _batches(),
    )
    grouped = {id(p) for g in plan.param_groups for p in g["params"]}
    assert all(p.requires_grad and id(p) in grouped for p in plan.model.head.parameters())
    assert 0 < plan.trainable_share() <= 1


def test_lp_freezes_everything_but_the_head() -> None:
    model, blocks = _tiny()
    plan = prepare_plan("LP", model=model, blocks=blocks, head="head", lr=1e-3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    assert plan.trainable_params() == 8 * 3 + 3
    assert [g["name"] for g in plan.param_groups] == ["head"]


def test_ft_trains_everything_at_one_rate() -> None:
    model, blocks = _tiny()
    plan = prepare_plan("FT", model=model, blocks=blocks, head="head", lr=0.01)
    assert plan.trainable_share() == 1.0
    assert {g["lr"] for g in plan.param_groups} == {0.01}
    assert plan.penalty is None and plan.on_epoch_start is None


@pytest.mark.parametrize("norm", [1, 2])
def test_sp_penalty_pulls_toward_the_start_weights(norm: int) -> None:
    model, blocks = _tiny()
    cfg = BaselineConfig(sp_alpha=0.5, sp_beta=0.0)
    plan = prepare_plan(
        f"L{norm}-SP", model=model, blocks=blocks, head="head", lr=1e-3, config=cfg
    )
    start = _snapshot(model)
    assert float(plan.penalty(model).detach()) == 0.0  # at the start point, beta = 0
    with torch.no_grad():
        for p in model.stem.parameters():
            p.add_(torch.randn_like(p).sign() * (0.5 + torch.rand_like(p)))  # |w - w0| >= 0.5
    moved = _snapshot(model)  # the copies of w0 are detached: moving w moved only w
    penalty = plan.penalty(model)
    penalty.backward()
    for name, p in model.stem.named_parameters():
        diff = moved["stem." + name] - start["stem." + name]
        expected = 0.5 * (diff.sign() if norm == 1 else diff)
        torch.testing.assert_close(p.grad, expected)
    # One descent step on the penalty alone moves every weight back toward w0.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    for name, p in model.stem.named_parameters():
        before = (moved["stem." + name] - start["stem." + name]).abs()
        after = (p.detach() - start["stem." + name]).abs()
        assert torch.all(after <= before) and torch.any(after < before)


def test_sp_head_term_is_plain_l2_decay() -> None:
    model, blocks = _tiny()
    cfg = BaselineConfig(sp_alpha=0.0, sp_beta=0.2)
    plan = prepare_plan("L2-SP", model=model, blocks=blocks, head="head", lr=1e-3, config=cfg)
    expected = 0.1 * sum(float(p.detach().pow(2).sum()) for p in model.head.parameters())
    assert float(plan.penalty(model).detach()) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("method", "every", "schedule"),
    [
        ("G-LF", 1, [[], ["body"], ["body", "stem"], ["body", "stem"]]),
        ("G-FL", 1, [[], ["stem"], ["stem", "body"], ["stem", "body"]]),
        ("G-LF", 2, [[], [], ["body"], ["body"]]),
    ],
)
def test_gradual_unfreezing_order(method: str, every: int, schedule: list[list[str]]) -> None:
    model, blocks = _tiny()
    cfg = BaselineConfig(unfreeze_every=every)
    plan = prepare_plan(method, model=model, blocks=blocks, head="head", lr=1e-3, config=cfg)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "head.weight",
        "head.bias",
    }
    for epoch, expected in enumerate(schedule):
        plan.on_epoch_start(epoch, model, None)
        trained = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert trained == {"head", *expected}
        assert plan.history[-1]["trained_blocks"] == expected


def test_gradual_refuses_an_unknown_order() -> None:
    with pytest.raises(ValueError, match="`order`"):
        GradualUnfreezing(backbone=[], order="middle_out", every=1)


def test_autorgn_multipliers_follow_relative_gradient_norms() -> None:
    model, blocks = _tiny()
    batches = _batches(3)
    # By hand: per batch ||g|| / ||w||, averaged, divided by the largest.
    by_hand = dict.fromkeys(dict(model.named_parameters()), 0.0)
    for x, y in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for n, p in model.named_parameters():
                by_hand[n] += float(p.grad.norm() / p.norm()) / len(batches)
    model.zero_grad(set_to_none=True)
    assert by_hand["stem.1.bias"] == float("inf")  # batch norm's zero-initialised shift
    top = max(v for v in by_hand.values() if v != float("inf"))
    plan = prepare_plan(
        "AutoRGN", model=model, blocks=blocks, head="head", lr=0.1, probe_batches=lambda e: batches
    )
    optimizer = torch.optim.Adam(plan.param_groups)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    plan.on_epoch_start(0, model, optimizer)
    multipliers = plan.history[-1]["multipliers"]
    for name, value in by_hand.items():
        expected = 1.0 if value == float("inf") else value / top
        assert multipliers[name] == pytest.approx(expected, rel=1e-5), name
    assert max(multipliers.values()) == pytest.approx(1.0)
    assert len(set(round(m, 6) for m in multipliers.values())) > 3  # not all the same
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(0.1 * multipliers[group["name"]])
    # The probe leaves no trace: batch-norm statistics restored, no gradients left behind.
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, buffers[n])
    assert all(p.grad is None for p in model.parameters())


def test_autorgn_scaling_a_tensor_up_lowers_its_multiplier() -> None:
    model, _ = _tiny()
    batches = _batches(1)
    before = rgn_multipliers(relative_gradient_norms(model, batches))
    with torch.no_grad():
        model.body[1].weight.mul_(10.0)  # larger weights, and the gradients change too
    after = relative_gradient_norms(model, batches)
    assert after["body.1.weight"] < relative_gradient_norms(_tiny()[0], batches)["body.1.weight"]
    assert before["body.1.weight"] > 0


def test_autorgn_zero_norm_tensor_gets_full_rate() -> None:
    rgn = {"a": 2.0, "b": 1.0, "zero_bias": float("inf")}
    assert rgn_multipliers(rgn) == {"a": 1.0, "b": 0.5, "zero_bias": 1.0}


def test_lora_adapts_dense_layers_only_and_starts_as_pretrained() -> None:
    model, blocks = _tiny()
    x, _ = _batches(1)[0]
    model.eval()
    with torch.no_grad():
        reference = model(x)
    assert lora_targets(model, "head") == ["stem.0", "body.1"]  # depthwise conv and head skipped
    plan = prepare_plan("LoRA", model=model, blocks=blocks, head="head", lr=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(plan.model(x), reference)  # B = 0 at the start
    trainable = {n for n, p in plan.model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all("lora_" in n for n in trainable - {"head.weight", "head.bias"})
    assert plan.total_params == sum(p.numel() for p in _tiny()[0].parameters())


def _data(n: int = 24, seed: int = 2) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 3, 5, 5, generator=g) + y.view(-1, 1, 1, 1).float()  # learnable
    return TensorData(x, y)


def _fit(plan, epochs: int = 2) -> None:
    fit(
        plan.model,
        param_groups=plan.param_groups,
        train=_data(),
        val=_data(seed=3),
        max_epochs=epochs,
        patience=epochs,
        batch_size=8,
        lr=0.05,
        penalty=plan.penalty,
        on_epoch_start=plan.on_epoch_start,
        device="cpu",
    )


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {
        n.split(".")[0]
        for n, p in model.named_parameters()
        if n in before and not torch.equal(before[n], p.detach())
    }


def test_lp_on_the_engine_moves_only_the_head_and_keeps_bn_statistics() -> None:
    model, blocks = _tiny()
    before = _snapshot(model)
    stats = {n: b.clone() for n, b in model.named_buffers()}
    _fit(prepare_plan("LP", model=model, blocks=blocks, head="head", lr=0.05))
    assert _changed(before, model) == {"head"}
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, stats[n])  # frozen backbone runs in eval mode


def test_g_lf_on_the_engine_unfreezes_from_the_last_block() -> None:
    model, blocks = _tiny()
    before = _snapshot(model)
    _fit(prepare_plan("G-LF", model=model, blocks=blocks, head="head", lr=0.05), epochs=2)
    assert _changed(before, model) == {"head", "body"}  # epoch 0 head, epoch 1 + body


def test_g_fl_on_the_engine_unfreezes_from_the_first_block() -> None:
    model, blocks = _tiny()
    before = _snapshot(model)
    _fit(prepare_plan("G-FL", model=model, blocks=blocks, head="head", lr=0.05), epochs=2)
    assert _changed(before, model) == {"head", "stem"}


def test_lora_on_the_engine_leaves_the_backbone_weights_unchanged() -> None:
    model, blocks = _tiny()
    base = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if n.startswith(("stem", "body"))
    }
    plan = prepare_plan("LoRA", model=model, blocks=blocks, head="head", lr=0.05)
    adapters = {n: p.detach().clone() for n, p in plan.model.named_parameters() if "lora_" in n}
    _fit(plan)
    params = dict(plan.model.named_parameters())
    for name, value in base.items():  # peft keeps the original layer as ``base_layer``
        module, _, leaf = name.rpartition(".")
        moved = params.get(f"{module}.base_layer.{leaf}", params.get(name))
        torch.testing.assert_close(moved.detach(), value, rtol=0, atol=0)
    assert any(not torch.equal(adapters[n], params[n].detach()) for n in adapters)


@pytest.mark.parametrize("method", ["L2-SP", "L1-SP"])
def test_sp_on_the_engine_stays_closer_to_the_start_than_ft(method: str) -> None:
    distances = {}
    for name in ("FT", method):
        model, blocks = _tiny()
        start = _snapshot(model)
        cfg = BaselineConfig(sp_alpha=5.0)  # strong, so the pull shows in 2 epochs
        _fit(prepare_plan(name, model=model, blocks=blocks, head="head", lr=0.05, config=cfg))
        distances[name] = sum(
            float((p.detach() - start[n]).pow(2).sum())
            for n, p in model.named_parameters()
            if not n.startswith("head")
        )
    assert distances[method] < distances["FT"]


def test_cli_parses_the_baseline_subcommand() -> None:
    from optuna_biotune.baselines import cli as baseline_cli
    from optuna_biotune.cli import _parse

    args, run = _parse(["baseline", "lora", "--seeds", "2", "--epochs", "4", "--lora-rank", "4"])
    assert run is baseline_cli.run
    assert (args.method, args.seeds, args.epochs, args.dataset) == ("lora", 2, 4, "digits")
    assert baseline_cli.config_from_args(args).lora_rank == 4


def test_cli_unknown_method_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from optuna_biotune.cli import main

    assert main(["baseline", "dropout", "--json"]) == 2
    assert "`method`" in capsys.readouterr().err


def _tiny_images():
    import numpy as np

    from optuna_biotune.engine.data import ArrayDataset

    rng = np.random.default_rng(0)
    labels = np.arange(30) % 3
    images = (rng.random((30, 8, 8)) * 80 + labels[:, None, None] * 80).astype(np.uint8)
    return ArrayDataset(images=images, labels=labels, name="tiny")


def test_ft_baseline_is_the_objectives_ft_step_for_step() -> None:
    """One engine: FT through run_baseline trains exactly as BioTune's all-blocks config."""
    from optuna_biotune import BioTuneObjective
    from optuna_biotune.baselines import run_baseline

    data = _tiny_images()
    kwargs = {"image_size": 16, "device": "cpu", "patience": 2}
    result = run_baseline("FT", dataset=data, seeds=1, max_epochs=2, **kwargs)
    objective = BioTuneObjective(dataset=data, seeds=1, max_epochs=2, **kwargs)
    n = len(objective.blocks)
    fitted = objective.tuner.train_config(
        [True] * n,
        [1.0] * n,
        seed=result["seeds"][0],
        train=objective.tuner.splits.train,
        val=objective.tuner.splits.val,
        data_key="all",
    )
    losses = [round(h.train_loss, 6) for h in fitted.history]
    assert result["per_seed"][0]["train_losses"] == losses


@pytest.mark.parametrize("method", ["LP", "LoRA"])
def test_run_baseline_reports_test_accuracy_and_trainable_share(method: str) -> None:
    from optuna_biotune.baselines import run_baseline

    result = run_baseline(
        method, dataset=_tiny_images(), seeds=2, max_epochs=1, image_size=16, device="cpu"
    )
    assert result["method"] == method and result["seeds"] == [684, 559]
    assert len(result["test_accuracies"]) == 2
    assert all(0.0 <= a <= 1.0 for a in result["test_accuracies"])
    accs = result["test_accuracies"]  # mean and standard error over seeds, as every method
    assert result["test_accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert result["test_accuracy_stderr"] == pytest.approx(abs(accs[0] - accs[1]) / 2)
    assert result["total_params"] > 3_000_000  # EfficientNet-Lite0 with a 3-class head
    if method == "LP":  # the head alone: 1280 x 3 weights + 3 biases
        assert result["trainable_params"] == 1280 * 3 + 3
    else:
        assert 1280 * 3 + 3 < result["trainable_params"] < 0.2 * result["total_params"]


def test_every_method_option_is_a_config_field_and_every_field_is_read() -> None:
    import dataclasses

    from optuna_biotune.baselines.methods import REGISTRY

    fields = {f.name for f in dataclasses.fields(BaselineConfig)}
    read = {option for entry in REGISTRY.values() for option in entry.options}
    assert read == fields
    assert tuple(REGISTRY) == METHODS


def test_run_baseline_takes_a_tuner_or_its_settings_not_both() -> None:
    from optuna_biotune.baselines import run_baseline
    from optuna_biotune.engine.finetune import FineTuner

    tuner = FineTuner(dataset=_tiny_images(), model="efficientnet_lite0", image_size=16)
    with pytest.raises(UsageError, match="max_epochs"):
        run_baseline("FT", tuner, max_epochs=2)
    with pytest.raises(UsageError, match="max_epochs"):
        run_baseline("FT", epochs=2)  # the FineTuner's keyword is max_epochs
