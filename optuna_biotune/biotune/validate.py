"""The checks of a study spec's values (:class:`~optuna_biotune.biotune.spec.StudySpec`
runs :func:`validate` on construction): one-line :class:`~optuna_biotune.errors.UsageError`s.

The bounds are those of the classes that take the settings (``engine.finetune.MINIMUM``,
``evolution.base.MIN_POPULATION``, ``memetic.check_elites``), imported, not repeated.
"""

from __future__ import annotations

import math
import re
from typing import Any

from optuna_biotune.biotune.memetic import check_elites, check_exploit_step
from optuna_biotune.engine.finetune import MINIMUM, check_base_lr
from optuna_biotune.engine.seeds import MIN_SEEDS, resolve_seeds
from optuna_biotune.errors import UsageError, check_int
from optuna_biotune.evolution.base import MIN_POPULATION

__all__ = ["SPEC_MIN_ELITES", "validate"]

#: Fewest elites of a study spec (and so of the CLI): BioTune's search refines its elites
#: (BioIK, Starke et al. 2019, Sec. IV). ``BioTuneSampler`` itself also runs with none
#: (``memetic.MIN_ELITES``); both check through ``memetic.check_elites``.
SPEC_MIN_ELITES = 1

_INT_FIELDS = {
    "max_epochs": MINIMUM["max_epochs"],
    "patience": MINIMUM["patience"],
    "batch_size": MINIMUM["batch_size"],
    "cache_bytes": MINIMUM["cache_bytes"],
    "population_size": MIN_POPULATION,
    "n_elites": SPEC_MIN_ELITES,
    "generations": 0,
    "n_jobs": 1,
    "top_k": 1,
    "final_seeds": MIN_SEEDS,
}
_CHOICES = {
    "optimizer": ("adam", "sgd"),
    "metric": ("accuracy", "macro"),
}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _is_prefixes(entry: Any) -> bool:
    if isinstance(entry, str):
        return bool(entry)
    return isinstance(entry, list) and bool(entry) and all(isinstance(p, str) and p for p in entry)


def validate(spec: Any) -> None:
    """Refuse a spec value of the wrong type or range (one line, naming the setting)."""
    if isinstance(spec.seeds, int):
        check_int("seeds", spec.seeds, MIN_SEEDS, fix="fix the spec")
    resolve_seeds(spec.seeds)
    for name, low in _INT_FIELDS.items():
        check_int(name, getattr(spec, name), low, fix="fix the spec")
    check_elites(spec.n_elites, spec.population_size, low=SPEC_MIN_ELITES)
    for name in ("data_fraction", "base_lr", "exploit_step"):
        value = getattr(spec, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise UsageError(f"`{name}` must be a number, got {value!r}; fix the spec.")
    if not 0 < spec.data_fraction <= 1:
        raise UsageError(f"`data_fraction` must be in (0, 1], got {spec.data_fraction}.")
    check_base_lr(spec.base_lr)
    check_exploit_step(spec.exploit_step)
    for name, choices in _CHOICES.items():
        if getattr(spec, name) not in choices:
            raise UsageError(
                f"`{name}` must be one of {list(choices)}, got {getattr(spec, name)!r}."
            )
    for name in ("exact_protocol", "wipeout", "after_search", "use_cache", "compile", "prune"):
        if not isinstance(getattr(spec, name), bool):
            raise UsageError(
                f"`{name}` must be true or false, got {getattr(spec, name)!r}; fix the spec."
            )
    if not isinstance(spec.device, str) or not _DEVICE.match(spec.device):
        raise UsageError(f"`device` must be auto, cpu, cuda, cuda:N or mps, got {spec.device!r}.")
    for name in ("study", "dataset", "model"):
        value = getattr(spec, name)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"`{name}` must be a non-empty string, got {value!r}.")
    if "/" in spec.study or "\\" in spec.study:
        raise UsageError(f"`study` must be a plain name without slashes, got {spec.study!r}.")
    if spec.image_size is not None and (
        isinstance(spec.image_size, bool)
        or not isinstance(spec.image_size, int)
        or spec.image_size < 8
    ):
        raise UsageError(
            f"`image_size` must be an integer >= 8 or left out, got {spec.image_size!r}."
        )
    if spec.seed is not None and (isinstance(spec.seed, bool) or not isinstance(spec.seed, int)):
        raise UsageError(f"`seed` must be an integer or left out, got {spec.seed!r}.")
    if spec.partition is not None and not (
        isinstance(spec.partition, list)
        and spec.partition
        and all(_is_prefixes(p) for p in spec.partition)
    ):
        raise UsageError(
            "`partition` must list one block per entry (a module-name prefix or a list of "
            'them, e.g. [["conv1", "bn1"], "layer1"]), or be left out.'
        )
    for name in ("storage", "artifacts", "out"):
        value = getattr(spec, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise UsageError(f"`{name}` must be a non-empty string or left out, got {value!r}.")
