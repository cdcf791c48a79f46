"""``giftbox diff``: what differs between two states of a project.

A side is one of:

* an upstream ref plus a state of this giftbox tree: the working tree, or a revision of its
  git history (``--spec-from``/``--spec-to REV``), read with ``git archive`` so nothing in the
  working tree is touched. Without explicit refs each side uses its own spec's pin, so
  ``giftbox diff nova --spec-from HEAD~1`` answers "what did the last commit change?";
* ``build:ID``: what build ID of the build records was made from: its ``manifest.json`` and the
  lock it installed (``venv/giftbox-lock.txt``);
* ``channel:NAME[/DISTRO[/ARCH]]``: the project's package in a channel (its highest version for
  that target): the ``giftbox-manifest.json`` and ``giftbox-lock.txt`` it carries, read from
  the pool object without installing or unpacking anything else.

For each pair of sides: upstream commits (``git log A..B`` on the mirror, and B..A for a move
back; for PyPI tarballs only which tarball each side is), patches added, removed or changed (by
name and sha256), locked versions that changed per lock file, and the package version per
distro. A build or channel side is one target (distro/arch): a ref side compared with it is
narrowed to that target's lock and distro.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from giftbox import lock, source
from giftbox.distros import Arch, Distro
from giftbox.errors import (
    BuilderError,
    PackageError,
    RepoError,
    SourceError,
    StateError,
)
from giftbox.family import NAMES, get_family
from giftbox.gitutil import git_env, run_git
from giftbox.patches import spec_series_digest
from giftbox.settings import Settings
from giftbox.spec import Spec, load_spec, spec_path
from giftbox.targets import Catalog
from giftbox.versions import for_target
from giftbox.workflow.series import digest

BUILD_PREFIX = "build:"
CHANNEL_PREFIX = "channel:"
MANIFEST_FILE = "giftbox-manifest.json"  # giftbox.package.layout.MANIFEST_NAME
LOCK_FILE = "giftbox-lock.txt"  # giftbox.build.LOCK_NAME
_MAX_MEMBER = 16 << 20  # a manifest or lock bigger than this is not one of ours


@dataclass(frozen=True)
class Side:
    label: str  # "working tree", the giftbox revision, "build 12", "channel nightly"
    ref: str
    commit: str | None
    upstream_version: str
    patches: dict[str, str]  # name -> sha256, in series order
    locks: dict[str, dict[str, str]]  # lock file name -> {package: version}
    versions: dict[str, str]  # distro -> package version
    kind: str = "ref"  # ref | build | channel
    upstream_kind: str = "git"  # git | pypi
    upstream_url: str = ""
    upstream_sha256: str | None = None  # the tarball's, for pypi
    distro: str | None = None  # build and channel sides are one target
    arch: str | None = None
    lock_digests: dict[str, str] = field(default_factory=dict)  # lock file name -> sha256
    locks_recorded: bool = True  # False: a build or package older than giftbox-lock.txt
    subjects: dict[str, str] = field(default_factory=dict)  # patch name -> subject, if known
    origin: dict[str, object] = field(default_factory=dict)  # build id/dir, channel/file
    builder_image: str | None = None  # build and channel sides: the image that built it

    @property
    def target(self) -> str | None:
        return f"{self.distro}/{self.arch}" if self.distro and self.arch else None

    @property
    def lock_name(self) -> str | None:
        return f"{self.distro}-{self.arch}.txt" if self.distro and self.arch else None

    def as_dict(self) -> dict[str, object]:
        return {"label": self.label, "kind": self.kind, "ref": self.ref, "commit": self.commit,
                "upstream_version": self.upstream_version, "upstream_kind": self.upstream_kind,
                "upstream_url": self.upstream_url, "upstream_sha256": self.upstream_sha256,
                "distro": self.distro, "arch": self.arch, "patches": self.patches,
                "versions": self.versions, "locks_recorded": self.locks_recorded,
                "origin": self.origin, "builder_image": self.builder_image}


@dataclass(frozen=True)
class LockChange:
    only_in: str | None = None  # "a" or "b" when the lock file exists on one side only
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    # "a" or "b": that side's lock differs (by digest) but its text was not recorded
    not_recorded: str | None = None

    def as_dict(self) -> dict[str, object]:
        if self.only_in:
            return {"only_in": self.only_in}
        if self.not_recorded:
            return {"not_recorded": self.not_recorded}
        return {"added": self.added, "removed": self.removed,
                "changed": {n: list(v) for n, v in self.changed.items()}}


@dataclass(frozen=True)
class Diff:
    project: str
    a: Side
    b: Side
    commits: list[tuple[str, str]] | None  # (sha, subject) in B, not in A; None: no history
    commits_removed: list[tuple[str, str]] = field(default_factory=list)
    upstream_note: str | None = None  # why there is no commit list, or what replaces it

    @property
    def patches(self) -> dict[str, list[dict[str, str]]]:
        a, b = self.a.patches, self.b.patches
        subjects = {**self.a.subjects, **self.b.subjects}

        def entry(name: str, sha: str, side: Side) -> dict[str, str]:
            out = {"name": name, "sha256": sha}
            subject = side.subjects.get(name)
            if subject:
                out["subject"] = subject
            return out

        changed = []
        for n, s in b.items():
            if n in a and a[n] != s:
                item = {"name": n, "from": a[n], "to": s}
                if subjects.get(n):
                    item["subject"] = subjects[n]
                changed.append(item)
        return {
            "added": [entry(n, s, self.b) for n, s in b.items() if n not in a],
            "removed": [entry(n, s, self.a) for n, s in a.items() if n not in b],
            "changed": changed,
        }

    @property
    def locks(self) -> dict[str, LockChange]:
        """Per lock file present on either side, what changed (files that match are left
        out). A side whose lock text was not recorded compares by the lock's digest."""
        out: dict[str, LockChange] = {}
        a, b = self.a, self.b
        files = set(a.locks) | set(b.locks) | set(a.lock_digests) | set(b.lock_digests)
        for file in sorted(files):
            old, new = a.locks.get(file), b.locks.get(file)
            if old is None or new is None:
                in_a = old is not None or file in a.lock_digests
                in_b = new is not None or file in b.lock_digests
                if not (in_a and in_b):
                    out[file] = LockChange(only_in="a" if in_a else "b")
                elif a.lock_digests.get(file) != b.lock_digests.get(file):
                    out[file] = LockChange(not_recorded="a" if old is None else "b")
                continue
            entry = LockChange(
                added={n: v for n, v in new.items() if n not in old},
                removed={n: v for n, v in old.items() if n not in new},
                changed={n: (old[n], v) for n, v in new.items() if n in old and old[n] != v})
            if entry.added or entry.removed or entry.changed:
                out[file] = entry
        return out

    @property
    def same(self) -> bool:
        """Nothing differs: same upstream commit, patches, locks and versions."""
        a, b = self.a, self.b
        return ((a.upstream_url, a.commit, a.upstream_sha256)
                == (b.upstream_url, b.commit, b.upstream_sha256)
                and a.patches == b.patches and not self.locks and a.versions == b.versions)

    def as_dict(self) -> dict[str, object]:
        return {"project": self.project, "a": self.a.as_dict(), "b": self.b.as_dict(),
                "commits": None if self.commits is None
                else [{"commit": c, "subject": s} for c, s in self.commits],
                "commits_removed": [{"commit": c, "subject": s}
                                    for c, s in self.commits_removed],
                "upstream_note": self.upstream_note,
                "patches": self.patches,
                "locks": {f: c.as_dict() for f, c in self.locks.items()},
                "versions": {d: [self.a.versions.get(d), self.b.versions.get(d)]
                             for d in sorted(set(self.a.versions) | set(self.b.versions))},
                "same": self.same}


# --- what A and B name --------------------------------------------------------------------


@dataclass(frozen=True)
class SideSpec:
    """A or B as given on the command line."""

    kind: str  # ref | build | channel
    text: str
    build_id: int | None = None
    channel: str | None = None
    distro: str | None = None
    arch: str | None = None


def parse_side(text: str) -> SideSpec:
    """``build:ID``, ``channel:NAME[/DISTRO[/ARCH]]``, or an upstream ref (a git ref cannot
    contain ':', so the prefixes are unambiguous)."""
    if text.startswith(BUILD_PREFIX):
        number = text[len(BUILD_PREFIX):]
        if not number.isdigit():
            raise StateError(f"'{text}' does not name a build: use build:ID with the number "
                             "`giftbox builds` shows", hint="e.g. build:12")
        return SideSpec("build", text, build_id=int(number))
    if text.startswith(CHANNEL_PREFIX):
        parts = text[len(CHANNEL_PREFIX):].split("/")
        if len(parts) > 3 or not all(parts):
            raise RepoError(f"'{text}' does not name a channel",
                            hint="use channel:NAME or channel:NAME/DISTRO/ARCH, e.g. "
                                 "channel:nightly/debian12/x86_64")
        parts += [""] * (3 - len(parts))
        return SideSpec("channel", text, channel=parts[0], distro=parts[1] or None,
                        arch=parts[2] or None)
    return SideSpec("ref", text)


# --- ref sides: a spec (working tree or a revision) and an upstream ref --------------------


def _materialize(settings: Settings, project: str, rev: str, into: Path) -> Path:
    """This project's spec, patches, files, locks and constraints as of giftbox ``rev``."""
    if rev.startswith("-"):
        raise SourceError(f"'{rev}' is not a revision of this repository")
    env = git_env()
    proc = run_git(["rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}"],
                   cwd=settings.root, env=env, check=False)
    if proc.returncode != 0:
        raise SourceError(f"'{rev}' is not a commit of the giftbox repository at "
                          f"{settings.root}", hint="use a commit, branch or tag, e.g. HEAD~1")
    commit = proc.stdout.strip()
    wanted = [f"specs/{project}.yaml", f"patches/{project}", f"files/{project}",
              f"locks/{project}", "constraints"]
    listed = run_git(["ls-tree", "--name-only", commit, "--", *wanted], cwd=settings.root,
                     env=env).stdout.split()
    if f"specs/{project}.yaml" not in listed:
        raise SourceError(f"specs/{project}.yaml does not exist at {rev} ({commit[:12]})")
    archive = into.with_suffix(".tar")
    run_git(["archive", "--format=tar", "-o", str(archive), commit, "--", *listed],
            cwd=settings.root, env=env)
    into.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def _locks(root: Path, project: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    pins, digests = {}, {}
    for p in sorted((root / "locks" / project).glob("*.txt")):
        text = p.read_text()
        pins[p.name] = {pin.name: pin.version for pin in lock.pins(text)}
        digests[p.name] = hashlib.sha256(text.encode()).hexdigest()
    return pins, digests


def _side(spec: Spec, root: Path, label: str, ref: str | None, settings: Settings,
          distros: dict[str, Distro]) -> tuple[Side, source.GitMirror | None]:
    mirror = None
    sha256 = None
    if spec.upstream_kind == "pypi" and spec.pypi is not None and ref == spec.pypi.version:
        ref = None  # the pinned PyPI release itself: its tarball, no git needed
    if ref is not None or spec.upstream_kind == "git":
        url = spec.git.url if spec.git else None
        if url is None:
            raise SourceError(f"{spec.name} has no upstream.git section, so '{ref}' names "
                              "nothing", hint="compare its pins instead: drop the refs")
        mirror = source.GitMirror(url, settings)
        ref = ref or spec.pinned_ref
        commit: str | None = mirror.resolve(ref)
        assert commit is not None
        version = mirror.version_of(commit, ref)
        kind = "git"
    else:
        assert spec.pypi is not None
        ref, commit, version = spec.pypi.version, None, spec.pypi.version
        url, sha256, kind = f"pypi:{spec.pypi.name}=={spec.pypi.version}", spec.pypi.sha256, \
            "pypi"
    series = spec_series_digest(spec)
    versions = {}
    for name in spec.distros:
        if name in distros:
            d = distros[name]
            versions[name] = d.family_obj.version(for_target(
                version, spec.package.release, len(spec.patches), series, d.family,
                d.version_tag))
    pins, lock_digests = _locks(root, spec.name)
    return Side(label=label, ref=ref, commit=commit, upstream_version=version,
                patches={p.name: digest(p.read_bytes()) for p in spec.patches},
                locks=pins, versions=versions, upstream_kind=kind, upstream_url=url,
                upstream_sha256=sha256, lock_digests=lock_digests), mirror


# --- build and channel sides: what a manifest (and the lock beside it) says ----------------


def _target_side(kind: str, label: str, manifest: dict[str, Any], lock_text: str | None,
                 version: str, where: str, origin: dict[str, object]) -> Side:
    try:
        distro, arch = str(manifest["distro"]), str(manifest["arch"])
        patches = list(manifest["patches"])
        side = Side(
            label=label, kind=kind, ref=str(manifest["upstream_ref"]),
            commit=str(manifest["upstream_commit"]) if manifest["upstream_kind"] == "git"
            else None,
            upstream_version=str(manifest["upstream_version"]),
            patches={str(p["name"]): str(p["sha256"]) for p in patches},
            subjects={str(p["name"]): str(p.get("subject") or "") for p in patches},
            locks={}, versions={distro: version}, upstream_kind=str(manifest["upstream_kind"]),
            upstream_url=str(manifest["upstream_url"]),
            upstream_sha256=manifest.get("upstream_sha256"), distro=distro, arch=arch,
            origin=origin, builder_image=manifest.get("builder_image"))
        lock_digest = str(manifest["lock_digest"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise PackageError(f"{where} is not a giftbox manifest this giftbox can read "
                           f"(missing {exc})") from None
    name = side.lock_name
    assert name is not None
    if lock_text is None:
        return dataclasses.replace(side, lock_digests={name: lock_digest}, locks_recorded=False)
    pins = {pin.name: pin.version for pin in lock.pins(lock_text)}
    return dataclasses.replace(side, locks={name: pins}, lock_digests={
        name: hashlib.sha256(lock_text.encode()).hexdigest()})


def _load_json(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PackageError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PackageError(f"{where} is not a giftbox manifest")
    return data


def _build_dir(settings: Settings, record: Any) -> Path | None:
    """The directory build ``record`` left: the one its log is in, or (the tree was moved
    since) the build dir of its target whose result.json names it. Either is checked against
    the record's inputs by the caller: a build dir is keyed by its inputs."""
    if record.log_path and (Path(record.log_path).parent / "result.json").is_file():
        return Path(record.log_path).parent
    target = settings.root / "build" / record.project / f"{record.distro}-{record.arch}"
    for result in sorted(target.glob("*/result.json")):
        try:
            if json.loads(result.read_text()).get("build_id") == record.id:
                return result.parent
        except ValueError:
            continue
    return None


def build_side(settings: Settings, project: str, build_id: int) -> Side:
    from giftbox import records

    try:
        record = records.build(settings, build_id)
    except StateError as exc:
        if not exc.message.startswith(f"no build {build_id} "):
            raise
        raise StateError(f"build:{build_id}: {exc.message}",
                         hint=f"`giftbox builds {project}` lists the recorded builds") from None
    what = f"build {build_id}"
    if record.project != project:
        raise StateError(f"{what} is a build of {record.project} ({record.distro}/{record.arch}, "
                         f"{record.version or 'no version'}), not of {project}",
                         hint=f"`giftbox builds {project}` lists {project}'s builds")
    if record.status != "succeeded":
        raise StateError(f"{what} of {project} {record.status}: it left nothing to compare",
                         hint=f"its log: {record.log_path}" if record.log_path else None)
    folder = _build_dir(settings, record)
    if folder is None:
        raise StateError(f"{what} of {project} ({record.distro}/{record.arch}) left no build "
                         f"directory with a result.json (expected beside {record.log_path})",
                         hint="the build directory was removed: build again (same inputs give "
                              "the same build) or compare a channel:NAME that holds it")
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise StateError(f"{what}: {manifest_path} does not exist")
    manifest = _load_json(manifest_path.read_text(), str(manifest_path))
    # the directory is keyed by the build's inputs; make sure they are this record's
    for key in ("upstream_commit", "patch_digest", "lock_digest"):
        if getattr(record, key) and manifest.get(key) != getattr(record, key):
            raise StateError(f"{what}: {manifest_path} is not this build's ({key} differs from "
                             "the build records)")
    lock_path = folder / "venv" / LOCK_FILE
    lock_text = lock_path.read_text() if lock_path.is_file() else None
    family = str(manifest.get("family", "deb"))
    version = record.version or str((manifest.get("version") or {}).get(family, ""))
    return _target_side("build", what, manifest, lock_text, version, str(manifest_path),
                        {"build_id": build_id, "directory": str(folder),
                         "artifacts": record.artifacts})


def _kernel_arch(name: str) -> str:
    try:
        return Arch.parse(name).value
    except BuilderError:
        return name


def channel_side(settings: Settings, project: str, channel: str, distro: str | None = None,
                 arch: str | None = None) -> Side:
    from giftbox.repo import Pool, channel_state, get_channel
    from giftbox.repo.promote import select

    ch = get_channel(settings, channel)
    state = channel_state(settings, ch.name)
    entries = select(settings, ch, state, project, distro=distro, arch=arch)
    if len(entries) > 1:
        held = ", ".join(f"{e.distro}/{_kernel_arch(e.arch)} ({e.version})" for e in entries)
        raise RepoError(f"channel '{ch.name}' holds {project} for more than one target: {held}",
                        hint=f"name one: channel:{ch.name}/DISTRO/ARCH, or --distro and "
                             "--arch")
    (entry,) = entries
    pool = Pool(settings.repos_dir)
    path = pool.object_path(pool.load(entry.digest))
    found = package_files(path, entry.kind)
    where = f"{entry.filename} in channel '{ch.name}'"
    if found.manifest is None:
        raise PackageError(f"{where} carries no {MANIFEST_FILE}: it was packaged before "
                           "giftbox packages carried their manifest, so what it was built from "
                           "is unknown", hint="rebuild and publish it (or compare build:ID "
                                              "sides, if its build directory is still there)")
    manifest = _load_json(found.manifest, f"{where}: {found.manifest_path}")
    if manifest.get("project") not in (None, project):
        raise RepoError(f"{where} is a package of {manifest.get('project')}, not of {project}")
    return _target_side("channel", f"channel {ch.name}", manifest, found.lock, entry.version,
                        where, {"channel": ch.name, "filename": entry.filename,
                                "digest": entry.digest})


# --- reading the manifest and lock out of a package ----------------------------------------


@dataclass(frozen=True)
class PackageFiles:
    manifest: str | None
    lock: str | None
    manifest_path: str | None  # as the package installs it


def _pick(found: dict[str, bytes]) -> PackageFiles:
    """The manifest nearest the root (the venv's, not a file of that name deeper in it) and the
    lock beside it."""
    manifests = sorted((p for p in found if PurePosixPath(p).name == MANIFEST_FILE),
                       key=lambda p: (p.count("/"), p))
    if not manifests:
        return PackageFiles(None, None, None)
    chosen = manifests[0]
    lock_path = str(PurePosixPath(chosen).with_name(LOCK_FILE))
    lock_bytes = found.get(lock_path)
    return PackageFiles(found[chosen].decode(), None if lock_bytes is None
                        else lock_bytes.decode(), "/" + chosen)


def _complete(found: dict[str, bytes]) -> bool:
    return any(PurePosixPath(p).name == MANIFEST_FILE
               and str(PurePosixPath(p).with_name(LOCK_FILE)) in found for p in found)


def package_files(path: Path, kind: str) -> PackageFiles:
    """``giftbox-manifest.json`` and ``giftbox-lock.txt`` of a .deb (``dpkg-deb
    --fsys-tarfile``) or .rpm (``rpm2cpio``), read from the tool's output as it streams: only
    those two files are kept, nothing is written to disk."""
    from giftbox.repo.archive import payload_files

    if kind not in NAMES:
        raise PackageError(f"{path.name}: cannot read a '{kind}' package")
    found = payload_files(path, get_family(kind), (MANIFEST_FILE, LOCK_FILE),
                          limit=_MAX_MEMBER, enough=_complete)
    return _pick(found)


# --- the comparison -----------------------------------------------------------------------


def _log(mirror: source.GitMirror, a: str, b: str) -> list[tuple[str, str]]:
    out = run_git(["log", "--format=%H %s", "--no-decorate", f"{a}..{b}"], cwd=mirror.path,
                  env=mirror.env).stdout
    return [(line[:40], line[41:]) for line in out.splitlines() if line]


def _has(mirror: source.GitMirror, commit: str) -> bool:
    """Whether the mirror holds ``commit``, fetching only when it does not yet."""
    if (mirror.path / "HEAD").exists() and mirror.rev(commit) == commit:
        return True
    try:
        return mirror.resolve(commit) == commit
    except SourceError:
        return False


def _tarball(side: Side) -> str:
    name = side.upstream_url.removeprefix("pypi:")
    return f"{name} (sha256 {side.upstream_sha256[:12]}…)" if side.upstream_sha256 else name


def _narrow(side: Side, target: Side) -> Side:
    """A ref side as the one target a build or channel side is."""
    name = target.lock_name
    return dataclasses.replace(
        side, locks={k: v for k, v in side.locks.items() if k == name},
        lock_digests={k: v for k, v in side.lock_digests.items() if k == name},
        versions={k: v for k, v in side.versions.items() if k == target.distro})


def _rename_lock(side: Side, name: str) -> Side:
    """A target side's one lock under ``name`` (two targets' locks compared)."""
    return dataclasses.replace(side, locks=dict.fromkeys([name], *side.locks.values()),
                               lock_digests=dict.fromkeys([name], *side.lock_digests.values()))


def diff(project: str, settings: Settings, ref_a: str | None = None, ref_b: str | None = None,
         rev_a: str | None = None, rev_b: str | None = None, *, distro: str | None = None,
         arch: str | None = None, catalog: Catalog | None = None) -> Diff:
    """Compare A and B. ``ref_a``/``ref_b`` are upstream refs, ``build:ID`` or
    ``channel:NAME[/DISTRO[/ARCH]]`` (``distro``/``arch`` pick a channel side's target when
    the name does not); ``rev_a``/``rev_b`` apply to ref sides only."""
    sides: list[Side] = []
    mirrors: list[source.GitMirror | None] = []
    with tempfile.TemporaryDirectory(prefix="giftbox-diff-") as tmp:
        for key, rev, text in (("a", rev_a, ref_a), ("b", rev_b, ref_b)):
            given = parse_side(text) if text is not None else SideSpec("ref", "")
            if given.kind != "ref" and rev:
                raise SourceError(f"--spec-{'from' if key == 'a' else 'to'} {rev} applies to a "
                                  f"ref, but {key.upper()} is '{given.text}', which carries "
                                  "its own spec, patches and lock")
            if given.kind == "build":
                assert given.build_id is not None
                sides.append(build_side(settings, project, given.build_id))
                mirrors.append(None)
                continue
            if given.kind == "channel":
                assert given.channel is not None
                sides.append(channel_side(settings, project, given.channel,
                                          given.distro or distro, given.arch or arch))
                mirrors.append(None)
                continue
            root = (_materialize(settings, project, rev, Path(tmp) / key) if rev
                    else settings.root)
            spec = load_spec(spec_path(root, project), root)
            catalog = catalog or Catalog.load(settings)
            side, mirror = _side(spec, root, rev or "working tree", text, settings,
                                 catalog.distros)
            sides.append(side)
            mirrors.append(mirror)
    a, b = sides
    if a.target and not b.target:
        b = _narrow(b, a)
    elif b.target and not a.target:
        a = _narrow(a, b)
    elif a.lock_name and b.lock_name and a.lock_name != b.lock_name:
        name = f"{a.lock_name} vs {b.lock_name}"
        a, b = _rename_lock(a, name), _rename_lock(b, name)

    commits: list[tuple[str, str]] | None = None
    removed: list[tuple[str, str]] = []
    note: str | None = None
    if a.upstream_kind == b.upstream_kind == "pypi":
        note = (f"upstream: the same tarball {_tarball(a)}"
                if (a.upstream_url, a.upstream_sha256) == (b.upstream_url, b.upstream_sha256)
                else f"upstream: tarball {_tarball(a)} → tarball {_tarball(b)} (PyPI "
                     "releases: no commit history to list)")
    elif a.upstream_kind != b.upstream_kind:
        note = (f"upstream: {a.upstream_kind} {a.upstream_url} → {b.upstream_kind} "
                f"{b.upstream_url}: different kinds of upstream, no commit history in common")
    elif a.upstream_url != b.upstream_url:
        # commits only compare within one upstream repository (a spec may move its URL)
        note = (f"upstream: different repositories ({a.upstream_url} → {b.upstream_url}): "
                "commits not comparable")
    elif a.commit and b.commit:
        mirror = mirrors[1] or mirrors[0] or source.GitMirror(b.upstream_url, settings)
        missing = [c for c in (a.commit, b.commit) if not _has(mirror, c)]
        if missing:
            note = (f"upstream: {', '.join(c[:12] for c in missing)} not found in "
                    f"{a.upstream_url} (rewritten history?): commits not listed")
        else:
            commits = _log(mirror, a.commit, b.commit)
            removed = _log(mirror, b.commit, a.commit)
    return Diff(project=project, a=a, b=b, commits=commits, commits_removed=removed,
                upstream_note=note)
