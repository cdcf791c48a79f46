"""A channel's state on disk: ``state.json`` (what the channel holds) and ``pending.json``
(the journal of a change in flight), and the lock that serializes changes.

Both files are read validated (a state or journal giftbox did not write is a StateError naming
the file and field, never acted on) and written atomically (write, fsync, rename). A journal is
folded into a state in memory by ``fold_journal``: recovery (recovery.py) does it under the lock
and saves the result; ``channel_state`` does it for readers, without the lock. The order of a
change and why it is crash-safe: publish.py's docstring.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from giftbox.errors import StateError
from giftbox.family import DEB, NAMES, Family, get_family
from giftbox.files import temp_beside
from giftbox.repo.channels import get_channel
from giftbox.settings import Settings
from giftbox.ui import Reporter

STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: before serials, retired files and journaled records
JOURNAL = "pending.json"
GEN_RE = re.compile(r"^g(\d{6,})$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*\.(deb|rpm)$")
_REPO_ID_RE = re.compile(r"^(apt/[a-z0-9][a-z0-9.-]*|yum/[a-z0-9][a-z0-9.]*/[a-z0-9_]+)$")
# Where a package file can be inside a channel; no segment can be '.' or '..'.
PACKAGE_PATH_RE = re.compile(
    r"^(apt/pool/main/[a-z0-9][a-z0-9+.-]*/[a-z0-9][a-z0-9+.-]+/[A-Za-z0-9][A-Za-z0-9._+~-]*\.deb"
    r"|yum/[a-z0-9][a-z0-9.]*/[a-z0-9_]+/Packages/[A-Za-z0-9][A-Za-z0-9._+~-]*\.rpm)$")
_STATE_KEYS = frozenset({"format", "channel", "updated", "key", "pending", "generations",
                         "entries", "serial", "retired"})
_JOURNAL_KEYS = frozenset({"format", "txid", "serial", "repositories", "entries", "removed",
                           "retire", "records"})


@dataclass(frozen=True)
class Entry:
    """One package in a channel, as recorded in ``repos/<channel>/state.json``."""

    digest: str  # sha256 of the bytes: the pool key (promote by digest)
    filename: str
    kind: str  # deb | rpm
    name: str
    version: str
    arch: str
    distro: str
    size: int
    paths: tuple[str, ...]  # channel-relative hard links to the pool object
    added: str  # UTC, ISO 8601

    @property
    def family(self) -> Family:
        """The package family of this entry (``kind`` as the object: ``DEB`` or ``RPM``)."""
        return get_family(self.kind)

    def as_dict(self) -> dict[str, object]:
        # By hand rather than dataclasses.asdict: a channel holds thousands of entries and
        # asdict's deep copy dominated the time of a one-package publish.
        return {"digest": self.digest, "filename": self.filename, "kind": self.kind,
                "name": self.name, "version": self.version, "arch": self.arch,
                "distro": self.distro, "size": self.size, "paths": list(self.paths),
                "added": self.added}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Entry:
        d = dict(d)
        d["paths"] = tuple(d["paths"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


@dataclass
class ChannelState:
    """What a channel holds. ``entries`` by filename; ``generations`` per repository id
    (``apt/<codename>``, ``yum/<distro>/<arch>``); ``pending`` repositories whose live
    metadata may lag ``entries`` because a publish was interrupted."""

    channel: str
    entries: dict[str, Entry] = field(default_factory=dict)
    generations: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    key: str = ""  # fingerprint of the key that signed the live metadata
    updated: str = ""
    serial: int = 0  # changes committed; a journal with a higher serial is not folded in yet
    # Files withdrawn but still named by a previous index generation: {path, repo, gen}, gone
    # once the repository's live generation is past ``gen``.
    retired: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"format": STATE_FORMAT, "channel": self.channel, "updated": self.updated,
                "key": self.key, "pending": sorted(self.pending), "serial": self.serial,
                "retired": sorted(self.retired, key=lambda r: (r["path"], r["gen"])),
                "generations": dict(sorted(self.generations.items())),
                "entries": [self.entries[f].as_dict() for f in sorted(self.entries)]}

    def to_json(self) -> str:
        """One entry per line: diffable and greppable, and fast (json's C encoder only runs
        without ``indent``)."""
        head = self.as_dict()
        del head["entries"]
        lines = [json.dumps(self.entries[f].as_dict(), sort_keys=True)
                 for f in sorted(self.entries)]
        body = json.dumps(head, sort_keys=True)[:-1]
        return body + ', "entries": [\n' + ",\n".join(lines) + "\n]}\n"


_ENTRY_KEYS = frozenset(Entry.__dataclass_fields__)


def scope_key(e: Entry) -> tuple[str, str, str]:
    """What one promotion or rollback is about: a package name on one distro and arch."""
    return (e.name, e.distro, e.arch)



# --- paths, reading and writing -----------------------------------------------------------


def channel_dir(settings: Settings, channel: str) -> Path:
    return settings.repos_dir / channel


def public_key_path(settings: Settings, channel: str) -> Path:
    return channel_dir(settings, channel) / f"giftbox-{channel}.asc"


def load_state(settings: Settings, channel: str) -> ChannelState:
    """``repos/<channel>/state.json``, validated: a state giftbox did not write is a
    StateError naming the file and field, never something acted on."""
    path = channel_dir(settings, channel) / "state.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ChannelState(channel=channel)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{path} is corrupt: {exc}",
                         hint="it is written atomically, so this is not an interrupted "
                              "publish; restore it from backup (nothing was changed)") from None
    if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
        fmt = data.get("format") if isinstance(data, dict) else None
        raise StateError(f"{path} has format {fmt}, this giftbox reads "
                         f"{', '.join(map(str, READABLE_FORMATS))}",
                         hint="use the giftbox that wrote it")
    where = str(path)
    _known(data, _STATE_KEYS, where)
    if data.get("channel", channel) != channel:
        raise StateError(f"{where}: channel is '{data.get('channel')}', not '{channel}'",
                         hint="a state file was copied between channels; restore the right one")
    entries = _entries(data.get("entries", []), f"{where}: entries")
    generations = data.get("generations", {})
    if not isinstance(generations, dict) or not all(
            isinstance(k, str) and _REPO_ID_RE.match(k) and isinstance(v, str)
            and GEN_RE.match(v) for k, v in generations.items()):
        raise StateError(f"{where}: generations is not a map of repository to generation")
    return ChannelState(channel=channel, entries={e.filename: e for e in entries},
                        generations=dict(generations),
                        pending=_repo_ids(data.get("pending", []), f"{where}: pending"),
                        key=_text(data.get("key", ""), f"{where}: key"),
                        updated=_text(data.get("updated", ""), f"{where}: updated"),
                        serial=_count(data.get("serial", 0), f"{where}: serial"),
                        retired=_retired(data.get("retired", []), f"{where}: retired"))


@dataclass(frozen=True)
class Journal:
    """``pending.json``: a change in flight (publish.py's docstring)."""

    txid: str
    serial: int  # the state serial this change commits
    repositories: list[str]
    entries: list[Entry]  # added
    removed: list[str]  # filenames withdrawn
    retire: list[dict[str, Any]]  # files that left, kept for one more generation
    records: list[dict[str, Any]]  # what the build records get, exactly once

    def as_dict(self) -> dict[str, object]:
        return {"format": STATE_FORMAT, "txid": self.txid, "serial": self.serial,
                "repositories": self.repositories,
                "entries": [e.as_dict() for e in self.entries], "removed": self.removed,
                "retire": self.retire, "records": self.records}


def load_journal(root: Path) -> Journal | None:
    """The journal of an interrupted change, validated; None when there is none. One that is
    not what giftbox writes is a StateError: it is never folded in, and nothing it names is
    ever deleted."""
    path = root / JOURNAL
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None  # none, or torn before its rename: that change touched nothing live
    where = str(path)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{where} is corrupt: {exc}",
                         hint="it is written atomically: this file was damaged or edited; "
                              "restore it from backup, or move it aside if you know the "
                              "change it describes never went live") from None
    if not isinstance(data, dict):
        raise StateError(f"{where} is not a giftbox journal")
    _known(data, _JOURNAL_KEYS, where)
    if data.get("format", 1) not in READABLE_FORMATS:
        raise StateError(f"{where} has format {data.get('format')}",
                         hint="use the giftbox that wrote it")
    removed = data.get("removed", [])
    if not isinstance(removed, list) or not all(isinstance(f, str) and _FILENAME_OK(f)
                                                for f in removed):
        raise StateError(f"{where}: removed is not a list of package filenames")
    txid = data.get("txid", "legacy")
    if not isinstance(txid, str) or not re.match(r"^[0-9a-z]{1,32}$", txid):
        raise StateError(f"{where}: txid is not a transaction id")
    # A journal of giftbox before serials (format 1) has none: 0, always folded in.
    return Journal(txid=txid, serial=_count(data.get("serial", 0), f"{where}: serial"),
                   repositories=_repo_ids(data.get("repositories", []),
                                          f"{where}: repositories"),
                   entries=_entries(data.get("entries", []), f"{where}: entries"),
                   removed=list(removed),
                   retire=_retired(data.get("retire", []), f"{where}: retire"),
                   records=check_intents(data.get("records", []), where))


_RECORD_ARGS = {
    "promotion": {"kind", "project", "from_channel", "to_channel", "digests", "filenames",
                  "version", "reason", "scope", "snapshot", "rolls_back", "actor", "forced"},
    "event": {"channel", "kind", "detail", "reason", "actor"},
    "publishes": {"channel", "items", "build_id", "actor"},
}


def check_intents(intents: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(intents, list):
        raise StateError(f"{where}: records is not a list")
    for n, i in enumerate(intents):
        if (not isinstance(i, dict) or set(i) != {"op", "args"} or i["op"] not in _RECORD_ARGS
                or not isinstance(i["args"], dict)
                or not set(i["args"]) <= _RECORD_ARGS[i["op"]]):
            raise StateError(f"{where}: records[{n}] is not a record giftbox writes",
                             hint="restore the file from backup")
    return intents


def _known(data: dict[str, Any], keys: frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - keys)
    if unknown:
        raise StateError(f"{where}: unknown field(s) {', '.join(map(str, unknown))[:200]}",
                         hint="this file was not written by this giftbox; restore it from "
                              "backup (nothing was changed)")


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise StateError(f"{where} is not a string")
    return value


def _count(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StateError(f"{where} is not a non-negative integer")
    return value


def _repo_ids(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(r, str) and _REPO_ID_RE.match(r)
                                              for r in value):
        raise StateError(f"{where} is not a list of repository ids (apt/<codename>, "
                         "yum/<distro>/<arch>)")
    return list(value)


def _retired(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise StateError(f"{where} is not a list")
    for n, r in enumerate(value):
        if (not isinstance(r, dict) or set(r) != {"path", "repo", "gen"}
                or not isinstance(r["path"], str) or not PACKAGE_PATH_RE.match(r["path"])
                or not isinstance(r["repo"], str) or not _REPO_ID_RE.match(r["repo"])
                or not isinstance(r["gen"], int) or isinstance(r["gen"], bool)):
            raise StateError(f"{where}[{n}] is not a retired package path inside the channel",
                             hint="restore the file from backup (nothing was deleted)")
    return [dict(r) for r in value]


def _entries(value: object, where: str) -> list[Entry]:
    if not isinstance(value, list):
        raise StateError(f"{where} is not a list")
    out = []
    for n, d in enumerate(value):
        at = f"{where}[{n}]"
        if not isinstance(d, dict) or set(d) != _ENTRY_KEYS:
            missing = sorted(_ENTRY_KEYS - set(d)) if isinstance(d, dict) else []
            extra = sorted(set(d) - _ENTRY_KEYS) if isinstance(d, dict) else []
            raise StateError(f"{at} is not a channel entry"
                             + (f" (missing {', '.join(missing)})" if missing else "")
                             + (f" (unknown {', '.join(map(str, extra))[:100]})" if extra
                                else ""), hint="restore the file from backup")
        for k in _ENTRY_KEYS - {"paths", "size"}:
            _text(d[k], f"{at}.{k}")
        _count(d["size"], f"{at}.size")
        if not _HEX64_RE.match(d["digest"]):
            raise StateError(f"{at}.digest is not a sha256")
        if d["kind"] not in NAMES or not _FILENAME_OK(d["filename"]) \
                or not d["filename"].endswith("." + d["kind"]):
            raise StateError(f"{at}: '{d['filename']}' is not a .{d['kind']} filename")
        paths = d["paths"]
        if not isinstance(paths, list) or not paths:
            raise StateError(f"{at}.paths is not a list of paths")
        for rel in paths:
            if not _entry_path_ok(d, rel):
                raise StateError(f"{at}.paths: {rel!r} is not where {d['filename']} lives "
                                 "inside the channel",
                                 hint="this file was not written by giftbox; restore it from "
                                      "backup (nothing was changed or deleted)")
        out.append(Entry.from_dict(d))
    return out


def _entry_path_ok(d: dict[str, Any], rel: object) -> bool:
    """The only places an entry's links can be: apt/pool/main/<i>/<name>/<file> or
    yum/<distro>/<arch>/Packages/<file> (never '..', never absolute)."""
    if not isinstance(rel, str) or not PACKAGE_PATH_RE.match(rel):
        return False
    parts = rel.split("/")
    if parts[-1] != d["filename"]:
        return False
    if d["kind"] == DEB.name:  # raw journal data, its kind already checked
        initial = d["name"][:4] if d["name"].startswith("lib") else d["name"][:1]
        return len(parts) == 6 and parts[3] == initial and parts[4] == d["name"]
    return parts[0] == "yum" and parts[1] == d["distro"] and len(parts) == 5


def _FILENAME_OK(name: str) -> bool:  # noqa: N802
    return _FILENAME_RE.match(name) is not None


def write_json(path: Path, payload: object, *, sync: bool = True) -> None:
    """Write-then-rename, so readers see the old file or the new one, never half of one.
    A temp file left by a kill is removed by the next change (``recovery.clean_strays``)."""
    tmp = temp_beside(path)
    text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True) + "\n"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a power cut
            finally:
                os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def save_state(settings: Settings, state: ChannelState) -> None:
    state.updated = utc_now()
    write_json(channel_dir(settings, state.channel) / "state.json", state.to_json())


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what readers see ---------------------------------------------------------------------


def fold_journal(journal: Journal, state: ChannelState) -> None:
    """Apply ``journal`` to ``state`` in memory (recovery, and the read-only view)."""
    for filename in journal.removed:
        state.entries.pop(filename, None)
    for e in journal.entries:
        state.entries[e.filename] = e
    live = {p for e in state.entries.values() for p in e.paths}
    state.retired = [r for r in state.retired + journal.retire if r["path"] not in live]
    state.pending = sorted(set(state.pending) | set(journal.repositories))
    state.serial = max(state.serial, journal.serial)


def channel_state(settings: Settings, channel: str) -> ChannelState:
    """What ``channel`` holds (the channel must be configured), including what an
    interrupted publish added, listed under ``pending`` until the next publish completes."""
    get_channel(settings, channel)
    # The journal first: a change writes it before the state and removes it after, so this
    # order never misses a change that recovery is folding in meanwhile (no lock is taken).
    journal = load_journal(channel_dir(settings, channel))
    state = load_state(settings, channel)
    if journal is not None and (journal.serial == 0 or journal.serial > state.serial):
        fold_journal(journal, state)
    return state


# --- the lock -----------------------------------------------------------------------------


@contextlib.contextmanager
def channel_lock(settings: Settings, channel: str, reporter: Reporter) -> Iterator[None]:
    """Exclusive per-channel lock; the kernel drops it if the holder dies, even by SIGKILL."""
    d = channel_dir(settings, channel)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            reporter.detail(f"waiting for another publish of '{channel}' to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
