"""Options more than one command declares, declared once (argparse only, no torch).

The per-run budget of ``evoprune`` and ``baseline`` (``--max-epochs``, also spelt
``--epochs``, ``--patience``, ``--batch-size``) and ``--device`` (those and BioTune's ``final``)
mean the same in every command; a command says only how it parses numbers, what its defaults
are and whether an unset option is left ``None`` (to be filled from a stored study). BioTune's
``search`` declares the same options as fields of its study spec
(:class:`optuna_biotune.biotune.spec.StudySpec`), with the same spellings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["BUDGET_OPTIONS", "add_budget_options", "add_device_option"]

#: The per-run budget options (:mod:`optuna_biotune.engine.budget`): destination ->
#: (spellings, help).
BUDGET_OPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "epochs": (("--max-epochs", "--epochs"), "maximum epochs per training run"),
    "patience": (("--patience",), "early-stopping patience in epochs"),
    "batch_size": (("--batch-size",), "batch size"),
}


def add_budget_options(
    group: Any,
    *,
    type: Callable[[str], int] = int,
    defaults: Mapping[str, int] | None = None,
    unset_is_none: bool = False,
) -> None:
    """Add :data:`BUDGET_OPTIONS` to ``group`` (a parser or an argument group).

    Args:
        type: Parses each value (``int``, or a stricter parser).
        defaults: Default per destination (``epochs``, ``patience``, ``batch_size``), named in
            the help; ``None``: no default named (the study spec's values apply).
        unset_is_none: An unset option stays ``None`` even with ``defaults`` (the command
            fills it from a stored study, else the default); else the default is argparse's.
    """
    for dest, (flags, text) in BUDGET_OPTIONS.items():
        default = None if defaults is None else defaults[dest]
        group.add_argument(
            *flags,
            dest=dest,
            type=type,
            default=None if unset_is_none else default,
            help=text if default is None else f"{text} (default: {default})",
        )


def add_device_option(group: Any, *, default: str | None = None, unset: str | None = None) -> None:
    """Add ``--device`` (``auto``, ``cpu``, ``cuda``: where training runs) to ``group``.

    Args:
        default: Argparse's default, named in the help.
        unset: What an unset option means, for the help (e.g. ``"the study's"``); ``None``
            and no ``default``: nothing is named (the study spec's value applies).
    """
    shown = default or unset
    group.add_argument(
        "--device",
        default=default,
        help="auto, cpu or cuda" + (f" (default: {shown})" if shown else ""),
    )
