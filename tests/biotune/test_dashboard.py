"""The real optuna-dashboard server, started by ``optuna-biotune dashboard`` on loopback.

The study, its trials (genes, mask, LR weights, trainable share, per-seed accuracies), its
note and its artifacts (Fig. 2, the HTML report) are read back through the dashboard's HTTP API.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from optuna.artifacts import FileSystemArtifactStore
from product_studies import BLOCKS, make_study

from optuna_biotune.biotune import attrs, report
from optuna_biotune.biotune.genome import gene_names

CLI = (sys.executable, "-m", "optuna_biotune.cli")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _wait_up(proc: subprocess.Popen, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"dashboard exited with {proc.returncode}: {out[-2000:]}")
        try:
            _get(url)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    pytest.fail(f"dashboard did not answer {url} within {timeout} s")


@pytest.fixture
def served_study(storage_url: str, study_name: str, tmp_path: Path):
    """A study with a report attached, served by ``optuna-biotune dashboard``."""
    study = make_study(storage_url, study_name, n_trials=10)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    study.set_user_attr(attrs.ARTIFACTS_ATTR, str(artifacts))
    written = report.write_report(
        study, out_dir=tmp_path / "report", artifact_store=FileSystemArtifactStore(str(artifacts))
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "dashboard",
            *("--study", study_name, "--storage", storage_url),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, f"{base}/api/meta")
        yield study, written, base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_serves_trials_note_and_artifacts(served_study) -> None:
    study, written, base = served_study
    studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
    match = [s for s in studies if s["study_name"] == study.study_name]
    assert len(match) == 1
    study_id = match[0]["study_id"]
    detail = json.loads(_get(f"{base}/api/studies/{study_id}"))
    assert len(detail["trials"]) == 10

    # Every trial shows its genes and what the objective recorded.
    for trial in detail["trials"]:
        assert [p["name"] for p in trial["params"]] == gene_names(BLOCKS)
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        for key in ("mask", "lr_weights", "trainable_share", "seed_accuracies", "blocks"):
            assert key in attrs
    best = study.best_trial
    served_best = next(t for t in detail["trials"] if t["number"] == best.number)
    attrs = {a["key"]: a["value"] for a in served_best["user_attrs"]}
    assert json.loads(str(attrs["mask"]).lower().replace("'", '"')) == best.user_attrs["mask"]

    # The study note summarises the run and links Fig. 2.
    note = detail["note"]["body"]
    assert note.startswith("## BioTune") and f"{study.best_value:.4f}" in note
    fig2_id = written["artifacts"]["fig2.png"]
    assert f"/artifacts/{study_id}/{fig2_id}" in note

    # The artifacts are listed and downloadable, byte for byte.
    listed = {a["filename"]: a for a in detail["artifacts"]}
    assert set(listed) == set(written["artifacts"])
    assert listed["fig2.png"]["mimetype"] == "image/png"
    body = _get(f"{base}/artifacts/{study_id}/{fig2_id}")
    assert body == Path(written["fig2.png"]).read_bytes()
    page = _get(f"{base}/artifacts/{study_id}/{written['artifacts']['report.html']}")
    assert b"<h1>BioTune study" in page
    # The dashboard's single-page app is served too (what the screenshot script loads).
    assert b"<html" in _get(f"{base}/dashboard/studies/{study_id}").lower()


def test_dashboard_without_a_database_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "run `search` first" in proc.stderr
    assert not (tmp_path / "none.db").exists()
