"""EvoPruneDeepTL on the embedded datasets: pruned head vs unpruned head, and cost per evaluation.

For each dataset and GA seed: an ``EvoPruneSampler`` study on ``EvoPruneObjective``
(EfficientNet-Lite0 ImageNet features, cached; head 1280 -> 512 -> 512 -> classes, first
hidden layer pruned), then the best mask (highest validation accuracy, ties toward fewer
neurons) and the unpruned head are each trained with 3 training seeds and scored on the test
split. Figures, all measured in the same run:

* test accuracy of the best mask and of the unpruned head (mean over 3 training seeds), and
  their difference;
* share of active neurons of the best mask;
* per evaluation: training CPU seconds and wall seconds (the machine is shared, so the wall
  time depends on its load, printed beside), and the same for the unpruned head.

``--speed`` only times evaluations (fp32 and bf16, 1 and 2 threads, pruned and unpruned
heads, alternating); ``--overhead`` only times the storage and sampler around a trial.

Usage (the committed results: ``benchmarks/results/evoprune.md`` names the exact commands)::

    python benchmarks/evoprune.py --datasets digits --seeds 0 1 2 --population 30 \
        --evaluations 200 --out benchmarks/results/evoprune-digits
    python benchmarks/evoprune.py --datasets mnist5k --seeds 0 1 2 --population 30 \
        --evaluations 200 --out benchmarks/results/evoprune-mnist5k
    python benchmarks/evoprune.py --datasets digits --seeds 0 1 2 --population 30 \
        --evaluations 300 --layers both --out benchmarks/results/evoprune-digits-both
    python benchmarks/evoprune.py --merge benchmarks/results/evoprune-digits.json \
        benchmarks/results/evoprune-mnist5k.json benchmarks/results/evoprune-digits-both.json \
        --out benchmarks/results/evoprune --note ...
    python benchmarks/evoprune.py --speed 3 --rounds 3 --datasets digits mnist5k \
        --out benchmarks/results/evoprune-speed
    python benchmarks/evoprune.py --overhead 60 --out benchmarks/results/evoprune-overhead
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from optuna_biotune.evoprune import EvoPruneSampler
from optuna_biotune.evoprune.objective import EvoPruneObjective

RESULTS = Path(__file__).resolve().parent / "results"


def _unpruned_cost(objective: EvoPruneObjective, repeats: int) -> dict[str, float]:
    full = [np.ones(objective.hidden, dtype=np.int8) for _ in range(objective.n_layers)]
    cpu, wall, epochs = [], [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        r = objective.train(full)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
        epochs.append(r.epochs)
    return {
        "train_cpu_seconds": float(np.median(cpu)),
        "train_wall_seconds": float(np.median(wall)),
        "epochs": float(np.mean(epochs)),
    }


def run_one(
    objective: EvoPruneObjective, *, seed: int, population: int, evaluations: int
) -> dict[str, Any]:
    study = optuna.create_study(
        direction="maximize", sampler=EvoPruneSampler(seed=seed, population_size=population)
    )
    started = time.perf_counter()
    study.optimize(objective, n_trials=evaluations)
    search_seconds = time.perf_counter() - started
    trials = study.trials
    trained = [t for t in trials if t.user_attrs.get("memoised") is False]
    final = objective.final(study, seeds=(0, 1, 2))
    return {
        "seed": seed,
        "evaluations": len(trials),
        "trained": len(trained),
        "memoised": sum(bool(t.user_attrs.get("memoised")) for t in trials),
        "best_val_accuracy": final["best_value"],
        "active_share": final["active_share"],
        "active": final["active"],
        "pruned_test_accuracy": final["pruned"]["test_accuracy"],
        "pruned_test_accuracies": final["pruned"]["test_accuracies"],
        "unpruned_test_accuracy": final["unpruned"]["test_accuracy"],
        "unpruned_test_accuracies": final["unpruned"]["test_accuracies"],
        "unpruned_val_accuracy": final["unpruned"]["val_accuracy"],
        "train_cpu_seconds": float(np.mean([t.user_attrs["train_cpu_seconds"] for t in trained])),
        "train_wall_seconds": float(np.mean([t.user_attrs["train_seconds"] for t in trained])),
        "epochs": float(np.mean([t.user_attrs["epochs"] for t in trained])),
        "trial_wall_seconds": search_seconds / len(trials),
        "load_average": os.getloadavg()[0],
    }


def _table(report: dict[str, Any]) -> list[str]:
    lines = [
        "```bash",
        report["command"],
        "```",
        "",
        f"Budget: population {report['population']}, {report['evaluations']} evaluations per "
        f"run (the paper: 30 and 200), layers pruned: {report['layers']} (512 bits per "
        f"layer). Machine: {report['machine']}.",
        "",
        "| dataset | GA seed | active share | val acc (best mask) | test acc pruned | test acc "
        "unpruned | test diff | train CPU s/eval pruned | unpruned | wall s/eval | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, block in report["datasets"].items():
        ref = block["unpruned_cost"]
        for r in block["runs"]:
            diff = r["pruned_test_accuracy"] - r["unpruned_test_accuracy"]
            lines.append(
                f"| {ds} | {r['seed']} | {r['active_share']:.3f} | {r['best_val_accuracy']:.4f} "
                f"| {r['pruned_test_accuracy']:.4f} | {r['unpruned_test_accuracy']:.4f} "
                f"| {diff:+.4f} | {r['train_cpu_seconds']:.2f} | {ref['train_cpu_seconds']:.2f} "
                f"| {r['trial_wall_seconds']:.2f} | {r['load_average']:.1f} |"
            )
        if block["runs"]:
            m = block["summary"]
            lines.append(
                f"| **{ds} mean** | | {m['active_share']:.3f} | | "
                f"{m['pruned_test_accuracy']:.4f} | {m['unpruned_test_accuracy']:.4f} | "
                f"{m['test_diff']:+.4f} | {m['train_cpu_seconds']:.2f} | "
                f"{ref['train_cpu_seconds']:.2f} | {m['trial_wall_seconds']:.2f} | |"
            )
    lines += [
        "",
        "Feature extraction (once per dataset, then cached on disk): "
        + ", ".join(
            f"{ds} {b['features']['seconds']:.0f} s ({b['features']['source']})"
            for ds, b in report["datasets"].items()
        )
        + ".",
        "",
    ]
    return lines


def _markdown(reports: list[dict[str, Any]], notes: list[str] | None = None) -> str:
    lines = [
        "# EvoPruneDeepTL benchmark",
        "",
        "EfficientNet-Lite0 ImageNet features (cached), head 1280 -> 512 -> 512 -> classes. "
        "Test accuracy: mean over 3 training seeds of the best mask (highest validation "
        "accuracy, ties toward fewer neurons) and of the unpruned head, trained the same way "
        "(Adam 1e-3, batch 128, early stopping on validation accuracy, patience 3). Fitness "
        "never sees the test split. One torch thread per evaluation, in-memory storage. The "
        "machine is shared with other jobs: wall seconds follow its load (1-minute load "
        "average beside them); CPU seconds are the steadier figure.",
        "",
    ]
    for note in notes or []:
        lines += [note, ""]
    for report in reports:
        lines += _table(report)
    return "\n".join(lines)


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = (
        "active_share",
        "pruned_test_accuracy",
        "unpruned_test_accuracy",
        "train_cpu_seconds",
        "train_wall_seconds",
        "trial_wall_seconds",
    )
    out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    out["test_diff"] = out["pruned_test_accuracy"] - out["unpruned_test_accuracy"]
    return out


def storage_overhead(*, trials: int, bits: int, folder: Path) -> dict[str, Any]:
    """Seconds per trial of asking ``bits`` 0/1 parameters, without training, per storage.

    EvoPruneSampler beside RandomSampler (the obvious alternative) on a SQLite file opened as
    Optuna opens a URL (one transaction per parameter, rollback journal), on the same file
    opened by the CLI's ``open_storage`` (write-ahead log; EvoPrune's planned bits written in
    one transaction, as ``EvoPruneObjective`` does), and in memory: what Optuna, the storage
    and the sampler cost around an evaluation.
    """
    from optuna_biotune.evoprune.objective import write_planned_bits
    from optuna_biotune.runtime.storage import open_storage

    names = [f"neuron:0:{i:03d}" for i in range(bits)]

    def objective(trial: optuna.Trial) -> float:
        write_planned_bits(trial, names)
        return float(sum(trial.suggest_int(n, 0, 1) for n in names))

    out: dict[str, Any] = {"trials": trials, "bits": bits}
    for storage in ("sqlite-optuna", "sqlite-cli", "memory"):
        for sampler_cls in (EvoPruneSampler, optuna.samplers.RandomSampler):
            db = folder / f"overhead-{storage}-{sampler_cls.__name__}.db"
            db.unlink(missing_ok=True)
            url: Any = None
            if storage == "sqlite-optuna":
                url = f"sqlite:///{db}"
            elif storage == "sqlite-cli":
                url = open_storage(f"sqlite:///{db}")
            kwargs = {"population_size": 10} if sampler_cls is EvoPruneSampler else {}
            study = optuna.create_study(
                storage=url, direction="maximize", sampler=sampler_cls(seed=0, **kwargs)
            )
            t0 = time.perf_counter()
            study.optimize(objective, n_trials=trials)
            out[f"{storage}:{sampler_cls.__name__}"] = (time.perf_counter() - t0) / trials
    out["load_average"] = os.getloadavg()[0]
    return out


def evaluation_speed(
    *, datasets: list[str], masks: int, rounds: int, cache_dir: str | None
) -> dict[str, Any]:
    """Seconds per evaluation (one head trained to early stopping on cached features).

    For each dataset, ``masks`` random masks keeping ~40 % of the first layer's neurons (the
    share the searches end near) and the unpruned head, each trained in float32 and in bf16
    autocast with 1 and 2 torch threads; the settings alternate round by round and the median
    over rounds and masks is kept, so the machine's load affects every setting alike.
    """
    settings = [(p, t) for p in ("fp32", "bf16") for t in (1, 2)]
    out: dict[str, Any] = {"masks": masks, "rounds": rounds, "datasets": {}}
    for ds in datasets:
        objectives = {
            (p, t): EvoPruneObjective(dataset=ds, precision=p, num_threads=t, cache_dir=cache_dir)
            for p, t in settings
        }
        rng = np.random.default_rng(0)
        chromosomes = {
            "pruned": [(rng.random(512) < 0.4).astype(np.int8) for _ in range(masks)],
            "unpruned": [np.ones(512, dtype=np.int8)],
        }
        rows: dict[str, dict[str, Any]] = {}
        for kind, chosen in chromosomes.items():
            samples: dict[tuple[str, int], list[tuple[float, float, int, float]]] = {
                k: [] for k in settings
            }
            for _ in range(rounds):
                for m in chosen:
                    for key in settings:
                        c0, t0 = time.process_time(), time.perf_counter()
                        r = objectives[key].train([m])
                        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                        samples[key].append((wall, cpu, r.epochs, r.val_accuracy))
            for (precision, threads), v in samples.items():
                rows[f"{kind}:{precision}:{threads}"] = {
                    "kind": kind,
                    "precision": precision,
                    "threads": threads,
                    "wall_seconds": float(np.median([x[0] for x in v])),
                    "cpu_seconds": float(np.median([x[1] for x in v])),
                    "epochs": float(np.mean([x[2] for x in v])),
                    "val_accuracy": float(np.mean([x[3] for x in v])),
                }
        base = rows["unpruned:fp32:1"]["wall_seconds"]
        for row in rows.values():
            row["speedup_vs_unpruned_fp32_1_thread"] = base / row["wall_seconds"]
        out["datasets"][ds] = rows
        print(json.dumps({ds: rows}), file=sys.stderr, flush=True)
    out["load_average"] = os.getloadavg()
    return out


def _speed_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# EvoPruneDeepTL: seconds per evaluation",
        "",
        "```bash",
        r["command"],
        "```",
        "",
        f"Machine: {r['machine']} (load average at the end {r['load_average'][0]:.1f}). One "
        "evaluation = one head trained to early stopping (Adam 1e-3, batch 128, patience 3, at "
        f"most 30 epochs) on cached EfficientNet-Lite0 features. {r['masks']} random masks "
        "keeping ~40 % of the first hidden layer, and the unpruned head; settings alternated "
        f"over {r['rounds']} rounds, medians. Speed-up against the unpruned head in float32 on "
        "one thread, measured in the same run.",
        "",
        "| dataset | head | precision | threads | wall s | CPU s | epochs | val acc | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, rows in r["datasets"].items():
        for row in rows.values():
            lines.append(
                f"| {ds} | {row['kind']} | {row['precision']} | {row['threads']} | "
                f"{row['wall_seconds']:.2f} | {row['cpu_seconds']:.2f} | {row['epochs']:.1f} | "
                f"{row['val_accuracy']:.4f} | {row['speedup_vs_unpruned_fp32_1_thread']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--evaluations", type=int, default=80)
    p.add_argument("--layers", choices=["first", "both"], default="first")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: user cache)")
    p.add_argument("--out", default=str(RESULTS / "evoprune"), help="output path stem")
    p.add_argument(
        "--merge", nargs="+", metavar="JSON", help="only combine earlier result files into --out"
    )
    p.add_argument("--note", action="append", default=[], help="a line for the merged page")
    p.add_argument(
        "--overhead",
        type=int,
        metavar="TRIALS",
        help="only measure the storage/sampler seconds per trial of 512 bits (no training)",
    )
    p.add_argument(
        "--speed",
        type=int,
        metavar="MASKS",
        help="only time evaluations: MASKS random masks and the full head, fp32/bf16, 1/2 threads",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of --speed")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.speed:
        result = evaluation_speed(
            datasets=args.datasets, masks=args.speed, rounds=args.rounds, cache_dir=args.cache_dir
        )
        result["command"] = "python benchmarks/evoprune.py " + " ".join(argv or sys.argv[1:])
        result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(args.out).with_suffix(".md").write_text(_speed_markdown(result))
        print(_speed_markdown(result))
        return 0
    if args.overhead:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = storage_overhead(trials=args.overhead, bits=512, folder=Path(tmp))
        result["command"] = "python benchmarks/evoprune.py " + " ".join(argv or sys.argv[1:])
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    if args.merge:
        reports = [json.loads(Path(f).read_text()) for f in args.merge]
        out = Path(args.out)
        merged = {"reports": reports, "notes": args.note}
        out.with_suffix(".json").write_text(json.dumps(merged, indent=2) + "\n")
        out.with_suffix(".md").write_text(_markdown(reports, args.note))
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    command = "python benchmarks/evoprune.py " + " ".join(argv or sys.argv[1:])
    report: dict[str, Any] = {
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "population": args.population,
        "evaluations": args.evaluations,
        "layers": args.layers,
        "datasets": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(_markdown([report]))

    for ds in args.datasets:
        objective = EvoPruneObjective(dataset=ds, layers=args.layers, cache_dir=args.cache_dir)
        from optuna_biotune.evoprune import features as feats

        size = feats.resolve_image_size(dataset=ds, model=objective.model, image_size=None)
        key = feats.cache_key(dataset=ds, model=objective.model, image_size=size)
        folder = Path(args.cache_dir) if args.cache_dir else feats.default_cache_dir()
        source = "disk cache" if (folder / f"{key}.pt").exists() else "computed"
        t0 = time.perf_counter()
        objective.features  # noqa: B018 - load or compute once
        block: dict[str, Any] = {
            "features": {"seconds": time.perf_counter() - t0, "source": source},
            "unpruned_cost": _unpruned_cost(objective, repeats=3),
            "runs": [],
        }
        report["datasets"][ds] = block
        for seed in args.seeds:
            print(f"{ds} seed {seed} ...", file=sys.stderr, flush=True)
            run = run_one(
                objective, seed=seed, population=args.population, evaluations=args.evaluations
            )
            block["runs"].append(run)
            block["summary"] = _summary(block["runs"])
            print(json.dumps(run), file=sys.stderr, flush=True)
            save()
        save()
    print(_markdown([report]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
