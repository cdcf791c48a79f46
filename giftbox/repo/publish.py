"""Publishing into a channel: the one transaction behind every change of a channel.

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

This module is the transaction and the operations built on it (publish, publish_objects,
change, withdraw, republish). Its parts: state.py (``state.json``, the journal, the lock),
recovery.py (step 2's roll-forward and the records written once), routing.py (which repository
a package goes to: the package says it, by its version's distro tag and its header's arch),
generations.py (steps 4 and 5: building, signing and swapping index generations, retiring
files), interrupts.py (signals and closed pipes).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from giftbox.errors import RepoError
from giftbox.repo.channels import Channel, get_channel
from giftbox.repo.generations import (
    build_generations,
    expire_retired,
    export_key,
    gen_number,
    live_link,
    prune_generations,
    swap,
)
from giftbox.repo.interrupts import critical, quiet_on_closed_output
from giftbox.repo.pool import Pool, PoolObject
from giftbox.repo.recovery import apply_records, clean_strays, recover
from giftbox.repo.routing import (
    entry_for,
    inspect_artifact,
    link_all,
    relink_repaired,
    repo_of_path,
    repositories_of,
)
from giftbox.repo.state import (
    JOURNAL,
    READABLE_FORMATS,
    STATE_FORMAT,
    ChannelState,
    Entry,
    Journal,
    channel_dir,
    channel_lock,
    channel_state,
    check_intents,
    load_journal,
    load_state,
    public_key_path,
    save_state,
    scope_key,
    write_json,
)
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter


@dataclass(frozen=True)
class Artifact:
    """A file to publish, with the distro when its version carries no tag."""

    path: Path
    distro: str | None = None


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
# and written to the build records exactly once, in the same transaction (recovery.py).
Recorder = Callable[["PublishResult", dict[str, "Entry"]], list[dict[str, Any]]]


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
            obj, entry = inspect_artifact(art.path, ch, art.distro or distro, pool)
            pool.add(art.path, obj)
            if obj.digest in pool.repaired:
                relink_repaired(pool, obj, entry.paths)
            pool.claim_name(obj)
            found.append((obj, entry))
            reporter.detail(f"{obj.filename}  sha256:{obj.digest[:16]}")

    def recorder(result: PublishResult, _entries: dict[str, Entry]) -> list[dict[str, Any]]:
        if not record or not result.added:
            return []
        from giftbox.records import who

        return [{"op": "publishes", "args": {
            "channel": ch.name, "items": [[e.digest, e.filename] for e in result.added],
            "build_id": build_id, "actor": who(settings)}}]

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


# --- the transaction ----------------------------------------------------------------------


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
        recover(settings, root, state, pool)
        clean_strays(root)
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
            affected |= repositories_of(ch, e)
        all_repos = {f"apt/{t.codename}" for t in ch.apt_targets} | \
                    {f"yum/{t.path}" for t in ch.yum_targets}
        if everything:
            affected |= all_repos
        # Repositories never published (or removed by hand) are created, empty if need be,
        # so that clients pointed at any served distro get a signed index, not a 404.
        affected |= {r for r in all_repos if not (root / live_link(r)).is_symlink()}
        if key.fingerprint != state.key:
            affected |= {r for r in all_repos if (root / live_link(r)).is_symlink()}
        affected &= all_repos
        pubkey = public_key_path(settings, ch.name)
        result = PublishResult(ch.name, tuple(added), tuple(unchanged), tuple(sorted(affected)),
                               key.fingerprint, 0.0, pubkey, tuple(removed), before)
        intents = record(result, entries) if record is not None else []
        check_intents(intents, "the records of this change")
        if not affected:
            recorded = apply_records(settings, secrets.token_hex(8), intents)
            result = replace(result, seconds=time.monotonic() - start, records=tuple(recorded))
            if after is not None:
                after(result)
            return result
        # Files that leave the channel stay for one more index generation of their repository
        # (a client holding the previous index still downloads them), then go.
        live_now = {p for e in entries.values() for p in e.paths}
        retire = [{"path": rel, "repo": repo_of_path(ch, e, rel),
                   "gen": gen_number(root, repo_of_path(ch, e, rel)) + 1}
                  for e in removed for rel in e.paths if rel not in live_now]
        txn = Journal(txid=secrets.token_hex(8), serial=state.serial + 1,
                      repositories=sorted(affected), entries=added,
                      removed=[e.filename for e in removed], retire=retire, records=intents)
        new = ChannelState(channel=ch.name, entries=entries,
                           generations=dict(state.generations), pending=sorted(affected),
                           key=state.key, updated=state.updated, serial=txn.serial,
                           retired=[r for r in state.retired if r["path"] not in live_now])
        created = [dest for e in added for dest in link_all(pool, objects[e.filename], root,
                                                             e.paths)]
        with critical():
            write_json(root / JOURNAL, txn.as_dict())
            _fault("journal")
            try:
                export_key(settings, key, pubkey)
                built = build_generations(ch, new, sorted(affected), settings, reporter, key)
                _fault("built")
            except Exception:
                # Nothing live has changed: undo this change whole (what it linked, its
                # journal), so the error's "the channel is unchanged" is true.
                _abort(root, created)
                raise
            with reporter.stage("swap"):
                for repo_id, (link, gen_rel, gen_name) in built.items():
                    swap(link, gen_rel)
                    _fault("swap")
                    new.generations[repo_id] = gen_name
                    prune_generations(link)
            new.pending = []
            new.key = key.fingerprint
            new.retired = expire_retired(root, new) + retire
            _fault("swapped")
            save_state(settings, new)
            _fault("saved")
            recorded = apply_records(settings, txn.txid, intents)
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


# --- fault injection ----------------------------------------------------------------------


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


__all__ = [
    "FAULT_HOOK", "FAULT_POINTS", "JOURNAL", "READABLE_FORMATS", "STATE_FORMAT", "Artifact",
    "ChannelState", "Entry", "Hook", "Journal", "Plan", "PublishResult", "Recorder", "change",
    "channel_dir", "channel_lock", "channel_state", "entry_for", "load_journal", "load_state",
    "public_key_path", "publish", "publish_objects", "quiet_on_closed_output", "republish",
    "scope_key", "withdraw",
]
