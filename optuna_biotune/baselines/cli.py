"""``optuna-biotune baseline METHOD``: train one comparison method of paper Table I and test it.

A thin command over :func:`~optuna_biotune.baselines.run.run_baseline`: ``add_arguments`` declares
the options (the method settings derived from :class:`BaselineConfig`'s fields), ``run`` maps
them to its keywords. Registered by ``optuna_biotune/cli.py`` (``SUBCOMMANDS``); the CLI adds
``--json`` and prints the returned dict. Torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from optuna_biotune.baselines.config import BaselineConfig
from optuna_biotune.baselines.methods import METHODS, REGISTRY, canonical_method
from optuna_biotune.cli_options import add_budget_options, add_device_option
from optuna_biotune.engine import budget

#: The parsed attribute of ``cli_options``' epochs option (the one line to change when it is
#: renamed ``max_epochs``).
_EPOCHS = "epochs"
#: The fine-tuner's options: parsed attribute -> ``run_baseline`` keyword (``FineTuner``'s).
_TUNER_OPTIONS = {
    "dataset": "dataset",
    "model": "model",
    _EPOCHS: "max_epochs",
    "patience": "patience",
    "batch_size": "batch_size",
    "lr": "base_lr",
    "optimizer": "optimizer",
    "metric": "metric",
    "image_size": "image_size",
    "device": "device",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``baseline`` options to ``parser`` (``--json`` comes from the CLI)."""
    parser.add_argument("method", help=f"one of {', '.join(METHODS)} (any case)")
    parser.add_argument("--dataset", default="digits", help="dataset spec (default: digits)")
    parser.add_argument(
        "--model", default="efficientnet_lite0", help="backbone (default: efficientnet_lite0)"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="training seeds, the authors' first (default: 3)"
    )
    add_budget_options(
        parser,
        defaults={
            _EPOCHS: budget.EPOCHS,
            "patience": budget.PATIENCE,
            "batch_size": budget.BATCH_SIZE,
        },
    )
    parser.add_argument(
        "--lr", type=float, default=budget.BASE_LR, help=f"base learning rate ({budget.BASE_LR:g})"
    )
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=budget.OPTIMIZER)
    parser.add_argument(
        "--metric",
        choices=("accuracy", "macro"),
        default=budget.METRIC,
        help="validation metric for early stopping (test: plain accuracy)",
    )
    parser.add_argument("--image-size", type=int, default=None, help="image side (default: set's)")
    add_device_option(parser, default="auto")
    for f in dataclasses.fields(BaselineConfig):
        readers = "/".join(m for m, entry in REGISTRY.items() if f.name in entry.options)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=f.default,
            help=f"{readers}: {f.metadata['help']} (default: {f.default:g})",
        )


def config_from_args(args: argparse.Namespace) -> BaselineConfig:
    """The :class:`BaselineConfig` the options ask for (each field's option has its name)."""
    return BaselineConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(BaselineConfig)}
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the baseline the options describe; progress to stderr, the result returned."""
    method = canonical_method(args.method)  # fail fast, before torch loads
    config = config_from_args(args)
    settings = {keyword: getattr(args, option) for option, keyword in _TUNER_OPTIONS.items()}
    from optuna_biotune.baselines.run import run_baseline

    return run_baseline(
        method,
        seeds=args.seeds,
        config=config,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        **settings,
    )
