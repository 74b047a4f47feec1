"""Binary GA operators of EvoPruneDeepTL (Poyatos et al., Neural Networks 2023), pure NumPy.

Every function takes its chromosomes as 0/1 arrays and an explicit
:class:`numpy.random.Generator`; nothing reads global state, so the sampler can rebuild any
step from the seed and the step's place in the study. Scores are "higher is better" (the
sampler turns a minimised objective into scores before calling these), and ties are broken
toward fewer active neurons, as in the paper.

Paper: https://doi.org/10.1016/j.neunet.2022.10.011
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from optuna_biotune.errors import UsageError

#: Initial fill ratio range of the paper: each initial chromosome keeps a share of neurons
#: drawn uniformly from this interval.
DEFAULT_FILL = (0.3, 0.7)
#: Bit-flip probability of the paper (applied per bit, see :func:`bit_flip`).
DEFAULT_MUTATION = 0.07
#: Candidates compared by Hamming distance in negative assortative mating.
NAM_CANDIDATES = 3


def _as_bits(x: np.ndarray | Sequence[int], name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D 0/1 array, got shape {a.shape}.")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError(f"`{name}` must hold only 0 and 1.")
    return a.astype(np.int8)


def random_chromosome(
    rng: np.random.Generator,
    *,
    n_bits: int,
    fill: tuple[float, float] | float | None = DEFAULT_FILL,
) -> np.ndarray:
    """Draw one initial chromosome.

    Args:
        rng: The random generator.
        n_bits: Chromosome length (neurons of the pruned layer(s)).
        fill: Share of active neurons: a number, an interval ``(low, high)`` from which the
            share is drawn uniformly (the paper's 0.3-0.7), or ``None`` for fair coin flips.

    Returns:
        A 0/1 ``int8`` array of length ``n_bits``.
    """
    if n_bits < 1:
        raise ValueError(f"`n_bits` must be >= 1, got {n_bits}.")
    share = fill_share(rng, check_fill(fill))
    return (rng.random(n_bits) < share).astype(np.int8)


def check_fill(fill: Any) -> tuple[float, float] | float | None:
    """``fill`` as :func:`fill_share` takes it: ``(low, high)`` with ``0 <= low <= high <= 1``,
    a number in ``[0, 1]`` or ``None``; anything else is a :class:`UsageError`."""
    if fill is None:
        return None
    if isinstance(fill, list | tuple):
        if len(fill) != 2 or not all(isinstance(v, int | float) for v in fill):
            raise UsageError(f"`fill` must be (low, high), a number or None, got {fill!r}.")
        low, high = float(fill[0]), float(fill[1])
        if not 0.0 <= low <= high <= 1.0:
            raise UsageError(f"`fill` must satisfy 0 <= low <= high <= 1, got {fill!r}.")
        return (low, high)
    if isinstance(fill, bool) or not isinstance(fill, int | float) or not 0 <= fill <= 1:
        raise UsageError(f"`fill` must be (low, high), a number in [0, 1] or None, got {fill!r}.")
    return float(fill)


def fill_share(rng: np.random.Generator, fill: tuple[float, float] | float | None) -> float:
    """The share of ones of one initial chromosome (a checked ``fill``): drawn uniformly from
    an interval (the paper's 0.3-0.7), a fixed number, or 0.5 for ``None`` (fair coin flips).

    The sampler draws it once per slot (``EvoPruneStrategy.initial_x``), then each bit.
    """
    if fill is None:
        return 0.5
    if isinstance(fill, tuple):
        return rng.uniform(*fill)
    return float(fill)


def rank_order(
    scores: Sequence[float] | np.ndarray, active: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Indices from best to worst: higher score first, ties toward fewer active neurons.

    The tie-break is the paper's: of two masks with the same fitness the smaller network wins.
    Remaining ties keep their input order (stable).
    """
    s = np.asarray(scores, dtype=float)
    a = np.asarray(active, dtype=float)
    if s.shape != a.shape or s.ndim != 1:
        raise ValueError("`scores` and `active` must be 1-D arrays of the same length.")
    # lexsort sorts by the last key first: primary -score, secondary active count.
    return np.lexsort((a, -s))


def is_better(score: float, active: int, *, than_score: float, than_active: int) -> bool:
    """Whether (``score``, ``active``) strictly beats (``than_score``, ``than_active``)."""
    if score != than_score:
        return score > than_score
    return active < than_active


def roulette(rng: np.random.Generator, scores: Sequence[float] | np.ndarray) -> int:
    """Fitness-proportionate selection: index ``i`` with probability ``s_i / sum(s)``.

    Scores are shifted so the worst one keeps a small positive weight (a validation accuracy
    is already non-negative; the shift matters for scores from a minimised objective). When
    every score is equal the draw is uniform.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("`scores` must be a non-empty 1-D array.")
    if not np.all(np.isfinite(s)):
        raise ValueError("`scores` must be finite.")
    low = min(float(s.min()), 0.0)
    w = s - low
    span = float(s.max() - s.min())
    w = w + (span * 1e-3 if span > 0 else 1.0)
    return int(rng.choice(s.size, p=w / w.sum()))


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Number of bits where ``a`` and ``b`` differ."""
    return int(np.count_nonzero(np.asarray(a) != np.asarray(b)))


def select_parents(
    rng: np.random.Generator,
    population: np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    method: str = "roulette",
) -> tuple[int, int]:
    """Pick two distinct parents from ``population`` (rows are chromosomes).

    ``"roulette"``: both by :func:`roulette`. ``"nam"`` (negative assortative mating): the
    first by roulette, then :data:`NAM_CANDIDATES` more by roulette, and the one most
    different from the first (largest Hamming distance) becomes the second.
    """
    pop = np.asarray(population)
    s = np.asarray(scores, dtype=float)
    if pop.ndim != 2 or pop.shape[0] != s.size:
        raise ValueError("`population` must be 2-D with one row per score.")
    if pop.shape[0] < 2:
        raise ValueError("`population` must hold at least 2 chromosomes to mate.")
    if method not in ("roulette", "nam"):
        raise ValueError(f"`method` must be 'roulette' or 'nam', got {method!r}.")
    first = roulette(rng, s)
    others = np.array([i for i in range(s.size) if i != first])

    def draw() -> int:
        return int(others[roulette(rng, s[others])])

    if method == "roulette":
        return first, draw()
    candidates = [draw() for _ in range(NAM_CANDIDATES)]
    distances = [hamming(pop[first], pop[c]) for c in candidates]
    return first, candidates[int(np.argmax(distances))]


def uniform_crossover(
    rng: np.random.Generator, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform crossover: each bit is swapped between the parents with probability 1/2.

    Returns two complementary children (where one takes ``a``'s bit, the other takes ``b``'s).
    """
    pa, pb = _as_bits(a, "a"), _as_bits(b, "b")
    if pa.shape != pb.shape:
        raise ValueError("`a` and `b` must have the same length.")
    swap = rng.random(pa.size) < 0.5
    return np.where(swap, pb, pa), np.where(swap, pa, pb)


def one_point_crossover(
    rng: np.random.Generator, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One-point crossover: cut both parents at one point in ``1..n-1`` and swap the tails."""
    pa, pb = _as_bits(a, "a"), _as_bits(b, "b")
    if pa.shape != pb.shape:
        raise ValueError("`a` and `b` must have the same length.")
    if pa.size < 2:
        return pa.copy(), pb.copy()
    cut = int(rng.integers(1, pa.size))
    return (
        np.concatenate([pa[:cut], pb[cut:]]),
        np.concatenate([pb[:cut], pa[cut:]]),
    )


CROSSOVERS = {"uniform": uniform_crossover, "one_point": one_point_crossover}


def bit_flip(
    rng: np.random.Generator, x: np.ndarray, *, probability: float = DEFAULT_MUTATION
) -> np.ndarray:
    """Bit-flip mutation: each bit flips independently with ``probability`` (paper: 0.07)."""
    bits = _as_bits(x, "x")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"`probability` must be in [0, 1], got {probability}.")
    flip = rng.random(bits.size) < probability
    return np.where(flip, 1 - bits, bits).astype(np.int8)


def replace_worst(
    scores: Sequence[float] | np.ndarray,
    active: Sequence[int] | np.ndarray,
    *,
    child_score: float,
    child_active: int,
) -> int | None:
    """Steady-state replacement of one child: the index of the member it replaces, or ``None``.

    The child replaces the population's worst member only when it strictly beats it (ties
    toward fewer active neurons), so the best member is never lost (elitism). Inserting the two
    children of a step one after the other keeps the best two of {two worst, two children},
    the paper's "replace the two worst if better".
    """
    if len(scores) == 0:
        raise ValueError("`scores` must not be empty.")
    worst = int(rank_order(scores, active)[-1])
    if is_better(
        float(child_score),
        int(child_active),
        than_score=float(np.asarray(scores, dtype=float)[worst]),
        than_active=int(np.asarray(active)[worst]),
    ):
        return worst
    return None


def pack(bits: np.ndarray) -> str:
    """A chromosome as a hex string (compact JSON state: 512 bits in 128 characters)."""
    return np.packbits(_as_bits(bits, "bits").astype(np.uint8)).tobytes().hex()


def unpack(text: str, *, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack`."""
    raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    return np.unpackbits(raw, count=n_bits).astype(np.int8)


__all__ = [
    "CROSSOVERS",
    "DEFAULT_FILL",
    "DEFAULT_MUTATION",
    "bit_flip",
    "check_fill",
    "fill_share",
    "hamming",
    "is_better",
    "one_point_crossover",
    "pack",
    "random_chromosome",
    "rank_order",
    "replace_worst",
    "roulette",
    "select_parents",
    "uniform_crossover",
    "unpack",
]
