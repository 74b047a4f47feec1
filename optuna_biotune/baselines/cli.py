"""``optuna-biotune baseline METHOD``: train one comparison method of paper Table I and test it.

Registered by ``optuna_biotune/cli.py`` (``SUBCOMMANDS``); the CLI adds ``--json`` and prints
the returned dict. Torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from optuna_biotune.baselines.config import BaselineConfig
from optuna_biotune.baselines.methods import METHODS, canonical_method
from optuna_biotune.cli_options import add_budget_options, add_device_option
from optuna_biotune.engine import budget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``baseline`` options to ``parser`` (``--json`` comes from the CLI)."""
    defaults = BaselineConfig()
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
            "epochs": budget.EPOCHS,
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
    parser.add_argument("--sp-alpha", type=float, default=defaults.sp_alpha, help="L1/L2-SP alpha")
    parser.add_argument("--sp-beta", type=float, default=defaults.sp_beta, help="L1/L2-SP beta")
    parser.add_argument(
        "--unfreeze-every",
        type=int,
        default=defaults.unfreeze_every,
        help="G-LF/G-FL: epochs per unfrozen block",
    )
    parser.add_argument(
        "--rgn-batches", type=int, default=defaults.rgn_batches, help="AutoRGN probe batches"
    )
    parser.add_argument("--lora-rank", type=int, default=defaults.lora_rank, help="LoRA rank")
    parser.add_argument(
        "--lora-alpha", type=float, default=defaults.lora_alpha, help="LoRA scaling alpha"
    )


def config_from_args(args: argparse.Namespace) -> BaselineConfig:
    """The :class:`BaselineConfig` the options ask for (each field's option has its name; a
    field without an option keeps its default)."""
    names = (f.name for f in dataclasses.fields(BaselineConfig))
    return BaselineConfig(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the baseline the options describe; progress to stderr, the result returned."""
    method = canonical_method(args.method)  # fail fast, before torch loads
    config = config_from_args(args)
    from optuna_biotune.baselines.run import run_baseline

    return run_baseline(
        method,
        dataset=args.dataset,
        model=args.model,
        seeds=args.seeds,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        base_lr=args.lr,
        optimizer=args.optimizer,
        metric=args.metric,
        image_size=args.image_size,
        config=config,
        device=args.device,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
