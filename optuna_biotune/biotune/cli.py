"""BioTune's commands: ``search``, ``final``, ``report`` and ``dashboard``.

``search`` creates or resumes a study and runs the evolutionary search (then ``final`` when the
spec asks), ``final`` retrains the top-k configurations on the full training set and scores the
test set beside plain fine-tuning, ``report`` writes tables and the paper's Fig. 2 (PNG + HTML,
attached to the study as dashboard artifacts), ``dashboard`` starts optuna-dashboard on the
study's storage with its artifacts. The dispatcher (:mod:`optuna_biotune.cli`) registers them
with :func:`add_commands`, prints the result and maps errors to exit codes.

Each handler (``cmd_*``) only turns its options into a spec and calls functions a Python user
calls directly: :func:`.search.run_search`, :func:`.search.run_final`,
:func:`.report.write_report` (the way torchvision's reference scripts are a parser and a
``main(args)``). The options of ``search`` are the fields of :class:`.spec.StudySpec`, each
declared once there (:mod:`.settings`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optuna_biotune.biotune.attrs import ARTIFACTS_ATTR, OBJECTIVE_SPEC_ATTR
from optuna_biotune.biotune.compute import Compute
from optuna_biotune.biotune.search import (
    artifact_store,
    existing_study,
    run_final,
    run_search,
    stored_spec,
)
from optuna_biotune.biotune.settings import GROUPS, non_negative_int, settings
from optuna_biotune.biotune.spec import StudySpec, default_spec, load_spec
from optuna_biotune.cli_options import add_device_option
from optuna_biotune.errors import UsageError
from optuna_biotune.runtime.storage import load_study, open_storage

if TYPE_CHECKING:
    import optuna

__all__ = [
    "COMMANDS",
    "add_commands",
    "cmd_dashboard",
    "cmd_final",
    "cmd_report",
    "cmd_search",
]


# -- argument parsing ---------------------------------------------------------------------


def _add_option(group: Any, name: str, **changes: Any) -> None:
    """Add the option of the :class:`StudySpec` field ``name`` to ``group``: ``--name-with-
    dashes`` and the field's other spellings, its help and parser, unset left ``None``."""
    f = next(f for f in settings(StudySpec) if f.name == name)
    meta = {**f.metadata, **changes}
    flags = [f"--{name.replace('_', '-')}", *meta["flags"]]
    if meta["parse"] is bool:
        group.add_argument(
            *flags, dest=name, action=argparse.BooleanOptionalAction, help=meta["help"]
        )
    else:
        group.add_argument(*flags, dest=name, type=meta["parse"], help=meta["help"])


def _add_common(p: argparse.ArgumentParser, *, study: bool = True) -> None:
    if study:
        for name in ("study", "storage", "artifacts"):
            _add_option(p, name)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line of stdout"
    )


def _seeds_or_count(text: str) -> int | tuple[int, ...]:
    """``3`` -> a count of the default seeds; ``684,559,629`` (any comma) -> those seeds."""
    if "," not in text:
        value = non_negative_int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected at least 1 seed, got {value}")
        return value
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count or comma-separated integer seeds, got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, got {text!r}")
    return seeds


def _add_search_options(p: argparse.ArgumentParser) -> None:
    """Every setting of :class:`StudySpec` with a ``group``, in its group (its own name)."""
    p.add_argument("spec", nargs="?", help="TOML study spec (default: the embedded default)")
    for group, title in GROUPS.items():
        g = p.add_argument_group(title)
        for f in settings(StudySpec, group=group):
            _add_option(g, f.name)


def add_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], dict[str, Any]]]:
    """Register ``search``, ``final``, ``report`` and ``dashboard`` on the dispatcher's
    subparsers (``argparse``'s ``add_subparsers()``); returns name -> run function."""
    p = sub.add_parser("search", help="create or resume a study and run the search")
    _add_search_options(p)
    _add_common(p)

    p = sub.add_parser("final", help="retrain the top-k configurations and score the test set")
    _add_option(p, "top_k", help="configurations to retrain (default: the study's)")
    p.add_argument(
        "--seeds",
        type=_seeds_or_count,
        help="a count (default: the spec's, 3: seeds 1001, 1002, 1003, not the search's) or a "
        "comma-separated list, e.g. 684,559,629 for the authors' fitness seeds",
    )
    add_device_option(p, unset="the study's")
    _add_common(p)

    p = sub.add_parser("report", help="tables and the paper's Fig. 2 (PNG + HTML)")
    _add_option(p, "out")
    p.add_argument("--top-k", type=non_negative_int, help="configurations in Fig. 2 (default 10)")
    _add_common(p)

    p = sub.add_parser("dashboard", help="start optuna-dashboard on the study's storage")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=non_negative_int, default=8080, help="port (8080)")
    _add_common(p)

    return COMMANDS


def _spec_for(args: argparse.Namespace) -> StudySpec:
    """The spec a stored-study command (final, report, dashboard) starts from."""
    spec = default_spec()
    return spec.replace(study=args.study, storage=args.storage, artifacts=args.artifacts)


# -- the handlers ---------------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The spec settings given on the command line (argparse leaves the others ``None``)."""
    names = (f.name for f in settings(StudySpec, python_only=False) if f.name != "out")
    return {k: v for k in names if (v := getattr(args, k, None)) is not None}


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    """Create or resume the study and run it until the planned generations are complete
    (:func:`.search.run_search` on the spec file, or the embedded default, with the options)."""
    overrides = _overrides(args)
    spec = (load_spec(args.spec) if args.spec else default_spec()).replace(**overrides)
    storage = open_storage(spec.storage_url)
    existing = None if args.spec else existing_study(spec.study, storage)
    if existing is not None:  # a bare `search --study NAME` continues the stored spec
        spec = stored_spec(existing, spec).replace(**overrides)  # (workers join this way)
    return run_search(spec, storage=storage)


def _open_existing(args: argparse.Namespace) -> tuple[optuna.Study, StudySpec]:
    spec = _spec_for(args)
    storage = open_storage(spec.storage_url, must_exist=True)
    study = load_study(spec.study, storage)
    stored = stored_spec(study, spec)
    return study, stored.replace(artifacts=args.artifacts)


def _summary(command: str, study: optuna.Study, spec: StudySpec) -> dict[str, Any]:
    """The head of a stored-study command's result: the study and its best trial."""
    from optuna_biotune.biotune import report

    result: dict[str, Any] = {
        "command": command,
        "study": study.study_name,
        "storage": spec.storage_url,
        "trials": len(study.trials),
    }
    result.update(report.best_summary(study))
    return result


def _write_report(
    study: optuna.Study, spec: StudySpec, *, out_dir: str, **kwargs: Any
) -> dict[str, Any]:
    """Write the report into ``out_dir`` and attach it to the study as artifacts."""
    from optuna_biotune.biotune import report

    store = artifact_store(spec.artifact_dir)
    return report.write_report(study, out_dir=out_dir, artifact_store=store, **kwargs)


def cmd_final(args: argparse.Namespace) -> dict[str, Any]:
    """Retrain the study's top-k configurations and FT; test accuracies stored in the study."""
    study, spec = _open_existing(args)
    listed = args.seeds if isinstance(args.seeds, tuple) else None
    count = len(listed) if listed else args.seeds
    spec = spec.replace(top_k=args.top_k, final_seeds=count, device=args.device)
    if not isinstance(study.user_attrs.get(OBJECTIVE_SPEC_ATTR), dict):
        raise UsageError(
            f"study {study.study_name!r} has no `{OBJECTIVE_SPEC_ATTR}`; "
            "it was not made by `optuna-biotune search`."
        )
    result = _summary("final", study, spec)
    result["final"] = run_final(study, spec, seeds=listed)
    result["compute"] = Compute.of_study(study).as_dict()  # the search's, in FT runs now
    result["report"] = _write_report(study, spec, out_dir=spec.report_dir)
    return result


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """Write the report (tables, Fig. 2 PNG, HTML) and attach it to the study."""
    study, spec = _open_existing(args)
    out = args.out or spec.report_dir
    result = _summary("report", study, spec)
    result["compute"] = Compute.of_study(study).as_dict()
    kwargs: dict[str, Any] = {}
    if args.top_k is not None:
        kwargs["top_k"] = args.top_k
    result["report"] = _write_report(study, spec, out_dir=out, **kwargs)
    return result


def cmd_dashboard(args: argparse.Namespace) -> dict[str, Any]:
    """Serve optuna-dashboard on the study's storage and artifact folder until Ctrl-C."""
    import optuna_dashboard

    spec = _spec_for(args)
    storage = open_storage(spec.storage_url, must_exist=True)
    artifacts = args.artifacts
    if artifacts is None:
        study = (
            load_study(spec.study, storage) if args.study else existing_study(spec.study, storage)
        )
        stored = study.user_attrs.get(ARTIFACTS_ATTR) if study is not None else None
        artifacts = stored or spec.artifact_dir
    url = f"http://{args.host}:{args.port}/dashboard"
    print(f"optuna-dashboard on {spec.storage_url} (artifacts {artifacts}): {url}", flush=True)
    optuna_dashboard.run_server(
        storage, host=args.host, port=args.port, artifact_store=artifact_store(artifacts)
    )
    return {"command": "dashboard", "storage": spec.storage_url, "url": url}


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "search": cmd_search,
    "final": cmd_final,
    "report": cmd_report,
    "dashboard": cmd_dashboard,
}
