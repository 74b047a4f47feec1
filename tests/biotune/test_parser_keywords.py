"""One name per setting: ``optuna-biotune search``'s options are the Python keywords.

Walks the ``search`` parser: every option of its objective group is a keyword of
``BioTuneObjective`` and every option of its search group a keyword of ``BioTuneSampler``, with
the same name (``--max-epochs`` is ``max_epochs``); the study spec's keys are those names too.
``BioTuneObjective`` passes the fine-tuner's keywords through (``**settings``) to
``FineTuner``, whose signature holds them once: they count as its keywords, and the objective
is built with every one of them to show it takes them.
"""

from __future__ import annotations

import argparse
import inspect

from optuna_biotune import BioTuneObjective, BioTuneSampler, cli
from optuna_biotune.biotune.settings import GROUPS
from optuna_biotune.biotune.spec import SECTIONS, StudySpec
from optuna_biotune.engine.finetune import FineTuner

#: Where a class passes ``**kwargs`` through: the class whose keywords those are.
_PASSED_TO = {BioTuneObjective: FineTuner}


def _search_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["search"]


def _options(group: str) -> dict[str, list[str]]:
    """The ``search`` options of one group (by its title): dest -> option strings."""
    found = [g for g in _search_parser()._action_groups if g.title == GROUPS[group]]
    assert len(found) == 1, f"no option group {GROUPS[group]!r}"
    return {a.dest: list(a.option_strings) for a in found[0]._group_actions}


def _keywords(cls: type) -> set[str]:
    params = inspect.signature(cls).parameters.values()
    names = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        assert cls in _PASSED_TO, f"{cls.__name__} takes **kwargs"
        names |= _keywords(_PASSED_TO[cls])
    return names


def _check(group: str, cls: type) -> None:
    options = _options(group)
    assert options, group
    keywords = _keywords(cls)
    for dest, flags in options.items():
        assert dest in keywords, f"--{dest.replace('_', '-')} is no keyword of {cls.__name__}"
        assert flags[0] == f"--{dest.replace('_', '-')}", flags  # its name, then any alias


def test_every_objective_option_is_a_keyword_of_biotune_objective() -> None:
    _check("objective", BioTuneObjective)


def test_every_search_option_is_a_keyword_of_biotune_sampler() -> None:
    _check("search", BioTuneSampler)


def test_the_spec_builds_the_objective_and_the_sampler_by_those_names() -> None:
    spec = StudySpec()
    assert set(spec.objective_kwargs()) <= _keywords(BioTuneObjective)
    assert set(_options("objective")) <= set(spec.objective_kwargs())
    assert set(spec.sampler_kwargs()) == set(_options("search"))
    objective = BioTuneObjective(**spec.objective_kwargs())  # takes every one (no data read)
    assert objective.max_epochs == spec.max_epochs
    sampler = BioTuneSampler(**spec.sampler_kwargs())
    assert sampler.n_elites == spec.n_elites
    for (_, key), field in SECTIONS.items():  # TOML keys are the field names ([study] name)
        assert key == field or (key, field) == ("name", "study")


def test_old_spellings_stay_as_aliases() -> None:
    parser = cli.build_parser()
    old = ["search", "--epochs", "2", "--population", "4", "--elites", "1", "--final"]
    new = ["search", "--max-epochs", "2", "--population-size", "4", "--n-elites", "1"]
    a, b = parser.parse_args(old), parser.parse_args([*new, "--after-search"])
    for name in ("max_epochs", "population_size", "n_elites", "after_search"):
        assert getattr(a, name) == getattr(b, name) is not None
