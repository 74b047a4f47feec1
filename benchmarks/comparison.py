"""The comparison a practitioner needs, at the paper's per-run budget (replaces paper_tables.py).

Every training run below uses the paper's per-run budget: EfficientNet-Lite0 (ImageNet
weights) at 32 px, Adam, batch 64, no augmentation, at most 30 epochs with early-stopping
patience 3 on validation accuracy, the best validation epoch's weights restored and scored on
the test split. Test accuracies are over the final seeds 1001, 1002, 1003 (the seeds
``final`` retrains BioTune's configuration with), mean and standard error.

Parts (one command each, each resumable: a rerun keeps what finished; results under
``benchmarks/results/comparison/``, the report in ``benchmarks/results/comparison.md``):

``methods --dataset D``
    Table I's comparison methods (paper Sec. 4.2): FT at 1e-3 (the paper's FT), FT with its
    learning rate tuned on validation (the rate with the best mean validation accuracy of
    ``--lrs``; its test accuracy is read only after the choice), LP, L1-SP, L2-SP, G-LF, G-FL,
    AutoRGN, LoRA at base 1e-3. Each cell's CPU seconds (``time.process_time``) and, in the
    same run, one FT run at the search's per-run budget (fold 0 of half the training data,
    as ``search_cost.py`` times it) so searches can be put in this run's FT unit.
``biotune --dataset D --search-seed S``
    One BioTune search at the package's default protocol and its ``final`` (top-1 by
    validation retrained with the final seeds): ``search_cost.py`` with a comparison name.
``default --dataset D --search-seed S``
    The same at the multi-fidelity default (issue 22: rungs on the first seed, promotion to
    the other seeds, ``optuna_biotune/biotune/rungs.py``), named ``default-D-sS``;
    ``biotune-D-sS`` are the racing default's searches that preceded it.
``exact --dataset D --search-seed S``
    The same with ``--exact-protocol`` (the paper's protocol: every seed to its early stop).
``fraction --dataset D --fraction F``
    Table III: the same search (sampler seed 0) at data fraction F.
``samplers --dataset D --sampler NAME --seed S``
    The sampler on its own problem: ``BioTuneObjective`` (1 seed per evaluation, data fraction
    0.5, the paper's protocol exactly) searched by BioTuneSampler, TPESampler, CmaEsSampler or
    RandomSampler for the same number of evaluations; then the top-1 configuration by
    validation retrained with the final seeds and tested.
``report``
    Reads every result and writes the markdown (and the sampler figure).

The unit of compute is one FT training run at the same per-run budget (one seed, full training
split, lr 1e-3), timed in the ``methods`` run of the same dataset.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hard_sets  # noqa: E402
import units  # noqa: E402

OUT = HERE / "results" / "comparison"
RUNS = HERE / "runs"
FINAL_SEEDS = (1001, 1002, 1003)
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
LORA_LRS = (1e-3, 3e-3, 1e-2)
#: Search compute (FT runs) at which an anytime curve retrains its top-1 so far (up to 16 FT
#: runs in all with the retraining).
CHECKPOINTS = (1, 2, 3, 5, 8, 13)
OTHER_METHODS = ("LP", "L1-SP", "L2-SP", "G-LF", "G-FL", "AutoRGN", "LoRA")
SAMPLERS = ("biotune", "tpe", "cmaes", "random")
BUDGET = {
    "model": "efficientnet_lite0",
    "image_size": 32,
    "epochs": 30,
    "patience": 3,
    "batch_size": 64,
    "optimizer": "adam",
    "augmentation": False,
}


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc["updated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
    }


def _command(argv: list[str] | None) -> str:
    return "python benchmarks/comparison.py " + " ".join(sys.argv[1:] if argv is None else argv)


# --- methods ------------------------------------------------------------------------------


def run_methods(args: argparse.Namespace, command: str) -> None:
    from optuna_biotune.baselines import run_baseline

    path = OUT / f"methods-{args.dataset}.json"
    doc = _load(path)
    settings = BUDGET | {"seeds": list(FINAL_SEEDS), "lrs": list(args.lrs)}
    if doc.get("settings") != settings:
        doc = {"settings": settings, "cells": {}}
    doc.update(dataset=args.dataset, command=command, machine=_machine())
    if hard_sets.build_info(args.dataset) is not None:
        doc["set_build"] = hard_sets.build_info(args.dataset)
    tuners: dict[float, Any] = {}

    def tuner(lr: float) -> Any:  # one fine-tuner per base rate, its data loaded once
        if lr not in tuners:
            tuners[lr] = units.fine_tuner(
                args.dataset,
                base_lr=lr,
                max_epochs=BUDGET["epochs"],
                patience=BUDGET["patience"],
                image_size=BUDGET["image_size"],
            )
        return tuners[lr]

    def cell(key: str, fn) -> None:
        if key in doc["cells"]:
            _log(f"{key}: kept")
            return
        _log(f"{key}: start")
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        out["cpu_s"] = round(time.process_time() - c0, 2)
        out["wall_s"] = round(time.perf_counter() - t0, 2)
        out["load_average"] = list(os.getloadavg())
        doc["cells"][key] = out
        _save(path, doc)
        _log(f"{key}: {out.get('test_accuracy_mean', '')} in {out['cpu_s']:.0f} CPU s")

    def baseline(method: str, lr: float) -> dict[str, Any]:
        r = run_baseline(method, tuner(lr), seeds=list(FINAL_SEEDS), log=_log)
        keep = (
            "method",
            "test_accuracies",
            "test_accuracy_mean",
            "test_accuracy_stderr",
            "val_accuracies",
            "epochs_run",
            "trainable_share",
            "base_lr",
        )
        extra = ("last_epoch_mean_lr_multiplier", "last_epoch_trained_blocks")
        return {k: r[k] for k in keep} | {
            "best_epochs": [row["best_epoch"] for row in r["per_seed"]],
            "per_seed_blocks": [{k: row[k] for k in extra if k in row} for row in r["per_seed"]],
        }

    # The unit first (one FT run, seed 1001, timed on its own), then FT at the paper's rate.
    cell("unit", lambda: units.ft_unit(tuner=tuner(units.UNIT_LR)))
    order = [1e-3, *[lr for lr in args.lrs if lr != 1e-3]]
    for lr in order:
        cell(f"FT@{lr:g}", lambda lr=lr: baseline("FT", lr))
    for method in OTHER_METHODS:
        cell(method, lambda m=method: baseline(m, 1e-3))
    # AutoRGN's multipliers shrink most rates below the base rate: its base rate tuned as FT's.
    for lr in args.autorgn_lrs:
        cell(f"AutoRGN@{lr:g}", lambda lr=lr: baseline("AutoRGN", lr))
    # LoRA's rate tuned over three rates (its 1e-3 cell is ``LoRA`` above).
    for lr in args.lora_lrs:
        if lr != 1e-3:
            cell(f"LoRA@{lr:g}", lambda lr=lr: baseline("LoRA", lr))
    _save(path, doc)


# --- BioTune searches (search_cost.py under a comparison name) ----------------------------


def run_biotune(
    args: argparse.Namespace, *, fraction: float, name: str, protocol: str = "default"
) -> None:
    import search_cost

    search_cost.main(
        [
            "--dataset",
            args.dataset,
            "--protocol",
            protocol,
            "--sampler-seed",
            str(args.search_seed),
            "--data-fraction",
            str(fraction),
            "--threads",
            str(args.threads),
            "--minutes",
            str(args.minutes),
            "--name",
            name,
            "--out-dir",
            str(OUT),
        ]
    )


def run_wipeout(args: argparse.Namespace) -> None:
    """A BioTune search (default protocol, 1 seed per evaluation) with wipeout on or off, with
    ``--generations`` generations after the first (wipeout cannot fire before the third
    generation), then its top-1 retrained and tested."""
    import search_cost

    search_cost.main(
        [
            "--dataset",
            args.dataset,
            "--protocol",
            "default",
            "--seeds",
            "1",
            "--generations",
            str(args.generations),
            "--wipeout",
            args.wipeout,
            "--sampler-seed",
            str(args.search_seed),
            "--threads",
            str(args.threads),
            "--minutes",
            str(args.minutes),
            "--name",
            f"wipeout-{args.dataset}-{args.wipeout}-s{args.search_seed}",
            "--out-dir",
            str(OUT),
        ]
    )


# --- samplers on BioTune's problem ---------------------------------------------------------


def _sampler(name: str, seed: int):
    import optuna

    from optuna_biotune import BioTuneSampler

    if name == "biotune":
        return BioTuneSampler(population_size=10, n_elites=3, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SystemExit(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def _open_study(name: str, objective: Any, *, sampler: Any, pruner: Any) -> Any:
    """Create or resume a part's study in the CLI's storage (a killed command's RUNNING trial
    is failed at once, so its evaluation is run again) with the objective's spec stored."""
    import optuna

    from optuna_biotune.runtime.storage import open_storage

    RUNS.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(f"sqlite:///{RUNS / name}.db"),
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    State = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        study.tell(t.number, state=State.FAIL)  # a killed earlier command's trial
    if "biotune:spec" not in study.user_attrs:
        study.set_user_attr("biotune:spec", objective.spec())
    return study


def run_samplers(args: argparse.Namespace, command: str) -> None:
    import optuna

    from optuna_biotune import BioTuneObjective
    from optuna_biotune.biotune.report import top_configurations
    from optuna_biotune.engine.seeds import mean_sem

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"samplers-{args.dataset}-{args.sampler}-s{args.seed}"
    path = OUT / f"{name}.json"
    objective = BioTuneObjective(
        dataset=args.dataset,
        seeds=1,
        data_fraction=0.5,
        max_epochs=BUDGET["epochs"],
        patience=BUDGET["patience"],
        exact_protocol=True,
        device="cpu",
    )
    study = _open_study(
        name,
        objective,
        sampler=_sampler(args.sampler, args.seed),
        pruner=optuna.pruners.NopPruner(),
    )
    State = optuna.trial.TrialState
    c0 = time.process_time()
    while len(study.get_trials(deepcopy=False, states=(State.COMPLETE,))) < args.evaluations:
        study.optimize(objective, n_trials=1)
        # Stored after every trial, so a command killed later keeps what it spent (a trial cut
        # off by the kill is not counted; the one that replaces it is).
        c1 = time.process_time()
        study.set_user_attr(
            "comparison:cpu_s", study.user_attrs.get("comparison:cpu_s", 0) + c1 - c0
        )
        c0 = c1
        t = study.trials[-1]
        _log(
            f"{name}: trial {t.number} value {t.value} share {t.user_attrs.get('trainable_share')}"
        )
    done = sorted(
        study.get_trials(deepcopy=False, states=(State.COMPLETE,)), key=lambda t: t.number
    )[: args.evaluations]
    if "comparison:final" not in study.user_attrs:
        top = top_configurations(study, 1)[0]
        _log(f"{name}: final retraining of trial #{top['trial']}")
        test = objective.retrain_and_test(top["mask"], top["lr_weights"], seeds=list(FINAL_SEEDS))
        mean, sem = mean_sem(test)
        study.set_user_attr(
            "comparison:final",
            {
                "trial": top["trial"],
                "validation": top["value"],
                "trainable_share": top["trainable_share"],
                "test": test,
                "mean": mean,
                "sem": sem,
            },
        )
    values = [float(t.value) for t in done]
    best_so_far = [max(values[: i + 1]) for i in range(len(values))]
    doc = {
        "dataset": args.dataset,
        "sampler": args.sampler,
        "seed": args.seed,
        "evaluations": len(done),
        "budget": BUDGET
        | {"seeds_per_evaluation": 1, "data_fraction": 0.5, "exact_protocol": True},
        "values": values,
        "best_so_far": best_so_far,
        "invalid": sum(1 for t in done if t.user_attrs.get("invalid")),
        "trainable_shares": [t.user_attrs.get("trainable_share") for t in done],
        "search_cpu_s": round(study.user_attrs.get("comparison:cpu_s", 0.0), 1),
        "final": study.user_attrs["comparison:final"],
        "command": command,
        "machine": _machine(),
    }
    _save(path, doc)
    _log(f"{name}: best validation {best_so_far[-1]:.4f}, test {doc['final']['mean']:.4f}")


# --- anytime curves: Optuna's samplers with Hyperband on BioTuneObjective(prune=True) --------


def run_anytime(args: argparse.Namespace, command: str) -> None:
    """TPE or random search with ``HyperbandPruner`` on ``BioTuneObjective(prune=True)`` (the
    BOHB recipe without its model, and random search with the same rungs), read as an anytime
    curve: at each checkpoint of search compute (in this command's unit), the top-1
    configuration by validation so far is retrained with seeds 1001-1003 and tested; a point's
    compute is the search so far plus that retraining."""
    import optuna

    from optuna_biotune import BioTuneObjective
    from optuna_biotune.biotune.report import top_configurations, trial_record
    from optuna_biotune.engine.seeds import mean_sem

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"anytime-{args.dataset}-{args.sampler}-s{args.seed}"
    objective = BioTuneObjective(
        dataset=hard_sets.resolve(args.dataset),
        image_size=BUDGET["image_size"],
        seeds=3,
        data_fraction=0.5,
        max_epochs=BUDGET["epochs"],
        patience=BUDGET["patience"],
        prune=True,
        exact_protocol=True,
        device="cpu",
    )
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    study = _open_study(
        name,
        objective,
        sampler=samplers[args.sampler](seed=args.seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=3 * BUDGET["epochs"], reduction_factor=3
        ),
    )
    State = optuna.trial.TrialState
    unit = units.ft_unit(tuner=units.fine_tuner(args.dataset))
    _log(f"{name}: unit {unit}")
    study.set_user_attr("anytime:units", [*study.user_attrs.get("anytime:units", []), unit])
    checkpoints = sorted(args.checkpoints)

    def spent() -> float:  # search compute so far, each trial in its command's unit
        return sum(
            float(t.user_attrs.get("anytime:ft_runs", 0.0))
            for t in study.get_trials(deepcopy=False)
        )

    def run(trial: optuna.Trial) -> float:
        c0 = time.process_time()
        try:
            return objective(trial)
        finally:
            cpu = time.process_time() - c0
            trial.set_user_attr("anytime:cpu_s", round(cpu, 2))
            trial.set_user_attr("anytime:ft_runs", cpu / unit["unit_cpu_s"])

    points = study.user_attrs.get("anytime:checkpoints", [])
    while len(points) < len(checkpoints):
        study.optimize(run, n_trials=1, catch=())
        t = study.trials[-1]
        now = spent()
        _log(f"{name}: trial {t.number} {t.state.name} {t.value} at {now:.2f} FT runs")
        while len(points) < len(checkpoints) and now >= checkpoints[len(points)]:
            complete = study.get_trials(deepcopy=False, states=(State.COMPLETE,))
            top = top_configurations(study, 1)[0] if complete else None
            points.append(
                {
                    "checkpoint": checkpoints[len(points)],
                    "search_ft_runs": round(now, 3),
                    "trials": len(study.trials),
                    "complete": len(complete),
                    "pruned": len(study.get_trials(deepcopy=False, states=(State.PRUNED,))),
                    "top1_trial": None if top is None else top["trial"],
                }
            )
            study.set_user_attr("anytime:checkpoints", points)
    retrained = study.user_attrs.get("anytime:retrained", {})
    for point in points:
        number = point["top1_trial"]
        if number is None or str(number) in retrained:
            continue
        top = trial_record(study.trials[number])
        _log(f"{name}: retraining trial #{number}")
        c0 = time.process_time()
        test = objective.retrain_and_test(top["mask"], top["lr_weights"], seeds=list(FINAL_SEEDS))
        cpu = time.process_time() - c0
        mean, sem = mean_sem(test)
        retrained[str(number)] = {
            "validation": top["value"],
            "trainable_share": top["trainable_share"],
            "test": test,
            "mean": mean,
            "sem": sem,
            "cpu_s": round(cpu, 2),
            "ft_runs": round(cpu / unit["unit_cpu_s"], 3),
        }
        study.set_user_attr("anytime:retrained", retrained)
    curve = []
    for point in points:
        r = retrained.get(str(point["top1_trial"]))
        if r is None:
            continue
        curve.append(
            point
            | {k: r[k] for k in ("validation", "trainable_share", "mean", "sem", "test")}
            | {
                "retrain_ft_runs": r["ft_runs"],
                "total_ft_runs": round(point["search_ft_runs"] + r["ft_runs"], 3),
            }
        )
    doc = {
        "dataset": args.dataset,
        "sampler": args.sampler,
        "seed": args.seed,
        "set_build": hard_sets.build_info(args.dataset),
        "pruner": "HyperbandPruner(min_resource=1, max_resource=90, reduction_factor=3)",
        "budget": BUDGET | {"seeds_per_evaluation": 3, "data_fraction": 0.5, "prune": True},
        "units": study.user_attrs["anytime:units"],
        "curve": curve,
        "trials": len(study.trials),
        "search_cpu_s": round(
            sum(float(t.user_attrs.get("anytime:cpu_s", 0.0)) for t in study.trials), 1
        ),
        "retrain_cpu_s": round(sum(r["cpu_s"] for r in retrained.values()), 1),
        "values": [t.value for t in study.trials],
        "states": [t.state.name for t in study.trials],
        "command": command,
        "machine": _machine(),
    }
    _save(OUT / f"{name}.json", doc)
    _log(f"{name}: {[(p['total_ft_runs'], round(p['mean'], 4)) for p in curve]}")


# --- report ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    m = sub.add_parser("methods")
    m.add_argument("--dataset", default="digits")
    m.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    m.add_argument("--autorgn-lrs", type=float, nargs="*", default=[3e-3, 1e-2])
    m.add_argument("--lora-lrs", type=float, nargs="*", default=list(LORA_LRS))
    b = sub.add_parser("biotune")
    e = sub.add_parser("exact")
    d = sub.add_parser("default")
    f = sub.add_parser("fraction")
    for q in (b, e, d, f):
        q.add_argument("--dataset", default="digits")
        q.add_argument("--search-seed", type=int, default=0)
        q.add_argument("--minutes", type=float, default=85.0)
    f.add_argument("--fraction", type=float, required=True)
    s = sub.add_parser("samplers")
    s.add_argument("--dataset", default="digits")
    s.add_argument("--sampler", choices=SAMPLERS, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--evaluations", type=int, default=49)
    a = sub.add_parser("anytime")
    a.add_argument("--dataset", default="digits")
    a.add_argument("--sampler", choices=("tpe", "random"), required=True)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--checkpoints",
        type=float,
        nargs="+",
        default=list(CHECKPOINTS),
        help="search compute (FT runs) at which the top-1 so far is retrained and tested",
    )
    w = sub.add_parser("wipeout")
    w.add_argument("--dataset", default="digits")
    w.add_argument("--search-seed", type=int, default=0)
    w.add_argument("--wipeout", choices=("on", "off"), required=True)
    w.add_argument("--generations", type=int, default=3)
    w.add_argument("--minutes", type=float, default=85.0)
    sub.add_parser("report")
    for q in (m, b, d, e, f, s, a, w):
        q.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    command = _command(argv)
    if args.part == "report":
        sys.path.insert(0, str(HERE))
        from comparison_report import write_report

        write_report(OUT, HERE / "results")
        return
    import torch

    torch.set_num_threads(args.threads)
    if args.part == "methods":
        run_methods(args, command)
    elif args.part == "biotune":
        run_biotune(args, fraction=0.5, name=f"biotune-{args.dataset}-s{args.search_seed}")
    elif args.part == "default":
        run_biotune(args, fraction=0.5, name=f"default-{args.dataset}-s{args.search_seed}")
    elif args.part == "exact":
        run_biotune(
            args, fraction=0.5, name=f"exact-{args.dataset}-s{args.search_seed}", protocol="exact"
        )
    elif args.part == "fraction":
        run_biotune(
            args,
            fraction=args.fraction,
            name=f"fraction-{args.dataset}-{args.fraction:g}-s{args.search_seed}",
        )
    elif args.part == "anytime":
        run_anytime(args, command)
    elif args.part == "wipeout":
        run_wipeout(args)
    else:
        run_samplers(args, command)


if __name__ == "__main__":
    main()
