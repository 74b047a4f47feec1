"""``optuna-biotune evoprune``: EvoPruneDeepTL from the command line (registered by ``cli.py``).

Creates or resumes a study (default storage ``sqlite:///studies/<study>.db``), runs the
steady-state GA until ``--evaluations`` trials are complete (counting earlier runs), then
scores the best mask and the unpruned head on the test split (cached in the study, so a
repeat does not retrain). The objective's and the sampler's settings are stored in the study
(``evoprune:spec``, ``evoprune:sampler``): a bare ``evoprune --study NAME`` resumes with
them, and a conflicting option is refused rather than mixing two searches in one study.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from typing import Any

from optuna_biotune.cli_options import add_budget_options, add_device_option
from optuna_biotune.engine import budget
from optuna_biotune.errors import UsageError
from optuna_biotune.evoprune.head import HEAD_BATCH_SIZE
from optuna_biotune.evoprune.objective import (
    FINAL_ATTR,
    LAYERS,
    OPTIMIZERS,
    PRECISIONS,
    SPEC_ATTR,
    EvoPruneObjective,
)

__all__ = ["add_arguments", "run"]

SAMPLER_ATTR = "evoprune:sampler"
#: Defaults of the stored settings (the paper's, except the optimiser; see the objective).
OBJECTIVE_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "model": "efficientnet_lite0",
    "layers": "first",
    "hidden": 512,
    "image_size": None,
    "optimizer": budget.OPTIMIZER,
    "lr": budget.BASE_LR,
    "batch_size": HEAD_BATCH_SIZE,
    "max_epochs": budget.EPOCHS,
    "patience": budget.PATIENCE,
    "seed": 0,
    "precision": "fp32",
}
SAMPLER_DEFAULTS: dict[str, Any] = {
    "population_size": 30,
    "crossover": "uniform",
    "selection": "roulette",
    "mutation": 0.07,
    "seed": 0,
}
_OBJECTIVE_OPTIONS = {  # CLI option -> objective setting
    "dataset": "dataset",
    "model": "model",
    "layers": "layers",
    "hidden": "hidden",
    "image_size": "image_size",
    "optimizer": "optimizer",
    "lr": "lr",
    "batch_size": "batch_size",
    "epochs": "max_epochs",
    "patience": "patience",
    "train_seed": "seed",
    "precision": "precision",
}
#: The budget options' defaults (named in the help; unset, a stored study's settings apply).
_BUDGET_DEFAULTS = {
    o: OBJECTIVE_DEFAULTS[_OBJECTIVE_OPTIONS[o]] for o in ("epochs", "patience", "batch_size")
}
_SAMPLER_OPTIONS = {
    "population": "population_size",
    "crossover": "crossover",
    "selection": "selection",
    "mutation": "mutation",
    "seed": "seed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``optuna-biotune evoprune`` (unset options: stored or default values)."""
    parser.add_argument("--study", help="study name (default: evoprune-<dataset>-<layers>)")
    parser.add_argument("--storage", help="storage URL (default: sqlite:///studies/<study>.db)")
    o = parser.add_argument_group("objective (paper: ResNet-50 features, head 512-512)")
    o.add_argument("--dataset", help="digits (default), mnist5k, a torchvision name or a folder")
    o.add_argument("--model", help="backbone (default: efficientnet_lite0)")
    o.add_argument("--layers", choices=LAYERS, help="prune the first hidden layer or both")
    o.add_argument("--hidden", type=int, help="width of each hidden layer (default 512)")
    o.add_argument("--image-size", type=int, help="backbone input side (default: 64 / model's)")
    o.add_argument(
        "--optimizer", choices=OPTIMIZERS, help=f"head optimiser (default {budget.OPTIMIZER})"
    )
    o.add_argument("--lr", type=float, help=f"head learning rate (default {budget.BASE_LR:g})")
    add_budget_options(o, defaults=_BUDGET_DEFAULTS, unset_is_none=True)
    o.add_argument("--train-seed", type=int, help="seed of every head's training (default 0)")
    o.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (default) or bf16 autocast (faster on CPUs with AVX512-BF16)",
    )
    s = parser.add_argument_group("search (paper: population 30, 200 evaluations)")
    s.add_argument("--evaluations", type=int, default=200, help="completed trials to reach")
    s.add_argument("--population", type=int, help="population size (default 30)")
    s.add_argument("--crossover", choices=("uniform", "one_point"), help="default uniform")
    s.add_argument("--selection", choices=("roulette", "nam"), help="default roulette")
    s.add_argument("--mutation", type=float, help="per-bit flip probability (default 0.07)")
    s.add_argument("--seed", type=int, help="sampler seed (default 0)")
    s.add_argument("--n-jobs", type=int, default=1, help="parallel trials in this process")
    r = parser.add_argument_group("running")
    add_device_option(r, default="cpu")
    r.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per evaluation (default: the CPUs / --n-jobs; with several "
        "worker processes on one machine, give each its share, e.g. 1)",
    )
    r.add_argument("--cache-dir", help="feature cache (default ~/.cache/optuna-biotune)")
    r.add_argument("--final-seeds", type=int, default=3, help="training seeds of the test score")
    r.add_argument(
        "--final",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the best mask and the unpruned head on the test split after the search",
    )


def _settings(
    args: argparse.Namespace,
    options: dict[str, str],
    stored: dict[str, Any] | None,
    defaults: dict[str, Any],
    what: str,
    study: str,
) -> dict[str, Any]:
    settings = dict(defaults if stored is None else {**defaults, **stored})
    for option, key in options.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if stored is not None and key in stored and stored[key] != value:
            raise UsageError(
                f"study {study!r} was made with {what} {key}={stored[key]!r}, not {value!r}; "
                "drop the option to resume it, or pass a new --study."
            )
        settings[key] = value
    return settings


def _default_study(dataset: str, layers: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(dataset).rstrip("/").split("/")[-1])
    return f"evoprune-{tag}-{layers}"


def _info(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Create or resume the study, search, and score the best mask on the test split."""
    import optuna

    from optuna_biotune.evoprune import EvoPruneSampler
    from optuna_biotune.runtime.storage import open_storage

    if args.evaluations is None or args.evaluations < 1:
        raise UsageError(f"`--evaluations` must be >= 1, got {args.evaluations!r}.")
    if args.n_jobs < 1:
        raise UsageError(f"`--n-jobs` must be >= 1, got {args.n_jobs!r}.")
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.n_jobs)
    if args.threads < 1:
        raise UsageError(f"`--threads` must be >= 1, got {args.threads!r}.")
    if args.final_seeds < 1:
        raise UsageError(f"`--final-seeds` must be >= 1, got {args.final_seeds!r}.")
    dataset = args.dataset or OBJECTIVE_DEFAULTS["dataset"]
    layers = args.layers or OBJECTIVE_DEFAULTS["layers"]
    name = args.study or _default_study(dataset, layers)
    url = args.storage or f"sqlite:///studies/{name}.db"
    storage = open_storage(url)
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    stored_objective = existing.user_attrs.get(SPEC_ATTR) if existing else None
    stored_sampler = existing.user_attrs.get(SAMPLER_ATTR) if existing else None
    objective_settings = _settings(
        args, _OBJECTIVE_OPTIONS, stored_objective, OBJECTIVE_DEFAULTS, "objective", name
    )
    sampler_settings = _settings(
        args, _SAMPLER_OPTIONS, stored_sampler, SAMPLER_DEFAULTS, "sampler", name
    )
    objective = EvoPruneObjective.from_spec(
        objective_settings,
        device=args.device,
        cache_dir=args.cache_dir,
        num_threads=args.threads,
    )
    sampler = EvoPruneSampler(**sampler_settings)
    _info(f"study {name!r}: computing or loading backbone features ...")
    started = time.perf_counter()
    # Before the study is created or touched: bad data (an unreadable image) leaves nothing.
    objective.features  # noqa: B018 - compute or load the cached features
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        direction="maximize",
        load_if_exists=True,
    )
    if stored_objective is None:
        study.set_user_attr(SPEC_ATTR, objective.spec())
    if stored_sampler is None:
        study.set_user_attr(SAMPLER_ATTR, sampler_settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_accuracy"])

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    _info(
        f"study {name!r} in {url}: {finished()}/{args.evaluations} evaluations done "
        f"(EvoPruneDeepTL, {objective.layers} layer(s), population "
        f"{sampler_settings['population_size']})"
    )
    _search(study, objective, target=args.evaluations, n_jobs=args.n_jobs)
    best = objective.best_trial(study)
    result: dict[str, Any] = {
        "command": "evoprune",
        "study": name,
        "storage": url,
        "evaluations": finished(),
        "trials": len(study.trials),
        "seconds": round(time.perf_counter() - started, 1),
        "best_trial": best.number,
        "best_value": float(best.value),
        "active": best.user_attrs.get("active"),
        "active_share": best.user_attrs.get("active_share"),
    }
    if args.final:
        result["final"] = _final(study, objective, seeds=list(range(args.final_seeds)))
    return result


def _search(study: Any, objective: EvoPruneObjective, *, target: int, n_jobs: int) -> None:
    """Evaluate until ``target`` trials are complete (earlier runs count), with a progress bar.

    The loop is the package's one worker loop (:func:`optuna_biotune.runtime.loop.run_until`):
    storage outages retried, this worker's open trials failed on Ctrl-C, out-of-memory failing
    only the trial.
    """
    from optuna.trial import TrialState

    from optuna_biotune.evolution import trial_generation
    from optuna_biotune.runtime.loop import progress_bar, run_with_progress

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    bar = progress_bar(desc="EvoPrune", total=max(target, done), initial=done)
    try:
        run_with_progress(
            study, objective, bar=bar, target=target, n_jobs=n_jobs, generation=trial_generation
        )
    finally:
        bar.close()


def _final(study: Any, objective: EvoPruneObjective, *, seeds: list[int]) -> dict[str, Any]:
    best = objective.best_trial(study)
    cached = study.user_attrs.get(FINAL_ATTR)
    if (
        isinstance(cached, dict)
        and cached.get("best_trial") == best.number
        and cached.get("seeds") == seeds
    ):
        return cached
    _info(f"scoring trial {best.number}'s mask and the unpruned head on the test split ...")
    final = objective.final(study, seeds=seeds)
    pruned, unpruned = final["pruned"], final["unpruned"]
    final["summary"] = (
        f"test accuracy: pruned head {pruned['test_accuracy']:.4f} ± "
        f"{pruned['test_accuracy_stderr']:.4f} with {100 * final['active_share']:.1f} % of the "
        f"neurons, unpruned head {unpruned['test_accuracy']:.4f} ± "
        f"{unpruned['test_accuracy_stderr']:.4f} (mean ± s.e. over {len(seeds)} training seed(s))"
    )
    study.set_user_attr(FINAL_ATTR, final)
    return final
