"""The README's Python examples run as written, only their budgets cut, and the fine-tuning
example runs the paper's algorithm: what the CLI runs, with the Python API's defaults."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

README = Path(__file__).resolve().parent.parent / "README.md"
NS = "BioTuneSampler"


def _block(marker: str) -> str:
    """The README's one ```python block that contains ``marker``."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"README has {len(found)} python blocks with {marker!r}"
    return found[0]


def _cut(code: str, old: str, new: str) -> str:
    """Replace the budget ``old`` by ``new``: it must appear exactly once, as written."""
    assert code.count(old) == 1, f"the README example no longer contains {old!r}"
    return code.replace(old, new)


def _run(code: str) -> dict:
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_the_fine_tuning_example_runs_the_papers_algorithm() -> None:
    code = _block("BioTuneObjective(dataset=")
    code = _cut(code, "n_trials=140", "n_trials=23")  # generation 0 and generation 1
    code = _cut(
        code,
        'model="efficientnet_lite0")',
        'model="efficientnet_lite0", seeds=1, max_epochs=2)',
    )
    study = _run(code)["study"]
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 23
    # Optuna's default MedianPruner is installed, and cuts nothing: the objective does not
    # prune unless asked (BioTuneObjective(prune=True)).
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert all(len(t.intermediate_values) >= 1 for t in trials)  # curves still reported
    # No invalid individual (nothing above the threshold) is ever evaluated.
    assert not any(t.user_attrs.get("invalid") for t in trials)
    for t in trials:
        genes = [v for k, v in t.params.items() if k.startswith("importance:")]
        assert max(genes) > t.params["threshold"]
    # Each exploitation moves one gene that its parent trained, as the CLI's sampler does.
    exploits = [t for t in trials if t.system_attrs[f"{NS}:slot"]["role"] == "exploit"]
    assert len(exploits) == 6
    for t in exploits:
        parent = trials[t.system_attrs[f"{NS}:slot"]["parents"][0]].params
        moved = [k for k in parent if abs(t.params[k] - parent[k]) > 1e-9]
        assert len(moved) <= 1
        for k in moved:
            assert k != "threshold" and parent[k] > parent["threshold"]


def test_the_fine_tuning_example_would_prune_when_asked() -> None:
    """The same objective with ``prune=True`` under the default pruner does cut evaluations,
    so the test above could fail."""
    from optuna_biotune import BioTuneObjective, BioTuneSampler

    objective = BioTuneObjective(dataset="digits", seeds=1, max_epochs=2, prune=True)
    study = optuna.create_study(direction="maximize", sampler=BioTuneSampler(seed=0))
    study.optimize(objective, n_trials=12)
    assert any(t.state == TrialState.PRUNED for t in study.trials)


def test_the_generic_sampler_example_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    code = _cut(_block("exploit_step=0.25"), "n_trials=140", "n_trials=30")

    def objective(trial: optuna.Trial) -> float:
        genes = [trial.suggest_float(f"importance:b{i}", 0.0, 1.0) for i in range(4)]
        threshold = trial.suggest_float("threshold", 0.0, 1.0)
        return float(np.mean(np.asarray(genes) > threshold))

    # The block continues the README's text: `objective` is the reader's own.
    exec(compile(code, str(README), "exec"), {"objective": objective})
    assert (tmp_path / "studies" / "biotune.db").is_file()
    loaded = optuna.load_study(study_name=None, storage="sqlite:///studies/biotune.db")
    assert len(loaded.get_trials(states=(TrialState.COMPLETE,))) == 30


@pytest.mark.slow
def test_the_baseline_and_evoprune_examples_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(_cut(_block("run_baseline("), "seeds=3, epochs=30", "seeds=1, epochs=1"))
    assert 0.0 < result["result"]["test_accuracy_mean"] <= 1.0
    code = _block("EvoPruneObjective(dataset=")
    code = _cut(code, "n_trials=200", "n_trials=12")
    code = _cut(code, 'layers="first")', 'layers="first", max_epochs=2)')
    namespace = _run(code)
    assert len(namespace["study"].get_trials(states=(TrialState.COMPLETE,))) == 12
