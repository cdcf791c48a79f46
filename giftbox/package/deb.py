"""The native .deb packager: a DEBIAN/ directory written by hand, then the archive: for xz,
giftbox's writer (giftbox.package.debwriter: data.tar.xz of blocks compressed once per
content), for zstd and gzip ``dpkg-deb --build``.

Reproducible (invariant 1): SOURCE_DATE_EPOCH (from the manifest) sets the ar member times and
clamps every tar mtime, ``--root-owner-group`` makes every entry root:root, dpkg-deb sorts the
tar members itself, the modes were normalised when staging, and compression runs with a fixed
thread floor (see ``Compression``). Nothing in control or the scripts names a build path.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giftbox import host
from giftbox.errors import PackageError
from giftbox.files import write_atomic
from giftbox.package import debwriter
from giftbox.package.common import (
    Compression,
    check_known,
    data_text,
    declared_depends,
    long_description,
    synopsis,
)
from giftbox.package.layout import Entry, Staged, scan_tree
from giftbox.package.lint import DigestCache
from giftbox.package.runner import Runner
from giftbox.package.scripts import deb_scripts
from giftbox.ui import NULL_REPORTER, Reporter

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc2822(epoch: int) -> str:
    """The changelog date, spelt without the locale (strftime's %a/%b follow it)."""
    t = time.gmtime(epoch)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def deb_filename(name: str, version: str, arch: str) -> str:
    return f"{name}_{version.split(':', 1)[-1]}_{arch}.deb"


def _gzip(text: str) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: the same bytes on every build
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    return buf.getvalue()


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _docs(staged: Staged, maintainer: str) -> None:
    m = staged.manifest
    doc = staged.root / "usr/share/doc" / staged.name
    licence = staged.license or "see each bundled distribution's metadata"
    _write(doc / "copyright",
           f"{staged.name}: OpenStack {staged.spec.name} in a virtualenv, built by giftbox.\n\n"
           f"Upstream: {m.upstream_url}\n"
           f"Copyright (c) the {staged.spec.name} authors, and the authors of each Python\n"
           "distribution bundled in the virtualenv.\n"
           f"License: {licence}\n\n"
           f"Packaging: Copyright (c) {time.gmtime(m.source_date_epoch).tm_year} the giftbox "
           "packagers (the year of the upstream commit).\n\n"
           "The virtualenv bundles third-party Python distributions; the licence of each is\n"
           f"in its metadata under {staged.prefix}/lib/python{staged.distro.python}/"
           "site-packages/*.dist-info/.\n")
    patches = f"{len(m.patches)} patch(es)" if m.patches else "no patches"
    changelog = (f"{staged.name} ({staged.version.deb}) {staged.distro.codename}; "
                 "urgency=medium\n\n"
                 f"  * Built by giftbox from {m.upstream_url} {m.upstream_ref}\n"
                 f"    ({m.upstream_commit or m.upstream_version}) with {patches}.\n\n"
                 f" -- {maintainer}  {rfc2822(m.source_date_epoch)}\n")
    _write(doc / "changelog.Debian.gz", _gzip(changelog))
    _write(staged.root / "usr/share/lintian/overrides" / staged.name,
           data_text("lintian-overrides"))
    # Every directory made here, up to the root (usr/, usr/share/ may be new too): 0755
    # whatever the umask, or two builds differ by the builder's umask.
    for top in (doc, staged.root / "usr/share/lintian/overrides"):
        for path in (top, *top.parents):
            if path == staged.root:
                break
            os.chmod(path, 0o755)


# --- verdicts of the target's tools, cached by the digest of what they read ----------------
#
# dpkg-shlibdeps and the archive check run in the target's builder (a container) on every
# package, though on a new patch neither their inputs nor their answer change: the ELF objects
# are the deps layer's, the declared packages the spec's. Each answer is kept under the digest
# of everything it is a function of: the target's state (``target_state``: its dpkg database
# and library search path, so the builder image's contents; its apt lists' Release files,
# which pin every index the archive check reads) and the inputs of the one call (every ELF
# object's path and sha256; the declared packages). Another image, another archive or one
# changed ELF object is another key: the tool runs again. Only passes are kept: a refusal
# runs (and refuses) again on every build.

VERDICT_RECIPE = "1"  # bump when a cached verdict's key or format changes
# What the target's tools read besides the package, as two digests: dpkg-shlibdeps' (the
# dpkg database, which pins every installed library, symbols and shlibs file, and the
# dynamic linker's search path), and apt-cache's (the names of the lists it has, and the
# Release files that hold the sha256 of each of them).
_TARGET_PROBE = (
    "cat /var/lib/dpkg/status /etc/ld.so.conf /etc/ld.so.conf.d/* /etc/dpkg/shlibs.default "
    "/etc/dpkg/shlibs.override 2>/dev/null | sha256sum; "
    "cd /var/lib/apt/lists 2>/dev/null && ls -1 | grep -q _Packages && "
    "{ ls -1; cat -- *Release; } | sha256sum")
_SHA_LINE_RE = re.compile(r"^([0-9a-f]{64})\s+-$")


@dataclass(frozen=True)
class TargetState:
    """The digests of what the target's tools read (see ``_TARGET_PROBE``); ``apt`` is None
    where the target has no package lists (the archive check is then never cached)."""

    dpkg: str
    apt: str | None


def target_state(runner: Runner, image: ImageState | None = None) -> TargetState | None:
    """The runner's TargetState, in one call; None when it cannot tell (nothing is cached).
    With ``image`` (the runner is a fresh container of that builder image, with its apt
    lists mounted from the host): the dpkg part is the image's, kept per image id once
    asked, and the apt part is read from the host's folder; the runner is not asked again."""
    if image is not None:
        dpkg = image.dpkg()
        if dpkg is None:
            probed = target_state(runner)
            if probed is None:
                return None
            dpkg = image.remember(probed.dpkg)
        return TargetState(dpkg, apt_lists_digest(image.apt_lists) if image.apt_lists else None)
    result = runner.run(["sh", "-c", _TARGET_PROBE])
    digests = [m.group(1) for m in map(_SHA_LINE_RE.match, result.output.splitlines()) if m]
    if not digests:
        return None
    return TargetState(digests[0], digests[1] if len(digests) > 1 else None)


def apt_lists_digest(folder: Path) -> str | None:
    """What the archive check reads of a folder of apt lists (``_TARGET_PROBE``'s apt part,
    read on the host): the names of its files and every Release file; None without any
    Packages list."""
    names = sorted(p.name for p in folder.iterdir())
    if not any("_Packages" in name for name in names):
        return None
    digest = hashlib.sha256("\n".join(names).encode() + b"\n")
    for name in names:
        if name.endswith("Release") and (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageState:
    """A builder image's dpkg digest (``_TARGET_PROBE``'s first part: its dpkg database, its
    linker's search path; fixed for an image id), kept in ``folder`` once probed; and the
    host folder mounted as its apt lists."""

    folder: Path
    image_id: str
    apt_lists: Path | None

    @property
    def _record(self) -> Path:
        return self.folder / f"{self.image_id.split(':')[-1][:32]}.json"

    def dpkg(self) -> str | None:
        try:
            record = json.loads(self._record.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("image") != self.image_id:
            return None
        digest = record.get("dpkg")
        return digest if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) \
            else None

    def remember(self, dpkg: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self._record, json.dumps({"image": self.image_id, "dpkg": dpkg}) + "\n")
        return dpkg


class VerdictStore:
    """Cached answers of the target's tools, one file per key under ``folder``: written by
    rename (never half a record), read defensively (a damaged record is a miss)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @staticmethod
    def key(**inputs: Any) -> str:
        return hashlib.sha256(json.dumps({"recipe": VERDICT_RECIPE, **inputs},
                                         sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> list[str] | None:
        """The answer kept under ``key``, or None (none, or not one this code wrote)."""
        if self.folder is None:
            return None
        try:
            record = json.loads((self.folder / f"{key[:32]}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        answer = record.get("answer")
        if not isinstance(answer, list) or not all(isinstance(a, str) for a in answer):
            return None
        return answer

    def put(self, key: str, answer: list[str]) -> None:
        if self.folder is None:
            return
        write_atomic(self.folder / f"{key[:32]}.json",
                     json.dumps({"key": key, "answer": answer}))


def shlib_depends(staged: Staged, runner: Runner, work: Path, *,
                  state: TargetState | None = None, store: VerdictStore | None = None,
                  digests: DigestCache | None = None,
                  reporter: Reporter = NULL_REPORTER) -> list[str]:
    """dpkg-shlibdeps over the venv's ELF objects, resolved on the runner (the target); its
    answer is taken from ``store`` when the target (``state``) and every ELF object's path
    and bytes are the ones it was given for (see the section comment).

    Libraries bundled by manylinux wheels (``*.libs/``) are analysed too (they may link system
    libraries, e.g. libz), but a reference *to* one resolves, through the ``$ORIGIN`` RPATH
    auditwheel sets, to the copy inside this package, which adds no dependency."""
    if not staged.elf_files and not staged.bundled_paths:
        return []
    elf = staged.elf_files + staged.bundled_paths
    key = ""
    if state is not None and store is not None:
        digests = digests or DigestCache(None)
        objects = [[f, digests.digests(staged.path(f))[0]] for f in elf]
        key = store.key(tool="dpkg-shlibdeps", target=state.dpkg, package=staged.name,
                        objects=objects)
        known = store.get(key)
        if known is not None:
            reporter.detail(f"shlibdeps: verdict cached for {len(elf)} ELF objects "
                            f"(target {state.dpkg[:16]})")
            return known
    depends = _run_shlibdeps(staged, runner, work, elf)
    if key and store is not None:
        store.put(key, depends)
    return depends


def _run_shlibdeps(staged: Staged, runner: Runner, work: Path, elf: list[str]) -> list[str]:
    tree = work / "shlibs"
    pkg = tree / "debian" / staged.name
    (pkg / "DEBIAN").mkdir(parents=True)
    (tree / "debian" / "control").write_text(
        f"Source: {staged.name}\n\nPackage: {staged.name}\nArchitecture: any\n")
    for src in (staged.path(f) for f in elf):
        dst = pkg / src.relative_to(staged.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)  # same file system: no copy
        except OSError:
            shutil.copy2(src, dst)
    with runner.share(tree) as where:
        argv = ["dpkg-shlibdeps", "-O", f"-T{where}/debian/substvars"]
        argv += [f"-e{where}/debian/{staged.name}{f}" for f in elf]
        result = runner.run(argv, cwd=where)
    if result.returncode != 0:
        raise PackageError(f"dpkg-shlibdeps failed on the {runner.where}:\n"
                           + (result.errors or result.output).strip()[-3000:],
                           hint="a library an extension links is not known to the target's "
                                "dpkg; install its package in the builder")
    for line in result.output.splitlines():
        if line.startswith("shlibs:Depends="):
            value = line.split("=", 1)[1].strip()
            return [d.strip() for d in value.split(",") if d.strip()]
    return []


def checked_depends(staged: Staged, runner: Runner, check_deps: bool, *,
                    state: TargetState | None = None, store: VerdictStore | None = None,
                    reporter: Reporter = NULL_REPORTER) -> list[str]:
    """``declared_depends``, its archive check (``check_known``) passed for these packages
    against these apt lists taken from ``store`` (see the section comment)."""
    declared = declared_depends(staged, runner, check_deps=False)
    if not check_deps:
        return declared
    key = ""
    if state is not None and state.apt is not None and store is not None:
        key = store.key(tool="apt-cache", target=state.dpkg, lists=state.apt,
                        family=staged.family, declared=declared)
        if store.get(key) == declared:
            reporter.detail(f"dependency check: verdict cached for {len(declared)} packages "
                            f"(apt lists {state.apt[:16]})")
            return declared
    check_known(runner, declared, staged)
    if key and store is not None:
        store.put(key, declared)
    return declared


def _installed_size(tree: list[Entry]) -> int:
    """In KiB, as dpkg-gencontrol counts it (files rounded up, 1 per directory or link),
    without the root directory and DEBIAN/; ``tree`` is the package's ``scan_tree``."""
    total = 0
    for rel, st in tree:
        if rel == "DEBIAN" or rel.startswith("DEBIAN/"):
            continue
        total += -(-st.st_size // 1024) if stat.S_ISREG(st.st_mode) else 1
    return total


def _md5sums(staged: Staged, tree: list[Entry], digests: DigestCache | None = None) -> str:
    """DEBIAN/md5sums: every regular file but the conffiles, in ``scan_tree``'s order."""
    conffiles = {c.path for c in staged.conffiles}
    top = str(staged.root)
    digests = digests or DigestCache(None)
    lines = []
    for rel, st in tree:
        if rel.startswith("DEBIAN/") or not stat.S_ISREG(st.st_mode):
            continue
        if "/" + rel in conffiles:
            continue  # dpkg records conffile hashes itself
        lines.append(f"{digests.digests_at(f'{top}/{rel}', st)[1]}  {rel}\n")
    return "".join(lines)


_DPKG_DEB_NEEDS = "to build .deb packages"


def dpkg_deb_build(root: Path, out: Path, compression: Compression, epoch: int) -> None:
    """``dpkg-deb --build`` with giftbox's options (root:root, the compression, the clamp)."""
    argv = ["dpkg-deb", "--root-owner-group", f"-Z{compression.kind}", f"-z{compression.level}",
            f"--threads-max={compression.threads}", "--build", str(root), str(out)]
    proc = host.run(argv, error=PackageError, needed_for=_DPKG_DEB_NEEDS,
                    extra_env={"SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC",
                               "LC_ALL": "C.UTF-8"})
    code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    if code != 0:
        raise PackageError(f"dpkg-deb failed to build {out.name}:\n{(stderr or stdout).strip()}")


def build_deb(staged: Staged, out_dir: Path, work: Path, *, compression: Compression,
              runner: Runner, maintainer: str, check_deps: bool,
              digests: DigestCache | None = None, cache_dir: Path | None = None,
              reporter: Reporter = NULL_REPORTER,
              before_archive: Callable[[Path], None] | None = None,
              image: ImageState | None = None) -> tuple[Path, list[str]]:
    """Build the .deb into ``out_dir``; return its path and its Depends. ``digests`` spares
    reading again the files whose md5 an earlier package computed (see DigestCache);
    ``cache_dir`` keeps the verdicts of dpkg-shlibdeps and of the archive check (see
    ``VerdictStore``): without it both tools run. ``before_archive(path)`` is called once
    the staged tree is complete (DEBIAN/ written), just before dpkg-deb archives it to
    ``path``: the staged tree is not changed after. ``image``: the runner's builder image
    (see ``target_state``)."""
    host.find("dpkg-deb", PackageError, _DPKG_DEB_NEEDS)
    _docs(staged, maintainer)
    staged.tree = scan_tree(staged.root)  # the package's files: DEBIAN/ is made below
    debian = staged.root / "DEBIAN"
    debian.mkdir(mode=0o755)
    os.chmod(debian, 0o755)
    state = target_state(runner, image) if cache_dir is not None else None
    store = VerdictStore(cache_dir / "verdicts" if cache_dir is not None else None)
    declared = checked_depends(staged, runner, check_deps, state=state, store=store,
                               reporter=reporter)
    shlibs = shlib_depends(staged, runner, work, state=state, store=store, digests=digests,
                           reporter=reporter)
    depends = list(dict.fromkeys(declared + shlibs))

    for name, text in deb_scripts(staged).items():
        _write(debian / name, text, 0o755)
    if staged.conffiles:
        _write(debian / "conffiles", "".join(f"{c.path}\n" for c in staged.conffiles))
    _write(debian / "md5sums", _md5sums(staged, staged.tree, digests))
    m = staged.manifest
    fields = [
        ("Package", staged.name),
        ("Version", staged.version.deb),
        ("Architecture", staged.arch.deb),
        ("Maintainer", maintainer),
        ("Installed-Size", str(_installed_size(staged.tree))),
        ("Depends", ", ".join(depends)),
        ("Section", "net"),
        ("Priority", "optional"),
    ]
    if m.upstream_url.startswith(("https://", "http://")):
        fields.append(("Homepage", m.upstream_url))
    long = [f" {line}" if line else " ." for line in long_description(staged)]
    control = "".join(f"{k}: {v}\n" for k, v in fields if v)
    control += f"Description: {synopsis(staged)}\n" + "\n".join(long) + "\n"
    _write(debian / "control", control)

    out = out_dir / deb_filename(staged.name, staged.version.deb, staged.arch.deb)
    if before_archive is not None:
        before_archive(out)
    if compression.kind == "xz":
        _write_xz_deb(staged, out, compression, digests or DigestCache(None), cache_dir,
                      reporter)
    else:
        dpkg_deb_build(staged.root, out, compression, m.source_date_epoch)
    return out, depends


def _write_xz_deb(staged: Staged, out: Path, compression: Compression, digests: DigestCache,
                  cache_dir: Path | None, reporter: Reporter) -> None:
    """The .deb with data.tar.xz put together from blocks compressed once per content
    (giftbox.package.debwriter), the ones this tree changed compressed now."""
    store = debwriter.BlockStore(cache_dir / "xz-blocks" if cache_dir is not None else None)
    epoch = staged.manifest.source_date_epoch

    def progress(done: int, todo: int) -> None:  # a cold tree's 500 blocks take a while
        if todo >= 40 and done * 4 // todo != (done - 1) * 4 // todo:
            reporter.detail(f"data.tar.xz: {done} of {todo} blocks compressed")

    assert staged.tree is not None  # build_deb scanned it
    blocks, made = debwriter.data_blocks(
        staged.root, staged.tree, epoch, compression.level, digests=digests, store=store,
        threads=compression.threads, progress=progress)
    reporter.detail(f"data.tar.xz: {len(blocks) - 1} blocks, {made} compressed now, "
                    f"{len(blocks) - 1 - made} cached by content")
    control = debwriter.control_tar(staged.root / "DEBIAN", epoch)
    debwriter.write_deb(out, control, blocks, epoch)
    store.prune(time.time())


# --- the target's package lists, for the dependency check ---------------------------------

# How long a builder's package lists stay fresh: long enough that the cells of one nightly
# share one `apt-get update` per distro and arch, short enough that the dependency check
# always answers for the archive as it is today.
APT_LISTS_MAX_AGE = 3600.0
APT_LISTS_TARGET = "/var/lib/apt/lists"
_STAMP = "giftbox-updated"


def apt_lists_dir(cache_dir: Path, distro: str, arch: str, image_id: str) -> Path:
    """Where the package lists of one builder image live on the host (mounted at
    /var/lib/apt/lists in the packaging container: the image itself keeps none)."""
    folder = cache_dir / "apt-lists" / f"{distro}-{arch}-{image_id.split(':')[-1][:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def refresh_apt_lists(c: Any, folder: Path, reporter: Reporter, label: str,
                      max_age: float = APT_LISTS_MAX_AGE, now: float | None = None) -> bool:
    """`apt-get update` in the container ``c`` (which mounts ``folder`` at /var/lib/apt/lists)
    unless the lists there are younger than ``max_age`` seconds; True when it ran."""
    now = time.time() if now is None else now
    # Targets packaged at once (build --jobs, nightly) share the folder: one updates while
    # the others wait, then find the lists fresh (apt's own lock would fail them instead).
    # Beside the folder, not in it: apt-get update deletes files it does not know there.
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        age = apt_lists_age(folder, now)
        if age is not None and age < max_age:
            reporter.info(f"==> apt lists of the {label} builder: fresh ({int(age)} s old)")
            return False
        with reporter.stage(f"apt-get update in the {label} builder"):
            c.call(["apt-get", "update", "-qq"], stream=False)
        mark_apt_lists(folder, now)
    return True


def apt_lists_age(folder: Path, now: float) -> float | None:
    """Seconds since the lists in ``folder`` were last updated (None: never)."""
    stamp = folder / _STAMP
    return now - stamp.stat().st_mtime if stamp.is_file() else None


def mark_apt_lists(folder: Path, when: float) -> None:
    stamp = folder / _STAMP
    stamp.write_text("")
    os.utime(stamp, (when, when))
