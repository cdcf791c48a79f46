"""Build records: what was built from which inputs, where it went, when, by whom.

An embedded SQLite database (stdlib ``sqlite3``) at ``<state dir>/giftbox.db``; the filesystem
holds the bytes, this holds the history. ``Settings.database`` (``$GIFTBOX_DATABASE``) names
another file (a path or ``sqlite:///path``) or a PostgreSQL server
(``postgresql://user:pass@host:port/db``, through psycopg 3) that CI jobs on many machines
share: verdicts recorded by one machine gate a promotion run on another. Both run the same
migrations.

The rooms:

* ``schema``: the tables, as migrations appended one per schema change (no I/O);
* ``db``: where the records live, the connection, its transactions, migrating on open;
* ``builds``: what was built from which inputs;
* ``nightly_runs``: nightly runs and what each did per target;
* ``history``: a channel's publishes, promotions, pins and other changes;
* ``verdicts``: ``giftbox verify``'s checks on an artifact's exact sha256.

``Records`` is one connection with the queries of every room.

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

The build stage calls ``start_build``, ``finish_build`` and ``add_artifacts`` (module-level,
each opening the database for one transaction), or holds a ``Records`` for several calls. A
publish is recorded by the publish itself, in its journaled transaction
(``giftbox.repo.publish(..., record=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from giftbox.records.builds import Build, BuildRecords
from giftbox.records.db import (
    DB_FILE,
    DEFAULT_TIMEOUT,
    STATUSES,
    Database,
    database_location,
    now,
    redact,
    who,
)
from giftbox.records.history import ChannelRecords, Event, Pin, Promotion
from giftbox.records.nightly_runs import NightlyRecords, NightlyRun, NightlyTarget
from giftbox.records.schema import MIGRATIONS, SCHEMA_VERSION
from giftbox.records.verdicts import Verdict, VerdictRecords
from giftbox.settings import Settings

__all__ = [
    "DB_FILE", "DEFAULT_TIMEOUT", "MIGRATIONS", "SCHEMA_VERSION", "STATUSES", "Build",
    "Database", "Event", "NightlyRun", "NightlyTarget", "Pin", "Promotion", "Records",
    "Verdict", "add_artifacts", "build", "database_location", "finish_build", "last_builds",
    "now", "open_records", "promotions", "record_publish", "redact", "start_build", "who",
]


class Records(BuildRecords, NightlyRecords, ChannelRecords, VerdictRecords):
    """One connection to the records database with every room's queries; use as a context
    manager or ``close()``. ``Records(location, timeout=, user=)``: see ``db.Database``."""


# --- module-level calls for the build stage -----------------------------------------------


def open_records(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> Records:
    """The records database of ``settings`` (created and migrated as needed), naming
    ``settings.user`` as who acts."""
    return Records(database_location(settings), timeout=timeout, user=settings.user)


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
    """Record a publish made elsewhere; giftbox's own publishes record themselves
    (``giftbox.repo.publish(..., record=True)``)."""
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
