"""Shared fixtures: real storages (SQLite on disk, PostgreSQL started by ``.ci/run``)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

# OpenMP threads that spin while waiting make torch 5-10x slower on a shared, loaded CPU
# (measured: 2.5-5 s -> 0.2-0.6 s for the same forward passes); must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import pytest

# Tests live in their room's folder (tests/engine/, tests/runtime/, ...) and share the helpers
# here (conftest, tiny_cli, product_studies); pytest puts this folder on sys.path, and the
# worker scripts the tests start (``python tests/runtime/test_workers.py ...``) find the helpers
# through PYTHONPATH.
_TESTS = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTS, os.environ.get("PYTHONPATH", "")) if p
)

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_PG_URL = "postgresql+psycopg://biotune:biotune@127.0.0.1:5432/biotune_test"


def ctrl_c_reaches_child() -> None:
    """``preexec_fn`` for a child the test sends SIGINT to, as a terminal's Ctrl-C would.

    A job started in the background of a non-interactive shell (as CI harnesses may start
    ``.ci/run``) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt; a
    terminal's foreground command has the default disposition, which this restores.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(url: str) -> bool:
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a real PostgreSQL database; skips outside CI when none can be started."""
    url = os.environ.get("BIOTUNE_TEST_POSTGRES_URL", _DEFAULT_PG_URL)
    if _reachable(url):
        return url
    # Try to start the local server the way .ci/run does (needs root and Debian's postgresql).
    if os.geteuid() == 0:
        try:
            out = (
                subprocess.run(
                    ["bash", str(REPO / ".ci" / "postgres.sh")],
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=True,
                )
                .stdout.strip()
                .splitlines()
            )
            if out and _reachable(out[-1]):
                return out[-1]
        except Exception:
            pass
    if _in_ci():
        pytest.fail(f"PostgreSQL is not reachable at {url} in CI; .ci/run should have started it.")
    pytest.skip("no PostgreSQL server could be started here (outside CI)")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite database file on disk."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each real RDB storage in turn: SQLite on disk, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def study_name() -> str:
    """A study name unique across tests (PostgreSQL is shared by the whole run)."""
    return f"test-{uuid.uuid4().hex[:12]}"
