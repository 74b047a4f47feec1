"""Where a default search's compute goes, phase by phase (issue 22's 8-FT-run target).

Reads the studies of ``comparison.py default`` parts (``benchmarks/runs/default-<set>-s<N>.db``)
and their results (``benchmarks/results/comparison/default-<set>-s<N>.json``) and splits each
search's cost, in full-data FT runs of the part's own unit, into:

``rung 1``
    every first seed's epochs 1-2 (what every candidate pays before the first rung can cut it);
``epochs 3-6``
    first seeds between the rungs (those above the first rung, and the first ``ETA``);
``epochs 7+``
    first seeds after the second rung, to their early stop;
``first 3``
    of the three above, what the study's first three evaluations spent (no rung can cut them:
    fewer than ``ETA`` earlier first seeds to compare with), listed apart, already counted;
``other seeds``
    the seeds of promoted evaluations after the first;
``re-score``
    ``final``'s re-scoring of one-seed values (``final.rescore_missing``);
``retrain``
    the retraining of the top-1 with 3 seeds on the full training split;
``rest``
    the part's total less the phases above: what its trials' own CPU seconds leave out (the
    sampler, the study's storage, loading the data); slightly negative where a part timed its
    unit more than once (its total puts each command's compute in that command's unit, this
    split uses the last unit).

A trial's CPU seconds (user attr ``search_cost:cpu``) are shared out over its epochs evenly, so a
frozen prefix stays cheap. Nothing here trains. Usage::

    python benchmarks/cost_breakdown.py            # writes results/rungs_design/cost_breakdown.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import optuna

HERE = Path(__file__).resolve().parent
SETS = ("digits", "mnist5k", "mnist-shift", "digits-low")
PHASES = ("rung 1", "epochs 3-6", "epochs 7+", "first 3", "other seeds", "re-score", "retrain")
COLUMNS = (*PHASES, "rest")


def breakdown(study: optuna.Study, result: dict[str, Any]) -> dict[str, float]:
    """``study``'s search cost and ``result``'s retraining, phase by phase, in FT runs."""
    unit = float(result["ft_unit"]["cpu_s"])
    out: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    for t in study.trials:
        epochs = [int(e) for e in t.user_attrs.get("epochs") or []]
        if not epochs:
            continue
        per_epoch = float(t.user_attrs.get("search_cost:cpu", 0.0)) / sum(epochs)
        first = epochs[0]
        out["rung 1"] += per_epoch * min(first, 2)
        out["epochs 3-6"] += per_epoch * max(0, min(first, 6) - 2)
        out["epochs 7+"] += per_epoch * max(0, first - 6)
        if t.number < 3:
            out["first 3"] += per_epoch * first
        out["other seeds"] += per_epoch * sum(epochs[1:])
    retrain = result["retrain"]
    out["re-score"] = float(retrain.get("rescore_cpu_s", 0.0))
    out["retrain"] = float(retrain["cpu_s"]) - out["re-score"]
    out = {k: v / unit for k, v in out.items()}
    total = float(result["cost_ft_runs"])
    out["rest"] = total - sum(v for k, v in out.items() if k != "first 3")
    return {k: round(v, 2) for k, v in out.items()} | {
        "total": total,
        "top1_trainable_share": round(float(result["top1_trainable_share"]), 3),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(HERE / "runs"))
    p.add_argument("--results", default=str(HERE / "results" / "comparison"))
    p.add_argument("--out", default=str(HERE / "results" / "rungs_design" / "cost_breakdown"))
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for name in SETS:
        for seed in range(3):
            part = f"default-{name}-s{seed}"
            db, doc = Path(args.runs) / f"{part}.db", Path(args.results) / f"{part}.json"
            if not db.exists() or not doc.exists():
                print(f"{part}: not run, skipped", file=sys.stderr)
                continue
            study = optuna.load_study(study_name=part, storage=f"sqlite:///{db}")
            rows.append({"part": part} | breakdown(study, json.loads(doc.read_text())))
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/cost_breakdown.py", *given])
    out = Path(args.out)
    out.with_suffix(".json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=1) + "\n"
    )
    head = ["search", *COLUMNS, "total", "top-1 trains"]
    lines = [
        "# Where a default search's compute goes (full-data FT runs)",
        "",
        f"`{command}`; the phases as in the script's docstring (`first 3` is",
        "already counted in the three phases before it).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [r["part"], *(f"{r[k]:.2f}" for k in COLUMNS), f"{r['total']:.2f}"]
        lines.append("| " + " | ".join(cells) + f" | {100 * r['top1_trainable_share']:.0f} % |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
