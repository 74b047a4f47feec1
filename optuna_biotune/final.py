"""The paper's final protocol: retrain the best configurations and score the held-out test set.

After the search, the top-k distinct configurations over all generations (paper: top 5) are
retrained on the full training set with each final seed (paper: 3) and scored on the test set;
plain full fine-tuning (FT: every block trained, weight 1) is trained the same way as the
reference. The paper reports the highest of the top-k mean test accuracies; we report that
(``best``) and, beside it, the configuration ranked first by validation fitness (``top1``), which
does not look at the test set to choose.

Each result is stored in the study as soon as it is computed (study user attr
``biotune:final:<key>``, the key made of the configuration and the seeds), so an interrupted or
repeated ``final`` computes nothing twice; the summary goes to ``biotune:final``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from optuna_biotune.errors import UsageError
from optuna_biotune.report import FINAL_ATTR, configuration_key, top_configurations

if TYPE_CHECKING:
    import optuna

#: Prefix of the study user attrs that cache one retrained configuration's test accuracies.
CACHE_PREFIX = "biotune:final:"


class Retrainer(Protocol):
    """What ``final`` needs of an objective (``BioTuneObjective`` provides it)."""

    def retrain_and_test(
        self, mask: Sequence[bool], weights: Sequence[float], *, seeds: Sequence[int]
    ) -> list[float]: ...


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n); 0 for n=1)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("`values` must hold at least one accuracy.")
    if x.size == 1:
        return float(x[0]), 0.0
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def cache_key(mask: Sequence[bool], weights: Sequence[float], seeds: Sequence[int]) -> str:
    """The study user attr that caches this configuration's test accuracies for ``seeds``."""
    text = configuration_key(mask, weights) + "#" + ",".join(str(int(s)) for s in seeds)
    return CACHE_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:16]


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
    seeds: Sequence[int] = (684, 559, 629),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Retrain the study's top-k configurations and FT with ``seeds``; score the test set.

    Args:
        study: A study with completed BioTune trials.
        objective: Provides ``retrain_and_test(mask, weights, *, seeds) -> list[float]``.
        top_k: Distinct configurations to retrain, best validation fitness first.
        seeds: Training seeds; each configuration is retrained once per seed.
        log: Called with one progress line at a time.

    Returns:
        ``configurations`` (per configuration: trial, validation fitness, mask, weights,
        trainable share, test accuracies, mean, standard error), ``ft``, ``best`` (highest mean
        test accuracy, the paper's protocol), ``top1`` (first by validation) and ``summary``.

    Raises:
        UsageError: Bad ``top_k`` or ``seeds``, or a study without completed trials.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UsageError(f"`top_k` must be a positive integer, got {top_k!r}.")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UsageError("`seeds` must name at least one seed, e.g. --seeds 3.")
    log = log or (lambda line: None)
    configs = top_configurations(study, top_k)
    if not configs:
        raise UsageError(
            f"study {study.study_name!r} has no completed trial to retrain; run `search` first."
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
    ft_mean, ft_sem = mean_sem(ft_accs)
    ft = {
        "test": ft_accs,
        "mean": ft_mean,
        "sem": ft_sem,
        "trainable_share": 1.0,
        "seconds": ft_seconds,
    }
    best = max(rows, key=lambda r: (r["mean"], -r["rank"]))
    top1 = rows[0]
    summary = (
        f"BioTune test accuracy {best['mean']:.4f} ± {best['sem']:.4f} "
        f"(trial #{best['trial']}, best of top {len(rows)}; top-1 by validation "
        f"{top1['mean']:.4f}) vs FT {ft_mean:.4f} ± {ft_sem:.4f}; trainable share "
        f"{_share(best['trainable_share'])} vs 100 %; {len(seeds)} seed(s)"
    )
    result = {
        "top_k": top_k,
        "seeds": seeds,
        "configurations": rows,
        "ft": ft,
        "best": {k: best[k] for k in ("trial", "mean", "sem", "trainable_share", "test")},
        "top1": {k: top1[k] for k in ("trial", "mean", "sem", "trainable_share", "test")},
        "biotune_test_accuracy": best["mean"],
        "ft_test_accuracy": ft_mean,
        "reused": reused,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
    }
    study.set_user_attr(FINAL_ATTR, result)
    log(summary)
    return result


def _share(value: Any) -> str:
    return "?" if not isinstance(value, int | float) else f"{100 * float(value):.1f} %"


__all__ = ["CACHE_PREFIX", "Retrainer", "cache_key", "mean_sem", "run_final"]
