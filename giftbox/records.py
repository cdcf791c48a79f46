"""Build records: what was built from which inputs, where it went, when, by whom.

An embedded SQLite database (stdlib ``sqlite3``) at ``<state dir>/giftbox.db``; the filesystem
holds the bytes, this holds the history. ``$GIFTBOX_DATABASE`` names another file (a path or
``sqlite:///path``) or a PostgreSQL server (``postgresql://user:pass@host:port/db``, through
psycopg 3) that CI jobs on many machines share: verdicts recorded by one machine gate a
promotion run on another. Both run the same migrations; the few spelling differences
(placeholders, ``AUTOINCREMENT``, where the schema version lives, how the write lock is taken)
are in ``_PgConnection`` and ``Records._migrate``.

Why it is safe to share between concurrent giftbox processes (nightly matrix jobs, a promote
while a build publishes):

* WAL mode: readers never block the writer nor each other.
* Every write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so two
  writers queue on SQLite's busy timeout instead of failing half-way through; a writer still
  waiting after the timeout gets a StateError naming the file.
* The schema version lives in ``PRAGMA user_version``. Older databases are migrated forward in
  one transaction on open; a database from a newer giftbox is refused (an older giftbox cannot
  know what the newer columns mean, and writing into it could lose them).
* On PostgreSQL the same holds: every write transaction first takes one transaction-scoped
  advisory lock (``pg_advisory_xact_lock``), so writers queue exactly as on SQLite, bounded by
  ``lock_timeout``; the schema version is the one row of ``giftbox_schema``; DDL is
  transactional there too, so a migration lands whole or not at all.

The build stage calls ``start_build``, ``finish_build`` and ``record_publish`` (module-level,
each opening the database for one transaction), or holds a ``Records`` for several calls.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from giftbox.errors import StateError
from giftbox.settings import Settings

DB_FILE = "giftbox.db"
DEFAULT_TIMEOUT = 30.0  # seconds a writer waits for another before giving up
STATUSES = ("running", "succeeded", "failed")

# MIGRATIONS[n] takes a database from user_version n to n + 1. Append only: a released
# migration is never edited, or databases that already ran it would differ from new ones.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 0 -> 1: builds and publishes
        """CREATE TABLE builds (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            project TEXT NOT NULL,
            distro TEXT NOT NULL,
            arch TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
            upstream_commit TEXT NOT NULL DEFAULT '',
            patch_digest TEXT NOT NULL DEFAULT '',
            lock_digest TEXT NOT NULL DEFAULT '',
            builder_image TEXT NOT NULL DEFAULT '',
            spec_digest TEXT NOT NULL DEFAULT '',
            version TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration REAL,
            log_path TEXT,
            artifacts TEXT NOT NULL DEFAULT '{}',
            error TEXT
        )""",
        "CREATE INDEX builds_target ON builds (project, distro, arch, id)",
        """CREATE TABLE publishes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            channel TEXT NOT NULL,
            digest TEXT NOT NULL,
            filename TEXT NOT NULL,
            at TEXT NOT NULL,
            who TEXT NOT NULL
        )""",
        "CREATE INDEX publishes_channel ON publishes (channel, id)",
    ),
    (  # 1 -> 2: promotions, pins, channel events; who/where of a build
        "ALTER TABLE builds ADD COLUMN who TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE builds ADD COLUMN host TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE publishes ADD COLUMN build_id INTEGER REFERENCES builds (id)",
        """CREATE TABLE promotions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('promote', 'rollback')),
            project TEXT NOT NULL,
            from_channel TEXT,
            to_channel TEXT NOT NULL,
            digests TEXT NOT NULL,
            filenames TEXT NOT NULL,
            version TEXT NOT NULL,
            who TEXT NOT NULL,
            at TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            rolled_back_by INTEGER REFERENCES promotions (id),
            rolls_back INTEGER REFERENCES promotions (id),
            scope TEXT NOT NULL DEFAULT '[]',
            snapshot TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX promotions_to ON promotions (to_channel, project, id)",
        """CREATE TABLE pins (
            channel TEXT NOT NULL,
            package TEXT NOT NULL,
            version TEXT NOT NULL,
            who TEXT NOT NULL,
            at TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (channel, package, version)
        )""",
        """CREATE TABLE channel_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            channel TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}',
            who TEXT NOT NULL,
            at TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX channel_events_channel ON channel_events (channel, id)",
    ),
    (  # 2 -> 3: nightly runs and what each did per target (giftbox/nightly.py)
        """CREATE TABLE nightly_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            channel TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
            started_at TEXT NOT NULL,
            finished_at TEXT,
            who TEXT NOT NULL,
            host TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE nightly_targets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES nightly_runs (id),
            project TEXT NOT NULL,
            distro TEXT NOT NULL,
            arch TEXT NOT NULL,
            outcome TEXT NOT NULL
                CHECK (outcome IN ('built', 'published', 'unchanged', 'failed', 'skipped')),
            ref TEXT NOT NULL DEFAULT '',
            upstream_commit TEXT NOT NULL DEFAULT '',
            build_key TEXT NOT NULL DEFAULT '',
            build_id INTEGER REFERENCES builds (id),
            version TEXT NOT NULL DEFAULT '',
            filename TEXT NOT NULL DEFAULT '',
            digest TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '',
            error TEXT,
            log_path TEXT,
            duration REAL,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX nightly_targets_target ON nightly_targets (project, distro, arch, id)",
    ),
    (  # 3 -> 4: verdicts (giftbox verify) and promotions forced past a gate (giftbox/repo/gates.py)
        """CREATE TABLE verdicts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            digest TEXT NOT NULL,
            filename TEXT NOT NULL DEFAULT '',
            project TEXT NOT NULL DEFAULT '',
            version TEXT NOT NULL DEFAULT '',
            distro TEXT NOT NULL,
            arch TEXT NOT NULL,
            check_name TEXT NOT NULL,
            passed INTEGER NOT NULL CHECK (passed IN (0, 1)),
            channel TEXT NOT NULL DEFAULT '',
            against TEXT NOT NULL DEFAULT '',
            log_path TEXT,
            duration REAL,
            timings TEXT NOT NULL DEFAULT '{}',
            detail TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL,
            who TEXT NOT NULL,
            host TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX verdicts_artifact ON verdicts (digest, distro, arch, check_name, id)",
        "ALTER TABLE promotions ADD COLUMN forced TEXT NOT NULL DEFAULT ''",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_PG_WRITE_LOCK = 0x67696674  # "gift": the advisory lock every PostgreSQL writer takes first
# Tables whose rows have an id an INSERT hands back (PostgreSQL spells it RETURNING id).
_ID_TABLES = ("builds", "publishes", "promotions", "channel_events", "nightly_runs",
              "nightly_targets", "verdicts")


def who() -> str:
    """Who is acting: ``$GIFTBOX_USER`` (CI sets it to the person or bot behind a run), else
    the login name."""
    name = os.environ.get("GIFTBOX_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers) and no $USER
        return f"uid {os.getuid()}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- plain records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    id: int
    project: str
    distro: str
    arch: str
    status: str
    upstream_commit: str
    patch_digest: str
    lock_digest: str
    builder_image: str
    spec_digest: str
    version: str
    started_at: str
    finished_at: str | None
    duration: float | None
    log_path: str | None
    artifacts: dict[str, str]  # filename -> sha256
    error: str | None
    who: str
    host: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Promotion:
    """A promotion (or the rollback of one) into ``to_channel``."""

    id: int
    kind: str  # promote | rollback
    project: str
    from_channel: str | None  # None for a rollback
    to_channel: str
    digests: tuple[str, ...]
    filenames: tuple[str, ...]
    version: str
    who: str
    at: str
    reason: str
    rolled_back_by: int | None
    rolls_back: int | None
    # What the rollback of this restores: the (name, distro, arch) it touched, and the target
    # channel's entries of those before it, as {filename, digest, version}.
    scope: tuple[tuple[str, str, str], ...] = ()
    snapshot: tuple[dict[str, str], ...] = ()
    # Non-empty when --force overrode the target's gate: the evidence that was missing.
    forced: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scope"] = [list(s) for s in self.scope]
        d["snapshot"] = list(self.snapshot)
        return d


@dataclass(frozen=True)
class Pin:
    channel: str
    package: str
    version: str
    who: str
    at: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    """One line of a channel's history."""

    kind: str  # publish | promote | rollback | promote-out | prune | pin | unpin | gc
    at: str
    who: str
    reason: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NightlyRun:
    id: int
    channel: str
    status: str  # running | succeeded | failed
    started_at: str
    finished_at: str | None
    who: str
    host: str
    summary: dict[str, int]  # outcome -> number of targets

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NightlyTarget:
    """What one nightly run did for one (project, distro, arch)."""

    id: int
    run_id: int
    project: str
    distro: str
    arch: str
    outcome: str  # built | published | unchanged | failed | skipped
    ref: str
    upstream_commit: str
    build_key: str
    build_id: int | None
    version: str
    filename: str
    digest: str
    detail: str
    error: str | None
    log_path: str | None
    duration: float | None
    at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """One check's outcome on one artifact (its exact sha256) for one distro and arch."""

    id: int
    digest: str
    filename: str
    project: str
    version: str
    distro: str
    arch: str
    check: str  # install | upgrade | migrate | vulns
    passed: bool
    channel: str  # the channel the artifact was installed from
    against: str  # the channel whose version it was upgraded from (upgrade, migrate)
    log_path: str | None
    duration: float | None
    timings: dict[str, float]  # step -> seconds
    detail: str  # one line: what failed, or what was measured
    at: str
    who: str
    host: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the database -------------------------------------------------------------------------


def database_location(settings: Settings) -> str:
    """``$GIFTBOX_DATABASE`` or ``<state dir>/giftbox.db``."""
    # Read here rather than in Settings (not this module's file); see the report.
    return os.environ.get("GIFTBOX_DATABASE") or str(settings.state_dir / DB_FILE)


def _is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def redact(location: str) -> str:
    """``location`` without its password: what errors and logs may show."""
    if not _is_postgres(location):
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
    """The slice of ``sqlite3.Connection`` Records uses, over a psycopg 3 connection.

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
        returning = bool(m and m.group(1) in _ID_TABLES and "RETURNING" not in sql.upper())
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


class Records:
    """One connection to the records database; use as a context manager or ``close()``.

    ``location``: a SQLite file (a Path, a path string or ``sqlite:///path``) or a
    ``postgresql://`` URL.
    """

    def __init__(self, location: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.postgres = isinstance(location, str) and _is_postgres(location)
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

    def __enter__(self) -> Records:
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
        if getattr(self, "_nested", False):
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
                    if self.postgres:  # SQLite's REAL is a double; PostgreSQL's is not
                        statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement.replace(
                            "INTEGER PRIMARY KEY AUTOINCREMENT", "SERIAL PRIMARY KEY"))
                    db.execute(statement)
            if self.postgres:
                db.execute("DELETE FROM giftbox_schema")
                db.execute("INSERT INTO giftbox_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                # PRAGMA does not take parameters; the value is our own integer.
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- builds ---------------------------------------------------------------------------

    def start_build(self, project: str, distro: str, arch: str, *, upstream_commit: str = "",
                    patch_digest: str = "", lock_digest: str = "", builder_image: str = "",
                    spec_digest: str = "", version: str = "",
                    log_path: str | Path | None = None) -> int:
        """Record a build as running; returns its id for ``finish_build``."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO builds (project, distro, arch, status, upstream_commit, "
                "patch_digest, lock_digest, builder_image, spec_digest, version, started_at, "
                "log_path, who, host) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (project, distro, arch, upstream_commit, patch_digest, lock_digest,
                 builder_image, spec_digest, version, now(),
                 str(log_path) if log_path is not None else None, who(), socket.gethostname()))
            return int(cur.lastrowid or 0)

    def finish_build(self, build_id: int, status: str, *, version: str | None = None,
                     artifacts: Mapping[str, str] | None = None, error: str | None = None,
                     log_path: str | Path | None = None,
                     duration: float | None = None) -> Build:
        """Close a running build as ``succeeded`` or ``failed``.

        ``artifacts`` maps each produced filename to its sha256; ``duration`` defaults to the
        wall-clock time since ``start_build``.
        """
        if status not in ("succeeded", "failed"):
            raise StateError(f"a build finishes as succeeded or failed, not '{status}'")
        finished = now()
        with self._write() as db:
            row = db.execute("SELECT status, started_at FROM builds WHERE id = ?",
                             (build_id,)).fetchone()
            if row is None:
                raise StateError(f"no build {build_id} in {self.path}")
            if row["status"] != "running":
                raise StateError(f"build {build_id} already finished ({row['status']})")
            if duration is None:
                duration = (_parse_time(finished) - _parse_time(row["started_at"])) \
                    .total_seconds()
            db.execute(
                "UPDATE builds SET status = ?, finished_at = ?, duration = ?, "
                "version = COALESCE(?, version), artifacts = ?, error = ?, "
                "log_path = COALESCE(?, log_path) WHERE id = ?",
                (status, finished, duration, version,
                 json.dumps(dict(artifacts or {}), sort_keys=True), error,
                 str(log_path) if log_path is not None else None, build_id))
        return self.build(build_id)

    def add_artifacts(self, build_id: int, artifacts: Mapping[str, str]) -> Build:
        """Attach packages made from a finished build (packaging follows the venv build,
        and a cached build can be packaged again with other options)."""
        with self._write() as db:
            row = db.execute("SELECT artifacts FROM builds WHERE id = ?",
                             (build_id,)).fetchone()
            if row is None:
                raise StateError(f"no build {build_id} in {self.path}")
            merged = {**json.loads(row["artifacts"] or "{}"), **artifacts}
            db.execute("UPDATE builds SET artifacts = ? WHERE id = ?",
                       (json.dumps(merged, sort_keys=True), build_id))
        return self.build(build_id)

    def build(self, build_id: int) -> Build:
        row = self.conn.execute("SELECT * FROM builds WHERE id = ?", (build_id,)).fetchone()
        if row is None:
            raise StateError(f"no build {build_id} in {self.path}")
        return _build(row)

    def last_builds(self, project: str | None = None) -> list[Build]:
        """The latest build of each project (or of ``project``) per distro and arch."""
        where, args = ("WHERE project = ?", (project,)) if project else ("", ())
        rows = self.conn.execute(
            "SELECT * FROM builds WHERE id IN (SELECT MAX(id) FROM builds "
            f"{where} GROUP BY project, distro, arch) ORDER BY project, distro, arch", args)
        return [_build(r) for r in rows]

    def recent_builds(self, project: str | None = None, limit: int = 20) -> list[Build]:
        """The latest ``limit`` builds (of ``project``), newest first."""
        where, args = ("WHERE project = ?", (project,)) if project else ("", ())
        rows = self.conn.execute(f"SELECT * FROM builds {where} ORDER BY id DESC LIMIT ?",
                                 (*args, limit))
        return [_build(r) for r in rows]

    # --- nightly runs ---------------------------------------------------------------------

    def start_nightly(self, channel: str) -> int:
        with self._write() as db:
            cur = db.execute("INSERT INTO nightly_runs (channel, status, started_at, who, host) "
                             "VALUES (?, 'running', ?, ?, ?)",
                             (channel, now(), who(), socket.gethostname()))
            return int(cur.lastrowid or 0)

    def record_nightly_target(self, run_id: int, project: str, distro: str, arch: str,
                              outcome: str, **fields: Any) -> int:
        """One target's outcome; ``fields``: the other columns of ``NightlyTarget``."""
        columns = ["run_id", "project", "distro", "arch", "outcome", "at"]
        values: list[Any] = [run_id, project, distro, arch, outcome, now()]
        allowed = {f for f in NightlyTarget.__dataclass_fields__} - set(columns) - {"id"}
        for name, value in fields.items():
            if name not in allowed:
                raise StateError(f"nightly_targets has no column '{name}'")
            columns.append(name)  # a fixed set of our own names, never user input
            values.append(value)
        with self._write() as db:
            cur = db.execute(f"INSERT INTO nightly_targets ({', '.join(columns)}) VALUES "
                             f"({', '.join('?' for _ in columns)})", values)
            return int(cur.lastrowid or 0)

    def finish_nightly(self, run_id: int, status: str, summary: Mapping[str, int]) -> None:
        with self._write() as db:
            db.execute("UPDATE nightly_runs SET status = ?, finished_at = ?, summary = ? "
                       "WHERE id = ?", (status, now(), json.dumps(dict(summary)), run_id))

    def nightly_runs(self, limit: int = 20) -> list[NightlyRun]:
        """The latest nightly runs, newest first."""
        rows = self.conn.execute("SELECT * FROM nightly_runs ORDER BY id DESC LIMIT ?",
                                 (limit,))
        return [NightlyRun(**{**dict(r), "summary": json.loads(r["summary"] or "{}")})
                for r in rows]

    def nightly_targets(self, run_id: int) -> list[NightlyTarget]:
        rows = self.conn.execute("SELECT * FROM nightly_targets WHERE run_id = ? ORDER BY "
                                 "project, distro, arch", (run_id,))
        return [NightlyTarget(**dict(r)) for r in rows]

    def last_nightly_target(self, project: str, distro: str, arch: str, *,
                            good: bool = False) -> NightlyTarget | None:
        """The latest nightly outcome of a target; with ``good`` the latest that left the
        channel holding a build of it (built, published or unchanged)."""
        sql = "SELECT * FROM nightly_targets WHERE project = ? AND distro = ? AND arch = ?"
        if good:
            sql += " AND outcome IN ('built', 'published', 'unchanged')"
        row = self.conn.execute(sql + " ORDER BY id DESC LIMIT 1",
                                (project, distro, arch)).fetchone()
        return NightlyTarget(**dict(row)) if row is not None else None

    def nightly_log_path(self, build_id: int) -> str | None:
        """The transcript a nightly kept of the target that ran build ``build_id`` (the log
        of a build that failed before writing its own), newest first."""
        row = self.conn.execute("SELECT log_path FROM nightly_targets WHERE build_id = ? "
                                "ORDER BY id DESC LIMIT 1", (build_id,)).fetchone()
        return row["log_path"] if row is not None else None

    # --- publishes ------------------------------------------------------------------------

    def record_publish(self, channel: str, digest: str, filename: str, *,
                       build_id: int | None = None, actor: str | None = None) -> None:
        self.record_publishes(channel, [(digest, filename)], build_id=build_id, actor=actor)

    def record_publishes(self, channel: str, items: Sequence[tuple[str, str]], *,
                         build_id: int | None = None, actor: str | None = None) -> None:
        """Record (digest, filename) pairs published into ``channel``, in one transaction."""
        at, by = now(), actor or who()
        with self._write() as db:
            db.executemany("INSERT INTO publishes (channel, digest, filename, at, who, "
                           "build_id) VALUES (?, ?, ?, ?, ?, ?)",
                           [(channel, d, f, at, by, build_id) for d, f in items])

    # --- promotions -----------------------------------------------------------------------

    def record_promotion(self, *, kind: str, project: str, from_channel: str | None,
                         to_channel: str, digests: Sequence[str], filenames: Sequence[str],
                         version: str, reason: str = "",
                         scope: Sequence[tuple[str, str, str]] = (),
                         snapshot: Sequence[Mapping[str, str]] = (),
                         rolls_back: int | None = None, actor: str | None = None,
                         forced: str = "") -> Promotion:
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO promotions (kind, project, from_channel, to_channel, digests, "
                "filenames, version, who, at, reason, rolls_back, scope, snapshot, forced) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, project, from_channel, to_channel, json.dumps(list(digests)),
                 json.dumps(list(filenames)), version, actor or who(), now(), reason,
                 rolls_back, json.dumps([list(s) for s in scope]),
                 json.dumps([dict(s) for s in snapshot]), forced))
            new_id = int(cur.lastrowid or 0)
            if rolls_back is not None:
                db.execute("UPDATE promotions SET rolled_back_by = ? WHERE id = ?",
                           (new_id, rolls_back))
        return self.promotion(new_id)

    def promotion(self, promotion_id: int) -> Promotion:
        row = self.conn.execute("SELECT * FROM promotions WHERE id = ?",
                                (promotion_id,)).fetchone()
        if row is None:
            raise StateError(f"no promotion {promotion_id} in {self.path}")
        return _promotion(row)

    def promotions(self, channel: str | None = None) -> list[Promotion]:
        """Promotions and rollbacks into or out of ``channel`` (all when None), oldest first."""
        if channel is None:
            rows = self.conn.execute("SELECT * FROM promotions ORDER BY id")
        else:
            rows = self.conn.execute("SELECT * FROM promotions WHERE to_channel = ? OR "
                                     "from_channel = ? ORDER BY id", (channel, channel))
        return [_promotion(r) for r in rows]

    def last_promotion(self, to_channel: str, project: str | None = None) -> Promotion | None:
        """The latest promotion into ``to_channel`` (of ``project``) not yet rolled back."""
        sql = ("SELECT * FROM promotions WHERE kind = 'promote' AND to_channel = ? "
               "AND rolled_back_by IS NULL")
        args: tuple[str, ...] = (to_channel,)
        if project is not None:
            sql += " AND project = ?"
            args += (project,)
        row = self.conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return _promotion(row) if row is not None else None

    # --- verdicts -------------------------------------------------------------------------

    def record_verdict(self, *, digest: str, distro: str, arch: str, check: str, passed: bool,
                       filename: str = "", project: str = "", version: str = "",
                       channel: str = "", against: str = "",
                       log_path: str | Path | None = None, duration: float | None = None,
                       timings: Mapping[str, float] | None = None, detail: str = "",
                       actor: str | None = None) -> Verdict:
        """Record one check's outcome on the artifact ``digest`` for ``distro``/``arch``."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO verdicts (digest, filename, project, version, distro, arch, "
                "check_name, passed, channel, against, log_path, duration, timings, detail, at, "
                "who, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (digest, filename, project, version, distro, arch, check, int(bool(passed)),
                 channel, against, str(log_path) if log_path is not None else None, duration,
                 json.dumps(dict(timings or {}), sort_keys=True), detail, now(),
                 actor or who(), socket.gethostname()))
            new_id = int(cur.lastrowid or 0)
        row = self.conn.execute("SELECT * FROM verdicts WHERE id = ?", (new_id,)).fetchone()
        return _verdict(row)

    def verdicts(self, digest: str | None = None, *, distro: str | None = None,
                 arch: str | None = None) -> list[Verdict]:
        """Verdicts (on ``digest``, for ``distro``/``arch`` when given), oldest first."""
        sql, args = "SELECT * FROM verdicts WHERE 1 = 1", []
        for column, value in (("digest", digest), ("distro", distro), ("arch", arch)):
            if value is not None:
                sql += f" AND {column} = ?"  # our own column names, never input
                args.append(value)
        return [_verdict(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def latest_verdicts(self, digest: str, distro: str, arch: str) -> dict[str, Verdict]:
        """The latest verdict per check on ``digest`` for ``distro``/``arch``: a later failure
        supersedes an earlier pass (the artifact is what it is; the environment changed)."""
        return {v.check: v for v in self.verdicts(digest, distro=distro, arch=arch)}

    # --- pins and channel events ----------------------------------------------------------

    def pin(self, channel: str, package: str, version: str, reason: str = "",
            actor: str | None = None) -> Pin:
        at, by = now(), actor or who()
        with self._write() as db:
            db.execute("INSERT INTO pins (channel, package, version, who, at, reason) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel, package, version) "
                       "DO UPDATE SET who = excluded.who, at = excluded.at, "
                       "reason = excluded.reason",
                       (channel, package, version, by, at, reason))
            self._event(db, channel, "pin", {"package": package, "version": version},
                        reason, by, at)
        return Pin(channel, package, version, by, at, reason)

    def unpin(self, channel: str, package: str, version: str | None = None,
              reason: str = "", actor: str | None = None) -> list[Pin]:
        """Remove the pin(s) of ``package`` (of ``version`` when given); returns them."""
        at, by = now(), actor or who()
        with self._write() as db:
            sql, args = "WHERE channel = ? AND package = ?", [channel, package]
            if version is not None:
                sql += " AND version = ?"
                args.append(version)
            gone = [_pin(r) for r in db.execute(f"SELECT * FROM pins {sql}", args)]
            db.execute(f"DELETE FROM pins {sql}", args)
            for p in gone:
                self._event(db, channel, "unpin", {"package": p.package, "version": p.version},
                            reason, by, at)
        return gone

    def pins(self, channel: str | None = None) -> list[Pin]:
        if channel is None:
            rows = self.conn.execute("SELECT * FROM pins ORDER BY channel, package, version")
        else:
            rows = self.conn.execute("SELECT * FROM pins WHERE channel = ? "
                                     "ORDER BY package, version", (channel,))
        return [_pin(r) for r in rows]

    def record_event(self, channel: str, kind: str, detail: Mapping[str, Any],
                     reason: str = "", actor: str | None = None) -> None:
        """Record a change to a channel other than a publish or promotion (prune, gc)."""
        with self._write() as db:
            self._event(db, channel, kind, detail, reason, actor or who(), now())

    @staticmethod
    def _event(db: Any, channel: str, kind: str, detail: Mapping[str, Any],
               reason: str, by: str, at: str) -> None:
        db.execute("INSERT INTO channel_events (channel, kind, detail, who, at, reason) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (channel, kind, json.dumps(dict(detail), sort_keys=True), by, at, reason))

    def once(self, key: str, writes: Callable[[], Any]) -> Any:
        """Run ``writes`` (calls of this object's record methods) as one transaction marked
        ``key``, unless one with that key already committed (then None): a channel change's
        journaled records (giftbox/repo/publish.py) land exactly once, however often an
        interrupted change is recovered."""
        marker = json.dumps({"key": key}, sort_keys=True)
        with self._write() as db:
            if db.execute("SELECT 1 FROM channel_events WHERE channel = ? AND kind = ? AND "
                          "detail = ?", (".txn", "txn", marker)).fetchone() is not None:
                return None
            self._nested = True
            try:
                out = writes()
            finally:
                self._nested = False
            self._event(db, ".txn", "txn", {"key": key}, "", who(), now())
        return out

    # --- history --------------------------------------------------------------------------

    def history(self, channel: str) -> list[Event]:
        """Everything recorded about ``channel``, oldest first."""
        events: list[tuple[str, int, Event]] = []
        for p in self.promotions(channel):
            files = ", ".join(p.filenames)
            if p.kind == "rollback":
                kind = "rollback"
                summary = f"rolled back promotion #{p.rolls_back} of {p.project}: now {files}"
            elif p.to_channel == channel:
                kind = "promote"
                summary = f"{p.project} {p.version} from {p.from_channel}: {files}"
            else:
                kind = "promote-out"
                summary = f"{p.project} {p.version} to {p.to_channel}: {files}"
            if p.rolled_back_by is not None and p.to_channel == channel:
                summary += f" (rolled back by #{p.rolled_back_by})"
            if p.forced:
                summary += f" (FORCED past the gate; missing: {p.forced})"
            events.append((p.at, 1, Event(kind, p.at, p.who, p.reason, f"#{p.id} {summary}",
                                          p.as_dict())))
        for r in self.conn.execute("SELECT * FROM publishes WHERE channel = ? ORDER BY id",
                                   (channel,)):
            events.append((r["at"], 0, Event(
                "publish", r["at"], r["who"], "", f"{r['filename']} sha256:{r['digest'][:16]}",
                {"digest": r["digest"], "filename": r["filename"],
                 "build_id": r["build_id"]})))
        for r in self.conn.execute("SELECT * FROM channel_events WHERE channel = ? "
                                   "ORDER BY id", (channel,)):
            detail = json.loads(r["detail"])
            events.append((r["at"], 2, Event(r["kind"], r["at"], r["who"], r["reason"],
                                             _event_summary(r["kind"], detail), detail)))
        events.sort(key=lambda t: (t[0], t[1]))
        return [e for _, _, e in events]


def _event_summary(kind: str, detail: dict[str, Any]) -> str:
    if kind in ("pin", "unpin"):
        return f"{detail.get('package')} {detail.get('version')}"
    if kind in ("prune", "gc"):
        files = detail.get("filenames", [])
        return f"removed {len(files)}: " + ", ".join(files)
    return json.dumps(detail, sort_keys=True)


def _build(row: Mapping[str, Any]) -> Build:
    d = dict(row)
    d["artifacts"] = json.loads(d["artifacts"] or "{}")
    return Build(**d)


def _promotion(row: Mapping[str, Any]) -> Promotion:
    d = dict(row)
    d["digests"] = tuple(json.loads(d["digests"]))
    d["filenames"] = tuple(json.loads(d["filenames"]))
    d["scope"] = tuple(tuple(s) for s in json.loads(d["scope"]))
    d["snapshot"] = tuple(json.loads(d["snapshot"]))
    return Promotion(**d)


def _verdict(row: Mapping[str, Any]) -> Verdict:
    d = dict(row)
    d["check"] = d.pop("check_name")
    d["passed"] = bool(d["passed"])
    d["timings"] = json.loads(d["timings"] or "{}")
    return Verdict(**d)


def _pin(row: Mapping[str, Any]) -> Pin:
    return Pin(**dict(row))


# --- module-level calls for the build stage -----------------------------------------------


def open_records(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> Records:
    """The records database of ``settings`` (created and migrated as needed)."""
    return Records(database_location(settings), timeout=timeout)


def start_build(settings: Settings, project: str, distro: str, arch: str, **inputs: Any) -> int:
    """Record a running build; ``inputs``: upstream_commit, patch_digest, lock_digest,
    builder_image, spec_digest, version, log_path (see ``Records.start_build``)."""
    with open_records(settings) as db:
        return db.start_build(project, distro, arch, **inputs)


def finish_build(settings: Settings, build_id: int, status: str, **result: Any) -> Build:
    """Close a build: status succeeded|failed; ``result``: version, artifacts
    ({filename: sha256}), error, log_path, duration."""
    with open_records(settings) as db:
        return db.finish_build(build_id, status, **result)


def add_artifacts(settings: Settings, build_id: int, artifacts: Mapping[str, str]) -> Build:
    with open_records(settings) as db:
        return db.add_artifacts(build_id, artifacts)


def record_publish(settings: Settings, channel: str, digest: str, filename: str, *,
                   build_id: int | None = None) -> None:
    with open_records(settings) as db:
        db.record_publish(channel, digest, filename, build_id=build_id)


def last_builds(settings: Settings, project: str | None = None) -> list[Build]:
    with open_records(settings) as db:
        return db.last_builds(project)


def build(settings: Settings, build_id: int) -> Build:
    with open_records(settings) as db:
        return db.build(build_id)


def promotions(settings: Settings, channel: str | None = None) -> list[Promotion]:
    with open_records(settings) as db:
        return db.promotions(channel)
