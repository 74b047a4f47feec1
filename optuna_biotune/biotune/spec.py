"""Declarative study specs: one TOML file per experiment, every CLI option settable there.

A spec has five tables; every key is optional and falls back to the embedded default
(:data:`DEFAULT_TOML`, the same text as ``studies/default.toml``)::

    [study]       name, storage, artifacts
    [objective]   dataset, model, partition, seeds, data_fraction, epochs, patience,
                  batch_size, base_lr, optimizer, metric, device, image_size,
                  exact_protocol
    [search]      population, elites, generations, exploit_step, wipeout, n_jobs, seed
    [final]       after_search, top_k, seeds
    [report]      out

Command-line options override the spec (``optuna-biotune search SPEC.toml --epochs 3``).
Relative paths in a spec (``storage = "sqlite:///x.db"``, ``artifacts``, ``report.out``, an
ImageFolder ``dataset``) are resolved against the spec file's folder, so a study's database
and artifacts land beside the spec that made them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optuna_biotune.biotune.attrs import API_ONLY_SPEC_KEYS, OBJECTIVE_SPEC_KEYS
from optuna_biotune.biotune.memetic import (
    check_elites,
    check_exploit_step,
    evaluations_per_generation,
)
from optuna_biotune.engine import budget
from optuna_biotune.engine.finetune import MINIMUM, check_base_lr
from optuna_biotune.engine.seeds import MIN_SEEDS, final_seed_list, seed_list
from optuna_biotune.errors import UsageError, check_int
from optuna_biotune.evolution.base import MIN_POPULATION

#: The embedded default study: digits + ImageNet-pretrained EfficientNet-Lite0 on the CPU,
#: a budget that searches and retrains in under two minutes on two CPU cores.
DEFAULT_TOML = """\
# The embedded default study of `optuna-biotune search` (no argument): scikit-learn's digits
# (1,797 real 8x8 digits, shipped with scikit-learn) on ImageNet-pretrained EfficientNet-Lite0,
# on the CPU, with a budget that searches and then retrains in under two minutes on two cores.
# The paper's budget is population 10, 3 elites, 10 generations, 3 seeds, 30 epochs.

[study]
name = "default"
# storage = "sqlite:///studies/default.db"   # default: sqlite:///<spec folder>/<name>.db

[objective]
dataset = "digits"
model = "efficientnet_lite0"
seeds = 1
data_fraction = 0.5
epochs = 4
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
population = 6
elites = 2
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
seeds = 3
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudySpec:
    """Everything one BioTune experiment needs: the study, the objective, the search budget.

    Field names are the CLI's option names with ``-`` as ``_``; :data:`SECTIONS` says which
    TOML table each lives in.
    """

    # [study]
    study: str = "default"
    storage: str | None = None
    artifacts: str | None = None
    # [objective]
    dataset: str = "digits"
    model: str = "efficientnet_lite0"
    partition: list[str | list[str]] | None = None
    seeds: int = 3
    data_fraction: float = 0.5
    epochs: int = budget.EPOCHS
    patience: int = budget.PATIENCE
    batch_size: int = budget.BATCH_SIZE
    base_lr: float = budget.BASE_LR
    optimizer: str = budget.OPTIMIZER
    metric: str = budget.METRIC
    device: str = "auto"
    image_size: int | None = None
    exact_protocol: bool = False
    # [search]
    population: int = 10
    elites: int = 3
    generations: int = 10
    exploit_step: float = 0.25
    wipeout: bool = False
    n_jobs: int = 1
    seed: int | None = None
    # [final]
    final: bool = False
    top_k: int = 5
    final_seeds: int = 3
    # [report]
    out: str | None = None
    # Folder of the spec file (relative paths resolve against it); cwd's studies/ otherwise.
    base_dir: str = "studies"

    def __post_init__(self) -> None:
        _validate(self)

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
        """The fitness seeds: the first ``seeds`` of the paper's, then 1, 2, 3, ..."""
        return seed_list(self.seeds)

    @property
    def final_seed_list(self) -> tuple[int, ...]:
        """The seeds of the final retraining (``[final] seeds``): 1001, 1002, 1003, ..."""
        return final_seed_list(self.final_seeds)

    @property
    def evaluations(self) -> int:
        """Fitness evaluations of the whole search (paper: 10 + 10 x 13 = 140).

        Generation 0 evaluates the population; every later generation exploits each elite
        twice and makes ``population - elites`` children.
        """
        return self.population + self.generations * evaluations_per_generation(
            self.population, self.elites
        )

    def objective_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`optuna_biotune.BioTuneObjective` for this spec."""
        kwargs = {arg: getattr(self, field) for field, arg in OBJECTIVE_TABLE.items()}
        kwargs["seeds"] = self.seed_list
        return kwargs

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`optuna_biotune.BioTuneSampler` for this spec."""
        return {
            "population_size": self.population,
            "n_elites": self.elites,
            "exploit_step": self.exploit_step,
            "wipeout": self.wipeout,
            "seed": self.seed,
        }

    def replace(self, **changes: Any) -> StudySpec:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise UsageError(
                f"unknown spec field(s) {unknown}; see optuna_biotune.biotune.spec.SECTIONS."
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


#: ``[objective]`` key (a StudySpec field) -> :class:`~optuna_biotune.BioTuneObjective` argument:
#: the keys of ``biotune:spec`` but the Python API's own, ``max_epochs`` as ``epochs``.
OBJECTIVE_TABLE = {
    ("epochs" if arg == "max_epochs" else arg): arg
    for arg in OBJECTIVE_SPEC_KEYS
    if arg not in API_ONLY_SPEC_KEYS
}

#: (TOML table, key) -> StudySpec field.
SECTIONS: dict[tuple[str, str], str] = {
    ("study", "name"): "study",
    ("study", "storage"): "storage",
    ("study", "artifacts"): "artifacts",
    **{("objective", k): k for k in OBJECTIVE_TABLE},
    **{
        ("search", k): k
        for k in (
            "population",
            "elites",
            "generations",
            "exploit_step",
            "wipeout",
            "n_jobs",
            "seed",
        )
    },
    ("final", "after_search"): "final",
    ("final", "top_k"): "top_k",
    ("final", "seeds"): "final_seeds",
    ("report", "out"): "out",
}

#: Fewest elites of a study spec (and so of the CLI): BioTune's search refines its elites
#: (BioIK, Starke et al. 2019, Sec. IV). ``BioTuneSampler`` itself also runs with none
#: (``memetic.MIN_ELITES``); both check through ``memetic.check_elites``.
SPEC_MIN_ELITES = 1

_INT_FIELDS = {
    "seeds": MIN_SEEDS,
    "epochs": MINIMUM["max_epochs"],
    "patience": MINIMUM["patience"],
    "batch_size": MINIMUM["batch_size"],
    "population": MIN_POPULATION,
    "elites": SPEC_MIN_ELITES,
    "generations": 0,
    "n_jobs": 1,
    "top_k": 1,
    "final_seeds": MIN_SEEDS,
}
_CHOICES = {
    "optimizer": ("adam", "sgd"),
    "metric": ("accuracy", "macro"),
}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _is_prefixes(entry: Any) -> bool:
    if isinstance(entry, str):
        return bool(entry)
    return isinstance(entry, list) and bool(entry) and all(isinstance(p, str) and p for p in entry)


def _validate(spec: StudySpec) -> None:
    for name, low in _INT_FIELDS.items():
        check_int(name, getattr(spec, name), low, fix="fix the spec")
    check_elites(
        spec.elites,
        spec.population,
        low=SPEC_MIN_ELITES,
        name="elites",
        population_name="population",
    )
    for name in ("data_fraction", "base_lr", "exploit_step"):
        value = getattr(spec, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise UsageError(f"`{name}` must be a number, got {value!r}; fix the spec.")
    if not 0 < spec.data_fraction <= 1:
        raise UsageError(f"`data_fraction` must be in (0, 1], got {spec.data_fraction}.")
    check_base_lr(spec.base_lr)
    check_exploit_step(spec.exploit_step)
    for name, choices in _CHOICES.items():
        if getattr(spec, name) not in choices:
            raise UsageError(
                f"`{name}` must be one of {list(choices)}, got {getattr(spec, name)!r}."
            )
    for name in ("exact_protocol", "wipeout"):
        if not isinstance(getattr(spec, name), bool):
            raise UsageError(
                f"`{name}` must be true or false, got {getattr(spec, name)!r}; fix the spec."
            )
    if not isinstance(spec.device, str) or not _DEVICE.match(spec.device):
        raise UsageError(f"`device` must be auto, cpu, cuda, cuda:N or mps, got {spec.device!r}.")
    for name in ("study", "dataset", "model"):
        value = getattr(spec, name)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"`{name}` must be a non-empty string, got {value!r}.")
    if "/" in spec.study or "\\" in spec.study:
        raise UsageError(f"`study` must be a plain name without slashes, got {spec.study!r}.")
    if spec.image_size is not None and (
        isinstance(spec.image_size, bool)
        or not isinstance(spec.image_size, int)
        or spec.image_size < 8
    ):
        raise UsageError(
            f"`image_size` must be an integer >= 8 or left out, got {spec.image_size!r}."
        )
    if spec.seed is not None and (isinstance(spec.seed, bool) or not isinstance(spec.seed, int)):
        raise UsageError(f"`seed` must be an integer or left out, got {spec.seed!r}.")
    if not isinstance(spec.final, bool):
        raise UsageError(f"`final.after_search` must be true or false, got {spec.final!r}.")
    if spec.partition is not None and not (
        isinstance(spec.partition, list)
        and spec.partition
        and all(_is_prefixes(p) for p in spec.partition)
    ):
        raise UsageError(
            "`partition` must list one block per entry (a module-name prefix or a list of "
            'them, e.g. [["conv1", "bn1"], "layer1"]), or be left out.'
        )
    for name in ("storage", "artifacts", "out"):
        value = getattr(spec, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise UsageError(f"`{name}` must be a non-empty string or left out, got {value!r}.")


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
]
