"""The paper's final protocol: retrain the best configurations and score the held-out test set.

After the search, the top-k distinct configurations over all generations (paper: top 5),
ranked by their validation fitness at full fidelity (a cut evaluation's partial value never
enters: :func:`~optuna_biotune.biotune.report.top_configurations`; the one-seed values that
could enter the top-k are re-scored first, their missing seeds trained on their fold:
:func:`~optuna_biotune.biotune.report.rescore_candidates`), are retrained on the
full training set with each final seed (paper: 3) and scored on the test set; plain full
fine-tuning (FT: every block trained, weight 1) is trained the same way as the reference.
Spread is the mean and standard error over seeds (:func:`optuna_biotune.engine.seeds.mean_sem`,
as for EvoPrune and the baselines).

The headline (``biotune_test_accuracy``, ``top1``, the first summary line) is the configuration
ranked first by validation fitness: the test set only measures it. The paper reports the highest
of the top-k mean test accuracies, which picks on the test set and so is optimistic; it stays as
a second, labelled figure (``best_of_top_k_test_accuracy``, ``best``, the second line).

The default seeds are 1001, 1002, 1003, ...
(:func:`optuna_biotune.engine.seeds.final_seed_list`), not the search's fitness seeds (the
authors' 684, 559, 629, then 1, 2, ...), so the test scores share no head initialisation or batch
order with the evaluations that chose the configuration; seeds
the search also used are named in the log and in ``seeds_shared_with_search``.

Each result is stored in the study as soon as it is computed (study user attr
``biotune:final:<key>``, the key made of the configuration and the seeds), so an interrupted or
repeated ``final`` computes nothing twice; the summary goes to ``biotune:final``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from optuna_biotune.biotune.attrs import FINAL_CACHE_PREFIX, OBJECTIVE_SPEC_ATTR, RESCORED_PREFIX
from optuna_biotune.biotune.compute import record_ft_unit
from optuna_biotune.biotune.report import (
    FINAL_ATTR,
    configuration_key,
    rescore_candidates,
    rescored,
    top_configurations,
)
from optuna_biotune.engine.seeds import final_seed_list, mean_sem
from optuna_biotune.errors import UsageError

if TYPE_CHECKING:
    import optuna


class Retrainer(Protocol):
    """What ``final`` needs of an objective (``BioTuneObjective`` provides it)."""

    def retrain_and_test(
        self, mask: Sequence[bool], weights: Sequence[float], *, seeds: Sequence[int]
    ) -> list[float]: ...


@runtime_checkable
class Rescorer(Protocol):
    """An objective that can complete an evaluation's missing seeds
    (:meth:`.objective.BioTuneObjective.rescore`)."""

    def rescore(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]: ...


def rescore_missing(
    study: optuna.Study,
    *,
    objective: Retrainer,
    top_k: int,
    log: Callable[[str], None] | None = None,
) -> list[int]:
    """Re-score at full fidelity the one-seed values that could enter the top-k
    (:func:`.report.rescore_candidates`: at most ``top_k``, each better than the ``top_k``-th
    best full value of the search), each stored as soon as it is computed (study user attr
    ``biotune:rescored:<trial>``); return their trial numbers. The default search leaves most
    first seeds unpromoted (:func:`.rungs.Rungs.promote`), so a one-seed value can stand above
    every full one; nothing happens when ``objective`` cannot re-score (no ``rescore``
    method), and nothing is trained twice."""
    log = log or (lambda line: None)
    if not isinstance(objective, Rescorer):
        return []
    done = rescored(study)
    out: list[int] = []
    for trial in rescore_candidates(study, top_k):
        out.append(trial.number)
        if trial.number in done:
            continue
        log(
            f"  re-scoring trial #{trial.number} at full fidelity: its value {trial.value:.4f} "
            f"from {len(trial.user_attrs.get('seed_accuracies', []))} seed(s) could enter the "
            f"top {top_k}"
        )
        record = objective.rescore(trial)
        study.set_user_attr(f"{RESCORED_PREFIX}{trial.number}", record)
        accs = [round(float(a), 4) for a in record["seed_accuracies"]]
        log(f"    {accs} -> {record['value']:.4f} in {record['seconds']:.0f} s")
    return out


def cache_key(mask: Sequence[bool], weights: Sequence[float], seeds: Sequence[int]) -> str:
    """The study user attr that caches this configuration's test accuracies for ``seeds``."""
    text = configuration_key(mask, weights) + "#" + ",".join(str(int(s)) for s in seeds)
    return FINAL_CACHE_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:16]


def _retrain(
    study: optuna.Study,
    objective: Retrainer,
    mask: Sequence[bool],
    weights: Sequence[float],
    seeds: Sequence[int],
    log: Callable[[str], None],
    label: str,
) -> tuple[list[float], float, bool]:
    key = cache_key(mask, weights, seeds)
    cached = study.user_attrs.get(key)
    if isinstance(cached, dict) and isinstance(cached.get("test"), list):
        shown = [round(float(a), 4) for a in cached["test"]]
        log(f"  {label}: stored test accuracies {shown} (not recomputed)")
        return [float(a) for a in cached["test"]], float(cached.get("seconds", 0.0)), True
    started = time.perf_counter()
    accs = objective.retrain_and_test(list(mask), list(weights), seeds=list(seeds))
    seconds = round(time.perf_counter() - started, 2)
    accs = [float(a) for a in accs]
    if len(accs) != len(seeds):
        raise UsageError(
            f"`retrain_and_test` returned {len(accs)} accuracies for {len(seeds)} seeds."
        )
    study.set_user_attr(key, {"test": accs, "seeds": list(seeds), "seconds": seconds})
    log(f"  {label}: test accuracies {[round(a, 4) for a in accs]} in {seconds:.0f} s")
    return accs, seconds, False


def run_final(
    study: optuna.Study,
    *,
    objective: Retrainer,
    top_k: int = 5,
    seeds: Sequence[int] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Retrain the study's top-k configurations and FT with ``seeds``; score the test set.

    Args:
        study: A study with completed BioTune trials.
        objective: Provides ``retrain_and_test(mask, weights, *, seeds) -> list[float]``.
        top_k: Distinct configurations to retrain, best validation fitness first.
        seeds: Training seeds, each configuration retrained once per seed (``None``: 1001,
            1002, 1003, disjoint from the search's; pass ``(684, 559, 629)`` to reuse the
            authors' fitness seeds).
        log: Called with one progress line at a time.

    Returns:
        ``configurations`` (per configuration, first by validation first: trial, validation
        fitness, whether ``final`` re-scored it, mask, weights, trainable share, test
        accuracies, mean, standard error), ``rescored`` (the trials re-scored at full fidelity
        first, :func:`rescore_missing`), ``ft``,
        ``top1`` and ``biotune_test_accuracy`` (the first by validation: the headline),
        ``best`` and ``best_of_top_k_test_accuracy`` (highest mean test accuracy of the top-k,
        the paper's protocol, chosen on the test set), ``seeds``, ``seeds_shared_with_search``
        and a two-line ``summary``.

    Raises:
        UsageError: Bad ``top_k`` or ``seeds``, or a study without completed trials.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UsageError(f"`top_k` must be a positive integer, got {top_k!r}.")
    seeds = list(final_seed_list(3) if seeds is None else seeds)
    if not seeds:
        raise UsageError("`seeds` must name at least one seed, e.g. --seeds 3.")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UsageError(f"`seeds` must be integers, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"`seeds` must be distinct, got {seeds}.")
    log = log or (lambda line: None)
    again = rescore_missing(study, objective=objective, top_k=top_k, log=log)
    configs = top_configurations(study, top_k)
    if not configs:
        raise UsageError(
            f"study {study.study_name!r} has no completed trial at full fidelity to retrain; "
            "run `search` first."
        )
    if len(configs) < top_k:
        log(
            f"  note: {len(configs)} distinct configuration(s) of the study were evaluated at "
            f"full fidelity, fewer than top_k={top_k}; the others' values are partial (cut "
            "short, or one seed of a candidate that could not enter the population's elites) "
            "and are not ranked with them"
        )
    shared = _shared_with_search(study, seeds)
    if shared:
        log(
            f"  note: seed(s) {shared} also trained the search's evaluations, so those test "
            "scores share the head initialisation that helped choose the configuration"
        )
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    reused = 0
    for rank, conf in enumerate(configs, start=1):
        accs, seconds, hit = _retrain(
            study,
            objective,
            conf["mask"],
            conf["lr_weights"],
            seeds,
            log,
            f"[{rank}/{len(configs)}] trial #{conf['trial']}",
        )
        reused += hit
        mean, sem = mean_sem(accs)
        rows.append(
            {
                "rank": rank,
                "trial": conf["trial"],
                "generation": conf["generation"],
                "validation": conf["value"],
                "rescored": bool(conf.get("rescored", False)),
                "blocks": conf["blocks"],
                "mask": conf["mask"],
                "lr_weights": conf["lr_weights"],
                "trainable_share": conf["trainable_share"],
                "test": accs,
                "mean": mean,
                "sem": sem,
                "seconds": seconds,
            }
        )
    blocks = configs[0]["blocks"]
    ft_accs, ft_seconds, hit = _retrain(
        study, objective, [True] * len(blocks), [1.0] * len(blocks), seeds, log, "FT"
    )
    reused += hit
    if ft_seconds > 0:  # the unit of the compute shown while a search runs (`compute`)
        record_ft_unit(study, seconds=ft_seconds / len(seeds), source="final: FT reference")
    ft_mean, ft_sem = mean_sem(ft_accs)
    ft = {
        "test": ft_accs,
        "mean": ft_mean,
        "sem": ft_sem,
        "trainable_share": 1.0,
        "seconds": ft_seconds,
    }
    top1 = rows[0]
    best = max(rows, key=lambda r: (r["mean"], -r["rank"]))
    keys = ("trial", "validation", "mean", "sem", "trainable_share", "test")
    result = {
        "top_k": top_k,
        "seeds": seeds,
        "seeds_shared_with_search": shared,
        "configurations": rows,
        "ft": ft,
        "top1": {k: top1[k] for k in keys},
        "best": {k: best[k] for k in keys},
        "biotune_test_accuracy": top1["mean"],
        "biotune_test_accuracy_stderr": top1["sem"],
        "best_of_top_k_test_accuracy": best["mean"],
        "ft_test_accuracy": ft_mean,
        "ft_test_accuracy_stderr": ft_sem,
        "reused": reused,
        "rescored": again,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary_lines(top1=top1, best=best, ft=ft, top_k=len(rows), seeds=seeds),
    }
    study.set_user_attr(FINAL_ATTR, result)
    log(result["summary"])
    return result


def summary_lines(
    *,
    top1: dict[str, Any],
    best: dict[str, Any],
    ft: dict[str, Any],
    top_k: int,
    seeds: Sequence[int],
) -> str:
    """The headline (first by validation) and, on a second line, the paper's best of top-k."""
    headline = (
        f"BioTune test accuracy {top1['mean']:.4f} ± {top1['sem']:.4f} (trial #{top1['trial']}, "
        f"first by validation) vs FT {ft['mean']:.4f} ± {ft['sem']:.4f}; trainable share "
        f"{_share(top1['trainable_share'])} vs 100 %; mean ± s.e. over seeds "
        f"{', '.join(str(s) for s in seeds)}"
    )
    paper = (
        f"best of the top {top_k} on the test set (the paper's protocol; chosen on the test "
        f"set, so optimistic): {best['mean']:.4f} ± {best['sem']:.4f} (trial #{best['trial']})"
    )
    return headline + "\n" + paper


def _shared_with_search(study: optuna.Study, seeds: Sequence[int]) -> list[int]:
    """The final seeds that the search's fitness evaluations also used (``biotune:spec``)."""
    spec = study.user_attrs.get(OBJECTIVE_SPEC_ATTR)
    searched = spec.get("seeds") if isinstance(spec, dict) else None
    if not isinstance(searched, list):
        return []
    return [s for s in seeds if s in set(searched)]


def _share(value: Any) -> str:
    return "?" if not isinstance(value, int | float) else f"{100 * float(value):.1f} %"


__all__ = ["Retrainer", "cache_key", "run_final", "summary_lines"]
