"""``giftbox patches export``: a work tree's commits back into the project's patch series.

The tree is one ``giftbox source`` made (or one a bump left): branch ``giftbox/<project>``,
the upstream commit tagged ``giftbox-upstream``, one commit per patch. The packager edits,
reorders, squashes or adds commits there with plain git; export writes each commit on top of
``giftbox-upstream`` as a format-patch file (stable bytes: re-exporting an unchanged tree
changes nothing), removes the files that left the series and updates the series list in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from giftbox.errors import PatchError
from giftbox.gitutil import run_git
from giftbox.settings import Settings
from giftbox.spec import Spec
from giftbox.workflow.series import (
    UPSTREAM_TAG,
    Change,
    PatchFile,
    SeriesUpdate,
    export_commits,
    series_commits,
    work_env,
    write_series,
)


@dataclass(frozen=True)
class ExportResult:
    project: str
    tree: Path
    base: str
    patches: tuple[PatchFile, ...]
    update: SeriesUpdate

    def as_dict(self) -> dict[str, object]:
        return {"project": self.project, "tree": str(self.tree), "base": self.base,
                "patches": [{"name": p.name, "subject": p.subject, "sha256": p.sha256,
                             "commit": p.commit} for p in self.patches],
                **self.update.as_dict()}


def check_work_tree(tree: Path, project: str) -> str:
    """The upstream commit of a work tree fit to export, or a PatchError saying why not."""
    env = work_env()
    if not tree.is_dir():
        raise PatchError(f"{tree} does not exist",
                         hint=f"make a work tree with `giftbox source {project} --into {tree}`")
    top = run_git(["rev-parse", "--show-toplevel"], cwd=tree, env=env, check=False)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != tree.resolve():
        raise PatchError(f"{tree} is not the top of a git work tree",
                         hint=f"export from the directory `giftbox source {project} --into "
                              "DIR` made")
    branch = run_git(["symbolic-ref", "--short", "-q", "HEAD"], cwd=tree, env=env,
                     check=False).stdout.strip()
    expected = f"giftbox/{project}"
    if branch != expected:
        if branch.startswith("giftbox/"):
            other = branch.removeprefix("giftbox/")
            raise PatchError(f"{tree} is a work tree of {other} (branch {branch}), not of "
                             f"{project}", hint=f"did you mean `giftbox patches export {other} "
                                                f"--from {tree}`?")
        raise PatchError(f"{tree} is on {'branch ' + branch if branch else 'a detached HEAD'}"
                         f", not on {expected}",
                         hint=f"export exports the branch giftbox source made: git -C {tree} "
                              f"checkout {expected} (or reset it to the commits you want)")
    base = run_git(["rev-parse", "--verify", "-q", f"refs/tags/{UPSTREAM_TAG}^{{commit}}"],
                   cwd=tree, env=env, check=False)
    if base.returncode != 0:
        raise PatchError(f"{tree} has no {UPSTREAM_TAG} tag, so the upstream commit the "
                         "patches sit on is unknown",
                         hint=f"make the tree with `giftbox source {project}`; it tags the "
                              "upstream commit")
    ancestor = run_git(["merge-base", "--is-ancestor", UPSTREAM_TAG, "HEAD"], cwd=tree, env=env,
                       check=False)
    if ancestor.returncode != 0:
        raise PatchError(f"branch {expected} in {tree} does not contain {UPSTREAM_TAG} "
                         f"({base.stdout.strip()[:12]}): it was reset or rebased off the "
                         "upstream commit",
                         hint=f"rebase it back: git -C {tree} rebase {UPSTREAM_TAG}")
    dirty = run_git(["status", "--porcelain=v1", "--untracked-files=all"], cwd=tree,
                    env=env).stdout.splitlines()
    if dirty:
        files = [line[3:] for line in dirty]
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10
                                         else "")
        raise PatchError(f"{tree} has uncommitted changes: {shown}",
                         hint=f"commit them (git -C {tree} commit -a, or --fixup into the "
                              "patch they belong to) or discard them, then export again")
    return base.stdout.strip()


def export(spec: Spec, settings: Settings, tree: Path) -> ExportResult:
    tree = tree.resolve()
    base = check_work_tree(tree, spec.name)
    env = work_env()
    commits = series_commits(tree, base, env)
    patches = export_commits(tree, commits, spec.patches, env)
    change = Change()
    try:
        update, text = write_series(spec, settings, patches, change)
        change.write(spec.path, text.encode())
    except BaseException:
        change.rollback()
        raise
    return ExportResult(project=spec.name, tree=tree, base=base, patches=tuple(patches),
                        update=update)
