"""The BioTune genotype: ``B + 1`` importance genes and one freezing threshold (paper eq. 2-5).

Pure NumPy; no torch. Every consumer of genes (the objective, ``final``, the reports) decodes
them here so there is one definition of the mask and the learning-rate weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Prefix of the parameter name of a block's importance gene: ``importance:<block>``.
IMPORTANCE_PREFIX = "importance:"
#: Parameter name of the freezing-threshold gene, the last of the ``B + 2`` genes.
THRESHOLD_PARAM = "threshold"


def importance_param(block: str) -> str:
    """Return the parameter name of ``block``'s importance gene (``importance:<block>``)."""
    return f"{IMPORTANCE_PREFIX}{block}"


def gene_names(blocks: Sequence[str]) -> list[str]:
    """Return the ``B + 2`` parameter names for ``blocks``: importances, then the threshold."""
    if len(blocks) == 0:
        raise ValueError("`blocks` must name at least one block.")
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"`blocks` must be unique, got {list(blocks)}.")
    return [importance_param(b) for b in blocks] + [THRESHOLD_PARAM]


def lr_weight(gene: float | np.ndarray) -> np.ndarray:
    """Importance weight ``W_b = 10 ** (2 * (gene_b - 0.5))`` in ``[0.1, 10]`` (paper eq. 5)."""
    return np.power(10.0, 2.0 * (np.asarray(gene, dtype=float) - 0.5))


def decode(genes: Sequence[float] | np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Decode importance genes and the freezing threshold into (trained mask, LR weights).

    Args:
        genes: The ``B + 1`` importance genes in ``[0, 1]``, one per block.
        threshold: The freezing threshold ``eps_f`` in ``[0, 1]``.

    Returns:
        ``mask``: a boolean array, ``True`` where block ``b`` is fine-tuned, i.e.
        ``gene_b > eps_f`` strictly (paper eq. 4); ``weights``: ``S_b * W_b``, the
        learning-rate multiplier of each block, ``0`` for frozen blocks (paper eq. 2, 5).
    """
    g = np.asarray(genes, dtype=float)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"`genes` must be a non-empty 1-D sequence, got shape {g.shape}.")
    if not (np.all(np.isfinite(g)) and np.isfinite(threshold)):
        raise ValueError("`genes` and `threshold` must be finite numbers.")
    mask = g > float(threshold)  # eq. 4: S_b = 1 iff nu_b > eps_f
    weights = np.where(mask, lr_weight(g), 0.0)  # eq. 2 and 5: eta_b = S_b * W_b
    return mask, weights


def decode_params(
    params: Mapping[str, float], blocks: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a trial's ``params`` (named by :func:`gene_names`) for ``blocks``."""
    missing = [n for n in gene_names(blocks) if n not in params]
    if missing:
        raise KeyError(f"params lack the genes {missing}; expected the names from gene_names().")
    genes = [params[importance_param(b)] for b in blocks]
    return decode(genes, params[THRESHOLD_PARAM])


def is_valid(mask: np.ndarray) -> bool:
    """An individual is valid when it trains at least one block (a gene above the threshold,
    paper eq. 2-5)."""
    return bool(np.any(mask))
