"""The fidelity of a BioTune evaluation, and how the search treats values below full fidelity.

BioTune's fitness (Colan et al. 2025, Sec. III-C) is the mean over the spec's seeds of the best
validation accuracy, each seed trained to its early stop (or to the epoch limit) on the spec's
data fraction: that is **full fidelity**, defined once here (:func:`full_fidelity`). Anything
that stops an evaluation sooner (racing, the epoch pruner, and later multi-fidelity rungs)
leaves a value *below* full fidelity: the mean of what it measured, with fewer seeds and a
last seed stopped early, so it is biased low and not comparable with full values.

Every evaluation records its fidelity in the trial user attr ``fidelity``
(:func:`fidelity_record`); readers ask :func:`is_full`. The population's rules for such values
(BioIK's memetic evolution, Starke et al. 2019, Sec. IV, as :mod:`.memetic` runs it) are here
too, so that the sampler, racing and the report apply the same ones:

- **ranks** (:func:`rank_key`): a partial member ranks below every full member (among
  partial members, by value). A cut evaluation was stopped because its estimate fell below
  its bar (the fitness it had to beat to change a decision, :mod:`.racing`), so the search
  already judged it out of the running; its low value must not decide where it stands among
  full values, nor lift a full member above it by accident of how early it was cut;
- **comparisons** (:func:`beats`): only a full value beats another value. A partial child
  never removes a parent from the mating pool or wins a wipeout vote, a partial neighbour
  never replaces its elite. A full value is compared with a partial one by value: the partial
  value is low (its last seed stopped early), so a full value that does not beat it would
  most likely not beat its full evaluation either;
- **extinction factors** (:func:`extinction`): ``f_min``, ``f_max`` and the ranks of BioIK's
  formula come from the full members only (one cut member with a low accuracy must not shrink
  every factor, and so the mutation strength); a partial member gets factor 1, the worst's,
  as it ranks last.

With every value at full fidelity these are BioIK's rules exactly. No torch, no Optuna: the
sampler side imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optuna_biotune.biotune.operators import extinction_factors

#: Trial user attr of every evaluation: :func:`fidelity_record`.
FIDELITY_ATTR = "fidelity"
#: How one seed's training ended: its early stop (patience) ...
STOP_PATIENCE = "patience"
#: ... the epoch limit ...
STOP_LIMIT = "limit"
#: ... or a cut before either (racing, the pruner, a rung).
STOP_CUT = "cut"
#: The stops that leave a seed at full fidelity.
COMPLETE_STOPS = (STOP_PATIENCE, STOP_LIMIT)

__all__ = [
    "COMPLETE_STOPS",
    "FIDELITY_ATTR",
    "STOP_CUT",
    "STOP_LIMIT",
    "STOP_PATIENCE",
    "beats",
    "extinction",
    "fidelity_record",
    "full_fidelity",
    "is_full",
    "only_seeds_missing",
    "rank_key",
    "seed_stop",
]


def seed_stop(*, epochs_run: int, max_epochs: int) -> str:
    """How a seed that trained to its end stopped: the epoch limit, else its early stop."""
    return STOP_LIMIT if epochs_run >= max_epochs else STOP_PATIENCE


def full_fidelity(
    *,
    stops: Sequence[str],
    n_seeds: int,
    data_fraction: float,
    spec_data_fraction: float,
    invalid: bool = False,
) -> bool:
    """Whether an evaluation ran at full fidelity: every one of the spec's ``n_seeds`` seeds
    trained to its early stop or the epoch limit (``stops``, one per seed trained) on the
    spec's data fraction.

    An invalid individual (no block trains, paper eq. 4) trains nothing at any fidelity: its
    value, the worst fitness, is exact, so it counts as full.
    """
    if invalid:
        return True
    return (
        len(stops) == n_seeds
        and all(s in COMPLETE_STOPS for s in stops)
        and float(data_fraction) == float(spec_data_fraction)
    )


def fidelity_record(
    *,
    stops: Sequence[str],
    epochs: Sequence[int],
    n_seeds: int,
    max_epochs: int,
    data_fraction: float,
    spec_data_fraction: float,
    invalid: bool = False,
) -> dict[str, Any]:
    """The user attr ``fidelity`` of an evaluation.

    Args:
        stops: Per seed trained (the last one possibly cut), how it stopped: ``patience``,
            ``limit`` or ``cut``.
        epochs: Epochs each of those seeds ran.
        n_seeds: Seeds of the spec.
        max_epochs: The epoch limit.
        data_fraction: Share of the train and validation splits it trained and validated on.
        spec_data_fraction: The spec's share.
        invalid: Nothing trained: no block above the threshold.

    Returns:
        ``{"seeds", "of", "epochs", "stops", "max_epochs", "data_fraction", "full"}``:
        seeds trained of the spec's, per seed epochs and stop, and :func:`full_fidelity`.
    """
    return {
        "seeds": len(stops),
        "of": int(n_seeds),
        "epochs": [int(e) for e in epochs],
        "stops": [str(s) for s in stops],
        "max_epochs": int(max_epochs),
        "data_fraction": float(data_fraction),
        "full": full_fidelity(
            stops=stops,
            n_seeds=n_seeds,
            data_fraction=data_fraction,
            spec_data_fraction=spec_data_fraction,
            invalid=invalid,
        ),
    }


def is_full(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a trial's value is at full fidelity, from its user attrs.

    The ``fidelity`` record's ``full``; a trial without one predates the record, when racing
    was the only cut (user attr ``raced``). Trials of other objectives (no such attrs) are full.
    """
    record = user_attrs.get(FIDELITY_ATTR)
    if isinstance(record, Mapping) and "full" in record:
        return bool(record["full"])
    return not user_attrs.get("raced")


def only_seeds_missing(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a trial's value is below full fidelity only because seeds are missing: every
    seed it trained ended by its early stop or the epoch limit (a first seed that was not
    promoted), so training the others would bring it to full fidelity (``final`` re-scores
    such values)."""
    record = user_attrs.get(FIDELITY_ATTR)
    if not isinstance(record, Mapping) or record.get("full"):
        return False
    stops = record.get("stops") or []
    return bool(stops) and all(stop in COMPLETE_STOPS for stop in stops)


def rank_key(fitness: float, full: bool) -> tuple[bool, float]:
    """Sort key of a member (minimised fitness): partial members after every full one."""
    return (not full, fitness)


def beats(fitness: float, full: bool, other: float) -> bool:
    """Whether a value (minimised ``fitness``, at full fidelity or not) beats ``other``: only
    a full value beats, and by value (module docstring)."""
    return full and fitness < other


def extinction(losses: Sequence[float] | np.ndarray, full: Sequence[bool]) -> np.ndarray:
    """BioIK's extinction factors (:func:`~.operators.extinction_factors`) of a population with
    partial members: the full members' among themselves, 1 for a partial member. With no full
    member the partial values are all there is, and are used as they are."""
    f = np.asarray(losses, dtype=float)
    ok = np.asarray(full, dtype=bool)
    if ok.all() or not ok.any():
        return extinction_factors(f)
    out = np.ones(f.size)
    out[ok] = extinction_factors(f[ok])
    return out
