"""Many workers, one study: three real processes share a SQLite file or a PostgreSQL database
through the CLI's ``open_storage``; one is killed with SIGKILL in the middle of a trial.

The study must still complete its planned generations; no completed trial may be lost and no
slot evaluated twice; the killed trial must end FAIL (a survivor on this machine sees its
process gone before its next trial; elsewhere Optuna's heartbeat would) and its slot must be
issued again with the same genes.

The objective is cheap (a sleep and a sphere) so the test is about processes and storage. Run
as a script, this file is the worker process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optuna_biotune import BioTuneSampler
from optuna_biotune.evolution import trial_generation
from optuna_biotune.evolution.layout import generation_records
from optuna_biotune.runtime.generational import slot_progress
from optuna_biotune.runtime.storage import open_storage

# Real processes killed and restarted: part of CI, not of the fast loop.
pytestmark = pytest.mark.slow

NS = "BioTuneSampler"
GENES = [f"importance:b{i}" for i in range(6)] + ["threshold"]
POPULATION, ELITES, GENERATIONS = 16, 3, 1
#: Planned evaluations: the population, then 2 x elites + children per generation.
TARGET = POPULATION + GENERATIONS * (2 * ELITES + POPULATION - ELITES)
WORKERS = 3
#: Seconds per trial: slow in generation 0, so the survivors are still filling it when they
#: fail the killed trial (its slot is then free again in the newest generation); fast after.
SLOW, FAST = 1.5, 0.05
HEARTBEAT, GRACE = 1, 3


def _sampler(seed: int) -> BioTuneSampler:
    return BioTuneSampler(
        population_size=POPULATION, n_elites=ELITES, seed=seed, threshold_param="threshold"
    )


def _objective(trial: optuna.Trial, slow: float) -> float:
    x = [trial.suggest_float(name, 0.0, 1.0) for name in GENES]
    trial.set_user_attr("pid", os.getpid())
    time.sleep(slow if trial_generation(trial) == 0 else FAST)
    return sum((v - 0.3) ** 2 for v in x)


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def worker(url: str, study_name: str, folder: Path, index: int, slow: float) -> None:
    """One worker: join the study, wait for the start signal, optimise until the planned
    generations are complete."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat_interval=HEARTBEAT, grace_period=GRACE)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=_sampler(7))
    done = folder / f"done.{index}"

    def log(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            _append(done, str(trial.number))

    _append(folder / f"ready.{index}", str(os.getpid()))
    deadline = time.time() + 300
    while not (folder / "go").exists():
        if time.time() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.02)

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Until the planned generations are complete, not a count of trials: a generation that
        # opens short of members (a straggler or a killed slot) carries extra fresh slots.
        if slot_progress(study, namespace=NS, last=GENERATIONS).done:
            study.stop()

    study.optimize(lambda t: _objective(t, slow), n_trials=10 * TARGET, callbacks=[log, stop])


def _claim(t: optuna.trial.FrozenTrial) -> tuple[int, int] | None:
    c = t.system_attrs.get(f"{NS}:slot")
    if isinstance(c, dict) and int(c["slot"]) >= 0:
        return int(c["generation"]), int(c["slot"])
    return None


def _check_study(reader: optuna.Study, folder: Path) -> list[optuna.trial.FrozenTrial]:
    """Nothing lost, nothing twice, the planned generations complete; the COMPLETE trials."""
    trials = reader.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # No completed trial lost: every trial a worker saw complete is COMPLETE in the storage,
    # and the storage has no completion nobody reported.
    reported = []
    for i in range(WORKERS):
        log = folder / f"done.{i}"
        reported += [int(n) for n in log.read_text().split()] if log.exists() else []
    assert len(reported) == len(set(reported))
    assert sorted(reported) == sorted(t.number for t in complete)
    assert len(complete) >= TARGET
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # No slot evaluated twice.
    claims = [_claim(t) for t in complete]
    assert None not in claims
    assert len(claims) == len(set(claims))
    # The planned generations are complete: every slot of generations 0..GENERATIONS is filled.
    records = generation_records(reader, NS)
    assert len(records) >= GENERATIONS + 1
    for record in records[: GENERATIONS + 1]:
        g = int(record["generation"])
        filled = sorted(s for gen, s in claims if gen == g)
        assert filled == list(range(len(record["slots"]))), f"generation {g}"
    return complete


def _start(url: str, name: str, folder: Path, slow: float) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, __file__, url, name, str(folder), str(i), str(slow)],
            stdout=open(folder / f"out.{i}", "w"),
            stderr=subprocess.STDOUT,
        )
        for i in range(WORKERS)
    ]


def _wait(predicate, timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + timeout
    while not predicate():
        for p in procs:
            if p.poll() not in (None, 0, -signal.SIGKILL):
                pytest.fail(f"a worker exited with {p.returncode} while waiting for {what}")
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _release_when_ready(procs: list[subprocess.Popen], tmp_path: Path) -> None:
    """Wait until every worker has started, then let them all begin at once."""
    _wait(
        lambda: all((tmp_path / f"ready.{i}").exists() for i in range(WORKERS)),
        180,
        "the workers to start",
        procs,
    )
    (tmp_path / "go").touch()


def test_sigkill_of_a_worker_loses_nothing_and_its_slot_is_issued_again(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    optuna.create_study(study_name=study_name, storage=storage_url)
    reader = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    procs = _start(storage_url, study_name, tmp_path, SLOW)
    victim = procs[0]
    try:
        _release_when_ready(procs, tmp_path)

        busy: list[optuna.trial.FrozenTrial] = []

        def victim_busy_after_a_completed_trial() -> bool:
            if not (tmp_path / "done.0").exists():
                return False
            for t in reader.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("pid") == victim.pid and _claim(t) is not None:
                    busy.append(t)
                    return True
            return False

        _wait(victim_busy_after_a_completed_trial, 120, "the victim's second trial", procs)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed = busy[0]
        # Killed mid-trial: RUNNING, or already FAIL if a survivor saw the process gone.
        state = reader._storage.get_trial(killed._trial_id).state
        assert state in (TrialState.RUNNING, TrialState.FAIL)
        for p in procs[1:]:
            assert p.wait(timeout=300) == 0, (tmp_path / f"out.{procs.index(p)}").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    complete = _check_study(reader, tmp_path)
    # The killed trial was failed by a survivor (its own process was gone) ...
    dead = reader._storage.get_trial(killed._trial_id)
    assert dead.state == TrialState.FAIL
    assert dead.datetime_complete is not None
    # ... and its slot was issued again, with the same genes, and completed once.
    again = [t for t in complete if _claim(t) == _claim(killed)]
    assert len(again) == 1
    assert again[0].number > killed.number
    assert again[0].params == killed.params
    assert again[0].user_attrs["pid"] != victim.pid


def test_workers_share_a_journal_file(tmp_path: Path) -> None:
    """The alternative on a shared filesystem: Optuna's journal file (no heartbeat, no kill)."""
    path = str(tmp_path / "study.log")
    optuna.create_study(study_name="journal", storage=open_storage(path))
    procs = _start(path, "journal", tmp_path, FAST)
    try:
        _release_when_ready(procs, tmp_path)
        for i, p in enumerate(procs):
            assert p.wait(timeout=300) == 0, (tmp_path / f"out.{i}").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    reader = optuna.load_study(study_name="journal", storage=open_storage(path))
    complete = _check_study(reader, tmp_path)
    assert {t.user_attrs["pid"] for t in complete} == {p.pid for p in procs}


if __name__ == "__main__":  # a worker process of the tests above
    worker(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))


def test_sqlite_files_are_opened_in_write_ahead_log_mode(tmp_path: Path) -> None:
    """Every connection of the CLI's SQLite storage runs in WAL mode with synchronous=NORMAL,
    and another process's plain Optuna storage reads what it wrote while it is still open."""
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="wal", storage=storage)
    study.optimize(lambda t: t.suggest_int("x", 0, 3), n_trials=3)
    for _ in range(2):  # two pooled connections, both with the pragmas
        with storage.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert (tmp_path / "wal.db-wal").exists()
    reader = subprocess.run(
        [
            sys.executable,
            "-c",
            "import optuna, sys; s = optuna.load_study(study_name='wal', storage=sys.argv[1]); "
            "print(*[t.params['x'] for t in s.trials])",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reader.stdout.split() == [str(t.params["x"]) for t in study.trials], reader.stderr


def test_claims_and_openings_are_atomic_on_the_worker_storage(
    storage_url: str, study_name: str
) -> None:
    """``WorkerStorage.claim_slot`` and ``open_generation``, raced by threads: of claims on the
    same slots each slot goes to one trial (the others write nothing), and of openings of the
    same generation exactly one names the head and leaves its record."""
    import threading

    storage = open_storage(storage_url)
    assert storage.atomic_claims
    study = optuna.create_study(study_name=study_name, storage=storage)
    trials = [study.ask()._trial_id for _ in range(8)]
    sid = study._study_id
    start = threading.Barrier(len(trials))
    opened: dict[int, bool] = {}

    def open_zero(trial_id: int) -> None:
        start.wait()
        opened[trial_id] = storage.open_generation(
            sid, trial_id, head_key="ns:head", generation=0, attrs={"ns:record:0": trial_id}
        )

    threads = [threading.Thread(target=open_zero, args=(t,)) for t in trials]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    (winner,) = [t for t, won in opened.items() if won]
    assert storage.get_study_system_attrs(sid)["ns:head"] == {"generation": 0, "trial": winner}
    holders = [t for t in trials if "ns:record:0" in storage.get_trial_system_attrs(t)]
    assert holders == [winner]
    # Only the generation after the head's opens; the head does not move back or skip.
    assert not storage.open_generation(sid, trials[0], head_key="ns:head", generation=2, attrs={})
    assert storage.open_generation(sid, trials[1], head_key="ns:head", generation=1, attrs={})
    assert not storage.open_generation(sid, trials[2], head_key="ns:head", generation=1, attrs={})
    assert storage.get_study_system_attrs(sid)["ns:head"] == {"generation": 1, "trial": trials[1]}

    claimed: dict[int, int | None] = {}

    def claim(trial_id: int) -> None:
        start.wait()
        claimed[trial_id] = storage.claim_slot(
            sid,
            trial_id,
            "ns:slot",
            min_number=0,
            generation=1,
            claims={slot: {"generation": 1, "slot": slot} for slot in [2, 0, 1]},
        )

    threads = [threading.Thread(target=claim, args=(t,)) for t in trials]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    won = {t: s for t, s in claimed.items() if s is not None}
    assert sorted(won.values()) == [0, 1, 2]
    for t in trials:
        written = storage.get_trial_system_attrs(t).get("ns:slot")
        assert written == (None if t not in won else {"generation": 1, "slot": won[t]})
    # A claim on another generation does not see these; a finished trial's claim still holds.
    assert (
        storage.claim_slot(
            sid,
            trials[0] if trials[0] not in won else next(t for t in trials if t not in won),
            "ns:slot",
            min_number=0,
            generation=2,
            claims={slot: {"generation": 2, "slot": slot} for slot in [2]},
        )
        == 2
    )


def test_a_claim_counts_the_failed_attempts_of_its_slot(sqlite_url: str) -> None:
    """With ``attempts``, ``claim_slot`` refuses a slot whose claims ended FAIL or PRUNED that
    often, whatever the claimer's own (possibly old) read said."""
    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="attempts", storage=storage)
    sid = study._study_id

    def claim(attempts: int) -> tuple[int | None, int]:
        trial_id = study.ask()._trial_id
        return storage.claim_slot(
            sid,
            trial_id,
            "ns:slot",
            min_number=0,
            generation=0,
            claims={slot: {"generation": 0, "slot": slot} for slot in [5]},
            attempts=attempts,
        ), trial_id

    for state in (TrialState.FAIL, TrialState.PRUNED):
        slot, trial_id = claim(3)
        assert slot == 5
        storage.set_trial_state_values(trial_id, state)
    assert claim(2)[0] is None  # used up at two attempts
    assert claim(3)[0] == 5  # a third attempt is left at three


def test_the_worker_storage_marks_the_trials_it_fails_as_interrupted(sqlite_url: str) -> None:
    """``biotune:interrupted`` (no attempt spent) on a trial cut off by a lost storage or failed
    because its worker died; none on a trial whose evaluation failed."""
    import warnings

    from optuna_biotune.evolution.claims import INTERRUPTED_ATTR
    from optuna_biotune.runtime.workers import WORKER_ATTR, WORKER_LOST, worker_identity

    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="marks", storage=storage)
    cut = study.ask()
    assert storage.fail_open_trials("storage outage") == [cut._trial_id]
    assert storage.get_trial(cut._trial_id).system_attrs[INTERRUPTED_ATTR] == "storage outage"

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    orphan = study.ask()  # as if a worker of this machine, now gone, had opened it
    storage.set_trial_system_attr(
        orphan._trial_id, WORKER_ATTR, {**worker_identity(), "pid": int(gone.stdout)}
    )
    storage._closed(orphan._trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = storage.get_trial(orphan._trial_id)
    assert failed.state == TrialState.FAIL
    assert failed.system_attrs[INTERRUPTED_ATTR] == WORKER_LOST

    bad = study.ask()
    study.tell(bad, state=TrialState.FAIL)  # the evaluation failed: an attempt
    assert INTERRUPTED_ATTR not in storage.get_trial(bad._trial_id).system_attrs
