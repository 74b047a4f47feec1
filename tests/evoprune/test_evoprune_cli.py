"""``optuna-biotune evoprune`` as a user runs it: a real subprocess on an ImageFolder, resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of scikit-learn's real 8x8 digits as PNG files, 12 images each."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits-folder")
    d = load_digits()
    for label in (0, 1, 7):
        (root / str(label)).mkdir()
        images = d.images[d.target == label][:12]
        for i, img in enumerate(images):
            pixels = (img * (255.0 / 16.0)).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / str(label) / f"{i}.png")
    return root


def evoprune(tmp_path: Path, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "optuna_biotune.cli",
        "evoprune",
        "--dataset",
        str(folder),
        "--storage",
        f"sqlite:///{tmp_path / 'evo.db'}",
        "--study",
        "cli",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--image-size",
        "32",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "--population",
        "4",
        "--final-seeds",
        "1",
        "--json",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.slow
def test_search_then_resume_to_a_larger_budget_then_refuse_a_conflicting_option(
    tmp_path: Path, folder: Path
) -> None:
    first = evoprune(tmp_path, folder, "--evaluations", "6")
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["command"] == "evoprune"
    assert result["evaluations"] == 6 and result["study"] == "cli"
    final = result["final"]
    assert final["neurons"] == 16 and 0 < final["active_share"] < 1
    assert set(final) >= {"pruned", "unpruned", "summary"}
    assert final["pruned"]["test_accuracy_stderr"] == 0.0  # one seed: no spread to report
    assert "mean ± s.e. over 1 training seed" in final["summary"]
    assert list(tmp_path.glob("cache/*-32-v1.pt")), "features are cached on disk"

    again = evoprune(tmp_path, folder, "--evaluations", "8")
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["evaluations"] == 8 and resumed["trials"] == 8
    study = optuna.load_study(study_name="cli", storage=f"sqlite:///{tmp_path / 'evo.db'}")
    claims = [t.system_attrs["EvoPruneSampler:slot"] for t in study.trials]
    assert [c["generation"] for c in claims] == [0, 0, 0, 0, 1, 1, 2, 2]
    assert study.user_attrs["evoprune:spec"]["hidden"] == 16
    assert study.user_attrs["evoprune:final"]["best_trial"] == resumed["final"]["best_trial"]

    assert study.user_attrs["evoprune:spec"]["precision"] == "fp32"
    for option, value in (("--layers", "both"), ("--precision", "bf16")):
        clash = evoprune(tmp_path, folder, "--evaluations", "8", option, value)
        assert clash.returncode == 2
        assert option[2:] in clash.stderr and "new --study" in clash.stderr
        assert "Traceback" not in clash.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [("--evaluations=0", "evaluations"), ("--mutation=2", "mutation"), ("--threads=0", "threads")],
)
def test_bad_budgets_exit_2_with_one_line(tmp_path: Path, folder: Path, option, message) -> None:
    out = evoprune(tmp_path, folder, option)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_an_image_over_pillows_limit_is_one_line_and_creates_no_study(
    tmp_path: Path, folder: Path
) -> None:
    import shutil

    from test_data import write_oversized_png

    bad = tmp_path / "with-a-scan"
    shutil.copytree(folder, bad)
    write_oversized_png(bad / "7" / "scan.png")
    out = evoprune(tmp_path, bad, "--evaluations", "4")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "scan.png" in last and "256,000,000 pixels" in last and "downscale" in last
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'evo.db'}") == []
