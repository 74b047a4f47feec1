"""Every storage URL problem is one line naming the URL (password hidden) and the fix: exit 2
for a malformed or unusable URL, exit 1 for a server that does not answer. Nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from optuna_biotune import cli


def _search(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["search", "--study", "x", "--storage", url])
    err = capsys.readouterr().err
    return code, err


def _assert_one_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("optuna-biotune: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _local_cases(tmp: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    (tmp / "garbage.db").write_text("not a database\n" * 100)
    (tmp / "garbage.log").write_text("not a journal\n")
    (tmp / "folder.db").mkdir()
    (tmp / "folder.log").mkdir()
    return [
        (
            "sqlite:////proc/nope/x.db",
            2,
            ("'sqlite:////proc/nope/x.db'", "cannot create the folder"),
        ),
        (f"sqlite:///{tmp}/garbage.db", 2, ("garbage.db", "is not an SQLite database")),
        (f"sqlite:///{tmp}/folder.db", 2, ("names a folder", "folder.db/study.db")),
        ("sqlite://", 2, ("in memory", "use a file")),
        ("sqlite:///:memory:", 2, ("in memory",)),
        ("/proc/nope/x.log", 2, ("cannot create the folder '/proc/nope'",)),
        (f"{tmp}/folder.log", 2, ("is a folder",)),
        (f"{tmp}/garbage.log", 2, ("is not an Optuna journal file",)),
        ("nosuchdb://x", 2, ("malformed", "fix the URL")),
        ("postgresql+psycopg://u:secret@127.0.0.1:notaport/db", 2, ("malformed", "u:***@")),
        ("mysql://u:secret@127.0.0.1/db", 2, ("missing driver", "u:***@")),
        ("postgresql+psycopg://u:secret@127.0.0.1:1/db", 1, ("unreachable", "u:***@")),
        ("postgresql+psycopg://u:secret@no-such-host.invalid/db", 1, ("unreachable",)),
    ]


@pytest.mark.parametrize("index", range(13))
def test_a_bad_storage_url_is_one_line_with_the_right_exit_code(
    index: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    url, code, fragments = _local_cases(tmp_path)[index]
    before = _snapshot(tmp_path)
    got, err = _search(url, capsys)
    assert got == code, err
    _assert_one_line(err, *fragments)
    assert "secret" not in err
    assert _snapshot(tmp_path) == before  # nothing written, nothing created


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in folder.rglob("*")
    }


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "fragment"),
    [("password", "password authentication failed"), ("database", "does not exist")],
)
def test_wrong_credentials_or_database_are_unusable_urls(
    change: str, fragment: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server answers and says no: the URL is wrong (exit 2), not the server away."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    if change == "password":
        url = url.set(password="wrong-secret")
    else:
        url = url.set(database="biotune_no_such_database")
    got, err = _search(url.render_as_string(hide_password=False), capsys)
    assert got == 2, err
    _assert_one_line(err, fragment, "fix the user, password or database name")
    assert "wrong-secret" not in err
