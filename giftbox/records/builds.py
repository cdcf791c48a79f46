"""Builds: what was built from which inputs (commit, patches, lock, builder, spec), by whom,
where, how long it took, and the packages made from it."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from giftbox.errors import StateError
from giftbox.records.db import Database, now, parse_time


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


def _build(row: Mapping[str, Any]) -> Build:
    d = dict(row)
    d["artifacts"] = json.loads(d["artifacts"] or "{}")
    return Build(**d)


class BuildRecords(Database):
    """The ``builds`` table."""

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
                 str(log_path) if log_path is not None else None, self.who(), socket.gethostname()))
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
                duration = (parse_time(finished) - parse_time(row["started_at"])) \
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

