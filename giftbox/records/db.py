"""The connection and its transactions: where the records live, how a write takes the lock,
and bringing the schema up to date on open (``schema.MIGRATIONS``), the same on SQLite and
PostgreSQL. The few spelling differences (placeholders, ``RETURNING id``, where the schema
version lives, how the write lock is taken) are in ``_PgConnection`` and ``Database``.

Every room of the records (``builds``, ``nightly_runs``, ``history``, ``verdicts``) is a
``Database`` that adds the queries of its tables.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from giftbox.errors import StateError
from giftbox.records.schema import ID_TABLES, MIGRATIONS, SCHEMA_VERSION, postgres_ddl
from giftbox.settings import Settings

DB_FILE = "giftbox.db"
DEFAULT_TIMEOUT = 30.0  # seconds a writer waits for another before giving up
STATUSES = ("running", "succeeded", "failed")
_PG_WRITE_LOCK = 0x67696674  # "gift": the advisory lock every PostgreSQL writer takes first


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers) and no $USER
        return f"uid {os.getuid()}"


def who(settings: Settings) -> str:
    """Who is acting: ``settings.user`` (``$GIFTBOX_USER``: CI sets it to the person or bot
    behind a run), else the login name."""
    return settings.user or _login()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- where the records live ---------------------------------------------------------------


def database_location(settings: Settings) -> str:
    """``settings.database`` (``$GIFTBOX_DATABASE``) or ``<state dir>/giftbox.db``."""
    return settings.database or str(settings.state_dir / DB_FILE)


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def redact(location: str) -> str:
    """``location`` without its password: what errors and logs may show."""
    if not is_postgres(location):
        return location
    parts = urllib.parse.urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _sqlite_path(location: str) -> Path:
    if location.startswith("sqlite:///"):
        return Path(location[len("sqlite://"):])
    if "://" in location:
        raise StateError(f"GIFTBOX_DATABASE '{redact(location)}' is not a file path, "
                         "sqlite:///path or postgresql:// URL",
                         hint="e.g. GIFTBOX_DATABASE=postgresql://giftbox:…@db.example:5432/"
                              "giftbox, or unset it for <state dir>/giftbox.db")
    return Path(location)


class _Row(dict[str, Any]):
    """A PostgreSQL row read like ``sqlite3.Row``: by column name or by position."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


class _PgResult:
    """What ``execute`` hands back on PostgreSQL: the rows (read eagerly) and ``lastrowid``."""

    def __init__(self, rows: list[_Row], lastrowid: int | None) -> None:
        self._rows = rows
        self.lastrowid = lastrowid

    def fetchone(self) -> _Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[_Row]:
        return list(self._rows)

    def __iter__(self) -> Iterator[_Row]:
        return iter(self._rows)


_INSERT_RE = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)


class _PgConnection:
    """The slice of ``sqlite3.Connection`` Database uses, over a psycopg 3 connection.

    SQL is written once, in SQLite's spelling; here ``?`` becomes ``%s`` (no statement of ours
    has a literal ``?`` or ``%``) and an INSERT into a table with an id returns it.
    """

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> _PgResult:
        text = self._sql(sql)
        m = _INSERT_RE.match(sql)
        returning = bool(m and m.group(1) in ID_TABLES and "RETURNING" not in sql.upper())
        if returning:
            text += " RETURNING id"
        with self.raw.cursor() as cur:
            cur.execute(text, tuple(args) if args else None)
            rows = [_Row(r) for r in cur.fetchall()] if cur.description else []
        lastrowid = int(rows[0]["id"]) if returning and rows else None
        return _PgResult(rows, lastrowid)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    def close(self) -> None:
        self.raw.close()


class Database:
    """One connection to the records database; use as a context manager or ``close()``.

    ``location``: a SQLite file (a Path, a path string or ``sqlite:///path``) or a
    ``postgresql://`` URL. ``user``: who the records name as acting when a call names no
    ``actor`` (``Settings.user``; None is the login name).
    """

    def __init__(self, location: Path | str, *, timeout: float = DEFAULT_TIMEOUT,
                 user: str | None = None) -> None:
        self.timeout = timeout
        self.user = user
        self._nested = False  # inside ``once``: writes join the enclosing transaction
        self.postgres = isinstance(location, str) and is_postgres(location)
        self.conn: Any
        if self.postgres:
            assert isinstance(location, str)
            self.path: Path | str = redact(location)  # what messages name, never the password
            self._connect_postgres(location)
        else:
            path = _sqlite_path(location) if isinstance(location, str) else location
            self.path = path
            self._connect_sqlite(path)
        try:
            if not self.postgres:
                self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                self._wal()
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    def _connect_sqlite(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves (the sqlite3 module's
            # implicit BEGIN is DEFERRED, which upgrades to a write lock mid-transaction and
            # can then fail with SQLITE_BUSY without waiting).
            self.conn = sqlite3.connect(str(path), timeout=self.timeout, isolation_level=None,
                                        check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open the build records {path}: {exc}",
                             hint="check that the state directory is writable") from None
        self.conn.row_factory = sqlite3.Row

    def _connect_postgres(self, url: str) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise StateError("GIFTBOX_DATABASE is a PostgreSQL URL but psycopg (3) is not "
                             "installed", hint="pip install 'psycopg[binary]'") from None
        try:
            # autocommit: transactions are ours (BEGIN in _write), as on SQLite.
            raw = psycopg.connect(url, autocommit=True, row_factory=dict_row,
                                  connect_timeout=max(1, int(self.timeout)))
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StateError(f"cannot connect to the build records database {self.path}: "
                             f"{first.replace(url, str(self.path))}",
                             hint="check that the PostgreSQL server runs and accepts this user "
                                  "(GIFTBOX_DATABASE=postgresql://user:password@host:port/db)"
                             ) from None
        self.conn = _PgConnection(raw)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # --- transactions ---------------------------------------------------------------------

    def _locked(self, exc: Exception) -> StateError:
        how = ("`fuser " + str(self.path) + "` shows who holds it") if not self.postgres else \
            "pg_stat_activity shows who holds it"
        return StateError(
            f"the build records {self.path} are locked by another giftbox process "
            f"(waited {self.timeout:g}s): {exc}",
            hint=f"let the other build or promotion finish and retry; {how}")

    def _wal(self) -> None:
        # Switching to WAL needs a moment of exclusive access, which the busy handler does not
        # always wait for: retry until the timeout. Once WAL, the mode is stored in the file.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self._broken(exc) from None
                if time.monotonic() > deadline:
                    raise self._locked(exc) from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                raise self._broken(exc) from None
        if str(mode).lower() != "wal":
            raise StateError(f"{self.path}: SQLite refused WAL mode (journal_mode={mode})",
                             hint="keep the state directory on a local filesystem")

    def _broken(self, exc: Exception) -> StateError:
        return StateError(f"{self.path} is not a usable build records database: {exc}",
                          hint="move it aside (giftbox starts a new one) or restore a backup")

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction, the write lock taken before anything is read (inside
        ``once``, a part of the enclosing one)."""
        if self._nested:
            yield self.conn
            return
        if self.postgres:
            yield from self._write_postgres()
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise self._locked(exc) from None
            raise self._broken(exc) from None
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self.conn.execute("ROLLBACK")
            raise self._locked(exc) from None

    def _write_postgres(self) -> Iterator[Any]:
        import psycopg

        try:
            self.conn.execute("BEGIN")
            # SET LOCAL does not take parameters; the value is our own integer.
            self.conn.execute(f"SET LOCAL lock_timeout = {int(self.timeout * 1000)}")
            self.conn.execute("SELECT pg_advisory_xact_lock(?)", (_PG_WRITE_LOCK,))
        except psycopg.errors.LockNotAvailable as exc:
            self._pg_rollback()
            raise self._locked(exc) from None
        except psycopg.Error as exc:
            self._pg_rollback()
            raise self._broken(exc) from None
        try:
            yield self.conn
        except BaseException:
            self._pg_rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except psycopg.Error as exc:
            self._pg_rollback()
            raise self._broken(exc) from None

    def _pg_rollback(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.execute("ROLLBACK")

    def user_version(self) -> int:
        if self.postgres:
            row = self.conn.execute("SELECT to_regclass('giftbox_schema') AS t").fetchone()
            if row is None or row["t"] is None:
                return 0
            row = self.conn.execute("SELECT version FROM giftbox_schema").fetchone()
            return int(row["version"]) if row is not None else 0
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _newer(self, version: int) -> StateError:
        from giftbox import __version__

        return StateError(
            f"the build records {self.path} have schema version {version}, newer than this "
            f"giftbox ({__version__}) understands (schema {SCHEMA_VERSION}): the file was "
            "written by a newer giftbox",
            hint="upgrade giftbox to the version that wrote it (pip install -U giftbox); do "
                 "not delete the file, it holds the build and promotion history")

    def _migrate(self) -> None:
        errors: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
        if self.postgres:
            import psycopg

            errors = (psycopg.Error,)
        try:
            version = self.user_version()
        except errors as exc:
            raise self._broken(exc) from None
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        if version == SCHEMA_VERSION:
            return
        with self._write() as db:
            if self.postgres:
                db.execute("CREATE TABLE IF NOT EXISTS giftbox_schema (version INTEGER NOT NULL)")
            version = self.user_version()  # another process may have migrated meanwhile
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            for step in MIGRATIONS[version:]:
                for statement in step:
                    db.execute(postgres_ddl(statement) if self.postgres else statement)
            if self.postgres:
                db.execute("DELETE FROM giftbox_schema")
                db.execute("INSERT INTO giftbox_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                # PRAGMA does not take parameters; the value is our own integer.
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def who(self) -> str:
        """Who a record names when its call names no ``actor``."""
        return self.user or _login()
