"""What a whole BioTune search costs, in units of one FT training run measured in the same run.

A search (``BioTuneSampler`` + ``BioTuneObjective``, sequential, fixed sampler seed) runs at
a given per-run budget (data fraction, epochs, patience, seeds per evaluation); in the same
command, the one unit of every benchmark is timed (``units.py``: one full-data FT run, lr 1e-3,
seed 1001, the same epochs and patience, CPU seconds). The search's compute is reported as a
multiple of it, and so is the final retraining of the top-1 configuration by validation (seeds
1001, 1002, 1003, timed on its own): their sum is the search's cost. Then ``final``
(:func:`optuna_biotune.biotune.final.run_final`) scores the test split and retrains FT beside
it: the top-1-by-validation test accuracy (``top1``), beside FT's.

Resumable and splittable: everything lives in a SQLite study under ``--workdir``; with
``--minutes M`` a command stops after the trial that passes ``M`` minutes, and the same command
continues. Each command (a *chunk*) times its own unit at its start and counts its search
compute in it, so load that changes between chunks cancels out of the ratio. (Results
committed before the one unit timed a search-fold FT run instead: ``results/search_cost.md``
converts them.) The machine is shared with other people's tests: compare ratios from the same
run, not seconds across runs.

``--protocol exact`` passes ``exact_protocol=True`` to the objective (the paper's protocol,
every evaluation trained to its early stop with every seed); ``default`` the package's default;
``reference`` passes nothing (for code that predates the option: today's code is the reference).

Usage (the committed results)::

    python benchmarks/search_cost.py --dataset digits --protocol reference --threads 1
    python benchmarks/search_cost.py --dataset mnist5k --protocol reference --threads 1 \\
        --minutes 50
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from optuna_biotune import BioTuneObjective, BioTuneSampler
from optuna_biotune.biotune import rungs
from optuna_biotune.biotune.fidelity import is_full
from optuna_biotune.biotune.final import run_final
from optuna_biotune.biotune.report import top_configurations
from optuna_biotune.biotune.search import generation_progress
from optuna_biotune.evolution import trial_generation
from optuna_biotune.evolution.layout import generation_records
from optuna_biotune.runtime.storage import open_storage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hard_sets  # noqa: E402
import units  # noqa: E402

RESULTS = HERE / "results"
ATTR = "search_cost:"
FINAL_SEEDS = (1001, 1002, 1003)


def _commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--short", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _objective(args: argparse.Namespace) -> BioTuneObjective:
    kwargs: dict[str, Any] = {
        "dataset": hard_sets.resolve(args.dataset),
        "image_size": 32,
        "seeds": args.seeds,
        "data_fraction": args.data_fraction,
        "max_epochs": args.epochs,
        "patience": args.patience,
        "device": "cpu",
    }
    if args.protocol != "reference":
        kwargs["exact_protocol"] = args.protocol == "exact"
    return BioTuneObjective(**kwargs)


def _retrain_top1(study: optuna.Study, objective: BioTuneObjective) -> dict[str, Any]:
    """The final retraining of the top-1 configuration by validation (seeds 1001-1003), timed
    in CPU seconds (with the re-scoring first of a one-seed value above the best full one,
    :func:`optuna_biotune.biotune.final.rescore_missing`); stored where
    ``final`` finds it, so ``run_final`` does not train it again."""
    from optuna_biotune.biotune.final import cache_key, rescore_missing
    from optuna_biotune.biotune.report import top_configurations

    c0, t0 = time.process_time(), time.perf_counter()
    rescore_missing(study, objective=objective, top_k=1, log=print)  # could be the top-1
    rescore_cpu = time.process_time() - c0
    top = top_configurations(study, 1)[0]
    test = objective.retrain_and_test(top["mask"], top["lr_weights"], seeds=list(FINAL_SEEDS))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    study.set_user_attr(
        cache_key(top["mask"], top["lr_weights"], FINAL_SEEDS),
        {"test": [float(a) for a in test], "seeds": list(FINAL_SEEDS), "seconds": round(wall, 2)},
    )
    chunks = study.user_attrs.get(ATTR + "chunks", [])
    unit = chunks[-1]["ft"]["cpu"] if chunks else float("nan")
    return {
        "trial": top["trial"],
        "cpu_s": round(cpu, 2),
        "rescore_cpu_s": round(rescore_cpu, 2),
        "wall_s": round(wall, 2),
        "ft_runs": round(cpu / unit, 2),
        "test": [float(a) for a in test],
    }


def _timed(objective: BioTuneObjective) -> Any:
    def run(trial: optuna.Trial) -> float:
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            return objective(trial)
        finally:
            trial.set_user_attr(ATTR + "cpu", time.process_time() - c0)
            trial.set_user_attr(ATTR + "wall", time.perf_counter() - t0)

    return run


def _summarise(study: optuna.Study, args: argparse.Namespace) -> dict[str, Any]:
    chunks = study.user_attrs.get(ATTR + "chunks", [])
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    per_gen: dict[int, dict[str, float]] = {}
    for t in trials:
        g = per_gen.setdefault(trial_generation(t), {"evaluations": 0, "cpu": 0.0, "wall": 0.0})
        g["evaluations"] += 1
        g["cpu"] += float(t.user_attrs.get(ATTR + "cpu", 0.0))
        g["wall"] += float(t.user_attrs.get(ATTR + "wall", 0.0))
    ft_cpu = float(np.mean([c["ft"]["cpu"] for c in chunks]))
    ft_wall = float(np.mean([c["ft"]["wall"] for c in chunks]))
    for g in per_gen.values():  # per generation, in the mean FT unit of the chunks
        g["ft_runs_cpu"] = round(g["cpu"] / ft_cpu, 2)
        g["ft_runs_wall"] = round(g["wall"] / ft_wall, 2)
    final = study.user_attrs.get("biotune:final") or {}
    top = top_configurations(study, 1) if trials else []
    epochs = [sum(t.user_attrs.get("epochs", [])) for t in trials]
    return {
        "dataset": args.dataset,
        "set_build": hard_sets.build_info(args.dataset),
        "protocol": args.protocol,
        "budget": {
            "population": args.population,
            "elites": args.elites,
            "generations_after_first": args.generations,
            "seeds": args.seeds,
            "epochs": args.epochs,
            "patience": args.patience,
            "data_fraction": args.data_fraction,
            "sampler_seed": args.sampler_seed,
            "final_top_k": args.top_k,
        },
        "evaluations": len(trials),
        "training_runs": sum(len(t.user_attrs.get("epochs", [])) for t in trials),
        "epochs_trained": int(sum(epochs)),
        "raced": sum(1 for t in trials if t.user_attrs.get("raced")),
        "full_fidelity": sum(1 for t in trials if is_full(t.user_attrs)),
        "design": (
            None
            if args.protocol != "default"
            else {
                "rungs": list(rungs.RUNGS),
                "eta": rungs.ETA,
                "promotion": f"bar; a record only after {rungs.ETA - 1} completed first seeds",
            }
        ),
        "wipeouts": sum(
            1
            for r in generation_records(study, "BioTuneSampler")
            if (r.get("state") or {}).get("wiped")
        ),
        "memoised": sum(1 for t in trials if t.user_attrs.get("memoised")),
        "search_cpu_s": round(sum(c["cpu"] for c in chunks), 1),
        "search_wall_s": round(sum(c["wall"] for c in chunks), 1),
        # Each chunk in its own FT unit, summed.
        "search_ft_runs_cpu": round(sum(c["cpu"] / c["ft"]["cpu"] for c in chunks), 2),
        "search_ft_runs_wall": round(sum(c["wall"] / c["ft"]["wall"] for c in chunks), 2),
        # The final retraining of the top-1 (3 seeds), in the last chunk's unit; the cost is
        # the search plus it (issue 21's one unit: full-data FT runs).
        "retrain": study.user_attrs.get(ATTR + "retrain"),
        "cost_ft_runs": (
            round(
                sum(c["cpu"] / c["ft"]["cpu"] for c in chunks)
                + study.user_attrs[ATTR + "retrain"]["ft_runs"],
                2,
            )
            if ATTR + "retrain" in study.user_attrs
            else None
        ),
        "ft_unit": {"cpu_s": round(ft_cpu, 2), "wall_s": round(ft_wall, 2)},
        "per_generation": {str(k): v for k, v in sorted(per_gen.items())},
        # The top-1 at full fidelity (a partial value can be higher: one seed, biased).
        "best_validation": top[0]["value"] if top else None,
        "best_trial": top[0]["trial"] if top else None,
        "top1_test_accuracy": final.get("biotune_test_accuracy"),
        "top1_test_accuracy_stderr": final.get("biotune_test_accuracy_stderr"),
        "top1_trial": (final.get("top1") or {}).get("trial"),
        "top1_trainable_share": (final.get("top1") or {}).get("trainable_share"),
        "top1_mask": (final.get("configurations") or [{}])[0].get("mask"),
        "ft_test_accuracy": final.get("ft_test_accuracy"),
        "ft_test_accuracy_stderr": final.get("ft_test_accuracy_stderr"),
        "final_seconds": final.get("seconds"),
        "chunks": chunks,
        "values": [t.value for t in trials],
        "complete": bool(final),
    }


def replay(study: optuna.Study, *, n_seeds: int, max_epochs: int) -> dict[str, Any]:
    """Replay :class:`optuna_biotune.biotune.racing.Race` on an exact run's stored curves.

    For every evaluation of an exact (uncut) study, in order: its bar from the sampler's
    record, the margins from the evaluations before it, and the epoch at which racing would
    have stopped it. Counts the epochs it would have saved and the cut evaluations whose exact
    fitness reached their bar (a decision racing would have changed).
    """
    from optuna_biotune.biotune import racing

    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    total = sum(sum(t.user_attrs.get("epochs", [])) for t in trials)
    saved, cuts, wrong, rows = 0, 0, [], []
    for i, t in enumerate(trials):
        bar = racing.entry_bar(t, study)
        m = racing.margins(trials[:i], n_seeds=n_seeds, max_epochs=max_epochs)
        if bar is None or m is None:
            continue
        race = racing.Race(bar=bar, margins=m, n_seeds=n_seeds)
        accs = [float(a) for a in t.user_attrs["seed_accuracies"]]
        epochs = [int(e) for e in t.user_attrs["epochs"]]
        steps = t.intermediate_values
        where = None
        for k in range(n_seeds):
            if k > 0 and race.cut(accs[:k]):
                where = (k, 0)
                break
            best = float("-inf")
            for e in range(1, epochs[k] + 1):
                best = max(best, steps[k * max_epochs + e])
                if race.cut(accs[:k], best, e):
                    where = (k, e)
                    break
            if where:
                break
        if where is None:
            continue
        k, e = where
        cut_saved = epochs[k] - e + sum(epochs[k + 1 :])
        saved += cut_saved
        cuts += 1
        reached = t.value >= bar.value
        rows.append(
            {
                "trial": t.number,
                "generation": trial_generation(t),
                "value": t.value,
                "bar": bar.value,
                "against": bar.against,
                "cut_at": {"seed": k + 1, "epoch": e},
                "epochs_saved": cut_saved,
                "reached_bar": reached,
            }
        )
        if reached:
            wrong.append(t.number)
    return {
        "evaluations": len(trials),
        "epochs": total,
        "epochs_saved": saved,
        "cut": cuts,
        "cut_but_reached_bar": wrong,
        "rows": rows,
    }


def _markdown(result: dict[str, Any], command: str) -> str:
    b = result["budget"]
    lines = [
        f"# search_cost: {result['dataset']}, protocol `{result['protocol']}`",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Budget: population {b['population']}, {b['elites']} elites, "
        f"{b['generations_after_first']} generation(s) after the first, {b['seeds']} seeds per "
        f"evaluation, at most {b['epochs']} epochs, patience {b['patience']}, data fraction "
        f"{b['data_fraction']}, sampler seed {b['sampler_seed']}; EfficientNet-Lite0 at 32 px, "
        "CPU. Final: the top configuration by validation and FT retrained on the full training "
        "split with seeds 1001-1003, test split.",
        "",
        "Machine: the project's shared 2-core machine, other engineers' tests running at the "
        "same time (load averages per chunk below); compare the ratios, measured within each "
        "chunk, not the seconds.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| evaluations (training runs, epochs) | {result['evaluations']} "
        f"({result['training_runs']}, {result['epochs_trained']}) |",
        f"| raced / memoised evaluations | {result['raced']} / {result['memoised']} |",
        f"| search CPU s / wall s | {result['search_cpu_s']} / {result['search_wall_s']} |",
        "| one full-data FT run (mean over chunks) CPU s / wall s | "
        f"{result['ft_unit']['cpu_s']} / {result['ft_unit']['wall_s']} |",
        f"| **search in FT runs, CPU / wall** | **{result['search_ft_runs_cpu']}** / "
        f"**{result['search_ft_runs_wall']}** |",
        f"| best validation fitness (trial) | {result['best_validation']:.4f} "
        f"(#{result['best_trial']}) |",
    ]
    if result["top1_test_accuracy"] is not None:
        lines += [
            f"| top-1 by validation, test accuracy | {result['top1_test_accuracy']:.4f} ± "
            f"{result['top1_test_accuracy_stderr']:.4f} (trial #{result['top1_trial']}) |",
            f"| FT test accuracy (same final seeds) | {result['ft_test_accuracy']:.4f} ± "
            f"{result['ft_test_accuracy_stderr']:.4f} |",
        ]
    lines += ["", "Per generation (FT runs in the mean FT unit):", ""]
    lines += ["| generation | evaluations | CPU s | FT runs (CPU) | FT runs (wall) |"]
    lines += ["|---|---|---|---|---|"]
    for g, v in result["per_generation"].items():
        lines.append(
            f"| {g} | {v['evaluations']} | {v['cpu']:.0f} | {v['ft_runs_cpu']} | "
            f"{v['ft_runs_wall']} |"
        )
    lines += ["", "Chunks (commands):", ""]
    lines += ["| chunk | code | trials | CPU s | wall s | FT CPU s | FT wall s | load avg |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for i, c in enumerate(result["chunks"]):
        lines.append(
            f"| {i} | {c['code']} | {c['trials']} | {c['cpu']:.0f} | {c['wall']:.0f} | "
            f"{c['ft']['cpu']:.1f} | {c['ft']['wall']:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in c['load'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--protocol", choices=("reference", "exact", "default"), required=True)
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--elites", type=int, default=3)
    parser.add_argument("--generations", type=int, default=1, help="after the first")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--data-fraction", type=float, default=0.5)
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument(
        "--wipeout",
        choices=("on", "off"),
        default="off",
        help="BioTuneSampler(wipeout=...); off: the default",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=55.0, help="stop after this chunk")
    parser.add_argument("--workdir", default=str(Path(__file__).resolve().parent / "runs"))
    parser.add_argument("--name", default=None, help="results name (default from the args)")
    parser.add_argument("--out-dir", default=str(RESULTS), help="where the results are written")
    parser.add_argument(
        "--replay", action="store_true", help="replay racing on the stored exact run only"
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/search_cost.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )

    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = args.name or f"search_cost-{args.dataset}-{args.protocol}"
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    # The CLI's storage: a rerun after a kill fails the dead process's trial at once and its
    # slot is issued again (a plain URL would leave it RUNNING and the search would go on
    # without it).
    storage = open_storage(f"sqlite:///{Path(args.workdir).resolve() / name}.db")
    if args.replay:
        study = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=BioTuneSampler(population_size=args.population, n_elites=args.elites),
        )
        out = replay(study, n_seeds=args.seeds, max_epochs=args.epochs)
        (RESULTS / f"{name}-replay.json").write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
        return out
    objective = _objective(args)
    sampler = BioTuneSampler(
        population_size=args.population,
        n_elites=args.elites,
        seed=args.sampler_seed,
        threshold_param="threshold",
        wipeout=args.wipeout == "on",
    )
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=optuna.pruners.NopPruner(),
        direction="maximize",
        load_if_exists=True,
    )
    if "biotune:spec" not in study.user_attrs:
        study.set_user_attr("biotune:spec", objective.spec())

    started = time.perf_counter()
    done, _, _ = generation_progress(
        study, generations=args.generations, population=args.population
    )
    if not done or not study.user_attrs.get("biotune:final"):
        unit = units.ft_unit(
            tuner=units.fine_tuner(args.dataset, max_epochs=args.epochs, patience=args.patience)
        )
        ft = {"cpu": unit["unit_cpu_s"], "wall": unit["unit_wall_s"], "full_data": True} | unit
        print(f"FT unit: {ft}", file=sys.stderr, flush=True)
        c0, t0 = time.process_time(), time.perf_counter()
        trials = 0
        timed = _timed(objective)
        while not done and time.perf_counter() - started < 60 * args.minutes:
            study.optimize(timed, n_trials=1)
            trials += 1
            t = study.trials[-1]
            print(
                f"trial {t.number} gen {trial_generation(t)} value {t.value} "
                f"epochs {t.user_attrs.get('epochs')} {t.user_attrs.get(ATTR + 'wall', 0):.0f}s",
                file=sys.stderr,
                flush=True,
            )
            done, _, _ = generation_progress(
                study, generations=args.generations, population=args.population
            )
        chunk = {
            "code": _commit(),
            "trials": trials,
            "cpu": time.process_time() - c0,
            "wall": time.perf_counter() - t0,
            "ft": ft,
            "load": list(os.getloadavg()),
            "threads": args.threads,
            "platform": platform.platform(),
            "torch": torch.__version__,
        }
        study.set_user_attr(ATTR + "chunks", [*study.user_attrs.get(ATTR + "chunks", []), chunk])
    if done and not study.user_attrs.get(ATTR + "retrain"):  # (None: to be finalised again)
        study.set_user_attr(ATTR + "retrain", _retrain_top1(study, objective))
    if done and not study.user_attrs.get("biotune:final"):
        run_final(
            study,
            objective=objective,
            top_k=args.top_k,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    result = _summarise(study, args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(_markdown(result, command))
    print(json.dumps({k: v for k, v in result.items() if k not in ("chunks", "values")}))
    return result


if __name__ == "__main__":
    main()
