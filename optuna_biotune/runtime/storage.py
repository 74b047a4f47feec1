"""Opening storages: one function for every command and method (``open_storage``).

An RDB URL (SQLite, PostgreSQL, MySQL) opens as a
:class:`~optuna_biotune.runtime.workers.WorkerStorage` with a
heartbeat, so a worker that dies has its
running trial failed (and its slot issued again) by the next worker on the study; a journal
``.log`` path opens as a journal storage. Bad URLs, unreachable servers and missing databases
raise one-line :class:`~optuna_biotune.errors.UsageError` / ``RuntimeFailure`` messages that
name the fix. :func:`jsonable` is what goes into a study attr as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna_biotune.errors import BioTuneError, RuntimeFailure, UsageError

if TYPE_CHECKING:
    import optuna

#: Heartbeat of RDB storages: a running trial records a heartbeat every HEARTBEAT_INTERVAL s;
#: one silent for GRACE_PERIOD s (its worker died) is failed by the next worker on the study.
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            return Path(path)
    return None


def open_storage(
    url: str,
    *,
    must_exist: bool = False,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
) -> optuna.storages.BaseStorage:
    """Open an Optuna storage: an RDB URL (SQLite, PostgreSQL, ...) or a journal ``.log`` file.

    RDB storages get a heartbeat (every ``heartbeat_interval`` seconds), so a trial left
    RUNNING by a killed process on another machine is marked FAIL after ``grace_period``
    seconds of silence (and its slot issued again) by the next process on the study; one on
    this machine is marked FAIL at once (:mod:`optuna_biotune.runtime.workers`).

    Every problem is one line naming the URL (password hidden) and the fix.

    Raises:
        UsageError: A malformed or unusable URL: unknown dialect, missing driver, a SQLite or
            journal path that cannot be created or is not a study file, an in-memory SQLite
            URL (nothing would outlive the command), wrong credentials, a database that does
            not exist, a schema that needs ``optuna storage upgrade``; or (``must_exist``) a
            file that does not exist.
        RuntimeFailure: The server does not answer (refused, timed out, unknown host).
    """
    import optuna

    if not isinstance(url, str) or not url.strip():
        raise UsageError("`--storage` must be a storage URL such as sqlite:///studies/x.db.")
    if "://" not in url:
        if url.endswith((".log", ".jsonl")):
            return _open_journal(url, must_exist=must_exist)
        raise UsageError(
            f"`--storage` {url!r} is not a URL; use sqlite:///path.db, "
            "postgresql+psycopg://user:pw@host/db, or a journal path ending in .log."
        )
    shown = _shown_url(url)
    if url.startswith("sqlite") and _sqlite_path(url) is None:
        raise UsageError(
            f"`--storage` {shown!r} keeps the study in memory, lost when the command ends; "
            "use a file such as sqlite:///studies/x.db."
        )
    sqlite = _sqlite_path(url)
    if sqlite is not None:
        if must_exist and not sqlite.is_file():
            raise UsageError(f"no study database at {str(sqlite)!r}; run `search` first.")
        if sqlite.is_dir():
            raise UsageError(
                f"`--storage` {shown!r} names a folder; give a database file inside it, "
                f"e.g. sqlite:///{sqlite / 'study.db'}."
            )
        _make_folder(sqlite.parent, shown)
    import warnings

    from optuna_biotune.runtime.workers import WorkerStorage

    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return WorkerStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                engine_kwargs=_engine_kwargs(url),
            )
    except ImportError as err:
        raise UsageError(
            f"storage {shown!r} needs a missing driver ({_first_line(err)}); install it "
            "(PostgreSQL: pip install 'psycopg[binary]' and use postgresql+psycopg://)."
        ) from None
    except Exception as err:  # sqlalchemy raises many types for a bad or unreachable URL
        raise _storage_problem(shown, err, sqlite=sqlite is not None) from None


def _shown_url(url: str) -> str:
    """``url`` as messages show it: the password hidden (``user:***@host``)."""
    import re

    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url, count=1)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _make_folder(folder: Path, shown: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"`--storage` {shown!r}: cannot create the folder {str(folder)!r} "
            f"({err.strerror or type(err).__name__}); use a path in a writable folder."
        ) from None


#: Server messages that mean the URL itself is wrong (credentials, database, role), not that
#: the server is away: exit 2, not 1.
_UNUSABLE = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
    "access denied",
    "unknown database",
)


def _storage_problem(shown: str, err: Exception, *, sqlite: bool) -> BioTuneError:
    """The one-line error for a storage URL that failed to open."""
    import sqlalchemy.exc

    kind = type(err).__name__
    first = _first_line(err)
    inner = " ".join(str(getattr(err, "orig", None) or err).split()).lower()
    if isinstance(err, sqlalchemy.exc.ArgumentError | ValueError) or kind == "NoSuchModuleError":
        return UsageError(f"`--storage` {shown!r} is malformed ({first}); fix the URL.")
    if isinstance(err, RuntimeError) and "storage upgrade" in str(err):
        return UsageError(
            f"storage {shown!r} was made by an older Optuna; run `optuna storage upgrade "
            "--storage URL` once, then rerun."
        )
    if sqlite:
        if "not a database" in inner or "malformed" in inner:
            return UsageError(
                f"`--storage` {shown!r} is not an SQLite database; point it at a study "
                "database or a new file."
            )
        return UsageError(
            f"`--storage` {shown!r} cannot be opened ({first[:160]}); use a readable and "
            "writable database file."
        )
    if any(marker in inner for marker in _UNUSABLE):
        return UsageError(
            f"storage {shown!r} refused the connection ({first[:200]}); fix the user, "
            "password or database name in the URL."
        )
    return RuntimeFailure(
        f"storage {shown!r} is unreachable ({kind}: {first[:160]}); check the server and URL."
    )


def _open_journal(url: str, *, must_exist: bool) -> optuna.storages.BaseStorage:
    path = Path(url)
    if must_exist and not path.is_file():
        raise UsageError(f"journal file {url!r} does not exist; run `search` first.")
    if path.is_dir():
        raise UsageError(
            f"`--storage` {url!r} is a folder; give a journal file path ending in .log."
        )
    _make_folder(path.parent, url)
    from optuna.storages.journal import JournalFileBackend

    from optuna_biotune.runtime.workers import WorkerJournalStorage

    try:
        if path.is_file():  # every line of a journal is a JSON operation: check the first
            with path.open("rb") as f:
                first = f.readline(1 << 20)
            if first.strip() and not isinstance(json.loads(first).get("op_code"), int):
                raise ValueError("its first line is no journal operation")
        storage = WorkerJournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()  # reads the whole file now
        return storage
    except OSError as err:
        raise UsageError(
            f"`--storage` {url!r} cannot be opened ({err.strerror or type(err).__name__}); "
            "use a readable and writable file."
        ) from None
    except Exception as err:  # a file that is not an Optuna journal
        raise UsageError(
            f"`--storage` {url!r} is not an Optuna journal file ({_first_line(err)[:120]}); "
            "point it at a study's journal or a new file."
        ) from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("postgresql"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {}


def load_study(spec_or_name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Load an existing study by name, or raise :class:`UsageError` naming those present."""
    import optuna

    try:
        return optuna.load_study(study_name=spec_or_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UsageError(
            f"no study {spec_or_name!r} in the storage (it has {names}); "
            "pass --study NAME or run `search` first."
        ) from None


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (what a study attr and ``--json`` hold): arrays and tuples
    become lists, paths strings (:func:`json_default`)."""
    return json.loads(json.dumps(value, default=json_default))


def json_default(value: Any) -> Any:
    """``json.dumps`` ``default=`` for the package's values: numpy arrays and scalars, sets,
    tuples and paths; anything else is a ``TypeError``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


__all__ = [
    "GRACE_PERIOD",
    "HEARTBEAT_INTERVAL",
    "json_default",
    "jsonable",
    "load_study",
    "open_storage",
]
