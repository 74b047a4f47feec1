from __future__ import annotations

import pytest
import torch
from torch import nn

from optuna_biotune.engine.blocks import (
    Block,
    block_param_groups,
    frozen_prefix_length,
    partition,
    stages,
)
from optuna_biotune.engine.models import build_model
from optuna_biotune.errors import UsageError

FAMILIES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "densenet121",
    "vgg16",
    "vgg16_bn",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "efficientnet_b4",
    "efficientnet_b7",  # B1-B6 share the class and the code path
    "convnext_tiny",
    "vit_b_16",
    "efficientnet_lite0",
    "timm:resnet10t",
    "timm:convnext_atto",
]
# Models small enough to run a forward pass in the test (the rest are checked structurally).
FORWARD = {
    "resnet18",
    "densenet121",
    "vgg16_bn",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
    "efficientnet_lite0",
}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_parameter_is_in_exactly_one_block(name: str) -> None:
    model = build_model(name, 5, pretrained=False)
    blocks = partition(model)
    counts = {n: sum(b.owns(n) for b in blocks) for n, _ in model.named_parameters()}
    assert set(counts.values()) == {1}
    assert sum(b.num_params(model) for b in blocks) == sum(p.numel() for p in model.parameters())
    # The new head is the last block.
    assert blocks[-1].owns(f"{model.biotune_head}.weight")
    chain = stages(model)
    if name.startswith("timm:"):
        assert chain is None
        return
    # Each stage's parameters lie in one block or several whole ones (the cache cuts there).
    stage_ids = [{id(p) for p in s.parameters()} for s in chain]
    assert set().union(*stage_ids) == {id(p) for p in model.parameters()}
    if name in FORWARD:
        model.eval()
        size = 224 if name == "vit_b_16" else 64
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected = model(x)
            out = x
            for stage in chain:
                out = stage(out)
        torch.testing.assert_close(out, expected)


def test_authors_resnet50_partition() -> None:
    blocks = partition(build_model("resnet50", 10, pretrained=False))
    assert [b.name for b in blocks] == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert blocks[0].prefixes == ("conv1", "bn1")


def test_authors_densenet121_partition() -> None:
    model = build_model("densenet121", 10, pretrained=False)
    blocks = partition(model)
    assert [b.name for b in blocks] == [
        "stem",
        "denseblock1",
        "transition1",
        "denseblock2",
        "transition2",
        "denseblock3",
        "transition3",
        "denseblock4",
        "classifier",
    ]
    assert blocks[7].owns("features.norm5.weight")


def test_default_efficientnet_lite0_partition() -> None:
    blocks = partition(build_model("efficientnet_lite0", 10, pretrained=False))
    assert [b.name for b in blocks] == [
        "stem",
        *(f"blocks.{i}" for i in range(7)),
        "conv_head",
        "classifier",
    ]


@pytest.mark.parametrize(
    "spec",
    [
        [["conv1", "bn1"], "layer1", "layer2", ["layer3", "layer4"], "fc"],
        {"early": ["conv1", "bn1", "layer1", "layer2"], "late": ["layer3", "layer4", "fc"]},
    ],
)
def test_user_partition(spec) -> None:
    model = build_model("resnet18", 3, pretrained=False)
    blocks = partition(model, spec)
    assert len(blocks) == len(spec)
    if isinstance(spec, dict):
        assert [b.name for b in blocks] == ["early", "late"]
    else:
        assert blocks[0].name == "conv1+bn1"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (["layer1", "layer2", "layer3", "layer4", "fc"], "in no block"),
        (
            [["conv1", "bn1"], "layer1", "layer1.0", "layer2", "layer3", "layer4", "fc"],
            "several blocks",
        ),
        (
            [["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"], "fc", "nothere"],
            "own no parameter",
        ),
        ("resnet", "not a list"),
    ],
)
def test_bad_user_partition(spec, match: str) -> None:
    model = build_model("resnet18", 3, pretrained=False)
    with pytest.raises(UsageError, match=match):
        partition(model, spec)


def test_unknown_model_has_no_default_partition() -> None:
    with pytest.raises(UsageError, match="`partition`"):
        partition(nn.Sequential(nn.Linear(2, 2)))
    assert len(partition(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), ["0", "1"])) == 2


def test_block_param_groups_scale_lr_and_skip_frozen() -> None:
    model = build_model("resnet18", 3, pretrained=False)
    blocks = partition(model)
    weights = [0.0, 0.1, 0.0, 1.0, 10.0, 2.0]
    groups = block_param_groups(model, blocks, weights, base_lr=1e-3)
    assert [g["name"] for g in groups] == ["layer1", "layer3", "layer4", "fc"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3, 1e-2, 2e-3])
    with pytest.raises(UsageError, match="`weights`"):
        block_param_groups(model, blocks, [1.0], base_lr=1e-3)


@pytest.mark.parametrize(
    ("frozen", "expected"),
    [
        ([], 0),
        (["stem"], 1),
        (["stem", "layer1", "layer2"], 3),
        (["stem", "layer2"], 1),
        (["layer1"], 0),
        (["stem", "layer1", "layer2", "layer3", "layer4", "fc"], 6),
    ],
)
def test_frozen_prefix_length_follows_the_leading_frozen_blocks(frozen, expected) -> None:
    model = build_model("resnet18", 3, pretrained=False)
    blocks = {b.name: b for b in partition(model)}
    params = {id(p) for name in frozen for p in blocks[name].parameters(model)}
    assert frozen_prefix_length(stages(model), params) == expected


def test_block_owns_by_dotted_prefix_only() -> None:
    block = Block("layer1", ("layer1",))
    assert block.owns("layer1.0.conv1.weight") and not block.owns("layer10.weight")
