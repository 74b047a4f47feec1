"""BioTuneSampler follows BioIK's evolution loop (Starke et al. 2019, Sec. IV) and the authors'
rules: the mating pool of each generation, invalid individuals never proposed, the threshold
recognised without being told, a drawn seed kept in the study."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from optuna_biotune import BioTuneSampler
from optuna_biotune.biotune import planning
from optuna_biotune.biotune.memetic import ROLE_CHILD, ROLE_RANDOM, MemeticStrategy
from optuna_biotune.evolution.layout import generation_records
from optuna_biotune.evolution.strategy import Individual, SlotPlan

optuna.logging.set_verbosity(optuna.logging.WARNING)
NS = "BioTuneSampler"
NAMES = [f"importance:b{i}" for i in range(6)] + ["threshold"]


def _strategy() -> MemeticStrategy:
    return MemeticStrategy(
        population_size=10,
        n_elites=3,
        exploit_step=0.25,
        threshold_param="threshold",
        wipeout=True,
    )


def _state(rng: np.random.Generator, n: int = 10) -> dict:
    """A population state as `open` writes it: trial numbers 100.., best first."""
    table = {}
    for i in range(n):
        x = rng.random(len(NAMES))
        x[-1] = 0.2  # threshold low: every member trains some block
        table[str(100 + i)] = [0.1 * (i + 1), [float(v) for v in x]]
    return {"ind": table, "members": [100 + i for i in range(n)], "wiped": False}


def _child(number: int, parents: tuple[int, int, int], fitness: float) -> Individual:
    return Individual(
        number=number,
        x=np.full(len(NAMES), 0.5),
        fitness=fitness,
        generation=1,
        slot=6,
        role=ROLE_CHILD,
        parents=parents,
    )


def _plan(state: dict, siblings: list[Individual], seed: int) -> SlotPlan:
    return _strategy().plan_slot(
        generation=1,
        slot=7,
        names=NAMES,
        state=state,
        plan=SlotPlan(role=ROLE_CHILD, deferred=True),
        siblings=siblings,
        rng=np.random.default_rng(seed),
    )


def test_children_are_deferred_and_bred_from_the_whole_current_population() -> None:
    state = _state(np.random.default_rng(0))
    opening = _strategy().open(
        generation=1,
        names=NAMES,
        state=state,
        results=[],
        rng=lambda s: np.random.default_rng(s),
    )
    roles = [s.role for s in opening.slots]
    assert roles == ["exploit"] * 6 + ["child"] * 7
    assert all(s.deferred and s.x is None for s in opening.slots[6:])
    # The state carries the population only: no mating pool outlives a generation.
    assert set(opening.state) == {"ind", "members", "wiped"}
    drawn = set()
    for seed in range(300):
        plan = _plan(state, [], seed)
        assert plan.role == ROLE_CHILD and not plan.deferred and len(plan.x) == len(NAMES)
        drawn.update(plan.parents)
    # Every member, elites included, can be drawn (rank-weighted: the worst rarely).
    assert drawn == set(state["members"])


def test_a_parent_beaten_by_its_child_leaves_the_pool_and_one_not_beaten_stays() -> None:
    state = _state(np.random.default_rng(1))
    # Child 200 (f 0.15) beat parent 101 (f 0.2) but not parent 100 (f 0.1): 101 leaves.
    siblings = [_child(200, (100, 101, 105), fitness=0.15)]
    drawn = set()
    for seed in range(300):
        plan = _plan(state, siblings, seed)
        drawn.update(plan.parents)
    assert 101 not in drawn
    assert drawn == set(state["members"]) - {101}


def test_siblings_that_are_not_children_do_not_empty_the_pool() -> None:
    state = _state(np.random.default_rng(2))
    exploit = Individual(
        number=201,
        x=np.full(len(NAMES), 0.5),
        fitness=0.0,
        generation=1,
        slot=0,
        role="exploit",
        parents=(100,),
    )
    plan = _plan(state, [exploit], 3)
    assert plan.role == ROLE_CHILD


def test_when_the_pool_is_empty_the_child_is_a_fresh_valid_random_individual() -> None:
    state = _state(np.random.default_rng(3))
    members = state["members"]
    siblings = [
        _child(300 + k, (members[2 * k], members[2 * k + 1], members[0]), fitness=0.0)
        for k in range(5)
    ]
    plans = [_plan(state, siblings, seed) for seed in range(50)]
    assert all(p.role == ROLE_RANDOM and p.parents == () for p in plans)
    xs = np.asarray([p.x for p in plans])
    assert np.all(np.max(xs[:, :-1], axis=1) > xs[:, -1])  # valid: some block trains
    assert xs.std() > 0.2  # fresh U[0, 1] draws, not copies
    # One parent left: the child is bred from it alone (BioIK: only an empty pool is random).
    plan = _plan(state, [*siblings[:4], _child(309, (members[8], members[8], 0), 0.0)], 0)
    assert plan.role == ROLE_CHILD and set(plan.parents[:2]) == {members[9]}


def test_a_short_population_breeds_and_refills_its_missing_members_as_extra_slots() -> None:
    """Slots lost to dead workers (issue 23): the generation still breeds from the members in
    hand and adds the missing fresh individuals after its regular slots, never a generation
    of fresh individuals only; a full population gets no extra slot, a wipeout stays one."""
    rng = np.random.default_rng(3)
    gen0 = [  # 8 of generation 0's 10 slots complete; the threshold at 0 (valid)
        Individual(
            number=n,
            x=np.append(rng.random(len(NAMES) - 1), 0.0),
            fitness=0.1 * n,
            generation=0,
            slot=n,
            role="initial",
        )
        for n in range(8)
    ]
    cases = [(None, gen0, 8), (_state(rng, n=7), [], 7), (_state(rng), [], 10)]
    for state, results, members in cases:
        opening = _strategy().open(
            generation=1, names=NAMES, state=state, results=results, rng=np.random.default_rng
        )
        roles = [s.role for s in opening.slots]
        assert roles == ["exploit"] * 6 + ["child"] * 7 + ["initial"] * (10 - members)
        assert len(opening.state["members"]) == members
        fresh = [np.asarray(s.x) for s in opening.slots[13:]]
        assert all(np.any(x[:-1] > x[-1]) for x in fresh)  # planned, valid individuals
        assert len({tuple(x) for x in fresh}) == len(fresh)  # each from its own slot's stream
    assert planning.compose(
        members=1, population_size=10, n_elites=3, wiped=True, evolvable=True
    ) == planning.Composition(elites=0, children=0, fresh=9)


def test_a_slot_used_up_in_generation_zero_spends_no_generation() -> None:
    def fails_once(trial: optuna.Trial) -> float:
        value = _trains_little(trial)
        if trial.number == 4:
            raise ValueError("the evaluation itself failed")
        return value

    study = optuna.create_study(sampler=BioTuneSampler(seed=2, slot_attempts=1))
    study.optimize(fails_once, n_trials=10 + 14 + 13, catch=(ValueError,))
    roles: dict[int, list[str]] = {}
    for t in study.trials:  # a child slot whose mating pool ran dry draws a random individual
        role = _claim(t)["role"]
        roles.setdefault(_claim(t)["generation"], []).append(
            ROLE_CHILD if role == ROLE_RANDOM else role
        )
    assert roles[1] == ["exploit"] * 6 + ["child"] * 7 + ["initial"]
    assert roles[2] == ["exploit"] * 6 + ["child"] * 7  # a full population again
    records = {r["generation"]: r for r in generation_records(study, NS)}
    assert len(records[1]["state"]["members"]) == 9
    assert len(records[2]["state"]["members"]) == 10


def _claim(t: optuna.trial.FrozenTrial) -> dict:
    return t.system_attrs[f"{NS}:slot"]


def _trains_little(trial: optuna.Trial) -> float:
    """Rewards freezing: the search is pushed towards individuals that train nothing."""
    genes = np.array([trial.suggest_float(n, 0.0, 1.0) for n in NAMES[:-1]])
    t = trial.suggest_float("threshold", 0.0, 1.0)
    trained = genes > t
    assert trained.any(), f"invalid individual proposed: {genes} <= {t}"
    return float(trained.sum() + 0.1 * np.sum(np.abs(genes - t)))


@pytest.mark.parametrize("seed", range(4))
def test_sequential_children_only_draw_parents_still_in_the_pool(seed: int) -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=seed))
    study.optimize(_trains_little, n_trials=140)
    trials = study.trials
    records = {r["generation"]: r for r in generation_records(study, NS)}
    by_gen: dict[int, list] = {}
    for t in trials:
        by_gen.setdefault(_claim(t)["generation"], []).append(t)
    for g, members in by_gen.items():
        if g == 0 or records[g]["state"]["wiped"]:
            continue
        state = records[g]["state"]
        fitness = {int(k): v[0] for k, v in state["ind"].items()}
        pool = list(state["members"])
        for t in sorted(members, key=lambda t: t.number):
            claim = _claim(t)
            if claim["role"] == ROLE_CHILD:
                p1, p2, _ = claim["parents"]
                assert p1 in pool and p2 in pool and claim["parents"][2] in pool
                for p in (p1, p2):
                    if t.value < fitness[p] and p in pool:
                        pool.remove(p)
            elif claim["role"] == ROLE_RANDOM:
                assert pool == [], "a random child while the pool still had parents"
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_no_invalid_individual_in_any_role_and_wipeouts_happen() -> None:
    # A flat objective stagnates at once: wipeouts redraw all but the best every few
    # generations; the freezing pressure of `_trains_little` keeps many near-invalid genes.
    roles: set[str] = set()
    wiped = 0
    for seed in range(3):
        for objective in (_trains_little, lambda t: 0.0 * _trains_little(t)):
            study = optuna.create_study(sampler=BioTuneSampler(seed=seed, wipeout=True))
            study.optimize(objective, n_trials=140)  # the objective asserts validity
            roles.update(_claim(t)["role"] for t in study.trials)
            wiped += sum(
                bool(r["state"] and r["state"]["wiped"]) for r in generation_records(study, NS)
            )
    assert {"initial", "exploit", "child"} <= roles
    assert wiped > 0


def test_generation_zero_draws_the_threshold_below_the_largest_importance() -> None:
    # Three importance genes: a plain U[0, 1] individual is invalid with probability 1/4.
    names = ["importance:a", "importance:b", "importance:c"]
    genes, thresholds = [], []
    for seed in range(40):
        study = optuna.create_study(sampler=BioTuneSampler(seed=seed))
        for _ in range(10):  # generation 0: names unknown when the genes are drawn
            trial = study.ask()
            genes.append([trial.suggest_float(n, 0.0, 1.0) for n in names])
            thresholds.append(trial.suggest_float("threshold", 0.0, 1.0))
            study.tell(trial, 0.0)
    g, t = np.asarray(genes), np.asarray(thresholds)
    assert np.all(g.max(axis=1) > t)  # 400 individuals, none invalid
    assert abs(g.mean() - 0.5) < 0.03  # importance genes stay U[0, 1]
    # The threshold is U[0, 1] conditioned on staying below the largest importance gene:
    # E[t] = E[max^2 / 2 + ...]; under rejection of the whole threshold, t / max is U[0, 1].
    ratio = t / g.max(axis=1)
    assert abs(ratio.mean() - 0.5) < 0.05 and ratio.max() < 1.0


def _sphere_with_threshold(trial: optuna.Trial) -> float:
    genes = np.array([trial.suggest_float(n, 0.0, 1.0) for n in NAMES[:-1]])
    t = trial.suggest_float("threshold", 0.0, 1.0)
    return float(np.sum((genes - 0.7) ** 2) + (t - 0.3) ** 2)


@pytest.mark.parametrize("kwargs", [{}, {"threshold_param": "threshold"}])
def test_exploitation_moves_only_trained_genes_without_being_told(kwargs: dict) -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=11, **kwargs))
    study.optimize(_sphere_with_threshold, n_trials=62)
    trials = study.trials
    exploits = [t for t in trials if _claim(t)["role"] == "exploit"]
    assert len(exploits) == 24
    for t in exploits:
        parent = trials[_claim(t)["parents"][0]].params
        moved = [k for k in parent if abs(t.params[k] - parent[k]) > 1e-9]
        assert len(moved) <= 1
        for k in moved:
            assert k != "threshold" and parent[k] > parent["threshold"]


def test_without_the_rule_exploitation_may_move_the_threshold() -> None:
    study = optuna.create_study(sampler=BioTuneSampler(seed=11, threshold_param=None))
    study.optimize(_sphere_with_threshold, n_trials=140)
    trials = study.trials
    moved_genes = set()
    for t in trials:
        if _claim(t)["role"] == "exploit":
            parent = trials[_claim(t)["parents"][0]].params
            moved_genes.update(k for k in parent if abs(t.params[k] - parent[k]) > 1e-9)
    assert "threshold" in moved_genes


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import optuna
    from optuna_biotune import BioTuneSampler

    url, stop_after = sys.argv[1], int(sys.argv[2])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="s", storage=url, sampler=BioTuneSampler(), load_if_exists=True
    )

    def objective(trial):
        x = np.array([trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(3)])
        return float(np.sum((x - 1.3) ** 2))

    def die(study, trial):
        done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        if stop_after and done >= stop_after:
            os.kill(os.getpid(), signal.SIGKILL)

    study.optimize(objective, n_trials=30, callbacks=[die])
    """
)


@pytest.mark.slow
def test_a_drawn_seed_is_stored_and_a_killed_run_resumes_with_it(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    url = f"sqlite:///{tmp_path / 's.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, str(script), url, "13"], env=env, timeout=120)
    assert killed.returncode == -9
    storage = optuna.storages.RDBStorage(url)
    seed = _stored_seed(storage, "s")
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 13
    # A new process, again without a seed, goes on from the storage.
    subprocess.run([sys.executable, str(script), url, "0"], env=env, timeout=120, check=True)
    study = optuna.load_study(study_name="s", storage=storage)
    assert _stored_seed(storage, "s") == seed
    resumed = [t.params for t in study.trials if t.state == TrialState.COMPLETE][:30]
    # The same search uninterrupted, with the stored seed given explicitly.
    reference = optuna.create_study(sampler=BioTuneSampler(seed=seed))
    reference.optimize(
        lambda t: float(
            np.sum((np.array([t.suggest_float(f"x{i}", -5.0, 5.0) for i in range(3)]) - 1.3) ** 2)
        ),
        n_trials=len(resumed),
    )
    assert resumed == [t.params for t in reference.trials]
    # Two samplers without a seed on new studies draw different seeds.
    memory = optuna.storages.InMemoryStorage()
    other = optuna.create_study(study_name="o", storage=memory, sampler=BioTuneSampler())
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert _stored_seed(memory, "o") != seed


def _stored_seed(storage: optuna.storages.BaseStorage, name: str) -> int:
    return storage.get_study_system_attrs(storage.get_study_id_from_name(name))[f"{NS}:seed"]
