"""How one BioTune setting is declared, once: :func:`setting` and the readers of its metadata.

Each field of :class:`optuna_biotune.biotune.spec.StudySpec` is made by :func:`setting`, which
puts in its ``metadata`` (the way a dataclass field declares its help text in peft's
configurations) everything the other shapes of the setting derive from:

- ``help``: the command line's help text;
- ``table``: its TOML table (``study``, ``objective``, ``search``, ``final``, ``report``); its
  TOML key is the field name (``key`` only for ``[study] name``, the field ``study``);
- ``group``: the ``search`` command's option group, named after the class that takes the
  setting as a keyword of the same name: ``objective`` (:class:`~optuna_biotune.BioTuneObjective`),
  ``search`` (:class:`~optuna_biotune.BioTuneSampler`), ``run`` (the worker loop), ``final``;
  ``None``: not a ``search`` option;
- ``flags``: the option's other spellings (today's ``--epochs`` for ``--max-epochs``);
- ``parse``: how the command line reads a value (``bool``: ``--x/--no-x``);
- ``low``, ``choices``: the bound of an integer, the values of a string
  (:func:`~optuna_biotune.biotune.validate.validate` checks them, and that a ``bool`` setting is
  true or false and a ``float_number`` one a finite number);
- ``resumable``: may change between runs of one study (the resume check skips it);
- ``stored``: kept in the study (``biotune:spec``); places (name, storage, folders) are not;
- ``python_only``: a keyword of the Python API only (neither TOML nor command line).

No torch, no optuna: the command line reads this before anything is trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "GROUPS",
    "float_number",
    "non_negative_int",
    "prefixes",
    "setting",
    "settings",
]

#: The ``search`` command's option groups, in order: group -> title.
GROUPS: dict[str, str] = {
    "objective": "objective: BioTuneObjective's keywords "
    "(paper: ResNet-50, 3 seeds, 30 epochs, patience 3)",
    "search": "search: BioTuneSampler's keywords (paper: population 10, 3 elites)",
    "run": "run (paper: 10 generations)",
    "final": "final retraining after the search",
}


def setting(
    default: Any,
    help: str,
    *,
    table: str,
    group: str | None = None,
    flags: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
    low: int | None = None,
    choices: tuple[str, ...] | None = None,
    resumable: bool = False,
    stored: bool = True,
    python_only: bool = False,
    key: str | None = None,
) -> Any:
    """A dataclass field whose metadata declares the setting once (module docstring)."""
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "table": table,
            "group": group,
            "flags": flags,
            "parse": parse,
            "low": low,
            "choices": choices,
            "resumable": resumable,
            "stored": stored,
            "python_only": python_only,
            "key": key,
        },
    )


def settings(cls: Any, **where: Any) -> Iterator[dataclasses.Field[Any]]:
    """The fields of dataclass ``cls`` declared by :func:`setting` whose metadata matches
    ``where`` (e.g. ``group="search"``), in declaration order."""
    for f in dataclasses.fields(cls):
        if "table" in f.metadata and all(f.metadata[k] == v for k, v in where.items()):
            yield f


# -- how the command line reads values ------------------------------------------------------


def _read(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def non_negative_int(text: str) -> int:
    """An integer >= 0 (the spec checks each setting's own lower bound)."""
    value: int = _read(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def float_number(text: str) -> float:
    """A finite number."""
    value: float = _read(text, float, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def prefixes(text: str) -> list[str]:
    """Comma-separated module-name prefixes, one block each."""
    return [x.strip() for x in text.split(",") if x.strip()]
