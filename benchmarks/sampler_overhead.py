"""Sampler overhead per trial as a study grows (SQLite on disk); idle time of parallel workers.

Part 1 (growth): one study per sampler (BioTuneSampler, NSGAIISampler, TPESampler) on its own
SQLite file, all three run at the same time (so machine load hits them alike), each to
``--trials`` trials of a 7-gene BioTune-shaped objective (6 importance genes + threshold, a
cheap shifted sphere). The time spent inside the sampler's hooks (``before_trial``,
``infer_relative_search_space``, ``sample_relative``, ``sample_independent``, ``after_trial``,
storage calls they make included) is recorded per trial; we report the median over windows of
trials ending at each checkpoint, and the ratio to NSGAIISampler.

Part 2 (parallel idle time): ``--workers`` processes share one SQLite study, objective = sleep
``--sleep`` seconds; per worker, idle share = 1 - (time inside the objective) / (wall time),
for BioTuneSampler (no-wait policy) beside RandomSampler (which never coordinates) in the same
run, plus how many results arrived after their generation was superseded (merged late).

With ``--memory`` the studies live in memory: no storage cost, only the samplers' own work.

Usage:
    python benchmarks/sampler_overhead.py --trials 5000 --checkpoints 100,1000,5000
    python benchmarks/sampler_overhead.py --memory --no-parallel --name sampler_overhead_memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GENES = [f"importance:b{i}" for i in range(6)] + ["threshold"]
HOOKS = (
    "before_trial",
    "infer_relative_search_space",
    "sample_relative",
    "sample_independent",
    "after_trial",
)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "BioTuneSampler":
        from optuna_biotune import BioTuneSampler

        return BioTuneSampler(seed=seed, threshold_param="threshold")
    if name == "NSGAIISampler":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "TPESampler":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "RandomSampler":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SystemExit(f"unknown sampler {name!r}")


def instrument(
    sampler: optuna.samplers.BaseSampler, cpu: dict[int, float] | None = None
) -> dict[int, float]:
    """Wrap the sampler's hooks; return the dict trial number -> seconds spent inside them.

    With ``cpu``, also fill it with the CPU seconds of the calling thread inside them (the
    sampler's own work, without the waits for the storage and for a CPU)."""
    spent: dict[int, float] = defaultdict(float)
    for hook in HOOKS:
        original = getattr(sampler, hook)

        def timed(study, trial, *args, _original=original, **kwargs):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return _original(study, trial, *args, **kwargs)
            finally:
                spent[trial.number] += time.perf_counter() - t0
                if cpu is not None:
                    cpu[trial.number] = cpu.get(trial.number, 0.0) + time.thread_time() - c0

        setattr(sampler, hook, timed)
    return spent


def objective(trial: optuna.Trial) -> float:
    x = [trial.suggest_float(name, 0.0, 1.0) for name in GENES]
    return sum((v - 0.3 - 0.05 * i) ** 2 for i, v in enumerate(x))


def growth_worker(name: str, trials: int, path: str, out: str) -> None:
    sampler = make_sampler(name, seed=0)
    spent = instrument(sampler)
    storage = None if path == "memory" else f"sqlite:///{path}"
    study = optuna.create_study(storage=storage, sampler=sampler)
    wall: dict[int, float] = {}
    t_last = time.perf_counter()

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal t_last
        now = time.perf_counter()
        wall[trial.number] = now - t_last
        t_last = now

    study.optimize(objective, n_trials=trials, callbacks=[callback])
    Path(out).write_text(
        json.dumps(
            {
                "sampler_s": [spent.get(i, 0.0) for i in range(trials)],
                "trial_s": [wall.get(i, 0.0) for i in range(trials)],
                "best": study.best_value,
            }
        )
    )


def run_growth(
    samplers: list[str], trials: int, checkpoints: list[int], window: int, memory: bool
) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="overhead-", dir=os.environ.get("BENCH_DIR")))
    procs = {}
    for name in samplers:
        out = tmp / f"{name}.json"
        db = "memory" if memory else tmp / f"{name}.db"
        cmd = [sys.executable, __file__, "--growth-worker", name, str(trials), str(db), str(out)]
        procs[name] = (subprocess.Popen(cmd), out)
    t0 = time.time()
    for _, (proc, _) in procs.items():
        proc.wait()
        if proc.returncode != 0:
            raise SystemExit(f"a growth worker failed with exit code {proc.returncode}")
    rows = {}
    for name, (_, out) in procs.items():
        data = json.loads(out.read_text())
        per = {}
        for c in checkpoints:
            lo = max(0, c - window)
            per[str(c)] = {
                "sampler_ms_median": 1000 * statistics.median(data["sampler_s"][lo:c]),
                "sampler_ms_mean": 1000 * statistics.fmean(data["sampler_s"][lo:c]),
                "trial_ms_median": 1000 * statistics.median(data["trial_s"][lo:c]),
            }
        rows[name] = per
    return {
        "wall_s": time.time() - t0,
        "window": window,
        "storage": "in memory" if memory else "SQLite on disk",
        "per_sampler": rows,
    }


def parallel_worker(name: str, url: str, study_name: str, n: int, sleep: float, out: str) -> None:
    sampler = make_sampler(name, seed=1)
    study = optuna.load_study(study_name=study_name, storage=url, sampler=sampler)
    inside = 0.0

    def slow(trial: optuna.Trial) -> float:
        nonlocal inside
        value = objective(trial)
        t0 = time.perf_counter()
        time.sleep(sleep)
        inside += time.perf_counter() - t0
        return value

    t0 = time.perf_counter()
    study.optimize(slow, n_trials=n)
    wall = time.perf_counter() - t0
    Path(out).write_text(json.dumps({"wall_s": wall, "objective_s": inside}))


def run_parallel(samplers: list[str], workers: int, per_worker: int, sleep: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="parallel-", dir=os.environ.get("BENCH_DIR")))
    rows = {}
    for name in samplers:
        url = f"sqlite:///{tmp / (name + '.db')}"
        optuna.create_study(study_name="p", storage=url)
        outs = [tmp / f"{name}-{w}.json" for w in range(workers)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--parallel-worker",
                    name,
                    url,
                    "p",
                    str(per_worker),
                    str(sleep),
                    str(o),
                ]
            )
            for o in outs
        ]
        for p in procs:
            p.wait()
            if p.returncode != 0:
                raise SystemExit(f"a parallel worker failed with exit code {p.returncode}")
        data = [json.loads(o.read_text()) for o in outs]
        idle = [1.0 - d["objective_s"] / d["wall_s"] for d in data]
        row = {
            "idle_share_mean": statistics.fmean(idle),
            "idle_share_max": max(idle),
            "wall_s_max": max(d["wall_s"] for d in data),
        }
        if name == "BioTuneSampler":
            study = optuna.load_study(study_name="p", storage=url)
            from optuna_biotune.evolution.layout import Layout

            layout = Layout("BioTuneSampler")
            claims = [layout.claim(t.system_attrs) for t in study.trials]
            records = layout.records(study)
            late = set()
            for r in records:
                late.update(r["pending"])
            keys = [(c["generation"], c["slot"]) for c in claims if c]
            row.update(
                {
                    "trials": len(study.trials),
                    "generations": 1 + max(c["generation"] for c in claims if c),
                    "slot_collisions": len(keys) - len(set(keys)),
                    "results_merged_late": len(late),
                }
            )
        rows[name] = row
    return {"workers": workers, "trials_per_worker": per_worker, "sleep_s": sleep, "rows": rows}


def write_markdown(result: dict, command: str, path: Path) -> None:
    g = result["growth"]
    lines = [
        f"# Sampler overhead per trial ({g['storage']})",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {result['machine']}. Growth part wall time {g['wall_s']:.0f} s; the three",
        "samplers ran at the same time (same load). Sampler ms = time inside the sampler's",
        f"hooks per trial (storage calls they make included), median over the {g['window']}",
        "trials ending at each checkpoint; ratio = BioTuneSampler / NSGAIISampler.",
        "",
    ]
    cps = list(next(iter(g["per_sampler"].values())).keys())
    lines.append("| sampler | " + " | ".join(f"ms/trial @ {c}" for c in cps) + " |")
    lines.append("|---|" + "---|" * len(cps))
    for name, per in g["per_sampler"].items():
        cells = [f"{per[c]['sampler_ms_median']:.1f}" for c in cps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "NSGAIISampler" in g["per_sampler"] and "BioTuneSampler" in g["per_sampler"]:
        b, n = g["per_sampler"]["BioTuneSampler"], g["per_sampler"]["NSGAIISampler"]
        cells = [f"{b[c]['sampler_ms_median'] / n[c]['sampler_ms_median']:.2f}" for c in cps]
        lines.append("| ratio BioTune/NSGAII | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Whole trial (ask + objective + tell, storage included), median ms:",
        "",
        "| sampler | " + " | ".join(f"@ {c}" for c in cps) + " |",
        "|---|" + "---|" * len(cps),
    ]
    for name, per in g["per_sampler"].items():
        cells = [f"{per[c]['trial_ms_median']:.1f}" for c in cps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    p = result.get("parallel")
    if p:
        lines += [
            "",
            f"## Parallel workers: {p['workers']} processes x {p['trials_per_worker']} trials, "
            f"objective sleeps {p['sleep_s']} s",
            "",
            "| sampler | idle share (mean) | idle share (max) | slowest worker s | extra |",
            "|---|---|---|---|---|",
        ]
        for name, row in p["rows"].items():
            extra = ", ".join(
                f"{k}={row[k]}"
                for k in ("trials", "generations", "slot_collisions", "results_merged_late")
                if k in row
            )
            lines.append(
                f"| {name} | {row['idle_share_mean']:.3f} | {row['idle_share_max']:.3f} | "
                f"{row['wall_s_max']:.1f} | {extra} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--growth-worker":
        growth_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--parallel-worker":
        a = sys.argv
        parallel_worker(a[2], a[3], a[4], int(a[5]), float(a[6]), a[7])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--checkpoints", default="100,1000,5000")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--samplers", default="BioTuneSampler,NSGAIISampler,TPESampler")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--per-worker", type=int, default=30)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--no-parallel", action="store_true")
    parser.add_argument(
        "--memory", action="store_true", help="in-memory storage: the samplers' own work only"
    )
    parser.add_argument("--name", default="sampler_overhead")
    args = parser.parse_args()
    command = "python benchmarks/sampler_overhead.py " + " ".join(sys.argv[1:])
    checkpoints = [int(c) for c in args.checkpoints.split(",") if int(c) <= args.trials]
    result = {
        "command": command,
        "machine": f"{os.cpu_count()} CPU cores, shared; load average at start "
        f"{os.getloadavg()[0]:.1f}",
        "growth": run_growth(
            args.samplers.split(","), args.trials, checkpoints, args.window, args.memory
        ),
    }
    if not args.no_parallel:
        result["parallel"] = run_parallel(
            ["BioTuneSampler", "RandomSampler"], args.workers, args.per_worker, args.sleep
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, command, RESULTS / f"{args.name}.md")
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
