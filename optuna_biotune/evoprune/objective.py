"""``EvoPruneObjective``: the fitness of EvoPruneDeepTL (Poyatos et al., Neural Networks 2023).

A trial's parameters are one 0/1 int per neuron of the pruned hidden layer(s),
``neuron:<layer>:<index>`` (``neuron:0:017`` is neuron 17 of the first hidden layer). The
objective removes the masked neurons from the head ``features -> 512 -> 512 -> classes``
(:mod:`.head`), trains it on the frozen backbone's cached features (:mod:`.features`) and
returns the best **validation** accuracy (maximise). The test split is never used for fitness
(the authors' code scores fitness on the test split; we do not); :meth:`EvoPruneObjective.final`
scores the best mask on it beside the unpruned head.

Deviations from the paper, measured on this package's CPU setting:

* optimiser Adam, lr 1e-3, batch 128 instead of SGD lr 1e-3 with Nesterov momentum: on the
  cached digits features the paper's SGD needed ~54 epochs (7 s) to reach the accuracy Adam
  reaches in ~7 epochs; ``optimizer="sgd"`` gives the paper's setting;
* early stopping on validation accuracy (patience 3) rather than validation loss: the
  package's one training engine (:func:`optuna_biotune.engine.train.fit`) monitors the metric.

Fitness is memoised by chromosome (paper): a chromosome seen before in this process, or stored
in the study's completed trials (user attr ``chromosome``), returns its value without
training. Training is seeded, so the memo gives exactly the value a retraining would.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optuna_biotune.engine import budget
from optuna_biotune.engine.finetune import MINIMUM
from optuna_biotune.errors import UsageError, check_int
from optuna_biotune.evoprune import head as head_mod
from optuna_biotune.evoprune import operators as ops
from optuna_biotune.evoprune.head import HEAD_BATCH_SIZE, HeadResult

if TYPE_CHECKING:
    import optuna

    from optuna_biotune.engine.data import ArrayDataset
    from optuna_biotune.evoprune.features import FeatureSplits

__all__ = [
    "LAYERS",
    "PARAM_PREFIX",
    "SPEC_ATTR",
    "SPEC_KEYS",
    "EvoPruneObjective",
    "fitness",
    "neuron_param",
    "write_planned_bits",
]

#: Prefix of the neuron parameters: ``neuron:<layer>:<index>``.
PARAM_PREFIX = "neuron"
#: Which hidden layers are pruned: the first only, or both.
LAYERS = ("first", "both")
#: Study user attr with :meth:`EvoPruneObjective.spec` (a resumed run rebuilds the objective).
SPEC_ATTR = "evoprune:spec"
#: Study user attr caching :meth:`EvoPruneObjective.final`'s result.
FINAL_ATTR = "evoprune:final"
OPTIMIZERS = ("adam", "sgd")
#: The settings :meth:`EvoPruneObjective.spec` stores (keywords and attributes of the same name).
SPEC_KEYS = (
    "dataset",
    "model",
    "layers",
    "hidden",
    "image_size",
    "optimizer",
    "lr",
    "batch_size",
    "max_epochs",
    "patience",
    "seed",
    "precision",
)
#: Arithmetic of the head's training: float32, or bfloat16 autocast (matrix products).
PRECISIONS = ("fp32", "bf16")


def neuron_param(layer: int, index: int, *, hidden: int = 512) -> str:
    """Parameter name of neuron ``index`` of hidden layer ``layer`` (zero-padded, sortable)."""
    width = max(3, len(str(hidden - 1)))
    return f"{PARAM_PREFIX}:{layer}:{index:0{width}d}"


def fitness(trial: optuna.trial.FrozenTrial) -> float:
    """A completed trial's validation accuracy (its value: the study has one objective)."""
    if trial.value is None:
        raise UsageError(f"trial {trial.number} has no value; it is not a completed trial.")
    return float(trial.value)


def write_planned_bits(trial: optuna.Trial, names: Sequence[str]) -> int:
    """Store the sampler's planned bits of ``trial`` in one transaction; return how many.

    With a :class:`~optuna_biotune.runtime.workers.WorkerStorage` (every storage the CLI opens)
    and a sampler that plans the bits (``sample_relative``, as ``EvoPruneSampler`` does from the
    first generation on), the bits are written together and put in the trial's own record,
    so the ``suggest_int`` calls that follow find them there and write nothing. Anything else
    (another storage or sampler, a first-generation trial) writes nothing here and the
    ``suggest_int`` calls store the bits one by one, as Optuna does. The values are the ones
    ``suggest_int`` would return either way.
    """
    from optuna.distributions import IntDistribution

    from optuna_biotune.runtime.workers import WorkerStorage

    backend = getattr(trial.storage, "_backend", trial.storage)
    frozen = getattr(trial, "_cached_frozen_trial", None)
    if not isinstance(backend, WorkerStorage) or frozen is None:
        return 0
    distribution = IntDistribution(0, 1)
    relative = trial.relative_params
    space = trial.relative_search_space or {}
    todo = {}
    for name in names:
        if name in frozen.params or name not in relative or name not in space:
            continue
        if space[name] != distribution or relative[name] not in (0, 1):
            return 0  # not plain bits: let suggest_int decide
        todo[name] = int(relative[name])
    if not todo:
        return 0
    backend.set_trial_params(
        trial._trial_id,
        {n: distribution.to_internal_repr(v) for n, v in todo.items()},
        distribution,
    )
    for name, value in todo.items():
        frozen.params[name] = value
        frozen.distributions[name] = distribution
    return len(todo)


class EvoPruneObjective:
    """EvoPruneDeepTL's fitness for ``study.optimize`` (direction ``"maximize"``).

    Example:
        .. code-block:: python

            import optuna
            from optuna_biotune import EvoPruneObjective, EvoPruneSampler

            objective = EvoPruneObjective(dataset="digits")
            study = optuna.create_study(direction="maximize", sampler=EvoPruneSampler(seed=0))
            study.optimize(objective, n_trials=200)
            print(objective.final(study))  # test accuracy of the best mask vs the full head

    Args:
        dataset: A dataset spec of :func:`optuna_biotune.engine.sources.load_dataset` (``digits``,
            ``mnist5k``, a folder, an ``ArrayDataset``, ...).
        model: A backbone name of :func:`optuna_biotune.engine.models.build_model`.
        layers: ``"first"`` (prune the first hidden layer, 512 bits) or ``"both"`` (1024).
        hidden: Width of each hidden layer (paper: 512).
        image_size: Backbone input side (``None``: 64 for the embedded sets, else the
            backbone's pretraining size).
        optimizer: ``"adam"`` (default) or ``"sgd"`` (paper: Nesterov momentum 0.9).
        lr: Learning rate.
        batch_size: Training batch size.
        max_epochs: Upper bound on epochs.
        patience: Early-stopping patience (epochs without a better validation accuracy).
        seed: Seed of the head's initialisation and batch order (the same for every mask, so
            the fitness is a deterministic function of the chromosome).
        device: Where the head trains and the backbone runs (``cpu``, ``cuda``).
        precision: ``"fp32"`` (default) or ``"bf16"``: the head's matrix products in bfloat16
            autocast. On a CPU with AVX512-BF16 (or AMX) an evaluation runs about 1.5x faster
            at the same validation accuracy (``benchmarks/results/evoprune.md``); elsewhere
            it may be slower. Part of the fitness: stored with the study.
        num_threads: Torch CPU threads while training (``None``: leave torch's setting). The
            head is tiny; one thread is fastest on a busy machine, parallelism comes from
            Optuna workers.
        cache_dir: On-disk feature cache (``None``: ``~/.cache/optuna-biotune/features``).
        features: Precomputed :class:`~optuna_biotune.evoprune.features.FeatureSplits`
            (skips the backbone; ``dataset`` and ``model`` are then only labels).
    """

    def __init__(
        self,
        *,
        dataset: str | Path | ArrayDataset = "digits",
        model: str = "efficientnet_lite0",
        layers: str = "first",
        hidden: int = 512,
        image_size: int | None = None,
        optimizer: str = budget.OPTIMIZER,
        lr: float = budget.BASE_LR,
        batch_size: int = HEAD_BATCH_SIZE,  # not budget.BATCH_SIZE (64): the head trains at 128
        max_epochs: int = budget.EPOCHS,
        patience: int = budget.PATIENCE,
        seed: int = 0,
        precision: str = "fp32",
        device: str = "cpu",
        num_threads: int | None = 1,
        cache_dir: str | Path | None = None,
        features: FeatureSplits | None = None,
    ) -> None:
        if layers not in LAYERS:
            raise UsageError(f"`layers` must be one of {list(LAYERS)}, got {layers!r}.")
        if optimizer not in OPTIMIZERS:
            raise UsageError(f"`optimizer` must be one of {list(OPTIMIZERS)}, got {optimizer!r}.")
        if precision not in PRECISIONS:
            raise UsageError(f"`precision` must be one of {list(PRECISIONS)}, got {precision!r}.")
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise UsageError(f"`lr` must be a positive number, got {lr!r}.")
        if image_size is not None:
            check_int("image_size", image_size, MINIMUM["image_size"])
        if num_threads is not None:
            check_int("num_threads", num_threads, 1)
        if not isinstance(model, str) or not model:
            raise UsageError(f"`model` must be a backbone name, got {model!r}.")
        if device not in ("cpu", "cuda", "auto") and not str(device).startswith("cuda:"):
            raise UsageError(f"`device` must be 'cpu', 'cuda' or 'auto', got {device!r}.")
        self.dataset = dataset
        self.model = model
        self.layers = layers
        self.hidden = check_int("hidden", hidden, 1)
        self.image_size = image_size
        self.optimizer = optimizer
        self.lr = float(lr)
        self.batch_size = check_int("batch_size", batch_size, MINIMUM["batch_size"])
        self.max_epochs = check_int("max_epochs", max_epochs, MINIMUM["max_epochs"])
        self.patience = check_int("patience", patience, MINIMUM["patience"])
        self.seed = check_int("seed", seed, 0)
        self.precision = precision
        self.device = device
        self.num_threads = num_threads
        self.cache_dir = cache_dir
        self._features = features
        self._memo: dict[str, float] = {}
        self._memo_seen: dict[int, int] = {}  # study id -> trials scanned
        self._data: tuple[Any, Any, Any] | None = None

    # ---- description

    @property
    def n_layers(self) -> int:
        """Hidden layers pruned (1 or 2)."""
        return 1 if self.layers == "first" else 2

    @property
    def param_names(self) -> list[str]:
        """The parameter names, layer by layer, neuron by neuron (the chromosome's order)."""
        return [
            neuron_param(layer, i, hidden=self.hidden)
            for layer in range(self.n_layers)
            for i in range(self.hidden)
        ]

    def spec(self) -> dict[str, Any]:
        """JSON-able settings that rebuild this objective (study attr ``evoprune:spec``)."""
        spec = {key: getattr(self, key) for key in SPEC_KEYS}
        dataset = self.dataset if isinstance(self.dataset, str | Path) else "arrays"
        return {**spec, "dataset": str(dataset)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], **kwargs: Any) -> EvoPruneObjective:
        """Rebuild an objective from :meth:`spec` (``kwargs``: device, cache_dir, ...)."""
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise UsageError(f"{unknown} are not EvoPrune settings; a spec has {list(SPEC_KEYS)}.")
        return cls(**spec, **kwargs)

    # ---- data

    @property
    def features(self) -> FeatureSplits:
        """The backbone features (computed or loaded on first use)."""
        if self._features is None:
            from optuna_biotune.evoprune.features import load_features

            device = self._device()
            self._features = load_features(
                dataset=self.dataset,
                model=self.model,
                image_size=self.image_size,
                cache_dir=self.cache_dir,
                device=device,
            )
        return self._features

    def _device(self) -> str:
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _splits(self) -> tuple[Any, Any, Any]:
        if self._data is None:
            from optuna_biotune.engine.data import TensorData

            f = self.features
            self._data = (
                TensorData(f.train_x, f.train_y),
                TensorData(f.val_x, f.val_y),
                TensorData(f.test_x, f.test_y),
            )
        return self._data

    # ---- masks

    def masks_from_params(self, params: Mapping[str, Any]) -> list[np.ndarray]:
        """The 0/1 mask of each pruned layer from a trial's parameters."""
        bits = np.array([int(params[n]) for n in self.param_names], dtype=np.int8)
        return list(bits.reshape(self.n_layers, self.hidden))

    def _head_masks(self, masks: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        return [masks[0], masks[1] if self.n_layers == 2 else None]

    def train(
        self, masks: Sequence[np.ndarray], *, seed: int | None = None, test: bool = False
    ) -> HeadResult:
        """Train the head pruned by ``masks`` (one per pruned layer); a :class:`HeadResult`."""
        train, val, test_data = self._splits()
        f = self.features
        s = self.seed if seed is None else seed
        with head_mod.threads(self.num_threads):
            head = head_mod.build_head(
                in_features=f.dim,
                num_classes=f.num_classes,
                masks=self._head_masks(masks),
                hidden=self.hidden,
                seed=s,
            )
            return head_mod.train_head(
                head,
                train=train,
                val=val,
                test=test_data if test else None,
                optimizer=self.optimizer,
                lr=self.lr,
                batch_size=self.batch_size,
                max_epochs=self.max_epochs,
                patience=self.patience,
                seed=s,
                device=self._device(),
                bf16=self.precision == "bf16",
            )

    # ---- the objective

    def _memo_lookup(self, study: optuna.Study, key: str) -> float | None:
        if key in self._memo:
            return self._memo[key]
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(trials) != self._memo_seen.get(study._study_id, -1):
            for t in trials:
                chromosome = t.user_attrs.get("chromosome")
                if isinstance(chromosome, str) and not t.user_attrs.get("invalid", False):
                    self._memo.setdefault(chromosome, fitness(t))
            self._memo_seen[study._study_id] = len(trials)
        return self._memo.get(key)

    def __call__(self, trial: optuna.Trial) -> float:
        """Suggest the neuron bits, train the pruned head, return the validation accuracy."""
        started = time.perf_counter()
        names = self.param_names
        write_planned_bits(trial, names)
        bits = np.array([trial.suggest_int(name, 0, 1) for name in names], dtype=np.int8)
        masks = list(bits.reshape(self.n_layers, self.hidden))
        active = [int(m.sum()) for m in masks]
        key = ops.pack(bits)
        trial.set_user_attr("chromosome", key)
        trial.set_user_attr("active", active)
        trial.set_user_attr("active_share", sum(active) / bits.size)
        if min(active) == 0:  # a layer without neurons cannot classify: worst fitness
            trial.set_user_attr("invalid", True)
            return 0.0
        value = self._memo_lookup(trial.study, key)
        if value is not None:
            trial.set_user_attr("memoised", True)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            return value
        cpu = time.process_time()
        result = self.train(masks)
        self._memo[key] = result.val_accuracy
        trial.set_user_attr("train_cpu_seconds", time.process_time() - cpu)
        trial.set_user_attr("memoised", False)
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("train_seconds", result.seconds)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return result.val_accuracy

    # ---- the final score

    def best_trial(self, study: optuna.Study) -> optuna.trial.FrozenTrial:
        """The best completed trial: highest value, ties toward fewer active neurons (paper)."""
        from optuna.trial import TrialState

        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and all(n in t.params for n in self.param_names)
        ]
        if not done:
            raise UsageError("the study has no completed EvoPrune trial; run the search first.")
        return min(done, key=lambda t: (-fitness(t), sum(t.user_attrs.get("active", [0]))))

    def final(self, study: optuna.Study, *, seeds: Sequence[int] = (0, 1, 2)) -> dict[str, Any]:
        """Test accuracy of the best mask beside the unpruned head, each over ``seeds``.

        Both heads are trained exactly as in the search (train split, early stopping on the
        validation split) with each training seed and scored once on the test split; each
        reports ``test_accuracy`` (mean) and ``test_accuracy_stderr`` (standard error over
        seeds, :func:`optuna_biotune.engine.seeds.mean_sem`, as BioTune's ``final`` and the
        baselines).
        """
        from optuna_biotune.engine.seeds import mean_sem

        if not seeds:
            raise UsageError("`seeds` must name at least one training seed.")
        best = self.best_trial(study)
        masks = self.masks_from_params(best.params)
        full = [np.ones(self.hidden, dtype=np.int8) for _ in range(self.n_layers)]
        pruned_runs = [self.train(masks, seed=s, test=True) for s in seeds]
        full_runs = [self.train(full, seed=s, test=True) for s in seeds]
        active = [int(m.sum()) for m in masks]

        def summary(runs: list[Any]) -> dict[str, Any]:
            tests = [float(r.test_accuracy) for r in runs]
            vals = [float(r.val_accuracy) for r in runs]
            mean, stderr = mean_sem(tests)
            return {
                "test_accuracy": mean,
                "test_accuracy_stderr": stderr,
                "test_accuracies": tests,
                "val_accuracy": float(np.mean(vals)),
            }

        return {
            "best_trial": best.number,
            "best_value": fitness(best),
            "active": active,
            "active_share": sum(active) / (self.hidden * self.n_layers),
            "neurons": self.hidden * self.n_layers,
            "seeds": [int(s) for s in seeds],
            "pruned": summary(pruned_runs),
            "unpruned": summary(full_runs),
        }
