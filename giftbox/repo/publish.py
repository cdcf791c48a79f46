"""Publishing into a channel: pool, channel state, metadata generations, atomic swap.

Every change of a channel (publish, promotion, rollback, prune, republish) is one transaction,
in this order, and this is why a SIGKILL, a power cut or a closed pipe at any point leaves a
good repository that never loses what was live or journaled:

1. Artifacts are read whole (pool.inspect_deb / inspect_rpm: every .deb member decompressed
   and listed, the control parsed strictly; an rpm's lead and digests checked), stored in the
   pool (whole-directory renames) and their filenames claimed (atomic symlinks). Nothing a
   client reads has changed yet.
2. Under the channel's lock (``flock``, so concurrent changes queue rather than interleave)
   ``state.json`` is read and validated, and **recovery** runs: a ``pending.json`` left by an
   interrupted change is validated, rolled forward into ``state.json`` (its entries added, its
   withdrawals done, its repositories marked ``pending``), its records written to the build
   records exactly once (``Records.once``, keyed by the change's id), and only then removed.
   So a journal is never merged with the next change's: a kill between journal and swap,
   then one between swap and state, then a third change, loses nothing. A state or journal
   giftbox did not write (unknown fields, a path outside the channel) is a StateError (exit 9),
   never acted on.
3. The change is planned against that state, new files are hard-linked into the channel's
   package paths (which no index names yet), and the records it makes (promotion, rollback,
   prune event, publish) are computed. Then, with SIGTERM/SIGINT/SIGHUP/SIGPIPE deferred and
   output errors ignored, the journal is written (write, fsync, rename): from here the change
   is decided and recovery finishes it.
4. Each affected apt suite / yum repository gets a new generation directory built from the
   state (Packages from parsed fields; createrepo_c must list every rpm) and signed aside. An
   error here undoes the change (journal and new links removed): the channel is unchanged.
5. Each generation is made live by replacing one symlink (rename(2) is atomic); files that
   left the channel earlier and are named by no kept generation any more are deleted (a
   withdrawn file stays while the previous generation, which clients mid-update may hold,
   names it); ``state.json`` is written, the records written, the journal removed.

Which repository a package goes to: the package says it. A .deb's Version and an rpm's Release
carry the distro's ``version_tag`` (``~deb12``, ``.el9``; builders/<distro>/builder.yaml), and
its architecture comes from the package header. ``distro=`` overrides the tag for packages
without one, but never contradicts one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from giftbox.distros import Distro
from giftbox.errors import RepoError, StateError
from giftbox.repo.channels import Channel, YumTarget, get_channel
from giftbox.repo.pool import Pool, PoolObject, check_filename, hash_file
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: before serials, retired files and journaled records
JOURNAL = "pending.json"
_GEN_RE = re.compile(r"^g(\d{6,})$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*\.(deb|rpm)$")
_REPO_ID_RE = re.compile(r"^(apt/[a-z0-9][a-z0-9.-]*|yum/[a-z0-9][a-z0-9.]*/[a-z0-9_]+)$")
# Where a package file can be inside a channel; no segment can be '.' or '..'.
_PACKAGE_PATH_RE = re.compile(
    r"^(apt/pool/main/[a-z0-9][a-z0-9+.-]*/[a-z0-9][a-z0-9+.-]+/[A-Za-z0-9][A-Za-z0-9._+~-]*\.deb"
    r"|yum/[a-z0-9][a-z0-9.]*/[a-z0-9_]+/Packages/[A-Za-z0-9][A-Za-z0-9._+~-]*\.rpm)$")
_STATE_KEYS = frozenset({"format", "channel", "updated", "key", "pending", "generations",
                         "entries", "serial", "retired"})
_JOURNAL_KEYS = frozenset({"format", "txid", "serial", "repositories", "entries", "removed",
                           "retire", "records"})


@dataclass(frozen=True)
class Artifact:
    """A file to publish, with the distro when its version carries no tag."""

    path: Path
    distro: str | None = None


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


@dataclass(frozen=True)
class PublishResult:
    channel: str
    added: tuple[Entry, ...]
    unchanged: tuple[Entry, ...]
    repositories: tuple[str, ...]  # the repository ids regenerated
    key: str
    seconds: float
    public_key: Path
    removed: tuple[Entry, ...] = ()  # entries withdrawn from the channel (prune, rollback)
    # The channel's entries, before this change, of every (name, distro, arch) it touched:
    # what a rollback of it restores.
    before: tuple[Entry, ...] = ()
    # What the build records got in the same change (Promotion values, ...), in the order
    # the recorder asked for them.
    records: tuple[Any, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"channel": self.channel, "added": [e.as_dict() for e in self.added],
                "unchanged": [e.as_dict() for e in self.unchanged],
                "removed": [e.as_dict() for e in self.removed],
                "repositories": list(self.repositories), "key": self.key,
                "seconds": round(self.seconds, 3), "public_key": str(self.public_key)}


# What a change does, decided under the channel lock from the state it finds there:
# (pool objects and their entries to add, filenames to withdraw).
Plan = Callable[["ChannelState"], tuple[list[tuple[PoolObject, Entry]], list[str]]]
# Called under the channel lock once the change is live and recorded.
Hook = Callable[["PublishResult"], None]
# Called under the channel lock before anything is written, with the change as it will be
# (``seconds`` not yet known) and the channel's entries after it: the records it returns
# ({"op": "promotion" | "event" | "publishes", "args": {...}}) are journaled with the change
# and written to the build records exactly once, in the same transaction (see _recover).
Recorder = Callable[["PublishResult", dict[str, "Entry"]], list[dict[str, Any]]]


def scope_key(e: Entry) -> tuple[str, str, str]:
    """What one promotion or rollback is about: a package name on one distro and arch."""
    return (e.name, e.distro, e.arch)


# --- paths and state --------------------------------------------------------------------


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
            and _GEN_RE.match(v) for k, v in generations.items()):
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
    """``pending.json``: a change in flight (see the module docstring)."""

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
                   records=_check_intents(data.get("records", []), where))


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
                or not isinstance(r["path"], str) or not _PACKAGE_PATH_RE.match(r["path"])
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
        if d["kind"] not in ("deb", "rpm") or not _FILENAME_OK(d["filename"]) \
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
    if not isinstance(rel, str) or not _PACKAGE_PATH_RE.match(rel):
        return False
    parts = rel.split("/")
    if parts[-1] != d["filename"]:
        return False
    if d["kind"] == "deb":
        initial = d["name"][:4] if d["name"].startswith("lib") else d["name"][:1]
        return len(parts) == 6 and parts[3] == initial and parts[4] == d["name"]
    return parts[0] == "yum" and parts[1] == d["distro"] and len(parts) == 5


def _FILENAME_OK(name: str) -> bool:  # noqa: N802
    return _FILENAME_RE.match(name) is not None


def _write_json(path: Path, payload: object, *, sync: bool = True) -> None:
    """Write-then-rename, so readers see the old file or the new one, never half of one.
    A temp file left by a kill is removed by the next change (``_clean_strays``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def _save_state(settings: Settings, state: ChannelState) -> None:
    state.updated = _now()
    _write_json(channel_dir(settings, state.channel) / "state.json", state.to_json())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


# --- which repository a package belongs to ------------------------------------------------


def _tag_matches(tag: str, text: str) -> bool:
    # A tag stands on its own: deb12 in 1.0~deb12 or 1.0+deb12u1, not in 1.0~deb120.
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(tag)}(?![0-9])", text) is not None


def _distro_for(channel: Channel, obj: PoolObject, tagged: str, path: Path,
                explicit: str | None) -> Distro:
    tagged_as = [name for name, family, tag in channel.known_tags
                 if family == obj.kind and _tag_matches(tag, tagged)]
    if explicit:
        d = channel.distro(explicit)
        if d.family != obj.kind:
            raise RepoError(f"{path} is a .{obj.kind} but distro '{explicit}' uses .{d.family}")
        if tagged_as and explicit not in tagged_as:
            raise RepoError(f"{path}: version {obj.version} carries the tag of "
                            f"{tagged_as[0]}, not of {explicit}",
                            hint="drop --distro, or publish the package built for " + explicit)
        return d
    served = [d for d in channel.distros if d.name in tagged_as]
    if len(served) == 1:
        return served[0]
    if tagged_as and not served:
        raise RepoError(f"{path} is built for {', '.join(tagged_as)}, which channel "
                        f"'{channel.name}' does not serve",
                        hint="it serves " + ", ".join(d.name for d in channel.distros))
    tags = ", ".join(f"{d.version_tag} ({d.name})" for d in channel.distros
                     if d.family == obj.kind) or "none"
    raise RepoError(
        f"{path}: cannot tell which distro {obj.name} {obj.version} is for"
        + (" (several tags match)" if served else ""),
        hint=f"its version should carry one of the tags channel '{channel.name}' serves: {tags}; "
             "or pass --distro")


def _check_arch(channel: Channel, distro: Distro, obj: PoolObject, path: Path) -> tuple[str, ...]:
    """The arch directories the package goes to (arch-independent ones go to all)."""
    spelled = tuple(a.spelled(distro.family) for a in distro.arches)
    if obj.arch in ("all", "noarch"):
        return spelled
    if obj.arch not in spelled:
        raise RepoError(f"{path}: architecture {obj.arch} is not served for {distro.name} by "
                        f"channel '{channel.name}' (it serves {', '.join(spelled)})")
    return (obj.arch,)


def _inspect(path: Path, channel: Channel, explicit: str | None) -> tuple[PoolObject, Entry]:
    from giftbox.repo.pool import inspect_deb, inspect_rpm

    if not path.is_file():
        raise RepoError(f"{path}: no such file")
    digest, md5, sha1, size = hash_file(path)
    if path.suffix == ".deb":
        obj, tagged = inspect_deb(path, digest, md5, sha1, size)
    elif path.suffix == ".rpm":
        obj, tagged = inspect_rpm(path, digest, md5, sha1, size)
    else:
        raise RepoError(f"{path}: not a .deb or .rpm")
    check_filename(obj.filename)
    distro = _distro_for(channel, obj, tagged, path, explicit)
    arches = _check_arch(channel, distro, obj, path)
    obj = PoolObject(**{**obj.as_dict(), "distro": distro.name})  # type: ignore[arg-type]
    if obj.kind == "deb":
        paths: tuple[str, ...] = (f"apt/{obj.apt_pool_path}",)
    else:
        paths = tuple(f"yum/{distro.name}/{a}/Packages/{obj.filename}" for a in arches)
    return obj, _entry(obj, paths)


def _entry(obj: PoolObject, paths: tuple[str, ...]) -> Entry:
    return Entry(digest=obj.digest, filename=obj.filename, kind=obj.kind, name=obj.name,
                 version=obj.version, arch=obj.arch, distro=obj.distro, size=obj.size,
                 paths=paths, added=_now())


def entry_for(channel: Channel, obj: PoolObject) -> Entry:
    """The channel entry for a pool object (what promotion adds to the target channel)."""
    distro = channel.distro(obj.distro)
    arches = _check_arch(channel, distro, obj, Path(obj.filename))
    if obj.kind == "deb":
        return _entry(obj, (f"apt/{obj.apt_pool_path}",))
    return _entry(obj, tuple(f"yum/{distro.name}/{a}/Packages/{obj.filename}" for a in arches))


def _repositories_of(channel: Channel, entry: Entry) -> set[str]:
    if entry.kind == "deb":
        return {f"apt/{channel.distro(entry.distro).codename}"}
    return {"yum/" + "/".join(p.split("/")[1:3]) for p in entry.paths}


# --- publishing ---------------------------------------------------------------------------


def publish(channel: str | Channel, artifacts: Sequence[Path | Artifact], settings: Settings,
            reporter: Reporter = NULL_REPORTER, *, distro: str | None = None,
            record: bool = False, build_id: int | None = None) -> PublishResult:
    """Add ``artifacts`` to ``channel`` and republish the repositories they belong to.

    Each file is read whole (pool.inspect_deb / inspect_rpm) before it claims its name.
    Idempotent: publishing a file the channel already holds changes nothing. Raises RepoError
    (the channel unchanged) for an unknown channel, a missing or expired key, a file whose name
    is taken by other bytes, a damaged or non-conforming package, or a package the channel
    does not serve. With ``record``, the publish is recorded in the build records in the same
    transaction (``channel history``).
    """
    start = time.monotonic()
    reporter = quiet_on_closed_output(reporter)
    ch = channel if isinstance(channel, Channel) else get_channel(settings, channel)
    from giftbox.keys import signing_key

    key = signing_key(settings, ch)  # before anything is written: no key, no change
    pool = Pool(settings.repos_dir)
    found: list[tuple[PoolObject, Entry]] = []
    with reporter.stage(f"pool: {len(artifacts)} file(s)"):
        for a in artifacts:
            art = a if isinstance(a, Artifact) else Artifact(Path(a), distro)
            obj, entry = _inspect(art.path, ch, art.distro or distro)
            pool.add(art.path, obj)
            pool.claim_name(obj)
            found.append((obj, entry))
            reporter.detail(f"{obj.filename}  sha256:{obj.digest[:16]}")

    def recorder(result: PublishResult, _entries: dict[str, Entry]) -> list[dict[str, Any]]:
        if not record or not result.added:
            return []
        from giftbox.records import who

        return [{"op": "publishes", "args": {
            "channel": ch.name, "items": [[e.digest, e.filename] for e in result.added],
            "build_id": build_id, "actor": who()}}]

    return _publish_entries(ch, lambda _state: (found, []), settings, reporter, key, start,
                            record=recorder)


def publish_objects(channel: str | Channel, digests: Sequence[str], settings: Settings,
                    reporter: Reporter = NULL_REPORTER, *, after: Hook | None = None,
                    record: Recorder | None = None) -> PublishResult:
    """Add pool objects (by digest) to ``channel``: promotion's primitive, no bytes copied.

    ``record`` gives the records journaled with the change (promote's); ``after`` runs under
    the channel lock once the change is live and recorded.
    """
    start = time.monotonic()
    ch = channel if isinstance(channel, Channel) else get_channel(settings, channel)
    from giftbox.keys import signing_key

    key = signing_key(settings, ch)
    pool = Pool(settings.repos_dir)
    found = []
    for digest in digests:
        obj = pool.load(digest)
        found.append((obj, entry_for(ch, obj)))
    return _publish_entries(ch, lambda _state: (found, []), settings, reporter, key, start,
                            after=after, record=record)


def change(channel: str | Channel, plan: Plan, settings: Settings,
           reporter: Reporter = NULL_REPORTER, *, after: Hook | None = None,
           record: Recorder | None = None) -> PublishResult:
    """Apply ``plan`` (decided under the channel lock) and republish what it touched, with
    the records ``record`` returns, as one transaction.

    The general form behind promotion, prune and rollback: entries are added from the pool
    and/or withdrawn. Withdrawn entries' hard links stay while the previous index generation
    of their repository names them, then go; the pool objects stay (``giftbox prune --gc``
    removes the ones no channel references).
    """
    start = time.monotonic()
    ch = channel if isinstance(channel, Channel) else get_channel(settings, channel)
    from giftbox.keys import signing_key

    key = signing_key(settings, ch)
    return _publish_entries(ch, plan, settings, reporter, key, start, after=after,
                            record=record)


def withdraw(channel: str | Channel, filenames: Iterable[str], settings: Settings,
             reporter: Reporter = NULL_REPORTER, *, after: Hook | None = None,
             record: Recorder | None = None) -> PublishResult:
    """Remove entries from ``channel`` by filename and republish (what prune does)."""
    names = list(filenames)
    return change(channel, lambda _state: ([], names), settings, reporter, after=after,
                  record=record)


def republish(channel: str | Channel, settings: Settings,
              reporter: Reporter = NULL_REPORTER) -> PublishResult:
    """Regenerate and re-sign every repository of ``channel`` from its state."""
    start = time.monotonic()
    ch = channel if isinstance(channel, Channel) else get_channel(settings, channel)
    from giftbox.keys import signing_key

    key = signing_key(settings, ch)
    return _publish_entries(ch, lambda _state: ([], []), settings, reporter, key, start,
                            everything=True)


def _publish_entries(ch: Channel, plan: Plan, settings: Settings,
                     reporter: Reporter, key, start: float,  # type: ignore[no-untyped-def]
                     everything: bool = False, after: Hook | None = None,
                     record: Recorder | None = None) -> PublishResult:
    """One transaction (see the module docstring for its order and why it is safe)."""
    reporter = quiet_on_closed_output(reporter)
    pool = Pool(settings.repos_dir)
    root = channel_dir(settings, ch.name)
    with channel_lock(settings, ch.name, reporter):
        state = load_state(settings, ch.name)
        _recover(settings, ch, root, state, pool)
        _clean_strays(root)
        found, withdrawn = plan(state)  # may raise: nothing has been written yet
        removed: list[Entry] = []
        for filename in dict.fromkeys(withdrawn):
            held = state.entries.get(filename)
            if held is None:
                raise RepoError(f"{filename} is not in channel '{ch.name}'")
            removed.append(held)
        touched = {scope_key(e) for _, e in found} | {scope_key(e) for e in removed}
        before = tuple(state.entries[f] for f in sorted(state.entries)
                       if scope_key(state.entries[f]) in touched)
        added: list[Entry] = []
        unchanged: list[Entry] = []
        objects: dict[str, PoolObject] = {}
        for obj, entry in found:
            held = state.entries.get(entry.filename)
            if held is not None and held.digest == entry.digest:
                unchanged.append(held)
                continue
            if held is not None or entry.filename in objects:
                raise RepoError(f"{entry.filename} is already in channel '{ch.name}' with "
                                "different bytes",
                                hint="bump the package release and rebuild")
            objects[entry.filename] = obj
            added.append(entry)
        entries = dict(state.entries)
        for e in removed:
            del entries[e.filename]
        for e in added:
            entries[e.filename] = e
        affected = set(state.pending)
        for e in added + removed:
            affected |= _repositories_of(ch, e)
        all_repos = {f"apt/{t.codename}" for t in ch.apt_targets} | \
                    {f"yum/{t.path}" for t in ch.yum_targets}
        if everything:
            affected |= all_repos
        # Repositories never published (or removed by hand) are created, empty if need be,
        # so that clients pointed at any served distro get a signed index, not a 404.
        affected |= {r for r in all_repos if not (root / _live_link(r)).is_symlink()}
        if key.fingerprint != state.key:
            affected |= {r for r in all_repos if (root / _live_link(r)).is_symlink()}
        affected &= all_repos
        pubkey = public_key_path(settings, ch.name)
        result = PublishResult(ch.name, tuple(added), tuple(unchanged), tuple(sorted(affected)),
                               key.fingerprint, 0.0, pubkey, tuple(removed), before)
        intents = record(result, entries) if record is not None else []
        _check_intents(intents, "the records of this change")
        if not affected:
            recorded = _apply_records(settings, secrets.token_hex(8), intents)
            result = replace(result, seconds=time.monotonic() - start, records=tuple(recorded))
            if after is not None:
                after(result)
            return result
        # Files that leave the channel stay for one more index generation of their repository
        # (a client holding the previous index still downloads them), then go.
        live_now = {p for e in entries.values() for p in e.paths}
        retire = [{"path": rel, "repo": _repo_of_path(ch, e, rel),
                   "gen": _gen_number(root, _repo_of_path(ch, e, rel)) + 1}
                  for e in removed for rel in e.paths if rel not in live_now]
        txn = Journal(txid=secrets.token_hex(8), serial=state.serial + 1,
                      repositories=sorted(affected), entries=added,
                      removed=[e.filename for e in removed], retire=retire, records=intents)
        new = ChannelState(channel=ch.name, entries=entries,
                           generations=dict(state.generations), pending=sorted(affected),
                           key=state.key, updated=state.updated, serial=txn.serial,
                           retired=[r for r in state.retired if r["path"] not in live_now])
        created = [dest for e in added for dest in _link_all(pool, objects[e.filename], root,
                                                             e.paths)]
        with _critical():
            _write_json(root / JOURNAL, txn.as_dict())
            _fault("journal")
            try:
                _export_key(settings, key, pubkey)
                built = _build(ch, new, sorted(affected), settings, reporter, key)
                _fault("built")
            except Exception:
                # Nothing live has changed: undo this change whole (what it linked, its
                # journal), so the error's "the channel is unchanged" is true.
                _abort(root, created)
                raise
            with reporter.stage("swap"):
                for repo_id, (link, gen_rel, gen_name) in built.items():
                    _swap(link, gen_rel)
                    _fault("swap")
                    new.generations[repo_id] = gen_name
                    _prune_generations(link)
            new.pending = []
            new.key = key.fingerprint
            new.retired = _expire_retired(root, new) + retire
            _fault("swapped")
            _save_state(settings, new)
            _fault("saved")
            recorded = _apply_records(settings, txn.txid, intents)
            _fault("recorded")
            (root / JOURNAL).unlink()
            _fault("done")
        result = replace(result, seconds=time.monotonic() - start, records=tuple(recorded))
        if after is not None:
            after(result)
    return result


def _abort(root: Path, created: list[Path]) -> None:
    with contextlib.suppress(FileNotFoundError):
        (root / JOURNAL).unlink()
    for dest in created:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()


def _link_all(pool: Pool, obj: PoolObject, root: Path, paths: Iterable[str]) -> list[Path]:
    """Hard-link ``obj`` at each channel path; returns the links this call created."""
    created = []
    for rel in paths:
        dest = root / rel
        if not dest.exists():
            created.append(dest)
        _link(pool.object_path(obj), dest)
    return created


def _repo_of_path(ch: Channel, e: Entry, rel: str) -> str:
    if e.kind == "deb":
        return f"apt/{ch.distro(e.distro).codename}"
    return "yum/" + "/".join(rel.split("/")[1:3])


def _gen_number(root: Path, repo_id: str) -> int:
    current = _current_gen(root / _live_link(repo_id), yum=repo_id.startswith("yum/"))
    m = _GEN_RE.match(current or "")
    return int(m.group(1)) if m else 0


def _expire_retired(root: Path, state: ChannelState) -> list[dict[str, Any]]:
    """Delete the retired files no live or previous index generation names any more;
    returns the ones that must stay a while longer."""
    live = {p for e in state.entries.values() for p in e.paths}
    keep = []
    for r in state.retired:
        if r["path"] in live:
            continue  # back in the channel (a rollback restored it): not retired any more
        if _gen_number(root, r["repo"]) <= r["gen"]:
            keep.append(r)
            continue
        _unlink_inside(root, r["path"])
    return keep


def _unlink_inside(root: Path, rel: str) -> None:
    """Remove a channel package file, and only that: the path was validated when the state
    was read; it is checked again here against where it really leads."""
    if not _PACKAGE_PATH_RE.match(rel):
        raise StateError(f"refusing to delete '{rel}': not a package path of {root}")
    path = root / rel
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise StateError(f"refusing to delete {path}: it leads outside {root}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --- recovery ---------------------------------------------------------------------------


def _recover(settings: Settings, ch: Channel, root: Path, state: ChannelState,
             pool: Pool) -> None:
    """Finish what an interrupted change journaled, before anything else happens.

    The journal is rolled forward into ``state.json`` (and its records into the build
    records, exactly once) and only then removed, so it never has to be merged with the
    next change's: whatever sequence of kills came before, every entry that was journaled or
    live is in the state afterwards (unless the change was its explicit withdrawal).
    """
    journal = load_journal(root)
    if journal is None:
        return
    if journal.serial == 0 or journal.serial > state.serial:
        _fold(journal, state)
        for e in journal.entries:  # the links precede the journal; a hand-made gap is refilled
            missing = [rel for rel in e.paths if not (root / rel).is_file()]
            if missing:
                try:
                    obj = pool.load(e.digest)
                except RepoError:
                    raise StateError(
                        f"{root / JOURNAL} adds {e.filename}, but neither {missing[0]} nor its "
                        f"pool object {e.digest[:16]}… exists",
                        hint="restore the pool from backup, or publish the file again") \
                        from None
                _link_all(pool, obj, root, missing)
        _save_state(settings, state)
    _apply_records(settings, journal.txid, journal.records)
    (root / JOURNAL).unlink()


def _fold(journal: Journal, state: ChannelState) -> None:
    """Apply ``journal`` to ``state`` in memory (recovery, and the read-only view)."""
    for filename in journal.removed:
        state.entries.pop(filename, None)
    for e in journal.entries:
        state.entries[e.filename] = e
    live = {p for e in state.entries.values() for p in e.paths}
    state.retired = [r for r in state.retired + journal.retire if r["path"] not in live]
    state.pending = sorted(set(state.pending) | set(journal.repositories))
    state.serial = max(state.serial, journal.serial)


def _clean_strays(root: Path) -> None:
    """Temp files of writers that died (under the lock, every temp file is someone dead's)."""
    for d in (root, root / ".cache"):
        if d.is_dir():
            for stray in d.glob(".*.json.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    stray.unlink()


def _apply_records(settings: Settings, txid: str, intents: Sequence[dict[str, Any]]) -> list[Any]:
    """Write a change's records (promotions, events, publishes) in one records transaction
    marked with the change's id: a journal replayed twice records once."""
    if not intents:
        return []
    from giftbox.records import open_records

    def write(db: Any) -> list[Any]:
        out = []
        for i in intents:
            args = dict(i["args"])
            if i["op"] == "promotion":
                args["scope"] = [tuple(s) for s in args.get("scope", [])]
                out.append(db.record_promotion(**args))
            elif i["op"] == "event":
                out.append(db.record_event(**args))
            else:
                args["items"] = [tuple(x) for x in args["items"]]
                out.append(db.record_publishes(**args))
        return out

    with open_records(settings) as db:
        return db.once(f"txn:{txid}", lambda: write(db)) or []


_RECORD_ARGS = {
    "promotion": {"kind", "project", "from_channel", "to_channel", "digests", "filenames",
                  "version", "reason", "scope", "snapshot", "rolls_back", "actor", "forced"},
    "event": {"channel", "kind", "detail", "reason", "actor"},
    "publishes": {"channel", "items", "build_id", "actor"},
}


def _check_intents(intents: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(intents, list):
        raise StateError(f"{where}: records is not a list")
    for n, i in enumerate(intents):
        if (not isinstance(i, dict) or set(i) != {"op", "args"} or i["op"] not in _RECORD_ARGS
                or not isinstance(i["args"], dict)
                or not set(i["args"]) <= _RECORD_ARGS[i["op"]]):
            raise StateError(f"{where}: records[{n}] is not a record giftbox writes",
                             hint="restore the file from backup")
    return intents


# --- signals and closed pipes -----------------------------------------------------------


_DEFERRED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)


@contextlib.contextmanager
def _critical() -> Iterator[None]:
    """From the journal to its removal, SIGTERM, SIGINT, SIGHUP and SIGPIPE wait: the change
    completes (or, before its swap, is undone) and the signal is then delivered as before.
    Handlers, not a blocked mask: tools started meanwhile (gpg, its agent) get the defaults."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in _DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for num in dict.fromkeys(caught):
            os.kill(os.getpid(), num)


class _QuietOnClosed(Reporter):
    """A reporter whose output may be a closed pipe (``giftbox promote … | head -1``): the
    change goes on silently rather than stopping half-way at a write."""

    def __init__(self, inner: Reporter) -> None:
        super().__init__(inner.stream, quiet=inner.quiet, ci_groups=inner.ci_groups)

    def _say(self, text: str) -> None:
        if self.quiet:
            return
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # EPIPE, or the stream closed under us
            self.quiet = True

    def info(self, message: str) -> None:
        self._say(message)

    def detail(self, message: str) -> None:
        self._say(f"    {message}")


def quiet_on_closed_output(reporter: Reporter) -> Reporter:
    return reporter if isinstance(reporter, _QuietOnClosed) else _QuietOnClosed(reporter)


# Fault injection for the crash tests (tests/test_repo_model.py, test_repo_integrity.py):
# ``FAULT_HOOK`` (in-process), or in a subprocess $GIFTBOX_TEST_KILL_AT=<point> (SIGKILL) or
# $GIFTBOX_TEST_TERM_AT=<point> (SIGTERM, which waits for the change), at the named points of
# a change: journal, built, swap, swapped, saved, recorded, done.
FAULT_HOOK: Callable[[str], None] | None = None
FAULT_POINTS = ("journal", "built", "swap", "swapped", "saved", "recorded", "done")


def _fault(point: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(point)
    if os.environ.get("GIFTBOX_TEST_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("GIFTBOX_TEST_TERM_AT") == point:
        os.kill(os.getpid(), signal.SIGTERM)


def _live_link(repo_id: str) -> str:
    """The channel-relative symlink that makes a repository's metadata live."""
    kind, rest = repo_id.split("/", 1)
    return f"apt/dists/{rest}" if kind == "apt" else f"yum/{rest}/repodata"


def _link(src: Path, dest: Path) -> None:
    """Hard-link a pool object into the channel; an existing link must be the same object."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except FileExistsError:
        if not os.path.samefile(src, dest):
            # A stray file (not a pool link) where a package should go: replace it atomically.
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.link(src, tmp)
            os.replace(tmp, dest)


def _export_key(settings: Settings, key, dest: Path) -> None:  # type: ignore[no-untyped-def]
    """(Re-)export the public key when missing, another key's, or older than the keyring
    (an extended expiry must reach clients)."""
    from giftbox.keys import export_public_key, gnupg_home

    ring = gnupg_home(settings) / "pubring.kbx"
    stamp = dest.with_name(f".{dest.name}.fpr")
    try:
        fresh = (stamp.read_text() == key.fingerprint
                 and dest.stat().st_mtime >= ring.stat().st_mtime)
    except FileNotFoundError:
        fresh = False
    if not fresh:
        export_public_key(settings, key, dest)
        stamp.write_text(key.fingerprint)


def _next_gen(gen_root: Path, current: str | None) -> tuple[str, Path]:
    n = 0
    if current:
        m = _GEN_RE.match(current)
        n = int(m.group(1)) if m else 0
    name = f"g{n + 1:06d}"
    path = gen_root / name
    if path.exists():  # left by a publish that was killed before its swap
        shutil.rmtree(path)
    return name, path


def _current_gen(link: Path, yum: bool) -> str | None:
    try:
        parts = Path(os.readlink(link)).parts
    except (FileNotFoundError, OSError):
        return None
    return parts[-2] if yum else parts[-1]


def _build(ch: Channel, state: ChannelState, repo_ids: list[str], settings: Settings,
           reporter: Reporter, key) -> dict[str, tuple[Path, str, str]]:  # type: ignore[no-untyped-def]
    """Build and sign new generations; returns repository id -> (live link, link target)."""
    from giftbox.keys import run_all, sign_commands

    root = channel_dir(settings, ch.name)
    built: dict[str, tuple[Path, str, str]] = {}
    signing = []
    apt_targets = {f"apt/{t.codename}": t for t in ch.apt_targets}
    yum_targets = {f"yum/{t.path}": t for t in ch.yum_targets}
    cache: dict[str, str] | None = None
    cache_dirty = False
    release_jobs = []
    stamps: list[tuple[Path, Path | None, tuple[str, ...]]] = []
    for repo_id in repo_ids:
        link = root / _live_link(repo_id)
        if repo_id in apt_targets:
            from giftbox.repo.apt import packages_stanza, release_command, write_suite

            target = apt_targets[repo_id]
            if cache is None:
                cache = _load_cache(root)
            with reporter.stage(f"apt {ch.name}/{target.codename}"):
                entries = sorted((e for e in state.entries.values()
                                  if e.kind == "deb" and e.distro == target.distro),
                                 key=lambda e: (e.name, e.filename))
                stanzas = []
                pool = Pool(settings.repos_dir)
                for e in entries:
                    s = cache.get(e.digest)
                    if s is None:
                        s = cache[e.digest] = packages_stanza(pool.load(e.digest))
                        cache_dirty = True
                    stanzas.append((e.arch, s))
                gen_root = root / "apt" / ".gen" / target.codename
                current = _current_gen(link, yum=False)
                name, gen = _next_gen(gen_root, current)
                write_suite(gen, target, stanzas, gen_root / current if current else None)
                release_jobs.append((gen, target, release_command(gen, target, ch.name).popen()))
                stamps.append((gen, gen_root / current if current else None, _APT_TOP))
                reporter.detail(f"{len(entries)} package(s), generation {name}")
            built[repo_id] = (link, f"../.gen/{target.codename}/{name}", name)
        else:
            from giftbox.repo.yum import write_repodata

            ytarget: YumTarget = yum_targets[repo_id]
            with reporter.stage(f"yum {ch.name}/{ytarget.path}"):
                repo_dir = root / "yum" / ytarget.distro / ytarget.arch
                repo_dir.mkdir(parents=True, exist_ok=True)
                prefix = f"yum/{ytarget.path}/"
                files = [p[len(prefix):] for e in state.entries.values() if e.kind == "rpm"
                         for p in e.paths if p.startswith(prefix)]
                current = _current_gen(link, yum=True)
                gen_root = repo_dir / ".gen"
                name, gen = _next_gen(gen_root, current)
                repomd = write_repodata(repo_dir, gen, ytarget, files,
                                        gen_root / current if current else None)
                signing += sign_commands(settings, key, repomd,
                                         detached=repomd.with_name("repomd.xml.asc"))
                stamps.append((repomd.parent, gen_root / current / "repodata" if current
                               else None, _YUM_TOP))
                reporter.detail(f"{len(files)} package(s), generation {name}")
            built[repo_id] = (link, f".gen/{name}/repodata", name)
    for gen, target, proc in release_jobs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RepoError(f"apt-ftparchive release failed for {target.codename}: "
                            f"{err.decode(errors='replace').strip()}")
        (gen / "Release").write_bytes(out)
        signing += sign_commands(settings, key, gen / "Release", clear=gen / "InRelease",
                                 detached=gen / "Release.gpg")
    if signing:
        with reporter.stage(f"sign ({key.fingerprint[-16:]})"):
            run_all(signing, "signing")
    for new, old, names in stamps:
        _later_than(new, old, names)
    if cache is not None and cache_dirty:
        _save_cache(root, cache)
    return built


_APT_TOP = ("InRelease", "Release", "Release.gpg")
_YUM_TOP = ("repomd.xml", "repomd.xml.asc")


def _later_than(new: Path, old: Path | None, names: tuple[str, ...]) -> None:
    """Give a generation's top files (the ones fetched by name, not by hash) an mtime at least
    one whole second later than the live generation's.

    HTTP servers answer If-Modified-Since at one-second granularity (python's http.server
    answers 304 when mtime <= the date, nginx when they match; ETags are mtime and size), so two
    changes within one second would hand a client that fetched the first a 304 for the
    second: it would keep the old InRelease, and miss the change, until the next one.
    """
    floor = 0
    for name in names:
        with contextlib.suppress(FileNotFoundError, TypeError):
            floor = max(floor, int((old / name).stat().st_mtime) + 1)  # type: ignore[operator]
    stamp = max(float(int(time.time())), float(floor))
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.utime(new / name, (stamp, stamp))


def _load_cache(root: Path) -> dict[str, str]:
    """digest -> Packages stanza: regenerating Packages never re-reads a .deb."""
    try:
        data = json.loads((root / ".cache" / "packages.json").read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # a cache: anything missing is rebuilt from the pool's meta.json


def _save_cache(root: Path, cache: dict[str, str]) -> None:
    (root / ".cache").mkdir(exist_ok=True)
    # No fsync: losing the cache costs time, never correctness.
    _write_json(root / ".cache" / "packages.json", cache, sync=False)


def _swap(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: clients see the old target or the new one


def _prune_generations(link: Path) -> None:
    """Drop generations other than the live one and the one before it, and temp links.

    The one before stays whole for clients that fetched its InRelease and then ask for the
    old plain-named indexes (by-hash copies cover those who use by-hash).
    """
    live = (link.parent / os.readlink(link)).resolve()
    # apt: dists/<codename> -> .gen/<codename>/gN; yum: repodata -> .gen/gN/repodata
    live_gen = live.parent if link.name == "repodata" else live
    gens = sorted((p for p in live_gen.parent.iterdir() if _GEN_RE.match(p.name)),
                  key=lambda p: int(p.name[1:]))
    older = [g for g in gens if int(g.name[1:]) < int(live_gen.name[1:])]
    for g in gens:
        if g == live_gen or (older and g == older[-1]):
            continue
        shutil.rmtree(g, ignore_errors=True)
    for stray in link.parent.glob(f".{link.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stray.unlink()


def channel_state(settings: Settings, channel: str) -> ChannelState:
    """What ``channel`` holds (the channel must be configured), including what an
    interrupted publish added, listed under ``pending`` until the next publish completes."""
    get_channel(settings, channel)
    # The journal first: a change writes it before the state and removes it after, so this
    # order never misses a change that recovery is folding in meanwhile (no lock is taken).
    journal = load_journal(channel_dir(settings, channel))
    state = load_state(settings, channel)
    if journal is not None and (journal.serial == 0 or journal.serial > state.serial):
        _fold(journal, state)
    return state
