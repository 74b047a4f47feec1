"""Do BioTune's data folds differ in difficulty? The same configurations scored on every fold.

BioTune's objective scores generation ``g`` on the stratified fold ``g mod n_folds`` of the
train and validation splits (Colan et al. 2025, Sec. III-C, "stratified data partitioning"; data
fraction 0.5 -> 2 folds), and the memetic evolution compares fitness values of different
generations (an elite keeps the value it was scored with). Comparing across folds is unbiased
only if no fold is easier than another. This benchmark measures it: ``K`` random valid
configurations (uniform genes, the freezing threshold included, redrawn until at least one block
trains; a fixed seed, so every dataset gets the same ``K``) are each scored on every fold by
``BioTuneObjective`` itself (an Optuna trial whose generation is the fold), with the objective's
defaults (30 epochs at most, patience 3, Adam 1e-3, batch 64, data fraction 0.5) except one
seed. Per dataset it reports:

* per configuration: the fitness on each fold and the difference ``fold 1 - fold 0``;
* the mean offset between folds and its standard error over configurations, with a 95 %
  interval (t distribution), and the standard deviation of the differences;
* Spearman's and Kendall's rank correlation between the folds' fitness;
* the share of configuration pairs that two folds order alike, and the share that a
  cross-fold comparison (``i`` on fold 0 against ``j`` on fold 1, as an elite against a later
  newcomer) orders as the two-fold mean does, beside the same share for a same-fold comparison.

Usage (the committed results)::

    python benchmarks/fold_offset.py --datasets digits mnist5k --configs 12
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from scipy import stats

from optuna_biotune.biotune import genome
from optuna_biotune.biotune.objective import BioTuneObjective

RESULTS = Path(__file__).resolve().parent / "results"
#: The system attr that puts a trial in a generation (read by ``trial_generation``).
GENERATION_ATTR = "FoldOffset:generation"


def random_configurations(blocks: list[str], *, k: int, seed: int) -> list[dict[str, float]]:
    """``k`` uniform random gene vectors with at least one block above the threshold."""
    rng = np.random.default_rng(seed)
    names = genome.gene_names(blocks)
    out: list[dict[str, float]] = []
    while len(out) < k:
        params = {name: float(rng.random()) for name in names}
        mask, _ = genome.decode_params(params, blocks)
        if genome.is_valid(mask):
            out.append(params)
    return out


def score(
    objective: BioTuneObjective, study: optuna.Study, params: dict[str, float], fold: int
) -> dict[str, Any]:
    """One fitness evaluation of ``params`` on ``fold``, through the objective's own path."""
    study.enqueue_trial(params)
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, GENERATION_ATTR, fold)
    value = objective(trial)
    study.tell(trial, value)
    attrs = study.trials[-1].user_attrs
    if attrs.get("fold") != fold:
        raise RuntimeError(f"the objective scored fold {attrs.get('fold')}, not {fold}")
    return {
        "fitness": float(value),
        "epochs": attrs.get("epochs"),
        "trainable_share": attrs.get("trainable_share"),
        "mask": attrs.get("mask"),
        "seconds": round(float(attrs.get("seconds", 0.0)), 2),
    }


def pair_shares(f: np.ndarray) -> dict[str, float]:
    """Pairwise orderings: folds alike, cross-fold vs same-fold agreement with the mean.

    Pairs whose two-fold means tie are left out; a comparison that ties counts as wrong.
    """
    k = f.shape[0]
    mean = f.mean(axis=1)
    alike = cross = same = 0.0
    total = 0
    for i, j in itertools.combinations(range(k), 2):
        if mean[i] == mean[j]:
            continue
        total += 1
        truth = np.sign(mean[i] - mean[j])

        def agrees(a: float, b: float, truth: float = truth) -> float:
            return float(np.sign(a - b) == truth)

        alike += float(np.sign(f[i, 0] - f[j, 0]) == np.sign(f[i, 1] - f[j, 1]))
        # An elite scored on one fold against a newcomer on the other, both ways round.
        cross += 0.5 * (agrees(f[i, 0], f[j, 1]) + agrees(f[i, 1], f[j, 0]))
        same += 0.5 * (agrees(f[i, 0], f[j, 0]) + agrees(f[i, 1], f[j, 1]))
    return {
        "pairs": total,
        "folds_order_alike": alike / total if total else float("nan"),
        "cross_fold_agrees_with_mean": cross / total if total else float("nan"),
        "same_fold_agrees_with_mean": same / total if total else float("nan"),
    }


def summarise(f: np.ndarray) -> dict[str, Any]:
    """Offset of fold 1 against fold 0, its standard error and interval, rank correlations."""
    diff = f[:, 1] - f[:, 0]
    k = diff.size
    sd = float(diff.std(ddof=1))
    se = float(sd / np.sqrt(k))
    half = float(stats.t.ppf(0.975, k - 1) * se)
    spread = float(f.mean(axis=1).std(ddof=1))
    shifted = f.copy()
    shifted[:, 1] -= diff.mean()  # the cross-fold comparisons with the mean offset removed
    best = np.sort(f.mean(axis=1))[::-1][:5]
    return {
        "offset_mean": float(diff.mean()),
        "offset_stderr": se,
        "offset_ci95": [float(diff.mean()) - half, float(diff.mean()) + half],
        "difference_sd": sd,
        "t_statistic": float(diff.mean() / se) if se > 0 else float("nan"),
        "p_value_paired_t": float(stats.ttest_rel(f[:, 1], f[:, 0]).pvalue),
        "spearman": float(stats.spearmanr(f[:, 0], f[:, 1]).statistic),
        "kendall": float(stats.kendalltau(f[:, 0], f[:, 1]).statistic),
        "config_mean_sd": spread,
        "fold_means": [float(x) for x in f.mean(axis=0)],
        "differences_negative_zero_positive": [
            int((diff < 0).sum()),
            int((diff == 0).sum()),
            int((diff > 0).sum()),
        ],
        "top5_gaps_median": float(np.median(-np.diff(best))),
        **pair_shares(f),
        "cross_fold_agrees_without_offset": pair_shares(shifted)["cross_fold_agrees_with_mean"],
    }


def summarise_learning(f: np.ndarray, threshold: float) -> dict[str, Any] | None:
    """:func:`summarise` over the configurations at or above ``threshold`` on every fold.

    Configurations that stay near chance on both folds (a tiny learning rate on the few blocks
    that train) inflate the rank correlation; the search's elites are never among them.
    """
    keep = f.min(axis=1) >= threshold
    if f.shape[1] != 2 or keep.sum() < 3:
        return None
    return {"threshold": threshold, "configs": int(keep.sum()), **summarise(f[keep])}


def resummarise(path: Path, threshold: float) -> dict[str, Any]:
    """Recompute every summary from the fitness values stored in ``path`` (no training)."""
    result = json.loads(path.read_text())
    for d in result["datasets"]:
        f = np.array([r["fitness"] for r in d["configurations"]])
        d["summary"] = summarise(f) if f.shape[1] == 2 else None
        d["summary_learning"] = summarise_learning(f, threshold)
    result["resummarised"] = f"python benchmarks/fold_offset.py --resummarise {path.name}"
    return result


def run_dataset(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    objective = BioTuneObjective(
        dataset=dataset,
        seeds=args.seeds,
        data_fraction=args.data_fraction,
        max_epochs=args.epochs,
        patience=args.patience,
        device="cpu",
    )
    blocks = objective.blocks
    configs = random_configurations(blocks, k=args.configs, seed=args.config_seed)
    study = optuna.create_study(direction="maximize")
    started = time.perf_counter()
    rows = []
    for i, params in enumerate(configs):
        per_fold = []
        for fold in range(objective.n_folds):
            per_fold.append(score(objective, study, params, fold))
            print(
                f"{dataset} config {i + 1}/{len(configs)} fold {fold}: "
                f"{per_fold[-1]['fitness']:.4f} in {per_fold[-1]['seconds']:.0f} s "
                f"({time.perf_counter() - started:.0f} s so far)",
                file=sys.stderr,
                flush=True,
            )
        rows.append(
            {
                "config": i,
                "params": params,
                "mask": per_fold[0]["mask"],
                "trainable_share": per_fold[0]["trainable_share"],
                "fitness": [r["fitness"] for r in per_fold],
                "epochs": [r["epochs"] for r in per_fold],
                "seconds": [r["seconds"] for r in per_fold],
            }
        )
    f = np.array([r["fitness"] for r in rows])
    train_sizes = [len(objective.tuner.fold("train", g)) for g in range(objective.n_folds)]
    val_sizes = [len(objective.tuner.fold("val", g)) for g in range(objective.n_folds)]
    return {
        "dataset": dataset,
        "model": objective.tuner.model_name,
        "image_size": int(objective.tuner.splits.train.x.shape[-1]),
        "objective": objective.spec(),
        "blocks": blocks,
        "n_folds": objective.n_folds,
        "fold_train_images": train_sizes,
        "fold_val_images": val_sizes,
        "seeds": list(objective.seeds),
        "configurations": rows,
        "summary": summarise(f) if objective.n_folds == 2 else None,
        "summary_learning": summarise_learning(f, args.learn_threshold),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _learning_rows(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return []
    head = f"the {s['configs']} configurations at or above {s['threshold']} on both folds"
    return [
        f"| {head}: mean offset ± standard error | {s['offset_mean']:+.4f} ± "
        f"{s['offset_stderr']:.4f} (p {s['p_value_paired_t']:.3g}) |",
        f"| {head}: SD of the differences / of the two-fold means | {s['difference_sd']:.4f} / "
        f"{s['config_mean_sd']:.4f} |",
        f"| {head}: Spearman / Kendall | {s['spearman']:.3f} / {s['kendall']:.3f} |",
        f"| {head}: pairs ordered as the two-fold mean, cross-fold / same-fold / cross-fold "
        f"without the offset | {100 * s['cross_fold_agrees_with_mean']:.1f} % / "
        f"{100 * s['same_fold_agrees_with_mean']:.1f} % / "
        f"{100 * s['cross_fold_agrees_without_offset']:.1f} % of {s['pairs']} |",
        f"| {head}: differences negative / zero / positive | "
        f"{' / '.join(map(str, s['differences_negative_zero_positive']))} |",
        f"| {head}: median gap between successive of the best 5 two-fold means | "
        f"{s['top5_gaps_median']:.4f} |",
    ]


def _left_out(d: dict[str, Any]) -> list[str]:
    s = d.get("summary_learning")
    if not s:
        return []
    out = [
        f"config {r['config']} ({' / '.join(f'{v:.4f}' for v in r['fitness'])})"
        for r in d["configurations"]
        if min(r["fitness"]) < s["threshold"]
    ]
    if not out:
        return []
    return [
        f"Below {s['threshold']} on a fold, so left out of the last rows: {', '.join(out)}. A "
        "configuration near chance on one fold and not on the other is a training run that "
        "did not take off (early stop at chance), not a harder fold.",
        "",
    ]


def render(result: dict[str, Any]) -> str:
    lines = [
        "# Fitness across folds: the same configurations scored on every fold",
        "",
        "Command:",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, torch "
        f"{result['machine']['torch']} with {result['machine']['torch_threads']} thread(s), cpu. "
        "Accuracies do not depend on the machine's load.",
        "",
        *(
            [
                f"Summaries recomputed from the stored fitness values (`{result['resummarised']}`"
                " in benchmarks/results, no training).",
                "",
            ]
            if result.get("resummarised")
            else []
        ),
        f"Setting: `BioTuneObjective` defaults (max {result['epochs']} epochs, patience "
        f"{result['patience']}, Adam 1e-3, batch 64, data fraction {result['data_fraction']}) "
        f"with {result['n_seeds']} seed; {result['configs']} random valid configurations "
        f"(uniform genes and threshold, seed {result['config_seed']}), the same for every "
        "dataset, each scored on every fold by the objective (a trial whose generation is the "
        "fold). Offset = fitness on fold 1 - fitness on fold 0 (validation accuracy).",
        "",
    ]
    for d in result["datasets"]:
        s = d["summary"]
        lines += [
            f"## {d['dataset']} ({d['model']}, {d['image_size']} px)",
            "",
            f"Folds: {d['n_folds']}; train images per fold {d['fold_train_images']}, "
            f"validation images per fold {d['fold_val_images']}; {d['seconds']:.0f} s.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| mean fitness, fold 0 / fold 1 | {s['fold_means'][0]:.4f} / "
            f"{s['fold_means'][1]:.4f} |",
            f"| mean offset (fold 1 - fold 0) ± standard error | {s['offset_mean']:+.4f} ± "
            f"{s['offset_stderr']:.4f} |",
            f"| 95 % interval of the offset (t, {result['configs'] - 1} d.f.) | "
            f"[{s['offset_ci95'][0]:+.4f}, {s['offset_ci95'][1]:+.4f}] |",
            f"| paired t, p | {s['t_statistic']:.2f}, {s['p_value_paired_t']:.3g} |",
            f"| SD of the per-configuration differences | {s['difference_sd']:.4f} |",
            f"| SD of the configurations' two-fold means | {s['config_mean_sd']:.4f} |",
            f"| Spearman / Kendall rank correlation between folds | {s['spearman']:.3f} / "
            f"{s['kendall']:.3f} |",
            f"| pairs the two folds order alike | {100 * s['folds_order_alike']:.1f} % of "
            f"{s['pairs']} |",
            f"| pairs a cross-fold comparison orders as the two-fold mean | "
            f"{100 * s['cross_fold_agrees_with_mean']:.1f} % |",
            f"| pairs a same-fold comparison orders as the two-fold mean | "
            f"{100 * s['same_fold_agrees_with_mean']:.1f} % |",
            f"| the same, cross-fold with the mean offset subtracted | "
            f"{100 * s['cross_fold_agrees_without_offset']:.1f} % |",
            *_learning_rows(d.get("summary_learning")),
            "",
            *_left_out(d),
            "| config | trained blocks | trainable share | fold 0 | fold 1 | difference "
            "| epochs |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in d["configurations"]:
            trained = ", ".join(b for b, m in zip(d["blocks"], r["mask"], strict=True) if m)
            lines.append(
                f"| {r['config']} | {trained} | {100 * r['trainable_share']:.1f} % | "
                f"{r['fitness'][0]:.4f} | {r['fitness'][1]:.4f} | "
                f"{r['fitness'][1] - r['fitness'][0]:+.4f} | "
                f"{', '.join(str(e[0]) for e in r['epochs'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    p.add_argument("--configs", type=int, default=12, help="random configurations (K)")
    p.add_argument("--config-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="training seeds per evaluation")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--data-fraction", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "fold_offset"), help="path without suffix")
    p.add_argument("--learn-threshold", type=float, default=0.5, help="see summary_learning")
    p.add_argument("--resummarise", help="a results JSON: recompute its summaries, no training")
    args = p.parse_args(argv)
    if args.resummarise:
        path = Path(args.resummarise)
        result = resummarise(path, args.learn_threshold)
        path.write_text(json.dumps(result, indent=2) + "\n")
        path.with_suffix(".md").write_text(render(result) + "\n")
        return
    if args.configs < 3:
        p.error("--configs must be at least 3")
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    result: dict[str, Any] = {
        "command": f"python benchmarks/fold_offset.py {argv_text}".strip(),
        "configs": args.configs,
        "config_seed": args.config_seed,
        "n_seeds": args.seeds,
        "epochs": args.epochs,
        "patience": args.patience,
        "data_fraction": args.data_fraction,
        "datasets": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        result["datasets"].append(run_dataset(dataset, args))
        result["machine"] = {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_end": os.getloadavg(),
        }
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(render(result) + "\n")
        print(json.dumps({"dataset": dataset, **result["datasets"][-1]["summary"]}), flush=True)


if __name__ == "__main__":
    main()
