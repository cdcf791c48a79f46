"""Quality gates: lintian on every .deb, rpmlint on every .rpm.

Errors fail the build with the tags shown. Tags we accept on purpose are overridden in the repo
with the reason beside each: ``giftbox/data/lintian-overrides`` (shipped in the package as
/usr/share/lintian/overrides/<package>, where lintian reads it) and ``giftbox/data/rpmlintrc``
(passed to rpmlint with ``-r``). Warnings that remain are returned and shown, not fatal.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import locale
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from giftbox import host
from giftbox.errors import GiftboxError, PackageError
from giftbox.files import InodeRecords, write_atomic
from giftbox.package.common import data_text
from giftbox.package.layout import Entry, scan_tree
from giftbox.ui import Reporter


def _linter(name: str, *args: str,
            extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the linter ``name`` over ``args``: its exit code, stdout and stderr."""
    proc = host.run([name, *args], error=PackageError,
                    needed_for="to lint packages: every package must pass it",
                    extra_env=extra_env)
    return proc.returncode, proc.stdout, proc.stderr


def _verdict(linter: str, package: Path, lines: list[str], errors: list[str], ok: bool,
             stderr: str, stdout: str, overrides: str, reporter: Reporter) -> tuple[str, ...]:
    """Refuse the package on any error tag (or a linter failure); show and return warnings."""
    if errors or not ok:
        detail = "\n".join(errors) or (stderr.strip() or stdout.strip())
        raise PackageError(f"{linter} rejected {package.name}:\n{detail}",
                           hint=f"fix the package, or accept the tag in {overrides} with the "
                                "reason beside it")
    for line in lines:
        reporter.detail(line)
    return tuple(lines)


def lintian(deb: Path, reporter: Reporter) -> tuple[str, ...]:
    """Run lintian; raise on E: tags, return the W: lines."""
    # --allow-root: packaging runs as root in builders and CI; lintian only reads the file.
    code, out, err = _linter("lintian", "--allow-root", "--tag-display-limit", "0",
                             "--fail-on", "error", str(deb))
    lines = [line for line in out.splitlines() if line[:2] in ("E:", "W:")]
    errors = [line for line in lines if line.startswith("E:")]
    return _verdict("lintian", deb, lines, errors, code in (0, 1), err, out,
                    "giftbox/data/lintian-overrides", reporter)


def rpmlint(rpm: Path, reporter: Reporter) -> tuple[str, ...]:
    """Run rpmlint with our rpmlintrc; raise on E: lines, return the W: lines."""
    host.find("rpmlint", PackageError, "to lint packages: every package must pass it")
    with tempfile.TemporaryDirectory(prefix="giftbox-rpmlint-") as tmp:
        rc = Path(tmp) / "rpmlintrc"
        rc.write_text(data_text("rpmlintrc"))
        # HOME points at an empty dir so a user's ~/.config/rpmlint cannot change the verdict.
        code, out, err = _linter("rpmlint", "-r", str(rc), str(rpm), extra_env={"HOME": tmp})
    lines = [line for line in out.splitlines() if ": E: " in line or ": W: " in line]
    errors = [line for line in lines if ": E: " in line]
    return _verdict("rpmlint", rpm, lines, errors, code == 0, err, out,
                    "giftbox/data/rpmlintrc", reporter)


# --- lintian started ahead ----------------------------------------------------------------
#
# Every run of lintian compiles perl for about a second (its modules, the code of every check
# its profile knows) and reads its profile's 1,500 tag descriptions before it reads the
# package; on a warm build that is most of the lint's time, and the lint is the end of the
# build's critical path. A fresh build starts one lintian ahead as it starts (beside the
# link, the checkout and the wheel); the lint of its package takes it (data/lintian-ahead.pl:
# the same lintian program, run in the interpreter that compiled it and loaded the profile,
# with the same arguments and environment; exec'ed afresh if the loading failed in any way).


class LintianAhead:
    """A lintian process that has compiled itself and waits for its command line."""

    _waiting: list[LintianAhead] = []  # started in this process, not taken yet
    _lock = threading.Lock()
    WAITING_AT_MOST = 4  # nightly's builds are threads: one each, at most this many idle

    def __init__(self, proc: subprocess.Popen[bytes], program: str,
                 environment: dict[str, str]) -> None:
        self.proc, self.program, self.environment = proc, program, environment

    @classmethod
    def start(cls) -> None:
        """Start one for the next lint of this process (no lintian or perl: none)."""
        where = host.which("lintian")
        if where is None or host.which("perl") is None:
            return  # the lint itself says what is missing
        program = os.path.realpath(where)
        script = (resources.files("giftbox") / "data" / "lintian-ahead.pl").read_text()
        with cls._lock:
            if len(cls._waiting) >= cls.WAITING_AT_MOST:
                return
            try:
                proc = host.popen(["perl", "-e", script, "--", program], error=PackageError,
                                  needed_for="to start lintian ahead",
                                  stdin=subprocess.PIPE)
            except (OSError, GiftboxError):
                return  # the lint runs lintian itself
            cls._waiting.append(cls(proc, program, dict(os.environ)))

    @classmethod
    def waiting(cls) -> int:
        with cls._lock:
            return len(cls._waiting)

    @classmethod
    def take(cls) -> LintianAhead | None:
        """One started ahead, still waiting, of the lintian on PATH now and in the
        environment this process has now (the one lintian started now would get); or None."""
        where = host.which("lintian")
        program = os.path.realpath(where) if where is not None else None
        environment = dict(os.environ)
        found, stale = None, []
        with cls._lock:
            while cls._waiting and found is None:
                ahead = cls._waiting.pop()
                if ahead.proc.poll() is None and ahead.program == program \
                        and ahead.environment == environment:
                    found = ahead
                else:
                    stale.append(ahead)
        for ahead in stale:  # ended outside the lock: another build's take does not wait
            ahead.close()
        return found

    def run(self, args: Sequence[str]) -> tuple[int, str, str]:
        """lintian's exit code, stdout and stderr for ``args`` (as _linter gives them)."""
        if any("\0" in a for a in args):
            raise ValueError("a lintian argument holds a NUL byte")
        out, err = self.proc.communicate("\0".join(args).encode())
        encoding = locale.getpreferredencoding(False)
        return (self.proc.returncode, out.decode(encoding, errors="replace"),
                err.decode(encoding, errors="replace"))

    def close(self) -> None:
        """End it unused: end of input, which it answers by exiting having run nothing."""
        try:
            self.proc.communicate(b"", timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            left, cls._waiting = cls._waiting, []
        for ahead in left:
            ahead.close()


atexit.register(LintianAhead.close_all)


def _lintian_run(args: Sequence[str]) -> tuple[int, str, str]:
    """lintian over ``args``: in one started ahead when there is one, else started now."""
    ahead = LintianAhead.take()
    return ahead.run(args) if ahead is not None else _linter("lintian", *args)


# --- lintian with per-file verdicts cached by content digest ------------------------------
#
# lintian reads every file of a package: 20,000 dependency files cost it minutes, on every
# build, although a new patch changes a handful of the project's files. Its per-file tags
# (a script's interpreter, an ELF object's links, a gzip's timestamp, a file's mode) are a
# function of the file's path, mode and bytes and of the package's control fields, so they
# are cached under exactly that. Each build lints a *unit*: a .deb built with the same
# dpkg-deb options from the real package's control, maintainer scripts, conffiles and
# documentation, every file outside the venv prefix, every symlink and what it points to,
# and every venv file whose verdict is not cached yet (all of them the first time, the
# changed files after). The unit's package-level tags, and its per-file tags, count as the
# package's; a cached per-file tag counts as if lintian had just printed it. A package that
# has any E: tag is refused either way.

LINT_RECIPE = "1"  # bump when the unit's make-up or the cache's format changes
# lintian's options: part of the verdict's key.
_LINTIAN_ARGS = ("--allow-root", "--tag-display-limit", "0", "--fail-on", "error")
# Control fields that vary with every build and that no per-file check reads.
_PER_BUILD_FIELDS = ("Version", "Installed-Size", "Description")
_POINTER_RE = re.compile(r"\[([^\]]+)\]$")


@functools.cache
def lintian_version(cache_dir: Path | None = None) -> str:
    """``lintian --version`` (0.7 s of perl starting up), remembered in ``cache_dir`` under
    the identity of the lintian program it ran: its resolved path, inode, size, mtime and
    ctime. Upgrading lintian replaces that file (a new inode and ctime), so the answer is
    asked again; a damaged record is asked again too."""
    where = host.which("lintian")
    record = cache_dir / "lintian-version.record" if cache_dir is not None else None
    identity: list[object] | None = None
    if where is not None and record is not None:
        real = os.path.realpath(where)
        try:
            st = os.stat(real)
            identity = [real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            data = json.loads(record.read_text())
            if isinstance(data, dict) and data.get("program") == identity \
                    and isinstance(data.get("version"), str) and data["version"]:
                return str(data["version"])
        except (OSError, ValueError):
            pass
    code, out, _err = _linter("lintian", "--version")
    version = out.strip() if code == 0 else "unknown"
    if identity is not None and record is not None and code == 0:
        write_atomic(record, json.dumps({"program": identity, "version": version}) + "\n")
    return version


class DigestCache(InodeRecords):
    """sha256 and md5 of files, remembered per inode (see InodeRecords). A package asks for
    each of its 20,000 files three times (md5sums, the data blocks' keys, lintian's unit):
    what this run has answered for an inode (``use``, once checked) is answered again."""

    def digests(self, path: Path) -> tuple[str, str]:
        """(sha256, md5) of the regular file at ``path``."""
        return self.digests_at(str(path), os.lstat(path))

    def digests_at(self, path: str, st: os.stat_result) -> tuple[str, str]:
        """(sha256, md5) of the regular file at ``path``, whose lstat the caller has."""
        ident = self.ident(st)
        answered = self._used.get(ident)
        if answered is not None:  # checked or computed when this run first asked
            return answered[0], answered[1]
        found = self.known(ident)
        if not (isinstance(found, list) and len(found) == 2
                and all(isinstance(d, str) for d in found)):
            sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(block)
                    md5.update(block)
            found = [sha.hexdigest(), md5.hexdigest()]
        self.use(ident, found)
        return found[0], found[1]


def _control_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and name:
            fields[name] += "\n" + line
        elif ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def lint_context(control: str, overrides: str, cache_dir: Path | None = None) -> str:
    """The digest of everything besides a file itself that its per-file tags depend on."""
    fields = {k: v for k, v in _control_fields(control).items() if k not in _PER_BUILD_FIELDS}
    return hashlib.sha256(json.dumps({
        "recipe": LINT_RECIPE, "lintian": lintian_version(cache_dir),
        "args": list(_LINTIAN_ARGS),
        "control": fields, "overrides": overrides}, sort_keys=True).encode()).hexdigest()


def file_key(context: str, rel: str, mode: int, sha256: str) -> str:
    return hashlib.sha256(f"{context}\0{rel}\0{mode:o}\0{sha256}".encode()).hexdigest()


def _pointer(line: str) -> str | None:
    match = _POINTER_RE.search(line)
    if not match:
        return None
    return re.sub(r":\d+$", "", match.group(1).split(" ", 1)[0])


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_unit(root: Path, prefix: str, verdicts: dict[str, list[str]], context: str,
              digests: DigestCache, unit_root: Path,
              tree: list[Entry] | None = None) -> tuple[dict[str, str],
                                                        dict[str, list[str]], int]:
    """Lay out under ``unit_root`` what must be linted now (see the section comment); return
    the cacheable files it carries (rel -> key), the cached verdicts of those it leaves out,
    and the package's file count. ``root`` is the staged package tree with its DEBIAN/;
    ``tree`` its ``scan_tree`` when the packager has it (DEBIAN/ in it or not)."""
    venv_rel = prefix.strip("/") + "/"
    top = str(root)
    linted: dict[str, str] = {}
    cached: dict[str, list[str]] = {}
    keep: set[str] = set()  # rel paths (files, links, empty dirs) the unit carries
    kinds: dict[str, int] = {}  # rel -> its stat.S_IFMT, for every path the unit may carry
    link_targets: list[str] = []
    files = 0
    entries = [e for e in (scan_tree(root) if tree is None else tree)
               if e.rel != "DEBIAN" and not e.rel.startswith("DEBIAN/")]
    for i, (rel, st) in enumerate(entries):
        kind = stat.S_IFMT(st.st_mode)
        kinds[rel] = kind
        if kind == stat.S_IFDIR:
            following = entries[i + 1].rel if i + 1 < len(entries) else ""
            if not following.startswith(rel + "/"):
                keep.add(rel)  # an empty directory of the package
            continue
        if kind == stat.S_IFLNK:
            keep.add(rel)
            target = os.readlink(f"{top}/{rel}")
            rel_dir = os.path.dirname(rel)
            resolved = os.path.normpath(target.lstrip("/") if target.startswith("/")
                                        else os.path.join(rel_dir, target))
            link_targets.append(resolved)
            continue
        files += 1
        if not rel.startswith(venv_rel):
            keep.add(rel)  # control-adjacent files: always linted
            continue
        sha, _md5 = digests.digests_at(f"{top}/{rel}", st)
        key = file_key(context, rel, stat.S_IMODE(st.st_mode), sha)
        if key in verdicts:
            cached[rel] = verdicts[key]
        else:
            linted[rel] = key
            keep.add(rel)
    for target in link_targets:  # what links point at, when the package has it
        if target in cached and (root / target).is_file():
            linted[target] = file_key(context, target, stat.S_IMODE((root / target).lstat()
                                                                     .st_mode),
                                      digests.digests(root / target)[0])
            cached.pop(target)
            keep.add(target)
    unit_root.mkdir(parents=True)
    for rel in sorted(keep):
        src, dst = root / rel, unit_root / rel
        if kinds[rel] == stat.S_IFLNK:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(os.readlink(src))
        elif kinds[rel] == stat.S_IFDIR:
            dst.mkdir(parents=True, exist_ok=True)
        else:
            _link_or_copy(src, dst)
    (unit_root / "DEBIAN").mkdir()
    for entry in sorted((root / "DEBIAN").iterdir()):
        dst = unit_root / "DEBIAN" / entry.name
        if entry.name == "md5sums":
            lines = [line for line in entry.read_text().splitlines(keepends=True)
                     if line.split("  ", 1)[-1].rstrip("\n") in keep]
            dst.write_text("".join(lines))
        else:
            shutil.copyfile(entry, dst)
        os.chmod(dst, stat.S_IMODE(entry.stat().st_mode))
    for dirpath, _dirs, _files in os.walk(unit_root):
        os.chmod(dirpath, 0o755)  # as staged: every directory of a package is 0755
    return linted, cached, files


def lintian_cached(deb: Path, root: Path, prefix: str, cache_dir: Path, work: Path,
                   build_unit: Callable[[Path, Path], None], reporter: Reporter,
                   digests: DigestCache | None = None,
                   tree: list[Entry] | None = None) -> tuple[str, ...]:
    """lintian's verdict on ``deb`` (built from the staged tree ``root``), linting only what
    has no cached verdict; ``build_unit(tree, out)`` builds a .deb the way ``deb`` was.
    ``tree`` is ``scan_tree(root)`` as the packager left it, when it has one."""
    digests = digests or DigestCache(None)
    control = (root / "DEBIAN" / "control").read_text()
    package = _control_fields(control).get("Package", "")
    overrides_path = root / "usr/share/lintian/overrides" / package
    overrides = overrides_path.read_text() if overrides_path.is_file() else ""
    context = lint_context(control, overrides, cache_dir)
    store = cache_dir / f"{context[:32]}.json"
    verdicts: dict[str, list[str]] = {}
    if store.is_file():
        try:
            verdicts = json.loads(store.read_text())
        except (OSError, ValueError):
            verdicts = {}
    unit_root = work / "lint-unit"
    shutil.rmtree(unit_root, ignore_errors=True)
    linted, cached, files = make_unit(root, prefix, verdicts, context, digests, unit_root,
                                      tree)
    unit = work / deb.name
    unit.unlink(missing_ok=True)
    build_unit(unit_root, unit)
    reporter.detail(f"linting {len(linted)} of {files} files with lintian "
                    f"({len(cached)} have verdicts cached by content digest)")
    code, out, err = _lintian_run([*_LINTIAN_ARGS, str(unit)])
    fresh = [line for line in out.splitlines() if line[:2] in ("E:", "W:")]
    old = [line for rel in sorted(cached) for line in cached[rel]]
    lines = fresh + old
    errors = [line for line in lines if line.startswith("E:")]
    verdict = _verdict("lintian", deb, lines, errors, code in (0, 1), err, out,
                       "giftbox/data/lintian-overrides", reporter)
    by_file: dict[str, list[str]] = {rel: [] for rel in linted}
    for line in fresh:
        pointer = _pointer(line)
        if pointer in by_file:
            by_file[pointer].append(line)
    for rel, key in linted.items():
        verdicts[key] = by_file[rel]
    write_atomic(store, json.dumps(verdicts, separators=(",", ":")))
    digests.save()
    shutil.rmtree(unit_root, ignore_errors=True)
    unit.unlink(missing_ok=True)
    return verdict
