"""Load: 4 and 16 worker processes x 25 trials of a cheap objective on one PostgreSQL study.

For each number of ``--workers`` and each sampler (BioTuneSampler, then NSGAIISampler,
alternated over ``--repeats`` rounds so the shared machine's load hits both alike) that many
processes join one fresh study on PostgreSQL through
``optuna_biotune.runtime.storage.open_storage`` (the CLI's storage: heartbeat, pre-ping,
worker identity) and each runs ``--trials`` trials of a
7-gene BioTune-shaped objective (6 importance genes + the threshold; a shifted sphere plus
``--sleep`` seconds). Measured:

- throughput: completed trials per second of wall time, first worker start to last worker end;
- sampler latency per trial: seconds inside the sampler's hooks (``before_trial``,
  ``infer_relative_search_space``, ``sample_relative``, ``sample_independent``,
  ``after_trial``, their storage calls included), median and 95th percentile over all trials;
- ask latency per trial: ``study.ask()`` up to the first ``suggest`` returning (trial creation
  and the sampler's relative sampling), median and 95th percentile.

After every BioTuneSampler run the generation bookkeeping is checked: every trial COMPLETE and
claimed, no slot completed twice, generations numbered 0..G without gaps, every slot of every
generation but the newest completed, the study head naming the newest generation.

Usage:
    python benchmarks/load.py --storage postgresql+psycopg://biotune:biotune@127.0.0.1:5432/biotune_test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sampler_overhead import GENES, instrument, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NS = "BioTuneSampler"
DEFAULT_URL = "postgresql+psycopg://biotune:biotune@127.0.0.1:5432/biotune_test"


def worker(name: str, url: str, study_name: str, trials: int, sleep: float, out: str) -> None:
    """One worker process: ``trials`` trials through ``study.optimize`` (as the CLI runs)."""
    from optuna_biotune.runtime.storage import open_storage

    sampler = make_sampler(name, seed=11)
    cpu: dict[int, float] = {}
    spent = instrument(sampler, cpu)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url), sampler=sampler)
    ask: dict[int, float] = {}
    asked = [time.perf_counter()]
    original_ask = study.ask

    def timed_ask(*args, **kwargs):
        asked[0] = time.perf_counter()
        return original_ask(*args, **kwargs)

    study.ask = timed_ask  # type: ignore[method-assign]

    def objective(trial: optuna.Trial) -> float:
        x = [trial.suggest_float(GENES[0], 0.0, 1.0)]
        ask[trial.number] = time.perf_counter() - asked[0]
        x += [trial.suggest_float(g, 0.0, 1.0) for g in GENES[1:]]
        time.sleep(sleep)
        return sum((v - 0.3 - 0.05 * i) ** 2 for i, v in enumerate(x))

    profile_dir = os.environ.get("BIOTUNE_LOAD_PROFILE")  # cProfile each worker, for a look
    profiler = None
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    start = time.time()
    study.optimize(objective, n_trials=trials, gc_after_trial=False)
    end = time.time()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(Path(profile_dir) / f"{name}-{os.getpid()}.prof"))
    Path(out).write_text(
        json.dumps(
            {
                "start": start,
                "end": end,
                "sampler_s": [spent[n] for n in sorted(ask)],
                "sampler_cpu_s": [cpu.get(n, 0.0) for n in sorted(ask)],
                "ask_s": [ask[n] for n in sorted(ask)],
            }
        )
    )


def check_bookkeeping(study: optuna.Study, expected: int) -> dict:
    """The generation bookkeeping of a finished BioTuneSampler study, checked."""
    from optuna_biotune.evolution.layout import Layout

    layout = Layout(NS)

    trials = study.get_trials(deepcopy=False)
    problems = []
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) != expected or len(trials) != expected:
        problems.append(f"{len(complete)} complete of {len(trials)} trials, expected {expected}")
    claims = []
    for t in complete:
        c = layout.live_claim(t.system_attrs)
        if c is None:
            problems.append(f"trial {t.number} has no slot claim")
            continue
        claims.append((int(c["generation"]), int(c["slot"])))
    if len(claims) != len(set(claims)):
        problems.append("a slot was completed twice")
    records = layout.records(study)
    generations = [int(r["generation"]) for r in records]
    if generations != list(range(len(records))):
        problems.append(f"generation records {generations} have gaps")
    head = layout.head(study._storage.get_study_system_attrs(study._study_id)) or {}
    if records and int(head.get("generation", -1)) != generations[-1]:
        problems.append(f"head {head} is not the newest generation {generations[-1]}")
    for r in records[:-1]:
        g = int(r["generation"])
        filled = sorted(s for gen, s in claims if gen == g)
        if filled != list(range(len(r["slots"]))):
            problems.append(f"generation {g}: slots {filled} of {len(r['slots'])} completed")
    if max((g for g, _ in claims), default=-1) > (generations[-1] if generations else -1):
        problems.append("a claim names a generation without a record")
    return {
        "consistent": not problems,
        "problems": problems,
        "generations": len(records),
        "slots_per_generation": [len(r["slots"]) for r in records],
    }


def run_once(name: str, url: str, workers: int, trials: int, sleep: float) -> dict:
    study_name = f"load-{name}-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=study_name, storage=url)
    tmp = Path(tempfile.mkdtemp(prefix="load-"))
    outs = [tmp / f"{w}.json" for w in range(workers)]
    cmd = [sys.executable, __file__, "--worker", name, url, study_name, str(trials), str(sleep)]
    procs = [subprocess.Popen([*cmd, str(o)]) for o in outs]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a {name} worker failed with exit code {p.returncode}")
    data = [json.loads(o.read_text()) for o in outs]
    wall = max(d["end"] for d in data) - min(d["start"] for d in data)
    sampler = [s for d in data for s in d["sampler_s"]]
    ask = [s for d in data for s in d["ask_s"]]
    cpu = [s for d in data for s in d["sampler_cpu_s"]]
    study = optuna.load_study(study_name=study_name, storage=url)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    row = {
        "study": study_name,
        "completed": done,
        "wall_s": wall,
        "throughput_trials_per_s": done / wall,
        "sampler_ms_median": 1000 * statistics.median(sampler),
        "sampler_ms_p95": 1000 * statistics.quantiles(sampler, n=20)[-1],
        "ask_ms_median": 1000 * statistics.median(ask),
        "ask_ms_p95": 1000 * statistics.quantiles(ask, n=20)[-1],
        "sampler_cpu_ms_median": 1000 * statistics.median(cpu),
        "sampler_cpu_ms_p95": 1000 * statistics.quantiles(cpu, n=20)[-1],
    }
    if name == "BioTuneSampler":
        row["bookkeeping"] = check_bookkeeping(study, workers * trials)
    optuna.delete_study(study_name=study_name, storage=url)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=os.environ.get("BIOTUNE_TEST_POSTGRES_URL"))
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--trials", type=int, default=25, help="trials per worker")
    parser.add_argument("--sleep", type=float, default=0.05, help="objective seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "load"))
    args = parser.parse_args()
    url = args.storage or DEFAULT_URL
    samplers = ["BioTuneSampler", "NSGAIISampler"]
    keys = (
        "throughput_trials_per_s",
        "wall_s",
        "sampler_ms_median",
        "sampler_ms_p95",
        "ask_ms_median",
        "ask_ms_p95",
        "sampler_cpu_ms_median",
        "sampler_cpu_ms_p95",
    )
    loads = []
    for workers in args.workers:
        runs: dict[str, list[dict]] = {s: [] for s in samplers}
        for r in range(args.repeats):
            for name in samplers if r % 2 == 0 else samplers[::-1]:
                row = run_once(name, url, workers, args.trials, args.sleep)
                runs[name].append(row)
                shown = {k: v for k, v in row.items() if k != "study"}
                print(workers, name, json.dumps(shown), flush=True)
        summary = {
            name: {key: statistics.median(r[key] for r in rows) for key in keys}
            for name, rows in runs.items()
        }
        loads.append(
            {
                "workers": workers,
                "bookkeeping_consistent": all(
                    r["bookkeeping"]["consistent"] for r in runs["BioTuneSampler"]
                ),
                "summary_median_over_repeats": summary,
                "runs": runs,
            }
        )
    result = {
        "command": "python benchmarks/load.py " + " ".join(sys.argv[1:]),
        "storage": url.split("@")[-1],
        "trials_per_worker": args.trials,
        "objective_sleep_s": args.sleep,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "optuna": optuna.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "loads": loads,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [
        "# Load: many workers, one PostgreSQL study",
        "",
        f"Command: `{result['command']}`",
        "",
        f"N worker processes x {result['trials_per_worker']} trials of a cheap objective (7 "
        f"genes, {result['objective_sleep_s']} s sleep) on one PostgreSQL study "
        f"({result['storage']}), through `runtime.storage.open_storage` (heartbeat on); median of "
        f"{result['repeats']} alternated runs per sampler. Machine: {result['machine']['cpus']} "
        f"CPUs (load average at the end, the workers and any other job, "
        f"{', '.join(f'{v:.1f}' for v in result['machine']['load_average_at_end'])}), "
        f"Optuna {result['machine']['optuna']}. With more workers than CPUs the figures are "
        "dominated by waiting for a CPU; compare the samplers within a run, not across machines.",
        "",
        "| workers | sampler | throughput (trials/s) | wall (s) | sampler ms/trial median | p95 "
        "| ask ms/trial median | p95 | sampler CPU ms median | p95 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load in result["loads"]:
        for name, row in load["summary_median_over_repeats"].items():
            lines.append(
                f"| {load['workers']} | {name} | {row['throughput_trials_per_s']:.2f} "
                f"| {row['wall_s']:.1f} | {row['sampler_ms_median']:.1f} "
                f"| {row['sampler_ms_p95']:.1f} | {row['ask_ms_median']:.1f} "
                f"| {row['ask_ms_p95']:.1f} | {row['sampler_cpu_ms_median']:.1f} "
                f"| {row['sampler_cpu_ms_p95']:.1f} |"
            )
    lines += [
        "",
        "Each run (pairs ran back to back, order alternated; the shared machine's load swings "
        "between pairs, so compare within a pair):",
        "",
        "| workers | pair | sampler | throughput (trials/s) | sampler ms median | p95 "
        "| CPU ms median | p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for load in result["loads"]:
        for i in range(result["repeats"]):
            for name, rows in load["runs"].items():
                r = rows[i]
                lines.append(
                    f"| {load['workers']} | {i + 1} | {name} "
                    f"| {r['throughput_trials_per_s']:.2f} "
                    f"| {r['sampler_ms_median']:.1f} | {r['sampler_ms_p95']:.1f} "
                    f"| {r['sampler_cpu_ms_median']:.1f} | {r['sampler_cpu_ms_p95']:.1f} |"
                )
    lines.append("")
    for load in result["loads"]:
        checks = [r["bookkeeping"] for r in load["runs"]["BioTuneSampler"]]
        total = load["workers"] * result["trials_per_worker"]
        lines.append(
            f"BioTuneSampler generation bookkeeping, {load['workers']} workers: "
            + (
                "consistent in every run"
                if load["bookkeeping_consistent"]
                else "INCONSISTENT: " + "; ".join(p for c in checks for p in c["problems"])
            )
            + f" (all {total} trials complete and claimed, no slot twice, generations without "
            "gaps, every slot of every closed generation completed; generations per run: "
            f"{[c['generations'] for c in checks]})."
        )
        lines.append("")
    lines += [
        "Sampler ms: time inside the sampler's hooks per trial (its storage reads and writes "
        "included). Ask ms: `study.ask()` up to the first parameter (trial creation and the "
        "sampler's relative sampling). Sampler CPU ms: the CPU time of the worker's thread "
        "inside the hooks (the sampler's own work: what it costs the machine; the rest of the "
        "sampler ms is waiting for the storage and, with more workers than CPUs, for a CPU).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5], int(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
    else:
        main()
