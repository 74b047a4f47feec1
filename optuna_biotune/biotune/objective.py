"""``BioTuneObjective``: the fitness of a BioTune individual, as an Optuna objective.

The Optuna adapter on the engine's fine-tuner (:class:`optuna_biotune.engine.finetune.FineTuner`).
For a trial it suggests the ``B + 2`` genes (``importance:<block>`` .., ``threshold``), decodes
them (:func:`.genome.decode`: block ``b`` trains iff ``gene_b > threshold``, at
``lr_b = base_lr * 10 ** (2 * (gene_b - 0.5))``, paper eq. 2, 4, 5), takes the generation's
stratified fold (``generation mod ceil(1 / data_fraction)``, paper Sec. III-C; the fold policy
is written once in :mod:`optuna_biotune.biotune.memetic`), fine-tunes once per seed from the
pretrained weights and returns the mean over seeds of the best validation accuracy (maximise;
the paper minimises ``1 - acc``).

Decisions the paper leaves open:

- **The new head always trains** (:meth:`.FineTuner.plan`); its rate is still
  ``base_lr * W_head`` from its own gene (eq. 5). The recorded ``mask`` and ``lr_weights`` show
  what was trained; ``head_forced`` says when the head's gene was at or below the threshold.
- **Invalid individuals** (no block above the threshold, head included) are not trained: they
  get the worst fitness, accuracy ``0.0``, and the user attr ``invalid=True``.
- **Multi-fidelity** (default; ``exact_protocol=True`` turns it off): the first seed climbs
  rungs (epochs 2 and 6, the top third of the study's first seeds goes on), and only a
  candidate whose first seed reaches its bar in the population is promoted to the other seeds
  (:mod:`optuna_biotune.biotune.rungs`), which are raced; a configuration already evaluated
  at full fidelity on the same fold is reused (:mod:`optuna_biotune.biotune.racing`); the user
  attrs ``raced`` and ``memoised`` say so.
- **Fidelity**: every evaluation records in the user attr ``fidelity`` the seeds it trained,
  each one's epochs and how it stopped (early stop, epoch limit, or cut), the epoch limit, the
  data fraction, and ``full`` (:mod:`optuna_biotune.biotune.fidelity`); a memoised one
  inherits the record of the trial it reused. Values below full fidelity never feed the
  population's statistics uncorrected, nor ``final``'s top-k.
- **A NaN training loss** fails the trial: the reason is stored in the user attr
  ``fail_reason`` and the objective returns NaN, which Optuna records as a failed trial while
  the search goes on.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from optuna_biotune.biotune import fidelity, genome, racing, rungs
from optuna_biotune.biotune.attrs import OBJECTIVE_SPEC_ATTR
from optuna_biotune.biotune.settings import settings
from optuna_biotune.biotune.spec import StudySpec
from optuna_biotune.engine.finetune import FineTuner
from optuna_biotune.engine.seeds import AUTHOR_SEEDS, resolve_seeds
from optuna_biotune.errors import RuntimeFailure, UsageError
from optuna_biotune.evolution import trial_generation

#: Keys of :meth:`BioTuneObjective.spec`, the constructor's arguments: the ``[objective]``
#: settings of :class:`~optuna_biotune.biotune.spec.StudySpec`, in its order.
SPEC_KEYS = tuple(f.name for f in settings(StudySpec, table="objective"))
#: The attribute that holds a setting, where its name differs from the keyword's.
_ATTRIBUTE = {"model": "model_name", "device": "device_name"}


class BioTuneObjective:
    """Fitness of a BioTune individual: mean best validation accuracy over seeds.

    It holds a :class:`~optuna_biotune.engine.finetune.FineTuner` (:attr:`tuner`), which gets
    the fine-tuner's settings (``dataset`` to ``compile`` below) as given, with its defaults
    (written there only). The keywords are the ``[objective]`` settings of
    :class:`~optuna_biotune.biotune.spec.StudySpec`: the same names as the study spec's keys
    and the ``search`` command's options.

    Args:
        dataset: ``digits`` (default), ``mnist5k``, a torchvision dataset name, an ImageFolder
            directory, or a ``data.ArrayDataset`` (see ``data.load_dataset``).
        model: Backbone name (``models.available_models``), default ``efficientnet_lite0``.
        partition: Block partition (``None``: the model family's default, see ``blocks``).
        seeds: Number of seeds (the authors' 684, 559, 629 first) or a list of seeds.
        data_fraction: Share ``p`` of the train and val splits per generation (paper 0.5);
            folds are ``ceil(1 / p)``.
        max_epochs: Epoch limit per training run (paper 30).
        patience: Early-stopping patience on the validation metric (paper 3).
        batch_size: Training batch size (paper 64-96).
        base_lr: Base learning rate, scaled per block by ``W_b`` (paper 1e-3).
        optimizer: ``"adam"`` (paper) or ``"sgd"``.
        metric: ``"accuracy"`` or ``"macro"`` (mean per-class recall, the authors' choice).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        image_size: Image side; ``None``: 32 for ``digits``/``mnist5k`` (8x8 digits upscaled
            4x: seconds per evaluation on a CPU), else the backbone's pretraining size.
        cache_bytes: Memory bound of the frozen-prefix activation cache.
        use_cache: Train from cached prefix activations (same results; off for benchmarks).
        compile: Train through ``torch.compile`` (GPU).
        prune: Let the study's pruner stop an evaluation (each seed's epochs are reported as
            steps ``seed_index * max_epochs + epoch``). Off by default: the paper trains every
            individual to its early stop, and Optuna's default ``MedianPruner`` (which
            ``optuna.create_study`` installs unless told otherwise) would otherwise cut about
            half of a small search's evaluations. Epochs are reported either way, so the
            dashboard shows the curves. To prune, pass ``prune=True`` and choose the pruner
            in ``optuna.create_study(pruner=...)``.
        exact_protocol: Train every evaluation with every seed to its early stop (the paper's
            protocol, for reproductions). Off by default: the first seed climbs rungs and
            only a candidate that can still change the population's elites trains the other
            seeds (:mod:`~optuna_biotune.biotune.rungs`), promoted seeds are raced, and a
            configuration already evaluated on the same fold is not trained again
            (:mod:`~optuna_biotune.biotune.racing`); every value below full fidelity says so
            (:mod:`~optuna_biotune.biotune.fidelity`); ``benchmarks/results/comparison.md``
            measures it. Stored in the study at the first evaluation; a study searched with
            the other protocol is refused.

    Example:
        >>> import optuna
        >>> from optuna_biotune import BioTuneObjective
        >>> objective = BioTuneObjective(dataset="digits", seeds=1, max_epochs=2)
        >>> study = optuna.create_study(direction="maximize")
        >>> study.optimize(objective, n_trials=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        dataset: Any = "digits",
        model: str = "efficientnet_lite0",
        seeds: int | Sequence[int] = AUTHOR_SEEDS,
        prune: bool = False,
        exact_protocol: bool = False,
        **settings: Any,
    ) -> None:
        self.seeds = resolve_seeds(seeds)
        #: The fine-tuner every evaluation trains with (one model, built on first use).
        self.tuner = FineTuner(dataset=dataset, model=model, **settings)
        self.prune = bool(prune)
        if not isinstance(exact_protocol, bool):
            raise UsageError(f"`exact_protocol` must be true or false, got {exact_protocol!r}.")
        self.exact_protocol = exact_protocol
        # Studies checked, per storage object (weakly: an id() can be reused once a study's
        # storage is gone, which skipped the check for a new in-memory study).
        self._protocol_checked: weakref.WeakKeyDictionary[Any, set[int]] = (
            weakref.WeakKeyDictionary()
        )

    # -- what the search and ``final`` read of the fine-tuner ---------------------------------

    @property
    def max_epochs(self) -> int:
        """Epoch limit per training run."""
        return self.tuner.max_epochs

    @property
    def data_fraction(self) -> float:
        """Share of the train and val splits per generation."""
        return self.tuner.data_fraction

    @property
    def n_folds(self) -> int:
        """Folds of the data, ``ceil(1 / data_fraction)``."""
        return self.tuner.n_folds

    @property
    def blocks(self) -> list[str]:
        """Block names, in the genes' order (builds the model on first use)."""
        return self.tuner.blocks

    def retrain_and_test(
        self, mask: Sequence[bool], weights: Sequence[float], *, seeds: Sequence[int]
    ) -> list[float]:
        """``final``'s retraining (:meth:`.FineTuner.retrain_and_test`)."""
        return self.tuner.retrain_and_test(mask, weights, seeds=seeds)

    def rescore(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """Train the seeds an evaluation left out (a first seed that was not promoted,
        :mod:`~optuna_biotune.biotune.rungs`), each to its early stop, on the evaluation's fold,
        and return its value at full fidelity: ``{"seed_accuracies", "epochs", "fidelity",
        "value", "seconds"}`` (``final`` stores it, :func:`.final.run_final`)."""
        started = time.perf_counter()
        mask = [bool(m) for m in trial.user_attrs["mask"]]
        weights = [float(w) for w in trial.user_attrs["lr_weights"]]
        fold = int(trial.user_attrs.get("fold", 0))
        accs = [float(a) for a in trial.user_attrs.get("seed_accuracies", [])]
        epochs = [int(e) for e in trial.user_attrs.get("epochs", [])]
        stops = [fidelity.seed_stop(epochs_run=e, max_epochs=self.max_epochs) for e in epochs]
        train, val = self.tuner.fold("train", fold), self.tuner.fold("val", fold)
        for seed in self.seeds[len(accs) :]:
            result = self.tuner.train_config(
                mask, weights, seed=seed, train=train, val=val, data_key=("fold", fold)
            )
            accs.append(float(result.best_val_metric))
            epochs.append(int(result.epochs_run))
            stops.append(
                fidelity.seed_stop(epochs_run=result.epochs_run, max_epochs=self.max_epochs)
            )
        return {
            "seed_accuracies": accs,
            "epochs": epochs,
            "fidelity": self._fidelity(None, stops, epochs),
            "value": float(np.mean(accs)),
            "seconds": round(time.perf_counter() - started, 2),
        }

    # ------------------------------------------------------------------ spec round trip

    def spec(self) -> dict[str, Any]:
        """The constructor's arguments as a JSON-able dict (stored in the study)."""
        from optuna_biotune.engine.data import ArrayDataset

        if isinstance(self.tuner.dataset, ArrayDataset):
            raise UsageError(
                "an objective on in-memory arrays has no storable spec; save the images as an "
                "ImageFolder directory to resume or run `final` from the storage."
            )
        partition = self.tuner.partition_spec
        if isinstance(partition, Mapping):
            partition = {
                str(k): ([v] if isinstance(v, str) else list(v)) for k, v in partition.items()
            }
        elif partition is not None:
            partition = [p if isinstance(p, str) else list(p) for p in partition]
        own = {
            "dataset": str(self.tuner.dataset),
            "partition": partition,
            "seeds": list(self.seeds),
            "prune": self.prune,
            "exact_protocol": self.exact_protocol,
        }
        return {
            key: own[key] if key in own else getattr(self.tuner, _ATTRIBUTE.get(key, key))
            for key in SPEC_KEYS
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BioTuneObjective:
        """Rebuild the objective from :meth:`spec` (unknown keys are a usage error)."""
        if not isinstance(spec, Mapping):
            raise UsageError(f"`spec` must be a dict from BioTuneObjective.spec(), got {spec!r}.")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise UsageError(
                f"`spec` has unknown keys {unknown}; it must come from BioTuneObjective.spec()."
            )
        return cls(**dict(spec))

    @property
    def param_names(self) -> list[str]:
        """The ``B + 2`` parameter names: ``importance:<block>`` .., ``threshold``."""
        return genome.gene_names(self.blocks)

    def __call__(self, trial: optuna.Trial) -> float:
        """Suggest the genes, fine-tune per seed on the generation's fold, return the fitness."""
        started = time.perf_counter()
        self._check_protocol(trial.study)
        names = self.param_names
        params = {name: trial.suggest_float(name, 0.0, 1.0) for name in names}
        genes_mask, genes_weights = genome.decode_params(params, self.blocks)
        generation = trial_generation(trial)
        fold = generation % self.n_folds
        trial.set_user_attr("blocks", self.blocks)
        trial.set_user_attr("generation", int(generation))
        trial.set_user_attr("fold", int(fold))
        if not genome.is_valid(genes_mask):
            trial.set_user_attr("invalid", True)
            trial.set_user_attr("mask", [False] * len(self.blocks))
            trial.set_user_attr("lr_weights", [0.0] * len(self.blocks))
            trial.set_user_attr("trainable_params", 0)
            trial.set_user_attr("total_params", int(self.tuner.total_params))
            trial.set_user_attr("trainable_share", 0.0)
            trial.set_user_attr("seed_accuracies", [])
            trial.set_user_attr("epochs", [])
            self._fidelity(trial, [], [], invalid=True)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            return 0.0
        head_gene = params[genome.importance_param(self.blocks[self.tuner.head_index])]
        planned, planned_weights, forced = self.tuner.plan(
            genes_mask.tolist(),
            genes_weights.tolist(),
            head_weight=float(genome.lr_weight(head_gene)),
        )
        mask = [bool(m) for m in planned]
        weights = [float(w) for w in planned_weights]
        trainable = self.tuner.trainable_params(mask)
        trial.set_user_attr("mask", mask)
        trial.set_user_attr("lr_weights", weights)
        trial.set_user_attr("head_forced", bool(forced))
        trial.set_user_attr("trainable_params", trainable)
        trial.set_user_attr("total_params", int(self.tuner.total_params))
        trial.set_user_attr("trainable_share", trainable / self.tuner.total_params)
        race: racing.Race | None = None
        schedule: rungs.Rungs | None = None
        bar: racing.Bar | None = None
        if not self.exact_protocol:
            same = racing.find_same(
                trial.study, mask=mask, weights=weights, fold=fold, n_seeds=len(self.seeds)
            )
            if same is not None:  # the same computation again: reuse its result
                trial.set_user_attr(racing.MEMO_ATTR, same.number)
                trial.set_user_attr("seed_accuracies", same.user_attrs["seed_accuracies"])
                trial.set_user_attr("epochs", same.user_attrs.get("epochs", []))
                trial.set_user_attr(fidelity.FIDELITY_ATTR, self._reused_fidelity(same))
                trial.set_user_attr("seconds", time.perf_counter() - started)
                return float(np.mean(same.user_attrs["seed_accuracies"]))
            bar = racing.entry_bar(trial, trial.study)
            race = racing.Race.for_trial(
                trial, bar=bar, n_seeds=len(self.seeds), max_epochs=self.max_epochs
            )
            schedule = rungs.Rungs.for_trial(trial, max_epochs=self.max_epochs)
        train, val = self.tuner.fold("train", fold), self.tuner.fold("val", fold)
        accs: list[float] = []
        epochs: list[int] = []
        stops: list[str] = []  # how each seed stopped (`fidelity`)
        for k, seed in enumerate(self.seeds):
            best = [float("-inf"), 0]  # the running seed's best so far, epochs run

            def report(epoch: int, value: float, k: int = k, best: list = best) -> None:
                trial.report(value, k * self.max_epochs + epoch)
                best[0], best[1] = max(best[0], value), epoch
                last = k == len(self.seeds) - 1 and epoch == self.max_epochs
                if k == 0 and schedule is not None:  # the first seed climbs the rungs
                    if schedule.cut(epoch, best[0]):
                        raise racing.Cut
                elif race is not None and not last and race.cut(accs, best[0], epoch):
                    raise racing.Cut  # (the very last epoch has nothing left to save)
                if self.prune and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at seed {k + 1}, epoch {epoch}")

            if (  # the first seed trained to its end: promoted to the other seeds?
                k == 1
                and schedule is not None
                and not schedule.promote(accs[0], bar, role=racing.slot_role(trial))
            ):
                return self._cut(
                    trial, schedule, accs, epochs, stops, seed=k + 1, epoch=0, t0=started
                )
            if race is not None and k > 0 and race.cut(accs):
                return self._cut(trial, race, accs, epochs, stops, seed=k + 1, epoch=0, t0=started)
            try:
                result = self.tuner.train_config(
                    mask,
                    weights,
                    seed=seed,
                    train=train,
                    val=val,
                    data_key=("fold", fold),
                    report=report,
                )
            except RuntimeFailure as exc:
                trial.set_user_attr("fail_reason", str(exc))
                trial.set_user_attr("seconds", time.perf_counter() - started)
                return float("nan")
            except racing.Cut:
                accs.append(float(best[0]))
                epochs.append(int(best[1]))
                stops.append(fidelity.STOP_CUT)
                cutter = schedule if k == 0 and schedule is not None else race
                assert cutter is not None
                return self._cut(
                    trial, cutter, accs, epochs, stops, seed=k + 1, epoch=int(best[1]), t0=started
                )
            except optuna.TrialPruned:
                self._fidelity(trial, [*stops, fidelity.STOP_CUT], [*epochs, int(best[1])])
                raise
            accs.append(float(result.best_val_metric))
            epochs.append(int(result.epochs_run))
            stops.append(
                fidelity.seed_stop(epochs_run=result.epochs_run, max_epochs=self.max_epochs)
            )
            trial.set_user_attr("seed_accuracies", accs)
            trial.set_user_attr("epochs", epochs)
        self._fidelity(trial, stops, epochs)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return float(np.mean(accs))

    def _fidelity(
        self,
        trial: optuna.Trial | None,
        stops: Sequence[str],
        epochs: Sequence[int],
        *,
        invalid: bool = False,
    ) -> dict[str, Any]:
        """The evaluation's fidelity (:func:`.fidelity.fidelity_record`: ``stops`` and
        ``epochs`` per seed trained, on the spec's data fraction), recorded as ``trial``'s user
        attr ``fidelity`` unless ``trial`` is ``None``."""
        record = fidelity.fidelity_record(
            stops=stops,
            epochs=epochs,
            n_seeds=len(self.seeds),
            max_epochs=self.max_epochs,
            data_fraction=self.data_fraction,
            spec_data_fraction=self.data_fraction,
            invalid=invalid,
        )
        if trial is not None:
            trial.set_user_attr(fidelity.FIDELITY_ATTR, record)
        return record

    def _reused_fidelity(self, same: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """The fidelity a memoised evaluation inherits: the reused trial's record (one from
        before the record: it was full, :func:`.racing.find_same`, its seeds ended by the
        epoch limit or their early stop)."""
        record = same.user_attrs.get(fidelity.FIDELITY_ATTR)
        if isinstance(record, Mapping):
            return dict(record)
        epochs = [int(e) for e in same.user_attrs.get("epochs", [])]
        stops = [fidelity.seed_stop(epochs_run=e, max_epochs=self.max_epochs) for e in epochs]
        return self._fidelity(None, stops, epochs)

    def _check_protocol(self, study: optuna.Study) -> None:
        """Store the settings in a study that has none (:meth:`spec`, or ``exact_protocol``
        alone for in-memory data) on first use; refuse a study searched with the other
        protocol."""
        checked = self._protocol_checked.setdefault(study._storage, set())
        if study._study_id in checked:
            return
        stored = study.user_attrs.get(OBJECTIVE_SPEC_ATTR)
        if not isinstance(stored, dict) or "exact_protocol" not in stored:
            from optuna_biotune.engine.data import ArrayDataset

            mine = (
                {"exact_protocol": self.exact_protocol}
                if isinstance(self.tuner.dataset, ArrayDataset)
                else self.spec()
            )
            stored = {**mine, **(stored if isinstance(stored, dict) else {})}
            study.set_user_attr(OBJECTIVE_SPEC_ATTR, stored)
        if bool(stored["exact_protocol"]) != self.exact_protocol:
            raise UsageError(
                f"study {study.study_name!r} was searched with exact_protocol="
                f"{str(bool(stored['exact_protocol'])).lower()}; continue it with "
                f"BioTuneObjective(exact_protocol={bool(stored['exact_protocol'])}) (a search "
                "cannot mix the two protocols) or use another study."
            )
        checked.add(study._study_id)

    def _cut(
        self,
        trial: optuna.Trial,
        race: racing.Race | rungs.Rungs,
        accs: list[float],
        epochs: list[int],
        stops: list[str],
        *,
        seed: int,
        epoch: int,
        t0: float,
    ) -> float:
        """Complete a raced evaluation with the mean of what it measured (below its bar)."""
        trial.set_user_attr(
            racing.RACED_ATTR,
            {
                "seed": seed,
                "epoch": epoch,
                "bar": race.bar.value,
                "against": race.bar.against,
                "bound": race.bound,
            },
        )
        trial.set_user_attr("seed_accuracies", accs)
        trial.set_user_attr("epochs", epochs)
        self._fidelity(trial, stops, epochs)
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        return float(np.mean(accs))


__all__ = ["SPEC_KEYS", "BioTuneObjective"]
