from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optuna_biotune.engine.models import (
    available_models,
    build_model,
    head_name,
    preprocessing,
    reset_head,
)
from optuna_biotune.errors import RuntimeFailure, UsageError


def _chelsea_batch(size: int = 224) -> torch.Tensor:
    from skimage import data

    img = torch.as_tensor(data.chelsea()).permute(2, 0, 1).float().div(255.0)[None]
    img = nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
    pre = preprocessing("efficientnet_lite0")
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (img - mean) / std


def test_lite0_weights_rank_chelsea_as_a_cat() -> None:
    import timm

    from optuna_biotune.engine.models import lite0_state_dict

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_state_dict(model))
    model.eval()
    with torch.no_grad():
        top5 = model(_chelsea_batch()).topk(5).indices[0].tolist()
    assert set(top5) & set(range(281, 286)), top5  # ImageNet 281-285: the domestic cats
    assert top5[0] in range(281, 286)


def test_lite0_random_init_does_not_see_a_cat() -> None:
    # The cat test above can fail: an untrained backbone ranks the photo arbitrarily.
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        top1 = model(_chelsea_batch()).argmax().item()
    assert top1 not in range(281, 286)


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("efficientnet_lite0", "classifier"),
        ("resnet18", "fc"),
        ("mobilenet_v3_small", "classifier.3"),
        ("timm:resnet10t", "fc"),
    ],
)
def test_build_model_replaces_the_head(name: str, head: str) -> None:
    model = build_model(name, 7, pretrained=name == "efficientnet_lite0")
    assert head_name(model) == head
    layer = model.get_submodule(head)
    assert isinstance(layer, nn.Linear) and layer.out_features == 7
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)


def test_pretrained_lite0_backbone_differs_from_random_init() -> None:
    pre = build_model("efficientnet_lite0", 3, pretrained=True)
    rnd = build_model("efficientnet_lite0", 3, pretrained=False)
    assert not torch.equal(pre.conv_stem.weight, rnd.conv_stem.weight)


def test_reset_head_is_seeded_and_leaves_global_rng_alone() -> None:
    model = build_model("resnet18", 4, pretrained=False)
    state = torch.random.get_rng_state()
    reset_head(model, 684)
    a = model.fc.weight.detach().clone()
    reset_head(model, 559)
    b = model.fc.weight.detach().clone()
    reset_head(model, 684)
    assert torch.equal(model.fc.weight, a)
    assert not torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    ("name", "num_classes", "match"),
    [
        ("resnet5000", 10, "`model`"),
        ("timm:not_a_model_xyz", 10, "`model`"),
        ("resnet18", 1, "`num_classes`"),
        ("resnet18", 2.5, "`num_classes`"),
    ],
)
def test_build_model_rejects_bad_input(name: str, num_classes: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        build_model(name, num_classes, pretrained=False)  # type: ignore[arg-type]


def test_offline_torchvision_weights_fail_with_the_alternative(monkeypatch, tmp_path) -> None:
    import urllib.error

    import torch.hub

    def unreachable(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", unreachable)
    with pytest.raises(RuntimeFailure, match="efficientnet_lite0") as info:
        build_model("resnet18", 10, pretrained=True)
    assert "\n" not in str(info.value)


def test_preprocessing_per_backbone() -> None:
    assert preprocessing("efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    assert preprocessing("resnet50").mean == pytest.approx((0.485, 0.456, 0.406))
    assert preprocessing("vit_b_16").fixed_size
    assert "resnet50" in available_models()
    assert np.allclose(preprocessing("timm:resnet18").std, (0.229, 0.224, 0.225))
