"""Compute in view: training time, epochs against the exact protocol's ceiling, FT runs."""

from __future__ import annotations

import optuna
import pytest

from optuna_biotune.biotune.attrs import FT_UNIT_ATTR, OBJECTIVE_SPEC_ATTR
from optuna_biotune.biotune.compute import Compute, record_ft_unit


def _study(evaluations: list[tuple[float, list[int]]], *, failed: int = 0) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(OBJECTIVE_SPEC_ATTR, {"seeds": [684, 559, 629], "max_epochs": 30})
    for seconds, epochs in evaluations:
        trial = study.ask()
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("epochs", epochs)
        study.tell(trial, 0.5)
    for _ in range(failed):
        trial = study.ask()
        trial.set_user_attr("seconds", 2.0)
        trial.set_user_attr("epochs", [1])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return study


def test_compute_counts_training_time_and_epochs_against_the_ceiling() -> None:
    study = _study([(10.0, [5, 6, 7]), (4.0, [3])], failed=1)
    compute = Compute.of_study(study)
    # A failed trial trained too: its time and epochs count; only complete ones are evaluations.
    assert compute.seconds == pytest.approx(16.0)
    assert compute.epochs == 5 + 6 + 7 + 3 + 1
    assert compute.evaluations == 2
    assert compute.ceiling == 2 * 3 * 30
    assert compute.ft_runs is None and "ft_runs" not in compute.as_dict()
    assert "FT runs" not in compute.postfix()
    assert compute.line().startswith("compute: 16s of training, 22 epochs")


def test_ft_runs_appear_once_an_ft_run_was_timed_and_a_trial_counts_once() -> None:
    study = _study([(30.0, [10, 10, 10])])
    record_ft_unit(study, seconds=12.0, source="test")
    assert study.user_attrs[FT_UNIT_ATTR] == {"seconds": 12.0, "source": "test"}
    compute = Compute.of_study(study)
    assert compute.ft_runs == pytest.approx(2.5)
    assert compute.as_dict()["ft_runs"] == 2.5
    assert compute.postfix()["FT runs"] == "2.5"
    assert "2.5 full-data FT runs (12.0 s each)" in compute.line()
    compute.add(study.trials[0])  # already counted
    assert compute.seconds == pytest.approx(30.0)
    running = study.ask()
    compute.add(study._storage.get_trial(running._trial_id))  # not finished: not counted
    assert compute.evaluations == 1
