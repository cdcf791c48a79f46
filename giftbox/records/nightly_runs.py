"""Nightly runs (giftbox/nightly.py): each run, and what it did for each target."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from giftbox.errors import StateError
from giftbox.records.db import Database, now


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


class NightlyRecords(Database):
    """The ``nightly_runs`` and ``nightly_targets`` tables."""

    def start_nightly(self, channel: str) -> int:
        with self._write() as db:
            cur = db.execute("INSERT INTO nightly_runs (channel, status, started_at, who, host) "
                             "VALUES (?, 'running', ?, ?, ?)",
                             (channel, now(), self.who(), socket.gethostname()))
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

