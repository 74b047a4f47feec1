"""The checks of a study spec's values (:class:`~optuna_biotune.biotune.spec.StudySpec`
runs :func:`validate` on construction): one-line :class:`~optuna_biotune.errors.UsageError`s.

Each field's declaration (:func:`.settings.setting`) says what is checked: an integer's
``low`` bound (those of the classes that take the settings, ``engine.finetune.MINIMUM``,
``evolution.base.MIN_POPULATION``, imported by the spec, not repeated), a string's
``choices``, a ``bool`` or a finite number; the rules between fields are written here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from optuna_biotune.biotune.memetic import check_elites, check_exploit_step
from optuna_biotune.biotune.settings import float_number, settings
from optuna_biotune.engine.finetune import check_base_lr
from optuna_biotune.engine.seeds import MIN_SEEDS, resolve_seeds
from optuna_biotune.errors import UsageError, check_int

__all__ = ["SPEC_MIN_ELITES", "validate"]

#: Fewest elites of a study spec (and so of the CLI): BioTune's search refines its elites
#: (BioIK, Starke et al. 2019, Sec. IV). ``BioTuneSampler`` itself also runs with none
#: (``memetic.MIN_ELITES``); both check through ``memetic.check_elites``.
SPEC_MIN_ELITES = 1

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
    for f in settings(spec):  # what each field's declaration asks (`settings.setting`)
        name, value, meta = f.name, getattr(spec, f.name), f.metadata
        if meta["low"] is not None:
            check_int(name, value, meta["low"], fix="fix the spec")
        if meta["parse"] is float_number and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise UsageError(f"`{name}` must be a number, got {value!r}; fix the spec.")
    check_elites(spec.n_elites, spec.population_size, low=SPEC_MIN_ELITES)
    if not 0 < spec.data_fraction <= 1:
        raise UsageError(f"`data_fraction` must be in (0, 1], got {spec.data_fraction}.")
    check_base_lr(spec.base_lr)
    check_exploit_step(spec.exploit_step)
    for f in settings(spec):
        name, value, meta = f.name, getattr(spec, f.name), f.metadata
        if meta["choices"] is not None and value not in meta["choices"]:
            raise UsageError(f"`{name}` must be one of {list(meta['choices'])}, got {value!r}.")
        if meta["parse"] is bool and not isinstance(value, bool):
            raise UsageError(f"`{name}` must be true or false, got {value!r}; fix the spec.")
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
