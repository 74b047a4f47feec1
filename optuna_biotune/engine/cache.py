"""Frozen-prefix activation cache (issue 3, "Speed").

When the leading blocks of a model are frozen, their output is a fixed function of the input
(frozen parameters, batch norm in eval mode, see ``train.set_frozen_eval``). The cache
computes it once per data split and fold and reuses it across epochs, seeds and every trial
whose frozen prefix reaches at least as deep: a deeper cut is computed from the deepest cached
shallower one. Entries are evicted least-recently-used to stay within ``max_bytes``; an
activation larger than the bound is not cached (the caller trains from the images instead).

Saved per training run: the forward of the prefix on every training and validation image in
every epoch. With ``F`` the forward FLOPs of a part and backward ~ 2 forward, the predicted
speed-up of an epoch is ``(F_prefix + 3 F_suffix) / (3 F_suffix)``, measured in
``benchmarks/objective_speed.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from optuna_biotune.engine.data import TensorData
from optuna_biotune.errors import UsageError


@dataclass
class CacheStats:
    """Counters: ``hits`` (served as stored), ``misses`` (computed), ``extended`` (computed
    from a shallower cached cut), ``evictions``, ``skipped`` (too large to keep)."""

    hits: int = 0
    misses: int = 0
    extended: int = 0
    evictions: int = 0
    skipped: int = 0


def run_chain(
    chain: Sequence[nn.Module],
    data: TensorData,
    *,
    start: int,
    stop: int,
    batch_size: int = 256,
    bf16: bool = False,
) -> TensorData:
    """Outputs of stages ``start:stop`` of ``chain`` on every row of ``data``, in eval mode.

    The result is float features (used as they are by ``TensorData.batch``), on the device of
    ``data``; labels are shared.
    """
    modes = [m.training for m in chain[start:stop]]
    for m in chain[start:stop]:
        m.eval()
    outs = []
    try:
        with torch.no_grad(), torch.autocast(data.device.type, torch.bfloat16, enabled=bf16):
            for i in range(0, len(data), batch_size):
                x, _ = data.batch(slice(i, i + batch_size))
                for stage in chain[start:stop]:
                    x = stage(x)
                outs.append(x)
    finally:
        for m, mode in zip(chain[start:stop], modes, strict=True):
            m.train(mode)
    return TensorData(torch.cat(outs).contiguous(), data.y)


class ActivationCache:
    """Prefix activations keyed by ``(data key, cut)``, within a memory bound.

    Args:
        max_bytes: Upper bound on the bytes of all stored activations.

    Example:
        >>> cache = ActivationCache(max_bytes=2**30)  # doctest: +SKIP
        >>> feats = cache.features(("train", 0), fold_data, chain, cut=3)  # doctest: +SKIP
    """

    def __init__(self, *, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise UsageError(f"`max_bytes` must be an integer >= 0, got {max_bytes!r}.")
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._store: OrderedDict[tuple[Hashable, int], TensorData] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return sum(_nbytes(v) for v in self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: tuple[Hashable, int]) -> bool:
        return key in self._store

    def clear(self) -> None:
        """Drop every entry (e.g. when the prefix weights change)."""
        self._store.clear()

    def features(
        self,
        key: Hashable,
        data: TensorData,
        chain: Sequence[nn.Module],
        cut: int,
        *,
        batch_size: int = 256,
        bf16: bool = False,
    ) -> TensorData | None:
        """Output of ``chain[:cut]`` on ``data`` (identified by ``key``), cached.

        Returns ``None`` when the activation is larger than ``max_bytes`` (then nothing is
        stored and the caller should run the whole chain).
        """
        if len(data) == 0:
            raise UsageError("cannot cache activations of an empty split; give it images.")
        if not 0 < cut <= len(chain):
            raise UsageError(f"`cut` must be in 1..{len(chain)}, got {cut}.")
        entry = self._store.get((key, cut))
        if entry is not None:
            self._store.move_to_end((key, cut))
            self.stats.hits += 1
            return entry
        shallower = [c for (k, c) in self._store if k == key and c < cut]
        if shallower:
            start = max(shallower)
            source = self._store[(key, start)]
            self._store.move_to_end((key, start))
            self.stats.extended += 1
        else:
            start, source = 0, data
            self.stats.misses += 1
        probe = run_chain(chain, source.subset([0]), start=start, stop=cut, bf16=bf16)
        if _nbytes(probe) * len(source) > self.max_bytes:  # too large: do not compute it all
            self.stats.skipped += 1
            return None
        out = run_chain(chain, source, start=start, stop=cut, batch_size=batch_size, bf16=bf16)
        size = _nbytes(out)
        while self._store and self.nbytes + size > self.max_bytes:
            self._store.popitem(last=False)
            self.stats.evictions += 1
        self._store[(key, cut)] = out
        return out


def _nbytes(data: TensorData) -> int:
    return data.x.numel() * data.x.element_size()


__all__ = ["ActivationCache", "CacheStats", "run_chain"]
