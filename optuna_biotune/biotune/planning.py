"""How many slots of each kind a BioTune generation has, and the rule for a short population.

A generation after the first breeds from the population it opens with (BioIK, Starke et al.
2019, Sec. IV): two exploitation slots per elite and ``population_size - n_elites`` children.

**A short population breeds too; the missing members are refilled as extra slots of the same
generation.** A generation opens short of ``population_size`` members when slots of earlier
generations were lost: their trial was killed, preempted or interrupted after its generation
had moved on (the others never wait), a slot used up its attempts, or a straggler still runs
elsewhere. It still breeds from the members in hand (exploitation of up to ``n_elites`` of
them, ``population_size - n_elites`` children) and adds ``population_size - members`` fresh
individuals (role ``initial``) as extra slots after the others, so the generation is larger
rather than a separate top-up, and no planned generation (nor a fold rotation) is spent on
refilling the population: the next opening keeps the best ``population_size`` of the elites,
children, fresh individuals and late stragglers. A lost slot itself is still evaluated before
the search ends (``Generations.reissue``), its result kept in the study but no longer bred from.

A generation consists of fresh individuals only at the start (nothing evolvable yet, or no
member at all) and after a wipeout (all but the best re-initialised). When no slot is lost
the population is full and the generation is BioIK's exactly (no extra slot).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Composition", "compose"]


@dataclass(frozen=True)
class Composition:
    """The slots of a generation, in this order: two exploitation slots per elite exploited,
    the children (bred when claimed), then the fresh individuals."""

    elites: int
    children: int
    fresh: int


def compose(
    *, members: int, population_size: int, n_elites: int, wiped: bool, evolvable: bool
) -> Composition:
    """The slots of the generation that opens with ``members`` members (module docstring).

    Args:
        members: Members of the population the generation opens with (at most
            ``population_size``).
        population_size: The planned population.
        n_elites: Elites exploited per generation.
        wiped: The opening wiped the population out (``members`` is the best alone).
        evolvable: The evolved genes are known (some trial completed with them).
    """
    if not evolvable or wiped or members == 0:
        # A fresh population (nothing to breed from), or BioIK's wipeout: all but the best
        # drawn afresh. (Nothing evolvable with a full population: a whole fresh one.)
        fresh = population_size - members or population_size
        return Composition(elites=0, children=0, fresh=fresh)
    return Composition(
        elites=min(n_elites, members),
        children=population_size - n_elites,
        fresh=max(population_size - members, 0),
    )
