"""``run_evoprune``: an EvoPruneDeepTL search in a stored study, resumed where it stopped.

Creates or resumes a study (default storage ``sqlite:///studies/<study>.db``), runs the
steady-state GA until ``evaluations`` trials are complete (counting earlier runs), then scores
the best mask and the unpruned head on the test split (cached in the study, so a repeat does
not retrain). The objective's and the sampler's settings are stored in the study
(``evoprune:spec``, ``evoprune:sampler``): a resumed search takes them from there, and a
conflicting setting is refused rather than mixing two searches in one study. The
``optuna-biotune evoprune`` command is a thin layer over :func:`run_evoprune`.
"""

from __future__ import annotations

import inspect
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from optuna_biotune.errors import UsageError
from optuna_biotune.evoprune.objective import (
    FINAL_ATTR,
    SPEC_ATTR,
    SPEC_KEYS,
    EvoPruneObjective,
    fitness,
)
from optuna_biotune.evoprune.sampler import EvoPruneSampler

__all__ = ["SAMPLER_ATTR", "SAMPLER_KEYS", "run_evoprune"]

#: Study user attr with the sampler's settings (:data:`SAMPLER_KEYS`).
SAMPLER_ATTR = "evoprune:sampler"
#: The sampler settings a study stores.
SAMPLER_KEYS = ("population_size", "crossover", "selection", "mutation", "seed")


def _defaults(cls: type, keys: tuple[str, ...]) -> dict[str, Any]:
    """The defaults of ``cls``'s keywords ``keys``, read from its signature (written once)."""
    params = inspect.signature(cls).parameters
    return {key: params[key].default for key in keys}


def _settings(
    given: Mapping[str, Any] | None,
    stored: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    what: str,
    study: str,
) -> dict[str, Any]:
    """The stored settings (a new study: the defaults), then ``given``; a given value that
    differs from a stored one is a :class:`UsageError`."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UsageError(f"unknown {what} settings {unknown}; use some of {sorted(defaults)}.")
    settings = dict(defaults if stored is None else stored)
    for key, value in given.items():
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


def run_evoprune(
    *,
    objective: Mapping[str, Any] | None = None,
    sampler: Mapping[str, Any] | None = None,
    study: str | None = None,
    storage: str | None = None,
    evaluations: int = 200,
    n_jobs: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    cache_dir: str | None = None,
    final_seeds: int = 3,
    final: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Create or resume the study, search, and score the best mask on the test split.

    Example:
        .. code-block:: python

            from optuna_biotune.evoprune.search import run_evoprune

            result = run_evoprune(objective={"dataset": "digits"}, evaluations=200)
            print(result["final"]["summary"])

    Args:
        objective: :class:`EvoPruneObjective` settings (:data:`~.objective.SPEC_KEYS`); the
            unset ones come from a stored study, else the objective's defaults.
        sampler: :class:`EvoPruneSampler` settings (:data:`SAMPLER_KEYS`), likewise; the
            sampler's ``seed`` defaults to 0 here, so that a search can be repeated.
        study: Study name (default ``evoprune-<dataset>-<layers>``).
        storage: Storage URL (default ``sqlite:///studies/<study>.db``).
        evaluations: Completed trials to reach (earlier runs count).
        n_jobs: Parallel trials in this process.
        threads: Torch CPU threads per evaluation (default: the CPUs / ``n_jobs``).
        device: Where the backbone runs and the heads train.
        cache_dir: Feature cache (default ``~/.cache/optuna-biotune``).
        final_seeds: Training seeds of the test score.
        final: Score the best mask and the unpruned head on the test split.
        log: Called with progress lines (default: none).

    Returns:
        A JSON-able dict: ``command``, ``study``, ``storage``, ``evaluations``, ``trials``,
        ``seconds``, ``best_trial``, ``best_value``, ``active``, ``active_share`` and, with
        ``final``, ``final`` (:meth:`EvoPruneObjective.final` and a ``summary``).
    """
    import optuna

    from optuna_biotune.runtime.storage import open_storage

    if evaluations is None or evaluations < 1:
        raise UsageError(f"`evaluations` must be >= 1, got {evaluations!r}.")
    if n_jobs < 1:
        raise UsageError(f"`n_jobs` must be >= 1, got {n_jobs!r}.")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // n_jobs)
    if threads < 1:
        raise UsageError(f"`threads` must be >= 1, got {threads!r}.")
    if final_seeds < 1:
        raise UsageError(f"`final_seeds` must be >= 1, got {final_seeds!r}.")
    say = log or (lambda line: None)
    objective_defaults = _defaults(EvoPruneObjective, SPEC_KEYS)
    sampler_defaults = {**_defaults(EvoPruneSampler, SAMPLER_KEYS), "seed": 0}
    given = dict(objective or {})
    dataset = given.get("dataset", objective_defaults["dataset"])
    name = study or _default_study(dataset, given.get("layers", objective_defaults["layers"]))
    url = storage or f"sqlite:///studies/{name}.db"
    store = open_storage(url)
    try:
        existing = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        existing = None
    stored_objective = existing.user_attrs.get(SPEC_ATTR) if existing else None
    stored_sampler = existing.user_attrs.get(SAMPLER_ATTR) if existing else None
    objective_settings = _settings(given, stored_objective, objective_defaults, "objective", name)
    sampler_settings = _settings(sampler, stored_sampler, sampler_defaults, "sampler", name)
    pruning = EvoPruneObjective.from_spec(
        objective_settings, device=device, cache_dir=cache_dir, num_threads=threads
    )
    ga = EvoPruneSampler(**sampler_settings)
    say(f"study {name!r}: computing or loading backbone features ...")
    started = time.perf_counter()
    # Before the study is created or touched: bad data (an unreadable image) leaves nothing.
    pruning.features  # noqa: B018 - compute or load the cached features
    run = optuna.create_study(
        study_name=name, storage=store, sampler=ga, direction="maximize", load_if_exists=True
    )
    if stored_objective is None:
        run.set_user_attr(SPEC_ATTR, pruning.spec())
    if stored_sampler is None:
        run.set_user_attr(SAMPLER_ATTR, sampler_settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        run.set_metric_names(["val_accuracy"])

    def finished() -> int:
        return len(run.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    say(
        f"study {name!r} in {url}: {finished()}/{evaluations} evaluations done "
        f"(EvoPruneDeepTL, {pruning.layers} layer(s), population "
        f"{sampler_settings['population_size']})"
    )
    _search(run, pruning, target=evaluations, n_jobs=n_jobs)
    best = pruning.best_trial(run)
    result: dict[str, Any] = {
        "command": "evoprune",
        "study": name,
        "storage": url,
        "evaluations": finished(),
        "trials": len(run.trials),
        "seconds": round(time.perf_counter() - started, 1),
        "best_trial": best.number,
        "best_value": fitness(best),
        "active": best.user_attrs.get("active"),
        "active_share": best.user_attrs.get("active_share"),
    }
    if final:
        result["final"] = _final(run, pruning, seeds=list(range(final_seeds)), log=say)
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


def _final(
    study: Any, objective: EvoPruneObjective, *, seeds: list[int], log: Callable[[str], None]
) -> dict[str, Any]:
    best = objective.best_trial(study)
    cached = study.user_attrs.get(FINAL_ATTR)
    if (
        isinstance(cached, dict)
        and cached.get("best_trial") == best.number
        and cached.get("seeds") == seeds
    ):
        return cached
    log(f"scoring trial {best.number}'s mask and the unpruned head on the test split ...")
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
