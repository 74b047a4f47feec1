"""The OptunaHub packages in ``hub/``: loaded the registry's way, examples run, READMEs as asked.

The registry's rules (optuna/optunahub-registry, ``template/``): a package folder per feature
with ``__init__.py``, ``README.md`` whose front matter has ``author``, ``title``,
``description``, ``tags`` (a sampler's include ``sampler``), ``optuna_versions`` and
``license``, and the sections Abstract, Class or Function Names, Installation, Example and
Others; ``LICENSE``; optionally ``example.py`` and ``requirements.txt``.
"""

from __future__ import annotations

import ast
import inspect
import re
import runpy
import subprocess
import sys
from pathlib import Path

import optuna
import optunahub
import pytest
import yaml

import optuna_biotune

HUB = Path(__file__).resolve().parents[2] / "hub"
#: Package -> the names its ``__init__`` exposes (all from ``optuna_biotune``).
PACKAGES = {
    "biotune": ["BioTuneSampler", "decode", "gene_names"],
    "evoprune": ["EvoPruneSampler"],
}
FRONT_MATTER_KEYS = {"author", "title", "description", "tags", "optuna_versions", "license"}
SECTIONS = ["Abstract", "Class or Function Names", "Installation", "Example", "Others"]


def _readme(package: str) -> tuple[dict, str]:
    text = (HUB / "samplers" / package / "README.md").read_text()
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, flags=re.S)
    assert match, "README.md must open with a front matter block between --- lines"
    return yaml.safe_load(match.group(1)), match.group(2)


def _load(package: str):
    return optunahub.load_local_module(package=f"samplers/{package}", registry_root=str(HUB))


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_front_matter_and_sections(package: str) -> None:
    meta, body = _readme(package)
    assert set(meta) == FRONT_MATTER_KEYS
    for key in ("author", "title", "description", "license"):
        assert isinstance(meta[key], str) and meta[key].strip(), key
    assert meta["license"] == "MIT License"
    assert isinstance(meta["tags"], list) and all(isinstance(t, str) for t in meta["tags"])
    assert "sampler" in meta["tags"]
    versions = [str(v) for v in meta["optuna_versions"]]
    assert versions and all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in versions)
    # Confirmed on the Optuna line this project supports (pyproject: optuna>=5,<6).
    assert {v.split(".")[0] for v in versions} == {optuna.__version__.split(".")[0]}

    headings = re.findall(r"^## (.+)$", body, flags=re.M)
    assert headings == SECTIONS
    # Every exposed name is documented, classes with their real signature.
    names = body.split("## Class or Function Names", 1)[1].split("## Installation", 1)[0]
    for name in PACKAGES[package]:
        assert f"- `{name}(" in names, name
        obj = getattr(optuna_biotune, name)
        if inspect.isclass(obj):
            signature = inspect.signature(obj)
            bare = signature.replace(
                parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                return_annotation=signature.empty,
            )
            signature = str(bare).replace("'", '"')
            assert f"`{name}{signature}`" in names, f"{name}: README shows another signature"

    folder = HUB / "samplers" / package
    assert (folder / "LICENSE").read_text().startswith("MIT License\n")
    assert (folder / "requirements.txt").read_text().split() == ["optuna-biotune"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_the_installed_library_and_itself_relatively(package: str) -> None:
    for path in (HUB / "samplers" / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                root = (node.module or "").split(".")[0]
                assert root not in {"hub", "samplers", package}, f"{path.name}: {node.module}"
    module = _load(package)
    assert sorted(module.__all__) == sorted(PACKAGES[package])
    for name in PACKAGES[package]:
        assert getattr(module, name) is getattr(optuna_biotune, name)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_example_runs_a_complete_study(
    package: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = HUB / "samplers" / package / "example.py"
    namespace = runpy.run_path(str(example), run_name="hub_example")
    study = namespace["main"]()
    out = capsys.readouterr().out
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == namespace["N_TRIALS"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # The printed comparison is the study's own result, and the sampler beat random search.
    ours, random = (float(v) for v in re.findall(r"best (\d\.\d{4})", out))
    assert ours == round(study.best_value, 4) and ours > random

    # As a user runs it: a script, from any folder.
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == out
    # The documentation pastes this output; it must be what the example prints.
    readme = (HUB.parent / "docs" / "optunahub.md").read_text()
    command = f"python hub/samplers/{package}/example.py\n"
    assert command in readme, "docs/optunahub.md shows no run of this example"
    pasted = readme.split(command, 1)[1].split("\n$ ", 1)[0].split("\n```", 1)[0] + "\n"
    assert pasted == out


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_readme_example_runs(package: str) -> None:
    _, body = _readme(package)
    section = body.split("## Example", 1)[1].split("## Others", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    registry_call = f'optunahub.load_module("samplers/{package}")'
    assert registry_call in code
    local_call = (
        f'optunahub.load_local_module(package="samplers/{package}", registry_root={str(HUB)!r})'
    )
    namespace: dict = {}
    exec(compile(code.replace(registry_call, local_call), "README example", "exec"), namespace)
    study = namespace["study"]
    trials = study.get_trials(deepcopy=False)
    assert trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_readme_signatures_are_the_library_s(package: str) -> None:
    """Each ``Name(*, a=1, ...)`` line of "Class or Function Names" is the class's signature,
    defaults included (a changed default must reach the registry's page)."""
    _, body = _readme(package)
    section = body.split("## Class or Function Names", 1)[1].split("\n## ", 1)[0]
    found = 0
    for name, params in re.findall(r"- `(\w+)\((\*, [^`]*)\)`", section):
        sig = inspect.signature(getattr(optuna_biotune, name))
        shown = ", ".join(
            f"{p.name}={p.default!r}".replace("'", '"')
            for p in sig.parameters.values()
            if p.default is not inspect.Parameter.empty
        )
        assert params == "*, " + shown, name
        found += 1
    assert found, "no signature line found"
