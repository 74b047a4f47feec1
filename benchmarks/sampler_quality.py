"""Best value after 140 evaluations (the BioTune paper's budget) on standard test functions.

Shifted sphere, Rosenbrock, Rastrigin and Ackley in 7 and 20 dimensions (minimised, optimum 0
at a fixed shifted point ``s``, the same for every sampler and seed), BioTuneSampler (paper
defaults: population 10, 3 elites, step 0.25) beside Optuna's RandomSampler, TPESampler,
CmaEsSampler and NSGAIISampler with their defaults, each over ``--seeds`` seeds, in memory.
Reported: median, quartiles and range of the best value over the seeds.

Usage:
    python benchmarks/sampler_quality.py --seeds 10 --budget 140

``--extinction shifted`` is an ablation: BioTune's extinction factors computed with the
shift-invariant form (BioIK's formula on ``f - f_min + (f_max - f_min)``) instead of BioIK's
formula on the loss itself, to measure which is better on these losses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ["BioTuneSampler", "RandomSampler", "TPESampler", "CmaEsSampler", "NSGAIISampler"]
# name -> (half-width of the box centred on 0, function of z = x - s)
FUNCTIONS = {
    "sphere": (5.0, lambda z: float(np.sum(z**2))),
    "rosenbrock": (
        5.0,
        lambda z: float(np.sum(100.0 * ((z[1:] + 1) - (z[:-1] + 1) ** 2) ** 2 + z[:-1] ** 2)),
    ),
    "rastrigin": (
        5.12,
        lambda z: float(10.0 * z.size + np.sum(z**2 - 10.0 * np.cos(2.0 * math.pi * z))),
    ),
    "ackley": (
        32.768,
        lambda z: float(
            -20.0 * np.exp(-0.2 * np.sqrt(np.mean(z**2)))
            - np.exp(np.mean(np.cos(2.0 * math.pi * z)))
            + 20.0
            + math.e
        ),
    ),
}


def shift(name: str, dim: int) -> np.ndarray:
    """The optimum's position: fixed per (function, dim), within 60 % of the half-width."""
    half = FUNCTIONS[name][0]
    rng = np.random.default_rng([sorted(FUNCTIONS).index(name), dim])
    return rng.uniform(-0.6 * half, 0.6 * half, dim)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "BioTuneSampler":
        from optuna_biotune import BioTuneSampler

        return BioTuneSampler(seed=seed)
    return getattr(optuna.samplers, name)(seed=seed)


def shifted_extinction(fitness: np.ndarray) -> np.ndarray:
    """The ablation: ``((f - f_min) / (f_max - f_min) + rank / (N - 1)) / 2`` for any ``f``."""
    f = np.asarray(fitness, dtype=float)
    if f.size <= 1:
        return np.zeros(f.size)
    rank = np.empty(f.size)
    rank[np.argsort(f, kind="stable")] = np.arange(f.size)
    spread = float(f.max() - f.min())
    scaled = (f - f.min()) / spread if spread > 0 else np.zeros(f.size)
    return 0.5 * (scaled + rank / (f.size - 1))


def run_one(args: tuple[str, str, int, int, int, str]) -> dict:
    sampler_name, fn, dim, seed, budget, extinction = args
    if extinction == "shifted":
        from optuna_biotune.biotune import operators

        operators.extinction_factors = shifted_extinction
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    half, f = FUNCTIONS[fn]
    s = shift(fn, dim)

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(f"x{i}", -half, half) for i in range(dim)])
        return f(x - s)

    study = optuna.create_study(sampler=make_sampler(sampler_name, seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=budget)
    return {
        "sampler": sampler_name,
        "function": fn,
        "dim": dim,
        "seed": seed,
        "best": study.best_value,
        "seconds": time.perf_counter() - t0,
    }


def summarise(runs: list[dict]) -> dict:
    table: dict[str, dict[str, dict]] = {}
    for r in runs:
        key = f"{r['function']}-{r['dim']}d"
        table.setdefault(key, {}).setdefault(r["sampler"], []).append(r["best"])
    out: dict[str, dict] = {}
    for key, per in table.items():
        out[key] = {}
        for sampler, values in per.items():
            v = np.asarray(values)
            out[key][sampler] = {
                "median": float(np.median(v)),
                "q25": float(np.percentile(v, 25)),
                "q75": float(np.percentile(v, 75)),
                "min": float(v.min()),
                "max": float(v.max()),
                "n": int(v.size),
            }
    return out


def write_markdown(result: dict, path: Path) -> None:
    names = [s for s in SAMPLERS if s in next(iter(result["summary"].values()))]
    lines = [
        "# Sampler quality: best value after "
        f"{result['budget']} evaluations ({result['seeds']} seeds)",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"Wall time {result['wall_s']:.0f} s on {result['machine']}. Minimised; optimum 0 at a "
        "fixed shifted point. Cells: median [25 %, 75 %] of the best value over the seeds; "
        "bold = lowest median in the row. Last column: BioTune's rank by median (1 = best) "
        "and whether its worst seed beats RandomSampler's median.",
        "",
        "| function | " + " | ".join(names) + " | BioTune rank; worst < Random median |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for key in sorted(result["summary"], key=lambda k: (int(k.split("-")[1][:-1]), k)):
        row = result["summary"][key]
        best = min(names, key=lambda s: row[s]["median"])
        cells = []
        for s in names:
            c = f"{row[s]['median']:.3g} [{row[s]['q25']:.3g}, {row[s]['q75']:.3g}]"
            cells.append(f"**{c}**" if s == best else c)
        rank = 1 + sorted(names, key=lambda s: row[s]["median"]).index("BioTuneSampler")
        beats = (
            "RandomSampler" in row
            and row["BioTuneSampler"]["max"] < row["RandomSampler"]["median"]
        )
        lines.append(
            f"| {key} | " + " | ".join(cells) + f" | {rank}; {'yes' if beats else 'no'} |"
        )
    path.write_text("\n".join(lines) + "\n")


def compare(paths: list[Path], out: Path) -> None:
    """BioTuneSampler's best values in several result files, paired by (function, dim, seed).

    Each later file is compared with the first: medians side by side, how many seeds it beats
    the first on, and the two-sided Wilcoxon signed-rank p-value of the paired differences.
    """
    from scipy.stats import wilcoxon

    results = [json.loads(p.read_text()) for p in paths]
    best = [
        {
            (r["function"], r["dim"], r["seed"]): r["best"]
            for r in res["runs"]
            if r["sampler"] == "BioTuneSampler"
        }
        for res in results
    ]
    lines = [
        "# BioTuneSampler, paired by seed: " + " vs ".join(p.stem for p in paths),
        "",
        "```bash",
        "python benchmarks/sampler_quality.py --compare " + " ".join(str(p) for p in paths),
        "```",
        "",
        "Commands of the runs: " + "; ".join(f"`{r['command']}`" for r in results) + ".",
        "Cells: median best value over the seeds; for each later run, `k/n` seeds where it is "
        "lower than the first run's and the Wilcoxon signed-rank p-value (two-sided).",
        "",
        "| function | " + " | ".join(p.stem for p in paths) + " |",
        "|---|" + "---|" * len(paths),
    ]
    keys = sorted({(f, d) for f, d, _ in best[0]}, key=lambda k: (k[1], k[0]))
    for fn, dim in keys:
        seeds = sorted(s for f, d, s in best[0] if (f, d) == (fn, dim))
        first = np.asarray([best[0][(fn, dim, s)] for s in seeds])
        cells = [f"{np.median(first):.4g}"]
        for b in best[1:]:
            other = np.asarray([b[(fn, dim, s)] for s in seeds])
            wins = int(np.sum(other < first))
            p = wilcoxon(other, first).pvalue if np.any(other != first) else 1.0
            cells.append(f"{np.median(other):.4g} ({wins}/{len(seeds)}, p={p:.2f})")
        lines.append(f"| {fn}-{dim}d | " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=140)
    parser.add_argument("--dims", default="7,20")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--name", default="sampler_quality")
    parser.add_argument("--extinction", choices=["bioik", "shifted"], default="bioik")
    parser.add_argument(
        "--samplers", default=",".join(SAMPLERS), help="comma-separated subset to run"
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        help="result JSON files to compare BioTuneSampler across (no run)",
    )
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, RESULTS / f"{args.name}_compare.md")
        return
    command = "python benchmarks/sampler_quality.py " + " ".join(sys.argv[1:])
    dims = [int(d) for d in args.dims.split(",")]
    chosen = [s for s in SAMPLERS if s in args.samplers.split(",")]
    tasks = [
        (s, fn, d, seed, args.budget, args.extinction)
        for fn in FUNCTIONS
        for d in dims
        for seed in range(args.seeds)
        for s in chosen
    ]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_one, tasks, chunksize=4))
    result = {
        "command": command,
        "budget": args.budget,
        "seeds": args.seeds,
        "machine": f"{os.cpu_count()} shared CPU cores",
        "wall_s": time.time() - t0,
        "summary": summarise(runs),
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, RESULTS / f"{args.name}.md")
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
