"""Verdicts (giftbox verify): one check's outcome on one artifact's exact sha256 for one
distro and arch, the evidence the promotion gates (giftbox/repo/gates.py) ask for."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from giftbox.records.db import Database, now


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


def _verdict(row: Mapping[str, Any]) -> Verdict:
    d = dict(row)
    d["check"] = d.pop("check_name")
    d["passed"] = bool(d["passed"])
    d["timings"] = json.loads(d["timings"] or "{}")
    return Verdict(**d)


class VerdictRecords(Database):
    """The ``verdicts`` table."""

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
                 actor or self.who(), socket.gethostname()))
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

