"""The pure memetic operators (optuna_biotune.biotune.operators) and the [0, 1] mapping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from optuna_biotune.biotune import operators as ops
from optuna_biotune.evolution.records import read_chunked, write_chunked
from optuna_biotune.evolution.space import denormalize, normalize


def test_uniform_population_is_in_unit_cube() -> None:
    pop = ops.uniform_population(np.random.default_rng(0), 50, 7)
    assert pop.shape == (50, 7)
    assert pop.min() >= 0.0 and pop.max() < 1.0
    assert pop.std() > 0.2  # U[0, 1] has std 0.289


def _bioik(f: np.ndarray) -> np.ndarray:
    """BioIK's formula written out for sorted ranks: (f_i + f_min * (i/(N-1) - 1)) / f_max."""
    order = np.argsort(f, kind="stable")
    out = np.empty(f.size)
    for i, j in enumerate(order):
        out[j] = (f[j] + f.min() * (i / (f.size - 1) - 1.0)) / f.max()
    return out


@pytest.mark.parametrize("seed", range(5))
def test_extinction_is_bioik_formula_for_losses(seed: int) -> None:
    f = np.random.default_rng(seed).random(10) * 3.0  # a loss: >= 0
    ext = ops.extinction_factors(f)
    np.testing.assert_allclose(ext, _bioik(f))
    assert ext[np.argmin(f)] == pytest.approx(0.0)
    assert ext[np.argmax(f)] == pytest.approx(1.0)
    assert list(np.argsort(ext)) == list(np.argsort(f))


def test_extinction_of_one_minus_accuracy_matches_hand_computation() -> None:
    # BioTune's loss 1 - accuracy for accuracies 0.9, 0.8, 0.95 -> f = 0.1, 0.2, 0.05:
    # sorted 0.05 (i=0), 0.1 (i=1), 0.2 (i=2): (0.05 - 0.05)/0.2, (0.1 - 0.025)/0.2, 0.2/0.2.
    ext = ops.extinction_factors(np.array([0.1, 0.2, 0.05]))
    np.testing.assert_allclose(ext, [0.375, 1.0, 0.0])


@pytest.mark.parametrize("shift,scale", [(-7.0, 1.0), (-300.0, 100.0), (-1.0, 0.01)])
def test_extinction_below_zero_is_shift_and_scale_invariant(shift: float, scale: float) -> None:
    f = np.array([0.4, 0.1, 0.9, 0.3, 0.2]) - 1.0  # negative: a maximize study's -value
    ext = ops.extinction_factors(shift + scale * f)
    assert ext[1] == pytest.approx(0.0)
    assert ext[2] == pytest.approx(1.0)
    np.testing.assert_allclose(ext, ops.extinction_factors(f))
    # The shifted fitness f - f_min + (f_max - f_min) put through BioIK's formula.
    np.testing.assert_allclose(ext, _bioik(f - f.min() + (f.max() - f.min())))
    assert list(np.argsort(ext)) == list(np.argsort(f))


@pytest.mark.parametrize("f", [[], [3.0], [2.0, 2.0, 2.0], [0.0, 0.0], [-2.0, -2.0, -2.0]])
def test_extinction_degenerate_populations(f: list[float]) -> None:
    ext = ops.extinction_factors(np.array(f))
    assert ext.shape == (len(f),)
    assert np.all((ext >= 0) & (ext <= 1))
    if f == [2.0, 2.0, 2.0]:  # ties: BioIK's formula leaves only the rank term
        np.testing.assert_allclose(ext, [0.0, 0.5, 1.0])
    if f == [-2.0, -2.0, -2.0]:  # no spread below zero: half the normalised rank
        np.testing.assert_allclose(ext, [0.0, 0.25, 0.5])
    if f == [0.0, 0.0]:  # every individual optimal
        np.testing.assert_allclose(ext, [0.0, 0.0])


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_select_rank_weights_are_n_minus_r(n: int) -> None:
    rng = np.random.default_rng(1)
    draws = np.array([ops.select_rank(rng, n) for _ in range(20000)])
    freq = np.bincount(draws, minlength=n) / draws.size
    expected = (n - np.arange(n)) / (n * (n + 1) / 2)
    np.testing.assert_allclose(freq, expected, atol=0.015)


def test_select_rank_refuses_empty_pool() -> None:
    with pytest.raises(ValueError, match="`n`"):
        ops.select_rank(np.random.default_rng(0), 0)


def test_crossover_blends_each_gene_with_its_own_ratio() -> None:
    p1, p2 = np.zeros(20), np.ones(20)
    child = ops.crossover(np.random.default_rng(2), p1, p2)
    # child_i = r_i * 0 + (1 - r_i) * 1: in [0, 1] and a different ratio per gene.
    assert np.all((child >= 0) & (child <= 1))
    assert len(np.unique(np.round(child, 12))) == 20
    same = ops.crossover(np.random.default_rng(2), np.full(5, 0.3), np.full(5, 0.3))
    np.testing.assert_allclose(same, 0.3)


@pytest.mark.parametrize("ext,dim", [(0.0, 4), (1.0, 4), (0.5, 10), (0.2, 1)])
def test_mutation_probability_formula(ext: float, dim: int) -> None:
    assert ops.mutation_probability(ext, dim) == pytest.approx(ext * (1 - 1 / dim) + 1 / dim)


def test_mutate_strength_follows_extinction() -> None:
    x = np.full(1000, 0.5)
    calm = ops.mutate(np.random.default_rng(3), x, 0.0)
    np.testing.assert_array_equal(calm, x)  # ext = 0: step 0
    wild = ops.mutate(np.random.default_rng(3), x, 1.0)
    assert np.mean(wild != x) > 0.99  # ext = 1: every gene mutates
    assert wild.min() >= 0.0 and wild.max() <= 1.0  # clipped
    mid = ops.mutate(np.random.default_rng(3), x, 0.2)
    changed = mid != x
    assert 0.15 < changed.mean() < 0.25  # p = 0.2 * (1 - 1/1000) + 1/1000
    assert np.abs(mid - x).max() <= 0.2 + 1e-12  # |U(-1, 1) * span * ext| <= ext


def test_adopt_pulls_towards_parents_and_prototype() -> None:
    x = np.full(200, 0.0)
    target = np.full(200, 1.0)
    y = ops.adopt(np.random.default_rng(4), x, target, target, target)
    assert np.all((y >= 0) & (y <= 1))
    assert np.all(y >= 0.0) and y.mean() > 0.2  # moved up, never past the target
    fixed = ops.adopt(np.random.default_rng(4), np.full(3, 0.4), *(np.full(3, 0.4),) * 3)
    np.testing.assert_allclose(fixed, 0.4)


@pytest.mark.parametrize("candidates", [None, np.array([2, 5])])
def test_exploit_moves_one_allowed_gene_symmetrically(candidates: np.ndarray | None) -> None:
    rng = np.random.default_rng(5)
    x = np.full(8, 0.5)
    for _ in range(50):
        plus, minus, gene = ops.exploit_neighbours(rng, x, 0.25, candidates)
        changed = np.flatnonzero((plus != x) | (minus != x))
        assert list(changed) in ([], [gene])
        if candidates is not None:
            assert gene in candidates
        assert plus[gene] - 0.5 == pytest.approx(0.5 - minus[gene])
        assert abs(plus[gene] - 0.5) <= 0.25


def test_exploit_clips_to_unit_interval() -> None:
    rng = np.random.default_rng(6)
    for _ in range(30):
        plus, minus, _ = ops.exploit_neighbours(rng, np.array([0.01, 0.99]), 1.0)
        assert plus.min() >= 0.0 and plus.max() <= 1.0
        assert minus.min() >= 0.0 and minus.max() <= 1.0


@pytest.mark.parametrize(
    "dist,values",
    [
        (FloatDistribution(-5, 5), [-5.0, 0.0, 1.25, 5.0]),
        (FloatDistribution(1e-7, 1.0, log=True), [1e-7, 1e-3, 1.0]),
        (FloatDistribution(-10.2, 10.2, step=0.1), [-10.2, 0.3, 10.2]),
        (IntDistribution(-10, 10), [-10, 0, 7, 10]),
        (IntDistribution(1, 100, log=True), [1, 10, 100]),
        (IntDistribution(3, 9, step=2), [3, 5, 9]),
        (IntDistribution(4, 4), [4]),
    ],
)
def test_normalize_denormalize_roundtrip(dist: object, values: list[float]) -> None:
    for v in values:
        x = normalize(v, dist)
        assert 0.0 <= x <= 1.0
        back = denormalize(x, dist)
        assert back == pytest.approx(v, rel=1e-9, abs=1e-9)
        assert type(back) is (int if isinstance(dist, IntDistribution) else float)
    for x in np.linspace(0, 1, 37):
        v = denormalize(float(x), dist)
        assert dist.low <= v <= dist.high
        if getattr(dist, "step", None) is not None:
            k = (v - dist.low) / dist.step
            assert math.isclose(k, round(k), abs_tol=1e-9)


@pytest.mark.parametrize("size", [10, 2000, 2100, 90000])
def test_chunked_attrs_roundtrip_within_2045_stored_characters(size: int) -> None:
    attrs: dict[str, object] = {}
    rng = np.random.default_rng(size)
    value = {"s": '"q"' * (size // 3), "x": rng.random(size // 20).tolist()}
    write_chunked(attrs.__setitem__, "Ns:record", value)
    assert read_chunked(attrs, "Ns:record") == value
    assert all(len(json.dumps(v)) <= 2045 for v in attrs.values())
    assert (len(attrs) > 1) == (len(json.dumps(value, separators=(",", ":"))) > 2045)
    assert read_chunked(attrs, "Ns:other") is None
