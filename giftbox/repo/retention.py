"""Retention: what a channel keeps, and what the pool may forget.

``giftbox prune`` withdraws old entries from one channel, never as part of a publish: per
(package name, distro, arch) the N highest versions stay, and so does every pinned version (on
top of the N; ``giftbox pin``). It removes channel entries only; a pool object stays while any
channel references it (and a rollback snapshot may still want it) until ``prune --gc`` (``gc``)
removes the objects no channel references.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from giftbox.errors import RepoError
from giftbox.repo.channels import get_channel, load_channels
from giftbox.repo.pool import Pool
from giftbox.repo.publish import PublishResult, change
from giftbox.repo.selection import check_name, versions_listing
from giftbox.repo.state import (
    ChannelState,
    Entry,
    channel_dir,
    channel_lock,
    channel_state,
    load_journal,
    load_state,
    scope_key,
)
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

GC_MIN_AGE = 3600.0  # a pool object younger than this may belong to a publish in progress


# --- pins ---------------------------------------------------------------------------------


def pin(settings: Settings, channel: str, package: str, version: str, *,
        reason: str = "") -> Any:
    """Pin ``package`` ``version`` in ``channel``: prune will never withdraw it."""
    from giftbox.records import open_records

    ch = get_channel(settings, channel)
    check_name("package", package)
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
                        hint="it has: " + versions_listing(entries))
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
        es = sorted(groups[k], key=lambda e: e.family.sort_key()(e.version),
                    reverse=True)
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
    verdicts: int = 0  # xz block verdicts no publish used for BlockVerdicts.KEEP_DAYS

    def as_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "referenced": self.referenced,
                "young": self.young, "dry_run": self.dry_run, "verdicts": self.verdicts,
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
    """Remove pool objects no channel references, and the pool's xz block verdicts no
    publish used for a while (``BlockVerdicts.prune``).

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
        verdicts = pool.verdicts.prune(now, dry_run=dry_run)
        if removed and not dry_run:
            db.record_event(".pool", "gc", {"filenames": [r["filename"] for r in removed],
                                            "digests": [r["digest"] for r in removed]},
                            reason)
    return Collected(tuple(removed), len(referenced), young, dry_run, verdicts)
