"""``giftbox diff``: what differs between two states of a project.

A side is an upstream ref plus a state of this giftbox tree: the working tree, or a revision
of its git history (``--spec-from``/``--spec-to REV``), read with ``git archive`` so nothing in
the working tree is touched. Without explicit refs each side uses its own spec's pin, so
``giftbox diff nova --spec-from HEAD~1`` answers "what did the last commit change?". For each
pair of sides: upstream commits (``git log A..B`` on the mirror, and B..A for a move back),
patches added, removed or changed (by name and sha256), locked versions that changed per lock
file, and the package version per distro.
"""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from giftbox import lock, source
from giftbox.distros import load_distros
from giftbox.errors import SourceError
from giftbox.gitutil import git_env, run_git
from giftbox.patches import spec_series_digest
from giftbox.settings import Settings
from giftbox.spec import Spec, load_spec, spec_path
from giftbox.versions import for_target
from giftbox.workflow.series import digest


@dataclass(frozen=True)
class Side:
    label: str  # "working tree" or the giftbox revision
    ref: str
    commit: str | None
    upstream_version: str
    patches: dict[str, str]  # name -> sha256, in series order
    locks: dict[str, dict[str, str]]  # lock file name -> {package: version}
    versions: dict[str, str]  # distro -> package version

    def as_dict(self) -> dict[str, object]:
        return {"label": self.label, "ref": self.ref, "commit": self.commit,
                "upstream_version": self.upstream_version, "patches": self.patches,
                "versions": self.versions}


@dataclass(frozen=True)
class LockChange:
    only_in: str | None = None  # "a" or "b" when the lock file exists on one side only
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        if self.only_in:
            return {"only_in": self.only_in}
        return {"added": self.added, "removed": self.removed,
                "changed": {n: list(v) for n, v in self.changed.items()}}


@dataclass(frozen=True)
class Diff:
    project: str
    a: Side
    b: Side
    commits: list[tuple[str, str]] | None  # (sha, subject) in B, not in A; None: no history
    commits_removed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def patches(self) -> dict[str, list[dict[str, str]]]:
        a, b = self.a.patches, self.b.patches
        return {
            "added": [{"name": n, "sha256": s} for n, s in b.items() if n not in a],
            "removed": [{"name": n, "sha256": s} for n, s in a.items() if n not in b],
            "changed": [{"name": n, "from": a[n], "to": s} for n, s in b.items()
                        if n in a and a[n] != s],
        }

    @property
    def locks(self) -> dict[str, LockChange]:
        """Per lock file present on either side, what changed (files that match are left
        out)."""
        out: dict[str, LockChange] = {}
        for file in sorted(set(self.a.locks) | set(self.b.locks)):
            old, new = self.a.locks.get(file), self.b.locks.get(file)
            if old is None or new is None:
                out[file] = LockChange(only_in="b" if old is None else "a")
                continue
            entry = LockChange(
                added={n: v for n, v in new.items() if n not in old},
                removed={n: v for n, v in old.items() if n not in new},
                changed={n: (old[n], v) for n, v in new.items() if n in old and old[n] != v})
            if entry.added or entry.removed or entry.changed:
                out[file] = entry
        return out

    def as_dict(self) -> dict[str, object]:
        return {"project": self.project, "a": self.a.as_dict(), "b": self.b.as_dict(),
                "commits": None if self.commits is None
                else [{"commit": c, "subject": s} for c, s in self.commits],
                "commits_removed": [{"commit": c, "subject": s}
                                    for c, s in self.commits_removed],
                "patches": self.patches,
                "locks": {f: c.as_dict() for f, c in self.locks.items()},
                "versions": {d: [self.a.versions.get(d), self.b.versions.get(d)]
                             for d in sorted(set(self.a.versions) | set(self.b.versions))}}


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


def _locks(root: Path, project: str) -> dict[str, dict[str, str]]:
    return {p.name: {pin.name: pin.version for pin in lock.pins(p.read_text())}
            for p in sorted((root / "locks" / project).glob("*.txt"))}


def _side(spec: Spec, root: Path, label: str, ref: str | None,
          settings: Settings) -> tuple[Side, source.GitMirror | None]:
    mirror = None
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
    else:
        assert spec.pypi is not None
        ref, commit, version = spec.pypi.version, None, spec.pypi.version
    distros = load_distros(settings.builders_dir)
    series = spec_series_digest(spec)
    versions = {}
    for name in spec.distros:
        if name in distros:
            d = distros[name]
            versions[name] = for_target(version, spec.package.release, len(spec.patches),
                                        series, d.family, d.version_tag).for_family(d.family)
    return Side(label=label, ref=ref, commit=commit, upstream_version=version,
                patches={p.name: digest(p.read_bytes()) for p in spec.patches},
                locks=_locks(root, spec.name), versions=versions), mirror


def _log(mirror: source.GitMirror, a: str, b: str) -> list[tuple[str, str]]:
    out = run_git(["log", "--format=%H %s", "--no-decorate", f"{a}..{b}"], cwd=mirror.path,
                  env=mirror.env).stdout
    return [(line[:40], line[41:]) for line in out.splitlines() if line]


def diff(project: str, settings: Settings, ref_a: str | None = None, ref_b: str | None = None,
         rev_a: str | None = None, rev_b: str | None = None) -> Diff:
    with tempfile.TemporaryDirectory(prefix="giftbox-diff-") as tmp:
        sides = []
        mirrors = []
        for key, rev, ref in (("a", rev_a, ref_a), ("b", rev_b, ref_b)):
            root = (_materialize(settings, project, rev, Path(tmp) / key) if rev
                    else settings.root)
            spec = load_spec(spec_path(root, project), root)
            side, mirror = _side(spec, root, rev or "working tree", ref, settings)
            sides.append(side)
            mirrors.append(mirror)
    a, b = sides
    commits: list[tuple[str, str]] | None = None
    removed: list[tuple[str, str]] = []
    # commits only compare within one upstream repository (a spec may move its URL)
    first, second = mirrors
    if first and second and first.url == second.url and a.commit and b.commit:
        commits = _log(second, a.commit, b.commit)
        removed = _log(second, b.commit, a.commit)
    return Diff(project=project, a=a, b=b, commits=commits, commits_removed=removed)
