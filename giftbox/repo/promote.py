"""Moving tested artifacts between channels, undoing that, and retention.

Promotion (``giftbox promote nova --from nightly --to stable``) picks exact artifacts, by
digest, from the source channel's ``state.json`` and hard-links the same pool objects into the
target (``publish_objects``): no bytes are copied, so stable serves exactly what was tested in
nightly (invariant 4). By default it takes, for each of the project's packages, the highest
version per distro and arch present in the source, in dpkg's or rpm's order (``vercmp``).

Rollback semantics. A channel can hold several versions of a package (apt and dnf install the
highest), so "the previous state" is defined per (package name, distro, arch) that a promotion
touched: under the target channel's lock, the promotion records the target's entries of those
keys as they were just before it (the snapshot, in the records database). Rolling back restores
exactly that entry set: entries of those keys that are not in the snapshot are withdrawn, and
snapshot entries that are missing (pruned since) are linked back from the pool, which must still
hold them (``prune --gc`` may have removed them: then the rollback is refused, changing
nothing). Rollbacks stack: each undoes the latest promotion into the channel (of the project)
not yet rolled back, so two rollbacks undo the last two promotions.

Retention (``giftbox prune``) withdraws old entries from one channel, never as part of a publish:
per (package name, distro, arch) the N highest versions stay, and so does every pinned version
(on top of the N). It removes channel entries only; a pool object stays while any channel
references it (and a rollback snapshot may still want it) until ``prune --gc`` removes the
objects no channel references.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from giftbox.distros import Arch
from giftbox.errors import BuilderError, RepoError
from giftbox.repo.channels import Channel, get_channel, load_channels
from giftbox.repo.pool import Pool
from giftbox.repo.publish import (
    ChannelState,
    Entry,
    PublishResult,
    change,
    channel_dir,
    channel_lock,
    channel_state,
    entry_for,
    load_journal,
    load_state,
    scope_key,
)
from giftbox.repo.vercmp import compare, sort_key
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]{0,99}$")
DEFAULT_PREFIX = "giftbox-"  # spec.package.name defaults to giftbox-<project>
GC_MIN_AGE = 3600.0  # a pool object younger than this may belong to a publish in progress


# --- projects and packages ----------------------------------------------------------------


def _check_name(what: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise RepoError(f"'{name}' is not a {what} name",
                        hint="lower-case letters, digits, '.', '+', '_' and '-'")
    return name


def _spec_package(settings: Settings, project: str) -> str | None:
    """``package.name`` of specs/<project>.yaml (its default when unset), None without a spec.

    Read with plain YAML rather than the spec validator: promotion must work for a project
    whose spec has since changed or been removed.
    """
    from giftbox.spec import raw_spec

    if not (settings.specs_dir / f"{project}.yaml").is_file():
        return None
    data = raw_spec(settings.root, project) or {}
    package = data.get("package")
    name = package.get("name") if isinstance(package, dict) else None
    return str(name) if name else f"{DEFAULT_PREFIX}{project}"


def project_of(settings: Settings, name: str) -> str:
    """The project a PROJECT argument or a package name stands for (how it is recorded)."""
    _check_name("project", name)
    if (settings.specs_dir / f"{name}.yaml").is_file():
        return name
    if name.startswith(DEFAULT_PREFIX) and len(name) > len(DEFAULT_PREFIX):
        return name[len(DEFAULT_PREFIX):]
    return name


def package_names(settings: Settings, project: str) -> set[str]:
    """The package names a project ships as: its spec's package.name, else giftbox-<project>;
    the bare name too, so a package can be named directly."""
    project = project_of(settings, project)
    return {project, _spec_package(settings, project) or f"{DEFAULT_PREFIX}{project}"}


# --- selection ----------------------------------------------------------------------------


def _strip_tag(ch: Channel, e: Entry) -> str:
    """The version without the distro tag: ``1.0-1~deb12`` -> ``1.0-1``."""
    for name, _family, tag in ch.known_tags:
        if name == e.distro:
            for sep in ("~", "."):
                if e.version.endswith(sep + tag):
                    return e.version[: -len(sep + tag)]
    return e.version


def _upstream(e: Entry) -> str:
    plain = e.version.split(":", 1)[-1]
    return plain.rpartition("-")[0] or plain


def _version_matches(ch: Channel, e: Entry, wanted: str) -> bool:
    """``--version`` may name the full version, without epoch, without the distro tag (one
    value for every distro), or the upstream version alone (its highest revision wins)."""
    return wanted in (e.version, e.version.split(":", 1)[-1], _strip_tag(ch, e),
                      _strip_tag(ch, e).split(":", 1)[-1], _upstream(e))


def _arch_names(arch: str) -> set[str]:
    try:
        a = Arch.parse(arch)
    except BuilderError as exc:
        raise RepoError(exc.message, hint=exc.hint) from None
    return {a.deb, a.rpm, "all", "noarch"}


def _highest(entries: Iterable[Entry]) -> list[Entry]:
    """The highest version per (name, distro, arch)."""
    best: dict[tuple[str, str, str], Entry] = {}
    for e in entries:
        held = best.get(scope_key(e))
        if held is None or compare(e.kind, e.version, held.version) > 0:
            best[scope_key(e)] = e
    return [best[k] for k in sorted(best)]


def _versions_listing(entries: Iterable[Entry]) -> str:
    by_target: dict[str, list[Entry]] = {}
    for e in entries:
        by_target.setdefault(f"{e.name} {e.distro}/{e.arch}", []).append(e)
    parts = []
    for target in sorted(by_target):
        es = by_target[target]
        versions = sorted({e.version for e in es}, key=sort_key(es[0].kind))
        parts.append(f"{target}: {', '.join(versions)}")
    return "; ".join(parts)


def select(settings: Settings, source: Channel, state: ChannelState, project: str, *,
           version: str | None = None, distro: str | None = None,
           arch: str | None = None) -> list[Entry]:
    """The exact entries of ``project`` to promote out of ``state``."""
    names = package_names(settings, project)
    ours = [e for e in state.entries.values() if e.name in names]
    if not ours:
        held = sorted({e.name for e in state.entries.values()})
        raise RepoError(
            f"channel '{source.name}' has no package of project '{project}' "
            f"(looked for {', '.join(sorted(names))})",
            hint=("it holds: " + ", ".join(held)) if held else "it is empty")
    if distro is not None:
        source.distro(distro)  # an unknown distro: RepoError naming the served ones
        picked = [e for e in ours if e.distro == distro]
        if not picked:
            raise RepoError(f"channel '{source.name}' has no {project} for {distro}",
                            hint="it has: " + _versions_listing(ours))
        ours = picked
    if arch is not None:
        spellings = _arch_names(arch)
        picked = [e for e in ours if e.arch in spellings]
        if not picked:
            raise RepoError(f"channel '{source.name}' has no {project} for {arch}",
                            hint="it has: " + _versions_listing(ours))
        ours = picked
    if version is not None:
        picked = [e for e in ours if _version_matches(source, e, version)]
        if not picked:
            raise RepoError(f"channel '{source.name}' does not have {project} version "
                            f"{version}", hint="it has: " + _versions_listing(ours))
        ours = picked
    return _highest(ours)


# --- promote ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promoted:
    """What one promote did (or, dry, would do) for one project."""

    project: str
    from_channel: str
    to_channel: str
    moved: tuple[Entry, ...]  # linked into the target
    unchanged: tuple[Entry, ...]  # the target already had them
    dry_run: bool
    reason: str
    who: str
    promotion_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        def short(e: Entry) -> dict[str, Any]:
            return {"filename": e.filename, "name": e.name, "version": e.version,
                    "distro": e.distro, "arch": e.arch, "digest": e.digest}

        return {"project": self.project, "from": self.from_channel, "to": self.to_channel,
                "moved": [short(e) for e in self.moved],
                "unchanged": [short(e) for e in self.unchanged], "dry_run": self.dry_run,
                "reason": self.reason, "who": self.who, "promotion_id": self.promotion_id}


def _channels(settings: Settings, from_channel: str, to_channel: str) -> tuple[Channel, Channel]:
    source = get_channel(settings, from_channel)
    target = get_channel(settings, to_channel)
    if source.name == target.name:
        raise RepoError(f"cannot promote from '{source.name}' to itself",
                        hint="--from and --to name different channels, e.g. --from nightly "
                             "--to stable")
    return source, target


def _versions(entries: Iterable[Entry]) -> str:
    return ", ".join(sorted({e.version for e in entries}))


def promote(settings: Settings, project: str | None, from_channel: str, to_channel: str, *,
            version: str | None = None, distro: str | None = None, arch: str | None = None,
            all_projects: bool = False, dry_run: bool = False, reason: str = "",
            reporter: Reporter = NULL_REPORTER, release: str | None = None,
            force: bool = False) -> list[Promoted]:
    """Promote ``project`` (or every project, ``all_projects``, or every project of
    ``release``) and record it; one result per project. Raises RepoError, the target
    unchanged, for anything the source does not hold or the target's gate refuses
    (``force`` overrides the gate, recorded with ``reason``)."""
    from giftbox.records import who
    from giftbox.repo.gates import enforce, release_projects

    source, target = _channels(settings, from_channel, to_channel)
    state = channel_state(settings, source.name)
    if release is not None:  # every project and target of the release, in one publish
        if project is not None or version is not None or all_projects or distro or arch:
            raise RepoError("--release moves every project and target of the release at its "
                            "highest version: give no PROJECT, --version, --all, --distro or "
                            "--arch with it")
        projects = release_projects(
            settings, {project_of(settings, e.name) for e in state.entries.values()}, release)
        if not projects:
            raise RepoError(f"channel '{source.name}' holds no project of release {release}",
                            hint="a project's release is its spec's release: field")
    elif all_projects:
        if project is not None or version is not None:
            raise RepoError("--all promotes every project at its highest version: give no "
                            "PROJECT and no --version with it")
        projects = sorted({project_of(settings, e.name) for e in state.entries.values()})
        if not projects:
            raise RepoError(f"channel '{source.name}' is empty: nothing to promote")
    elif project is None:
        raise RepoError("name the PROJECT to promote, or pass --all")
    else:
        projects = [project_of(settings, project)]
    chosen: dict[str, list[Entry]] = {}
    for p in projects:
        try:
            chosen[p] = select(settings, source, state, p, version=version, distro=distro,
                               arch=arch)
        except RepoError:
            if all_projects and (distro or arch):
                continue  # --all --distro X: projects without an X build are not an error
            raise
    for entries in chosen.values():
        for e in entries:
            entry_for(target, Pool(settings.repos_dir).load(e.digest))  # served by the target?
    forced = enforce(settings, source, target, chosen, force=force, reason=reason)  # gates.py
    actor = who()
    if dry_run:
        held = channel_state(settings, target.name).entries
        return [Promoted(p, source.name, target.name,
                         tuple(e for e in es if held.get(e.filename) is None),
                         tuple(e for e in es if held.get(e.filename) is not None),
                         True, reason, actor) for p, es in chosen.items()]

    return move(settings, target, [Move(p, source.name, tuple(es)) for p, es in chosen.items()],
                reason=reason, forced=forced, actor=actor, reporter=reporter)


@dataclass(frozen=True)
class Move:
    """Entries of one project to link into a target channel, from ``source`` (a channel)."""

    project: str
    source: str
    entries: tuple[Entry, ...]


def move(settings: Settings, target: Channel, moves: Sequence[Move], *, reason: str = "",
         forced: str = "", actor: str | None = None,
         reporter: Reporter = NULL_REPORTER) -> list[Promoted]:
    """Link every move's entries into ``target`` and record one promotion per move that moved
    something, as one transaction (publish.change): all of it is live and recorded, or none
    of it (a kill in between is finished by the next change of ``target``). A release
    promotion is one call with a move per project."""
    from giftbox.records import open_records, who

    actor = actor or who()
    # Checked before the channel changes: a locked or too-new database refuses the promotion
    # rather than leaving its record waiting in the journal.
    open_records(settings).close()
    pool = Pool(settings.repos_dir)
    found = [(obj, entry_for(target, obj))
             for m in moves for obj in (pool.load(e.digest) for e in m.entries)]
    outcome: list[tuple[Move, tuple[Entry, ...], tuple[Entry, ...]]] = []

    def plan(_state: ChannelState) -> tuple[list[Any], list[str]]:
        return found, []

    def record(result: PublishResult, _entries: dict[str, Entry]) -> list[dict[str, Any]]:
        added = {e.filename for e in result.added}
        intents = []
        outcome.clear()
        for m in moves:
            moved = tuple(e for e in m.entries if e.filename in added)
            unchanged = tuple(e for e in m.entries if e.filename not in added)
            outcome.append((m, moved, unchanged))
            if not moved:  # nothing moved: nothing to record or ever roll back
                continue
            scope = sorted({scope_key(e) for e in m.entries})
            snapshot = [{"filename": b.filename, "digest": b.digest, "version": b.version}
                        for b in result.before if scope_key(b) in scope]
            intents.append({"op": "promotion", "args": {
                "kind": "promote", "project": m.project, "from_channel": m.source,
                "to_channel": target.name, "digests": [e.digest for e in moved],
                "filenames": [e.filename for e in moved], "version": _versions(moved),
                "reason": reason, "scope": [list(k) for k in scope], "snapshot": snapshot,
                "actor": actor, "forced": forced}})
        return intents

    result = change(target, plan, settings, reporter, record=record)
    ids = iter(r.id for r in result.records)
    return [Promoted(m.project, m.source, target.name, moved, unchanged, False, reason, actor,
                     next(ids) if moved else None) for m, moved, unchanged in outcome]


# --- rollback -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RolledBack:
    channel: str
    project: str
    promotion_id: int  # the promotion undone
    rollback_id: int
    withdrawn: tuple[Entry, ...]
    restored: tuple[Entry, ...]
    now: tuple[Entry, ...]  # the channel's entries of the promotion's scope afterwards
    who: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        def short(e: Entry) -> dict[str, Any]:
            return {"filename": e.filename, "version": e.version, "distro": e.distro,
                    "arch": e.arch, "digest": e.digest}

        return {"channel": self.channel, "project": self.project,
                "promotion_id": self.promotion_id, "rollback_id": self.rollback_id,
                "withdrawn": [short(e) for e in self.withdrawn],
                "restored": [short(e) for e in self.restored],
                "now": [short(e) for e in self.now], "who": self.who, "reason": self.reason}


def rollback(settings: Settings, to_channel: str, project: str | None = None, *,
             reason: str = "", reporter: Reporter = NULL_REPORTER) -> RolledBack:
    """Restore ``to_channel``'s entries of the last promotion's scope to what they were before
    it (see the module docstring), republish, and record the rollback."""
    from giftbox.records import open_records, who

    target = get_channel(settings, to_channel)
    key = project_of(settings, project) if project is not None else None
    actor = who()
    pool = Pool(settings.repos_dir)
    nows: list[tuple[Entry, ...]] = []
    with open_records(settings) as db:
        # Looked up under the channel lock (in plan), so that a promotion landing meanwhile is
        # the one undone, not skipped.
        chosen: list[Any] = []

        def plan(state: ChannelState) -> tuple[list[Any], list[str]]:
            p = db.last_promotion(target.name, key)
            if p is None:
                what = f"of {key} " if key else ""
                raise RepoError(f"nothing to roll back: no promotion {what}into "
                                f"'{target.name}' that is not already rolled back",
                                hint=f"giftbox channel history {target.name} shows what "
                                     "happened")
            chosen.append(p)
            scope = {tuple(s) for s in p.scope}
            keep = {s["filename"]: s["digest"] for s in p.snapshot}
            current = [e for e in state.entries.values() if scope_key(e) in scope]
            remove = [e.filename for e in current if keep.get(e.filename) != e.digest]
            add = []
            missing = []
            for filename, digest in sorted(keep.items()):
                if filename in state.entries:
                    continue
                try:
                    obj = pool.load(digest)
                except RepoError:
                    missing.append(filename)
                    continue
                add.append((obj, entry_for(target, obj)))
            if missing:
                raise RepoError(
                    f"cannot roll back promotion #{p.id}: the previous artifact(s) "
                    f"{', '.join(missing)} are no longer in the pool (removed by prune --gc)",
                    hint=f"republish them into '{target.name}' (giftbox publish) to bring "
                         "them back; nothing was changed")
            return add, remove

        def record(result: PublishResult, entries: dict[str, Entry]) -> list[dict[str, Any]]:
            p = chosen[-1]
            scope = {tuple(s) for s in p.scope}
            now = tuple(sorted((e for e in entries.values() if scope_key(e) in scope),
                               key=lambda e: e.filename))
            nows.append(now)
            return [{"op": "promotion", "args": {
                "kind": "rollback", "project": p.project, "from_channel": None,
                "to_channel": target.name, "digests": [e.digest for e in now],
                "filenames": [e.filename for e in now], "version": _versions(now),
                "reason": reason, "scope": [list(k) for k in p.scope],
                "snapshot": [{"filename": b.filename, "digest": b.digest,
                              "version": b.version} for b in result.before],
                "rolls_back": p.id, "actor": actor}}]

        result = change(target, plan, settings, reporter, record=record)
    p = chosen[-1]
    return RolledBack(target.name, p.project, p.id, result.records[0].id, result.removed,
                      result.added, nows[-1], actor, reason)


# --- pins ---------------------------------------------------------------------------------


def pin(settings: Settings, channel: str, package: str, version: str, *,
        reason: str = "") -> Any:
    """Pin ``package`` ``version`` in ``channel``: prune will never withdraw it."""
    from giftbox.records import open_records

    ch = get_channel(settings, channel)
    _check_name("package", package)
    state = channel_state(settings, ch.name)
    entries = [e for e in state.entries.values() if e.name == package]
    if not entries:
        held = sorted({e.name for e in state.entries.values()})
        raise RepoError(f"channel '{ch.name}' has no package {package}",
                        hint=("it holds: " + ", ".join(held)) if held else "it is empty")
    exact = [e for e in entries if version in (e.version, e.version.split(":", 1)[-1])]
    if not exact:
        raise RepoError(f"channel '{ch.name}' does not have {package} version {version}; "
                        "only a version the channel holds can be pinned",
                        hint="it has: " + _versions_listing(entries))
    with open_records(settings) as db:
        return db.pin(ch.name, package, exact[0].version, reason)


def unpin(settings: Settings, channel: str, package: str, version: str | None = None, *,
          reason: str = "") -> list[Any]:
    from giftbox.records import open_records

    ch = get_channel(settings, channel)
    with open_records(settings) as db:
        gone = db.unpin(ch.name, package, version, reason)
        if not gone:
            pins = db.pins(ch.name)
            raise RepoError(f"{package}{' ' + version if version else ''} is not pinned in "
                            f"'{ch.name}'",
                            hint=("pinned: " + ", ".join(f"{p.package} {p.version}"
                                                          for p in pins))
                            if pins else "nothing is pinned there")
    return gone


# --- prune and gc -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruned:
    channel: str
    keep: int
    withdrawn: tuple[Entry, ...]
    pinned: tuple[Entry, ...]  # beyond the N highest, kept because pinned
    kept: int  # entries left in the channel
    elsewhere: dict[str, list[str]]  # withdrawn filename -> other channels still holding it
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "keep": self.keep, "dry_run": self.dry_run,
                "withdrawn": [{"filename": e.filename, "version": e.version,
                               "digest": e.digest, "still_in": self.elsewhere.get(e.filename, [])}
                              for e in self.withdrawn],
                "pinned": [{"filename": e.filename, "version": e.version} for e in self.pinned],
                "kept": self.kept}


def prune_plan(state: ChannelState, keep: int,
               pinned: set[tuple[str, str]]) -> tuple[list[Entry], list[Entry]]:
    """(entries to withdraw, entries kept only because pinned): per (name, distro, arch), the
    ``keep`` highest versions stay, and every pinned (name, version)."""
    groups: dict[tuple[str, str, str], list[Entry]] = {}
    for e in state.entries.values():
        groups.setdefault(scope_key(e), []).append(e)
    withdraw: list[Entry] = []
    held: list[Entry] = []
    for k in sorted(groups):
        es = sorted(groups[k], key=lambda e: sort_key(e.kind)(e.version), reverse=True)
        for e in es[keep:]:
            (held if (e.name, e.version) in pinned else withdraw).append(e)
    return withdraw, held


def prune(settings: Settings, channel: str, keep: int | None = None, *, dry_run: bool = False,
          reason: str = "", reporter: Reporter = NULL_REPORTER) -> Pruned:
    from giftbox.records import open_records

    ch = get_channel(settings, channel)
    keep = ch.keep if keep is None else keep
    if keep < 1:
        raise RepoError("--keep must be at least 1: pruning never empties a package",
                        hint="to take a package out of a channel, roll back its promotion")
    with open_records(settings) as db:
        pinned = {(p.package, p.version) for p in db.pins(ch.name)}
        others = {name: channel_state(settings, name).entries
                  for name in load_channels(settings) if name != ch.name}

        def elsewhere(entries: Iterable[Entry]) -> dict[str, list[str]]:
            return {e.filename: [n for n, held in sorted(others.items())
                                 if (h := held.get(e.filename)) and h.digest == e.digest]
                    for e in entries}

        if dry_run:
            state = channel_state(settings, ch.name)
            gone, held = prune_plan(state, keep, pinned)
            return Pruned(ch.name, keep, tuple(gone), tuple(held),
                          len(state.entries) - len(gone), elsewhere(gone), True)
        plans: list[tuple[list[Entry], list[Entry], int]] = []

        def plan(state: ChannelState) -> tuple[list[Any], list[str]]:
            gone, held = prune_plan(state, keep, pinned)
            plans.append((gone, held, len(state.entries) - len(gone)))
            return [], [e.filename for e in gone]

        def record(result: PublishResult, _entries: dict[str, Entry]) -> list[dict[str, Any]]:
            if not result.removed:
                return []
            return [{"op": "event", "args": {
                "channel": ch.name, "kind": "prune", "reason": reason,
                "detail": {"keep": keep, "filenames": [e.filename for e in result.removed],
                           "digests": [e.digest for e in result.removed]}}}]

        change(ch, plan, settings, reporter, record=record)
    gone, held, kept = plans[0]
    return Pruned(ch.name, keep, tuple(gone), tuple(held), kept, elsewhere(gone), False)


@dataclass(frozen=True)
class Collected:
    removed: tuple[dict[str, Any], ...]  # {digest, filename, size}
    referenced: int
    young: int  # unreferenced but younger than min_age: left for now
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "referenced": self.referenced,
                "young": self.young, "dry_run": self.dry_run,
                "freed_bytes": sum(int(r["size"]) for r in self.removed)}


@contextlib.contextmanager
def _all_channel_locks(settings: Settings, names: list[str]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name in sorted(names):  # one order for everyone: no deadlock between two gcs
            stack.enter_context(channel_lock(settings, name, NULL_REPORTER))
        yield


def _channel_dirs(settings: Settings) -> list[str]:
    """Every channel with a state on disk, configured or not (a channel removed from
    channels.yaml still references its objects until its directory is deleted)."""
    repos = settings.repos_dir
    if not repos.is_dir():
        return []
    return sorted(p.name for p in repos.iterdir()
                  if not p.name.startswith(".") and (p / "state.json").is_file())


def gc(settings: Settings, *, dry_run: bool = False, min_age: float = GC_MIN_AGE,
       reason: str = "") -> Collected:
    """Remove pool objects no channel references.

    Under every channel's lock, so no publish links an object while it is judged unreferenced;
    objects younger than ``min_age`` are left because a publish stores into the pool before
    it takes the lock. ``.pool/by-name`` links stay: a filename, once published, stays bound
    to its bytes forever (invariant 5), even after its object is gone.
    """
    from giftbox.records import open_records

    pool = Pool(settings.repos_dir)
    names = _channel_dirs(settings)
    removed: list[dict[str, Any]] = []
    young = 0
    with open_records(settings) as db, _all_channel_locks(settings, names):
        referenced: set[str] = set()
        for name in names:
            referenced |= {e.digest for e in load_state(settings, name).entries.values()}
            journal = load_journal(channel_dir(settings, name))  # a corrupt one: StateError
            if journal is not None:
                referenced |= {e.digest for e in journal.entries}
        now = time.time()
        if pool.root.is_dir():
            for shard in sorted(pool.root.iterdir()):
                if len(shard.name) != 2 or not shard.is_dir():
                    continue  # by-name/, .tmp/
                for obj_dir in sorted(shard.iterdir()):
                    if obj_dir.name in referenced or not (obj_dir / "meta.json").is_file():
                        continue
                    if now - obj_dir.stat().st_mtime < min_age:
                        young += 1
                        continue
                    obj = pool.load(obj_dir.name)
                    removed.append({"digest": obj.digest, "filename": obj.filename,
                                    "size": obj.size})
                    if not dry_run:
                        # Renamed away first, so the object is gone whole or not at all.
                        tmp_root = pool.root / ".tmp"
                        tmp_root.mkdir(exist_ok=True)
                        tmp = tmp_root / f"{os.getpid()}-gc-{obj.digest[:16]}"
                        os.rename(obj_dir, tmp)
                        shutil.rmtree(tmp, ignore_errors=True)
        if removed and not dry_run:
            db.record_event(".pool", "gc", {"filenames": [r["filename"] for r in removed],
                                            "digests": [r["digest"] for r in removed]},
                            reason)
    return Collected(tuple(removed), len(referenced), young, dry_run)


def history(settings: Settings, channel: str) -> list[Any]:
    """What the records say happened to ``channel`` (publishes, promotions in and out,
    rollbacks, prunes, pins), oldest first."""
    from giftbox.records import open_records

    ch = get_channel(settings, channel)
    with open_records(settings) as db:
        return db.history(ch.name)


__all__ = ["Collected", "Promoted", "Pruned", "RolledBack", "gc", "history", "package_names",
           "pin", "project_of", "promote", "prune", "prune_plan", "rollback", "select",
           "unpin"]
