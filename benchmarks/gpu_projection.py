"""Issue 6 item 3: the paper's search on one GPU, projected from measured seconds.

The paper's recipe (Sec. III-B): ResNet-50 at 224 px, Flowers-102 (1,020 training and 1,020
validation images, 102 classes), data fraction 0.5 (each fitness evaluation trains on 510 and
validates on 510 images), Adam, batch 64, at most 30 epochs with patience 3, 3 seeds per
evaluation, 140 evaluations; the paper reports 6.0 hours for it on an RTX A6000 (Table III).

This script times what one fitness evaluation does, through the objective's own code path
(``BioTuneObjective.train_config``: reset from the start weights, fresh head, frozen-prefix
activation cache, ``train.fit`` with bf16 autocast and channels-last on CUDA), on synthetic
images of Flowers-102's shape (random pixels; the network's weights are random too, since no
weights can be downloaded on an offline machine: the seconds of a training step do not depend
on the values). For each of a few masks it measures the cache build and the seconds per epoch
(train + validation), then projects

    seconds per evaluation = cache build + seeds x epochs x seconds per epoch
    search hours           = evaluations x seconds per evaluation / 3600

for an assumed number of epochs per run (30, the cap, is the upper bound; early stopping
usually ends sooner, and the paper does not report how soon). It also measures the training
throughput of FT (images/s, forward + backward + Adam step) and its share of the GPU's peak
dense bf16 rate, with the FLOPs of one step counted by ``torch.utils.flop_counter``.

GPU (the figures to commit):
    python benchmarks/gpu_projection.py --device cuda
CPU smoke check at tiny scale (no figure to report):
    python benchmarks/gpu_projection.py --device cpu --threads 1 --image-size 32 --classes 4 \
        --train 16 --val 16 --batch-size 4 --epochs-measured 2 --throughput-steps 1 \
        --out /tmp/gpu_projection_smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAPER_HOURS = 6.0
PAPER_GPU = "NVIDIA RTX A6000"
#: Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name part.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A6000": 154.8, "L40S": 362.0}
#: ResNet-50 blocks (the authors' partition) trained by each measured mask.
MASKS = {
    "FT (all blocks)": [1, 1, 1, 1, 1, 1],
    "layer2..fc": [0, 0, 1, 1, 1, 1],
    "layer3..fc": [0, 0, 0, 1, 1, 1],
    "layer4+fc": [0, 0, 0, 0, 1, 1],
    "fc only": [0, 0, 0, 0, 0, 1],
}


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=102)
    p.add_argument("--train", type=int, default=1020, help="training split (Flowers-102)")
    p.add_argument("--val", type=int, default=1020, help="validation split (Flowers-102)")
    p.add_argument("--data-fraction", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs-measured", type=int, default=3, help="epochs timed per mask")
    p.add_argument("--assumed-epochs", type=int, nargs="+", default=[30, 10])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--evaluations", type=int, default=140)
    p.add_argument("--throughput-steps", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="0: from the device name")
    p.add_argument("--out", default=str(RESULTS / "gpu_projection"), help="path without suffix")
    return p.parse_args(argv)


def synthetic(n: int, size: int, classes: int, device: Any, seed: int) -> Any:
    """``n`` random uint8 RGB images with balanced labels, as the engine's ``TensorData``."""
    import torch

    from optuna_biotune.engine.data import TensorData
    from optuna_biotune.engine.models import IMAGENET_MEAN, IMAGENET_STD

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return TensorData(x, y, IMAGENET_MEAN, IMAGENET_STD).to(device)


def make_objective(args: argparse.Namespace) -> Any:
    """A ``BioTuneObjective`` on ``args.model`` with random weights (offline machine)."""
    import numpy as np

    from optuna_biotune import BioTuneObjective, models
    from optuna_biotune.engine.data import ArrayDataset

    build = models.build_model

    def build_random(name: str, num_classes: int, *, pretrained: bool = True) -> Any:
        return build(name, num_classes, pretrained=False)  # timing only: no download

    models.build_model = build_random
    rng = np.random.default_rng(0)
    setup = ArrayDataset(  # only to set the objective up (model, blocks, chain, cache)
        images=rng.integers(0, 256, (5 * args.classes, 8, 8, 3), dtype=np.uint8),
        labels=np.arange(5 * args.classes) % args.classes,
        name="flowers102-shaped",
    )
    return BioTuneObjective(
        dataset=setup,
        model=args.model,
        seeds=args.seeds,
        data_fraction=args.data_fraction,
        max_epochs=args.epochs_measured,
        patience=args.epochs_measured,  # never stop early: time exactly these epochs
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        compile=args.compile,
    )


def time_mask(objective: Any, mask: list[int], train: Any, val: Any, key: str) -> dict:
    """Cache build and per-epoch seconds of one training run with ``mask`` (weights 1)."""
    import torch

    weights = [float(m) for m in mask]
    sync = torch.cuda.synchronize if objective.tuner.device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    result = objective.tuner.train_config(
        [bool(m) for m in mask], weights, seed=684, train=train, val=val, data_key=key
    )
    sync()
    wall = time.perf_counter() - started
    epochs = [r.seconds for r in result.history]
    steady = epochs[1:] if len(epochs) > 1 else epochs
    return {
        "mask": mask,
        "trainable_share": objective.tuner.trainable_params([bool(m) for m in mask])
        / objective.tuner.total_params,
        "wall_seconds": round(wall, 3),
        "epoch_seconds": [round(s, 3) for s in epochs],
        "seconds_per_epoch": statistics.median(steady),
        "setup_seconds": round(max(0.0, wall - sum(epochs)), 3),
    }


def throughput(objective: Any, train: Any, steps: int, batch_size: int) -> dict[str, Any]:
    """FT training images/s (forward, backward, Adam step) and FLOPs per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = objective.tuner.net
    net.train()
    dev = objective.tuner.device
    cuda = dev.type == "cuda"
    if cuda:
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = train.batch(slice(0, batch_size))
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops_per_image = counter.get_total_flops() / x.shape[0]
    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    images_per_s = steps * x.shape[0] / seconds
    return {
        "batch_size": int(x.shape[0]),
        "steps": steps,
        "images_per_s": images_per_s,
        "flops_per_image": flops_per_image,
        "achieved_tflops": images_per_s * flops_per_image / 1e12,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from optuna_biotune.engine.train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)

    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    _log(f"device {dev} ({name}); building {args.model} with random weights")
    objective = make_objective(args)
    blocks = objective.blocks
    if len(blocks) != 6:
        raise SystemExit(f"expected ResNet-50's 6 blocks, got {blocks}")
    n_train = max(1, round(args.train * args.data_fraction))
    n_val = max(1, round(args.val * args.data_fraction))
    train = synthetic(n_train, args.image_size, args.classes, dev, seed=1)
    val = synthetic(n_val, args.image_size, args.classes, dev, seed=2)
    _log(f"fold: {n_train} training and {n_val} validation images at {args.image_size} px")
    masks = {}
    for label, mask in MASKS.items():
        masks[label] = time_mask(objective, mask, train, val, key=label)
        _log(f"{label}: {masks[label]['seconds_per_epoch']:.3f} s/epoch")
    thr = throughput(objective, train, args.throughput_steps, args.batch_size)
    peak = args.peak_tflops or next(
        (v for k, v in PEAK_BF16_TFLOPS.items() if k in name), float("nan")
    )
    thr["peak_bf16_tflops"] = peak
    thr["share_of_peak"] = thr["achieved_tflops"] / peak
    projections = []
    for epochs in args.assumed_epochs:
        for label, m in masks.items():
            per_eval = m["setup_seconds"] + args.seeds * epochs * m["seconds_per_epoch"]
            hours = args.evaluations * per_eval / 3600
            projections.append(
                {
                    "assumed_epochs": epochs,
                    "mask": label,
                    "seconds_per_evaluation": per_eval,
                    "search_hours": hours,
                    "speedup_vs_paper": PAPER_HOURS / hours,
                }
            )
    doc = {
        "command": "python benchmarks/gpu_projection.py " + " ".join(sys.argv[1:]),
        "device": str(dev),
        "device_name": name,
        "torch": torch.__version__,
        "settings": vars(args),
        "masks": masks,
        "throughput_ft": thr,
        "projections": projections,
        "paper": {"hours": PAPER_HOURS, "gpu": PAPER_GPU, "evaluations": 140, "seeds": 3},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(render(doc))
    _log(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def render(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    t = doc["throughput_ft"]
    lines = [
        "# The paper's search on one GPU, projected from measured seconds",
        "",
        "```bash",
        doc["command"],
        "```",
        "",
        f"Device: {doc['device_name']} ({doc['device']}), torch {doc['torch']}. "
        f"{s['model']} at {s['image_size']} px, {s['classes']} classes, synthetic images, "
        f"fold of {round(s['train'] * s['data_fraction'])} train / "
        f"{round(s['val'] * s['data_fraction'])} val images, batch {s['batch_size']}, "
        f"{s['epochs_measured']} epochs timed per mask (median of the epochs after the first).",
        "",
        "| mask | trainable % | cache/setup s | s per epoch |",
        "|---|---|---|---|",
    ]
    for label, m in doc["masks"].items():
        lines.append(
            f"| {label} | {100 * m['trainable_share']:.1f} | {m['setup_seconds']:.2f} | "
            f"{m['seconds_per_epoch']:.3f} |"
        )
    lines += [
        "",
        f"FT training throughput: {t['images_per_s']:.1f} images/s (batch {t['batch_size']}), "
        f"{t['flops_per_image'] / 1e9:.2f} GFLOP per image per step (forward + backward), "
        f"{t['achieved_tflops']:.3g} TFLOP/s"
        + (
            f" = {100 * t['share_of_peak']:.1f} % of the {t['peak_bf16_tflops']} TFLOP/s dense "
            "bf16 peak."
            if t["peak_bf16_tflops"] == t["peak_bf16_tflops"]  # not NaN: a known GPU
            else " (no peak known for this device: pass --peak-tflops)."
        ),
        "",
        f"Projection ({s['evaluations']} evaluations x {s['seeds']} seeds; paper "
        f"{doc['paper']['hours']} h on an {doc['paper']['gpu']}):",
        "",
        "| epochs per run (assumed) | mask | s per evaluation | search hours | x faster |",
        "|---|---|---|---|---|",
    ]
    for p in doc["projections"]:
        lines.append(
            f"| {p['assumed_epochs']} | {p['mask']} | {p['seconds_per_evaluation']:.1f} | "
            f"{p['search_hours']:.2f} | {p['speedup_vs_paper']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
