"""Resuming a study with other settings, through the real CLI on a real (tiny) study.

A change that alters what the trials mean (the gene layout: another model or partition; the
objective: seeds, epochs, data fraction; the population) is refused with one line naming the
difference, exit 2, and the study is left untouched. Compatible changes (more generations,
more parallel jobs) continue the study where it stopped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tiny_cli import CLI, TINY_SEARCH

NAME = "resume"
#: The tiny study every test starts from: population 3, generation 0 only (3 evaluations).
BUDGET = TINY_SEARCH


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny study (SQLite file) made by `optuna-biotune search`."""
    folder = tmp_path_factory.mktemp("searched")
    url = f"sqlite:///{folder / 'study.db'}"
    done = _run(["search", *BUDGET, "--study", NAME, "--storage", url], cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "study.db"


@pytest.fixture
def study_copy(searched: Path, tmp_path: Path) -> str:
    """A private copy of the searched study: its storage URL."""
    shutil.copy(searched, tmp_path / "study.db")
    return f"sqlite:///{tmp_path / 'study.db'}"


def _snapshot(url: str) -> tuple:
    study = optuna.load_study(study_name=NAME, storage=url)
    trials = [(t.number, t.state, t.params, t.values) for t in study.get_trials(deepcopy=False)]
    return trials, study.user_attrs, study._storage.get_study_system_attrs(study._study_id)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--model", "resnet18"], "model"),
        (["--partition", "conv_stem,blocks,conv_head,classifier"], "partition"),
        (["--population", "4"], "population_size"),
        (["--elites", "2"], "n_elites"),
        (["--seeds", "2"], "seeds"),
        (["--epochs", "2"], "max_epochs"),
        (["--data-fraction", "0.5"], "data_fraction"),
        (["--exact-protocol"], "exact_protocol"),
    ],
)
def test_incompatible_resume_is_refused_naming_the_difference(
    study_copy: str, tmp_path: Path, change: list[str], named: str
) -> None:
    before = _snapshot(study_copy)
    # A bare resume, the way workers join (a spec file takes the other path, below).
    out = _run(["search", "--study", NAME, "--storage", study_copy, *change], tmp_path, 300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"optuna-biotune: error: study {NAME!r} was ")
    assert named in lines[0] and "another --study" in lines[0]
    assert _snapshot(study_copy) == before


def test_spec_file_with_another_model_is_refused(study_copy: str, tmp_path: Path) -> None:
    before = _snapshot(study_copy)
    spec = tmp_path / "other.toml"
    spec.write_text('[objective]\nmodel = "mobilenet_v3_small"\n', encoding="utf-8")
    out = _run(["search", str(spec), *BUDGET, "--study", NAME, "--storage", study_copy], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "model: 'efficientnet_lite0' -> 'mobilenet_v3_small'" in out.stderr
    assert "Traceback" not in out.stderr
    assert _snapshot(study_copy) == before


@pytest.mark.slow
def test_more_generations_and_more_workers_continue_the_study(
    study_copy: str, tmp_path: Path
) -> None:
    before = optuna.load_study(study_name=NAME, storage=study_copy)
    first = {t.number: (t.params, t.values) for t in before.get_trials(deepcopy=False)}
    assert len(first) == 3
    # Two worker processes join at once asking for one more generation, one of them with two
    # parallel trials (`--n-jobs 2`, threads sharing its model).
    args = ["search", "--study", NAME, "--storage", study_copy, "--generations", "1"]
    procs = [
        subprocess.Popen([*CLI, *args, *more], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        for more in ([], ["--n-jobs", "2"])
    ]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        assert "failed" not in err, err
    study = optuna.load_study(study_name=NAME, storage=study_copy)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in complete:
        if t.number in first:
            assert (t.params, t.values) == first[t.number]
    claims = [t.system_attrs["BioTuneSampler:slot"] for t in complete]
    keys = [(c["generation"], c["slot"]) for c in claims]
    assert len(keys) == len(set(keys))
    # Generation 0 (3) and generation 1 (2 x 1 elite + 2 children) complete; workers that
    # found generation 1 fully taken may have started generation 2 meanwhile (one per thread).
    assert sorted(s for g, s in keys if g == 0) == [0, 1, 2]
    assert sorted(s for g, s in keys if g == 1) == [0, 1, 2, 3]
    assert 7 <= len(complete) <= 9
    assert not study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert study.user_attrs["biotune:spec"]["generations"] == 1
