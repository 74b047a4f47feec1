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


def test_the_progress_bar_shows_the_compute_after_each_finished_trial() -> None:
    from optuna_biotune.runtime.loop import run_with_progress

    class Bar:
        def __init__(self) -> None:
            self.postfixes: list[dict[str, object]] = []

        def update(self, n: int) -> None:
            pass

        def set_postfix(self, **kwargs: object) -> None:
            self.postfixes.append(kwargs)

        def write(self, line: str, file: object = None) -> None:
            pass

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("seconds", 1.5)
        trial.set_user_attr("epochs", [2])
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(direction="maximize")
    compute, bar = Compute(n_seeds=1, max_epochs=3, ft_seconds=0.5), Bar()

    def postfix(trial: optuna.trial.FrozenTrial) -> dict[str, str]:
        compute.add(trial)
        return compute.postfix()

    run_with_progress(
        study, objective, bar=bar, target=2, n_jobs=1, generation=lambda t: 0, postfix=postfix
    )
    assert bar.postfixes[-1]["epochs"] == "4/6"
    assert bar.postfixes[-1]["train"] == "3s" and bar.postfixes[-1]["FT runs"] == "6.0"
    assert bar.postfixes[-1]["trial"] == 1
