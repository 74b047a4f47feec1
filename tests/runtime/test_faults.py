"""Faults with real processes: Ctrl-C in ``optuna-biotune search``, a PostgreSQL server that
restarts or goes away in the middle of a run.

- SIGINT and SIGTERM stop the CLI cleanly (exit 130 / 143 within 5 s, one line, no traceback),
  the running trial is marked FAIL at once (as interrupted: no attempt spent), and the same
  command resumes: its slot is issued again and the study completes.
- A restarted server: the worker retries and finishes; nothing lost, nothing twice.
- A server that stays away: the worker gives up after its patience with one clear line (exit
  1); the study is intact, and a rerun after the server is back completes it at once.
- ``kill -9`` of a lone search and a rerun at once: the same evaluations as without the kill.

The server tests run their own throwaway PostgreSQL cluster (``initdb`` on a free port), so
restarting it disturbs no other test. Run as a script, this file is the storage-fault worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import ctrl_c_reaches_child
from optuna.trial import TrialState
from tiny_cli import CLI, TINY_SEARCH

from optuna_biotune import BioTuneSampler
from optuna_biotune.errors import BioTuneError

# Real processes killed and restarted: part of CI, not of the fast loop.
pytestmark = pytest.mark.slow

NS = "BioTuneSampler"
GENES = [f"importance:b{i}" for i in range(4)] + ["threshold"]


def _claim(t: optuna.trial.FrozenTrial) -> tuple[int, int] | None:
    c = t.system_attrs.get(f"{NS}:slot")
    if isinstance(c, dict) and int(c["slot"]) >= 0:
        return int(c["generation"]), int(c["slot"])
    return None


def _assert_consistent(study: optuna.Study, target: int) -> None:
    """Every planned evaluation done once: no RUNNING trial, no slot completed twice."""
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    claims = [_claim(t) for t in trials if t.state == TrialState.COMPLETE]
    assert len(claims) >= target
    assert None not in claims
    assert len(claims) == len(set(claims))


# ---- Ctrl-C in `optuna-biotune search` (the real CLI and objective, a tiny budget) ----------

SEARCH = ["search", *TINY_SEARCH]


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [
        (signal.SIGINT, 130, "optuna-biotune: interrupted;"),
        (signal.SIGTERM, 143, "optuna-biotune: interrupted by SIGTERM;"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_sigint_stops_search_cleanly_marks_the_trial_and_a_rerun_resumes(
    tmp_path: Path, signum: int, code: int, line: str
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # 8 epochs per evaluation (the last --epochs wins), so SIGINT lands while one trains.
    slower = ["--epochs", "8", "--patience", "8"]
    cmd = [*CLI, *SEARCH, *slower, "--study", "ctrl-c", "--storage", url]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_reaches_child,
    )
    running: optuna.trial.FrozenTrial | None = None
    deadline = time.time() + 400
    try:
        while running is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name="ctrl-c", storage=url)
            except Exception:  # no study yet, or its tables being created this very moment
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if "mask" in t.user_attrs and t.values is None:  # decoded, now training
                    running = t
        if running is None:
            proc.kill()
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"search never reached a running trial (exit {proc.returncode}): {err}")
        sent = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert took < 5.0, f"took {took:.1f} s to stop"
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(line) and "rerun" in last
    study = optuna.load_study(study_name="ctrl-c", storage=url)
    # Marked at once (no heartbeat wait): the interrupted trial is FAIL, none is RUNNING; the
    # mark spends none of its slot's attempts.
    stopped = study._storage.get_trial(running._trial_id)
    assert stopped.state == TrialState.FAIL
    assert stopped.system_attrs["biotune:interrupted"] == signal.Signals(signum).name
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="ctrl-c", storage=url)
    _assert_consistent(study, target=3)
    again = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if _claim(t) == _claim(running)
    ]
    assert len(again) == 1 and again[0].params == running.params


def test_search_killed_and_rerun_at_once_ends_like_an_uninterrupted_search(
    tmp_path: Path,
) -> None:
    """The user's case: `kill -9` a lone `search` in the middle of an evaluation and rerun the
    same command at once (well within the heartbeat's 30 s grace): the rerun fails the killed
    trial at once (its process is gone from this machine), evaluates its slot again and ends
    with exactly the evaluations and parameters of an uninterrupted search."""
    # 3 + (2 + 2) = 7 evaluations; the exact protocol trains every evaluation to its early stop
    # (racing would cut generation 1's evaluations too short to catch one training).
    budget = [*SEARCH, "--generations", "1", "--seed", "4", "--exact-protocol", "--epochs", "6"]

    def run(name: str) -> subprocess.CompletedProcess:
        url = f"sqlite:///{tmp_path / name}.db"
        cmd = [*CLI, *budget, "--study", name, "--storage", url]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)

    def evaluations(name: str) -> dict[tuple[int, int], dict]:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / name}.db")
        assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return {_claim(t): t.params for t in done}

    assert run("whole").returncode == 0
    reference = evaluations("whole")
    assert len(reference) == 7

    url = f"sqlite:///{tmp_path / 'killed'}.db"
    cmd = [*CLI, *budget, "--study", "killed", "--storage", url]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed: optuna.trial.FrozenTrial | None = None
    try:
        deadline = time.time() + 600
        while killed is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
            try:
                trials = optuna.load_study(study_name="killed", storage=url).get_trials()
            except Exception:  # no study yet, or its tables being created this very moment
                continue
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            busy = [t for t in trials if t.state == TrialState.RUNNING and "mask" in t.user_attrs]
            if 3 <= len(done) <= 5 and busy:  # an evaluation of generation 1 is training
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                # What the process held when it died (the read above may be a moment old).
                after = optuna.load_study(study_name="killed", storage=url).get_trials()
                running = [t for t in after if t.state == TrialState.RUNNING]
                killed = running[0] if running else busy[0]
        assert killed is not None, "never caught the search in its fourth evaluation"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    rerun = run("killed")
    assert rerun.returncode == 0, rerun.stderr
    assert evaluations("killed") == reference
    study = optuna.load_study(study_name="killed", storage=url)
    assert study._storage.get_trial(killed._trial_id).state == TrialState.FAIL
    assert len(study.trials) == 8


# ---- a PostgreSQL server that restarts or goes away ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster owned by the ``postgres`` user, on a free port."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.folder, self.bin = folder, bin_dir
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        line = " ".join(f"'{a}'" for a in args)
        subprocess.run(["su", "postgres", "-c", line], check=True, capture_output=True)

    def init(self) -> None:
        self.folder.mkdir(parents=True)
        shutil.chown(self.folder, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.folder / "data"), "-A", "trust")

    def pg_ctl(self, action: str) -> None:
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        args = [str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-w", "-m", "fast"]
        args += ["-l", str(self.folder / "log"), "-o", opts, action]
        self._as_postgres(*args)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    if not bins or os.geteuid() != 0 or shutil.which("su") is None:
        if in_ci:
            pytest.fail("a private PostgreSQL cluster needs root and Debian's postgresql in CI")
        pytest.skip("no PostgreSQL binaries or not root: cannot run a private cluster")
    folder = Path(f"/tmp/biotune-pg-{os.getpid()}-{time.time_ns()}")
    c = Cluster(folder, bins[-1].parent)
    c.init()
    c.pg_ctl("start")
    try:
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            c._as_postgres(
                str(c.bin / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"
            )
        shutil.rmtree(folder, ignore_errors=True)


def storage_worker(url: str, study_name: str, target: int, pause: float) -> int:
    """A worker on the library's run loop (the CLI's), with a cheap objective."""
    from optuna_biotune.runtime.loop import run_until
    from optuna_biotune.runtime.storage import open_storage

    def objective(trial: optuna.Trial) -> float:
        x = [trial.suggest_float(name, 0.0, 1.0) for name in GENES]
        time.sleep(pause)
        return sum((v - 0.4) ** 2 for v in x)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_storage(url, heartbeat_interval=1, grace_period=3)
        sampler = BioTuneSampler(population_size=4, n_elites=1, seed=3)
        study = optuna.create_study(
            study_name=study_name, storage=storage, sampler=sampler, load_if_exists=True
        )
        run_until(study, objective, target=target)
    except BioTuneError as err:
        print(f"optuna-biotune: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


def _worker_cmd(url: str, name: str, target: int, pause: float) -> list[str]:
    return [sys.executable, __file__, url, name, str(target), str(pause)]


def _count(url: str, name: str, state: TrialState) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except Exception:
        return -1
    return len(study.get_trials(deepcopy=False, states=(state,)))


def test_server_restart_mid_run_is_retried_and_loses_nothing(cluster: Cluster) -> None:
    target = 40  # >= 10 s of work left when the server stops, even on an idle machine
    proc = subprocess.Popen(
        _worker_cmd(cluster.url, "restart", target, 0.3),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BIOTUNE_STORAGE_PATIENCE": "120"},
    )
    lines: list[str] = []
    retried = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "storage error" in line and "retrying" in line:
                retried.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.time() + 120
        while _count(cluster.url, "restart", TrialState.COMPLETE) < 5:
            assert proc.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.1)
        cluster.pg_ctl("stop")
        assert proc.poll() is None, "the worker finished before the server stopped"
        # The server stays down until the worker has seen a call fail and said it retries
        # (an event, not a fixed sleep: a loaded machine may take seconds to get there).
        assert retried.wait(timeout=60), "".join(lines)
        cluster.pg_ctl("start")
        proc.wait(timeout=300)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="restart", storage=cluster.url)
    _assert_consistent(study, target)


def test_server_gone_fails_with_one_line_and_a_rerun_completes(cluster: Cluster) -> None:
    target = 16
    cmd = _worker_cmd(cluster.url, "gone", target, 0.3)
    env = {**os.environ, "BIOTUNE_STORAGE_PATIENCE": "4"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while _count(cluster.url, "gone", TrialState.COMPLETE) < 3:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.1)
        cluster.pg_ctl("stop")
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("optuna-biotune: error: the storage has been unreachable")
    assert last.endswith("rerun the same command to resume.")

    cluster.pg_ctl("start")
    study = optuna.load_study(study_name="gone", storage=cluster.url)
    before = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert set(before.values()) <= {TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL}
    # A trial cut off with the server is left RUNNING (nothing could be written); its worker
    # has exited, so the rerun, on the same machine, fails it at once: no heartbeat wait.
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="gone", storage=cluster.url)
    _assert_consistent(study, target)
    after = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    # What was complete before stays complete: nothing lost.
    assert all(
        after[n] == TrialState.COMPLETE for n, s in before.items() if s == TrialState.COMPLETE
    )


if __name__ == "__main__":  # the worker of the storage-fault tests
    raise SystemExit(
        storage_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    )
