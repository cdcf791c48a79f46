"""Moving tested artifacts between channels and undoing that: promote, move, rollback, and
a channel's history.

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

Which entries a promotion takes: selection.py. Retention (prune, pins, gc): retention.py; its
names are importable from here as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from giftbox.errors import RepoError
from giftbox.repo.channels import Channel, get_channel
from giftbox.repo.pool import Pool
from giftbox.repo.publish import PublishResult, change
from giftbox.repo.retention import Collected, Pruned, gc, pin, prune, prune_plan, unpin
from giftbox.repo.routing import entry_for
from giftbox.repo.selection import package_names, project_of, select
from giftbox.repo.state import ChannelState, Entry, channel_state, scope_key
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

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
    actor = who(settings)
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

    actor = actor or who(settings)
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
    actor = who(settings)
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
