"""BioTuneSampler: conformance suites, validation, the paper's generation scheme, reissue."""

from __future__ import annotations

import collections
import itertools
import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import optuna
import pytest
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)
from optuna.trial import TrialState

from optuna_biotune import BioTuneSampler
from optuna_biotune.errors import UsageError
from optuna_biotune.evolution import trial_generation
from optuna_biotune.evolution.generations import Generations
from optuna_biotune.evolution.layout import generation_records
from optuna_biotune.evolution.strategy import GenerationStrategy, Opening, SlotPlan

optuna.logging.set_verbosity(optuna.logging.WARNING)
NS = "BioTuneSampler"


class TestBioTuneSamplerConformance(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture
    def sampler(self) -> Callable[[], BioTuneSampler]:
        # These suites call `sample_relative` on bare trials that never get parameters; with
        # every slot taken by such claims a worker waits up to 2 s for them to be confirmed
        # (generations._CONFIRM_WAITS). 20 slots are more than any suite claims: no waiting.
        return lambda: BioTuneSampler(seed=7, population_size=20)


def _sphere(dim: int, shift: float = 1.3) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(dim)])
        return float(np.sum((x - shift) ** 2))

    return objective


def _claims(study: optuna.Study) -> list[dict]:
    return [t.system_attrs.get(f"{NS}:slot") for t in study.trials]


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"population_size": 2}, "population_size"),
        ({"population_size": 1}, "population_size"),
        ({"population_size": 3.0}, "population_size"),
        ({"n_elites": 10}, "n_elites"),
        ({"population_size": 5, "n_elites": 7}, "n_elites"),
        ({"n_elites": -1}, "n_elites"),
        ({"exploit_step": 0.0}, "exploit_step"),
        ({"exploit_step": 1.5}, "exploit_step"),
        ({"threshold_param": ""}, "threshold_param"),
        ({"slot_attempts": 0}, "slot_attempts"),
        ({"seed": -3}, "seed"),
        ({"seed": "1"}, "seed"),
    ],
)
def test_invalid_arguments_are_refused_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(UsageError, match=f"`{name}`"):
        BioTuneSampler(**kwargs)


def test_import_and_construction_stay_light() -> None:
    code = (
        "import sys, optuna_biotune; optuna_biotune.BioTuneSampler(seed=1); "
        "bad = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_paper_budget_is_10_initial_then_13_per_generation() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=3, wipeout=False))
    study.optimize(_sphere(7), n_trials=140)
    by_gen = collections.defaultdict(list)
    for c in _claims(study):
        by_gen[c["generation"]].append(c["role"])
    assert sorted(by_gen) == list(range(11))
    assert by_gen[0] == ["initial"] * 10
    for g in range(1, 11):
        roles = collections.Counter(by_gen[g])
        # 7 child slots: bred from the mating pool, or fresh ("random") once the pool is empty
        assert roles["exploit"] == 6 and roles["child"] + roles["random"] == 7
        assert set(roles) <= {"exploit", "child", "random"}
    assert [trial_generation(t) for t in study.trials] == [c["generation"] for c in _claims(study)]
    slots = [(c["generation"], c["slot"]) for c in _claims(study)]
    assert len(set(slots)) == len(slots)


def test_exploitation_moves_one_trained_gene_by_plus_and_minus_d() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=5, threshold_param="threshold"))

    def objective(trial: optuna.Trial) -> float:
        genes = [trial.suggest_float(f"importance:b{i}", 0.0, 1.0) for i in range(5)]
        t = trial.suggest_float("threshold", 0.0, 1.0)
        return float(np.sum((np.array(genes) - 0.7) ** 2) + (t - 0.3) ** 2)

    study.optimize(objective, n_trials=49)
    trials = study.trials
    exploits = [t for t in trials if t.system_attrs[f"{NS}:slot"]["role"] == "exploit"]
    assert len(exploits) == 18  # 3 generations x 3 elites x 2
    for plus, minus in zip(exploits[::2], exploits[1::2], strict=True):
        parent = plus.system_attrs[f"{NS}:slot"]["parents"][0]
        assert minus.system_attrs[f"{NS}:slot"]["parents"][0] == parent
        elite = trials[parent].params
        # Records keep genes to 10 decimals: unmoved genes agree to ~1e-10.
        moved = [
            k
            for k in elite
            if abs(plus.params[k] - elite[k]) > 1e-9 or abs(minus.params[k] - elite[k]) > 1e-9
        ]
        assert len(moved) <= 1
        if moved:
            (k,) = moved
            assert k != "threshold" and elite[k] > elite["threshold"]  # a trained gene
            d_plus, d_minus = plus.params[k] - elite[k], elite[k] - minus.params[k]
            if 0.0 < plus.params[k] < 1.0 and 0.0 < minus.params[k] < 1.0:
                assert d_plus == pytest.approx(d_minus, abs=1e-9)
            assert abs(d_plus) <= 0.25 + 1e-12


def test_elites_are_replaced_only_by_better_neighbours() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=11, wipeout=False))
    study.optimize(_sphere(5), n_trials=10 + 13 * 4)
    value = {t.number: t.value for t in study.trials}
    records = generation_records(study, NS)
    for before, after in itertools.pairwise(records[1:]):
        old = before["state"]["members"][:3]
        new_numbers = after["state"]["members"]
        for elite, slot_pair in zip(old, range(0, 6, 2), strict=True):
            neighbours = [
                t.number
                for t in study.trials
                if t.system_attrs[f"{NS}:slot"]["generation"] == before["generation"]
                and t.system_attrs[f"{NS}:slot"]["slot"] in (slot_pair, slot_pair + 1)
            ]
            best = min(neighbours, key=value.get)
            if value[best] < value[elite]:
                assert best in new_numbers  # greedy acceptance
            else:
                assert not set(neighbours) & set(new_numbers[:3]) or value[elite] > min(
                    value[n] for n in new_numbers[:3]
                )
        # The population never gets worse at its best (elitism).
        assert min(value[n] for n in after["state"]["members"]) <= min(
            value[n] for n in before["state"]["members"]
        )


def test_minimize_and_maximize_propose_the_same_parameters() -> None:
    lo = optuna.create_study(sampler=BioTuneSampler(seed=2), direction="minimize")
    lo.optimize(_sphere(4), n_trials=60)
    hi = optuna.create_study(sampler=BioTuneSampler(seed=2), direction="maximize")
    hi.optimize(lambda t: -_sphere(4)(t), n_trials=60)
    assert [t.params for t in lo.trials] == [t.params for t in hi.trials]
    assert lo.best_value == pytest.approx(-hi.best_value)


def test_int_log_step_evolve_and_categorical_falls_back() -> None:
    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_int("a", -10, 10)
        b = trial.suggest_float("b", 1e-5, 1.0, log=True)
        c = trial.suggest_float("c", 0.0, 5.0, step=0.5)
        d = trial.suggest_int("d", 1, 64, log=True)
        e = trial.suggest_categorical("e", ["x", "y", "z"])
        return (
            (a - 3) ** 2 + (np.log10(b) + 2) ** 2 + (c - 2.5) ** 2 + (d - 8) ** 2 / 10 + (e != "y")
        )

    study = optuna.create_study(sampler=BioTuneSampler(seed=4))
    study.optimize(objective, n_trials=80)
    space = study.sampler.infer_relative_search_space(study, study.trials[-1])
    assert sorted(space) == ["a", "b", "c", "d"]  # categorical is not evolved
    for t in study.trials:
        assert isinstance(t.params["a"], int) and isinstance(t.params["d"], int)
        assert (t.params["c"] / 0.5) == int(t.params["c"] / 0.5)
        assert t.params["e"] in ("x", "y", "z")
    values = [t.value for t in study.trials]
    assert np.mean(values[-20:]) < 0.5 * np.mean(values[:10])  # it evolved


def test_beats_random_sampling_on_a_shifted_sphere() -> None:
    bio, rnd = [], []
    for seed in range(3):
        s = optuna.create_study(sampler=BioTuneSampler(seed=seed))
        s.optimize(_sphere(7), n_trials=140)
        bio.append(s.best_value)
        r = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        r.optimize(_sphere(7), n_trials=140)
        rnd.append(r.best_value)
    assert max(bio) < min(rnd)


@pytest.mark.parametrize("state", [TrialState.FAIL, TrialState.PRUNED])
def test_failed_or_pruned_slot_is_issued_again_with_the_same_genes(state: TrialState) -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=9))
    study.optimize(_sphere(3), n_trials=15)
    trial = study.ask()
    params = {f"x{i}": trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(3)}
    study.tell(trial, state=state)
    again = study.ask()
    for name, value in params.items():
        assert again.suggest_float(name, -5.0, 5.0) == value
    claims = [study._storage.get_trial_system_attrs(t)[f"{NS}:slot"] for t in (trial._trial_id,)]
    assert study._storage.get_trial_system_attrs(again._trial_id)[f"{NS}:slot"] == claims[0]


def test_slot_is_given_up_after_slot_attempts() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=9, slot_attempts=2))
    study.optimize(_sphere(3), n_trials=12)
    first = None
    for _ in range(2):
        trial = study.ask()
        trial.suggest_float("x0", -5.0, 5.0)
        claim = study._storage.get_trial_system_attrs(trial._trial_id)[f"{NS}:slot"]
        first = first or claim
        assert claim == first
        study.tell(trial, state=TrialState.FAIL)
    trial = study.ask()
    trial.suggest_float("x0", -5.0, 5.0)
    claim = study._storage.get_trial_system_attrs(trial._trial_id)[f"{NS}:slot"]
    assert (claim["generation"], claim["slot"]) != (first["generation"], first["slot"])


@pytest.mark.parametrize("storage", ["memory", "open_storage"])
def test_a_trial_failed_by_an_interruption_spends_no_attempt(storage: str, tmp_path) -> None:
    """A FAIL marked ``biotune:interrupted`` (a signal, a lost storage, a dead worker) issues
    its slot again without counting; with one attempt per slot, one failed evaluation gives
    the slot up. The claim's read (in memory), the storage's one-transaction claim
    (``open_storage``) and the search's progress agree."""
    from optuna_biotune.evolution.claims import INTERRUPTED_ATTR
    from optuna_biotune.runtime.generational import slot_progress
    from optuna_biotune.runtime.storage import open_storage

    url = open_storage(f"sqlite:///{tmp_path / 's.db'}") if storage == "open_storage" else None
    study = optuna.create_study(storage=url, sampler=BioTuneSampler(seed=9, slot_attempts=1))
    study.optimize(_sphere(3), n_trials=12)

    def claim_of(trial: optuna.Trial) -> tuple[int, int]:
        c = study._storage.get_trial_system_attrs(trial._trial_id)[f"{NS}:slot"]
        return c["generation"], c["slot"]

    def left() -> int:  # unfinished slots of the newest generation, used-up ones left out
        return slot_progress(study, namespace=NS, last=99, attempts=1).left

    first, before = None, left()
    for _ in range(3):  # interrupted three times: the slot is issued each time
        trial = study.ask()
        trial.suggest_float("x0", -5.0, 5.0)
        first = first or claim_of(trial)
        assert claim_of(trial) == first
        study._storage.set_trial_system_attr(trial._trial_id, INTERRUPTED_ATTR, "SIGTERM")
        study.tell(trial, state=TrialState.FAIL)
        assert left() == before
    trial = study.ask()
    trial.suggest_float("x0", -5.0, 5.0)
    assert claim_of(trial) == first
    study.tell(trial, state=TrialState.FAIL)  # the evaluation itself failed: its one attempt
    assert left() == before - 1
    trial = study.ask()
    trial.suggest_float("x0", -5.0, 5.0)
    assert claim_of(trial) != first


def test_asking_without_telling_never_gives_a_slot_twice_and_moves_on() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=1))
    study.optimize(_sphere(3), n_trials=10)
    trials = [study.ask() for _ in range(40)]
    for t in trials:
        t.suggest_float("x0", -5.0, 5.0)
    claims = [study._storage.get_trial_system_attrs(t._trial_id)[f"{NS}:slot"] for t in trials]
    keys = [(c["generation"], c["slot"]) for c in claims]
    assert len(set(keys)) == len(keys)
    assert max(c["generation"] for c in claims) >= 3  # did not wait for the running ones
    for t in trials:
        study.tell(t, 1.0)
    # The stragglers are merged later: the study goes on and stays consistent.
    study.optimize(_sphere(3), n_trials=30)
    assert len({(c["generation"], c["slot"]) for c in _claims(study)}) == len(study.trials)


@pytest.mark.slow
def test_records_over_2045_characters_are_chunked_in_the_storage(sqlite_url: str) -> None:
    sampler = BioTuneSampler(seed=0, population_size=4, n_elites=1)
    study = optuna.create_study(storage=sqlite_url, sampler=sampler)
    study.optimize(_sphere(8), n_trials=10)  # 4 initial + 5, generation 2 opens at trial 9
    keys = [k for t in study.trials for k in t.system_attrs if k.startswith(f"{NS}:record:")]
    assert {f"{NS}:record:0", f"{NS}:record:1", f"{NS}:record:2"} <= set(keys)
    assert f"{NS}:record:2:0" in keys  # a chunked (compressed) record
    attrs = [t.system_attrs for t in study.trials]
    assert all(len(json.dumps(v)) <= 2047 for a in attrs for v in a.values())
    records = generation_records(study, NS)
    assert [r["generation"] for r in records] == [0, 1, 2]
    assert len(records[2]["state"]["members"]) == 4
    assert [len(r["slots"]) for r in records] == [4, 5, 5]
    head = study._storage.get_study_system_attrs(study._study_id)[f"{NS}:head"]
    assert head["generation"] == 2


class _SteadyState(GenerationStrategy):
    """A toy steady-state strategy (the EvoPrune shape): 6 initial, then 2 children a step."""

    def open(self, *, generation, names, state, results, rng) -> Opening:
        pop = dict(state["pop"]) if state else {}
        for r in results:
            pop[str(r.number)] = [r.fitness, list(r.x)]
        ranked = sorted(pop.items(), key=lambda kv: kv[1][0])[:6]
        if len(ranked) < 2 or not names:
            return Opening({"pop": dict(ranked)}, [SlotPlan("initial") for _ in range(6)])
        r = rng(-1)
        a, b = ranked[0], ranked[int(r.integers(1, len(ranked)))]
        mid = tuple((np.array(a[1][1]) + np.array(b[1][1])) / 2)
        parents = (int(a[0]), int(b[0]))
        return Opening({"pop": dict(ranked)}, [SlotPlan("child", parents, mid)] * 2)

    def initial_x(self, slot_rng, gene_rng) -> float:
        return float(gene_rng.random() < 0.5)


class _SteadySampler(optuna.samplers.BaseSampler):
    def __init__(self) -> None:
        self.g = Generations(namespace="_SteadySampler", strategy=_SteadyState(), seed=1)

    def infer_relative_search_space(self, study, trial):
        return self.g.search_space(study)

    def sample_relative(self, study, trial, search_space):
        self.g.assign(study, trial)
        return {n: self.g.sample(trial, n, d) for n, d in search_space.items()}

    def sample_independent(self, study, trial, name, dist):
        return self.g.sample(trial, name, dist)


def test_bookkeeping_serves_a_steady_state_strategy_too() -> None:
    study = optuna.create_study(sampler=_SteadySampler())
    study.optimize(lambda t: sum(t.suggest_int(f"b{i}", 0, 1) for i in range(8)), n_trials=20)
    per_gen = collections.Counter(trial_generation(t) for t in study.trials)
    assert per_gen[0] == 6 and all(per_gen[g] == 2 for g in range(1, 8))
    assert all(set(t.params.values()) <= {0, 1} for t in study.trials)


def test_a_straggler_is_pending_and_joins_the_population_when_it_finishes() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=6))
    study.optimize(_sphere(3), n_trials=10)  # generation 0
    slow = study.ask()  # takes slot 0 of generation 1 and keeps running
    for i in range(3):
        slow.suggest_float(f"x{i}", -5.0, 5.0)
    study.optimize(_sphere(3), n_trials=13)  # the 12 other slots, then generation 2 opens
    records = {r["generation"]: r for r in generation_records(study, NS)}
    assert slow.number in records[2]["pending"]
    study.tell(slow, -1.0)  # better than anything the sphere can give
    study.optimize(_sphere(3), n_trials=13)  # generation 3 opens and merges the late result
    records = {r["generation"]: r for r in generation_records(study, NS)}
    assert records[3]["pending"] == []
    assert records[3]["state"]["members"][0] == slow.number


def test_trial_generation_inside_the_objective_even_before_any_suggest() -> None:
    seen = []

    def objective(trial: optuna.Trial) -> float:
        seen.append(trial_generation(trial))  # before the first suggest
        return _sphere(3)(trial)

    study = optuna.create_study(sampler=BioTuneSampler(seed=8))
    study.optimize(objective, n_trials=30)
    assert seen == [c["generation"] for c in _claims(study)]
    assert seen[:10] == [0] * 10 and seen[10:23] == [1] * 13 and seen[23:] == [2] * 7


def test_scan_window_follows_the_newest_generation_even_past_a_dead_trial() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=12))
    study.optimize(_sphere(3), n_trials=12)
    dead = study.ask()  # claims a slot and is never told, like a worker killed without heartbeat
    dead.suggest_float("x0", -5.0, 5.0)
    study.optimize(_sphere(3), n_trials=13 * 6)
    records = generation_records(study, NS)
    late = [r for r in records if r["generation"] >= 6]
    assert late, "the study should have reached generation 6"
    for r in late:
        # Each ask scans only trials from `window` on: the current generation, not the history.
        assert r["opened_by"] - r["window"] <= 8 + 13
        assert dead.number not in r["pending"]  # waited for 3 generations at most
    assert any(dead.number in r["pending"] for r in records)
