"""``giftbox patches check``: does each patch of a series still apply to its pinned ref?

Each series is applied in order to the pinned upstream commit in a scratch clone, and every
patch gets one verdict, tried in this order:

``applies``
    ``git apply --check`` succeeds with every hunk at its recorded line.
``applies with offset``
    ``git apply --check`` succeeds, but some hunk had to move (git reports "offset N lines").
``already merged upstream``
    the reverse of the patch applies cleanly (upstream has exactly the patched lines), or its
    ``git patch-id --stable`` equals that of an upstream commit in the pinned ref's history
    that touches the same files (the same change, merged as a different commit).
``applies with fuzz``
    the exact apply fails, but a three-way merge (``git apply --3way``, using the pre-image
    blobs the patch names) merges cleanly, or it applies with its context cut to one line
    (``git apply -C1``, like ``patch``'s fuzz). The result is what the build would see only
    after the patch is refreshed, so refresh it (``giftbox source`` then ``patches export``).
``conflicts``
    none of the above; the files that do not merge are named.

A patch that conflicts or is merged upstream is left out and the following patches are
checked without it. The command exits non-zero when any patch conflicts.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from giftbox import source
from giftbox.gitutil import run_git
from giftbox.patches import _FAILED_AT, _NOT_EXIST
from giftbox.settings import Settings
from giftbox.spec import Spec
from giftbox.ui import NULL_REPORTER, Reporter
from giftbox.workflow.series import find_upstream_copy, patch_id, work_env

APPLIES = "applies"
OFFSET = "applies with offset"
FUZZ = "applies with fuzz"
MERGED = "already merged upstream"
CONFLICTS = "conflicts"
MISSING = "missing"
HISTORY_WINDOW = 5000  # upstream commits (touching the patch's files) searched by patch-id

_NUMSTAT_RE = re.compile(r"^(\d+|-)\t(\d+|-)\t(.+)$")


@dataclass(frozen=True)
class PatchStatus:
    name: str
    status: str
    detail: str = ""
    files: tuple[str, ...] = ()
    upstream_commit: str | None = None

    @property
    def ok(self) -> bool:
        return self.status not in (CONFLICTS, MISSING)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "files": list(self.files), "upstream_commit": self.upstream_commit}


@dataclass(frozen=True)
class CheckReport:
    project: str
    ref: str
    commit: str
    patches: tuple[PatchStatus, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.patches)

    def as_dict(self) -> dict[str, object]:
        return {"project": self.project, "ref": self.ref, "commit": self.commit,
                "ok": self.ok, "patches": [p.as_dict() for p in self.patches]}


def patch_files(path: Path, cwd: Path, env: dict[str, str]) -> list[str]:
    """The paths a patch file touches, as git reads it."""
    out = run_git(["apply", "--numstat", str(path)], cwd=cwd, env=env, check=False).stdout
    files = []
    for line in out.splitlines():
        match = _NUMSTAT_RE.match(line)
        if match:
            files.append(match.group(3))
    return files


def _conflicting(stderr: str, tree: Path, env: dict[str, str]) -> list[str]:
    files = [m.group("file") for m in _FAILED_AT.finditer(stderr)]
    files += [m.group("file") for m in _NOT_EXIST.finditer(stderr)]
    unmerged = run_git(["diff", "--name-only", "--diff-filter=U"], cwd=tree, env=env,
                       check=False).stdout.split()
    return sorted(set(files) | set(unmerged))


def _reset(tree: Path, env: dict[str, str]) -> None:
    run_git(["reset", "--hard", "-q", "HEAD"], cwd=tree, env=env)
    run_git(["clean", "-fdq"], cwd=tree, env=env)


def _commit(tree: Path, name: str, env: dict[str, str]) -> None:
    run_git(["commit", "-q", "--no-verify", "--allow-empty", "-m", f"check: {name}"],
            cwd=tree, env=env)


def check_patch(tree: Path, path: Path, upstream_commit: str, env: dict[str, str]) -> PatchStatus:
    """The verdict for one patch on the tree's HEAD; applies it when it applies at all."""
    name = path.name
    if not path.is_file():
        return PatchStatus(name, MISSING, f"patches/.../{name} does not exist")
    exact = run_git(["apply", "--check", "--verbose", str(path)], cwd=tree, env=env, check=False)
    if exact.returncode == 0:
        run_git(["apply", "--index", str(path)], cwd=tree, env=env)
        _commit(tree, name, env)
        offsets = re.findall(r"Hunk #\d+ succeeded at \d+ \(offset -?\d+ lines?\)", exact.stderr)
        if offsets:
            return PatchStatus(name, OFFSET, "; ".join(offsets))
        return PatchStatus(name, APPLIES)
    files = patch_files(path, tree, env)
    reverse = run_git(["apply", "--check", "--reverse", str(path)], cwd=tree, env=env,
                      check=False)
    if reverse.returncode == 0:
        return PatchStatus(name, MERGED, "its reverse applies cleanly: upstream already has "
                           "these lines", tuple(files))
    pid = patch_id(path.read_bytes().decode("utf-8", errors="replace"), tree, env)
    if pid:
        twin = find_upstream_copy(tree, pid, ["-n", str(HISTORY_WINDOW), upstream_commit],
                                  files, env)
        if twin:
            subject = run_git(["log", "-1", "--format=%s", twin], cwd=tree,
                              env=env).stdout.strip()
            return PatchStatus(name, MERGED, f"same patch-id as upstream {twin[:12]} "
                               f"\"{subject}\"", tuple(files), twin)
    three_way = run_git(["apply", "--3way", "--index", str(path)], cwd=tree, env=env,
                        check=False)
    if three_way.returncode == 0:
        _commit(tree, name, env)
        return PatchStatus(name, FUZZ, "merges cleanly three-way (git apply --3way); "
                           "refresh it", tuple(files))
    conflicts = _conflicting(exact.stderr + three_way.stderr, tree, env)
    _reset(tree, env)
    fuzzy = run_git(["apply", "--index", "-C1", str(path)], cwd=tree, env=env, check=False)
    if fuzzy.returncode == 0:
        _commit(tree, name, env)
        return PatchStatus(name, FUZZ, "applies with its context cut to one line "
                           "(git apply -C1); refresh it", tuple(files))
    _reset(tree, env)
    return PatchStatus(name, CONFLICTS, "does not apply: " + ", ".join(conflicts or files),
                       tuple(conflicts or files))


def check_series(spec: Spec, settings: Settings,
                 reporter: Reporter = NULL_REPORTER) -> CheckReport:
    upstream = source.resolve(spec, settings, reporter)
    scratch_root = settings.cache_dir / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"check-{spec.name}-", dir=scratch_root))
    env = work_env(upstream.source_date_epoch)
    try:
        # --shared: the scratch clone borrows the mirror's objects instead of copying them,
        # and the three-way fallback needs the pre-image blobs those objects hold.
        run_git(["clone", "--quiet", "--shared", "--no-checkout", "--", str(upstream.repo),
                 str(tmp / "tree")], env=env)
        tree = tmp / "tree"
        run_git(["checkout", "--quiet", "-B", "giftbox-check", upstream.commit], cwd=tree,
                env=env)
        results = []
        for path in spec.patches:
            status = check_patch(tree, path, upstream.commit, env)
            results.append(status)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CheckReport(project=spec.name, ref=upstream.ref, commit=upstream.commit,
                       patches=tuple(results))
