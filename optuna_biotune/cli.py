"""The ``optuna-biotune`` command: the dispatcher (subcommand registry, exit codes, ``--json``).

BioTune's commands (``search``, ``final``, ``report``, ``dashboard``) come from
:mod:`optuna_biotune.biotune.cli`; other methods register theirs in :data:`SUBCOMMANDS`
(``evoprune``, ``baseline``), imported only when invoked.

Every command takes ``--json``: the last line of standard output is then one JSON object.
Errors of the package (:class:`~optuna_biotune.errors.BioTuneError`) print their one-line
message to standard error and exit with its code (2 usage, 1 runtime); argparse usage errors
exit 2; Ctrl-C marks the running trial failed and exits 130, SIGTERM (Slurm, Kubernetes, a spot
instance) does the same and exits 143, and the same command resumes
(:mod:`optuna_biotune.runtime.interrupts`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from optuna_biotune.biotune import cli as biotune_cli
from optuna_biotune.errors import BioTuneError, RuntimeFailure, UsageError
from optuna_biotune.runtime.storage import json_default, jsonable

#: Subcommands provided by other modules, imported only when invoked:
#: name -> (module, one-line help). The module defines
#: ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
#: ``run(args: argparse.Namespace) -> dict`` (the JSON-able result). This layer adds
#: ``--json`` to their parser, prints the result, and maps errors to exit codes.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "evoprune": (
        "optuna_biotune.evoprune.cli",
        "EvoPruneDeepTL: evolve which neurons of the transfer-learning head survive",
    ),
    "baseline": (
        "optuna_biotune.baselines.cli",
        "train one comparison method of paper Table I (FT, LP, L2-SP, ...) and test it",
    ),
}

#: BioTune's commands, name -> run function (filled by :func:`build_parser`).
_COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the problem and where to look), exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`.\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (external subcommands are added by :func:`main` on use)."""
    parser = _Parser(
        prog="optuna-biotune",
        description="BioTune: evolutionary selective fine-tuning for transfer learning.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _COMMANDS.update(biotune_cli.add_commands(sub))
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# -- printing -----------------------------------------------------------------------------


def _format_summary(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for key, value in result.items():
        if key in {"final", "best_configuration"}:
            continue
        if key == "report" and isinstance(value, dict):
            value = value.get("report.html", "")
        if isinstance(value, dict) and isinstance(value.get("summary"), str):
            value = value["summary"]  # a result part that says itself in one line
        if isinstance(value, dict | list):
            value = json.dumps(value, default=json_default)
        elif isinstance(value, float):
            value = f"{value:.1f}" if key == "seconds" else f"{value:.4f}"
        lines.append(f"{key}: {value}")
    best = result.get("best_configuration")
    if isinstance(best, dict) and best.get("blocks"):
        lines.append("best configuration by validation (block: LR weight, 0 = frozen):")
        for block, weight in zip(best["blocks"], best["lr_weights"], strict=False):
            lines.append(f"  {block:<28} {'frozen' if weight == 0 else f'{weight:.3g}'}")
    final_result = result.get("final")
    if isinstance(final_result, dict) and "summary" in final_result:
        lines.append(final_result["summary"])
    return "\n".join(lines)


def _load_external(name: str) -> Any:
    module_name, _ = SUBCOMMANDS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise UsageError(
                f"`{name}` is not available in this installation ({module_name} is missing)."
            ) from None
        raise


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Callable[..., dict[str, Any]]]:
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = _load_external(command)
        sub = _Parser(prog=f"optuna-biotune {command}", description=SUBCOMMANDS[command][1])
        module.add_arguments(sub)
        if not any("--json" in a.option_strings for a in sub._actions):
            sub.add_argument(
                "--json", action="store_true", help="print one JSON object as the last line"
            )
        index = list(argv).index(command)
        if any(a in ("-h", "--help") for a in argv[:index]):
            parser.parse_args(argv)
        args = sub.parse_args(list(argv[index + 1 :]))
        args.command = command
        return args, module.run
    args = parser.parse_args(list(argv))
    return args, _COMMANDS[args.command]


def _strip_traceback(record: Any) -> bool:
    record.exc_info = None
    record.exc_text = None
    return True


def _one_line_logs() -> None:
    """Optuna's "Trial N failed ..." warnings keep their line but lose the traceback (the
    reason is in the line; Ctrl-C and bad input must not print one)."""
    import logging

    for handler in logging.getLogger("optuna").handlers:
        if _strip_traceback not in handler.filters:
            handler.addFilter(_strip_traceback)


def _interrupted(exc: BaseException) -> str:
    """The line a command stopped by Ctrl-C or SIGTERM prints (exit 130 / 143)."""
    by = "" if str(exc) in ("", "SIGINT") else f" by {exc}"
    return (
        f"optuna-biotune: interrupted{by}; the running trial is marked failed and its slot is "
        "issued again; rerun the same command to resume."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optuna-biotune`` console script; returns the exit code."""
    # OpenMP threads that spin while waiting make torch several times slower on a shared CPU;
    # this must be set before torch loads (the commands import it lazily, after this line).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    as_program = argv is None  # the process's entry point (console script, python -m)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, run = _parse(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    except BioTuneError as err:
        print(f"optuna-biotune: error: {err}", file=sys.stderr)
        return err.exit_code
    import optuna

    from optuna_biotune.runtime.workers import describe_storage_error, storage_error

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _one_line_logs()
    from optuna_biotune.runtime import interrupts

    def stopped(exc: KeyboardInterrupt) -> int:
        print(_interrupted(exc), file=sys.stderr, flush=True)
        if as_program:  # gone now: tearing down torch's modules takes seconds on a busy CPU
            interrupts.leave(interrupts.exit_code(exc))
        return interrupts.exit_code(exc)

    with interrupts.stop_on_signals(line=_interrupted):  # SIGTERM as Ctrl-C (the watchdog too)
        try:
            result = run(args)
        except BioTuneError as err:
            print(f"optuna-biotune: error: {err}", file=sys.stderr)
            return err.exit_code
        except Exception as err:
            stop = interrupts.cause(err)  # a signal that landed in some library's cleanup
            if stop is not None:
                return stopped(stop)
            if not storage_error(err):
                raise
            print(
                f"optuna-biotune: error: the storage failed ({describe_storage_error(err)}); "
                "check the server, then rerun the same command to resume.",
                file=sys.stderr,
            )
            return RuntimeFailure.exit_code
        except KeyboardInterrupt as exc:
            return stopped(exc)
    result = jsonable(result if isinstance(result, dict) else {"result": result})
    if getattr(args, "json", False):
        text = _format_summary(result)
        if text:
            print(text)
        print(json.dumps(result, sort_keys=False), flush=True)
    else:
        print(_format_summary(result), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
