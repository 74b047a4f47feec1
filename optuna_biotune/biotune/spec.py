"""Declarative study specs: one TOML file per experiment, every ``search`` option settable there.

:class:`StudySpec` declares every setting once (:func:`.settings.setting`: its help, its TOML
table, its option group); the command line's options, the TOML tables, the setting stored in
the study (``biotune:spec``) and the keywords of :class:`~optuna_biotune.BioTuneObjective` and
:class:`~optuna_biotune.BioTuneSampler` all derive from its fields and carry their names. Every
key is optional and falls back to the embedded default (:data:`DEFAULT_TOML`, the same text as
``studies/default.toml``)::

    [study]       name, storage, artifacts
    [objective]   dataset, model, partition, seeds, data_fraction, max_epochs, patience,
                  batch_size, base_lr, optimizer, metric, device, image_size, exact_protocol
    [search]      population_size, n_elites, exploit_step, wipeout, seed, generations, n_jobs
    [final]       after_search, top_k, final_seeds
    [report]      out

Command-line options override the spec (``optuna-biotune search SPEC.toml --max-epochs 3``).
Relative paths in a spec (``storage = "sqlite:///x.db"``, ``artifacts``, ``report.out``, an
ImageFolder ``dataset``) are resolved against the spec file's folder, so a study's database
and artifacts land beside the spec that made them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from optuna_biotune.biotune.memetic import evaluations_per_generation
from optuna_biotune.biotune.settings import (
    float_number,
    non_negative_int,
    prefixes,
    setting,
    settings,
)
from optuna_biotune.biotune.validate import SPEC_MIN_ELITES, validate
from optuna_biotune.engine import budget
from optuna_biotune.engine.finetune import DEFAULT_CACHE_BYTES, MINIMUM
from optuna_biotune.engine.seeds import MIN_SEEDS, final_seed_list, resolve_seeds
from optuna_biotune.errors import UsageError
from optuna_biotune.evolution.base import MIN_POPULATION

#: The embedded default study: digits + ImageNet-pretrained EfficientNet-Lite0 on the CPU,
#: a budget that searches and retrains in under two minutes on two CPU cores.
DEFAULT_TOML = """\
# The embedded default study of `optuna-biotune search` (no argument): scikit-learn's digits
# (1,797 real 8x8 digits, shipped with scikit-learn) on ImageNet-pretrained EfficientNet-Lite0,
# on the CPU, with a budget that searches and then retrains in about two minutes on two cores.
# The paper's budget is population 10, 3 elites, 10 generations, 3 seeds, 30 epochs.

[study]
name = "default"
# storage = "sqlite:///studies/default.db"   # default: sqlite:///<spec folder>/<name>.db

[objective]
dataset = "digits"
model = "efficientnet_lite0"
seeds = 1
data_fraction = 0.5
max_epochs = 4
patience = 2
batch_size = 64
base_lr = 1e-3
optimizer = "adam"
metric = "accuracy"
device = "cpu"
image_size = 32
# true: every evaluation trained in full with every seed (the paper's protocol, for
# reproductions); false: multi-fidelity, full fidelity only where it can change the search.
exact_protocol = false

[search]
population_size = 6
n_elites = 2
generations = 2
exploit_step = 0.25
# BioIK's wipeout (not in the authors' BioTune): a generation that improved nothing keeps
# only its best and draws the rest afresh. Off: it never helped in 6 measured searches and
# once cost 5.4 test points (benchmarks/results/comparison.md, "Wipeout on and off").
wipeout = false
n_jobs = 1
seed = 0

[final]
after_search = true
# The headline is the top-1 by validation against FT; retraining only it keeps the main job
# within two minutes (`final --top-k 5` retrains more of the same study afterwards).
top_k = 1
final_seeds = 3
"""


_place = partial(setting, stored=False, resumable=True)
_objective = partial(setting, table="objective", group="objective")
_search = partial(setting, table="search", group="search")
_run = partial(setting, table="search", group="run", resumable=True)
_final = partial(setting, table="final", group="final", resumable=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudySpec:
    """Everything one BioTune experiment needs: the study, the objective, the search budget.

    Each field is one setting, with one name: the keyword of the class that takes it, the TOML
    key (in the table its metadata names) and the option (``-`` for ``_``).
    """

    # [study]: names and places, not stored as settings
    study: str = _place(
        "default", "study name (default: the spec's, else 'default')", table="study", key="name"
    )
    storage: str | None = _place(
        None,
        "Optuna storage URL (default: sqlite:///studies/<study>.db beside the spec)",
        table="study",
    )
    artifacts: str | None = _place(
        None, "artifact folder (default: studies/artifacts beside the database)", table="study"
    )
    # [objective]: BioTuneObjective's keywords
    dataset: str = _objective(
        "digits", "digits, mnist5k, a torchvision name, or an ImageFolder path"
    )
    model: str = _objective("efficientnet_lite0", "backbone, e.g. efficientnet_lite0, resnet50")
    partition: Sequence[str | Sequence[str]] | None = _objective(
        None,
        "blocks as comma-separated module-name prefixes (default: the model's)",
        parse=prefixes,
    )
    seeds: int | Sequence[int] = _objective(
        3,
        "seeds per fitness evaluation (a count: the authors' 684, 559, 629 first)",
        parse=non_negative_int,
    )
    data_fraction: float = _objective(
        0.5, "data fraction per generation (0, 1]", parse=float_number
    )
    max_epochs: int = _objective(
        budget.EPOCHS,
        "maximum epochs per training run",
        flags=("--epochs",),
        parse=non_negative_int,
        low=MINIMUM["max_epochs"],
    )
    patience: int = _objective(
        budget.PATIENCE,
        "early-stopping patience in epochs",
        parse=non_negative_int,
        low=MINIMUM["patience"],
    )
    batch_size: int = _objective(
        budget.BATCH_SIZE, "batch size", parse=non_negative_int, low=MINIMUM["batch_size"]
    )
    base_lr: float = _objective(
        budget.BASE_LR, "base learning rate (scaled by 0.1-10)", parse=float_number
    )
    optimizer: str = _objective(budget.OPTIMIZER, "adam or sgd", choices=("adam", "sgd"))
    metric: str = _objective(
        budget.METRIC, "accuracy or macro (mean per-class recall)", choices=("accuracy", "macro")
    )
    device: str = _objective("auto", "auto, cpu or cuda", resumable=True)
    image_size: int | None = _objective(None, "input side in pixels", parse=non_negative_int)
    exact_protocol: bool = _objective(
        False,
        "train every evaluation in full with every seed (the paper's protocol; default: "
        "multi-fidelity, full fidelity only where it can change the search, see "
        "docs/search-cost.md)",
        parse=bool,
    )
    # BioTuneObjective's keywords the Python API alone sets (memory, compilation, pruning)
    cache_bytes: int = setting(
        DEFAULT_CACHE_BYTES,
        "memory bound of the frozen-prefix activation cache",
        table="objective",
        python_only=True,
        low=MINIMUM["cache_bytes"],
    )
    use_cache: bool = setting(
        True,
        "train from cached prefix activations",
        table="objective",
        python_only=True,
        parse=bool,
    )
    compile: bool = setting(
        False, "train through torch.compile", table="objective", python_only=True, parse=bool
    )
    prune: bool = setting(
        False,
        "let the study's pruner stop an evaluation",
        table="objective",
        python_only=True,
        parse=bool,
    )
    # [search]: BioTuneSampler's keywords
    population_size: int = _search(
        10,
        "population size",
        flags=("--population",),
        parse=non_negative_int,
        low=MIN_POPULATION,
    )
    n_elites: int = _search(
        3,
        "elites per generation",
        flags=("--elites",),
        parse=non_negative_int,
        low=SPEC_MIN_ELITES,
    )
    exploit_step: float = _search(0.25, "exploitation perturbation (0.25)", parse=float_number)
    wipeout: bool = _search(
        False,
        "BioIK's wipeout: re-draw all but the best after a generation that improved nothing "
        "(not in the authors' BioTune)",
        parse=bool,
    )
    seed: int | None = _search(None, "sampler seed (reproducible proposals)", parse=int)
    # [search]: the worker loop's
    generations: int = _run(10, "generations after the first", parse=non_negative_int, low=0)
    n_jobs: int = _run(1, "parallel trials in this process", parse=non_negative_int, low=1)
    # [final]
    after_search: bool = _final(
        False,
        "run `final` after the search (default: the spec's [final] after_search)",
        flags=("--final",),
        parse=bool,
    )
    top_k: int = _final(5, "configurations to retrain (5)", parse=non_negative_int, low=1)
    final_seeds: int = _final(
        3, "seeds of the final retraining (3)", parse=non_negative_int, low=MIN_SEEDS
    )
    # [report]
    out: str | None = _place(
        None, "output folder (default: studies/reports/<study>)", table="report"
    )
    # Folder of the spec file (relative paths resolve against it); cwd's studies/ otherwise.
    base_dir: str = "studies"

    def __post_init__(self) -> None:
        validate(self)

    # -- derived values -------------------------------------------------------------------
    @property
    def storage_url(self) -> str:
        """The storage URL: the spec's, else ``sqlite:///<base_dir>/<study>.db``."""
        if self.storage:
            return self.storage
        return f"sqlite:///{Path(self.base_dir) / f'{self.study}.db'}"

    @property
    def home(self) -> Path:
        """Where the study's files land: beside its SQLite database, else ``base_dir``."""
        url = self.storage_url
        if url.startswith("sqlite:///") and url[len("sqlite:///") :] not in ("", ":memory:"):
            return Path(url[len("sqlite:///") :]).parent
        return Path(self.base_dir)

    @property
    def artifact_dir(self) -> str:
        """Folder of the Optuna artifacts (Fig. 2, HTML report, final results).

        One folder per storage folder, shared by its studies (artifact ids are UUIDs), so one
        dashboard serves every study of a database.
        """
        if self.artifacts:
            return self.artifacts
        return str(self.home / "artifacts")

    @property
    def report_dir(self) -> str:
        """Folder the ``report`` command writes its PNG, HTML and JSON into."""
        if self.out:
            return self.out
        return str(self.home / "reports" / self.study)

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The fitness seeds: the first ``seeds`` of the paper's, then 1, 2, 3, ... (or the
        listed ones)."""
        return tuple(resolve_seeds(self.seeds))

    @property
    def final_seed_list(self) -> tuple[int, ...]:
        """The seeds of the final retraining (``[final] final_seeds``): 1001, 1002, ..."""
        return final_seed_list(self.final_seeds)

    @property
    def evaluations(self) -> int:
        """Fitness evaluations of the whole search (paper: 10 + 10 x 13 = 140).

        Generation 0 evaluates the population; every later generation exploits each elite
        twice and makes ``population_size - n_elites`` children.
        """
        return self.population_size + self.generations * evaluations_per_generation(
            self.population_size, self.n_elites
        )

    def objective_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`optuna_biotune.BioTuneObjective` for this spec."""
        kwargs = {f.name: getattr(self, f.name) for f in settings(self, table="objective")}
        kwargs["seeds"] = self.seed_list
        return kwargs

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`optuna_biotune.BioTuneSampler` for this spec."""
        return {f.name: getattr(self, f.name) for f in settings(self, group="search")}

    def stored(self) -> dict[str, Any]:
        """The settings kept in the study (``biotune:spec``), JSON-able, seeds as a list."""
        out = {f.name: getattr(self, f.name) for f in settings(self, stored=True)}
        out["seeds"] = list(self.seed_list)
        return out

    def replace(self, **changes: Any) -> StudySpec:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise UsageError(
                f"unknown spec field(s) {unknown}; see optuna_biotune.biotune.spec.StudySpec."
            )
        return dataclasses.replace(self, **changes)

    def to_toml_dict(self) -> dict[str, dict[str, Any]]:
        """The spec as TOML tables (the inverse of :func:`spec_from_dict`; None left out)."""
        out: dict[str, dict[str, Any]] = {}
        for (table, key), field in SECTIONS.items():
            value = getattr(self, field)
            if value is not None:
                out.setdefault(table, {})[key] = value
        return out


#: (TOML table, key) -> StudySpec field: every setting but the Python API's own.
SECTIONS: dict[tuple[str, str], str] = {
    (f.metadata["table"], f.metadata["key"] or f.name): f.name
    for f in settings(StudySpec, python_only=False)
}


def _resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative paths of a spec file relative to the spec's folder."""
    out = dict(values)
    storage = out.get("storage")
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :]
        if path and not Path(path).is_absolute() and path != ":memory:":
            out["storage"] = f"sqlite:///{base / path}"
    for key in ("artifacts", "out"):
        if isinstance(out.get(key), str) and not Path(out[key]).is_absolute():
            out[key] = str(base / out[key])
    dataset = out.get("dataset")
    if (
        isinstance(dataset, str)
        and ("/" in dataset or dataset.startswith("."))
        and not Path(dataset).expanduser().is_absolute()
    ):
        out["dataset"] = str(base / dataset)
    return out


def spec_from_dict(
    data: Mapping[str, Any], *, base_dir: str | Path = "studies", source: str = "spec"
) -> StudySpec:
    """Build a :class:`StudySpec` from TOML tables, refusing unknown tables and keys.

    Args:
        data: The parsed TOML document (tables ``study``, ``objective``, ``search``, ``final``,
            ``report``).
        base_dir: Folder relative paths resolve against (the spec file's folder).
        source: Name of the document in error messages.

    Raises:
        UsageError: An unknown table or key, or a value of the wrong type or range.
    """
    tables = {t for t, _ in SECTIONS}
    values: dict[str, Any] = {}
    for table, content in data.items():
        if table not in tables:
            raise UsageError(f"{source}: unknown table [{table}]; use one of {sorted(tables)}.")
        if not isinstance(content, Mapping):
            raise UsageError(f"{source}: `{table}` must be a table like [{table}].")
        for key, value in content.items():
            field = SECTIONS.get((table, key))
            if field is None:
                known = sorted(k for t, k in SECTIONS if t == table)
                raise UsageError(f"{source}: unknown key `{table}.{key}`; use one of {known}.")
            values[field] = value
    base = Path(base_dir)
    values = _resolve_paths(values, base)
    try:
        return StudySpec(base_dir=str(base), **values)
    except UsageError as err:
        raise UsageError(f"{source}: {err}") from None
    except TypeError as err:  # pragma: no cover - every field has a default
        raise UsageError(f"{source}: {err}") from None


def spec_from_stored(data: Mapping[str, Any], base: StudySpec, *, source: str) -> StudySpec:
    """``base`` with the settings a study stores (:meth:`StudySpec.stored`, ``biotune:spec``).

    Raises:
        UsageError: A key that is no stored setting, or a bad value.
    """
    known = {f.name for f in settings(StudySpec, stored=True)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"{source}: unknown stored settings {unknown}; was it made by `search`?")
    try:
        return dataclasses.replace(base, **data)
    except UsageError as err:
        raise UsageError(f"{source}: {err}") from None


def default_spec(*, base_dir: str | Path = "studies") -> StudySpec:
    """The embedded default study (:data:`DEFAULT_TOML`)."""
    return spec_from_dict(tomllib.loads(DEFAULT_TOML), base_dir=base_dir, source="default spec")


def load_spec(path: str | Path) -> StudySpec:
    """Read a TOML study spec; its relative paths resolve against the file's folder.

    Raises:
        UsageError: The file is missing, is not valid TOML, or has an unknown or bad value.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"spec file {str(p)!r} does not exist; pass the path of a .toml spec.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(
            f"spec file {str(p)!r} is not valid TOML ({first}); fix its syntax."
        ) from None
    return spec_from_dict(data, base_dir=p.parent, source=str(p))


__all__ = [
    "DEFAULT_TOML",
    "SECTIONS",
    "StudySpec",
    "default_spec",
    "load_spec",
    "spec_from_dict",
    "spec_from_stored",
]
