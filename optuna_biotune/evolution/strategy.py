"""The types a generation strategy works with: individuals, slot plans, openings, and the
strategy interface itself (:class:`GenerationStrategy`). No storage, no torch."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass


__all__ = ["ROLE_INITIAL", "Assignment", "GenerationStrategy", "Individual", "Opening", "SlotPlan"]

#: Role of a slot whose genes are all drawn by :meth:`GenerationStrategy.initial_x`.
ROLE_INITIAL = "initial"


@dataclass(frozen=True)
class Individual:
    """A completed evaluation as the strategy sees it.

    Attributes:
        number: The trial number.
        x: Genes in ``[0, 1]``, in the order of the generation's ``names``.
        fitness: The value, *minimised* (negated for ``maximize`` studies).
        generation: The generation whose slot the trial filled.
        slot: That slot.
        role: The slot's role (``initial``, ``exploit``, ``child``, ...).
        parents: Trial numbers of the parents the slot was made from.
        full: Whether the value is at the objective's full fidelity
            (:meth:`GenerationStrategy.full_fidelity` of the trial's user attrs); a strategy
            must not let a value below it decide a comparison uncorrected.
    """

    number: int
    x: np.ndarray
    fitness: float
    generation: int
    slot: int
    role: str
    parents: tuple[int, ...] = ()
    full: bool = True


@dataclass(frozen=True)
class SlotPlan:
    """What one slot proposes: a role, parents and genes (``None``: all drawn at claim time).

    ``deferred=True`` marks a slot whose plan is only decided when a trial claims it, by
    :meth:`GenerationStrategy.plan_slot`, from the results of the generation's slots completed
    by then (BioTune's children: a parent leaves the mating pool once a child beats it).
    """

    role: str
    parents: tuple[int, ...] = ()
    x: tuple[float, ...] | None = None
    deferred: bool = False


@dataclass(frozen=True)
class Opening:
    """A strategy's decision when a generation opens: its population state and its slots."""

    state: dict[str, Any]
    slots: list[SlotPlan]


class GenerationStrategy(abc.ABC):
    """Decides the slots of each generation (BioTune's memetic scheme, EvoPrune's steady state).

    Implementations are deterministic functions of their arguments: all randomness comes from
    ``rng(slot)`` (or ``rng(-1)`` for generation-level choices), so any process computes the
    same opening from the same storage.
    """

    @abc.abstractmethod
    def open(
        self,
        *,
        generation: int,
        names: Sequence[str],
        state: Mapping[str, Any] | None,
        results: Sequence[Individual],
        rng: Callable[[int], np.random.Generator],
    ) -> Opening:
        """Open ``generation``.

        Args:
            generation: The number of the generation being opened (0 for the first).
            names: The evolved parameters, the order of every ``x``; empty while no trial has
                completed (then every slot must be ``initial``).
            state: The previous generation's ``Opening.state`` (``None`` for generation 0).
            results: Completed evaluations not seen before: the previous generation's slots
                and late results of older generations.
            rng: ``rng(slot)`` gives the random generator of a slot, ``rng(-1)`` the
                generation's own.

        Returns:
            The new population state (JSON-serialisable) and the slots.
        """

    def initial_x(self, slot_rng: np.random.Generator, gene_rng: np.random.Generator) -> float:
        """A gene of an ``initial`` slot (or an unplanned parameter) in ``[0, 1]``: ``U[0, 1]``.

        ``slot_rng`` is the same for every gene of the slot (e.g. a per-individual fill ratio);
        ``gene_rng`` is specific to the gene.
        """
        return float(gene_rng.random())

    def draw_gene(
        self,
        name: str,
        drawn: Mapping[str, float],
        slot_rng: np.random.Generator,
        gene_rng: np.random.Generator,
    ) -> float:
        """An unplanned gene ``name`` in ``[0, 1]``, knowing the genes the trial ``drawn`` so far.

        Called for each float/int parameter that the slot does not plan, in the order the
        objective asks for them; ``drawn`` maps the trial's earlier parameters to ``[0, 1]``.
        The default ignores them: :meth:`initial_x`. A strategy overrides it to keep a rule
        that ties genes together (BioTune redraws the threshold of an invalid individual).
        """
        return self.initial_x(slot_rng, gene_rng)

    def full_fidelity(self, user_attrs: Mapping[str, Any]) -> bool:
        """Whether a completed trial's value, known by its user attrs, is at full fidelity
        (:attr:`Individual.full`). The default: every value is."""
        return True

    def plan_slot(
        self,
        *,
        generation: int,
        slot: int,
        names: Sequence[str],
        state: Mapping[str, Any] | None,
        plan: SlotPlan,
        siblings: Sequence[Individual],
        rng: np.random.Generator,
    ) -> SlotPlan:
        """Decide a ``deferred`` slot's plan when a trial claims it (default: ``plan`` as is).

        Args:
            generation: The slot's generation.
            slot: The slot.
            names: The evolved parameters (the order of every ``x``).
            state: The generation's ``Opening.state``.
            plan: The slot as :meth:`open` planned it.
            siblings: The generation's completed evaluations so far, by trial number. In a
                sequential run these are exactly the slots before this one; with parallel
                workers, siblings still running are not among them.
            rng: The slot's random generator (the same as ``rng(slot)`` in :meth:`open`).

        Returns:
            The slot's plan (not deferred); its role and parents go into the trial's claim.
        """
        return plan


@dataclass(frozen=True)
class Assignment:
    """The slot a trial fills and its planned genes (by parameter name, in ``[0, 1]``)."""

    generation: int
    slot: int
    role: str
    parents: tuple[int, ...]
    x: dict[str, float] = field(default_factory=dict)
