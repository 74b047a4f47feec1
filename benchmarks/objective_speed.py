"""Speed of one BioTune fitness evaluation, with and without the frozen-prefix cache.

For the embedded default (digits, ImageNet EfficientNet-Lite0, 32 px, data fraction 0.5,
fold 0, 3 seeds) and several masks that freeze the first ``k`` blocks and train the rest, one
fitness evaluation (3 seeds x a fixed number of epochs, early stopping off so both sides do
the same work) is timed with the cache (built inside the evaluation: the conservative case)
and without it (the frozen prefix recomputed every batch, without gradients). The two sides
alternate, repeated, and the median is kept, so the load of the shared machine affects both
alike. Figures, all from the same run:

* wall and CPU seconds per evaluation with and without the cache, and their ratio;
* the FLOP-split prediction of the ratio, ``(F_prefix + 3 F_suffix) / (3 F_suffix)`` (forward
  of the prefix saved, forward + backward of the suffix kept; F counted with
  ``torch.utils.flop_counter`` on one image), and measured / predicted (target >= 0.9);
* that both sides reach the same validation accuracies;
* training images/s of the whole model (FT) beside forward-only images/s of the same model on
  the same images and batch size (how far training is from the forward-only limit);
* one full fitness evaluation of the default search setting (30 epochs, patience 3, cache on)
  for a typical mask.

Usage (the committed results)::

    python benchmarks/objective_speed.py --epochs 4 --repeats 5 --frozen 2 5 7 8
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from optuna_biotune.biotune.objective import BioTuneObjective

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Platform, CPUs, torch version and threads, and the load average now (run's end)."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_end": os.getloadavg(),
    }


def stage_flops(chain: list[nn.Module], x: torch.Tensor) -> list[int]:
    """Forward FLOPs of each stage of ``chain`` on the batch ``x`` (counted by
    ``torch.utils.flop_counter``); a part's FLOPs are the sum over its stages."""
    out = []
    with torch.no_grad():
        for stage in chain:
            with FlopCounterMode(display=False) as counter:
                x = stage(x)
            out.append(int(counter.get_total_flops()))
    return out


def _evaluate(
    objective: BioTuneObjective, mask: np.ndarray, *, use_cache: bool, warm: bool = False
) -> dict[str, Any]:
    """One fitness evaluation; ``warm``: the prefix activations were cached by an earlier
    trial (the cache is otherwise emptied first, so the evaluation pays for filling it)."""
    objective.tuner.use_cache = use_cache
    if not warm:
        objective.tuner.cache.clear()
    weights = np.where(mask, 1.0, 0.0)
    train, val = objective.tuner.fold("train", 0), objective.tuner.fold("val", 0)
    c0, t0 = time.process_time(), time.perf_counter()
    accs, epochs = [], []
    for seed in objective.seeds:
        r = objective.tuner.train_config(
            mask, weights, seed=seed, train=train, val=val, data_key=("fold", 0)
        )
        accs.append(r.best_val_metric)
        epochs.append(r.epochs_run)
    return {
        "wall": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "val_accuracies": accs,
        "epochs": epochs,
    }


def _throughput(objective: BioTuneObjective, *, epochs: int) -> dict[str, float]:
    """Training images/s of FT (all blocks) and forward-only images/s, same batches."""
    from optuna_biotune.engine.train import fit

    net = objective.tuner.net
    objective.tuner.reset_to_pretrained()
    train = objective.tuner.fold("train", 0)
    chain = nn.Sequential(*objective.tuner.chain)
    r = fit(
        chain,
        param_groups=[{"params": list(net.parameters())}],
        train=train,
        val=objective.tuner.fold("val", 0),
        max_epochs=epochs,
        patience=epochs,
        batch_size=objective.tuner.batch_size,
        device="cpu",
    )
    objective.tuner.mark_trained(range(len(objective.blocks)))  # FT trained every block
    train_seconds = sum(h.seconds for h in r.history)  # includes validation: subtract it below
    val_n = len(objective.tuner.fold("val", 0))
    chain.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(epochs):
            for start in range(0, len(train), objective.tuner.batch_size):
                x, _ = train.batch(slice(start, start + objective.tuner.batch_size))
                chain(x)
    forward_seconds = time.perf_counter() - t0
    forward_ips = epochs * len(train) / forward_seconds
    val_seconds = epochs * val_n / forward_ips  # validation is forward-only
    train_ips = epochs * len(train) / max(train_seconds - val_seconds, 1e-9)
    return {
        "train_images_per_s": train_ips,
        "forward_images_per_s": forward_ips,
        "train_over_forward": train_ips / forward_ips,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per seed (fixed)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repetitions")
    parser.add_argument("--frozen", type=int, nargs="+", default=[1, 3, 5, 8])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--full",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time one default-setting evaluation (30 epochs, patience 3)",
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/objective_speed.py " + " ".join(argv or sys.argv[1:])

    objective = BioTuneObjective(
        max_epochs=args.epochs,
        patience=args.epochs,
        image_size=args.image_size,
        device="cpu",
    )
    blocks = objective.blocks
    x = objective.tuner.fold("train", 0).batch(slice(0, 1))[0]
    flops = stage_flops(objective.tuner.chain, x)
    total_flops = sum(flops)
    n_train, n_val = len(objective.tuner.fold("train", 0)), len(objective.tuner.fold("val", 0))
    rows = []
    for k in args.frozen:
        mask = np.arange(len(blocks)) >= k
        f_prefix = sum(flops[:k])
        f_suffix = total_flops - f_prefix
        predicted = (f_prefix + 3 * f_suffix) / (3 * f_suffix)
        # Exact FLOP predictions of a whole evaluation (validation forward included; "cold"
        # also pays for filling the cache once on the fold's train and val images).
        epochs = args.epochs * len(objective.seeds)
        plain = epochs * (n_train * (f_prefix + 3 * f_suffix) + n_val * (f_prefix + f_suffix))
        warm_flops = epochs * (n_train * 3 * f_suffix + n_val * f_suffix)
        cold_flops = warm_flops + (n_train + n_val) * f_prefix
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "cold": [], "warm": []}
        for _ in range(args.repeats):
            runs["plain"].append(_evaluate(objective, mask, use_cache=False))
            runs["cold"].append(_evaluate(objective, mask, use_cache=True))
            runs["warm"].append(_evaluate(objective, mask, use_cache=True, warm=True))
        wall = {c: statistics.median(r["wall"] for r in runs[c]) for c in runs}
        cpu = {c: statistics.median(r["cpu"] for r in runs[c]) for c in runs}
        row = {
            "frozen_blocks": blocks[:k],
            "k": k,
            "prefix_mflops_per_image": f_prefix / 1e6,
            "suffix_mflops_per_image": f_suffix / 1e6,
            "predicted_speedup": predicted,
            "predicted_speedup_warm_exact": plain / warm_flops,
            "predicted_speedup_cold_exact": plain / cold_flops,
            "wall_s_no_cache": wall["plain"],
            "wall_s_cache_cold": wall["cold"],
            "wall_s_cache_warm": wall["warm"],
            "cpu_s_no_cache": cpu["plain"],
            "cpu_s_cache_cold": cpu["cold"],
            "cpu_s_cache_warm": cpu["warm"],
            "speedup_wall_warm": wall["plain"] / wall["warm"],
            "speedup_cpu_warm": cpu["plain"] / cpu["warm"],
            "speedup_wall_cold": wall["plain"] / wall["cold"],
            "speedup_cpu_cold": cpu["plain"] / cpu["cold"],
            "same_val_accuracies": runs["plain"][0]["val_accuracies"]
            == runs["cold"][0]["val_accuracies"]
            == runs["warm"][0]["val_accuracies"],
            "val_accuracies": runs["plain"][0]["val_accuracies"],
        }
        row["wall_warm_vs_prediction"] = row["speedup_wall_warm"] / predicted
        row["cpu_warm_vs_prediction"] = row["speedup_cpu_warm"] / predicted
        row["cpu_cold_vs_exact_prediction"] = (
            row["speedup_cpu_cold"] / row["predicted_speedup_cold_exact"]
        )
        rows.append(row)
        print(json.dumps(row), flush=True)

    throughput = _throughput(objective, epochs=args.epochs)
    print(json.dumps(throughput), flush=True)

    full = None
    if args.full:
        default = BioTuneObjective(image_size=args.image_size, device="cpu")
        default.blocks  # noqa: B018  (set-up outside the timing)
        default.fold("train", 0), default.fold("val", 0)
        mask = np.arange(len(blocks)) >= 3
        weights = np.where(mask, 1.0, 0.0)
        c0, t0 = time.process_time(), time.perf_counter()
        accs, epochs = [], []
        for seed in default.seeds:
            r = default.train_config(
                mask,
                weights,
                seed=seed,
                train=default.fold("train", 0),
                val=default.fold("val", 0),
                data_key=("fold", 0),
            )
            accs.append(r.best_val_metric)
            epochs.append(r.epochs_run)
        full = {
            "frozen_blocks": blocks[:3],
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "epochs": epochs,
            "val_accuracies": accs,
            "fitness": float(np.mean(accs)),
        }
        print(json.dumps(full), flush=True)

    result = {
        "command": command,
        "machine": {**machine(), "device": "cpu (no GPU in this session)"},
        "setting": {
            "dataset": "digits",
            "model": "efficientnet_lite0",
            "image_size": args.image_size,
            "data_fraction": 0.5,
            "train_images": n_train,
            "val_images": n_val,
            "seeds": objective.seeds,
            "epochs_per_seed": args.epochs,
            "repeats": args.repeats,
            "model_mflops_per_image": total_flops / 1e6,
        },
        "masks": rows,
        "throughput": throughput,
        "default_evaluation": full,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "objective_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "objective_speed.md").write_text(_markdown(result))
    return result


def _markdown(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["setting"]
    lines = [
        "# Fitness evaluation speed: frozen-prefix cache vs recomputing",
        "",
        "Command:",
        "",
        "```bash",
        r["command"],
        "```",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} threads, {m['device']}. The CPU is shared with other jobs "
        f"(load average at the end {m['load_average_end'][0]:.1f}), so absolute seconds vary; "
        "both sides of every ratio ran alternately in the same run.",
        "",
        f"Setting: {s['dataset']}, {s['model']} at {s['image_size']} px "
        f"({s['model_mflops_per_image']:.1f} MFLOPs forward per image), data fraction "
        f"{s['data_fraction']} (fold 0: {s['train_images']} train, {s['val_images']} val "
        f"images), seeds {s['seeds']}, {s['epochs_per_seed']} epochs per seed (early stopping "
        f"off; with the default patience of 3 every evaluation runs at least 4), median of "
        f"{s['repeats']} alternating repetitions. Convolutions over 1x1 maps take the exact "
        "shortcut of optuna_biotune.engine.fastconv on both sides "
        "(benchmarks/results/fastconv.md).",
        "",
        "Speed-up = seconds without the cache / with it. *Warm*: the prefix activations were "
        "cached by an earlier trial on the same fold (the steady state the FLOP split "
        "describes); *cold*: the evaluation fills the cache itself (few epochs per seed, as "
        "here, is the worst case for amortising the fill; the search runs up to 30).",
        "",
        "| frozen prefix | F_prefix MFLOPs | F_suffix MFLOPs | predicted (F_p + 3 F_s) / 3 F_s | "
        "s no cache (wall / CPU) | s warm (wall / CPU) | speed-up warm (wall / CPU) | "
        "warm / predicted (wall / CPU) | s cold (wall / CPU) | speed-up cold CPU | "
        "cold exact prediction | same val acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["masks"]:
        lines.append(
            f"| {row['k']} blocks (to {row['frozen_blocks'][-1]}) | "
            f"{row['prefix_mflops_per_image']:.2f} | {row['suffix_mflops_per_image']:.2f} | "
            f"{row['predicted_speedup']:.2f} | "
            f"{row['wall_s_no_cache']:.1f} / {row['cpu_s_no_cache']:.1f} | "
            f"{row['wall_s_cache_warm']:.1f} / {row['cpu_s_cache_warm']:.1f} | "
            f"{row['speedup_wall_warm']:.2f} / {row['speedup_cpu_warm']:.2f} | "
            f"{row['wall_warm_vs_prediction']:.2f} / {row['cpu_warm_vs_prediction']:.2f} | "
            f"{row['wall_s_cache_cold']:.1f} / {row['cpu_s_cache_cold']:.1f} | "
            f"{row['speedup_cpu_cold']:.2f} | {row['predicted_speedup_cold_exact']:.2f} | "
            f"{row['same_val_accuracies']} |"
        )
    t = r["throughput"]
    lines += [
        "",
        f"Whole model (FT), same images and batch size: training "
        f"{t['train_images_per_s']:.0f} images/s, forward only "
        f"{t['forward_images_per_s']:.0f} images/s (ratio {t['train_over_forward']:.2f}; "
        "forward + backward costs about 3 forwards, so 0.33 is the FLOP limit).",
    ]
    f = r.get("default_evaluation")
    if f:
        lines += [
            "",
            f"One fitness evaluation at the default search setting (30 epochs, patience 3, "
            f"3 seeds, cache on, first {len(f['frozen_blocks'])} blocks frozen): "
            f"{f['wall_s']:.0f} s wall, {f['cpu_s']:.0f} CPU s; epochs per seed {f['epochs']}, "
            f"fitness {f['fitness']:.4f}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
