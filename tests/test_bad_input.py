"""Bad input loses nothing: each case through the real CLI (``main()`` or a subprocess).

Every case prints one clear line on stderr (no traceback) and exits 2 (usage) or 1 (runtime),
and leaves nothing half-written: no new study, and an existing study of the same name keeps
its trials and attributes. A NaN training loss and a device out of memory fail only the trial,
with the reason recorded, and the search goes on to the next trial.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image
from test_data import BAD_FILES, write_bad_file, write_oversized_png
from tiny_cli import CLI

from optuna_biotune import cli

TINY = [
    *("--population", "3", "--elites", "1", "--generations", "0", "--epochs", "1"),
    *("--seeds", "1", "--data-fraction", "0.25", "--device", "cpu", "--no-final"),
]
KEPT = "kept"


def _image_folder(root: Path, counts: dict[str, int], *, size: int = 12) -> Path:
    """Write a real ImageFolder: one subfolder per class, PNG files of random pixels."""
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def _truncated(root: Path) -> tuple[Path, str]:
    folder = _image_folder(root / "data", {"cats": 12, "dogs": 12})
    victim = folder / "dogs" / "005.png"
    victim.write_bytes(victim.read_bytes()[:40])
    return folder, "005.png"


def _no_image_left(root: Path) -> tuple[Path, str]:
    folder = _image_folder(root / "data", {"cats": 0, "dogs": 0})
    (folder / "cats" / "notes.txt").write_text("not a picture\n", encoding="utf-8")
    (folder / "dogs" / "Thumbs.db").write_bytes(b"\x00" * 32)
    return folder, "holds no images (2 file(s) without an image extension skipped"


def _bad_file(bad: str) -> Callable[[Path], tuple[Path, str]]:
    def make(root: Path) -> tuple[Path, str]:
        folder = _image_folder(root / "data", {"cats": 12, "dogs": 12})
        (folder / "cats" / "notes.txt").write_text("not a picture\n", encoding="utf-8")
        return folder, write_bad_file(folder / "dogs", bad)

    return make


def _single_class(root: Path) -> tuple[Path, str]:
    return _image_folder(root / "data", {"cats": 20}), "single class"


def _few_per_fold(root: Path) -> tuple[Path, str]:
    # 4 folds (data fraction 0.25); 'dogs' has 5 images: 3 train, 1 val, 1 test.
    return _image_folder(root / "data", {"cats": 20, "dogs": 5}), "fewer images than"


def _empty(root: Path) -> tuple[Path, str]:
    (root / "data").mkdir()
    return root / "data", "data"


def _missing(root: Path) -> tuple[Path, str]:
    return root / "no" / "such" / "folder", "does not exist"


DATASETS = {
    "missing path": _missing,
    "empty folder": _empty,
    "truncated image": _truncated,
    "no image left": _no_image_left,
    **{bad: _bad_file(bad) for bad in BAD_FILES},
    "single class": _single_class,
    "fewer images than folds": _few_per_fold,
}


@pytest.fixture
def storage(tmp_path: Path) -> str:
    """A SQLite file holding one finished study, ``kept``, that bad input must not touch."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=KEPT, storage=url, direction="maximize")
    study.set_user_attr("note", "made before the bad input")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    return url


def _snapshot(url: str) -> tuple:
    study = optuna.load_study(study_name=KEPT, storage=url)
    trials = [(t.number, t.state, t.params, t.values) for t in study.get_trials(deepcopy=False)]
    return trials, study.user_attrs, study._storage.get_study_system_attrs(study._study_id)


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


def _assert_one_line(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(r"optuna-biotune( \w+)?: error: ", lines[0]), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def _run_twice(
    argv: list[str], url: str, capsys: pytest.CaptureFixture[str], code: int, *fragments: str
) -> None:
    """As a new study (none may appear) and on the existing one (it must stay as it was)."""
    before = _snapshot(url)
    for study in ("fresh", KEPT):
        got, err = _main([*argv, "--study", study, "--storage", url], capsys)
        assert got == code, err
        _assert_one_line(err, *fragments)
        assert optuna.get_all_study_names(url) == [KEPT]
        assert _snapshot(url) == before


@pytest.mark.parametrize("case", list(DATASETS))
def test_bad_dataset_is_refused_before_the_study_is_touched(
    case: str,
    storage: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    folder, fragment = DATASETS[case](tmp_path)
    argv = ["search", *TINY, "--dataset", str(folder), "--image-size", "16"]
    _run_twice(argv, storage, capsys, 2, fragment)


def test_an_image_over_pillows_limit_is_one_line_in_a_real_cli_process(
    storage: str, tmp_path: Path
) -> None:
    """Pillow's own limit (no monkeypatch), the installed command in a child process."""
    folder = _image_folder(tmp_path / "data", {"cats": 12, "dogs": 12})
    write_oversized_png(folder / "dogs" / "scan.png")
    before = _snapshot(storage)
    cmd = [*CLI, "search", *TINY, "--dataset", str(folder), "--study", "big", "--storage"]
    proc = subprocess.run(
        [*cmd, storage], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2, proc.stderr
    line = _assert_one_line(proc.stderr, "scan.png", "256,000,000 pixels", "downscale it")
    assert "DecompressionBomb" not in line
    assert optuna.get_all_study_names(storage) == [KEPT]
    assert _snapshot(storage) == before


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--model", "no_such_net"], 2, "`model` 'no_such_net' is unknown"),
        (["--population", "0"], 2, "`population_size`"),
        (["--elites", "0"], 2, "`n_elites`"),
        (["--seeds", "0"], 2, "`seeds`"),
        (["--epochs", "0"], 2, "`max_epochs`"),
        (["--batch-size", "0"], 2, "`batch_size`"),
        (["--generations", "-1"], 2, "non-negative"),
        (["--population", "-5"], 2, "non-negative"),
        (["--data-fraction", "0"], 2, "`data_fraction`"),
        (["--data-fraction", "-0.5"], 2, "`data_fraction`"),
        (["--base-lr=-1e-3"], 2, "`base_lr`"),
        (["--base-lr=3e37"], 2, "`base_lr`"),
        (["--epochs", "many"], 2, "expected an integer"),
    ],
)
def test_bad_model_or_budget_is_refused_before_the_study_is_touched(
    args: list[str],
    code: int,
    fragment: str,
    storage: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    _run_twice(["search", *TINY, *args], storage, capsys, code, fragment)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[search\npopulation = 4\n", "is not valid TOML"),
        ('[search]\npopulation_size = "many"\n', "`population_size`"),
        ("[search]\ngenerations = -2\n", "`generations`"),
        ("[search]\npopulation_size = 0\n", "`population_size`"),
        ("[objective]\nmax_epochs = 0\n", "`max_epochs`"),
        ("[serch]\npopulation = 4\n", "unknown table [serch]"),
        ("[search]\npopulaton = 4\n", "unknown key `search.populaton`"),
    ],
)
def test_malformed_spec_is_refused_before_the_study_is_touched(
    text: str,
    fragment: str,
    storage: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "bad.toml"
    spec.write_text(text, encoding="utf-8")
    _run_twice(["search", str(spec)], storage, capsys, 2, fragment)


@pytest.mark.parametrize(
    ("url", "code", "fragment"),
    [
        ("not a url", 2, "is not a URL"),
        ("nosuchdb://x", 2, "malformed"),
        ("postgresql+psycopg://biotune:biotune@127.0.0.1:1/biotune_test", 1, "unreachable"),
        ("postgresql+psycopg://biotune:biotune@no-such-host.invalid/db", 1, "unreachable"),
    ],
)
def test_bad_storage_url_is_one_line(
    url: str,
    code: int,
    fragment: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    got, err = _main(["search", *TINY, "--study", "x", "--storage", url], capsys)
    assert got == code, err
    _assert_one_line(err, fragment)
    assert not list(tmp_path.rglob("*.db"))


# ---- failures while training: only the trial fails, with its reason ------------------------


def _limit_memory() -> None:  # runs in the child before exec: a real allocator failure
    limit = 6 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


#: The CLI in a process whose loss is always NaN (what a far too high learning rate ends in).
NAN_CLI = [sys.executable, str(Path(__file__).with_name("nan_loss_cli.py"))]


@pytest.mark.parametrize(
    ("case", "cli", "args", "reason"),
    [
        ("nan loss", NAN_CLI, ["--image-size", "8"], "training loss became"),
        # One batch of every fold image at 224 px needs far more than the 6 GiB address space.
        (
            "device out of memory",
            CLI,
            ["--batch-size", "4096", "--image-size", "224"],
            "out of memory",
        ),
    ],
)
@pytest.mark.slow
def test_training_failure_fails_the_trial_with_its_reason_and_the_search_goes_on(
    case: str, cli: list[str], args: list[str], reason: str, storage: str, tmp_path: Path
) -> None:
    before = _snapshot(storage)
    cmd = [*cli, "search", *TINY, "--dataset", "digits", *args, "--study", "s", "--storage"]
    proc = subprocess.run(
        [*cmd, storage],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_limit_memory if reason == "out of memory" else None,
    )
    # No trial can succeed, so the search stops after two rounds without progress: one line.
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("optuna-biotune: error: no trial finished in two rounds"), last
    assert reason.lower() in last.lower()
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.get_trials(deepcopy=False)
    # The search went on after the first failure: every trial of both rounds ran and failed,
    # each with its reason; the sampler issued the failed slots again.
    assert len(trials) == 6
    assert all(t.state == TrialState.FAIL for t in trials)
    for t in trials:
        assert reason.lower() in t.user_attrs["fail_reason"].lower()
    assert _snapshot(storage) == before
