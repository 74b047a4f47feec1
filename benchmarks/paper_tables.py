"""Paper Tables I, II and III on the embedded real data with pretrained EfficientNet-Lite0.

- Table I: test accuracy, mean and standard error over the seeds, for the eight comparison
  methods (``optuna_biotune.baselines.run_baseline``) and BioTune (a ``BioTuneSampler`` search
  with ``BioTuneObjective``, then ``final.run_final``: the top-k configurations retrained on
  the full training split with the same seeds: the paper's "best of top-k" and, beside it, the
  top-1 by validation, which does not look at the test set to choose; FT's reference is
  Table I's FT row).
- Table II: BioTune's trainable share per dataset.
- Table III: BioTune's data fraction (10/25/50/100 %) against its test accuracy and search time.

Every method runs on the one training engine (``train.fit``) with the same splits, seeds,
epochs, patience, batch size, base learning rate and image size.

Cells are written to the JSON as soon as they finish; rerunning the same command resumes
(cells whose settings match are kept). ``--stop-after-minutes`` stops starting new cells, so
the tables say honestly which cells were not run at the budget.

Usage (the committed results; see the markdown for the exact command and budget):
    python benchmarks/paper_tables.py --datasets digits mnist5k --epochs 3 --patience 2
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="*", default=["digits", "mnist5k"])
    p.add_argument("--methods", nargs="*", default=None, help="default: all eight; none: BioTune")
    p.add_argument("--seeds", type=int, default=3, help="final/baseline seeds (paper: 3)")
    p.add_argument("--epochs", type=int, default=3, help="max epochs (paper: 30)")
    p.add_argument("--patience", type=int, default=2, help="early stopping (paper: 3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--population", type=int, default=4, help="BioTune population (paper: 10)")
    p.add_argument("--elites", type=int, default=1, help="BioTune elites (paper: 3)")
    p.add_argument("--generations", type=int, default=1, help="after the first (paper: 10)")
    p.add_argument("--search-seeds", type=int, default=1, help="seeds per fitness (paper: 3)")
    p.add_argument("--data-fraction", type=float, default=0.5, help="Table I search (paper 0.5)")
    p.add_argument("--top-k", type=int, default=2, help="configurations retrained (paper: 5)")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--fractions", type=float, nargs="*", default=list(FRACTIONS))
    p.add_argument("--table3-dataset", default="digits")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--stop-after-minutes", type=float, default=0, help="0: no limit")
    p.add_argument("--no-biotune", action="store_true", help="skip Table I's BioTune rows")
    p.add_argument("--out", default=str(RESULTS / "paper_tables"), help="path without suffix")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="combine the cells of these partial JSONs (same settings) into --out and exit",
    )
    p.add_argument("--notes", default=None, help="markdown file appended as the Notes section")
    return p.parse_args(argv)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every cell depends on (a cell is reused only when they match)."""
    return {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "image_size": args.image_size,
        "population": args.population,
        "elites": args.elites,
        "generations": args.generations,
        "search_seeds": args.search_seeds,
        "data_fraction": args.data_fraction,
        "top_k": args.top_k,
        "sampler_seed": args.sampler_seed,
        "model": "efficientnet_lite0",
        "optimizer": "adam",
        "metric": "accuracy",
    }


def evaluations(args: argparse.Namespace) -> int:
    """Fitness evaluations of one search: P + G * (2E + P - E) (paper: 10 + 10 x 13)."""
    return args.population + args.generations * (2 * args.elites + args.population - args.elites)


def run_biotune(args: argparse.Namespace, dataset: str, data_fraction: float) -> dict[str, Any]:
    """One BioTune search on ``dataset`` at ``data_fraction``, then the final retraining."""
    import optuna

    from optuna_biotune import BioTuneObjective, BioTuneSampler
    from optuna_biotune.biotune.report import top_configurations
    from optuna_biotune.engine.seeds import mean_sem, resolve_seeds

    objective = BioTuneObjective(
        dataset=dataset,
        seeds=args.search_seeds,
        data_fraction=data_fraction,
        max_epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        base_lr=args.lr,
        image_size=args.image_size,
        device="cpu",
    )
    objective.blocks  # noqa: B018  (loads data and model outside the timed search)
    sampler = BioTuneSampler(
        population_size=args.population,
        n_elites=args.elites,
        threshold_param="threshold",
        seed=args.sampler_seed,
    )
    # No pruner: the paper trains every individual to early stopping (Optuna's default
    # MedianPruner would cut runs short on the epoch reports of the objective).
    study = optuna.create_study(
        direction="maximize", sampler=sampler, pruner=optuna.pruners.NopPruner()
    )
    started = time.perf_counter()
    study.optimize(objective, n_trials=evaluations(args))
    search_seconds = time.perf_counter() - started
    # The paper's final protocol (as final.run_final) without its FT reference: FT is
    # Table I's own FT row, trained by run_baseline on the same engine.
    started = time.perf_counter()
    seeds = resolve_seeds(args.seeds)
    rows = []
    for rank, conf in enumerate(top_configurations(study, args.top_k), start=1):
        test = objective.retrain_and_test(conf["mask"], conf["lr_weights"], seeds=seeds)
        mean, sem = mean_sem(test)
        _log(f"  top {rank}: trial #{conf['trial']}, test {[round(a, 4) for a in test]}")
        rows.append(
            {k: conf[k] for k in ("trial", "value", "mask", "lr_weights", "trainable_share")}
            | {"rank": rank, "test": test, "mean": mean, "sem": sem}
        )
    best = max(rows, key=lambda r: (r["mean"], -r["rank"]))
    keys = ("trial", "mean", "sem", "trainable_share", "test")
    return {
        "dataset": dataset,
        "data_fraction": data_fraction,
        "evaluations": len(study.trials),
        "search_seconds": round(search_seconds, 1),
        "final_seconds": round(time.perf_counter() - started, 1),
        "best_validation": study.best_value,
        "blocks": objective.blocks,
        "best": {k: best[k] for k in keys},
        "top1": {k: rows[0][k] for k in keys},
        "configurations": rows,
        "trials": [
            {"number": t.number, "state": t.state.name, "value": t.value}
            | {k: t.user_attrs.get(k) for k in ("generation", "mask", "trainable_share")}
            for t in study.trials
        ],
    }


def run_method(args: argparse.Namespace, dataset: str, method: str, splits: Any) -> dict:
    from optuna_biotune.baselines import run_baseline

    result = run_baseline(
        method,
        dataset=dataset,
        model="efficientnet_lite0",
        seeds=args.seeds,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        base_lr=args.lr,
        image_size=args.image_size,
        device="cpu",
        splits=splits,
        log=_log,
    )
    result.pop("command", None)
    return result


def _pct(x: float | None, digits: int = 2) -> str:
    return "not run" if x is None else f"{100 * x:.{digits}f}"


def render_markdown(doc: dict[str, Any]) -> str:
    """The three tables, the budget and the command, as markdown."""
    s = doc["settings"]
    cells = doc["cells"]
    datasets = doc["datasets"]
    methods = doc["methods"]
    lines = [
        "# Paper Tables I-III on the embedded data (EfficientNet-Lite0, CPU)",
        "",
        "Command:",
        "",
        "```bash",
        doc["command"],
        "```",
        "",
        f"Machine: {doc['machine']}. Started {doc['started']}, last cell {doc['updated']}.",
        "",
        "**Budget (far below the paper's):** "
        f"{s['image_size']} px images, at most {s['epochs']} epochs with early-stopping patience "
        f"{s['patience']} (paper: 30 / 3), batch {s['batch_size']}, Adam lr {s['lr']}, "
        f"{s['seeds']} seeds for every test accuracy; BioTune search: population "
        f"{s['population']}, {s['elites']} elite(s), {s['generations']} generation(s) after the "
        f"first = {doc['evaluations_per_search']} fitness evaluations of "
        f"{s['search_seeds']} seed(s) each at data fraction {s['data_fraction']} "
        "(paper: 140 evaluations of 3 seeds), top "
        f"{s['top_k']} configurations retrained (paper: 5).",
        "",
        "## Table I: test accuracy %, mean (standard error) over the seeds",
        "",
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]

    def acc_cell(key: str) -> str:
        c = cells.get(key)
        if c is None:
            return "not run"
        return f"{100 * c['test_accuracy_mean']:.2f} ({100 * c['test_accuracy_stderr']:.2f})"

    for m in methods:
        lines.append(
            f"| {m} | " + " | ".join(acc_cell(f"table1/{d}/{m}") for d in datasets) + " |"
        )

    def bt_cell(d: str, which: str) -> str:
        c = cells.get(f"table1/{d}/BioTune")
        if c is None:
            return "not run"
        r = c[which]
        ft = cells.get(f"table1/{d}/FT")
        rel = ""
        if ft is not None:
            rel = f" {100 * (r['mean'] / ft['test_accuracy_mean'] - 1):+.1f}% vs FT"
        return f"{100 * r['mean']:.2f} ({100 * r['sem']:.2f}){rel}"

    lines.append(
        f"| BioTune (best of top {s['top_k']}, paper protocol) | "
        + " | ".join(bt_cell(d, "best") for d in datasets)
        + " |"
    )
    lines.append(
        "| BioTune (top 1 by validation) | "
        + " | ".join(bt_cell(d, "top1") for d in datasets)
        + " |"
    )
    lines += [
        "",
        "## Table II: trainable share of the model, %",
        "",
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for m in methods:
        row = []
        for d in datasets:
            c = cells.get(f"table1/{d}/{m}")
            row.append("not run" if c is None else f"{100 * c['trainable_share']:.2f}")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    for which, label in (("best", f"best of top {s['top_k']}"), ("top1", "top 1")):
        row = []
        for d in datasets:
            c = cells.get(f"table1/{d}/BioTune")
            row.append("not run" if c is None else f"{100 * c[which]['trainable_share']:.2f}")
        lines.append(f"| BioTune ({label}) | " + " | ".join(row) + " |")
    d3 = doc["table3_dataset"]
    lines += [
        "",
        f"## Table III: BioTune on {d3} by data fraction (same search budget)",
        "",
        "| data fraction | test accuracy % (best of top-k) | top 1 | search seconds | "
        "evaluations |",
        "|---|---|---|---|---|",
    ]
    for f in doc["fractions"]:
        c = cells.get(f"table3/{d3}/{f}")
        if c is None:
            lines.append(f"| {100 * f:g} % | not run | not run | not run | |")
            continue
        lines.append(
            f"| {100 * f:g} % | {100 * c['best']['mean']:.2f} ({100 * c['best']['sem']:.2f}) | "
            f"{100 * c['top1']['mean']:.2f} | {c['search_seconds']:.0f} | {c['evaluations']} |"
        )
    lines += ["", "## Seconds per cell", ""]
    for key, c in cells.items():
        sec = c.get("seconds", c.get("search_seconds", 0) + c.get("final_seconds", 0))
        lines.append(f"- `{key}`: {sec:.0f} s")
    if doc.get("notes"):
        lines += ["", "## Notes", "", *doc["notes"]]
    return "\n".join(lines) + "\n"


def merge(args: argparse.Namespace) -> None:
    """Combine partial runs (parallel processes, same settings) into one JSON and markdown."""
    docs = [json.loads(Path(p).read_text()) for p in args.merge if Path(p).exists()]
    if not docs:
        raise SystemExit("none of the --merge files exists")
    settings = docs[0]["settings"]
    if any(d["settings"] != settings for d in docs):
        raise SystemExit("the partial runs have different settings; rerun them alike")
    doc = dict(docs[0])
    doc["cells"] = {}
    doc["commands"] = [d["command"] for d in docs]
    doc["command"] = "\n".join(
        [
            *doc["commands"],
            "python benchmarks/paper_tables.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        ]
    )
    for key in ("datasets", "methods", "fractions"):
        seen: list = []
        for d in docs:
            seen += [x for x in d[key] if x not in seen]
        doc[key] = seen
    # Every row, column and fraction is shown; cells no process finished read "not run".
    doc["methods"] = list(METHOD_ORDER)
    doc["datasets"] = [*args.datasets, *[x for x in doc["datasets"] if x not in args.datasets]]
    doc["fractions"] = sorted(set(doc["fractions"]) | set(args.fractions))
    doc["started"] = min(d["started"] for d in docs)
    doc["updated"] = max(d["updated"] for d in docs)
    for d in docs:
        doc["cells"].update(d["cells"])
    d3 = doc["table3_dataset"]
    same = doc["cells"].get(f"table1/{d3}/BioTune")
    if same is not None and settings["data_fraction"] in doc["fractions"]:
        doc["cells"].setdefault(f"table3/{d3}/{settings['data_fraction']}", same)
    if args.notes:
        doc["notes"] = Path(args.notes).read_text().rstrip("\n").split("\n")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(render_markdown(doc))
    _log(f"merged {len(docs)} runs into {out.with_suffix('.json')} and {out.with_suffix('.md')}")


METHOD_ORDER = ("FT", "LP", "L1-SP", "L2-SP", "G-LF", "G-FL", "AutoRGN", "LoRA")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        merge(args)
        return
    import platform

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from optuna_biotune.baselines import METHODS, canonical_method
    from optuna_biotune.engine.models import preprocessing
    from optuna_biotune.engine.sources import load_dataset

    methods = [canonical_method(m) for m in (METHODS if args.methods is None else args.methods)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    settings = settings_of(args)
    doc: dict[str, Any] = {}
    if json_path.exists():
        old = json.loads(json_path.read_text())
        if old.get("settings") == settings:
            doc = old
    cmd = "python benchmarks/paper_tables.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    doc.setdefault("started", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    doc.setdefault("cells", {})
    doc.update(
        settings=settings,
        command=cmd.strip()
        if argv is None
        else "python benchmarks/paper_tables.py " + " ".join(argv),
        machine=f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, CPU (shared with other jobs)",
        datasets=args.datasets,
        methods=methods,
        fractions=args.fractions,
        table3_dataset=args.table3_dataset,
        evaluations_per_search=evaluations(args),
    )
    deadline = time.monotonic() + 60 * args.stop_after_minutes if args.stop_after_minutes else None

    def save() -> None:
        doc["updated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        json_path.write_text(json.dumps(doc, indent=1))
        md_path.write_text(render_markdown(doc))

    def run_cell(key: str, fn) -> None:
        if key in doc["cells"]:
            _log(f"{key}: kept from the last run")
            return
        if deadline is not None and time.monotonic() > deadline:
            _log(f"{key}: not run (--stop-after-minutes reached)")
            return
        _log(f"{key}: start")
        started = time.perf_counter()
        doc["cells"][key] = fn()
        _log(f"{key}: done in {time.perf_counter() - started:.0f} s")
        save()

    pre = preprocessing("efficientnet_lite0")
    # Order: Table I per dataset (FT and BioTune first), then Table III's other fractions.
    for d in args.datasets:
        splits = load_dataset(d, image_size=args.image_size, mean=pre.mean, std=pre.std)
        order = ["FT", "BioTune", *[m for m in methods if m != "FT"]]
        for m in order:
            if m == "BioTune" and not args.no_biotune:
                run_cell(
                    f"table1/{d}/BioTune", lambda d=d: run_biotune(args, d, args.data_fraction)
                )
            elif m in methods:
                run_cell(f"table1/{d}/{m}", lambda d=d, m=m, s=splits: run_method(args, d, m, s))
    d3 = args.table3_dataset
    for f in sorted(args.fractions, key=lambda f: (f != args.data_fraction, f)):
        key = f"table3/{d3}/{f}"
        same = doc["cells"].get(f"table1/{d3}/BioTune")
        if f == args.data_fraction and same is not None and key not in doc["cells"]:
            doc["cells"][key] = same  # the Table I search is this fraction's search
            save()
            continue
        run_cell(key, lambda f=f: run_biotune(args, d3, f))
    save()
    _log(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
