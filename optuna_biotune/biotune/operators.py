"""The memetic evolution operators of BioIK (Starke et al., IEEE TEC 2019) as used by BioTune.

Pure functions of NumPy arrays in the normalised gene space ``[0, 1]`` and an explicit
:class:`numpy.random.Generator`; no storage, no Optuna. Fitness is always *minimised* here
(the samplers negate the values of ``maximize`` studies). Equations are those of BioIK
(Starke et al. 2019, Sec. IV) and of the BioTune paper (Colan et al. 2025, Sec. III).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "adopt",
    "crossover",
    "exploit_neighbours",
    "extinction_factors",
    "mutate",
    "mutation_probability",
    "select_rank",
    "uniform_population",
]


def uniform_population(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Initial individuals, every gene ``U[0, 1]`` (paper eq. 3); shape ``(n, dim)``."""
    if n < 0 or dim < 0:
        raise ValueError(f"`n` and `dim` must be >= 0, got {n} and {dim}.")
    return rng.random((n, dim))


def extinction_factors(fitness: np.ndarray) -> np.ndarray:
    """Extinction factor of each individual, ``0`` for the best and ``1`` for the worst.

    BioIK's formula (Starke et al. 2019, Sec. IV-B) for rank ``i`` of ``N`` (fitness sorted
    ascending, minimised): ``ext_i = (f_i + f_min * (i / (N - 1) - 1)) / f_max``. It is defined
    for a loss (``f >= 0``, 0 at the optimum), as BioTune's ``1 - accuracy``, and is applied
    exactly then. For fitness below 0 (a ``maximize`` study of an unbounded objective) it is
    applied to the fitness shifted to ``f' = f - f_min + R`` with ``R = f_max - f_min``, which
    gives ``((f_i - f_min) / R + i / (N - 1)) / 2``, the mean of the normalised fitness and
    the normalised rank. The formula of the papers is kept wherever it is defined: the shifted
    form, measured on losses in its place, is better on none of 8 test functions at p < 0.05
    (``benchmarks/results/design_decisions.md``).

    Args:
        fitness: Fitness values (minimised) in any order.

    Returns:
        The factors in the same order as ``fitness``.
    """
    f = np.asarray(fitness, dtype=float)
    n = f.size
    if n <= 1:
        return np.zeros(n)
    order = np.argsort(f, kind="stable")
    rank = np.empty(n, dtype=float)
    rank[order] = np.arange(n, dtype=float)
    grading = rank / (n - 1)
    f_min, f_max = float(f.min()), float(f.max())
    if f_min >= 0.0:
        if f_max <= 0.0:  # every individual is optimal
            return np.zeros(n)
        return (f + f_min * (grading - 1.0)) / f_max
    spread = f_max - f_min
    scaled = (f - f_min) / spread if spread > 0 else np.zeros(n)
    return 0.5 * (scaled + grading)


def select_rank(rng: np.random.Generator, n: int) -> int:
    """Draw a rank in ``0..n-1`` with weight ``n - r`` (rank 0 is the best).

    BioIK's rejection scheme: ``v = a + b`` with ``a, b ~ U{0..n-1}``, redrawn while
    ``v >= n``; ``P(v = k)`` is proportional to ``k + 1``, so ``n - 1 - v`` has weight ``n - r``.
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1 to select a parent, got {n}.")
    while True:
        v = int(rng.integers(0, n)) + int(rng.integers(0, n))
        if v < n:
            return n - 1 - v


def crossover(rng: np.random.Generator, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Per-gene blend ``r * p1 + (1 - r) * p2`` with a fresh ``r ~ U(0, 1)`` per gene."""
    a, b = np.asarray(p1, dtype=float), np.asarray(p2, dtype=float)
    r = rng.random(a.shape)
    return r * a + (1.0 - r) * b


def mutation_probability(extinction: float, dim: int) -> float:
    """Per-gene mutation probability ``ext * (1 - 1/n) + 1/n`` for ``n`` genes."""
    if dim < 1:
        raise ValueError(f"`dim` must be >= 1, got {dim}.")
    return float(extinction) * (1.0 - 1.0 / dim) + 1.0 / dim


def mutate(
    rng: np.random.Generator, x: np.ndarray, extinction: float, span: float = 1.0
) -> np.ndarray:
    """Extinction-driven mutation: each gene mutates with :func:`mutation_probability` by
    ``U(-1, 1) * span * ext``; the result is clipped to ``[0, 1]``.

    ``ext`` is the mean extinction factor of the two parents (:func:`extinction_factors`), so
    good parents have gentle, rare mutations and bad ones strong, frequent mutations.
    """
    y = np.array(x, dtype=float)
    p = mutation_probability(extinction, y.size)
    hit = rng.random(y.shape) < p
    step = rng.uniform(-1.0, 1.0, y.shape) * span * float(extinction)
    y = np.where(hit, y + step, y)
    return np.clip(y, 0.0, 1.0)


def adopt(
    rng: np.random.Generator,
    x: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    prototype: np.ndarray,
) -> np.ndarray:
    """Adoption ("adaptation" in the papers): pull each gene towards the parents and a prototype.

    ``g += mix(u1 * (mean(p1, p2) - g), u2 * (proto - g), u3)`` per gene with
    ``u1, u2, u3 ~ U(0, 1)`` and ``mix(a, b, t) = (1 - t) * a + t * b``; then clipped.
    """
    g = np.asarray(x, dtype=float)
    mid = 0.5 * (np.asarray(p1, dtype=float) + np.asarray(p2, dtype=float))
    u1, u2, u3 = rng.random(g.shape), rng.random(g.shape), rng.random(g.shape)
    a = u1 * (mid - g)
    b = u2 * (np.asarray(prototype, dtype=float) - g)
    return np.clip(g + (1.0 - u3) * a + u3 * b, 0.0, 1.0)


def exploit_neighbours(
    rng: np.random.Generator,
    x: np.ndarray,
    step: float,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exploitation of an elite: one random gene moved by ``+d`` and by ``-d``.

    ``d = step * U(-1, 1)`` (``step`` is 0.25 in the paper); both neighbours are clipped to
    ``[0, 1]``. The caller evaluates both and keeps the better only if it beats the elite
    (greedy local search).

    Args:
        rng: Random generator.
        x: The elite's genes.
        step: The perturbation scale ``d_max``.
        candidates: Indices of the genes that may be moved (BioTune: the trained genes, those
            above the threshold gene); all genes when ``None`` or empty.

    Returns:
        ``(x + d, x - d, gene)``.
    """
    base = np.asarray(x, dtype=float)
    pool = np.arange(base.size) if candidates is None or len(candidates) == 0 else candidates
    if len(pool) == 0:
        raise ValueError("`x` must have at least one gene to exploit.")
    gene = int(pool[int(rng.integers(0, len(pool)))])
    d = float(step) * float(rng.uniform(-1.0, 1.0))
    plus, minus = base.copy(), base.copy()
    plus[gene] = min(1.0, max(0.0, base[gene] + d))
    minus[gene] = min(1.0, max(0.0, base[gene] - d))
    return plus, minus, gene
