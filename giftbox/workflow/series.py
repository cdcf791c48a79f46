"""What export, bump and backport share: commits as stable format-patch files, names that do
not churn, patch-id detection of changes upstream already has, and writing the series back
(patch files plus the spec's list) as one change that can be rolled back.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from giftbox.errors import PatchError
from giftbox.gitutil import git_env, run_git
from giftbox.patches import is_mbox
from giftbox.settings import Settings
from giftbox.spec import Spec, TreeFileError, tree_folder
from giftbox.workflow import specedit

UPSTREAM_TAG = "giftbox-upstream"
# ``git format-patch`` arguments that make the output a function of the commit's content only:
# --zero-commit: no commit hash in the "From " line (it changes on every rebase);
# --no-signature: no "-- \n2.39.5" git version trailer (it changes with the packager's git);
# -N: "[PATCH]", not "[PATCH 2/5]" (adding a patch would otherwise touch every other file);
# --stat=72: a diffstat of fixed width (git would otherwise size it to the terminal through
#   $COLUMNS); it also keeps the "---" line that separates message and diff in mail format;
# --full-index: full blob ids on the index lines; abbreviated ones grow with the size of the
#   repository, so two clones of one upstream could abbreviate the same blob differently.
FORMAT_PATCH = ["format-patch", "--zero-commit", "--no-signature", "-N", "--stat=72",
                "--full-index"]
_NUMBER_RE = re.compile(r"^(\d{4})-")
_TRAILER_RE = re.compile(rb"\n+giftbox-patch: [^\n]*\n(?=---\n)")


def work_env(epoch: int | None = None) -> dict[str, str]:
    """The sealed git environment, with a fixed committer date when one is given, so that
    rebuilding a tree gives the same commits (author dates always come from the patches)."""
    env = git_env(extra={"GIT_EDITOR": "true"})
    if epoch is not None:
        env["GIT_COMMITTER_DATE"] = f"@{epoch} +0000"
    return env


@dataclass(frozen=True)
class PatchFile:
    """One commit of a work tree as a patch file's name and bytes."""

    name: str
    data: bytes
    subject: str
    commit: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def series_commits(tree: Path, base: str, env: dict[str, str]) -> list[str]:
    """The commits on top of ``base``, oldest first; merges cannot be patches."""
    merges = run_git(["rev-list", "--merges", f"{base}..HEAD"], cwd=tree, env=env).stdout.split()
    if merges:
        raise PatchError(f"{tree} has merge commits on top of {UPSTREAM_TAG} "
                         f"({', '.join(m[:12] for m in merges)}); a patch series is linear",
                         hint=f"rebase them away: git -C {tree} rebase {UPSTREAM_TAG}")
    return run_git(["rev-list", "--reverse", f"{base}..HEAD"], cwd=tree,
                   env=env).stdout.split()


def format_commit(tree: Path, commit: str, env: dict[str, str]) -> tuple[str, bytes]:
    """(git's slug for the subject, the stable format-patch bytes) of ``commit``."""
    with tempfile.TemporaryDirectory(prefix="giftbox-fp-") as tmp:
        out = run_git([*FORMAT_PATCH, "-o", tmp, "-1", commit], cwd=tree, env=env).stdout
        path = Path(out.strip().splitlines()[-1])
        data = path.read_bytes()
    slug = path.name.removeprefix("0001-").removesuffix(".patch")
    # A plain diff applied by giftbox.patches carries a "giftbox-patch: <file>" trailer naming
    # its old file; once the patch is a format-patch file of its own the trailer is noise.
    head, sep, rest = data.partition(b"\n---\n")
    head = _TRAILER_RE.sub(b"\n", head + b"\n---\n")[:-len(b"\n---\n")] if sep else head
    return slug, head + sep + rest


def patch_subject(path: Path) -> str | None:
    """The Subject of a format-patch file, as ``git am`` would read it (without [PATCH])."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    if not is_mbox(raw):
        return None
    with tempfile.TemporaryDirectory(prefix="giftbox-mi-") as tmp:
        out = run_git(["mailinfo", str(Path(tmp) / "msg"), str(Path(tmp) / "patch")],
                      input=raw, check=False).stdout
    for line in out.splitlines():
        if line.startswith("Subject: "):
            return line.removeprefix("Subject: ").strip()
    return None


def commit_subject(tree: Path, commit: str, env: dict[str, str]) -> str:
    return run_git(["log", "-1", "--format=%s", commit], cwd=tree, env=env).stdout.strip()


def name_series(old: Sequence[Path], commits: Sequence[tuple[str, str]]) -> list[str]:
    """A file name for each (subject, slug), keeping the names of the existing patches.

    A commit whose subject matches a format-patch file of the current series keeps that
    file's name, so dropping or inserting a patch does not rename every later one (a rename
    is a diff a reviewer has to read). Other commits get ``NNNN-<slug>.patch``, NNNN one past
    the highest number before them: ``git format-patch`` naming, continued.
    """
    by_subject: dict[str, list[str]] = {}
    for path in old:
        if path.is_file():
            subject = patch_subject(path)
            if subject is not None:
                by_subject.setdefault(subject, []).append(path.name)
    names: list[str] = []
    highest = 0
    for subject, slug in commits:
        kept = by_subject.get(subject)
        if kept:
            name = kept.pop(0)
        else:
            number = highest + 1
            name = f"{number:04d}-{slug}.patch"
            reserved = {n for left in by_subject.values() for n in left}
            while name in names or name in reserved:
                number += 1
                name = f"{number:04d}-{slug}.patch"
        match = _NUMBER_RE.match(name)
        if match:
            highest = max(highest, int(match.group(1)))
        names.append(name)
    return names


def export_commits(tree: Path, commits: Sequence[str], old: Sequence[Path],
                   env: dict[str, str]) -> list[PatchFile]:
    formatted = [(c, *format_commit(tree, c, env)) for c in commits]
    subjects = [commit_subject(tree, c, env) for c in commits]
    names = name_series(old, [(s, slug) for s, (_c, slug, _d) in zip(subjects, formatted,
                                                                      strict=True)])
    return [PatchFile(name=n, data=d, subject=s, commit=c)
            for n, s, (c, _slug, d) in zip(names, subjects, formatted, strict=True)]


# --- patch-id: is this change already upstream? -------------------------------------------


def patch_id(diff: str, cwd: Path, env: dict[str, str]) -> str | None:
    """``git patch-id --stable`` of a diff (whitespace and line numbers do not count)."""
    out = run_git(["patch-id", "--stable"], cwd=cwd, env=env, input=diff).stdout.split()
    return out[0] if out else None


def commit_files(tree: Path, commit: str, env: dict[str, str]) -> list[str]:
    out = run_git(["diff-tree", "--no-commit-id", "--name-only", "-r", "--root", commit],
                  cwd=tree, env=env).stdout
    return [f for f in out.splitlines() if f]


def find_upstream_copy(repo: Path, pid: str, revs: Sequence[str], files: Sequence[str],
                       env: dict[str, str]) -> str | None:
    """The upstream commit in ``revs`` (a range, or a commit with ``-n``) whose patch-id is
    ``pid``. Only commits touching the patch's files are diffed, which keeps this fast on a
    history the size of nova's."""
    if not files:
        return None
    log = run_git(["log", "-p", "--no-merges", "--no-color", "--no-ext-diff", *revs, "--",
                   *files], cwd=repo, env=env, check=False)
    if log.returncode != 0 or not log.stdout:
        return None
    out = run_git(["patch-id", "--stable"], cwd=repo, env=env, input=log.stdout).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == pid:
            return parts[1]
    return None


# --- writing the series back as one change -------------------------------------------------


@dataclass
class Change:
    """Files written or removed together; ``rollback`` puts back what was there before."""

    backups: dict[Path, bytes | None] = field(default_factory=dict)
    changed: list[Path] = field(default_factory=list)

    def _remember(self, path: Path) -> None:
        if path not in self.backups:
            self.backups[path] = path.read_bytes() if path.is_file() else None

    def write(self, path: Path, data: bytes) -> bool:
        if path.is_file() and path.read_bytes() == data:
            return False  # unchanged bytes: not even the mtime moves
        self._remember(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.giftbox-tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        self.changed.append(path)
        return True

    def remove(self, path: Path) -> bool:
        if not path.is_file():
            return False
        self._remember(path)
        path.unlink()
        self.changed.append(path)
        return True

    def remember(self, path: Path) -> None:
        """Note a file another function is about to rewrite (a lock), for rollback."""
        self._remember(path)

    def rollback(self) -> None:
        for path, data in self.backups.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


@dataclass(frozen=True)
class SeriesUpdate:
    written: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    series_file: str  # the file holding the list: specs/<p>.yaml or patches/<p>/series

    def as_dict(self) -> dict[str, object]:
        return {"written": list(self.written), "removed": list(self.removed),
                "unchanged": list(self.unchanged), "series_file": self.series_file}


def write_series(spec: Spec, settings: Settings, patches: Sequence[PatchFile],
                 change: Change, *, spec_text: str | None = None) -> tuple[SeriesUpdate, str]:
    """Write ``patches`` to patches/<project>/, remove files that left the series, and update
    the list (the spec's ``patches:``, or the quilt ``series`` file when that is what the
    project uses). Returns the update and the new spec text, which the caller writes (a bump
    edits other fields of it too)."""
    try:
        folder = tree_folder(settings.root, f"patches/{spec.name}")
    except TreeFileError as exc:
        raise PatchError(f"cannot write the series of {spec.name}: {exc}") from None
    names = [p.name for p in patches]
    written: list[str] = []
    unchanged: list[str] = []
    for patch in patches:
        (written if change.write(folder / patch.name, patch.data) else unchanged).append(
            patch.name)
    removed = [p.name for p in spec.patches if p.name not in names and change.remove(p)]
    text, where = update_list(spec, settings, names, change,
                              spec.path.read_text() if spec_text is None else spec_text)
    return SeriesUpdate(tuple(written), tuple(removed), tuple(unchanged), where), text


def update_list(spec: Spec, settings: Settings, names: Sequence[str], change: Change,
                text: str) -> tuple[str, str]:
    """The series list set to ``names``: in the spec text (returned, for the caller to write
    with its other edits) or in the quilt series file. Returns (spec text, file edited)."""
    file = f"specs/{spec.name}.yaml"
    series = settings.patches_dir / spec.name / "series"
    if not specedit.has_key(text, file, "patches") and series.is_file():
        change.write(series, _series_text(series.read_text(), names).encode())
        return text, f"patches/{spec.name}/series"
    return specedit.set_list(text, file, "patches", names), file


def next_name(existing: Sequence[str], slug: str, taken: Sequence[str] = ()) -> str:
    """``NNNN-<slug>.patch`` with NNNN one past the highest number in ``existing``."""
    numbers = [int(m.group(1)) for n in existing if (m := _NUMBER_RE.match(n))]
    number = max(numbers, default=0) + 1
    name = f"{number:04d}-{slug}.patch"
    while name in existing or name in taken:
        number += 1
        name = f"{number:04d}-{slug}.patch"
    return name


def _series_text(old: str, names: Sequence[str]) -> str:
    """A quilt series file listing ``names``, keeping its leading comment block."""
    header = []
    for line in old.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        header.append(line)
    return "".join(f"{h}\n" for h in header) + "".join(f"{n}\n" for n in names)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
