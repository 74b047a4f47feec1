"""BioTuneSampler with parallel workers: >= 3 processes on SQLite and PostgreSQL, n_jobs > 1.

Whatever the interleaving: no crash, every trial completes, no (generation, slot) is filled
twice, generation 0 is exactly the initial population, and the search moves on.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from optuna_biotune import BioTuneSampler
from optuna_biotune.evolution.layout import generation_records

optuna.logging.set_verbosity(optuna.logging.WARNING)
NS = "BioTuneSampler"


def objective(trial: optuna.Trial) -> float:
    x = np.array([trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(3)])
    time.sleep(0.01 * (trial.number % 3))  # uneven durations shuffle the interleaving
    return float(np.sum((x - 1.3) ** 2))


def _check(study: optuna.Study, n_trials: int) -> None:
    trials = study.trials
    assert len(trials) == n_trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    claims = [t.system_attrs[f"{NS}:slot"] for t in trials]
    keys = [(c["generation"], c["slot"]) for c in claims]
    assert len(set(keys)) == len(keys), "a slot was evaluated twice"
    per_gen = collections.Counter(g for g, _ in keys)
    assert per_gen[0] == 10 and {c["role"] for c in claims if c["generation"] == 0} == {"initial"}
    assert max(per_gen) >= 2
    records = {r["generation"]: r for r in generation_records(study, NS)}
    for g, s in keys:  # each claim names a slot its generation has
        assert s < len(records[g]["slots"])
    for t in trials:
        assert all(-5.0 <= v <= 5.0 for v in t.params.values())


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [3, 4])
def test_n_jobs_threads_never_fill_a_slot_twice(n_jobs: int, sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, sampler=BioTuneSampler(seed=3))
    study.optimize(objective, n_trials=36, n_jobs=n_jobs)
    _check(study, 36)


def test_n_jobs_in_memory() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=4))
    study.optimize(objective, n_trials=80, n_jobs=4)
    _check(study, 80)
    assert study.best_value < 5.0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("opened_by", ["optuna", "open_storage"])
def test_three_processes_share_one_study(
    storage_url: str, study_name: str, opened_by: str
) -> None:
    # Optuna's own storage: claims written, then read back (a conflict steps back); the CLI's
    # WorkerStorage: each claim and opening in one transaction.
    per_worker = 12
    optuna.create_study(study_name=study_name, storage=storage_url)
    cmd = [sys.executable, __file__, storage_url, study_name, str(per_worker)]
    procs = [subprocess.Popen([*cmd, str(w), opened_by]) for w in range(3)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    _check(study, 3 * per_worker)


def _worker(url: str, study_name: str, n_trials: int, seed: int, opened_by: str) -> None:
    from optuna_biotune.runtime.storage import open_storage

    storage = open_storage(url) if opened_by == "open_storage" else url
    # Each process has its own sampler instance (different seeds: the storage decides).
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=BioTuneSampler(seed=seed)
    )
    study.optimize(objective, n_trials=n_trials)


if __name__ == "__main__":  # a worker process of test_three_processes_share_one_study
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])


def test_a_claim_that_finds_the_generation_full_opens_the_next_without_a_new_read(
    sqlite_url: str,
) -> None:
    """A worker whose read is old finds every slot it saw free held by a trial it never read:
    it opens the next generation from that read, with that trial pending, and reads the
    study's trials no second time (the claim's transaction told it who holds the slots)."""
    from optuna_biotune.runtime.storage import open_storage

    def sampler() -> BioTuneSampler:
        return BioTuneSampler(population_size=4, n_elites=1, seed=5)

    study = optuna.create_study(
        study_name="full", storage=open_storage(sqlite_url), sampler=sampler()
    )
    study.optimize(objective, n_trials=3)  # generation 0 has one slot left
    other = optuna.load_study(
        study_name="full", storage=open_storage(sqlite_url), sampler=sampler()
    )
    protocol = study.sampler.generations.protocol(study)  # the storage's: Atomic
    claim = protocol.claim
    late: list[optuna.Trial] = []

    def claim_after_another(*args, **kwargs):
        if not late:  # between this worker's read and its claim, another takes the last slot
            late.append(other.ask())
            late[0].suggest_float("x0", -5.0, 5.0)
        return claim(*args, **kwargs)

    reads = []
    get_all_trials = study._storage.get_all_trials

    def counted(*args, **kwargs):
        if kwargs.get("states") is None:  # not Optuna's own look for WAITING trials in ask()
            reads.append(1)
        return get_all_trials(*args, **kwargs)

    protocol.claim = claim_after_another  # type: ignore[method-assign]
    study._storage.get_all_trials = counted  # type: ignore[method-assign]
    trial = study.ask()
    trial.suggest_float("x0", -5.0, 5.0)
    study._storage.get_all_trials = get_all_trials  # type: ignore[method-assign]
    protocol.claim = claim  # type: ignore[method-assign]

    (b,) = late
    mine = study._storage.get_trial_system_attrs(trial._trial_id)[f"{NS}:slot"]
    theirs = other._storage.get_trial_system_attrs(b._trial_id)[f"{NS}:slot"]
    assert theirs["generation"] == 0 and mine["generation"] == 1
    records = {r["generation"]: r for r in generation_records(study, NS)}
    assert records[1]["opened_by"] == trial.number
    assert b.number in records[1]["pending"]
    assert len(reads) == 1  # the search space's read; no second one after the failed claim

    # The late trial's result reaches the evolution: the study goes on consistently.
    other.tell(b, objective(optuna.trial.FixedTrial(b.params | {"x1": 0.0, "x2": 0.0})))
    study.tell(trial, 1.0)
    study.optimize(objective, n_trials=12)
    claims = [
        (t.system_attrs[f"{NS}:slot"]["generation"], t.system_attrs[f"{NS}:slot"]["slot"])
        for t in study.trials
        if t.state == TrialState.COMPLETE
    ]
    assert len(set(claims)) == len(claims)


def test_a_claim_below_the_window_of_a_later_generation_is_still_seen() -> None:
    """The race behind the rare double fills on a plain storage URL: a trial whose claim on an
    old generation is not yet confirmed (write-then-read: it may still step back after a
    conflict) must stay inside the window (``record["window"]``, the lowest trial number the
    scans read) of every generation opened meanwhile, or a claim it makes there later is
    invisible to the others' reads, and another trial fills the same slot."""
    from optuna_biotune.evolution.ledger import SlotView

    study = optuna.create_study(sampler=BioTuneSampler(population_size=4, n_elites=1, seed=6))
    gens = study.sampler.generations
    late = study.ask()  # trial 0: it claims slot 3 of generation 0, then is held up
    gens.use_study_seed(study)
    study.optimize(objective, n_trials=1)  # generation 0 opens (trial 1 fills slot 0)
    claim = {"generation": 0, "slot": 3, "role": "initial", "parents": []}
    study._storage.set_trial_system_attr(late._trial_id, f"{NS}:slot", claim)
    study.optimize(objective, n_trials=24)  # generations 1..4 open while it is held up
    head = gens.head(study)
    assert int(head["generation"]) >= 4
    record = gens.record_of(study, head)
    trials = study.get_trials(deepcopy=False)
    view: SlotView = gens.scan(trials, record, late.number)
    slot = gens._free_slots(record, view)[0]
    # It steps back from generation 0 and claims the newest generation's first free slot.
    study._storage.set_trial_system_attr(
        late._trial_id, f"{NS}:slot", {**claim, "generation": record["generation"], "slot": slot}
    )
    other = study.ask()
    other.suggest_float("x0", -5.0, 5.0)
    theirs = study._storage.get_trial_system_attrs(other._trial_id)[f"{NS}:slot"]
    assert (theirs["generation"], theirs["slot"]) != (record["generation"], slot)
    assert all(int(r["window"]) <= late.number for r in generation_records(study, NS))
