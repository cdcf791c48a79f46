"""``giftbox backport``: an upstream commit (or Gerrit change) as a new patch at the end.

The commit is looked up in the project's upstream git mirror (``upstream.git.url``; for a
PyPI-built spec too, since that is where upstream's history lives), cherry-picked with
``-x`` (so the message records ``(cherry picked from commit <sha>)``) onto the patched tree the
current series gives, and written as a format-patch file after the last patch. The cherry-pick
is the check that it applies on top of the series; on a conflict nothing is written.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from giftbox import source
from giftbox.errors import PatchError, SourceError
from giftbox.gitutil import run_git
from giftbox.settings import Settings
from giftbox.spec import Spec, TreeFileError, load_spec, tree_folder
from giftbox.ui import NULL_REPORTER, Reporter
from giftbox.workflow.series import (
    Change,
    digest,
    format_commit,
    next_name,
    update_list,
    work_env,
)


@dataclass(frozen=True)
class BackportResult:
    project: str
    upstream_commit: str
    subject: str
    name: str
    series_file: str
    sha256: str

    def as_dict(self) -> dict[str, object]:
        return {"project": self.project, "upstream_commit": self.upstream_commit,
                "subject": self.subject, "name": self.name, "series_file": self.series_file,
                "sha256": self.sha256}


def resolve_commit(spec: Spec, settings: Settings, what: str,
                   reporter: Reporter = NULL_REPORTER) -> tuple[source.GitMirror, str]:
    if spec.git is None:
        raise SourceError(f"{spec.name} has no upstream.git section, so there is no upstream "
                          "history to backport from",
                          hint="add upstream.git (url and ref) to the spec; it may stay "
                               "unused (upstream.use: pypi)")
    mirror = source.GitMirror(spec.git.url, settings)
    try:
        commit = mirror.resolve(what, reporter)
    except SourceError as exc:
        raise SourceError(f"'{what}' is not a commit in the upstream repository "
                          f"{spec.git.url}", hint=exc.hint) from None
    parents = run_git(["rev-list", "--parents", "-n", "1", commit], cwd=mirror.path,
                      env=mirror.env).stdout.split()
    if len(parents) > 2:
        raise PatchError(f"{what} ({commit[:12]}) is a merge commit; backport the commits it "
                         "merges, one at a time")
    return mirror, commit


def backport(spec: Spec, settings: Settings, what: str,
             reporter: Reporter = NULL_REPORTER) -> BackportResult:
    with reporter.stage(f"backport {what} to {spec.name}"):
        mirror, commit = resolve_commit(spec, settings, what, reporter)
        scratch = settings.cache_dir / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"backport-{spec.name}-", dir=scratch))
        try:
            tree = source.prepare(spec, tmp / "tree", settings, reporter).path
            env = work_env(int(run_git(["log", "-1", "--format=%ct", "HEAD"], cwd=tree,
                                       env=work_env()).stdout.strip()))
            # The mirror's objects, borrowed rather than fetched: a change ref or a commit
            # on no branch is reachable nowhere a clone would copy from.
            alternates = tree / ".git" / "objects" / "info" / "alternates"
            with open(alternates, "a") as handle:
                handle.write(str(mirror.path / "objects") + "\n")
            picked = run_git(["cherry-pick", "-x", commit], cwd=tree, env=env, check=False)
            if picked.returncode != 0:
                unmerged = run_git(["diff", "--name-only", "--diff-filter=U"], cwd=tree,
                                   env=env).stdout.split()
                output = (picked.stderr + picked.stdout).strip()
                if not unmerged and ("empty" in output or "nothing to commit" in output):
                    raise PatchError(f"{what} ({commit[:12]}) changes nothing on top of "
                                     f"{spec.name}'s series: the pinned upstream or a patch "
                                     "already has it")
                raise PatchError(
                    f"{what} ({commit[:12]}) does not apply on top of {spec.name}'s series: "
                    f"conflicts in {', '.join(unmerged) or output.splitlines()[-1]}",
                    hint=f"backport it by hand: `giftbox source {spec.name} --into DIR`, "
                         f"`git -C DIR cherry-pick -x {commit}`, resolve and commit, then "
                         f"`giftbox patches export {spec.name} --from DIR`")
            head = run_git(["rev-parse", "HEAD"], cwd=tree, env=env).stdout.strip()
            slug, data = format_commit(tree, head, env)
            subject = run_git(["log", "-1", "--format=%s", head], cwd=tree,
                              env=env).stdout.strip()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        folder = tree_folder(settings.root, f"patches/{spec.name}")
    except TreeFileError as exc:
        raise PatchError(f"cannot write the series of {spec.name}: {exc}") from None
    existing = [p.name for p in spec.patches]
    on_disk = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    name = next_name(existing, slug, taken=on_disk)
    change = Change()
    try:
        change.write(folder / name, data)
        text, where = update_list(spec, settings, [*existing, name], change,
                                  spec.path.read_text())
        change.write(spec.path, text.encode())
        load_spec(spec.path, settings.root)
    except BaseException:
        change.rollback()
        raise
    return BackportResult(project=spec.name, upstream_commit=commit, subject=subject,
                          name=name, series_file=where,
                          sha256=digest(data))
