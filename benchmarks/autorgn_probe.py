"""Where AutoRGN's learning-rate multipliers land at the start of fine-tuning (issue 15, part 3).

AutoRGN (Lee et al., ICLR 2023, "Surgical fine-tuning", Sec. 5) gives every parameter tensor
the rate ``lr * RGN_i / max_j RGN_j`` with ``RGN = ||grad|| / ||w||``. This probe computes the
multipliers ``optuna_biotune.baselines.autorgn`` uses at epoch 0 (pretrained EfficientNet-Lite0
at 32 px, a new head seeded as ``run_baseline`` seeds it, the same 4 probe batches of 64) and
writes which tensors hold the largest and how much of the model trains at a small fraction of
the base rate. Nothing trains; about a minute on one CPU.

Usage::

    python benchmarks/autorgn_probe.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from optuna_biotune.baselines.autorgn import relative_gradient_norms, rgn_multipliers
from optuna_biotune.engine import models
from optuna_biotune.engine.sources import load_dataset

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 1001


def probe(dataset: str) -> dict:
    prep = models.preprocessing("efficientnet_lite0")
    splits = load_dataset(dataset, image_size=32, mean=prep.mean, std=prep.std)
    net = models.build_model("efficientnet_lite0", splits.num_classes, pretrained=True)
    models.reset_head(net, SEED)
    gen = np.random.default_rng([SEED, 0])  # run_baseline's probe batches of epoch 0
    index = gen.choice(len(splits.train), size=4 * 64, replace=False)
    batches = [
        splits.train.batch(torch.as_tensor(index[i : i + 64])) for i in range(0, len(index), 64)
    ]
    mult = rgn_multipliers(relative_gradient_norms(net, batches))
    sizes = {n: p.numel() for n, p in net.named_parameters()}
    w = np.array([mult[n] for n in sizes])
    size = np.array([sizes[n] for n in sizes], dtype=float)
    top = sorted(mult.items(), key=lambda kv: -kv[1])[:5]
    return {
        "dataset": dataset,
        "tensors": len(mult),
        "top5": [[n, round(v, 4)] for n, v in top],
        "median_tensor_multiplier": float(np.median(w)),
        "parameter_weighted_mean_multiplier": float((w * size).sum() / size.sum()),
        "parameter_share_below": {
            str(q): float(size[w < q].sum() / size.sum()) for q in (0.01, 0.1, 0.5)
        },
    }


def main() -> None:
    torch.set_num_threads(1)
    rows = [probe(d) for d in ("digits", "mnist5k")]
    (RESULTS / "autorgn_probe.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# AutoRGN's multipliers at epoch 0",
        "",
        "Command: `python benchmarks/autorgn_probe.py`",
        "",
        "| dataset | largest five (tensor: multiplier) | median tensor | "
        "parameter-weighted mean | parameters below 0.01 / 0.1 / 0.5 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        top = ", ".join(f"`{n}` {v:.3f}" for n, v in r["top5"])
        below = " / ".join(f"{100 * v:.1f} %" for v in r["parameter_share_below"].values())
        lines.append(
            f"| {r['dataset']} | {top} | {r['median_tensor_multiplier']:.4f} | "
            f"{r['parameter_weighted_mean_multiplier']:.4f} | {below} |"
        )
    (RESULTS / "autorgn_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
