"""BioTuneSampler resumes exactly: new processes on the same SQLite file propose what an
uninterrupted run proposes, also after a worker is killed mid-study (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from optuna_biotune import BioTuneSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
NS = "BioTuneSampler"
DIM = 3


def objective(trial: optuna.Trial, pause: float = 0.0) -> float:
    x = np.array([trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(DIM)])
    if pause:
        time.sleep(pause)
    return float(np.sum((x - 1.3) ** 2))


def _reference(n_complete: int, seed: int, **kwargs: object) -> list[tuple]:
    """An uninterrupted run (in memory): (generation, slot, params) of each completed trial."""
    study = optuna.create_study(sampler=BioTuneSampler(seed=seed, **kwargs))
    study.optimize(objective, n_trials=n_complete)
    return _complete(study)


def _complete(study: optuna.Study) -> list[tuple]:
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        claim = t.system_attrs[f"{NS}:slot"]
        out.append((claim["generation"], claim["slot"], tuple(sorted(t.params.items()))))
    return out


@pytest.mark.slow
def test_resumed_after_every_trial_proposes_what_an_uninterrupted_run_does(
    sqlite_url: str,
) -> None:
    n = 26  # generation 0 (10), generation 1 (13), three trials into generation 2
    for _ in range(n):
        # A new storage object and a new sampler each trial: nothing survives but the file.
        storage = optuna.storages.RDBStorage(sqlite_url)
        study = optuna.create_study(
            study_name="resume",
            storage=storage,
            sampler=BioTuneSampler(seed=21),
            load_if_exists=True,
        )
        study.optimize(objective, n_trials=1)
        storage.engine.dispose()
    resumed = _complete(optuna.load_study(study_name="resume", storage=sqlite_url))
    assert resumed == _reference(n, seed=21)
    assert max(g for g, _, _ in resumed) == 2


def _worker(url: str, target: int, die_at: int) -> None:
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="killed", storage=storage, sampler=BioTuneSampler(seed=5))

    def maybe_die(trial: optuna.Trial) -> float:
        value = objective(trial, pause=0.02)
        if trial.number == die_at:  # SIGKILL mid-trial: no clean-up, the trial stays RUNNING
            os.kill(os.getpid(), signal.SIGKILL)
        return value

    stop = optuna.study.MaxTrialsCallback(target, states=(TrialState.COMPLETE,))
    study.optimize(maybe_die, n_trials=10 * target, callbacks=[stop])


@pytest.mark.slow
def test_killed_worker_resumes_exactly_and_its_slot_is_issued_again(sqlite_url: str) -> None:
    target = 26
    optuna.create_study(study_name="killed", storage=sqlite_url)
    cmd = [sys.executable, __file__, sqlite_url, str(target)]
    died = subprocess.run([*cmd, "14"], timeout=300)
    assert died.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="killed", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 14 + [TrialState.RUNNING]
    time.sleep(2.5)  # the heartbeat's grace period: the dead worker's trial is now stale
    subprocess.run([*cmd, "-1"], check=True, timeout=300)

    study = optuna.load_study(study_name="killed", storage=sqlite_url)
    assert _complete(study) == _reference(target, seed=5)
    # The trial left running by the kill was failed by the heartbeat and its slot reissued
    # with the same genes.
    (dead,) = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert dead.number == 14
    redo = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.system_attrs[f"{NS}:slot"] == dead.system_attrs[f"{NS}:slot"]
    ]
    assert len(redo) == 1 and redo[0].params == dead.params and redo[0].number == 15
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


if __name__ == "__main__":  # the worker process of the kill test
    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
