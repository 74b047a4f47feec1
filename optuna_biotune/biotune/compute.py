"""What a BioTune study has spent on training so far, in view while it runs (issue 22).

Three figures, read from the trials' user attrs (``seconds``, ``epochs``) and the stored
objective spec (``biotune:spec``: seeds and epoch limit):

- **training time**: the seconds the evaluations took (wall seconds of each evaluation, every
  trial that trained, failed and pruned ones included);
- **epochs trained against the exact protocol's ceiling**: every seed of every finished
  evaluation trained to the epoch limit (evaluations x seeds x epoch limit; paper Sec. III-C
  trains each seed to its early stop, so even the exact protocol stays below it);
- **FT runs**, once one full-data FT run has been timed in the study (``final``'s FT reference,
  stored as :data:`~optuna_biotune.biotune.attrs.FT_UNIT_ATTR` by :func:`record_ft_unit`, or a
  benchmark calling it): the training time over one FT run's seconds.

No torch: the CLI's progress bar and summary, ``report`` and the benchmarks read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna_biotune.biotune.attrs import FT_UNIT_ATTR, OBJECTIVE_SPEC_ATTR

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def record_ft_unit(study: optuna.Study, *, seconds: float, source: str) -> None:
    """Store the wall seconds of one full-data FT run (lr ``base_lr``, every block trained,
    the study's per-run budget) as the study's unit of compute."""
    study.set_user_attr(FT_UNIT_ATTR, {"seconds": round(float(seconds), 3), "source": source})


class Compute:
    """Training compute of a study, kept up to date one finished trial at a time.

    Args:
        n_seeds: Seeds of a full evaluation (the objective spec's).
        max_epochs: The epoch limit of one seed.
        ft_seconds: Wall seconds of one full-data FT run, if one was timed.
    """

    def __init__(self, *, n_seeds: int, max_epochs: int, ft_seconds: float | None) -> None:
        self.n_seeds = n_seeds
        self.max_epochs = max_epochs
        self.ft_seconds = ft_seconds
        self.seconds = 0.0
        self.epochs = 0
        self.evaluations = 0
        self._seen: set[int] = set()

    @classmethod
    def of_study(cls, study: optuna.Study) -> Compute:
        """The study's compute from all its trials (one scan)."""
        spec = study.user_attrs.get(OBJECTIVE_SPEC_ATTR) or {}
        unit = study.user_attrs.get(FT_UNIT_ATTR) or {}
        seeds = spec.get("seeds") or [0]
        compute = cls(
            n_seeds=len(seeds),
            max_epochs=int(spec.get("max_epochs") or 0),
            ft_seconds=float(unit["seconds"]) if unit.get("seconds") else None,
        )
        for trial in study.get_trials(deepcopy=False):
            compute.add(trial)
        return compute

    def add(self, trial: FrozenTrial) -> None:
        """Count one finished trial (a trial already counted, or still running, is skipped)."""
        from optuna.trial import TrialState

        if trial.number in self._seen or not trial.state.is_finished():
            return
        self._seen.add(trial.number)
        self.seconds += float(trial.user_attrs.get("seconds") or 0.0)
        self.epochs += int(sum(trial.user_attrs.get("epochs") or []))
        if trial.state == TrialState.COMPLETE:
            self.evaluations += 1

    @property
    def ceiling(self) -> int:
        """Epochs of the exact protocol's ceiling: evaluations x seeds x epoch limit."""
        return self.evaluations * self.n_seeds * self.max_epochs

    @property
    def ft_runs(self) -> float | None:
        """Training time in full-data FT runs (``None`` before one was timed)."""
        return self.seconds / self.ft_seconds if self.ft_seconds else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON (``--json`` reports them)."""
        out: dict[str, Any] = {
            "training_seconds": round(self.seconds, 1),
            "epochs_trained": self.epochs,
            "epochs_ceiling": self.ceiling,
            "evaluations": self.evaluations,
        }
        if self.ft_runs is not None:
            out["ft_runs"] = round(self.ft_runs, 2)
            out["ft_run_seconds"] = self.ft_seconds
        out["summary"] = self.line().removeprefix("compute: ")
        return out

    def postfix(self) -> dict[str, str]:
        """Short figures for a progress bar's postfix."""
        out = {"train": _duration(self.seconds), "epochs": f"{self.epochs}/{self.ceiling}"}
        if self.ft_runs is not None:
            out["FT runs"] = f"{self.ft_runs:.1f}"
        return out

    def line(self) -> str:
        """One summary line."""
        share = f" ({100 * self.epochs / self.ceiling:.0f} %)" if self.ceiling else ""
        text = (
            f"compute: {_duration(self.seconds)} of training, {self.epochs} epochs of the exact "
            f"protocol's ceiling of {self.ceiling}{share}"
        )
        if self.ft_runs is not None:
            text += f", {self.ft_runs:.1f} full-data FT runs ({self.ft_seconds:.1f} s each)"
        return text


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
