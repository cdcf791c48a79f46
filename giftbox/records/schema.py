"""The records' tables, as migrations appended one per schema change, and the few words
PostgreSQL spells differently. No I/O here: ``db.Database`` runs these on open, in one
transaction, on either engine.
"""

from __future__ import annotations

import re

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

# Tables whose rows have an id an INSERT hands back (PostgreSQL spells it RETURNING id).
ID_TABLES = ("builds", "publishes", "promotions", "channel_events", "nightly_runs",
             "nightly_targets", "verdicts")


def postgres_ddl(statement: str) -> str:
    """A migration statement as PostgreSQL spells it: ``SERIAL`` for SQLite's
    ``AUTOINCREMENT``, and ``DOUBLE PRECISION`` for ``REAL`` (SQLite's REAL is a double;
    PostgreSQL's is not)."""
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement.replace(
        "INTEGER PRIMARY KEY AUTOINCREMENT", "SERIAL PRIMARY KEY"))
