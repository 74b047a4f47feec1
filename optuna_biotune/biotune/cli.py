"""BioTune's commands: ``search``, ``final``, ``report`` and ``dashboard``.

``search`` creates or resumes a study and runs the evolutionary search (then ``final`` when the
spec asks), ``final`` retrains the top-k configurations on the full training set and scores the
test set beside plain fine-tuning, ``report`` writes tables and the paper's Fig. 2 (PNG + HTML,
attached to the study as dashboard artifacts), ``dashboard`` starts optuna-dashboard on the
study's storage with its artifacts. The dispatcher (:mod:`optuna_biotune.cli`) registers them
with :func:`add_commands`, prints the result and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna_biotune.biotune.attrs import ARTIFACTS_ATTR, OBJECTIVE_SPEC_ATTR, STUDY_ATTR
from optuna_biotune.biotune.memetic import evaluations_per_generation
from optuna_biotune.biotune.spec import (
    SECTIONS,
    StudySpec,
    default_spec,
    load_spec,
    spec_from_dict,
)
from optuna_biotune.errors import UsageError
from optuna_biotune.runtime.storage import jsonable, load_study, open_storage

if TYPE_CHECKING:
    import optuna

#: Study user attrs this layer writes (besides the objective's ``biotune:spec``).

#: Objective-spec keys that may change between runs of one study (hardware only).
_RESUMABLE_KEYS = {"device"}
#: Study-spec fields that may change between runs of one study.
_RESUMABLE_FIELDS = {
    "generations",
    "n_jobs",
    "device",
    "final",
    "top_k",
    "final_seeds",
    "out",
    "storage",
    "artifacts",
}

#: Study-spec fields never compared on resume (names and places, not settings).
_FIXED_EXEMPT = _RESUMABLE_FIELDS | {"study", "base_dir"}


# -- argument parsing ---------------------------------------------------------------------


def _add_common(p: argparse.ArgumentParser, *, study: bool = True) -> None:
    if study:
        p.add_argument("--study", help="study name (default: the spec's, else 'default')")
        p.add_argument(
            "--storage",
            help="Optuna storage URL (default: sqlite:///studies/<study>.db beside the spec)",
        )
        p.add_argument(
            "--artifacts", help="artifact folder (default: studies/artifacts beside the database)"
        )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line of stdout"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _seeds_or_count(text: str) -> int | tuple[int, ...]:
    """``3`` -> a count of the default seeds; ``684,559,629`` (any comma) -> those seeds."""
    if "," not in text:
        value = _positive_int(text)
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


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="TOML study spec (default: the embedded default)")
    o = p.add_argument_group("objective (paper: ResNet-50, 3 seeds, 30 epochs, patience 3)")
    o.add_argument("--dataset", help="digits, mnist5k, a torchvision name, or an ImageFolder path")
    o.add_argument("--model", help="backbone, e.g. efficientnet_lite0, resnet50")
    o.add_argument(
        "--partition", help="blocks as comma-separated module-name prefixes (default: the model's)"
    )
    o.add_argument("--seeds", type=_positive_int, help="seeds per fitness evaluation")
    o.add_argument("--data-fraction", type=_float, help="data fraction per generation (0, 1]")
    o.add_argument("--epochs", type=_positive_int, help="maximum epochs per training run")
    o.add_argument("--patience", type=_positive_int, help="early-stopping patience in epochs")
    o.add_argument("--batch-size", type=_positive_int, help="batch size")
    o.add_argument("--base-lr", type=_float, help="base learning rate (scaled by 0.1-10)")
    o.add_argument("--optimizer", help="adam or sgd")
    o.add_argument("--metric", help="accuracy or macro (mean per-class recall)")
    o.add_argument("--device", help="auto, cpu or cuda")
    o.add_argument("--image-size", type=_positive_int, help="input side in pixels")
    o.add_argument(
        "--exact-protocol",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train every evaluation in full with every seed (the paper's protocol; default: "
        "cut evaluations that cannot change the search, see README 'Search cost')",
    )
    s = p.add_argument_group("search (paper: population 10, 3 elites, 10 generations)")
    s.add_argument("--population", type=_positive_int, help="population size")
    s.add_argument("--elites", type=_positive_int, help="elites per generation")
    s.add_argument("--generations", type=_positive_int, help="generations after the first")
    s.add_argument("--exploit-step", type=_float, help="exploitation perturbation (0.25)")
    s.add_argument("--n-jobs", type=_positive_int, help="parallel trials in this process")
    s.add_argument("--seed", type=int, help="sampler seed (reproducible proposals)")
    f = p.add_argument_group("final retraining after the search")
    f.add_argument(
        "--final",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run `final` after the search (default: the spec's [final] after_search)",
    )
    f.add_argument("--top-k", type=_positive_int, help="configurations to retrain (5)")
    f.add_argument("--final-seeds", type=_positive_int, help="seeds of the final retraining (3)")


def add_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], dict[str, Any]]]:
    """Register ``search``, ``final``, ``report`` and ``dashboard`` on the dispatcher's
    subparsers (``argparse``'s ``add_subparsers()``); returns name -> run function."""
    p = sub.add_parser("search", help="create or resume a study and run the search")
    _add_search_options(p)
    _add_common(p)

    p = sub.add_parser("final", help="retrain the top-k configurations and score the test set")
    p.add_argument(
        "--top-k", type=_positive_int, help="configurations to retrain (default: the spec's, 5)"
    )
    p.add_argument(
        "--seeds",
        type=_seeds_or_count,
        help="a count (default: the spec's, 3: seeds 1001, 1002, 1003, not the search's) or a "
        "comma-separated list, e.g. 684,559,629 for the authors' fitness seeds",
    )
    p.add_argument("--device", help="auto, cpu or cuda (default: the study's)")
    _add_common(p)

    p = sub.add_parser("report", help="tables and the paper's Fig. 2 (PNG + HTML)")
    p.add_argument("--out", help="output folder (default: studies/reports/<study>)")
    p.add_argument("--top-k", type=_positive_int, help="configurations in Fig. 2 (default 10)")
    _add_common(p)

    p = sub.add_parser("dashboard", help="start optuna-dashboard on the study's storage")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_positive_int, default=8080, help="port (8080)")
    _add_common(p)

    return COMMANDS


def _spec_for(args: argparse.Namespace) -> StudySpec:
    """The spec a stored-study command (final, report, dashboard) starts from."""
    spec = default_spec()
    return spec.replace(study=args.study, storage=args.storage, artifacts=args.artifacts)


def _with_protocol(data: dict[str, Any], table: str | None) -> dict[str, Any]:
    """A stored spec without ``exact_protocol`` predates the option: its study was exact."""
    data = json.loads(json.dumps(data))
    inner = data.setdefault(table, {}) if table else data
    inner.setdefault("exact_protocol", True)
    return data


def _stored_spec(study: optuna.Study, fallback: StudySpec) -> StudySpec:
    data = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(data, dict):
        return fallback
    data = _with_protocol(data, "objective")
    spec = spec_from_dict(data, base_dir=fallback.base_dir, source=f"study {study.study_name!r}")
    return spec.replace(
        storage=fallback.storage, artifacts=study.user_attrs.get(ARTIFACTS_ATTR) or None
    )


def _artifact_store(directory: str) -> optuna.artifacts.FileSystemArtifactStore:
    from optuna.artifacts import FileSystemArtifactStore

    Path(directory).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(Path(directory).resolve()))


# -- search -------------------------------------------------------------------------------

# Every spec field a `search` option overrides as is (`partition` is parsed below; `out` is
# `report`'s): one list of options, the spec's.
_OVERRIDES = tuple(field for field in SECTIONS.values() if field not in ("partition", "out"))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {k: getattr(args, k, None) for k in _OVERRIDES}
    partition = getattr(args, "partition", None)
    if partition is not None:
        out["partition"] = [x.strip() for x in partition.split(",") if x.strip()]
    return {k: v for k, v in out.items() if v is not None}


def _check_resume(study: optuna.Study, spec: StudySpec, objective_spec: dict[str, Any]) -> None:
    """Refuse to continue a study with settings that would change what its trials mean."""
    stored = study.user_attrs.get(OBJECTIVE_SPEC_ATTR)
    if isinstance(stored, dict):
        stored = _with_protocol(stored, None)
        new = jsonable(objective_spec)
        if stored["exact_protocol"] != new.get("exact_protocol"):
            _refuse_mixed_protocols(study, bool(stored["exact_protocol"]))
        diff = sorted(
            k
            for k in set(stored) | set(new)
            if k not in _RESUMABLE_KEYS and stored.get(k) != new.get(k)
        )
        if diff:
            detail = ", ".join(f"{k}: {stored.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
            raise UsageError(
                f"study {study.study_name!r} was made with other objective settings ({detail}); "
                "use the same settings or another --study."
            )
    data = study.user_attrs.get(STUDY_ATTR)
    if isinstance(data, dict):
        data = _with_protocol(data, "objective")
        old = spec_from_dict(data, base_dir=spec.base_dir, source="stored spec")
        # Every setting but the resumable ones: the gene layout (model, partition), the
        # objective, the population; a bare `search --study NAME --model X` lands here too.
        fields = [f.name for f in dataclasses.fields(spec) if f.name not in _FIXED_EXEMPT]
        diff = [f for f in fields if getattr(old, f) != getattr(spec, f)]
        if "exact_protocol" in diff:
            _refuse_mixed_protocols(study, old.exact_protocol)
        if diff:
            detail = ", ".join(f"{f}: {getattr(old, f)!r} -> {getattr(spec, f)!r}" for f in diff)
            raise UsageError(
                f"study {study.study_name!r} was searched with other settings ({detail}); "
                "use the same settings or another --study."
            )


def _refuse_mixed_protocols(study: optuna.Study, stored: bool) -> None:
    flag = "--exact-protocol" if stored else "--no-exact-protocol"
    raise UsageError(
        f"study {study.study_name!r} was searched with exact_protocol={str(stored).lower()}; "
        f"resume it with {flag} (a search cannot mix the two protocols) or use another --study."
    )


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    # Only COMPLETE trials fill a generation's slot; the sampler reissues failed or pruned ones.
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _make_objective(spec: StudySpec, stored: dict[str, Any] | None) -> Any:
    from optuna_biotune import BioTuneObjective

    if stored is not None:
        spec_dict = dict(stored)
        if spec.device:
            spec_dict["device"] = spec.device
        return BioTuneObjective.from_spec(spec_dict)
    return BioTuneObjective(**spec.objective_kwargs())


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    """Create or resume the study and run it until the planned generations are complete."""
    import optuna

    from optuna_biotune import BioTuneSampler
    from optuna_biotune.evolution import trial_generation

    overrides = _overrides(args)
    spec = (load_spec(args.spec) if args.spec else default_spec()).replace(**overrides)
    storage = open_storage(spec.storage_url)

    existing = _existing_study(spec.study, storage)
    if existing is not None and not args.spec:
        # A bare `search --study NAME` continues the stored spec (workers join this way).
        spec = _stored_spec(existing, spec).replace(**overrides)
    stored_objective = existing.user_attrs.get(OBJECTIVE_SPEC_ATTR) if existing else None
    objective = _make_objective(spec, stored_objective if not args.spec else None)
    objective_spec = objective.spec()
    if existing is not None:
        _check_resume(existing, spec, objective_spec)

    sampler = BioTuneSampler(**spec.sampler_kwargs(), threshold_param="threshold")
    _prepare(objective)
    study = optuna.create_study(
        study_name=spec.study,
        storage=storage,
        sampler=sampler,
        # The paper trains every individual to its early stop; Optuna's default MedianPruner
        # would cut them short (and the sampler would reissue the pruned slots).
        pruner=optuna.pruners.NopPruner(),
        direction="maximize",
        load_if_exists=True,
    )
    if OBJECTIVE_SPEC_ATTR not in study.user_attrs:
        import warnings

        study.set_user_attr(OBJECTIVE_SPEC_ATTR, jsonable(objective_spec))
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["validation accuracy"])
    study.set_user_attr(STUDY_ATTR, jsonable(_storable(spec)))
    artifact_dir = str(Path(spec.artifact_dir).resolve())
    study.set_user_attr(ARTIFACTS_ATTR, artifact_dir)

    target = spec.evaluations
    started = time.perf_counter()
    done_before = len(_finished(study))
    _info(
        args,
        f"study {spec.study!r} in {spec.storage_url}: {done_before}/{target} evaluations done "
        f"(population {spec.population}, {spec.elites} elites, {spec.generations} generations"
        f" after the first, {spec.seeds} seed(s), {spec.epochs} epochs)",
    )
    run_search(
        study,
        objective,
        generations=spec.generations,
        population=spec.population,
        elites=spec.elites,
        n_jobs=spec.n_jobs,
        generation=trial_generation,
    )
    seconds = time.perf_counter() - started

    from optuna_biotune.biotune import report

    result: dict[str, Any] = {
        "command": "search",
        "study": spec.study,
        "storage": spec.storage_url,
        "evaluations": len(_finished(study)),
        "planned_evaluations": target,  # without wipeouts (a wipeout generation is smaller)
        "generations": spec.generations,
        "trials": len(study.trials),
        "seconds": round(seconds, 1),
    }
    result.update(report.best_summary(study))
    if spec.final:
        result["final"] = _run_final(args, study, spec, objective)
    result["report"] = report.write_report(
        study, out_dir=spec.report_dir, artifact_store=_artifact_store(artifact_dir)
    )
    return result


def _prepare(objective: Any) -> None:
    """Load the data and build the model now: bad input fails before the study is touched."""
    from optuna_biotune.engine.data import fold_indices

    _ = objective.param_names  # loads the dataset, builds the model and its blocks
    for split in (objective.splits.train, objective.splits.val):
        fold_indices(split.y, data_fraction=objective.data_fraction, fold=0)


def _storable(spec: StudySpec) -> dict[str, Any]:
    data = spec.to_toml_dict()
    data.get("study", {}).pop("storage", None)
    data.get("study", {}).pop("artifacts", None)
    data.get("report", {}).pop("out", None)
    return data


def _existing_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


#: Namespace of BioTuneSampler's system attrs (``BioTuneSampler:slot``, records).
_SAMPLER_NS = "BioTuneSampler"


def generation_progress(
    study: optuna.Study, *, generations: int, population: int, attempts: int = 3
) -> tuple[bool, int, int]:
    """Where the search stands: (generations ``0..generations`` complete, newest, slots left).

    A generation is complete when each of its slots has a COMPLETE trial or has used up its
    ``attempts`` (the sampler's ``slot_attempts``). Generations differ in size (a wipeout
    re-initialises all but the best), so this reads the sampler's generation records instead of
    counting trials (:func:`optuna_biotune.runtime.loop.slot_progress`, which also lists the slots
    still running elsewhere and those left behind). Scans the study once.

    Returns:
        ``(done, newest, left)``: whether every planned generation is complete, the newest
        opened generation (-1 before any), and the unfinished slots of the newest one
        (``population`` before any generation opened).
    """
    from optuna_biotune.runtime.loop import slot_progress

    p = slot_progress(study, namespace=_SAMPLER_NS, last=generations, attempts=attempts)
    return p.done, p.newest, (p.left if p.newest >= 0 else population)


def run_search(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    generations: int,
    population: int,
    elites: int,
    n_jobs: int,
    generation: Callable[[optuna.trial.FrozenTrial], int],
) -> None:
    """Optimise until generations ``0..generations`` are complete, counting earlier runs.

    :func:`optuna_biotune.runtime.loop.run_generations` with a progress bar (its total assumes no
    wipeout and is corrected as generations open): rounds of the worker loop (storage outages
    retried, open trials failed on Ctrl-C), then the slots left behind by dead workers, then a
    bounded wait for other workers' running trials.
    """
    from optuna_biotune.runtime.loop import progress_bar, run_generations

    done = len(_finished(study))
    bar = progress_bar(desc="BioTune", total=done, initial=done)
    try:
        run_generations(
            study,
            objective,
            last=generations,
            n_jobs=n_jobs,
            bar=bar,
            per_generation=evaluations_per_generation(population, elites),
            generation=generation,
        )
        bar.total = bar.n
        bar.refresh()
    finally:
        bar.close()


# -- final --------------------------------------------------------------------------------


def _run_final(
    args: argparse.Namespace,
    study: optuna.Study,
    spec: StudySpec,
    objective: Any,
    *,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    from optuna_biotune.biotune import final

    seeds = list(seeds or spec.final_seed_list)
    _info(
        args,
        f"final: retraining the top {spec.top_k} configuration(s) and FT on the full training "
        f"set with seed(s) {', '.join(str(s) for s in seeds)}, scoring the test set",
    )
    return final.run_final(
        study,
        objective=objective,
        top_k=spec.top_k,
        seeds=seeds,
        log=lambda line: _info(args, line),
    )


def _open_existing(args: argparse.Namespace) -> tuple[optuna.Study, StudySpec]:
    spec = _spec_for(args)
    storage = open_storage(spec.storage_url, must_exist=True)
    study = load_study(spec.study, storage)
    stored = _stored_spec(study, spec)
    return study, stored.replace(artifacts=args.artifacts)


def cmd_final(args: argparse.Namespace) -> dict[str, Any]:
    """Retrain the study's top-k configurations and FT; test accuracies stored in the study."""
    study, spec = _open_existing(args)
    listed = args.seeds if isinstance(args.seeds, tuple) else None
    count = len(listed) if listed else args.seeds
    spec = spec.replace(top_k=args.top_k, final_seeds=count, device=args.device)
    stored = study.user_attrs.get(OBJECTIVE_SPEC_ATTR)
    if not isinstance(stored, dict):
        raise UsageError(
            f"study {study.study_name!r} has no `{OBJECTIVE_SPEC_ATTR}`; "
            "it was not made by `optuna-biotune search`."
        )
    objective = _make_objective(spec.replace(device=args.device), stored)
    result: dict[str, Any] = {
        "command": "final",
        "study": study.study_name,
        "storage": spec.storage_url,
        "trials": len(study.trials),
    }
    from optuna_biotune.biotune import report

    result.update(report.best_summary(study))
    result["final"] = _run_final(args, study, spec, objective, seeds=listed)
    result["report"] = report.write_report(
        study, out_dir=spec.report_dir, artifact_store=_artifact_store(spec.artifact_dir)
    )
    return result


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """Write the report (tables, Fig. 2 PNG, HTML) and attach it to the study."""
    from optuna_biotune.biotune import report

    study, spec = _open_existing(args)
    out = args.out or spec.report_dir
    result: dict[str, Any] = {
        "command": "report",
        "study": study.study_name,
        "storage": spec.storage_url,
        "trials": len(study.trials),
    }
    result.update(report.best_summary(study))
    kwargs: dict[str, Any] = {}
    if args.top_k is not None:
        kwargs["top_k"] = args.top_k
    result["report"] = report.write_report(
        study, out_dir=out, artifact_store=_artifact_store(spec.artifact_dir), **kwargs
    )
    return result


def cmd_dashboard(args: argparse.Namespace) -> dict[str, Any]:
    """Serve optuna-dashboard on the study's storage and artifact folder until Ctrl-C."""
    import optuna_dashboard

    spec = _spec_for(args)
    storage = open_storage(spec.storage_url, must_exist=True)
    artifacts = args.artifacts
    if artifacts is None:
        study = (
            load_study(spec.study, storage) if args.study else _existing_study(spec.study, storage)
        )
        stored = study.user_attrs.get(ARTIFACTS_ATTR) if study is not None else None
        artifacts = stored or spec.artifact_dir
    url = f"http://{args.host}:{args.port}/dashboard"
    print(f"optuna-dashboard on {spec.storage_url} (artifacts {artifacts}): {url}", flush=True)
    optuna_dashboard.run_server(
        storage, host=args.host, port=args.port, artifact_store=_artifact_store(artifacts)
    )
    return {"command": "dashboard", "storage": spec.storage_url, "url": url}


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "search": cmd_search,
    "final": cmd_final,
    "report": cmd_report,
    "dashboard": cmd_dashboard,
}


def _info(args: argparse.Namespace, line: str) -> None:
    """Progress lines go to stderr, so stdout stays the summary (and the JSON line)."""
    print(line, file=sys.stderr, flush=True)
