"""The binary GA operators of EvoPruneDeepTL (pure functions, fixed random generators)."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_biotune.evoprune import operators as ops


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("fill", [(0.3, 0.7), (0.1, 0.2), 0.25, None])
def test_random_chromosome_keeps_the_fill_share(fill) -> None:
    shares = [ops.random_chromosome(rng(s), n_bits=2000, fill=fill).mean() for s in range(40)]
    low, high = fill if isinstance(fill, tuple) else (fill or 0.5, fill or 0.5)
    assert min(shares) >= low - 0.04
    assert max(shares) <= high + 0.04
    if isinstance(fill, tuple):  # the share itself is drawn: it varies between chromosomes
        assert max(shares) - min(shares) > (high - low) / 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_bits": 0}, "n_bits"), ({"n_bits": 4, "fill": (0.7, 0.3)}, "fill")],
)
def test_random_chromosome_rejects_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ops.random_chromosome(rng(), **kwargs)


def test_rank_order_breaks_ties_toward_fewer_active_neurons() -> None:
    order = ops.rank_order([0.9, 0.95, 0.9, 0.95], [300, 200, 100, 250])
    assert order.tolist() == [1, 3, 2, 0]


@pytest.mark.parametrize(
    ("score", "active", "than", "expected"),
    [
        (0.9, 400, (0.8, 10), True),
        (0.8, 10, (0.9, 400), False),
        (0.9, 100, (0.9, 101), True),
        (0.9, 101, (0.9, 100), False),
        (0.9, 100, (0.9, 100), False),
    ],
)
def test_is_better(score, active, than, expected) -> None:
    assert ops.is_better(score, active, than_score=than[0], than_active=than[1]) is expected


def test_roulette_is_fitness_proportionate() -> None:
    g = rng(1)
    draws = np.bincount([ops.roulette(g, [1.0, 3.0]) for _ in range(4000)], minlength=2)
    # Weights after the small shift: ~1 : ~3 (the shift is 0.1 % of the span).
    assert 0.70 < draws[1] / draws.sum() < 0.80


def test_roulette_is_uniform_when_all_scores_are_equal() -> None:
    g = rng(2)
    draws = np.bincount([ops.roulette(g, [0.5] * 4) for _ in range(4000)], minlength=4)
    assert draws.min() > 850


def test_roulette_handles_negative_scores_of_minimised_objectives() -> None:
    g = rng(3)
    draws = np.bincount([ops.roulette(g, [-10.0, -1.0]) for _ in range(2000)], minlength=2)
    assert draws[1] > draws[0] * 5


@pytest.mark.parametrize("method", ["roulette", "nam"])
def test_select_parents_returns_two_distinct_members(method) -> None:
    g = rng(4)
    pop = np.stack([ops.random_chromosome(g, n_bits=32) for _ in range(5)])
    for _ in range(200):
        i, j = ops.select_parents(g, pop, [0.1, 0.5, 0.9, 0.3, 0.2], method=method)
        assert i != j and 0 <= i < 5 and 0 <= j < 5


def test_negative_assortative_mating_prefers_the_most_different_mate() -> None:
    # Three identical all-zero chromosomes and one all-one: with equal scores, roulette picks
    # the odd one as the mate of a zero chromosome 1/3 of the time; NAM (best of 3
    # candidates by Hamming distance) 1 - (2/3)^3 = 70 % of the time.
    pop = np.zeros((4, 16), dtype=np.int8)
    pop[3] = 1
    share = {}
    for method in ("roulette", "nam"):
        g = rng(5)
        hits = total = 0
        for _ in range(3000):
            i, j = ops.select_parents(g, pop, [0.5] * 4, method=method)
            if i != 3:
                total += 1
                hits += j == 3
        share[method] = hits / total
    assert share["roulette"] < 0.40
    assert share["nam"] > 0.62


def test_uniform_crossover_gives_complementary_children() -> None:
    g = rng(6)
    a, b = ops.random_chromosome(g, n_bits=256), ops.random_chromosome(g, n_bits=256)
    c1, c2 = ops.uniform_crossover(g, a, b)
    assert np.array_equal(c1 + c2, a + b)  # every bit goes to one child from each parent
    assert np.all((c1 == a) | (c1 == b))
    differs = a != b
    from_a = (c1 == a)[differs].mean()
    assert 0.35 < from_a < 0.65


def test_one_point_crossover_swaps_tails_at_one_cut() -> None:
    a, b = np.zeros(50, dtype=np.int8), np.ones(50, dtype=np.int8)
    for seed in range(20):
        c1, c2 = ops.one_point_crossover(rng(seed), a, b)
        cut = int(np.argmax(c1))  # first 1 of c1
        assert 1 <= cut <= 49
        assert np.all(c1[:cut] == 0) and np.all(c1[cut:] == 1)
        assert np.array_equal(c2, 1 - c1)


@pytest.mark.parametrize("crossover", [ops.uniform_crossover, ops.one_point_crossover])
def test_crossovers_reject_parents_of_different_lengths(crossover) -> None:
    with pytest.raises(ValueError, match="same length"):
        crossover(rng(), np.zeros(4, dtype=np.int8), np.zeros(5, dtype=np.int8))


@pytest.mark.parametrize(("p", "low", "high"), [(0.0, 0, 0), (1.0, 1, 1), (0.07, 0.06, 0.08)])
def test_bit_flip_flips_each_bit_with_its_probability(p, low, high) -> None:
    x = ops.random_chromosome(rng(7), n_bits=20000)
    y = ops.bit_flip(rng(8), x, probability=p)
    assert low <= (x != y).mean() <= high


def test_bit_flip_rejects_non_binary_input() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        ops.bit_flip(rng(), np.array([0, 2, 1]))


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        ((0.95, 300), 2),  # better than the worst (0.5): replaces it
        ((0.40, 10), None),  # worse than the worst: rejected
        ((0.50, 199), 2),  # same score as the worst, fewer neurons: replaces it
        ((0.50, 200), None),  # a tie in both: the incumbent stays
    ],
)
def test_replace_worst(child, expected) -> None:
    scores, active = [0.9, 0.7, 0.5, 0.8], [100, 100, 200, 100]
    got = ops.replace_worst(scores, active, child_score=child[0], child_active=child[1])
    assert got == expected


def test_replace_worst_never_removes_the_best_member() -> None:
    g = rng(9)
    scores = list(g.random(10))
    active = list(g.integers(1, 512, 10))
    best = int(ops.rank_order(scores, active)[0])
    for _ in range(300):
        cs, ca = float(g.random()), int(g.integers(1, 512))
        out = ops.replace_worst(scores, active, child_score=cs, child_active=ca)
        assert out != best
        if out is not None:
            scores[out], active[out] = cs, ca
            best = int(ops.rank_order(scores, active)[0])


def test_inserting_two_children_keeps_the_best_of_population_and_children() -> None:
    # The paper's "two children replace the two worst if better", as two insertions.
    g = rng(10)
    for _ in range(200):
        scores = [float(v) for v in np.round(g.random(6), 1)]
        children = [float(v) for v in np.round(g.random(2), 1)]
        expected = sorted(scores + children)[-6:]
        for c in children:
            out = ops.replace_worst(scores, [100] * 6, child_score=c, child_active=100)
            if out is not None:
                scores[out] = c
        assert sorted(scores) == expected


@pytest.mark.parametrize("n_bits", [1, 7, 8, 512, 1024])
def test_pack_roundtrip(n_bits) -> None:
    x = ops.random_chromosome(rng(n_bits), n_bits=n_bits, fill=None)
    text = ops.pack(x)
    assert len(text) == 2 * ((n_bits + 7) // 8)
    assert np.array_equal(ops.unpack(text, n_bits=n_bits), x)
