"""SIGTERM (Slurm, Kubernetes, a spot instance) ends a command as Ctrl-C does; real processes.

The worker is the real dispatcher, :func:`optuna_biotune.cli.main`, running a command
registered for these tests: the search's run loop (``run_generations``) on the CLI's storage
with the cheap objective and seeded sampler of ``test_worker_death`` (population 4, generations
0..2). SIGTERM at fixed moments (in generation 0, in the middle of generation 1, during the
last evaluation), on SQLite and PostgreSQL: exit 143 within 5 s with one line, no trial
RUNNING, the stopped trial FAIL and marked as interrupted (it spends none of its slot's
attempts), and the same command run again ends with exactly the evaluations and parameters of
an uninterrupted run. Also with ``--n-jobs 2`` (the watchdog ends a process whose threads are
still evaluating), with three workers, and for ``baseline`` (no study). Run as a script, this
file is the worker.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from test_worker_death import (
    LAST,
    _assert_planned_slots_complete,
    _claim,
    _evaluations,
    _objective,
    _sampler,
    busy_when,
    uninterrupted,
)

from optuna_biotune.evolution.claims import INTERRUPTED_ATTR
from optuna_biotune.runtime.generational import run_generations
from optuna_biotune.runtime.storage import open_storage
from optuna_biotune.runtime.workers import WORKER_ATTR

# Real processes killed and restarted: part of CI, not of the fast loop.
pytestmark = pytest.mark.slow

__all__ = ["add_arguments", "run", "uninterrupted"]

COMMAND = "cheap-search"
STOPPED = (
    "optuna-biotune: interrupted by SIGTERM; the running trial is marked failed and its slot is "
    "issued again; rerun the same command to resume."
)


# ---- the command these tests register with the dispatcher (SUBCOMMANDS' contract) ---------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("pause", type=float, help="seconds per evaluation")
    parser.add_argument("--n-jobs", type=int, default=1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.name,
        storage=open_storage(args.url),
        sampler=_sampler(),
        load_if_exists=True,
    )
    run_generations(study, _objective(args.pause), last=LAST, n_jobs=args.n_jobs)
    return {"command": COMMAND, "study": args.name}


def _cmd(url: str, name: str, pause: float, n_jobs: int = 1) -> list[str]:
    return [sys.executable, __file__, url, name, str(pause), "--n-jobs", str(n_jobs)]


# ---- the tests ----------------------------------------------------------------------------


def _terminate(
    url: str, name: str, *, completed: int, pause: float, n_jobs: int = 1, slack: int = 0
) -> optuna.trial.FrozenTrial:
    """Start a worker, SIGTERM it while it evaluates once ``completed`` trials are COMPLETE (at
    most ``slack`` more), and check how it stopped; the trial it was evaluating."""
    reader = open_storage(url)
    proc = subprocess.Popen(_cmd(url, name, pause, n_jobs), stderr=subprocess.PIPE, text=True)
    try:
        busy = busy_when(
            proc, lambda: optuna.load_study(study_name=name, storage=reader), completed, slack
        )
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert took < 5.0, f"took {took:.1f} s to stop"
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == STOPPED, err
    study = optuna.load_study(study_name=name, storage=reader)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert not [t.number for t in running if t.system_attrs[WORKER_ATTR]["pid"] == proc.pid]
    stopped = study._storage.get_trial(busy._trial_id)
    assert stopped.state == TrialState.FAIL
    assert stopped.system_attrs[INTERRUPTED_ATTR] == "SIGTERM"
    return stopped


def _rerun(url: str, name: str) -> optuna.Study:
    done = subprocess.run(_cmd(url, name, 0.0), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    _assert_planned_slots_complete(study)
    return study


@pytest.mark.parametrize(
    "completed", [1, 6, 13], ids=["generation-0", "mid-generation-1", "last-evaluation"]
)
def test_sigterm_stops_at_once_and_the_rerun_matches_an_uninterrupted_run(
    completed: int, storage_url: str, study_name: str, uninterrupted: dict
) -> None:
    stopped = _terminate(storage_url, study_name, completed=completed, pause=1.0)
    study = _rerun(storage_url, study_name)
    assert _evaluations(study) == uninterrupted
    assert len(study.trials) == len(uninterrupted) + 1
    assert uninterrupted[_claim(stopped)] == stopped.params


def test_sigterm_with_threads_still_evaluating_stops_within_five_seconds(
    sqlite_url: str, uninterrupted: dict
) -> None:
    # Both threads are 30 s into ... an evaluation: Optuna's thread pool would wait for them;
    # the watchdog fails both trials and ends the process.
    _terminate(sqlite_url, "threads", completed=0, pause=30.0, n_jobs=2)
    study = optuna.load_study(study_name="threads", storage=sqlite_url)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert len(failed) == 2
    assert all(t.system_attrs[INTERRUPTED_ATTR] == "SIGTERM" for t in failed)
    study = _rerun(sqlite_url, "threads")
    assert _evaluations(study) == uninterrupted  # nothing had completed: the same search


def test_one_of_three_workers_stopped_by_sigterm_loses_nothing(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    optuna.create_study(study_name=study_name, storage=storage_url)
    logs = [tmp_path / f"err.{i}" for i in range(3)]
    others = [
        subprocess.Popen(_cmd(storage_url, study_name, 0.5), stderr=logs[i].open("w"))
        for i in (1, 2)
    ]
    try:
        stopped = _terminate(storage_url, study_name, completed=3, pause=0.5, slack=6)
        for i, p in enumerate(others, start=1):
            assert p.wait(timeout=300) == 0, logs[i].read_text()
    finally:
        for p in others:
            if p.poll() is None:
                p.kill()
                p.wait()
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    _assert_planned_slots_complete(study)
    evaluations = _evaluations(study)  # no slot twice
    assert _claim(stopped) in evaluations  # its slot was evaluated by another worker


def test_a_signal_inside_optunas_own_write_still_stops_cleanly(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while Optuna writes a finished trial's result: Optuna's cleanup then fails with
    an ``UnboundLocalError`` (its ``finally`` reads a name the write never set); the run loop
    still stops as interrupted and fails the trial it was writing, marked."""
    from optuna_biotune.runtime import interrupts
    from optuna_biotune.runtime.loop import run_until

    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="cut", storage=storage, sampler=_sampler())
    write = type(storage).set_trial_state_values

    def cut_short(self: Any, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state == TrialState.COMPLETE:  # the handler's work: note the signal, raise
            monkeypatch.setattr(interrupts, "_reason", "SIGTERM")
            raise interrupts.Interrupted(signal.SIGTERM)
        return write(self, trial_id, state, values)

    monkeypatch.setattr(type(storage), "set_trial_state_values", cut_short)
    with pytest.raises(interrupts.Interrupted):
        run_until(study, _objective(0.0), target=3)
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.FAIL
    assert trial.system_attrs[INTERRUPTED_ATTR] == "SIGTERM"


def test_sigterm_stops_baseline_with_one_line(tmp_path: Path) -> None:
    """A long-running command without a study: exit 143 within 5 s, one line, no traceback."""
    from tiny_cli import CLI

    cmd = [*CLI, "baseline", "FT", "--seeds", "3", "--epochs", "3", "--image-size", "8"]
    proc = subprocess.Popen(
        [*cmd, "--device", "cpu"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # seed 1 is done: seed 2 trains now
        assert " seed " in first, first
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert took < 5.0
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == STOPPED


if __name__ == "__main__":  # a worker: this file's command through the real dispatcher
    from optuna_biotune import cli

    cli.SUBCOMMANDS[COMMAND] = (Path(__file__).stem, "the search's loop, a cheap objective")
    sys.argv[1:] = [COMMAND, *sys.argv[1:]]
    raise SystemExit(cli.main())  # as the console script calls it
