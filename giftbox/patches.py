"""Patch series: applied in order on top of the upstream commit, one commit per patch.

``git format-patch`` files (mbox) go through ``git am`` and keep their author, date and message.
Plain diffs (quilt style, optionally with DEP-3 headers) go through ``git apply`` and are
committed with the DEP-3 author and description when present, else with the patch's name.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from giftbox.errors import PatchError
from giftbox.gitutil import run_git
from giftbox.spec import Spec
from giftbox.ui import NULL_REPORTER, Reporter

_FAILED_AT = re.compile(r"^error: patch failed: (?P<file>.+):(?P<line>\d+)$", re.M)
_NOT_EXIST = re.compile(r"^error: (?P<file>.+): (does not exist in index|No such file or "
                        r"directory|already exists in (index|working directory))$", re.M)
_HUNK = re.compile(r"^@@ -(?P<start>\d+)(,\d+)? \+\d+(,\d+)? @@.*$", re.M)


@dataclass(frozen=True)
class AppliedPatch:
    name: str
    sha256: str
    commit: str
    subject: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "commit": self.commit,
                "subject": self.subject}


def series_digest(patches: tuple[AppliedPatch, ...] | list[AppliedPatch]) -> str:
    """One digest for the ordered series: changes when any patch, name or order changes."""
    return _digest([(p.name, p.sha256) for p in patches])


def spec_series_digest(spec: Spec) -> str:
    """The same digest computed from the spec's patch files, without applying them."""
    return _digest([(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in spec.patches])


def _digest(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    h = hashlib.sha256()
    for name, sha in pairs:
        h.update(f"{name}\0{sha}\n".encode())
    return h.hexdigest()


def is_mbox(text: str) -> bool:
    head = text.lstrip().splitlines()[:12]
    return bool(head) and (head[0].startswith("From ") or any(
        line.startswith("Subject:") for line in head))


def _dep3(text: str) -> tuple[str | None, str | None]:
    """(author, description) from DEP-3 style headers above the diff, if any."""
    author = description = None
    for line in text.splitlines():
        if line.startswith(("---", "diff ", "Index:")):
            break
        key, _, value = line.partition(":")
        if key in ("Author", "From") and value.strip():
            author = value.strip()
        elif key in ("Description", "Subject") and value.strip():
            description = value.strip()
    return author, description


def _hunk_for(text: str, file: str, line: int) -> str | None:
    """The hunk header in the patch for ``file`` starting at ``line``."""
    in_file = False
    for row in text.splitlines():
        if row.startswith(("--- ", "+++ ")):
            in_file = row[4:].split("\t")[0].removeprefix("a/").removeprefix("b/") == file \
                or in_file and row.startswith("+++ ")
            continue
        match = _HUNK.match(row)
        if in_file and match and int(match.group("start")) == line:
            return row
    return None


def _explain_failure(name: str, text: str, output: str) -> str:
    failed = _FAILED_AT.search(output)
    if failed:
        file, line = failed.group("file"), int(failed.group("line"))
        hunk = _hunk_for(text, file, line)
        where = f"the hunk {hunk.strip()}" if hunk else f"the hunk at line {line}"
        return f"{where} of {file} does not match the upstream file"
    missing = _NOT_EXIST.search(output)
    if missing:
        return f"{missing.group('file')}: {missing.group(2)}"
    return "\n".join(output.strip().splitlines()[-6:])


def apply_series(spec: Spec, tree: Path, env: dict[str, str],
                 reporter: Reporter = NULL_REPORTER, *, failed_dir: Path) -> list[AppliedPatch]:
    applied: list[AppliedPatch] = []
    for index, path in enumerate(spec.patches, 1):
        name = path.name
        if not path.is_file():
            raise PatchError(f"patch {name} ({index} of {len(spec.patches)}) is missing: "
                             f"patches/{spec.name}/{name} does not exist",
                             hint="restore the file or remove it from the series")
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        if is_mbox(text):
            proc = run_git(["am", "--quiet", "--keep-cr", "--no-3way", str(path)],
                           cwd=tree, env=env, check=False)
        else:
            proc = run_git(["apply", "--index", "--verbose", str(path)],
                           cwd=tree, env=env, check=False)
            if proc.returncode == 0:
                author, description = _dep3(text)
                args = ["commit", "--quiet", "--no-verify", "-m",
                        description or f"Apply {name}", "-m", f"giftbox-patch: {name}"]
                commit_env = dict(env)
                commit_env["GIT_AUTHOR_DATE"] = env.get("GIT_COMMITTER_DATE", "")
                if author:
                    args.insert(1, f"--author={author}")
                proc = run_git(args, cwd=tree, env=commit_env, check=False)
        if proc.returncode != 0:
            reason = _explain_failure(name, text, proc.stderr + proc.stdout)
            kept = _keep_failed(tree, failed_dir, spec.name)
            raise PatchError(
                f"patch {name} ({index} of {len(spec.patches)}) does not apply to "
                f"{spec.name} at {spec.pinned_ref}: {reason}",
                hint=f"the partial tree (patches 1-{index - 1} applied) is kept at {kept}; "
                     f"refresh the patch against the pinned ref, or drop it from the series")
        commit = run_git(["rev-parse", "HEAD"], cwd=tree, env=env).stdout.strip()
        subject = run_git(["log", "-1", "--format=%s", commit], cwd=tree, env=env).stdout.strip()
        applied.append(AppliedPatch(name=name, sha256=hashlib.sha256(raw).hexdigest(),
                                    commit=commit, subject=subject))
        reporter.detail(f"applied {name}: {subject}")
    return applied


def _keep_failed(tree: Path, failed_dir: Path, project: str) -> Path:
    failed_dir.mkdir(parents=True, exist_ok=True)
    target = failed_dir / f"{project}-{time.strftime('%Y%m%dT%H%M%S')}-{tree.name.strip('.')}"
    shutil.move(str(tree), target)
    return target
