"""BioIK's loop (``biotune.memetic``) on populations that mix full-fidelity and partial values:
partial members rank last, never beat, and set no extinction factor (``biotune.fidelity``)."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_biotune.biotune import operators as ops
from optuna_biotune.biotune.memetic import ROLE_CHILD, ROLE_EXPLOIT, MemeticStrategy
from optuna_biotune.evolution.strategy import Individual, SlotPlan

NAMES = [f"importance:b{i}" for i in range(6)] + ["threshold"]


def _strategy() -> MemeticStrategy:
    return MemeticStrategy(
        population_size=10,
        n_elites=3,
        exploit_step=0.25,
        threshold_param="threshold",
        wipeout=True,
    )


def _state(accuracies: list[float], partial: tuple[int, ...] = ()) -> dict:
    """A BioTune population as `open` writes it: trial ``100 + i`` scored ``accuracies[i]``
    (fitness ``-accuracy``), best first, the members in ``partial`` below full fidelity."""
    rng = np.random.default_rng(0)
    table = {}
    for i, acc in enumerate(accuracies):
        x = rng.random(len(NAMES))
        x[-1] = 0.2  # threshold low: every member trains some block
        table[str(100 + i)] = [-acc, [float(v) for v in x]]
    state = {"ind": table, "members": [100 + i for i in range(len(accuracies))], "wiped": False}
    return {**state, "partial": list(partial)} if partial else state


def _result(number: int, acc: float, role: str, parents: tuple, *, full: bool) -> Individual:
    return Individual(
        number=number,
        x=np.full(len(NAMES), 0.5),
        fitness=-acc,
        generation=1,
        slot=0,
        role=role,
        parents=parents,
        full=full,
    )


def _open(state: dict, results: list[Individual]):
    return _strategy().open(
        generation=1, names=NAMES, state=state, results=results, rng=np.random.default_rng
    )


def _parents_drawn(state: dict, siblings: list[Individual]) -> set[int]:
    drawn: set[int] = set()
    for seed in range(300):
        plan = _strategy().plan_slot(
            generation=1,
            slot=7,
            names=NAMES,
            state=state,
            plan=SlotPlan(role=ROLE_CHILD, deferred=True),
            siblings=siblings,
            rng=np.random.default_rng(seed),
        )
        drawn.update(plan.parents[:2])
    return drawn


FULL = [0.95, 0.94, 0.93, 0.92, 0.91, 0.90, 0.89, 0.88, 0.87, 0.86]


def test_a_partial_member_ranks_below_every_full_member_and_is_listed() -> None:
    state = _state(FULL)
    # Child 200 measured 0.99 on one seed (cut) and child 201 0.96 in full.
    results = [
        _result(200, 0.99, ROLE_CHILD, (103, 104, 100), full=False),
        _result(201, 0.96, ROLE_CHILD, (103, 104, 100), full=True),
    ]
    opening = _open(state, results)
    members = opening.state["members"]
    assert members[0] == 201 and members[-1] == 200  # old code: 200 first, an elite
    assert opening.state["partial"] == [200]
    elites = {s.parents[0] for s in opening.slots if s.role == ROLE_EXPLOIT}
    assert elites == {201, 100, 101}
    # Late results over the population's size: the partial member goes first.
    late = [_result(300 + i, 0.5, ROLE_CHILD, (105, 106, 100), full=True) for i in range(8)]
    assert 200 not in _open(state, [*results, *late]).state["members"]


def test_a_partial_neighbour_never_replaces_its_elite() -> None:
    state = _state(FULL)
    for full in (False, True):
        neighbour = _result(200, 0.99, ROLE_EXPLOIT, (100,), full=full)
        members = _open(state, [neighbour]).state["members"]
        assert (members[0] == 200) is full and (100 in members) is not full


def test_a_partial_child_beats_no_parent_in_the_mating_pool() -> None:
    state = _state(FULL)
    partial = _result(200, 0.99, ROLE_CHILD, (101, 102, 100), full=False)
    assert {101, 102} <= _parents_drawn(state, [partial])  # old code: both removed
    full = _result(200, 0.99, ROLE_CHILD, (101, 102, 100), full=True)
    assert not {101, 102} & _parents_drawn(state, [full])
    # A full child and a partial parent are compared by value: above it, the parent leaves.
    cut_parent = _state([*FULL[:9], 0.60], partial=(109,))
    below = _result(201, 0.55, ROLE_CHILD, (108, 109, 100), full=True)
    above = _result(201, 0.65, ROLE_CHILD, (108, 109, 100), full=True)
    assert 109 in _parents_drawn(cut_parent, [below])
    assert 109 not in _parents_drawn(cut_parent, [above])


def test_a_partial_child_wins_no_wipeout_vote_and_is_no_improvement() -> None:
    state = _state(FULL)
    # Every neighbour worse than its elite, every child worse than its parents ...
    results = [
        _result(200 + k, 0.5, ROLE_EXPLOIT, (100 + k // 2,), full=True) for k in range(6)
    ] + [_result(210 + k, 0.5, ROLE_CHILD, (103, 104, 100), full=True) for k in range(6)]
    # ... but one child that measured more than everyone on a seed and was cut.
    lucky = _result(220, 0.99, ROLE_CHILD, (103, 104, 100), full=False)
    wiped = _open(state, [*results, lucky])
    assert wiped.state["wiped"] and wiped.state["members"] == [100]  # old code: no wipeout
    kept = _open(state, [*results, _result(220, 0.99, ROLE_CHILD, (103, 104, 100), full=True)])
    assert not kept.state["wiped"]


def test_extinction_comes_from_the_full_members_only(monkeypatch: pytest.MonkeyPatch) -> None:
    accs = [*FULL[:9], 0.10]  # member 109 was cut after one poor epoch
    seen: list[float] = []

    def mutate(rng: np.random.Generator, x: np.ndarray, ext: float) -> np.ndarray:
        seen.append(ext)
        return x

    monkeypatch.setattr(ops, "mutate", mutate)
    plan = _strategy().plan_slot(
        generation=1,
        slot=7,
        names=NAMES,
        state=_state(accs, partial=(109,)),
        plan=SlotPlan(role=ROLE_CHILD, deferred=True),
        siblings=[],
        rng=np.random.default_rng(4),
    )
    full = ops.extinction_factors(1.0 - np.asarray(accs[:9]))
    factor = {100 + i: float(f) for i, f in enumerate(full)} | {109: 1.0}
    p1, p2 = plan.parents[:2]
    assert seen[-1] == pytest.approx(0.5 * (factor[p1] + factor[p2]))
    # Had the cut member counted, its loss of 0.9 would have shrunk every full factor.
    old = ops.extinction_factors(1.0 - np.asarray(accs))
    assert all(o < f for o, f in zip(old[:8], full[:8], strict=True) if f > 0)
    assert _strategy().full_fidelity({"raced": {"seed": 1}}) is False
