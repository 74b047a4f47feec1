"""The documentation site in ``docs/``: it builds with warnings as errors, its links lead to
files that exist, and its Python examples run.

Every fenced ``python`` block of ``docs/*.md`` runs as written, in a fresh folder that holds an
empty ``studies/`` and a link to the checkout's ``hub/`` (the examples' relative paths). Two
markers, HTML comments on the lines right above a block's opening fence (a rendered page does
not show them), change that:

- ``<!-- example: needs a GPU -->`` (or ``needs a network``, ``needs a server``, or several,
  with a reason after them): the block is only compiled, not run. The line must name a network,
  a GPU or a server; nothing else excuses an example.
- ``<!-- example: cut `old` -> `new` -->``: ``old``, which must appear exactly once in the
  block, is replaced by ``new`` before it runs, to cut a budget (``n_trials=140`` ->
  ``n_trials=12``); a block may carry several.

What an example must have done is checked in :data:`CHECKS`, keyed by a string that picks
exactly one runnable block. The README's examples are run by ``tests/test_readme.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
NEEDS = ("network", "gpu", "server")

_FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.M | re.S)
_MARKER = re.compile(r"^<!-- example: (.*?) -->$")
_CUT = re.compile(r"^cut `(.+)` -> `(.*)`$")


@dataclass
class Example:
    """One ``python`` block of a page, with its markers."""

    page: Path
    line: int
    code: str
    cuts: list[tuple[str, str]] = field(default_factory=list)
    needs: str | None = None

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"

    def runnable(self) -> str:
        code = self.code
        for old, new in self.cuts:
            assert code.count(old) == 1, f"{self.name}: the example no longer contains {old!r}"
            code = code.replace(old, new)
        return code


def examples(page: Path) -> list[Example]:
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].splitlines()
        example = Example(page, len(before) + 1, match.group(1))
        for raw in reversed(before):
            marker = _MARKER.match(raw.strip())
            if marker is None:
                break
            words = marker.group(1)
            cut = _CUT.match(words)
            if cut:
                example.cuts.insert(0, (cut.group(1), cut.group(2)))
            elif words.startswith("needs "):
                example.needs = words
            else:
                raise AssertionError(f"{page.name}:{example.line}: unknown marker {raw!r}")
        found.append(example)
    return found


ALL = [example for page in PAGES for example in examples(page)]
RUNNABLE = [example for example in ALL if example.needs is None]


def _study(namespace: dict[str, Any]) -> optuna.Study:
    study = namespace["study"]
    assert isinstance(study, optuna.Study)
    return study


def _complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _generic_sampler(namespace: dict[str, Any], folder: Path) -> None:
    assert (folder / "studies" / "biotune.db").is_file()
    loaded = optuna.load_study(study_name=None, storage="sqlite:///studies/biotune.db")
    assert _complete(loaded) == 30


def _baseline(namespace: dict[str, Any], folder: Path) -> None:
    assert 0.0 < namespace["result"]["test_accuracy_mean"] <= 1.0


def _evoprune(namespace: dict[str, Any], folder: Path) -> None:
    assert _complete(_study(namespace)) == 12


def _arrays(namespace: dict[str, Any], folder: Path) -> None:
    assert _complete(_study(namespace)) == 1
    assert namespace["best"]["mask"], "the best trial records the blocks it trained"


def _hub(namespace: dict[str, Any], folder: Path) -> None:
    assert type(_study(namespace).sampler).__name__ == "BioTuneSampler"


#: What an example must have done, keyed by a string of the one block it checks.
CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "exploit_step=0.25": _generic_sampler,
    "run_baseline(": _baseline,
    "EvoPruneObjective(dataset=": _evoprune,
    "ArrayDataset(images=": _arrays,
    "load_local_module(": _hub,
}


def _light(example: Example) -> bool:
    """An example that trains nothing runs in the fast loop; the others are slow."""
    return not re.search(r"Objective\(|run_baseline\(", example.code)


@pytest.mark.parametrize(
    "example",
    [pytest.param(e, id=e.name, marks=() if _light(e) else pytest.mark.slow) for e in RUNNABLE],
)
def test_example_runs(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    (tmp_path / "hub").symlink_to(ROOT / "hub", target_is_directory=True)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(example.runnable(), str(example.page), "exec"), namespace)
    for key, check in CHECKS.items():
        if key in example.code:
            check(namespace, tmp_path)


def test_every_check_has_its_example() -> None:
    for key in CHECKS:
        found = [e.name for e in RUNNABLE if key in e.code]
        assert len(found) == 1, f"{key!r} is in {len(found)} runnable examples: {found}"


def test_examples_not_run_need_a_network_a_gpu_or_a_server() -> None:
    assert ALL, "docs/ has no python examples"
    for example in ALL:
        if example.needs is not None:
            assert any(need in example.needs.lower() for need in NEEDS), (
                f"{example.name}: {example.needs!r} names no network, GPU or server"
            )
        compile(example.runnable(), example.name, "exec")  # even those not run are Python


def test_toml_examples_are_specs_the_command_reads(tmp_path: Path) -> None:
    """Every ```toml block is a study spec ``optuna-biotune search SPEC.toml`` accepts: no key
    that the spec does not know (a renamed setting shows up here)."""
    from optuna_biotune.biotune.spec import load_spec

    blocks = [
        b
        for page in PAGES
        for b in re.findall(r"^```toml\n(.*?)^```", page.read_text(), flags=re.M | re.S)
    ]
    assert blocks, "docs/ shows no spec"
    for i, block in enumerate(blocks):
        path = tmp_path / f"spec{i}.toml"
        path.write_text(block)
        load_spec(path)


_LINK = re.compile(r"\]\(([^()\s]+)\)")


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_relative_links_lead_to_files_that_exist(page: Path) -> None:
    text = _FENCE.sub("", page.read_text())
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or a section of the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """What ``.ci/run`` runs, into a temporary folder (about 15 s)."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "html" / "api.html").is_file()
