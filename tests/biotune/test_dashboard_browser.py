"""optuna-dashboard in a real headless Chromium: what a person sees, not the HTTP API.

``scripts/dashboard_screenshot.sh`` starts ``optuna-biotune dashboard`` on loopback for a tiny
finished study with a report, lets Chromium render the study page, the trial list and the note,
and writes the screenshot and the rendered DOMs; the test reads them. The dashboard is a
single-page app whose served HTML is an empty shell, so everything asserted here exists only
because the browser ran the app against the study (``test_served_shell_holds_none_of_it``
checks that the shell passes none of these checks).

Outside CI (env ``CI`` unset) the test is skipped when no Chromium is installed; in CI, where
``.ci/run`` installs Debian's ``chromium``, a missing browser fails it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from product_studies import make_study

from optuna_biotune.biotune import attrs, report

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "dashboard_screenshot.sh"
N_TRIALS = 10
SIZE = (1000, 1500)


class _Page(HTMLParser):
    """The visible text of a rendered page (scripts and styles left out) and its images."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self._skip = 0
        self._text: list[str] = []
        self.images: list[dict[str, str]] = []
        self.feed(html)
        self.close()
        self.text = " ".join(" ".join(self._text).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "style"}:
            self._skip += 1
        elif tag == "img":
            self.images.append({k: v or "" for k, v in attrs})

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"} and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._text.append(data)

    def image(self, alt: str) -> dict[str, str] | None:
        return next((i for i in self.images if i.get("alt") == alt), None)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _require_chromium() -> None:
    """Skip outside CI when the script finds no Chromium; fail in CI."""
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--browser"], capture_output=True, text=True, timeout=30
    )
    if proc.returncode == 0:
        return
    reason = proc.stderr.strip() or f"exit {proc.returncode}"
    if _in_ci():
        pytest.fail(f"in CI the dashboard test needs Chromium (.ci/run installs it): {reason}")
    pytest.skip(f"not in CI and no Chromium installed ({reason})")


def _finished_study(url: str, name: str, tmp_path: Path) -> tuple[optuna.Study, dict]:
    """A tiny finished study with its report (Fig. 2 and the note) attached as artifacts."""
    study = make_study(url, name, n_trials=N_TRIALS)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    study.set_user_attr(attrs.ARTIFACTS_ATTR, str(artifacts))
    written = report.write_report(
        study, out_dir=tmp_path / "report", artifact_store=FileSystemArtifactStore(str(artifacts))
    )
    return study, written


def _check_study_page(page: _Page, *, study: optuna.Study, fig2_src: str) -> None:
    assert f"{study.study_name} (id=" in page.text, "the study page did not render the study"
    assert f"Best Trial (number={study.best_trial.number})" in page.text
    card = page.image("fig2.png")
    assert card is not None, f"no Fig. 2 artifact card; images: {page.images}"
    assert card["src"] == fig2_src


def _check_trial_list(page: _Page, *, study: optuna.Study) -> None:
    assert f"{N_TRIALS} Trials" in page.text, "the trial list did not render"
    for number in range(N_TRIALS):
        assert f"Trial {number} Complete" in page.text
    assert f"Trial {study.best_trial.number} Complete Best Trial" in page.text
    # The selected trial (the first) shows its genes and what the objective recorded.
    first = study.trials[0]
    assert f"Trial 0 (trial_id={first._trial_id}) Complete" in page.text
    assert f"threshold {first.params['threshold']!r}" in page.text
    for key in ("mask", "lr_weights", "trainable_share", "seed_accuracies", "generation"):
        assert f" {key} " in page.text, f"user attr {key} not shown"


def _check_note(page: _Page, *, study: optuna.Study, fig2_src: str) -> None:
    assert f"{study.best_value:.4f}" in page.text, "the note did not render"
    figure = page.image("Fig. 2")
    assert figure is not None, f"no Fig. 2 in the note; images: {page.images}"
    assert figure["src"] == fig2_src


@pytest.mark.slow
def test_dashboard_renders_trials_and_fig2_in_chromium(
    sqlite_url: str, study_name: str, tmp_path: Path
) -> None:
    _require_chromium()
    study, written = _finished_study(sqlite_url, study_name, tmp_path)
    shot, dom = tmp_path / "shot" / "dashboard.png", tmp_path / "dom"
    proc = subprocess.run(
        [
            *("bash", str(SCRIPT), "--study", study_name, "--storage", sqlite_url),
            *("--out", str(shot), "--dom", str(dom), "--size", "x".join(map(str, SIZE))),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    study_id = study._study_id
    fig2_src = f"/artifacts/{study_id}/{written['artifacts']['fig2.png']}"
    assert f"/dashboard/studies/{study_id}" in proc.stdout
    _check_study_page(_Page((dom / "study.html").read_text()), study=study, fig2_src=fig2_src)
    _check_trial_list(_Page((dom / "trials.html").read_text()), study=study)
    _check_note(_Page((dom / "note.html").read_text()), study=study, fig2_src=fig2_src)

    # The screenshot is the requested size and shows a drawn page, not a blank one.
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == SIZE
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is (nearly) blank"


def _get_in_process(app: Callable[..., Iterable[bytes]], path: str) -> tuple[str, bytes]:
    """GET ``path`` from a WSGI app without a server: (status line, body)."""
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
    }
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], body


def test_served_shell_holds_none_of_it(sqlite_url: str, study_name: str, tmp_path: Path) -> None:
    """The checks above fail on the page as served (before any script runs)."""
    from optuna_dashboard import wsgi

    study, written = _finished_study(sqlite_url, study_name, tmp_path)
    app = wsgi(sqlite_url, FileSystemArtifactStore(str(tmp_path / "artifacts")))
    fig2_src = f"/artifacts/{study._study_id}/{written['artifacts']['fig2.png']}"
    for path, check in [
        ("", lambda p: _check_study_page(p, study=study, fig2_src=fig2_src)),
        ("/trials", lambda p: _check_trial_list(p, study=study)),
        ("/note", lambda p: _check_note(p, study=study, fig2_src=fig2_src)),
    ]:
        status, body = _get_in_process(app, f"/dashboard/studies/{study._study_id}{path}")
        assert status.startswith("200") and b"<html" in body.lower()
        with pytest.raises(AssertionError):
            check(_Page(body.decode()))
