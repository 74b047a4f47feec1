"""The README: short, its set-up commands the ones CI runs, and its Python example runs as
written, only its budget cut, running the paper's algorithm: what the CLI runs, with the
Python API's defaults. The examples of the documentation site run in ``tests/test_docs.py``."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INSTALL_AND_RUN = "pip install -e . && optuna-biotune search"
INSTALL_AND_TEST = 'pip install -e ".[test]" && python -m pytest'
NS = "BioTuneSampler"


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def _block(marker: str) -> str:
    """The README's one ```python block that contains ``marker``."""
    found = [b for b in _blocks() if marker in b]
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


@pytest.mark.slow
def test_the_fine_tuning_example_would_prune_when_asked() -> None:
    """The same objective with ``prune=True`` under the default pruner does cut evaluations,
    so the test above could fail."""
    from optuna_biotune import BioTuneObjective, BioTuneSampler

    objective = BioTuneObjective(dataset="digits", seeds=1, max_epochs=2, prune=True)
    study = optuna.create_study(direction="maximize", sampler=BioTuneSampler(seed=0))
    study.optimize(objective, n_trials=12)
    assert any(t.state == TrialState.PRUNED for t in study.trials)


def test_the_readme_reads_in_five_minutes() -> None:
    """At most 200 lines, the Python example on the first screen, and it is the only one (the
    tests above run it)."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    assert "```python" in lines[:100], "the Python example must be within the first 100 lines"
    assert len(_blocks()) == 1, "README.md's only Python example is the one run above"


def test_the_two_set_up_commands_are_the_ones_ci_runs() -> None:
    """Exactly two commands under "Set up and go": one installs and runs the main job, one
    installs and runs the tests, and ``.ci/run`` runs the latter word for word."""
    section = README.read_text().split("## Set up and go", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^```bash\n(.*?)\n```", section, flags=re.M | re.S)
    assert commands == [INSTALL_AND_RUN, INSTALL_AND_TEST]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert INSTALL_AND_TEST in ci, ".ci/run must run the README's test command as a line"
