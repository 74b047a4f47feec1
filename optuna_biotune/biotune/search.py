"""BioTune's search and final retraining as functions a Python user calls directly.

:func:`run_search` creates or resumes the study a :class:`~.spec.StudySpec` describes (a resume
with other settings is refused) and runs the evolutionary search until its generations are
complete, then ``final`` when the spec asks; :func:`run_final` retrains a study's top-k; the
spec stored in a study (:func:`stored_spec`) and the objective it describes
(:func:`make_objective`). The commands of :mod:`optuna_biotune.biotune.cli` are thin layers
over these (they parse options into a spec and print the result)::

    from optuna_biotune.biotune.search import run_search
    from optuna_biotune.biotune.spec import default_spec

    result = run_search(default_spec().replace(study="mine", generations=1))
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna_biotune.biotune.attrs import ARTIFACTS_ATTR, OBJECTIVE_SPEC_ATTR
from optuna_biotune.biotune.compute import Compute
from optuna_biotune.biotune.memetic import evaluations_per_generation
from optuna_biotune.biotune.settings import settings
from optuna_biotune.biotune.spec import StudySpec, spec_from_stored
from optuna_biotune.errors import UsageError
from optuna_biotune.runtime.storage import jsonable, open_storage

if TYPE_CHECKING:
    import optuna

__all__ = [
    "artifact_store",
    "existing_study",
    "generation_progress",
    "info",
    "make_objective",
    "run_final",
    "run_search",
    "search_generations",
    "stored_spec",
]


# -- the stored spec ----------------------------------------------------------------------


def stored_spec(study: optuna.Study, fallback: StudySpec) -> StudySpec:
    """The spec ``study`` was searched with (``biotune:spec`` over ``fallback``, whose name,
    storage and folders it keeps), with the study's artifact folder; ``fallback`` when the
    study stores none."""
    data = study.user_attrs.get(OBJECTIVE_SPEC_ATTR)
    if not isinstance(data, dict):
        return fallback
    spec = spec_from_stored(data, fallback, source=f"study {study.study_name!r}")
    return spec.replace(artifacts=study.user_attrs.get(ARTIFACTS_ATTR))


def artifact_store(directory: str) -> optuna.artifacts.FileSystemArtifactStore:
    """A file-system artifact store in ``directory`` (created)."""
    from optuna.artifacts import FileSystemArtifactStore

    Path(directory).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(Path(directory).resolve()))


# -- search -------------------------------------------------------------------------------


def _settings(spec: StudySpec, objective: Any) -> dict[str, Any]:
    """What ``biotune:spec`` holds: ``spec``'s settings, the objective's as it resolved them
    (``image_size`` left out is the one it uses), so a study written by the objective alone
    (:meth:`.objective.BioTuneObjective.spec`) compares alike."""
    return dict(jsonable({**spec.stored(), **objective.spec()}))


def _check_resume(study: optuna.Study, new: dict[str, Any]) -> None:
    """Refuse to continue a study with settings that would change what its trials mean: the
    stored settings, field by field, but the resumable ones (hardware, length, ``final``)."""
    stored = study.user_attrs.get(OBJECTIVE_SPEC_ATTR)
    if not isinstance(stored, dict):
        return
    resumable = {f.name for f in settings(StudySpec, resumable=True)}
    diff = [k for k in new if k in stored and k not in resumable and stored[k] != new[k]]
    if "exact_protocol" in diff:
        _refuse_mixed_protocols(study, bool(stored["exact_protocol"]))
    if diff:
        detail = ", ".join(f"{k}: {stored[k]!r} -> {new[k]!r}" for k in diff)
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


def make_objective(spec: StudySpec) -> Any:
    """The :class:`~optuna_biotune.BioTuneObjective` that ``spec`` describes."""
    from optuna_biotune.biotune.objective import BioTuneObjective

    return BioTuneObjective(**spec.objective_kwargs())


def run_search(
    spec: StudySpec,
    *,
    storage: optuna.storages.BaseStorage | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Create or resume ``spec``'s study and search until its generations are complete; then
    ``final`` when ``spec.after_search``, and the report.

    Args:
        spec: The study and its settings; a stored study with other settings (but the
            resumable ones) is refused.
        storage: The opened ``spec.storage_url`` (opened here when ``None``).
        log: Called with each progress line (default: :func:`info`, standard error).

    Returns:
        The result the ``search`` command prints: evaluations, the best trial, ``final``'s
        result, the compute spent, the report's files.
    """
    import optuna

    from optuna_biotune.biotune.sampler import BioTuneSampler
    from optuna_biotune.evolution import trial_generation

    log = log or info
    storage = storage if storage is not None else open_storage(spec.storage_url)
    existing = existing_study(spec.study, storage)
    objective = make_objective(spec)
    stored = _settings(spec, objective)
    if existing is not None:
        _check_resume(existing, stored)

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

        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["validation accuracy"])
    study.set_user_attr(OBJECTIVE_SPEC_ATTR, stored)
    artifact_dir = str(Path(spec.artifact_dir).resolve())
    study.set_user_attr(ARTIFACTS_ATTR, artifact_dir)

    target = spec.evaluations
    started = time.perf_counter()
    done_before = len(_finished(study))
    log(
        f"study {spec.study!r} in {spec.storage_url}: {done_before}/{target} evaluations done "
        f"(population {spec.population_size}, {spec.n_elites} elites, {spec.generations} "
        f"generations after the first, {len(spec.seed_list)} seed(s), {spec.max_epochs} epochs)",
    )
    search_generations(
        study,
        objective,
        generations=spec.generations,
        population=spec.population_size,
        elites=spec.n_elites,
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
    if spec.after_search:
        result["final"] = run_final(study, spec, objective=objective, log=log)
    result.update(report.best_summary(study))  # after `final`, which may re-score (`final`)
    result["compute"] = Compute.of_study(study).as_dict()  # FT runs once `final` timed one
    result["report"] = report.write_report(
        study, out_dir=spec.report_dir, artifact_store=artifact_store(artifact_dir)
    )
    return result


def _prepare(objective: Any) -> None:
    """Load the data and build the model now: bad input fails before the study is touched."""
    from optuna_biotune.engine.data import fold_indices

    _ = objective.param_names  # loads the dataset, builds the model and its blocks
    for split in (objective.tuner.splits.train, objective.tuner.splits.val):
        fold_indices(split.y, data_fraction=objective.data_fraction, fold=0)


def existing_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    """The study ``name`` in ``storage``, or ``None`` when there is none."""
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
    counting trials (:func:`optuna_biotune.runtime.generational.slot_progress`, which also
    lists the slots still running elsewhere and those left behind). Scans the study once.

    Returns:
        ``(done, newest, left)``: whether every planned generation is complete, the newest
        opened generation (-1 before any), and the unfinished slots of the newest one
        (``population`` before any generation opened).
    """
    from optuna_biotune.runtime.generational import slot_progress

    p = slot_progress(study, namespace=_SAMPLER_NS, last=generations, attempts=attempts)
    return p.done, p.newest, (p.left if p.newest >= 0 else population)


def search_generations(
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

    :func:`optuna_biotune.runtime.generational.run_generations` with a progress bar (its total
    assumes no wipeout and is corrected as generations open): rounds of the worker loop (storage
    outages retried, open trials failed on Ctrl-C), then the slots left behind by dead workers,
    then a bounded wait for other workers' running trials.
    """
    from optuna_biotune.runtime.generational import run_generations
    from optuna_biotune.runtime.loop import progress_bar

    done = len(_finished(study))
    bar = progress_bar(desc="BioTune", total=done, initial=done)
    compute, lock = Compute.of_study(study), threading.Lock()

    def postfix(trial: optuna.trial.FrozenTrial) -> dict[str, str]:
        with lock:  # --n-jobs threads finish trials concurrently
            compute.add(trial)
            return compute.postfix()

    try:
        run_generations(
            study,
            objective,
            last=generations,
            n_jobs=n_jobs,
            bar=bar,
            per_generation=evaluations_per_generation(population, elites),
            generation=generation,
            postfix=postfix,
        )
        bar.total = bar.n
        bar.refresh()
    finally:
        bar.close()


# -- shared with the other commands -------------------------------------------------------


def run_final(
    study: optuna.Study,
    spec: StudySpec,
    *,
    objective: Any = None,
    seeds: Sequence[int] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Retrain ``study``'s top ``spec.top_k`` configurations and FT with ``seeds`` (default:
    ``spec.final_seed_list``) and score the test set
    (:func:`optuna_biotune.biotune.final.run_final`).

    Args:
        objective: The objective to retrain with (default: :func:`make_objective`).
        log: Called with each progress line (default: :func:`info`, standard error).
    """
    from optuna_biotune.biotune import final

    log = log or info
    seeds = list(seeds or spec.final_seed_list)
    log(
        f"final: retraining the top {spec.top_k} configuration(s) and FT on the full training "
        f"set with seed(s) {', '.join(str(s) for s in seeds)}, scoring the test set"
    )
    return final.run_final(
        study,
        objective=objective if objective is not None else make_objective(spec),
        top_k=spec.top_k,
        seeds=seeds,
        log=log,
    )


def info(line: str) -> None:
    """Progress lines go to stderr, so stdout stays the summary (and the JSON line)."""
    print(line, file=sys.stderr, flush=True)
