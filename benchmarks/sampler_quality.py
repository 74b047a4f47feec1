"""Best value after 140 evaluations (the BioTune paper's budget) on standard test functions.

Shifted sphere, Rosenbrock, Rastrigin and Ackley in 7 and 20 dimensions (minimised, optimum 0
at a fixed shifted point ``s``, the same for every sampler and seed), BioTuneSampler (paper
defaults: population 10, 3 elites, step 0.25) beside Optuna's RandomSampler, TPESampler,
CmaEsSampler and NSGAIISampler with their defaults, each over ``--seeds`` seeds, in memory.
Reported: median, quartiles and range of the best value over the seeds.

Usage:
    python benchmarks/sampler_quality.py --seeds 10 --budget 140
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


def run_one(args: tuple[str, str, int, int, int]) -> dict:
    sampler_name, fn, dim, seed, budget = args
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
        "bold = lowest median in the row. Last column: BioTune's rank by median (1 = best of 5) "
        "and whether its worst seed beats RandomSampler's median.",
        "",
        "| function | " + " | ".join(SAMPLERS) + " | BioTune rank; worst < Random median |",
        "|---|" + "---|" * (len(SAMPLERS) + 1),
    ]
    for key in sorted(result["summary"], key=lambda k: (int(k.split("-")[1][:-1]), k)):
        row = result["summary"][key]
        best = min(SAMPLERS, key=lambda s: row[s]["median"])
        cells = []
        for s in SAMPLERS:
            c = f"{row[s]['median']:.3g} [{row[s]['q25']:.3g}, {row[s]['q75']:.3g}]"
            cells.append(f"**{c}**" if s == best else c)
        rank = 1 + sorted(SAMPLERS, key=lambda s: row[s]["median"]).index("BioTuneSampler")
        beats = row["BioTuneSampler"]["max"] < row["RandomSampler"]["median"]
        lines.append(
            f"| {key} | " + " | ".join(cells) + f" | {rank}; {'yes' if beats else 'no'} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=140)
    parser.add_argument("--dims", default="7,20")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--name", default="sampler_quality")
    args = parser.parse_args()
    command = "python benchmarks/sampler_quality.py " + " ".join(sys.argv[1:])
    dims = [int(d) for d in args.dims.split(",")]
    tasks = [
        (s, fn, d, seed, args.budget)
        for fn in FUNCTIONS
        for d in dims
        for seed in range(args.seeds)
        for s in SAMPLERS
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
