"""A channel's history: publishes, promotions and rollbacks, pins, and other changes (prune,
gc), with who, when and why; and ``once``, which lands a channel change's journaled records
(giftbox/repo/publish.py) exactly once."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from giftbox.errors import StateError
from giftbox.records.db import Database, now


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


def _promotion(row: Mapping[str, Any]) -> Promotion:
    d = dict(row)
    d["digests"] = tuple(json.loads(d["digests"]))
    d["filenames"] = tuple(json.loads(d["filenames"]))
    d["scope"] = tuple(tuple(s) for s in json.loads(d["scope"]))
    d["snapshot"] = tuple(json.loads(d["snapshot"]))
    return Promotion(**d)


def _pin(row: Mapping[str, Any]) -> Pin:
    return Pin(**dict(row))


def _event_summary(kind: str, detail: dict[str, Any]) -> str:
    if kind in ("pin", "unpin"):
        return f"{detail.get('package')} {detail.get('version')}"
    if kind in ("prune", "gc"):
        files = detail.get("filenames", [])
        return f"removed {len(files)}: " + ", ".join(files)
    return json.dumps(detail, sort_keys=True)


class ChannelRecords(Database):
    """The ``publishes``, ``promotions``, ``pins`` and ``channel_events`` tables."""

    # --- publishes ------------------------------------------------------------------------

    def record_publish(self, channel: str, digest: str, filename: str, *,
                       build_id: int | None = None, actor: str | None = None) -> None:
        self.record_publishes(channel, [(digest, filename)], build_id=build_id, actor=actor)

    def record_publishes(self, channel: str, items: Sequence[tuple[str, str]], *,
                         build_id: int | None = None, actor: str | None = None) -> None:
        """Record (digest, filename) pairs published into ``channel``, in one transaction."""
        at, by = now(), actor or self.who()
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
                 json.dumps(list(filenames)), version, actor or self.who(), now(), reason,
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

    # --- pins and channel events ----------------------------------------------------------

    def pin(self, channel: str, package: str, version: str, reason: str = "",
            actor: str | None = None) -> Pin:
        at, by = now(), actor or self.who()
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
        at, by = now(), actor or self.who()
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
            self._event(db, channel, kind, detail, reason, actor or self.who(), now())

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
            self._event(db, ".txn", "txn", {"key": key}, "", self.who(), now())
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


