"""Exact shortcut for convolutions over a 1x1 feature map.

At small input sizes (the embedded sets run at 32 px) the last stages of a CNN see a 1x1
feature map. A convolution with centered zero padding then only ever multiplies the kernel's
center tap with real data (every other tap meets padding), so it is a matrix product: a
linear layer over the channels. PyTorch's CPU convolutions do not see that. They still do
the whole ``k x k`` work, the depthwise backward takes a slow path, and even a 1x1 kernel runs
through oneDNN's convolution, at half the speed of the same product as ``F.linear``. On this
project's 2-core machine a 5x5 depthwise convolution over ``64 x 1152 x 1 x 1`` took 43 ms
forward and backward, and its center-tap product 0.8 ms
(``benchmarks/results/design_decisions.md``; the current runs: ``benchmarks/results/fastconv.md``).

:func:`center_tap_shortcut` gives such convolutions a forward that, **only when the input is
1x1**, computes the same function from the center tap: ``F.linear`` for ordinary convolutions,
an elementwise product for depthwise ones, and a 1x1 convolution for other grouped ones.
The function is the same: the skipped products are with padding
zeros, and the off-center taps' gradient is exactly zero either way. Results agree up to
floating-point rounding (another order of summation: about 1e-6 relative per layer).
Any other input size runs the module's own forward. Parameters, buffers and ``state_dict`` keys
are untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CenterTapConv2d", "center_tap", "center_tap_shortcut"]


def center_tap(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The kernel index that meets a 1x1 input, or ``None`` when ``conv`` does not qualify.

    Qualifies: a plain :class:`torch.nn.Conv2d` (forward not overridden) with zero padding,
    dilation 1 (or a 1x1 kernel), odd kernel sides and padding ``(k - 1) // 2`` (or
    ``"same"``), any stride: the single output pixel of a 1x1 input is then centered on it.
    """
    if type(conv).forward is not nn.Conv2d.forward or conv.padding_mode != "zeros":
        return None
    kh, kw = conv.kernel_size
    if kh % 2 == 0 or kw % 2 == 0 or (conv.dilation != (1, 1) and (kh, kw) != (1, 1)):
        return None
    center = ((kh - 1) // 2, (kw - 1) // 2)
    if conv.padding == "same" or tuple(conv.padding) == center:
        return center
    return None


class CenterTapConv2d(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` that takes the center-tap shortcut on 1x1 inputs.

    Made by :func:`center_tap_shortcut`, which swaps the class of qualifying modules in place
    (pickling, ``deepcopy`` and ``state_dict`` behave as for ``nn.Conv2d``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-2:] != (1, 1):  # unbatched or larger input: as nn.Conv2d
            return super().forward(x)
        i, j = (self.kernel_size[0] - 1) // 2, (self.kernel_size[1] - 1) // 2
        if self.groups == 1:
            y = F.linear(x.flatten(1), self.weight[:, :, i, j], self.bias)
            return y.view(*y.shape, 1, 1)
        if self.groups == self.in_channels == self.out_channels:  # depthwise
            y = x * self.weight[:, 0, i, j].view(1, -1, 1, 1)
            return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
        w = self.weight[:, :, i : i + 1, j : j + 1]
        return F.conv2d(x, w, self.bias, 1, 0, 1, self.groups)


def center_tap_shortcut(model: nn.Module) -> int:
    """Give every qualifying convolution of ``model`` the 1x1-input shortcut (module docs).

    Idempotent. Returns the number of convolutions that have it.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, CenterTapConv2d):
            n += 1
        elif isinstance(module, nn.Conv2d) and center_tap(module) is not None:
            module.__class__ = CenterTapConv2d
            n += 1
    return n
