"""Publishing into a channel: pool, channel state, metadata generations, atomic swap.

The order of a publish, and why a SIGKILL at any point leaves a good repository:

1. Artifacts are hashed, inspected and stored in the pool (whole-directory renames), and their
   filenames claimed (atomic symlinks). Nothing a client reads has changed yet.
2. Under the channel's lock (``flock``, so concurrent publishers queue rather than interleave)
   the channel state is read, the new files are hard-linked into the channel's package paths
   (which no index names yet), and the state is written atomically with the affected
   repositories marked ``pending``.
3. Each affected apt suite / yum repository gets a new generation directory built and signed
   aside, then made live by replacing one symlink (rename(2) is atomic).
4. The state is written again with nothing pending. A publish killed between 2 and 4 leaves the
   old metadata live and the pending marks, so the next publish regenerates those
   repositories; leftover generation directories and temp links are removed under the lock.

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
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from giftbox.distros import Distro
from giftbox.errors import RepoError
from giftbox.repo.channels import Channel, YumTarget, get_channel
from giftbox.repo.pool import Pool, PoolObject, check_filename, hash_file
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

STATE_FORMAT = 1
_GEN_RE = re.compile(r"^g(\d{6,})$")


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

    def as_dict(self) -> dict[str, object]:
        return {"format": STATE_FORMAT, "channel": self.channel, "updated": self.updated,
                "key": self.key, "pending": sorted(self.pending),
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

    def as_dict(self) -> dict[str, object]:
        return {"channel": self.channel, "added": [e.as_dict() for e in self.added],
                "unchanged": [e.as_dict() for e in self.unchanged],
                "removed": [e.as_dict() for e in self.removed],
                "repositories": list(self.repositories), "key": self.key,
                "seconds": round(self.seconds, 3), "public_key": str(self.public_key)}


# What a change does, decided under the channel lock from the state it finds there:
# (pool objects and their entries to add, filenames to withdraw).
Plan = Callable[["ChannelState"], tuple[list[tuple[PoolObject, Entry]], list[str]]]
# Called under the channel lock once the change is live (the records are written there, so
# two promotions into one channel are recorded in the order they happened).
Hook = Callable[["PublishResult"], None]


def scope_key(e: Entry) -> tuple[str, str, str]:
    """What one promotion or rollback is about: a package name on one distro and arch."""
    return (e.name, e.distro, e.arch)


# --- paths and state --------------------------------------------------------------------


def channel_dir(settings: Settings, channel: str) -> Path:
    return settings.repos_dir / channel


def public_key_path(settings: Settings, channel: str) -> Path:
    return channel_dir(settings, channel) / f"giftbox-{channel}.asc"


def load_state(settings: Settings, channel: str) -> ChannelState:
    path = channel_dir(settings, channel) / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return ChannelState(channel=channel)
    except json.JSONDecodeError as exc:
        raise RepoError(f"{path} is corrupt: {exc}",
                        hint="it is written atomically, so this is not an interrupted publish; "
                             "restore it from backup") from None
    if data.get("format") != STATE_FORMAT:
        raise RepoError(f"{path} has format {data.get('format')}, this giftbox reads "
                        f"{STATE_FORMAT}", hint="use the giftbox that wrote it")
    entries = (Entry.from_dict(e) for e in data.get("entries", []))
    return ChannelState(channel=channel, entries={e.filename: e for e in entries},
                        generations=dict(data.get("generations", {})),
                        pending=list(data.get("pending", [])), key=data.get("key", ""),
                        updated=data.get("updated", ""))


def _write_json(path: Path, payload: object, *, sync: bool = True) -> None:
    """Write-then-rename, so readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True) + "\n"
    with open(tmp, "w") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


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
            reporter: Reporter = NULL_REPORTER, *, distro: str | None = None) -> PublishResult:
    """Add ``artifacts`` to ``channel`` and republish the repositories they belong to.

    Idempotent: publishing a file the channel already holds changes nothing. Raises RepoError
    (the channel unchanged) for an unknown channel, a missing or expired key, a file whose name
    is taken by other bytes, or a package the channel does not serve.
    """
    start = time.monotonic()
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
    return _publish_entries(ch, lambda _state: (found, []), settings, reporter, key, start)


def publish_objects(channel: str | Channel, digests: Sequence[str], settings: Settings,
                    reporter: Reporter = NULL_REPORTER, *,
                    after: Hook | None = None) -> PublishResult:
    """Add pool objects (by digest) to ``channel``: promotion's primitive, no bytes copied.

    ``after`` runs under the channel lock once the change is live (promote records there).
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
                            after=after)


def change(channel: str | Channel, plan: Plan, settings: Settings,
           reporter: Reporter = NULL_REPORTER, *, after: Hook | None = None) -> PublishResult:
    """Apply ``plan`` (decided under the channel lock) and republish what it touched.

    The general form behind prune and rollback: entries are added from the pool and/or
    withdrawn. Withdrawn entries' hard links are unlinked once the new metadata is live; the
    pool objects stay (``giftbox prune --gc`` removes the ones no channel references).
    """
    start = time.monotonic()
    ch = channel if isinstance(channel, Channel) else get_channel(settings, channel)
    from giftbox.keys import signing_key

    key = signing_key(settings, ch)
    return _publish_entries(ch, plan, settings, reporter, key, start, after=after)


def withdraw(channel: str | Channel, filenames: Iterable[str], settings: Settings,
             reporter: Reporter = NULL_REPORTER, *, after: Hook | None = None) -> PublishResult:
    """Remove entries from ``channel`` by filename and republish (what prune does)."""
    names = list(filenames)
    return change(channel, lambda _state: ([], names), settings, reporter, after=after)


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
                     everything: bool = False, after: Hook | None = None) -> PublishResult:
    pool = Pool(settings.repos_dir)
    root = channel_dir(settings, ch.name)
    with channel_lock(settings, ch.name, reporter):
        state = load_state(settings, ch.name)
        _replay_journal(root, state)
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
        for obj, entry in found:
            held = state.entries.get(entry.filename)
            if held is not None and held.digest == entry.digest:
                unchanged.append(held)
                continue
            if held is not None:  # only possible for a state older than the pool's names
                raise RepoError(f"{entry.filename} is already in channel '{ch.name}' with "
                                "different bytes",
                                hint="bump the package release and rebuild")
            for rel in entry.paths:
                _link(pool.object_path(obj), root / rel)
            added.append(entry)
        affected = set(state.pending)
        for e in added:
            affected |= _repositories_of(ch, e)
        for e in removed:
            affected |= _repositories_of(ch, e)
            del state.entries[e.filename]
        all_repos = {f"apt/{t.codename}" for t in ch.apt_targets} | \
                    {f"yum/{t.path}" for t in ch.yum_targets}
        if everything:
            affected |= all_repos
        # Repositories never published (or removed by hand) are created, empty if need be,
        # so that clients pointed at any served distro get a signed index, not a 404.
        affected |= {r for r in all_repos if not (root / _live_link(r)).is_symlink()}
        affected &= all_repos
        pubkey = public_key_path(settings, ch.name)
        if key.fingerprint != state.key:
            affected |= {r for r in all_repos if (root / _live_link(r)).is_symlink()}
        for e in added:
            state.entries[e.filename] = e
        if not affected:
            result = PublishResult(ch.name, tuple(added), tuple(unchanged), (),
                                   key.fingerprint, time.monotonic() - start, pubkey,
                                   (), before)
            if after is not None:
                after(result)
            return result
        # A small journal, not a rewrite of state.json: if this publish dies after a swap, the
        # next one still knows the entries it added or withdrew and which repositories to
        # regenerate.
        _write_json(root / "pending.json", {"repositories": sorted(affected),
                                             "entries": [e.as_dict() for e in added],
                                             "removed": [e.filename for e in removed]})
        state.pending = sorted(affected)
        _export_key(settings, key, pubkey)
        built = _build(ch, state, sorted(affected), settings, reporter, key)
        with reporter.stage("swap"):
            for repo_id, (link, gen_rel, gen_name) in built.items():
                _swap(link, gen_rel)
                state.generations[repo_id] = gen_name
                _prune_generations(link)
        state.pending = []
        state.key = key.fingerprint
        _save_state(settings, state)
        (root / "pending.json").unlink()
        # Only now that neither the live metadata nor the state names them: a link left by a
        # kill here is harmless (no index names it; a later publish of the file reuses it).
        live = {p for e in state.entries.values() for p in e.paths}
        for e in removed:
            for rel in e.paths:
                if rel not in live:
                    with contextlib.suppress(FileNotFoundError):
                        (root / rel).unlink()
        result = PublishResult(ch.name, tuple(added), tuple(unchanged), tuple(sorted(affected)),
                               key.fingerprint, time.monotonic() - start, pubkey,
                               tuple(removed), before)
        if after is not None:
            after(result)
    return result


def _replay_journal(root: Path, state: ChannelState) -> None:
    """Fold in what an interrupted publish recorded in ``pending.json`` (see publish order)."""
    try:
        journal = json.loads((root / "pending.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return  # none, or torn before its rename: that publish changed nothing live
    for d in journal.get("entries", []):
        e = Entry.from_dict(d)
        if e.filename not in state.entries and all((root / p).is_file() for p in e.paths):
            state.entries[e.filename] = e
    # A withdrawal may already be live: finish it rather than let the entry reappear.
    for filename in journal.get("removed", []):
        state.entries.pop(filename, None)
    state.pending = sorted(set(state.pending) | set(journal.get("repositories", [])))


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
    if cache is not None and cache_dirty:
        _save_cache(root, cache)
    return built


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
    state = load_state(settings, channel)
    _replay_journal(channel_dir(settings, channel), state)
    return state
