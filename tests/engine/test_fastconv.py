"""The exact 1x1-input shortcut of ``optuna_biotune.engine.fastconv``."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from optuna_biotune.engine.fastconv import CenterTapConv2d, center_tap, center_tap_shortcut


def _grads(conv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_(True)
    conv.zero_grad(set_to_none=True)
    y = conv(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = [x.grad] + [p.grad for p in conv.parameters()]
    return (y.detach(), *grads)


CASES = [
    # (in, out, kernel, groups, padding, bias)
    (12, 12, 3, 12, 1, True),  # depthwise 3x3
    (12, 12, 5, 12, 2, False),  # depthwise 5x5 (EfficientNet)
    (8, 6, 3, 1, 1, False),  # dense 3x3 (ResNet at 1x1)
    (8, 6, 3, 2, "same", True),  # grouped, "same" padding
    (4, 4, (3, 5), 1, (1, 2), True),  # rectangular kernel
    (8, 6, 1, 1, 0, True),  # pointwise: F.linear
    (8, 8, 1, 8, 0, False),  # pointwise depthwise
]


@pytest.mark.parametrize(
    ("cin", "cout", "k", "groups", "padding", "bias", "stride"),
    # PyTorch allows padding="same" only with stride 1.
    [(*c, s) for c in CASES for s in (1, 2) if not (c[4] == "same" and s > 1)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_shortcut_matches_the_convolution_on_1x1_inputs(
    cin, cout, k, groups, padding, bias, stride, channels_last
):
    torch.manual_seed(0)
    native = nn.Conv2d(cin, cout, k, stride, padding=padding, groups=groups, bias=bias)
    fast = copy.deepcopy(native)
    assert center_tap_shortcut(fast) == 1
    assert isinstance(fast, CenterTapConv2d)
    x = torch.randn(5, cin, 1, 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for a, b in zip(_grads(native, x), _grads(fast, x), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    # Off-center taps get exactly zero gradient, as in the full convolution.
    grad = fast.weight.grad
    assert grad is not None
    center = grad[:, :, (grad.shape[2] - 1) // 2, (grad.shape[3] - 1) // 2]
    assert grad.abs().sum() == pytest.approx(center.abs().sum().item(), rel=1e-6)


def test_other_input_sizes_run_the_convolution_itself():
    torch.manual_seed(0)
    native = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    fast = copy.deepcopy(native)
    center_tap_shortcut(fast)
    for side in (2, 3, 7):
        x = torch.randn(2, 6, side, side)
        assert torch.equal(fast(x), native(x))
    unbatched = torch.randn(6, 1, 1)  # nn.Conv2d takes C x H x W too
    assert torch.equal(fast(unbatched), native(unbatched))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 4, 3, padding=0),  # no padding: a 1x1 input is invalid anyway
        nn.Conv2d(4, 4, 5, padding=1),  # padding off center
        nn.Conv2d(4, 4, 2, padding=1),  # even kernel
        nn.Conv2d(4, 4, 3, padding=1, dilation=2),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(4, 4, 1, padding=1),  # 1x1 kernel, padded: a 3x3 output
    ],
)
def test_convolutions_that_do_not_qualify_are_left_alone(conv):
    assert center_tap(conv) is None
    assert center_tap_shortcut(conv) == 0
    assert type(conv) is nn.Conv2d


def test_subclasses_with_their_own_forward_are_left_alone():
    class Padded(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    conv = Padded(4, 4, 3, padding=1)
    assert center_tap_shortcut(conv) == 0
    assert type(conv) is Padded


def test_model_keeps_its_state_dict_pickles_and_is_idempotent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    keys = list(model.state_dict())
    assert center_tap_shortcut(model) == 2
    assert center_tap_shortcut(model) == 2
    assert list(model.state_dict()) == keys
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.randn(2, 3, 1, 1)
    assert isinstance(loaded[0], CenterTapConv2d)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(copy.deepcopy(model)(x), model(x))


def test_build_model_uses_the_shortcut_and_trains_identically():
    """The default backbone at 16 px reaches 1x1 maps in its last stages; a training step of
    the patched model gives the unpatched model's loss and gradients (up to rounding: the
    products are summed in another order)."""
    from optuna_biotune.engine.models import build_model

    model = build_model("efficientnet_lite0", 3, pretrained=False)
    fast = [m for m in model.modules() if isinstance(m, CenterTapConv2d)]
    assert len(fast) == 44  # all but the 5 Conv2dSame (timm pads those itself)
    native = copy.deepcopy(model)
    for m in native.modules():
        if isinstance(m, CenterTapConv2d):
            m.__class__ = nn.Conv2d
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 3
    losses = []
    for m in (native, model):
        m.train()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    grads = []
    for m in (native, model):
        assert all(p.grad is not None for p in m.parameters())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-4 * float(grads[0].abs().max()))
