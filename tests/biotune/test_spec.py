"""TOML study specs: the embedded default, the paper's nine, validation, CLI coverage."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from optuna_biotune import cli
from optuna_biotune.biotune.spec import (
    DEFAULT_TOML,
    SECTIONS,
    StudySpec,
    default_spec,
    load_spec,
    spec_from_dict,
)
from optuna_biotune.engine.seeds import seed_list
from optuna_biotune.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
PAPER_DATASETS = [
    "mnist",
    "usps",
    "svhn",
    "cifar10",
    "stl10",
    "flowers102",
    "fgvc-aircraft",
    "dtd",
    "isic2016",
]


def test_studies_default_toml_is_the_embedded_default() -> None:
    assert (REPO / "studies" / "default.toml").read_text() == DEFAULT_TOML
    spec = default_spec()
    assert (spec.dataset, spec.model, spec.device) == ("digits", "efficientnet_lite0", "cpu")
    assert spec.after_search is True and spec.storage_url == "sqlite:///studies/default.db"


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_paper_specs_have_the_paper_settings(name: str) -> None:
    path = REPO / "studies" / f"{name}-resnet50.toml"
    spec = load_spec(path)
    assert spec.model == "resnet50" and spec.image_size == 224
    assert (spec.population_size, spec.n_elites, spec.generations) == (10, 3, 10)
    assert (spec.seeds, spec.max_epochs, spec.patience, spec.data_fraction) == (3, 30, 3, 0.5)
    assert (spec.base_lr, spec.optimizer, spec.exploit_step) == (1e-3, "adam", 0.25)
    assert (spec.top_k, spec.final_seeds, spec.after_search) == (5, 3, True)
    assert spec.wipeout is False  # the authors' BioTune has none (BioIK's)
    assert spec.sampler_kwargs()["wipeout"] is False
    assert spec.seed_list == (684, 559, 629)
    assert spec.evaluations == 140  # 10 + 10 x 13, METHOD.md "Search budget"
    assert spec.storage_url == f"sqlite:///{path.parent / f'{name}-resnet50.db'}"


def test_paper_specs_name_the_datasets_of_data_py() -> None:
    from optuna_biotune.engine import sources as data

    names = {load_spec(REPO / "studies" / f"{n}-resnet50.toml").dataset for n in PAPER_DATASETS}
    torchvision_names = names - {str(REPO / "studies" / "data" / "isic2016")}
    assert len(torchvision_names) == 8
    for name in torchvision_names:  # each named in data.py's documented dataset specs
        assert f"``{name}``" in (data.__doc__ or "")


def test_every_search_option_is_settable_in_a_spec() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    search = sub.choices["search"]
    fields = set(SECTIONS.values())
    dests = {a.dest for a in search._actions if a.option_strings and a.dest != "help"}
    assert dests - {"json"} <= fields | {"partition", "study"}
    assert "partition" in fields and "study" in fields


def test_relative_paths_resolve_beside_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "exp" / "mine.toml"
    path.parent.mkdir()
    path.write_text(
        '[study]\nname = "mine"\nstorage = "sqlite:///db/mine.db"\nartifacts = "art"\n'
        '[objective]\ndataset = "./images"\n[report]\nout = "rep"\n'
    )
    spec = load_spec(path)
    assert spec.storage_url == f"sqlite:///{path.parent / 'db' / 'mine.db'}"
    assert spec.artifact_dir == str(path.parent / "art")
    assert spec.report_dir == str(path.parent / "rep")
    assert spec.dataset == str(path.parent / "images")
    bare = load_spec(_write(tmp_path / "b.toml", '[study]\nname = "b"\n'))
    assert bare.storage_url == f"sqlite:///{tmp_path / 'b.db'}"
    assert bare.artifact_dir == str(tmp_path / "artifacts")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[studdy]\nname = 'x'\n", r"unknown table \[studdy\]"),
        ("[search]\npopulaton = 4\n", r"unknown key `search.populaton`"),
        ("[search]\npopulation_size = 0\n", r"`population_size` must be an integer >= 3"),
        ("[search]\npopulation_size = 4\nn_elites = 4\n", r"`n_elites` \(4\) must be smaller"),
        ("[search]\ngenerations = -1\n", r"`generations` must be an integer >= 0"),
        ("[objective]\nmax_epochs = 2.5\n", r"`max_epochs` must be an integer"),
        ("[objective]\nseeds = 0\n", r"`seeds` must be an integer >= 1"),
        ("[objective]\ndata_fraction = 1.5\n", r"`data_fraction` must be in \(0, 1\]"),
        ("[objective]\noptimizer = 'rmsprop'\n", r"`optimizer` must be one of"),
        ("[objective]\ndevice = 'tpu'\n", r"`device` must be auto, cpu, cuda"),
        ("[objective]\npartition = 'layer1'\n", r"`partition` must list one block"),
        ("[objective]\nmetric = 'f1'\n", r"`metric` must be one of"),
        ("[objective]\nbase_lr = -1.0\n", r"`base_lr` must be in \(0, 10\]"),
        ("[objective]\nbase_lr = 1e38\n", r"`base_lr` must be in \(0, 10\]"),
        ("[objective]\nmodel = ''\n", r"`model` must be a non-empty string"),
        ("[final]\nafter_search = 'yes'\n", r"`after_search` must be true or false"),
        ("[search]\nwipeout = 1\n", r"`wipeout` must be true or false"),
        ("[study]\nname = 'a/b'\n", r"without slashes"),
        ("study = 3\n", r"`study` must be a table"),
        ("[search\n", r"is not valid TOML"),
    ],
)
def test_bad_specs_are_refused_with_one_line(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path / "bad.toml", text)
    with pytest.raises(UsageError, match=match) as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_missing_spec_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


def test_replace_overrides_and_refuses_unknown_fields() -> None:
    spec = default_spec().replace(max_epochs=7, generations=None)
    assert spec.max_epochs == 7 and spec.generations == default_spec().generations
    with pytest.raises(UsageError, match="unknown spec field"):
        spec.replace(epoch=3)
    with pytest.raises(UsageError, match="`patience`"):
        spec.replace(patience=-2)


def test_to_toml_dict_round_trips() -> None:
    spec = load_spec(REPO / "studies" / "flowers102-resnet50.toml")
    again = spec_from_dict(spec.to_toml_dict(), base_dir=spec.base_dir)
    assert again == spec


def test_seed_list_starts_with_the_papers_seeds() -> None:
    assert seed_list(1) == (684,)
    assert seed_list(5) == (684, 559, 629, 1, 2)
    with pytest.raises(UsageError):
        seed_list(0)


def test_evaluations_count_the_papers_generation() -> None:
    assert StudySpec(population_size=10, n_elites=3, generations=10).evaluations == 140
    assert StudySpec(population_size=6, n_elites=2, generations=0).evaluations == 6
    default = tomllib.loads(DEFAULT_TOML)["search"]["population_size"]
    assert default == default_spec().population_size


@pytest.mark.parametrize(
    ("storage", "home"),
    [
        ("sqlite:////data/runs/x.db", "/data/runs"),
        ("sqlite:///rel/x.db", "rel"),
        ("postgresql+psycopg://u:p@h/db", "studies"),
        (None, "studies"),
    ],
)
def test_artifacts_and_reports_land_beside_the_database(storage: str | None, home: str) -> None:
    spec = StudySpec(study="x", storage=storage)
    assert spec.artifact_dir == str(Path(home) / "artifacts")
    assert spec.report_dir == str(Path(home) / "reports" / "x")


def test_partition_lists_blocks_as_prefixes_or_prefix_lists(tmp_path: Path) -> None:
    text = '[objective]\nmodel = "resnet50"\npartition = [["conv1", "bn1"], "layer1", "fc"]\n'
    spec = load_spec(_write(tmp_path / "p.toml", text))
    assert spec.objective_kwargs()["partition"] == [["conv1", "bn1"], "layer1", "fc"]
    with pytest.raises(UsageError, match="`partition` must list one block per entry"):
        load_spec(_write(tmp_path / "q.toml", '[objective]\npartition = [["conv1", 3]]\n'))


def test_wipeout_is_one_setting_in_the_spec_the_cli_and_the_sampler(tmp_path: Path) -> None:
    from optuna_biotune import BioTuneSampler
    from optuna_biotune.biotune.cli import _overrides

    assert default_spec().wipeout is False  # measured: benchmarks/results/comparison.md
    assert BioTuneSampler()._strategy.wipeout is False  # the same default in Python
    parser = cli.build_parser()
    for flag, expected in (("--no-wipeout", False), ("--wipeout", True)):
        args = parser.parse_args(["search", flag])
        spec = default_spec().replace(**_overrides(args))
        assert spec.wipeout is expected
        sampler = BioTuneSampler(**spec.sampler_kwargs())
        assert sampler._strategy.wipeout is expected
    path = _write(tmp_path / "w.toml", "[search]\nwipeout = false\n")
    assert load_spec(path).wipeout is False
    assert spec_from_dict(load_spec(path).to_toml_dict()).wipeout is False
