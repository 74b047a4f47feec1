"""A real subcommand module for the CLI's registry test (the contract in CONTRIBUTING.md)."""

from __future__ import annotations

import argparse
import sys

from optuna_biotune.errors import RuntimeFailure, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``optuna-biotune echo``."""
    parser.add_argument("--times", type=int, default=1, help="how often to echo")
    parser.add_argument("--word", default="bio", help="what to echo")


def run(args: argparse.Namespace) -> dict:
    """Echo ``word`` ``times`` times; 0 is a usage error, 13 a runtime failure."""
    if args.times == 0:
        raise UsageError("`--times` must be at least 1; pass --times 2.")
    if args.times == 13:
        raise RuntimeFailure("unlucky number; try again with another --times.")
    print(f"echoing {args.times} times", file=sys.stderr)
    return {"command": "echo", "echo": [args.word] * args.times}
