"""The ``optuna-biotune`` command: real subprocesses, real storages, the real objective.

The searches here use the real ``BioTuneSampler`` and ``BioTuneObjective`` on ``digits`` with
the smallest budget (population 3, 1 elite, 1 epoch, 1 seed, 8 px, a quarter of the data per
generation), so each evaluation takes seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import ctrl_c_reaches_child
from product_studies import make_study
from tiny_cli import CLI

from optuna_biotune import cli
from optuna_biotune.biotune import search

TINY = (
    *("--dataset", "digits", "--population", "3", "--elites", "1", "--epochs", "1"),
    *("--patience", "1", "--seeds", "1", "--data-fraction", "0.25", "--seed", "7"),
    *("--image-size", "8", "--device", "cpu", "--no-final"),
)


def _run(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _states(db: Path, study: str) -> list[str]:
    s = optuna.load_study(study_name=study, storage=f"sqlite:///{db}")
    return [t.state.name for t in s.trials]


@pytest.mark.slow
def test_search_resumes_and_counts_earlier_generations(tmp_path: Path) -> None:
    first = _run("search", *TINY, "--study", "s", "--generations", "0", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    out = _last_json(first.stdout)
    db = tmp_path / "studies" / "s.db"
    assert out["storage"] == "sqlite:///studies/s.db" and db.is_file()
    assert out["evaluations"] == out["planned_evaluations"] == 3
    assert 0.0 <= out["best_value"] <= 1.0
    best = out["best_configuration"]
    assert len(best["mask"]) == len(best["lr_weights"]) == len(best["blocks"])
    assert Path(tmp_path, out["report"]["fig2.png"]).is_file()

    # Same command with one more generation: 3 + (3 + 1) evaluations in all, 4 of them new.
    second = _run("search", *TINY, "--study", "s", "--generations", "1", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    out = _last_json(second.stdout)
    assert out["evaluations"] == out["planned_evaluations"] == 7
    assert _states(db, "s") == ["COMPLETE"] * 7
    # Compute in view: 7 evaluations x 1 seed x 1 epoch is the exact protocol's ceiling; no FT
    # run was timed yet (no `final`), so no FT runs.
    spent = out["compute"]
    assert spent["evaluations"] == 7 and spent["epochs_ceiling"] == 7
    assert 0 < spent["epochs_trained"] <= 7 and spent["training_seconds"] > 0
    assert "ft_runs" not in spent
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    from optuna_biotune.evolution import trial_generation

    assert [trial_generation(t) for t in study.trials] == [0, 0, 0, 1, 1, 1, 1]
    assert study.user_attrs["biotune:spec"]["dataset"] == "digits"

    # Done: a third run evaluates nothing more.
    third = _run("search", *TINY, "--study", "s", "--generations", "1", "--json", cwd=tmp_path)
    assert third.returncode == 0 and _last_json(third.stdout)["evaluations"] == 7
    assert len(_states(db, "s")) == 7

    # Other objective settings on the same study are refused, naming the difference.
    other = _run(
        "search", *TINY, "--study", "s", "--generations", "1", "--epochs", "2", cwd=tmp_path
    )
    assert other.returncode == 2 and "epochs: 1 -> 2" in other.stderr
    assert other.stderr.strip().count("\n") == 0
    assert len(_states(db, "s")) == 7

    # `final` retrains the best configuration and FT with the real objective, stores the test
    # accuracies, and a repeat (a new process) recomputes nothing.
    fin = _run("final", "--study", "s", "--top-k", "1", "--seeds", "1", "--json", cwd=tmp_path)
    assert fin.returncode == 0, fin.stderr[-2000:]
    result = _last_json(fin.stdout)["final"]
    spent = _last_json(fin.stdout)["compute"]  # final's FT reference timed the unit
    assert spent["ft_runs"] > 0 and spent["ft_run_seconds"] == pytest.approx(
        result["ft"]["seconds"], rel=0.01
    )
    assert result["reused"] == 0 and len(result["configurations"]) == 1
    assert result["configurations"][0]["trial"] == study.best_trial.number
    assert 0.0 <= result["biotune_test_accuracy"] <= 1.0 and 0.0 <= result["ft_test_accuracy"] <= 1
    assert result["biotune_test_accuracy"] == result["configurations"][0]["mean"]
    # One default final seed, not the search's fitness seed (684): no shared head initialisation.
    assert result["seeds"] == [1001] and result["seeds_shared_with_search"] == []
    assert "first by validation) vs FT" in fin.stdout and "best of the top 1" in fin.stdout
    # The same seed given as a list is the same cache key.
    again = _run(
        "final", "--study", "s", "--top-k", "1", "--seeds", "1001,", "--json", cwd=tmp_path
    )
    repeat = _last_json(again.stdout)["final"]
    assert again.returncode == 0 and repeat["reused"] == 2
    assert repeat["configurations"][0]["test"] == result["configurations"][0]["test"]
    assert "(not recomputed)" in again.stderr

    # The optuna command reads these studies too.
    url = f"sqlite:///{db}"
    listed = subprocess.run(
        ["optuna", "studies", "--storage", url, "-f", "json"], capture_output=True, text=True
    )
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "s"
    best_trial = subprocess.run(
        ["optuna", "best-trial", "--study-name", "s", "--storage", url, "-f", "json"],
        capture_output=True,
        text=True,
    )
    assert best_trial.returncode == 0
    shown = json.loads(best_trial.stdout)["value"]
    assert shown == {"validation accuracy": pytest.approx(study.best_value)}


@pytest.mark.slow
def test_sigint_marks_the_trial_and_the_same_command_finishes(tmp_path: Path) -> None:
    args = ("search", *TINY, "--study", "i", "--generations", "1", "--json")
    proc = subprocess.Popen(
        [*CLI, *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=ctrl_c_reaches_child,
    )
    db = tmp_path / "studies" / "i.db"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # interrupt once a trial completed and one runs
        time.sleep(0.5)
        if db.is_file():
            with sqlite3.connect(db) as con:
                try:
                    states = [r[0] for r in con.execute("select state from trials")]
                except sqlite3.OperationalError:
                    continue
            if "COMPLETE" in states and states[-1] == "RUNNING":
                break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "rerun the same command to resume" in err.splitlines()[-1]
    states = _states(db, "i")
    assert "FAIL" in states and "RUNNING" not in states

    again = _run(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _last_json(again.stdout)["evaluations"] == 7
    assert _states(db, "i").count("COMPLETE") == 7


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("search", "nope.toml"), 2, "does not exist"),
        (("search", "--population", "2"), 2, "`population_size` must be an integer >= 3"),
        (("search", "--population", "4", "--elites", "4"), 2, "must be smaller"),
        (("search", "--epochs", "x"), 2, "expected an integer"),
        (("search", "--data-fraction", "0"), 2, "`data_fraction` must be in (0, 1]"),
        (("search", "--dataset", "no-such-set", "--study", "x"), 2, "`dataset`"),
        (("search", "--model", "no-such-net", "--study", "x"), 2, "no-such-net"),
        (("search", "--storage", "not a url"), 2, "is not a URL"),
        (("search", "--storage", "nosuchdb://x"), 2, "malformed"),
        (("final", "--study", "x"), 2, "run `search` first"),
        (("report", "--study", "x"), 2, "run `search` first"),
        (("frobnicate",), 2, "invalid choice"),
        (("search", "--storage", "postgresql+psycopg://u:p@127.0.0.1:1/db"), 1, "unreachable"),
    ],
)
def test_bad_input_exits_with_one_line_and_writes_no_study(
    tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    proc = _run(*args, cwd=tmp_path, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    for db in (tmp_path / "studies").glob("*.db"):
        assert optuna.get_all_study_names(f"sqlite:///{db}") == []


@pytest.mark.slow
def test_report_json_and_optuna_cli_on_a_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = make_study(url, "r", n_trials=6)
    proc = _run("report", "--study", "r", "--storage", url, "--out", "rep", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = _last_json(proc.stdout)
    assert out["study"] == "r" and out["trials"] == 6
    assert out["best_value"] == pytest.approx(study.best_value)
    assert out["best_configuration"]["trial"] == study.best_trial.number
    assert set(out["report"]["artifacts"]) == {
        "report.html",
        "report.json",
        "fig2.png",
        "generations.png",
    }
    assert (tmp_path / "rep" / "fig2.png").is_file()
    # Without --json the summary is human text, the block table included.
    text = _run("report", "--study", "r", "--storage", url, "--out", "rep", cwd=tmp_path)
    assert "best configuration by validation (block: LR weight, 0 = frozen):" in text.stdout
    assert not text.stdout.strip().splitlines()[-1].startswith("{")
    # The unknown-study message names the studies present.
    missing = _run("report", "--study", "q", "--storage", url, cwd=tmp_path)
    assert missing.returncode == 2 and "['r']" in missing.stderr
    trials = subprocess.run(
        ["optuna", "trials", "--study-name", "r", "--storage", url, "-f", "json"],
        capture_output=True,
        text=True,
    )
    assert trials.returncode == 0 and len(json.loads(trials.stdout)) == 6


@pytest.mark.parametrize(
    ("argv", "code", "last"),
    [
        (["echo", "--times", "2", "--json"], 0, {"command": "echo", "echo": ["bio", "bio"]}),
        (["echo", "--times", "0"], 2, None),
        (["echo", "--times", "13", "--json"], 1, None),
        (["echo", "--bogus"], 2, None),
    ],
)
def test_registered_subcommands_get_json_and_exit_codes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    last: dict | None,
) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "echo", ("product_echo_command", "echo words"))
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    if last is not None:
        assert _last_json(captured.out) == last
        assert "echoing 2 times" in captured.err
    else:
        assert captured.out == "" and captured.err.strip()
        assert "Traceback" not in captured.err


def test_every_registered_subcommand_module_follows_the_contract() -> None:
    import importlib

    for name, (module_name, help_text) in cli.SUBCOMMANDS.items():
        assert help_text
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            pytest.skip(f"{name}: {module_name} is not built yet")
        assert callable(module.add_arguments) and callable(module.run), name


def test_missing_subcommand_module_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "ghost", ("optuna_biotune.no_such_module", "nothing"))
    assert cli.main(["ghost"]) == 2
    assert "not available" in capsys.readouterr().err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("search", "final", "report", "dashboard", *cli.SUBCOMMANDS):
        assert name in out


def _flat(trial: optuna.Trial) -> float:
    """Every individual equally good: the population stagnates and is wiped out."""
    return 0.5 + 0.0 * sum(trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(4))


def test_search_stops_when_the_last_generation_is_complete_even_after_wipeouts(
    sqlite_url: str, study_name: str
) -> None:
    from collections import Counter

    from optuna_biotune import BioTuneSampler
    from optuna_biotune.evolution import trial_generation

    study = optuna.create_study(
        study_name=study_name,
        storage=sqlite_url,
        direction="maximize",
        sampler=BioTuneSampler(population_size=4, n_elites=1, seed=0, wipeout=True),
    )
    search.search_generations(
        study, _flat, generations=3, population=4, elites=1, n_jobs=1, generation=trial_generation
    )
    sizes = Counter(trial_generation(t) for t in study.trials)
    assert sorted(sizes) == [0, 1, 2, 3]  # nothing of generation 4 started
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    # A normal generation is 2 exploits + 3 children; a wipeout one re-draws 3 of 4.
    assert any(sizes[g] != 5 for g in (1, 2, 3)), sizes
    done, newest, left = search.generation_progress(study, generations=3, population=4)
    assert (done, newest, left) == (True, 3, 0)
    # Resuming a finished search evaluates nothing more.
    search.search_generations(
        study, _flat, generations=3, population=4, elites=1, n_jobs=1, generation=trial_generation
    )
    assert len(study.trials) == sum(sizes.values())


@pytest.mark.parametrize(
    ("value", "seeds"), [("3", 3), ("684,559,629", (684, 559, 629)), ("7,", (7,))]
)
def test_final_seeds_are_a_count_or_a_list(value: str, seeds: int | tuple[int, ...]) -> None:
    assert cli.build_parser().parse_args(["final", "--seeds", value]).seeds == seeds


@pytest.mark.parametrize("value", ["0", "1,1", "a,b", ","])
def test_final_rejects_bad_seeds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["final", "--seeds", value])
    assert exit_info.value.code == 2 and "--seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_run_search_and_run_final_are_plain_functions(tmp_path: Path) -> None:
    """What `search` and `final` run, called from Python with a spec (no argparse)."""
    from optuna_biotune.biotune.cli import _overrides
    from optuna_biotune.biotune.spec import default_spec

    tiny = ["search", *TINY, "--generations", "0", "--top-k", "1", "--final-seeds", "1"]
    spec = default_spec(base_dir=tmp_path).replace(
        study="py", **_overrides(cli.build_parser().parse_args(tiny))
    )
    lines: list[str] = []
    result = search.run_search(spec, log=lines.append)
    assert result["evaluations"] == 3 and "final" not in result
    assert lines and lines[0].startswith("study 'py'")
    study = optuna.load_study(study_name="py", storage=spec.storage_url)
    stored = study.user_attrs["biotune:spec"]
    assert stored == {**json.loads(json.dumps(spec.stored())), "image_size": 8}
    final = search.run_final(study, spec, log=lines.append)
    assert final["seeds"] == [1001] and len(final["configurations"]) == 1


def test_the_search_functions_import_neither_the_package_root_nor_argparse() -> None:
    """`biotune/search.py` is a library under the commands, not a command itself."""
    import ast

    tree = ast.parse(Path(search.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "optuna_biotune" not in names and "argparse" not in names, names


def test_a_study_the_objective_stored_its_settings_in_resumes_from_a_spec() -> None:
    """The Python API's objective stores its own settings at its first evaluation; a spec with
    the same settings (``image_size`` left to the objective) compares alike, another does not."""
    import dataclasses

    from optuna_biotune.biotune.search import _check_resume, _settings, make_objective
    from optuna_biotune.biotune.spec import default_spec
    from optuna_biotune.errors import UsageError

    spec = dataclasses.replace(default_spec(), image_size=None)
    study = optuna.create_study(direction="maximize")
    make_objective(spec)._check_protocol(study)  # what its first evaluation stores
    assert study.user_attrs["biotune:spec"]["image_size"] == 32  # as the objective resolved it
    _check_resume(study, _settings(spec, make_objective(spec)))
    other = spec.replace(max_epochs=spec.max_epochs + 1)
    with pytest.raises(UsageError, match="max_epochs"):
        _check_resume(study, _settings(other, make_objective(other)))
