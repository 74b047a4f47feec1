"""Speed of the exact 1x1-input shortcut (``optuna_biotune.engine.fastconv``) against PyTorch's own
convolutions, in the same run.

Two measurements, each alternating the two sides and keeping the median:

* one training step (forward, cross-entropy, backward) of whole backbones built by
  ``models.build_model`` at small input sizes, with the shortcut and with every patched
  convolution turned back into a plain ``nn.Conv2d``;
* forward + backward of single convolutions over a 1x1 map (the shapes EfficientNet-Lite0's
  last stages see at 32 px), shortcut against the full ``k x k`` convolution.

Usage (the committed results)::

    python benchmarks/fastconv.py --repeats 7
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from objective_speed import machine  # benchmarks/ is on the path when run as a script
from torch import nn

from optuna_biotune.engine.fastconv import CenterTapConv2d, center_tap_shortcut
from optuna_biotune.engine.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def _unpatched(model: nn.Module) -> nn.Module:
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, CenterTapConv2d):
            m.__class__ = nn.Conv2d
    return plain


def _median_ms(fn: Any, repeats: int, inner: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner * 1e3)
    return statistics.median(times)


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()

    return run


def _ab(fast: Any, plain: Any, repeats: int, inner: int) -> tuple[float, float]:
    """Median ms of both sides, alternating them ``repeats`` times."""
    f, p = [], []
    fast(), plain()
    for _ in range(repeats):
        f.append(_median_ms(fast, 1, inner))
        p.append(_median_ms(plain, 1, inner))
    return statistics.median(f), statistics.median(p)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    command = "python benchmarks/fastconv.py " + " ".join(argv or sys.argv[1:])
    torch.manual_seed(0)
    n = args.batch_size

    models = []
    for name, size in (("efficientnet_lite0", 32), ("resnet18", 32), ("mobilenet_v2", 32)):
        model = build_model(name, 10, pretrained=False).train()
        model.to(memory_format=torch.channels_last)
        plain = _unpatched(model)
        x = torch.randn(n, 3, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (n,))
        fast_ms, plain_ms = _ab(_step(model, x, y), _step(plain, x, y), args.repeats, 3)
        row = {
            "model": name,
            "image_size": size,
            "patched_convs": sum(isinstance(m, CenterTapConv2d) for m in model.modules()),
            "ms_shortcut": fast_ms,
            "ms_pytorch": plain_ms,
            "speedup": plain_ms / fast_ms,
        }
        models.append(row)
        print(json.dumps(row), flush=True)

    convs = []
    for channels, k in ((1152, 5), (1152, 3), (512, 3)):
        groups = channels if channels != 512 else 1  # depthwise, and ResNet's dense 3x3
        plain = nn.Conv2d(channels, channels, k, padding=k // 2, groups=groups, bias=False)
        fast = copy.deepcopy(plain)
        center_tap_shortcut(fast)
        x = torch.randn(n, channels, 1, 1).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)

        def run(conv: nn.Module, x: torch.Tensor = x) -> Any:
            def go() -> None:
                conv.zero_grad(set_to_none=True)
                conv(x).sum().backward()

            return go

        fast_ms, plain_ms = _ab(run(fast), run(plain), args.repeats, 10)
        row = {
            "shape": [n, channels, 1, 1],
            "kernel": k,
            "groups": groups,
            "ms_shortcut": fast_ms,
            "ms_pytorch": plain_ms,
            "speedup": plain_ms / fast_ms,
        }
        convs.append(row)
        print(json.dumps(row), flush=True)

    result = {
        "command": command,
        "machine": machine(),
        "batch_size": n,
        "repeats": args.repeats,
        "models": models,
        "convolutions": convs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fastconv.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "fastconv.md").write_text(_markdown(result))
    return result


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# The 1x1-input shortcut against PyTorch's convolutions",
        "",
        "```bash",
        r["command"],
        "```",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} threads (load average at the end {m['load_average_end'][0]:.1f})."
        f" Batch {r['batch_size']}, channels-last, medians of {r['repeats']} alternating "
        "repetitions. Both sides compute the same outputs and gradients "
        "(tests/engine/test_fastconv.py).",
        "",
        "One training step (forward, loss, backward) of the whole model, random weights:",
        "",
        "| model | input | convolutions patched | ms shortcut | ms PyTorch | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["models"]:
        lines.append(
            f"| {row['model']} | {row['image_size']} px | {row['patched_convs']} | "
            f"{row['ms_shortcut']:.1f} | {row['ms_pytorch']:.1f} | {row['speedup']:.2f} |"
        )
    lines += [
        "",
        "One convolution over a 1x1 map, forward + backward:",
        "",
        "| input | kernel | groups | ms shortcut | ms PyTorch | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["convolutions"]:
        lines.append(
            f"| {'x'.join(map(str, row['shape']))} | {row['kernel']}x{row['kernel']} | "
            f"{row['groups']} | {row['ms_shortcut']:.2f} | {row['ms_pytorch']:.2f} | "
            f"{row['speedup']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
