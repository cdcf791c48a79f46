"""``giftbox bump``: move a project's pin and carry its patch series along.

1. The old and new upstream are resolved; a new ref whose version sorts below the pinned one
   is refused unless ``--allow-downgrade``.
2. In a work tree at ``build/<project>-bump/`` the current series is applied to the old
   upstream commit (so every patch is a commit, whatever its file format), then each patch
   commit is carried onto the new upstream commit in order:

   * dropped when upstream already contains it: its ``git patch-id --stable`` equals that of
     an upstream commit between the old and the new pin (so a change merged upstream under
     another message or author is still found), or cherry-picking it leaves nothing to commit;
   * otherwise cherry-picked (a three-way merge against the patch's real old base, which
     refreshes context and offsets). A conflict stops the bump: the work tree is left with
     the cherry-pick in progress, and ``giftbox bump PROJECT --continue`` or ``--abort``.

3. Only when every patch is through is anything in the giftbox tree written, as one change:
   the pin in the spec (edited in place), the patch series (stable format-patch files, the
   list in the spec or quilt series file), and every existing lock of the project,
   regenerated in its builder (``--no-lock`` skips that). A failure there rolls all of it back.
   ``--abort`` therefore only has to delete the work tree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.error
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from giftbox import source
from giftbox.distros import Arch
from giftbox.errors import GiftboxError, PatchError, SourceError
from giftbox.files import sha256_file
from giftbox.gitutil import run_git
from giftbox.patches import apply_series
from giftbox.settings import Settings
from giftbox.spec import PyPIUpstream, Spec, load_spec
from giftbox.targets import Catalog
from giftbox.ui import NULL_REPORTER, Reporter
from giftbox.versions import parse_upstream
from giftbox.workflow import specedit
from giftbox.workflow.series import (
    UPSTREAM_TAG,
    Change,
    SeriesUpdate,
    commit_files,
    commit_subject,
    export_commits,
    find_upstream_copy,
    patch_id,
    series_commits,
    work_env,
    write_series,
)

STATE_FILE = "giftbox-bump.json"  # inside the work tree's .git directory: never committed


def bump_dir(settings: Settings, project: str) -> Path:
    return settings.root / "build" / f"{project}-bump"


@dataclass
class Dropped:
    name: str
    reason: str
    upstream_commit: str | None = None


@dataclass
class BumpState:
    """Everything ``--continue`` needs, saved after every step."""

    project: str
    kind: str
    old_ref: str
    old_commit: str
    old_version: str
    new_ref: str
    new_commit: str
    new_version: str
    new_sha256: str | None
    spec_sha256: str  # the spec as it was when the bump started
    patches: list[tuple[str, str]]  # (name, commit on the old base), in series order
    next: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    no_lock: bool = False
    stopped: bool = False  # at a conflict on patches[next]

    def save(self, tree: Path) -> None:
        path = tree / ".git" / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, tree: Path) -> BumpState:
        data = json.loads((tree / ".git" / STATE_FILE).read_text())
        data["patches"] = [tuple(p) for p in data["patches"]]
        data["dropped"] = [Dropped(**d) for d in data["dropped"]]
        return cls(**data)


@dataclass(frozen=True)
class BumpResult:
    project: str
    old_ref: str
    new_ref: str
    old_version: str
    new_version: str
    old_commit: str
    new_commit: str
    kept: tuple[str, ...]
    dropped: tuple[Dropped, ...]
    update: SeriesUpdate | None
    locks: tuple[str, ...]
    stale_locks: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"project": self.project, "old_ref": self.old_ref, "new_ref": self.new_ref,
                "old_version": self.old_version, "new_version": self.new_version,
                "old_commit": self.old_commit, "new_commit": self.new_commit,
                "kept": list(self.kept), "dropped": [asdict(d) for d in self.dropped],
                "series": self.update.as_dict() if self.update else None,
                "locks": list(self.locks), "stale_locks": list(self.stale_locks)}


def _rel(settings: Settings, path: Path) -> str:
    try:
        return str(path.relative_to(settings.root))
    except ValueError:
        return str(path)


def _new_pypi(spec: Spec, version: str, settings: Settings) -> PyPIUpstream:
    """The spec's PyPI pin moved to ``version``, with the sha256 the index lists for it."""
    assert spec.pypi is not None
    try:
        Version(version)
    except InvalidVersion:
        raise SourceError(f"--ref '{version}' is not a version; {spec.name} builds from its "
                          "PyPI tarball, so --ref names the release to move to (e.g. 33.0.1)"
                          ) from None
    probe = PyPIUpstream(name=spec.pypi.name, version=version, sha256="0" * 64)
    url, sha = source.find_sdist(probe, settings)
    if sha is None:  # an index that lists no hashes: hash what it serves
        digest = hashlib.sha256()
        try:
            with source._http_get(url, settings) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
        except urllib.error.HTTPError as exc:
            raise SourceError(f"cannot download {url}: {exc}") from None
        sha = digest.hexdigest()
    return PyPIUpstream(name=spec.pypi.name, version=version, sha256=sha)


def _has_commit(tree: Path, commit: str, env: dict[str, str]) -> bool:
    return run_git(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=tree, env=env,
                   check=False).returncode == 0


def _bring(tree: Path, repo: Path, commit: str, name: str, env: dict[str, str]) -> None:
    """Make ``commit`` of the local repository ``repo`` present in ``tree``: a clone only
    gets branches and tags, and a Gerrit change or a second tarball lives elsewhere."""
    if not _has_commit(tree, commit, env):
        run_git(["fetch", "--quiet", "--no-auto-gc", "--", str(repo),
                 f"+refs/*:refs/giftbox-{name}/*"], cwd=tree, env=env)
    if not _has_commit(tree, commit, env):
        raise SourceError(f"commit {commit} is not in {repo}")


def _in_progress(settings: Settings, project: str) -> Path:
    tree = bump_dir(settings, project)
    if not (tree / ".git" / STATE_FILE).is_file():
        hint = (f"{_rel(settings, tree)} exists but holds no bump; remove it" if tree.exists()
                else f"start one with `giftbox bump {project} --ref NEW`")
        raise PatchError(f"no bump of {project} is in progress", hint=hint)
    return tree


def start(spec: Spec, settings: Settings, ref: str, *, allow_downgrade: bool = False,
          no_lock: bool = False, reporter: Reporter = NULL_REPORTER) -> BumpResult:
    tree = bump_dir(settings, spec.name)
    if tree.exists():
        detail = ""
        if (tree / ".git" / STATE_FILE).is_file():
            state = BumpState.load(tree)
            detail = f" (from {state.old_ref} to {state.new_ref})"
        raise PatchError(f"a bump of {spec.name} is already in progress at "
                         f"{_rel(settings, tree)}{detail}",
                         hint=f"finish it with `giftbox bump {spec.name} --continue`, or drop "
                              f"it with `giftbox bump {spec.name} --abort`")
    with reporter.stage(f"bump {spec.name}: resolve {spec.pinned_ref} and {ref}"):
        old = source.resolve(spec, settings, reporter)
        new_pypi = None
        if spec.upstream_kind == "git":
            new = source.resolve(spec, settings, reporter, ref)
        else:
            new_pypi = _new_pypi(spec, ref, settings)
            new = source.resolve_pypi(new_pypi, settings, reporter)
        reporter.detail(f"{old.ref} {old.commit[:12]} ({old.version}) -> "
                        f"{new.ref} {new.commit[:12]} ({new.version})")
    if parse_upstream(new.version) < parse_upstream(old.version) and not allow_downgrade:
        raise SourceError(
            f"{ref} ({new.version}) is older than the pinned {spec.pinned_ref} "
            f"({old.version}); refusing to move {spec.name} backwards",
            hint=f"if that is what you mean: giftbox bump {spec.name} --ref {ref} "
                 "--allow-downgrade")
    env = work_env(new.source_date_epoch)
    tree.parent.mkdir(parents=True, exist_ok=True)
    with reporter.stage(f"bump {spec.name}: apply {len(spec.patches)} patch(es) to "
                        f"{old.ref}"):
        try:
            run_git(["clone", "--quiet", "--no-checkout", "--", str(new.repo), str(tree)],
                    env=env)
            _bring(tree, new.repo, new.commit, "new", env)
            _bring(tree, old.repo, old.commit, "old", env)
            run_git(["checkout", "--quiet", "-B", "giftbox-bump-old", old.commit], cwd=tree,
                    env=env)
            scratch = settings.cache_dir / "failed"
            try:
                apply_series(spec, tree, env, reporter, failed_dir=scratch)
            except PatchError as exc:
                raise PatchError(exc.message, hint=f"the current series must apply to the "
                                 f"current pin before it can move; see `giftbox patches check "
                                 f"{spec.name}`. {exc.hint or ''}") from None
            commits = series_commits(tree, old.commit, env)
            run_git(["checkout", "--quiet", "-B", f"giftbox/{spec.name}", new.commit],
                    cwd=tree, env=env)
            run_git(["tag", "--force", UPSTREAM_TAG, new.commit], cwd=tree, env=env)
            run_git(["tag", "--force", "giftbox-bump-from", old.commit], cwd=tree, env=env)
        except BaseException:
            shutil.rmtree(tree, ignore_errors=True)
            raise
    state = BumpState(
        project=spec.name, kind=spec.upstream_kind, old_ref=spec.pinned_ref,
        old_commit=old.commit, old_version=old.version, new_ref=ref, new_commit=new.commit,
        new_version=new.version, new_sha256=new_pypi.sha256 if new_pypi else None,
        spec_sha256=sha256_file(spec.path),
        patches=[(p.name, c) for p, c in zip(spec.patches, commits, strict=True)],
        no_lock=no_lock)
    state.save(tree)
    return _carry(spec, settings, tree, state, reporter)


def continue_(spec: Spec, settings: Settings, reporter: Reporter = NULL_REPORTER) -> BumpResult:
    tree = _in_progress(settings, spec.name)
    state = BumpState.load(tree)
    if sha256_file(spec.path) != state.spec_sha256:
        raise PatchError(f"specs/{spec.name}.yaml changed since the bump started; finishing "
                         "would overwrite that change",
                         hint=f"undo the edit, or `giftbox bump {spec.name} --abort` and bump "
                              "again")
    env = work_env()
    picking = run_git(["rev-parse", "-q", "--verify", "CHERRY_PICK_HEAD"], cwd=tree, env=env,
                      check=False).returncode == 0
    if picking:
        name = state.patches[state.next][0]
        unmerged = run_git(["diff", "--name-only", "--diff-filter=U"], cwd=tree,
                           env=env).stdout.split()
        marked = [f for f in unmerged if _has_markers(tree / f)]
        if marked:
            raise PatchError(f"{name} still has conflicts in {', '.join(marked)}",
                             hint=f"edit them in {_rel(settings, tree)} (remove the <<<<<<< "
                                  f"======= >>>>>>> markers), then `giftbox bump {spec.name} "
                                  "--continue` again")
        if unmerged:
            run_git(["add", "--", *unmerged], cwd=tree, env=env)
        done = run_git(["cherry-pick", "--continue"], cwd=tree, env=env, check=False)
        if done.returncode != 0:
            if _nothing_to_commit(done.stdout + done.stderr):
                run_git(["cherry-pick", "--skip"], cwd=tree, env=env)
                state.dropped.append(Dropped(name, "resolved to no change"))
            else:
                raise PatchError(f"cannot continue the cherry-pick of {name}:\n"
                                 + (done.stderr or done.stdout).strip(),
                                 hint=f"finish it by hand in {_rel(settings, tree)} "
                                      f"(git cherry-pick --continue), then `giftbox bump "
                                      f"{spec.name} --continue`")
    dirty = run_git(["status", "--porcelain", "--untracked-files=no"], cwd=tree,
                    env=env).stdout.split("\n")
    dirty = [d for d in dirty if d.strip()]
    if dirty:
        raise PatchError(f"{_rel(settings, tree)} has uncommitted changes: "
                         + ", ".join(d[3:] for d in dirty),
                         hint="commit or discard them, then --continue")
    if state.stopped:
        state.next += 1  # the conflicted patch: resolved above (or skipped by hand)
        state.stopped = False
    state.save(tree)
    return _carry(spec, settings, tree, state, reporter)


def abort(settings: Settings, project: str) -> Path:
    tree = _in_progress(settings, project)
    shutil.rmtree(tree)
    return tree


def _has_markers(path: Path) -> bool:
    if not path.is_file():
        return False
    for line in path.read_bytes().splitlines():
        if line.startswith((b"<<<<<<< ", b">>>>>>> ")) or line == b"=======":
            return True
    return False


def _nothing_to_commit(output: str) -> bool:
    return ("nothing to commit" in output or "is now empty" in output
            or "empty" in output and "cherry-pick" in output)


def _carry(spec: Spec, settings: Settings, tree: Path, state: BumpState,
           reporter: Reporter) -> BumpResult:
    """Cherry-pick the remaining patches onto the new base, then finish."""
    env = work_env()
    total = len(state.patches)
    while state.next < total:
        name, commit = state.patches[state.next]
        position = f"{state.next + 1} of {total}"
        pid = patch_id(run_git(["show", "--format=", "--no-color", commit], cwd=tree,
                               env=env).stdout, tree, env)
        twin = None
        if pid and state.kind == "git":
            twin = find_upstream_copy(tree, pid, [f"{state.old_commit}..{state.new_commit}"],
                                      commit_files(tree, commit, env), env)
        if twin:
            subject = commit_subject(tree, twin, env)
            reporter.detail(f"drop {name}: upstream has it as {twin[:12]} \"{subject}\"")
            state.dropped.append(Dropped(name, f"same patch-id as upstream {twin[:12]} "
                                         f"\"{subject}\"", twin))
        else:
            picked = run_git(["cherry-pick", commit], cwd=tree, env=env, check=False)
            output = picked.stdout + picked.stderr
            if picked.returncode != 0:
                unmerged = run_git(["diff", "--name-only", "--diff-filter=U"], cwd=tree,
                                   env=env).stdout.split()
                if not unmerged and _nothing_to_commit(output):
                    run_git(["cherry-pick", "--skip"], cwd=tree, env=env)
                    reporter.detail(f"drop {name}: nothing left of it on {state.new_ref}")
                    state.dropped.append(Dropped(name, f"upstream {state.new_ref} already "
                                                 "has its changes (empty after rebasing)"))
                else:
                    state.stopped = True
                    state.save(tree)
                    where = _rel(settings, tree)
                    files = ", ".join(unmerged) or output.strip().splitlines()[-1]
                    raise PatchError(
                        f"patch {name} ({position}) conflicts with {spec.name} "
                        f"{state.new_ref} in: {files}",
                        hint=f"the work tree is left at {where} (branch giftbox/{spec.name}, "
                             f"cherry-pick in progress); resolve the conflicts there, then "
                             f"`giftbox bump {spec.name} --continue`. To drop this patch "
                             f"instead: `git -C {where} cherry-pick --skip`, then --continue. "
                             f"To leave everything as it was: `giftbox bump {spec.name} "
                             "--abort`.")
            else:
                reporter.detail(f"carried {name}")
        state.next += 1
        state.save(tree)
    return _finish(spec, settings, tree, state, reporter)


def _set_pin(spec: Spec, text: str, state: BumpState) -> str:
    file = f"specs/{spec.name}.yaml"
    if state.kind == "git":
        return specedit.set_scalar(text, file, ["upstream", "git", "ref"], state.new_ref)
    assert state.new_sha256 is not None
    text = specedit.set_scalar(text, file, ["upstream", "pypi", "version"], state.new_ref)
    return specedit.set_scalar(text, file, ["upstream", "pypi", "sha256"], state.new_sha256)


def lock_targets(settings: Settings, project: str) -> list[tuple[Path, str, Arch]]:
    """(lock file, distro, arch) of every lock the project has: locks/<p>/<distro>-<arch>.txt."""
    targets = []
    for path in sorted((settings.locks_dir / project).glob("*.txt")):
        distro, _, arch = path.stem.rpartition("-")
        try:
            targets.append((path, distro, Arch.parse(arch)))
        except (ValueError, GiftboxError):
            continue
    return targets


def _finish(spec: Spec, settings: Settings, tree: Path, state: BumpState,
            reporter: Reporter) -> BumpResult:
    env = work_env()
    commits = series_commits(tree, state.new_commit, env)
    patches = export_commits(tree, commits, spec.patches, env)
    change = Change()
    locks: list[str] = []
    targets = lock_targets(settings, spec.name)
    try:
        with reporter.stage(f"bump {spec.name}: write the pin and {len(patches)} patch(es)"):
            text = _set_pin(spec, spec.path.read_text(), state)
            update, text = write_series(spec, settings, patches, change, spec_text=text)
            change.write(spec.path, text.encode())
            new_spec = load_spec(spec.path, settings.root)
        if not state.no_lock:
            from giftbox import build

            catalog = Catalog.load(settings)
            for path, distro_name, arch in targets:
                with reporter.stage(f"bump {spec.name}: lock for {distro_name}/{arch.value}"):
                    change.remember(path)
                    distro = catalog.distro(distro_name)
                    build.make_lock(new_spec, distro, arch, settings, reporter)
                    locks.append(_rel(settings, path))
    except BaseException:
        change.rollback()
        raise
    shutil.rmtree(tree)
    names = {p.name for p in patches}
    dropped = [d for d in state.dropped if d.name not in names]
    dropped += [Dropped(n, "removed in the work tree") for n, _c in state.patches
                if n not in names and all(d.name != n for d in dropped)]
    return BumpResult(
        project=spec.name, old_ref=state.old_ref, new_ref=state.new_ref,
        old_version=state.old_version, new_version=state.new_version,
        old_commit=state.old_commit, new_commit=state.new_commit,
        kept=tuple(p.name for p in patches), dropped=tuple(dropped), update=update,
        locks=tuple(locks),
        stale_locks=tuple(_rel(settings, p) for p, _d, _a in targets) if state.no_lock else ())
