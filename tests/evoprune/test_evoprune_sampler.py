"""EvoPruneSampler: the steady-state GA on the shared generational bookkeeping, real storages."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from optuna_biotune import EvoPruneSampler
from optuna_biotune.errors import UsageError
from optuna_biotune.evolution import trial_generation
from optuna_biotune.evolution.layout import generation_records
from optuna_biotune.evoprune import operators as ops

optuna.logging.set_verbosity(optuna.logging.WARNING)
NS = "EvoPruneSampler"
N_BITS = 48
TARGET = np.array([(i * 7) % 3 == 0 for i in range(N_BITS)], dtype=np.int8)


def names(n: int = N_BITS) -> list[str]:
    return [f"neuron:0:{i:03d}" for i in range(n)]


def bits_of(trial: optuna.trial.BaseTrial, n: int = N_BITS) -> np.ndarray:
    return np.array([trial.params[k] for k in names(n)], dtype=np.int8)


def matches(trial: optuna.Trial, n: int = N_BITS) -> float:
    """A pruning-like toy fitness: bits that agree with a hidden target mask."""
    bits = np.array([trial.suggest_int(k, 0, 1) for k in names(n)], dtype=np.int8)
    return float((bits == TARGET[:n]).sum())


def matches_small(trial: optuna.Trial) -> float:
    """:func:`matches` on 12 bits (cheap for multi-process storage tests)."""
    return matches(trial, 12)


def run(sampler: optuna.samplers.BaseSampler, n_trials: int, storage=None) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage)
    study.optimize(matches, n_trials=n_trials)
    return study


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 2}, "population_size"),
        ({"population_size": 3.0}, "population_size"),
        ({"crossover": "two_point"}, "crossover"),
        ({"selection": "tournament"}, "selection"),
        ({"mutation": 1.5}, "mutation"),
        ({"fill": (0.8, 0.2)}, "fill"),
        ({"fill": 2}, "fill"),
        ({"slot_attempts": 0}, "slot_attempts"),
        ({"seed": -1}, "seed"),
    ],
)
def test_rejects_bad_arguments(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        EvoPruneSampler(**kwargs)


def test_rejects_non_binary_parameters_with_a_clear_message() -> None:
    study = optuna.create_study(sampler=EvoPruneSampler(seed=0))
    with pytest.raises(UsageError, match="0/1 parameters only"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)


def test_categorical_parameters_are_drawn_beside_the_bits() -> None:
    def objective(trial: optuna.Trial) -> float:
        kind = trial.suggest_categorical("kind", ["a", "b"])
        return matches(trial) + (kind == "a")

    study = optuna.create_study(direction="maximize", sampler=EvoPruneSampler(seed=1))
    study.optimize(objective, n_trials=40)
    assert {t.params["kind"] for t in study.trials} == {"a", "b"}


def test_steady_state_schedule_population_then_two_children_per_step() -> None:
    study = run(EvoPruneSampler(seed=0, population_size=10), n_trials=30)
    claims = [t.system_attrs[f"{NS}:slot"] for t in study.trials]
    assert [c["generation"] for c in claims] == [0] * 10 + [g for g in range(1, 11) for _ in "ab"]
    assert all(c["role"] == "initial" for c in claims[:10])
    assert all(c["role"] == "child" and len(c["parents"]) == 2 for c in claims[10:])
    assert [trial_generation(t) for t in study.trials] == [c["generation"] for c in claims]
    # The two children of a step share their parents.
    for a, b in zip(claims[10::2], claims[11::2], strict=True):
        assert a["parents"] == b["parents"]


def test_initial_chromosomes_keep_a_share_drawn_from_the_fill_interval() -> None:
    def objective(trial: optuna.Trial) -> float:
        return float(sum(trial.suggest_int(k, 0, 1) for k in names(400)))

    study = optuna.create_study(sampler=EvoPruneSampler(seed=3, population_size=30))
    study.optimize(objective, n_trials=30)
    shares = np.array([t.value / 400 for t in study.trials])
    assert shares.min() > 0.3 - 0.08 and shares.max() < 0.7 + 0.08
    assert shares.max() - shares.min() > 0.15  # a share per chromosome, not one for all


@pytest.mark.parametrize("crossover", ["uniform", "one_point"])
def test_children_are_crossovers_of_their_recorded_parents(crossover) -> None:
    study = run(
        EvoPruneSampler(seed=4, population_size=8, crossover=crossover, mutation=0.0),
        n_trials=24,
    )
    by_number = {t.number: t for t in study.trials}
    children = [t for t in study.trials if t.system_attrs[f"{NS}:slot"]["role"] == "child"]
    for first, second in zip(children[::2], children[1::2], strict=True):
        p, q = first.system_attrs[f"{NS}:slot"]["parents"]
        a, b = bits_of(by_number[p]), bits_of(by_number[q])
        c1, c2 = bits_of(first), bits_of(second)
        assert np.array_equal(c1 + c2, a + b)
        if crossover == "one_point":
            from_a = np.flatnonzero(c1 != a)
            # Bits taken from the other parent form one tail (or head) run.
            if from_a.size:
                differ = np.flatnonzero(a != b)
                assert np.array_equal(np.intersect1d(from_a, differ), from_a)


def test_population_keeps_its_size_and_never_loses_its_best() -> None:
    study = run(EvoPruneSampler(seed=5, population_size=10), n_trials=60)
    records = generation_records(study, NS)
    assert len(records) == 26  # generation 0 and 25 steps, the last one opened
    best = []
    for record in records[1:]:
        population = record["state"]["population"]
        assert len(population) == 10
        best.append(min(m["fitness"] for m in population))
    assert all(b2 <= b1 for b1, b2 in itertools.pairwise(best))
    # The population, best first, holds the best results seen so far.
    last = records[-1]["state"]["population"]
    finished = [t for t in study.trials if t.number < records[-1]["opened_by"]]
    top = sorted(-t.value for t in finished)[:10]
    assert sorted(m["fitness"] for m in last) == top


def test_ties_are_broken_toward_fewer_active_neurons() -> None:
    # Every chromosome scores the same: the population drifts toward sparser masks.
    def flat(trial: optuna.Trial) -> float:
        for k in names():
            trial.suggest_int(k, 0, 1)
        return 1.0

    study = optuna.create_study(
        direction="maximize", sampler=EvoPruneSampler(seed=6, population_size=10)
    )
    study.optimize(flat, n_trials=110)
    records = generation_records(study, NS)
    first = np.mean([m["active"] for m in records[1]["state"]["population"]])
    last = np.mean([m["active"] for m in records[-1]["state"]["population"]])
    assert last < first - 4


@pytest.mark.parametrize(
    ("selection", "crossover"), [("roulette", "uniform"), ("nam", "one_point")]
)
def test_beats_random_search_on_a_mask_recovery_problem(selection, crossover) -> None:
    evolved = [
        run(
            EvoPruneSampler(
                seed=s, population_size=20, selection=selection, crossover=crossover, mutation=0.02
            ),
            n_trials=150,
        ).best_value
        for s in range(3)
    ]
    random = [
        run(optuna.samplers.RandomSampler(seed=s), n_trials=200).best_value for s in range(3)
    ]
    assert np.mean(evolved) > np.mean(random) + 3


def test_failed_slot_is_issued_again_with_the_same_bits() -> None:
    failed_once: set[tuple[int, int]] = set()

    def flaky(trial: optuna.Trial) -> float:
        value = matches(trial)
        claim = trial.storage.get_trial_system_attrs(trial._trial_id)[f"{NS}:slot"]
        place = (claim["generation"], claim["slot"])
        if place == (1, 1) and place not in failed_once:
            failed_once.add(place)
            raise RuntimeError("worker lost")
        return value

    study = optuna.create_study(
        direction="maximize", sampler=EvoPruneSampler(seed=7, population_size=6)
    )
    study.optimize(flaky, n_trials=12, catch=(RuntimeError,))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    again = [
        t
        for t in study.trials
        if t.state == TrialState.COMPLETE
        and (t.system_attrs[f"{NS}:slot"]["generation"], t.system_attrs[f"{NS}:slot"]["slot"])
        == (1, 1)
    ]
    assert len(again) == 1
    assert np.array_equal(bits_of(again[0]), bits_of(failed[0]))


_WORKER = textwrap.dedent(
    """
    import sys
    import optuna
    sys.path.insert(0, {tests!r})
    from test_evoprune_sampler import matches_small
    from optuna_biotune import EvoPruneSampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name={name!r}, storage={url!r}, direction="maximize", load_if_exists=True,
        sampler=EvoPruneSampler(seed=11, population_size=6),
    )
    study.optimize(matches_small, n_trials=int(sys.argv[1]))
    """
)


def _worker(tmp_path: Path, url: str, name: str) -> Path:
    script = tmp_path / f"worker-{name}.py"
    script.write_text(_WORKER.format(tests=str(Path(__file__).parent), name=name, url=url))
    return script


def test_resumed_run_in_new_processes_proposes_what_an_uninterrupted_run_does(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'evo.db'}"
    script = _worker(tmp_path, url, "resumed")
    for n in (9, 5, 8):  # stop mid-population, mid-step and after: three processes
        subprocess.run([sys.executable, str(script), str(n)], check=True, timeout=120)
    resumed = optuna.load_study(study_name="resumed", storage=url)
    whole = optuna.create_study(
        direction="maximize", sampler=EvoPruneSampler(seed=11, population_size=6)
    )
    whole.optimize(matches_small, n_trials=22)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]


@pytest.mark.postgres
def test_parallel_workers_never_fill_a_slot_twice(
    tmp_path: Path, storage_url: str, study_name: str
) -> None:
    optuna.create_study(study_name=study_name, storage=storage_url, direction="maximize")
    script = _worker(tmp_path, storage_url, study_name)
    procs = [
        subprocess.Popen([sys.executable, str(script), "10"], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-2000:]
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 30
    places = [
        (t.system_attrs[f"{NS}:slot"]["generation"], t.system_attrs[f"{NS}:slot"]["slot"])
        for t in done
    ]
    assert len(set(places)) == len(places)
    assert max(g for g, _ in places) >= 5  # the steady state went on past the population
    records = generation_records(study, NS)
    assert all(len(r["state"]["population"]) <= 6 for r in records)


def test_children_are_valid_chromosomes_in_the_bookkeeping_state() -> None:
    study = run(EvoPruneSampler(seed=12, population_size=5), n_trials=15)
    for record in generation_records(study, NS)[1:]:
        for m in record["state"]["population"]:
            bits = ops.unpack(m["bits"], n_bits=N_BITS)
            assert int(bits.sum()) == m["active"]
            trial = study.trials[m["number"]]
            assert np.array_equal(bits, bits_of(trial))
            assert m["fitness"] == -trial.value


def test_a_worker_sees_a_generation_rewritten_by_the_same_opener_trial() -> None:
    # With 2 slots per step, a trial that opened a generation may find both slots taken
    # before it claims one, and open the next generation too, rewriting its record. Another
    # worker that cached the first record must not keep using it (it used to reopen that
    # generation forever: a livelock seen with 3 workers on SQLite).
    a = EvoPruneSampler(seed=13, population_size=3)
    study = optuna.create_study(direction="maximize", sampler=a)
    study.optimize(matches_small, n_trials=3)  # generation 0
    running = study.ask()
    running.suggest_int(names(12)[0], 0, 1)  # trial 3 opens step 1 and stays running
    b = EvoPruneSampler(seed=13, population_size=3)
    study_b = optuna.create_study(
        study_name=study.study_name, storage=study._storage, load_if_exists=True, sampler=b
    )
    head = b.generations.head(study_b)
    assert head["generation"] == 1
    record = b.generations.record_of(study_b, head)  # worker b caches step 1's record
    opener = study._storage.get_trial(head["trial"])
    assert opener.number == running.number
    trials = study.get_trials(deepcopy=False)
    view = a.generations.scan(trials, record, opener.number)
    a.generations.open_next(study, opener, trials, record=record, view=view)
    head = b.generations.head(study_b)
    assert head == {"generation": 2, "trial": opener._trial_id}
    assert b.generations.record_of(study_b, head)["generation"] == 2
    study_b.optimize(matches_small, n_trials=2, timeout=60)  # worker b goes on (no livelock)
    claims = [t.system_attrs[f"{NS}:slot"] for t in study_b.trials[-2:]]
    assert [c["generation"] for c in claims] == [2, 2]


def test_a_drawn_seed_is_stored_and_a_new_sampler_without_seed_continues_with_it() -> None:
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(
        study_name="e", storage=storage, direction="maximize", sampler=EvoPruneSampler()
    )
    first.optimize(matches_small, n_trials=34)
    study_id = storage.get_study_id_from_name("e")
    seed = storage.get_study_system_attrs(study_id)[f"{NS}:seed"]
    # A new process would build a new sampler, again without a seed: it adopts the stored one.
    resumed = optuna.load_study(study_name="e", storage=storage, sampler=EvoPruneSampler())
    resumed.optimize(matches_small, n_trials=16)
    reference = optuna.create_study(direction="maximize", sampler=EvoPruneSampler(seed=seed))
    reference.optimize(matches_small, n_trials=50)
    assert [t.params for t in resumed.trials] == [t.params for t in reference.trials]
