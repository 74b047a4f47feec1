"""``optuna-biotune evoprune``: EvoPruneDeepTL from the command line (registered by ``cli.py``).

A thin command over :func:`~optuna_biotune.evoprune.search.run_evoprune`: ``add_arguments``
declares the options, ``run`` passes the ones given (an unset option is ``None``: the stored
study's setting, else the default) to its keywords. A bare ``evoprune --study NAME`` resumes a
study with its stored settings.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from optuna_biotune.cli_options import add_budget_options, add_device_option
from optuna_biotune.engine import budget
from optuna_biotune.evoprune.head import HEAD_BATCH_SIZE
from optuna_biotune.evoprune.objective import LAYERS, OPTIMIZERS, PRECISIONS

__all__ = ["add_arguments", "run"]

#: The parsed attribute of ``cli_options``' epochs option (the one line to change when it is
#: renamed ``max_epochs``).
_EPOCHS = "epochs"
#: The objective's options: parsed attribute -> ``EvoPruneObjective`` keyword.
_OBJECTIVE_OPTIONS = {
    "dataset": "dataset",
    "model": "model",
    "layers": "layers",
    "hidden": "hidden",
    "image_size": "image_size",
    "optimizer": "optimizer",
    "lr": "lr",
    "batch_size": "batch_size",
    _EPOCHS: "max_epochs",
    "patience": "patience",
    "train_seed": "seed",
    "precision": "precision",
}
#: The sampler's options: parsed attribute -> ``EvoPruneSampler`` keyword.
_SAMPLER_OPTIONS = {
    "population_size": "population_size",
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
    add_budget_options(
        o,
        defaults={
            _EPOCHS: budget.EPOCHS,
            "patience": budget.PATIENCE,
            "batch_size": HEAD_BATCH_SIZE,
        },
        unset_is_none=True,
    )
    o.add_argument("--train-seed", type=int, help="seed of every head's training (default 0)")
    o.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (default) or bf16 autocast (faster on CPUs with AVX512-BF16)",
    )
    s = parser.add_argument_group("search (paper: population 30, 200 evaluations)")
    s.add_argument("--evaluations", type=int, default=200, help="completed trials to reach")
    s.add_argument(
        "--population-size", "--population", type=int, help="population size (default 30)"
    )
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


def _given(args: argparse.Namespace, options: dict[str, str]) -> dict[str, Any]:
    """The keywords of the options set on the command line."""
    values = {key: getattr(args, option) for option, key in options.items()}
    return {key: value for key, value in values.items() if value is not None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Create or resume the study, search, and score the best mask on the test split."""
    from optuna_biotune.evoprune.search import run_evoprune

    return run_evoprune(
        objective=_given(args, _OBJECTIVE_OPTIONS),
        sampler=_given(args, _SAMPLER_OPTIONS),
        study=args.study,
        storage=args.storage,
        evaluations=args.evaluations,
        n_jobs=args.n_jobs,
        threads=args.threads,
        device=args.device,
        cache_dir=args.cache_dir,
        final_seeds=args.final_seeds,
        final=args.final,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
