"""The markdown and figure of ``comparison.py`` (``python benchmarks/comparison.py report``).

Reads what the parts wrote under ``benchmarks/results/comparison/`` and writes
``benchmarks/results/comparison.md`` and ``comparison_samplers.png``. Cells a part has not run
yet read "not run"; nothing here trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optuna_biotune.engine.seeds import mean_sem

SAMPLER_LABELS = {
    "biotune": "BioTuneSampler",
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "random": "RandomSampler",
}
ORDER = ("LP", "L1-SP", "L2-SP", "G-LF", "G-FL", "AutoRGN", "LoRA")


def _pct(mean: float, sem: float) -> str:
    return f"{100 * mean:.2f} ± {100 * sem:.2f}"


def _across(values: list[float]) -> str:
    """Mean ± standard error across searches; one search has no spread to show."""
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (one search)"
    return _pct(*mean_sem(values))


def _read(folder: Path, pattern: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))]


def _at_budget(cell: dict[str, Any], epochs: int) -> str:
    """Seeds whose best validation epoch is the last allowed one (a sign of under-training)."""
    best = cell.get("best_epochs") or []
    n = sum(1 for b in best if b >= epochs)
    return f"{n}/{len(best)}"


def _methods_rows(doc: dict[str, Any], searches: list[dict[str, Any]]) -> list[str]:
    cells = doc["cells"]
    epochs = doc["settings"]["epochs"]
    ft, unit = cells.get("FT@0.001"), _unit(doc)
    if ft is None or unit is None:
        return ["FT at 1e-3 not run yet: no unit, no table."]
    lines = [
        f"Unit: one FT run (one seed, lr 1e-3, full training split) = {unit:.1f} CPU s "
        "in this dataset's `methods` run.",
        "",
        "| method | test accuracy % (± s.e.) | validation % | trainable share % | "
        "compute (FT runs) | seeds best at epoch 30 | epochs run |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label: str, c: dict[str, Any], compute: float) -> str:
        val = sum(c["val_accuracies"]) / len(c["val_accuracies"])
        return (
            f"| {label} | {_pct(c['test_accuracy_mean'], c['test_accuracy_stderr'])} | "
            f"{100 * val:.2f} | {100 * c['trainable_share']:.2f} | {compute:.1f} | "
            f"{_at_budget(c, epochs)} | {c['epochs_run']} |"
        )

    lines.append(row("FT, lr 1e-3 (paper)", ft, ft["cpu_s"] / unit))
    sweep = {k: c for k, c in cells.items() if k.startswith("FT@")}
    if len(sweep) > 1:
        best_key = max(sweep, key=lambda k: sum(sweep[k]["val_accuracies"]))
        cost = sum(c["cpu_s"] for c in sweep.values()) / unit
        rates = ", ".join(k[3:] for k in sweep)
        lines.append(
            row(
                f"FT, lr tuned on validation ({best_key[3:]} of {rates})",
                sweep[best_key],
                cost,
            )
        )
        for k, c in sweep.items():
            if k != "FT@0.001":
                label = f"&nbsp;&nbsp;FT, lr {k[3:]} (sweep member)"
                lines.append(row(label, c, c["cpu_s"] / unit))
    for m in ORDER:
        c = cells.get(m)
        lines.append(f"| {m} | not run | | | | | |" if c is None else row(m, c, c["cpu_s"] / unit))
    tuned = {k: c for k, c in cells.items() if k.startswith("AutoRGN@")}
    if tuned and "AutoRGN" in cells:
        tuned["AutoRGN@0.001"] = cells["AutoRGN"]
        best_key = max(tuned, key=lambda k: sum(tuned[k]["val_accuracies"]))
        cost = sum(c["cpu_s"] for c in tuned.values()) / unit
        rates = ", ".join(sorted((k[8:] for k in tuned), key=float))
        lines.append(
            row(
                f"AutoRGN, base lr tuned on validation ({best_key[8:]} of {rates})",
                tuned[best_key],
                cost,
            )
        )
    done = [s for s in searches if s.get("complete")]
    half = cells.get("ft_unit_search_budget")
    if done and half:
        accs = [s["top1_test_accuracy"] for s in done]
        shares = [s.get("top1_trainable_share") for s in done]
        shares = [x for x in shares if x is not None]
        # Each search counted in its own run's FT unit (half data), moved to this unit.
        scale = half["unit_cpu_s"] / unit
        costs = [s["search_ft_runs_cpu"] * scale + 3 for s in done]
        share = f"{100 * sum(shares) / len(shares):.2f}" if shares else "n/a"
        per = ", ".join(f"{100 * a:.2f}" for a in accs)
        spread = f"**{_across(accs)}**" + (" (s.e. across searches)" if len(done) > 1 else "")
        lines.append(
            f"| **BioTune, top-1 by validation** ({len(done)} search"
            f"{'es' if len(done) > 1 else ''}: {per}) | {spread} | "
            f"{100 * sum(s['best_validation'] for s in done) / len(done):.2f} (search fold) | "
            f"{share} | {sum(costs) / len(costs):.1f} | | |"
        )
    else:
        lines.append("| BioTune, top-1 by validation | not run | | | | | |")
    return lines


def _sampler_section(runs: list[dict[str, Any]], dataset: str, unit: float | None) -> list[str]:
    mine = [r for r in runs if r["dataset"] == dataset]
    if not mine:
        return [f"Not run yet on {dataset}."]
    n = min(r["evaluations"] for r in mine)
    lines = [
        f"{n} evaluations per search (1 seed each, data fraction 0.5, the paper's protocol "
        "exactly: no racing), then the top-1 configuration by validation retrained on the full "
        "training split with seeds 1001-1003 and tested. BioTuneSampler's evaluations move to "
        "the next stratified fold each generation (paper Sec. 3); the other samplers have no "
        "generations, so all their evaluations score on fold 0: their best validation is a "
        "maximum over one fold's noise and reads higher; the test column is the judge. "
        "Compute: the search's CPU seconds in this dataset's FT runs, plus 3 for the "
        "retraining (an upper bound), mean over searches.",
        "",
        f"| sampler | searches (seeds) | best validation after {n} % (± s.e.) | "
        "top-1 test accuracy % (± s.e. across searches) | each search's top-1 test % | "
        "each search's trainable share % | invalid evaluations | compute (FT runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in SAMPLER_LABELS.items():
        rs = [r for r in mine if r["sampler"] == key]
        if not rs:
            lines.append(f"| {label} | not run | | | | | | |")
            continue
        best = _across([r["best_so_far"][n - 1] for r in rs])
        test = _across([r["final"]["mean"] for r in rs])
        each = ", ".join(f"{100 * r['final']['mean']:.2f}" for r in rs)
        shares = ", ".join(f"{100 * r['final']['trainable_share']:.1f}" for r in rs)
        seeds = ", ".join(str(r["seed"]) for r in rs)
        invalid = sum(r["invalid"] for r in rs)
        cpu = sum(_sampler_cpu(r, unit) for r in rs) / len(rs)
        cost = "n/a" if unit is None else f"{cpu / unit:.1f}"
        lines.append(
            f"| {label} | {len(rs)} ({seeds}) | {best} | {test} | {each} | {shares} | "
            f"{invalid} | {cost} |"
        )
    return lines


def _figure(runs: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    datasets = sorted({r["dataset"] for r in runs})
    if not datasets:
        return False
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        lows = []
        for key, label in SAMPLER_LABELS.items():
            rs = [r for r in runs if r["dataset"] == d and r["sampler"] == key]
            if not rs:
                continue
            n = min(len(r["best_so_far"]) for r in rs)
            per_step = [[100 * r["best_so_far"][i] for r in rs] for i in range(n)]
            stats = [mean_sem(v) for v in per_step]
            curve = [m for m, _ in stats]
            xs = range(1, n + 1)
            (line,) = ax.plot(xs, curve, label=f"{label} ({len(rs)})")
            if len(rs) > 1:  # the band: mean ± standard error across searches
                lo = [m - e for m, e in stats]
                hi = [m + e for m, e in stats]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
            lows.append(curve[min(4, n - 1)])
        if lows:  # from the fifth evaluation on: the first draws would flatten the rest
            ax.set_ylim(bottom=min(lows) - 1, top=100.2)
        ax.set_title(d)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("validation accuracy %")
        ax.legend()
    fig.suptitle(
        "Best validation accuracy so far: mean over searches (their number in brackets), "
        "band ± s.e."
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _unit(doc: dict[str, Any] | None) -> float | None:
    """CPU seconds of one FT run (lr 1e-3, full training split) in a ``methods`` run."""
    ft = None if doc is None else doc["cells"].get("FT@0.001")
    return None if ft is None else ft["cpu_s"] / len(ft["test_accuracies"])


def _sampler_cpu(run: dict[str, Any], unit: float | None) -> float:
    """CPU seconds of a sampler search with its top-1's retraining, counted as 3 FT runs (an
    upper bound: its frozen blocks train faster); without a unit, the search alone."""
    return run["search_cpu_s"] + (0.0 if unit is None else 3 * unit)


def _cost_section(
    methods: dict[str, dict[str, Any]],
    searches: list[dict[str, Any]],
    fractions: list[dict[str, Any]],
    samplers: list[dict[str, Any]],
) -> list[str]:
    """What running each part cost (CPU minutes, 1 torch thread, so about the wall minutes of
    a part with a core to itself) and the total: issue 15 asks each part to fit 90 minutes."""
    rows: list[tuple[str, float]] = []
    for dataset, doc in sorted(methods.items()):
        cpu = sum(c.get("cpu_s", 0.0) for c in doc["cells"].values())
        rows.append((f"methods --dataset {dataset}", cpu))
    for docs, part, option in (
        (searches, "biotune", lambda s: f"--search-seed {s['budget']['sampler_seed']}"),
        (fractions, "fraction", lambda s: f"--fraction {s['budget']['data_fraction']:g}"),
    ):
        for s in docs:  # a search part: its search and its `final` retraining
            cpu = s["search_cpu_s"] + float(s.get("final_seconds") or 0.0)
            rows.append((f"{part} --dataset {s['dataset']} {option(s)}", cpu))
    for s in samplers:
        unit = _unit(methods.get(s["dataset"]))
        rows.append(
            (
                f"samplers --dataset {s['dataset']} --sampler {s['sampler']} --seed {s['seed']}",
                _sampler_cpu(s, unit),
            )
        )
    if not rows:
        return []
    lines = [
        "## What running it costs",
        "",
        "CPU minutes of each part that has run (1 torch thread: a part with a core to itself "
        "takes about as many wall minutes; two parts run side by side on 2 cores). A "
        "`methods` part sums its cells; a search adds its `final` retraining; a sampler "
        "search adds 3 FT runs for its retraining (an upper bound). Parts are resumable, and "
        "a search stops at `--minutes` (85) and continues when its command is run again. Not "
        "counted: the 3 FT runs a `biotune`/`fraction` part trains for its own FT line (about "
        "1 CPU minute on digits, 4 on mnist5k).",
        "",
        "| part | CPU minutes |",
        "|---|---|",
        *[f"| `{part}` | {cpu / 60:.0f} |" for part, cpu in rows],
        "",
        f"Total of the parts above: {sum(c for _, c in rows) / 3600:.1f} CPU hours over "
        f"{len(rows)} parts; the longest part {max(c for _, c in rows) / 60:.0f} CPU minutes.",
        "",
    ]
    return lines


def write_report(folder: Path, results: Path) -> Path:
    """Write ``comparison.md`` (and the sampler figure) from the parts' results."""
    methods = {d["dataset"]: d for d in _read(folder, "methods-*.json")}
    searches = _read(folder, "biotune-*.json")
    fractions = _read(folder, "fraction-*.json")
    samplers = _read(folder, "samplers-*.json")
    commands: list[str] = [d["command"] for d in methods.values()]
    run = "python benchmarks/comparison.py"
    commands += [
        f"{run} biotune --dataset {s['dataset']} --search-seed {s['budget']['sampler_seed']}"
        for s in searches
    ]
    commands += [
        f"{run} fraction --dataset {s['dataset']} --fraction {s['budget']['data_fraction']:g}"
        for s in fractions
    ]
    commands += [s["command"] for s in samplers]
    lines = [
        "# Comparison at the paper's per-run budget",
        "",
        "Written by `python benchmarks/comparison.py report` from the parts' results in "
        "`benchmarks/results/comparison/` (each JSON holds its command; the parts are listed "
        "in `benchmarks/comparison.py`). Budget of every training run: EfficientNet-Lite0 "
        "(ImageNet weights) at 32 px, Adam, batch 64, no augmentation, at most 30 epochs, "
        "early-stopping patience 3 on validation accuracy, best epoch restored; test "
        "accuracies over seeds 1001-1003. CPU, 1 torch thread per process, on the project's "
        "shared 2-core machine; compute is counted in CPU seconds and expressed in FT runs "
        "(one seed of FT at lr 1e-3 on the full training split, timed in the same dataset's "
        "`methods` run).",
        "",
    ]
    for dataset in ("digits", "mnist5k"):
        lines += [f"## Table I: {dataset}", ""]
        doc = methods.get(dataset)
        mine = [s for s in searches if s["dataset"] == dataset]
        if doc is None:
            lines += ["Not run yet.", ""]
            continue
        lines += [*_methods_rows(doc, mine), ""]
        if mine:
            lines += [
                "BioTune searches (package default protocol; population 10, 3 elites, one "
                "generation after the first = 23 evaluations of 3 seeds at data fraction 0.5; "
                "compute = the search in FT runs + 3 for the final retraining of the top-1 "
                "configuration, an upper bound since its frozen blocks train faster):",
                "",
                "| sampler seed | evaluations (raced) | search in FT runs (its own unit) | "
                "best validation % | top-1 test % | trainable share % |",
                "|---|---|---|---|---|---|",
            ]
            for s in sorted(mine, key=lambda s: s["budget"]["sampler_seed"]):
                if not s.get("complete"):
                    lines.append(f"| {s['budget']['sampler_seed']} | running | | | | |")
                    continue
                share = s.get("top1_trainable_share")
                lines.append(
                    f"| {s['budget']['sampler_seed']} | {s['evaluations']} ({s['raced']}) | "
                    f"{s['search_ft_runs_cpu']} | {100 * s['best_validation']:.2f} | "
                    f"{_pct(s['top1_test_accuracy'], s['top1_test_accuracy_stderr'])} | "
                    f"{'n/a' if share is None else f'{100 * share:.2f}'} |"
                )
            lines.append("")
    lines += [
        "## Table III: data fraction (digits, sampler seed 0, same search budget)",
        "",
        "| data fraction | top-1 test % | search in FT runs (its own unit) | search CPU s | "
        "search in full-data FT runs | evaluations (raced) |",
        "|---|---|---|---|---|---|",
    ]
    digits_unit = _unit(methods.get("digits"))
    by_fraction = {f["budget"]["data_fraction"]: f for f in fractions if f.get("complete")}
    for s in searches:
        if s["dataset"] == "digits" and s["budget"]["sampler_seed"] == 0 and s.get("complete"):
            by_fraction.setdefault(0.5, s)
    for frac in (0.1, 0.25, 0.5, 1.0):
        s = by_fraction.get(frac)
        if s is None:
            lines.append(f"| {100 * frac:g} % | not run | | | | |")
            continue
        full = "n/a" if digits_unit is None else f"{s['search_cpu_s'] / digits_unit:.1f}"
        lines.append(
            f"| {100 * frac:g} % | "
            f"{_pct(s['top1_test_accuracy'], s['top1_test_accuracy_stderr'])} | "
            f"{s['search_ft_runs_cpu']} | {s['search_cpu_s']:.0f} | {full} | "
            f"{s['evaluations']} ({s['raced']}) |"
        )
    lines += [
        "",
        "Search compute in its own FT unit: one FT run at the search's per-run budget (fold 0 "
        "of the fraction of the training data), timed in its command. In full-data FT runs: "
        "the search's CPU seconds over the digits `methods` run's FT unit (one FT run on the "
        "full training split), the same yardstick for every fraction.",
        "",
        "## BioTuneSampler against Optuna's samplers on BioTune's problem",
        "",
    ]
    for dataset in ("digits", "mnist5k"):
        unit = _unit(methods.get(dataset))
        lines += [f"### {dataset}", "", *_sampler_section(samplers, dataset, unit), ""]
    if _figure(samplers, results / "comparison_samplers.png"):
        lines += ["![best validation so far](comparison_samplers.png)", ""]
    lines += _cost_section(methods, searches, fractions, samplers)
    if commands:
        lines += ["## Commands", "", "```bash", *sorted(set(commands)), "```", ""]
    out = results / "comparison.md"
    out.write_text("\n".join(lines))
    return out
