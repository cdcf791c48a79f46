"""What a package installs, where, and the staged tree every packager builds from.

The layout is a function of the spec (and, for versioned paths, the version), so it can be
computed before anything is built: the build stage asks ``install_prefix`` where to build the
venv, and ``check_conflicts`` compares what two specs would install without building either.

Where things go (for project P, prefix X, install prefix I, stable prefix S):

* the venv at I: X itself, or ``X/<upstream>-<revision>`` with ``versioned_paths``; S is X, or
  ``X/current`` (a symlink shipped in the package, so dpkg/rpm flip it atomically on upgrade
  while the previous version's files are still on disk);
* the manifest at ``I/giftbox-manifest.json`` (beside the venv rather than in /usr/share/doc,
  which minimal images and containers drop via dpkg path-exclude);
* ``/usr/bin/<entry point>`` symlinks to ``S/bin/<entry point>``;
* units in /lib/systemd/system (deb) or /usr/lib/systemd/system (rpm);
* config files at their spec path (conffiles / ``%config(noreplace)``);
* rootwrap: ``rootwrap.conf`` at the spec's ``config`` (a conffile), ``filters_path`` a symlink
  to ``S/share/P/rootwrap.d`` (the filters are code, tied to the venv's version: the build stage
  copies ``<source>/etc/P/rootwrap.d`` there) and ``/etc/sudoers.d/<P>`` (0440).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from giftbox.distros import Arch, Distro, elf_machine
from giftbox.errors import PackageError
from giftbox.family import NAMES, Family, get_family
from giftbox.files import InodeRecords
from giftbox.manifest import Manifest
from giftbox.spec import ALLOWED_PREFIX_ROOTS, Spec, path_problem, system_dir
from giftbox.versions import PackageVersion

MANIFEST_NAME = "giftbox-manifest.json"
SUDOERS_DIR = "/etc/sudoers.d"
_VERSION_DIR_RE = re.compile(r"[^A-Za-z0-9.+_-]")


# --- paths known from the spec alone ------------------------------------------------------


def version_dir(version: PackageVersion | str) -> str:
    """The directory name of one version under a versioned prefix: ``<upstream>-<revision>``.

    The distro tag is left out (one host runs one distro) and the revision is kept, so two
    builds of one upstream version with different patches never share a directory."""
    text = f"{version.upstream}-{version.revision}" if isinstance(version, PackageVersion) \
        else version
    name = _VERSION_DIR_RE.sub("_", text)
    if not name or name in {".", ".."} or name.startswith("-"):
        raise PackageError(f"'{text}' cannot name a version directory")
    return name


def install_prefix(spec: Spec, version: PackageVersion | str) -> str:
    """Where the venv must be built and installed: the spec's prefix, or with
    ``versioned_paths`` the prefix plus ``version_dir(version)``. The build stage builds the
    venv at exactly this path (a venv does not survive being moved to another one)."""
    prefix = spec.package.prefix
    if spec.package.versioned_paths:
        return f"{prefix}/{version_dir(version)}"
    return prefix


def stable_prefix(spec: Spec) -> str:
    """The path that always names the installed version: what links and units point at."""
    prefix = spec.package.prefix
    return f"{prefix}/current" if spec.package.versioned_paths else prefix


def sudoers_path(spec: Spec) -> str:
    # sudo skips files in sudoers.d whose name contains '.' or ends in '~'
    return f"{SUDOERS_DIR}/{spec.name.replace('.', '_')}"


def rootwrap_share(project: str) -> str:
    """Where, relative to the venv, the build stage puts the project's rootwrap filters."""
    return f"share/{project}/rootwrap.d"


def entry_points(spec: Spec) -> tuple[str, ...]:
    names = list(spec.package.entry_points)
    rootwrap = spec.package.rootwrap
    if rootwrap and rootwrap.command not in names:
        names.append(rootwrap.command)  # sudoers names /usr/bin/<command>: it must exist
    return tuple(names)


def planned_paths(spec: Spec, family: str) -> dict[str, str]:
    """Every file and symlink the package of ``spec`` installs outside its prefix, plus the
    prefix itself (a tree), each with what it is: for conflict checks."""
    fam = get_family(family)
    paths = {spec.package.prefix: "the venv prefix"}
    for entry in entry_points(spec):
        paths[f"/usr/bin/{entry}"] = f"entry point {entry}"
    for unit in spec.package.units:
        paths[f"{fam.systemd_dir}/{unit.name}"] = f"unit {unit.name}"
    for conf in spec.package.config_files:
        paths[conf.path] = "config file"
    rootwrap = spec.package.rootwrap
    if rootwrap:
        paths[rootwrap.config] = "rootwrap config"
        paths[rootwrap.filters_path] = "rootwrap filters"
        paths[sudoers_path(spec)] = "sudoers rule"
    paths.update(fam.own_paths(spec.package.name))
    return paths


def _spec_file(spec: Spec) -> str:
    return f"specs/{spec.path.name}"


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def check_conflicts(specs: Sequence[Spec], family: str | None = None) -> None:
    """Refuse specs whose packages would install the same path (or share a package name, or
    put a file inside another's venv prefix); every clash names both spec files and the path."""
    problems: list[str] = []
    for a, b in combinations(specs, 2):
        if a.package.name == b.package.name:
            problems.append(f"{_spec_file(a)} and {_spec_file(b)} both build package "
                            f"'{a.package.name}'")
    for fam in (family,) if family else NAMES:
        planned = [(spec, planned_paths(spec, fam)) for spec in specs]
        for (a, paths_a), (b, paths_b) in combinations(planned, 2):
            for path_a, what_a in paths_a.items():
                for path_b, what_b in paths_b.items():
                    # a prefix is a whole tree; any other path is one file or link
                    tree_a = path_a == a.package.prefix
                    tree_b = path_b == b.package.prefix
                    if path_a == path_b or (tree_a and _nested(path_a, path_b)) or \
                            (tree_b and _nested(path_b, path_a)):
                        path = max(path_a, path_b, key=len)
                        problems.append(f"{_spec_file(a)} ({what_a}) and {_spec_file(b)} "
                                        f"({what_b}) would both install {path} [{fam}]")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise PackageError("packages would conflict:\n  " + "\n  ".join(unique),
                           hint="give each spec its own package.name, prefix, entry points, "
                                "units and config paths")


# --- the staged tree ----------------------------------------------------------------------


@dataclass(frozen=True)
class Conffile:
    path: str  # absolute on the target
    mode: int
    group: str | None  # the service group that must read it, else root


@dataclass
class Staged:
    """The package's file tree under ``root`` and the facts the packagers need about it."""

    root: Path
    spec: Spec
    manifest: Manifest
    distro: Distro
    arch: Arch
    family: str
    version: PackageVersion
    prefix: str  # where the venv is installed
    stable: str  # what links point at
    conffiles: list[Conffile] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # unit file names
    elf_files: list[str] = field(default_factory=list)  # absolute target paths, not bundled
    bundled_libs: list[str] = field(default_factory=list)  # file names in *.libs/ dirs
    bundled_paths: list[str] = field(default_factory=list)  # their absolute target paths
    interpreter_links: list[str] = field(default_factory=list)  # absolute targets outside
    owned_dirs: list[str] = field(default_factory=list)  # parents between root dir and prefix
    summary: str = ""
    license: str = ""
    # scan_tree(root) as the packager found it before adding its control files (the native
    # deb's): what its md5sums, Installed-Size and lintian's unit are read from
    tree: list[Entry] | None = None
    prestaged: bool = False  # the deps layer's part was staged ahead (``prestage``)

    @property
    def name(self) -> str:
        return self.spec.package.name

    @property
    def family_obj(self) -> Family:
        return get_family(self.family)

    def path(self, target: str) -> Path:
        """The staged location of an absolute target path; no '..' leads out of the tree."""
        parts = PurePosixPath(target).parts
        if not target.startswith("/") or ".." in parts or "\x00" in target:
            raise PackageError(f"target path '{target}' is not a plain absolute path",
                               hint=f"fix the spec field it comes from ({_spec_file(self.spec)})")
        return self.root / target.lstrip("/")


_SHARED_LIB_RE = re.compile(r"\.so(\.[0-9.]+)?$")


def _wanted_mode(name: str, mode: int) -> int:
    """rw-r--r-- or rwxr-xr-x for every file: the build host's umask and whatever pip did
    must not reach the package (invariant 1), and group/world-writable files in a venv root
    runs would be a hole. Shared objects lose the x bit wheels give them: dlopen does not
    need it (and Debian policy wants it off)."""
    return 0o755 if mode & 0o111 and not _SHARED_LIB_RE.search(name) else 0o644


def _normalise_modes(top: Path) -> None:
    """Every file under ``top`` in its ``_wanted_mode``, every directory 0755, in place (the
    deps layer's, once: see giftbox.layer.package_modes). A hard-linked file is given an
    inode of its own first: a chmod must never reach a file it shares."""
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            wanted = _wanted_mode(name, st.st_mode)
            if stat.S_IMODE(st.st_mode) != wanted:
                if st.st_nlink > 1:
                    _unshare(path)
                os.chmod(path, wanted)
        del dirnames


def _unshare(path: str) -> None:
    """Give a hard-linked file an inode of its own (a copy, renamed over the link)."""
    tmp = f"{path}.giftbox-unshare"
    shutil.copy2(path, tmp)
    os.replace(tmp, path)


class _Linker:
    """What ``_link_tree`` does, for one tree: every directory 0755, every regular file a
    hard link when it is in its ``_wanted_mode`` and its inode was not placed before (a copy,
    chmod'ed, otherwise; and where the file system refuses a link)."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()

    def links(self, st: os.stat_result, name: str) -> bool:
        """Whether the file of ``st`` is placed as a link (and, if so, it is now seen)."""
        key = (st.st_dev, st.st_ino)
        if stat.S_IMODE(st.st_mode) == _wanted_mode(name, st.st_mode) and key not in self.seen:
            self.seen.add(key)
            return True
        return False

    def place(self, source: str, target: str, name: str, st: os.stat_result) -> None:
        if self.links(st, name):
            try:
                os.link(source, target)
                return
            except OSError:
                pass
        shutil.copy2(source, target)
        os.chmod(target, _wanted_mode(name, st.st_mode))

    def entry(self, entry: os.DirEntry[str], to: str) -> None:
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), to)
        elif entry.is_dir(follow_symlinks=False):
            self.walk(entry.path, to)
        else:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                self.place(entry.path, to, entry.name, st)
            else:
                os.link(entry.path, to)  # refused by _scan_venv, by name

    def walk(self, source: str, target: str) -> None:
        os.mkdir(target)
        os.chmod(target, 0o755)
        with os.scandir(source) as it:
            entries = list(it)
        for entry in entries:
            self.entry(entry, f"{target}/{entry.name}")

    def sync(self, source: str, target: str) -> None:
        """``target``, a tree this class made of another (``prestage``: the deps layer's
        venv, or a package's staged venv kept for the next build; any tree at all gives the
        same result), made what ``walk(source, target)`` makes: a regular file whose inode
        ``source`` holds at the same path, and would be linked, is kept; whatever else
        differs is placed again; what ``source`` does not hold goes. Both trees are read
        in one walk, by the inode numbers readdir gives, in ``walk``'s order."""
        with os.scandir(source) as it:
            entries = list(it)
        with os.scandir(target) as it:
            have = {e.name: e for e in it}
        for entry in entries:
            to = f"{target}/{entry.name}"
            old = have.pop(entry.name, None)
            if old is not None:
                old_dir = old.is_dir(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False) and not entry.is_symlink() and old_dir:
                    os.chmod(to, 0o755)  # as walk makes it, whatever the tree had
                    self.sync(entry.path, to)
                    continue
                if entry.is_symlink() and old.is_symlink() and \
                        os.readlink(entry.path) == os.readlink(old.path):
                    continue
                if old.inode() == entry.inode() and not old_dir and not old.is_symlink() \
                        and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if self.links(st, entry.name):
                        continue  # the same file, linked: as walk would link it
                _remove(to, old_dir)
            self.entry(entry, to)
        for name, old in have.items():
            _remove(f"{target}/{name}", old.is_dir(follow_symlinks=False))


def _remove(path: str, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` as ``src`` made of hard links (a copy where the file system refuses links),
    every directory 0755 and every file in its ``_wanted_mode``: staging reads the venv's
    20,000 files instead of writing them again, in one walk. A file whose mode must change
    is copied, never chmod'ed through a link (the venv's inode, and the deps layer's, stay
    as they are); whatever staging changes afterwards it changes on a file of its own
    (``_unshare``, new files). Two paths of the venv that share an inode get one each, as a
    copy would: tar would otherwise store the second as a hard link, and the package's
    bytes would depend on the venv's."""
    _Linker().walk(str(src), str(dst))


# --- staging the deps layer's part ahead (while the project's wheel is built) ------------
#
# A new patch changes the project's files; the venv's 20,000 others are the deps layer's
# inodes, linked into the staged tree again on every package. ``prestage`` links them from
# the layer while the build still runs (the builder compiles the wheel on one core; the
# link is the kernel's work on the other), into ``<build dir>/PRESTAGED``; ``stage`` then
# takes that tree and only brings it in line with the venv (``_Linker.sync``). The staged
# tree is the same either way: tests/test_prestage.py compares the two.

PRESTAGED = "staged-deps"
# A package's staged venv, kept beside its target's build directories for the next build of
# the target (a dot name: nothing that lists build directories sees it). That build takes it
# by rename (one build of two at once wins it) and brings it in line with the deps layer
# (``_Linker.sync``: what the layer holds as the same inode is kept, whatever else goes or is
# placed again), instead of linking the layer's 20,000 files again; the previous package's
# tree is not removed file by file either. The prestaged tree is the same either way
# (tests/test_prestage.py).
KEPT = ".staged-venv"


def kept_staged(build_dir: Path) -> Path:
    """Where a package of the build in ``build_dir`` keeps its staged venv."""
    return build_dir.parent / KEPT


def keep_staged(venv_root: Path, kept: Path) -> bool:
    """After a package is made: its staged venv (``venv_root``) moved to ``kept``, unless
    another is kept there already (then it stays, to be removed with the rest)."""
    try:
        os.rename(venv_root, kept)  # refused onto a kept tree (not empty), never merged
    except OSError:
        return False
    return True


def prestage(layer_venv: Path, folder: Path, prefix: str) -> None:
    """The deps layer's venv linked as staging links it, at ``prefix`` under
    ``folder/PRESTAGED``: made aside, renamed into place complete. From the target's kept
    staged tree (``kept_staged``) when there is one on the layer's file system."""
    final = folder / PRESTAGED
    partial = folder / f"{PRESTAGED}.partial"
    for old in (final, partial):
        if old.exists():
            shutil.rmtree(old)
    target = partial / prefix.lstrip("/")
    target.parent.mkdir(parents=True)
    kept = kept_staged(folder)
    try:
        os.rename(kept, target)  # taken: no other build can take it now
    except OSError:
        _link_tree(layer_venv, target)
    else:
        taken = os.lstat(target)
        if stat.S_ISDIR(taken.st_mode) and \
                taken.st_dev == os.stat(layer_venv).st_dev:  # inode numbers compare
            os.chmod(target, 0o755)
            _Linker().sync(str(layer_venv), str(target))
        else:  # not a directory (a symlink is never followed), or on another file system
            _remove(str(target), stat.S_ISDIR(taken.st_mode))
            _link_tree(layer_venv, target)
    partial.rename(final)


class ElfCache(InodeRecords):
    """Each file's ELF machine (``elf_machine`` of its first 20 bytes; 0: not ELF),
    remembered per inode (see InodeRecords): the deps layer's 20,000 inodes are opened
    once, not on every package."""

    def machine(self, path: str, st: os.stat_result) -> int | None:
        ident = self.ident(st)
        found = self.known(ident)
        if not isinstance(found, int) or isinstance(found, bool) or found < 0:
            fd = os.open(path, os.O_RDONLY)  # os.open: half the cost of open() here
            try:
                head = os.read(fd, 20)
            finally:
                os.close(fd)
            found = elf_machine(head) or 0
        self.use(ident, found)
        return found or None


def _scan_venv(staged: Staged, venv_dir: Path, elf: ElfCache) -> None:
    """Find ELF objects (checking their architecture), bundled wheel libraries, and links that
    leave the venv; refuse special files and links back into the build host."""
    host_prefix = str(venv_dir.resolve())
    venv_root = str(staged.path(staged.prefix))
    expected = staged.arch.elf_machine
    wrong: list[str] = []
    for dirpath, dirnames, filenames in os.walk(venv_root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, venv_root)
        bundled_dir = any(part.endswith(".libs") for part in rel_dir.split("/"))
        base = staged.prefix if rel_dir == "." else f"{staged.prefix}/{rel_dir}"
        for name in sorted(filenames + [d for d in dirnames
                                        if os.path.islink(os.path.join(dirpath, d))]):
            path = f"{dirpath}/{name}"
            target_path = f"{base}/{name}"
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(path)
                if link.startswith(host_prefix):
                    raise PackageError(f"{target_path} links to {link}, a path on the build "
                                       "host", hint="the venv must be built at its install "
                                       "prefix; see giftbox.package.install_prefix")
                if link.startswith("/") and not link.startswith(staged.prefix + "/"):
                    staged.interpreter_links.append(link)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise PackageError(f"{target_path} in the venv is not a regular file, "
                                   "directory or symlink", hint="remove sockets, fifos and "
                                   "devices from the venv")
            machine = elf.machine(path, st)
            if machine is None:
                continue
            if machine != expected:
                wrong.append(target_path)
            if bundled_dir:
                staged.bundled_libs.append(name)
                staged.bundled_paths.append(target_path)
            else:
                staged.elf_files.append(target_path)
    if wrong:
        raise PackageError(
            f"{len(wrong)} ELF file(s) in the venv are not built for {staged.arch.value}, "
            f"e.g. {wrong[0]}", hint="build the venv in the target architecture's builder")


def _dist_metadata(venv_root: Path, project: str) -> dict[str, str]:
    """Summary and License of the project's own distribution in the venv, if present."""
    wanted = re.sub(r"[-_.]+", "_", project).lower()
    for meta in sorted(venv_root.glob("lib/python*/site-packages/*.dist-info/METADATA")):
        dist = meta.parent.name.rsplit("-", 1)[0]
        if re.sub(r"[-_.]+", "_", dist).lower() != wanted:
            continue
        out: dict[str, str] = {}
        for line in meta.read_text(errors="replace").splitlines():
            if not line.strip():
                break  # the headers end at the first blank line
            key, _, value = line.partition(":")
            if key in ("Summary", "License", "License-Expression") and key not in out:
                out[key] = value.strip()
        return out
    return {}


def _check_inputs(venv_dir: Path, manifest: Manifest, spec: Spec, distro: Distro) -> None:
    if distro.family not in NAMES:
        raise PackageError(f"distro {distro.name} has package family '{distro.family}', "
                           f"which giftbox cannot package", hint="supported: deb, rpm")
    if manifest.family != distro.family or manifest.distro != distro.name:
        raise PackageError(f"the manifest is for {manifest.distro} ({manifest.family}) but the "
                           f"target is {distro.name} ({distro.family})")
    if manifest.project != spec.name or manifest.package_name != spec.package.name:
        raise PackageError(f"the manifest is for {manifest.project}/{manifest.package_name}, "
                           f"the spec is {spec.name}/{spec.package.name}")
    if manifest.python != distro.python:
        raise PackageError(f"the venv was built for Python {manifest.python} but "
                           f"{distro.name} runs Python {distro.python}")
    if not (venv_dir / "pyvenv.cfg").is_file():
        raise PackageError(f"{venv_dir} is not a venv (no pyvenv.cfg)",
                           hint="pass the directory the build stage produced")
    cfg = (venv_dir / "pyvenv.cfg").read_text()
    match = re.search(r"^version(_info)?\s*=\s*(\d+)\.(\d+)", cfg, re.M)
    if match and f"{match.group(2)}.{match.group(3)}" != distro.python:
        raise PackageError(f"{venv_dir}/pyvenv.cfg says Python {match.group(2)}."
                           f"{match.group(3)}, but {distro.name} runs Python {distro.python}")


def package_version(manifest: Manifest, distro: Distro) -> PackageVersion:
    """The PackageVersion the manifest's ``version`` dict was made from (checked)."""
    v = manifest.version
    family = distro.family_obj
    deb_tag, rpm_tag = family.version_tags(distro.version_tag)
    try:
        version = PackageVersion(
            upstream=str(v["upstream"]), release=int(v["release"]),
            patch_count=int(v["patch_count"]), patch_digest=str(v["patch_digest"]),
            deb_tag=deb_tag, rpm_tag=rpm_tag)
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"the manifest's version is malformed ({exc})",
                           hint="it must be PackageVersion.as_dict()") from None
    recorded = v.get(family.name)
    if recorded and recorded != family.version(version):
        raise PackageError(f"the manifest's {family.name} version {recorded} is not what its "
                           f"parts give for {distro.name} ({family.version(version)})")
    return version


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    os.chmod(path, mode)


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def rootwrap_conf(spec: Spec) -> str:
    rootwrap = spec.package.rootwrap
    assert rootwrap is not None
    # The venv's bin first: the project's own helpers resolve to the venv, not to a same-named
    # system binary; then the system dirs oslo.rootwrap uses by default.
    exec_dirs = [f"{stable_prefix(spec)}/bin", "/sbin", "/usr/sbin", "/bin", "/usr/bin",
                 "/usr/local/bin", "/usr/local/sbin"]
    return (f"# Configuration for {rootwrap.command}, written by giftbox for "
            f"{spec.package.name}.\n"
            "# Operators may edit this file; it is kept on upgrade.\n\n"
            "[DEFAULT]\n"
            "# List of directories to load filter definitions from (comma-separated);\n"
            f"# {rootwrap.filters_path} links to the filters shipped with the installed "
            "version.\n"
            f"filters_path={rootwrap.filters_path}\n\n"
            "# Directories searched for the executables the filters name (comma-separated).\n"
            f"exec_dirs={','.join(exec_dirs)}\n\n"
            "use_syslog=False\n"
            "syslog_log_facility=syslog\n"
            "syslog_log_level=ERROR\n"
            "daemon_timeout=600\n")


def sudoers_rule(spec: Spec) -> str:
    rootwrap = spec.package.rootwrap
    user = spec.package.user
    assert rootwrap is not None and user is not None
    return (f"# Let {user.name} run {rootwrap.command} as root (installed by "
            f"{spec.package.name}).\n"
            "Defaults:" + user.name + " !requiretty\n\n"
            f"{user.name} ALL=(root) NOPASSWD: /usr/bin/{rootwrap.command} "
            f"{rootwrap.config} *\n")


def _owned_parents(prefix: str) -> list[str]:
    """Directories between the allowed prefix root (/opt, /usr/lib, /srv) and the prefix."""
    root = next((r for r in ALLOWED_PREFIX_ROOTS if prefix.startswith(r + "/")), None)
    parents = []
    for parent in PurePosixPath(prefix).parents:
        text = str(parent)
        if text == "/" or (root is not None and len(text) <= len(root)):
            break
        if root is None and len(parent.parts) <= 2:
            break
        parents.append(text)
    return sorted(parents)


def _check_paths(spec: Spec) -> None:
    """What spec validation refuses, refused again before anything is staged: a Spec made
    some other way must not put a package over a system directory (invariant 9)."""
    package = spec.package
    checked = [("package.prefix", package.prefix)]
    if package.user:
        checked.append(("package.user.home", package.user.home))
    checked += [("package.config_files", c.path) for c in package.config_files]
    if package.rootwrap:
        checked += [("package.rootwrap", package.rootwrap.config),
                    ("package.rootwrap", package.rootwrap.filters_path)]
    for field_name, value in checked:
        problem = path_problem(value) or (
            "is a system directory" if system_dir(value) or value.count("/") < 2 else None)
        if problem:
            raise PackageError(f"{_spec_file(spec)}: {field_name} '{value}' {problem}",
                               hint="giftbox spec validate names what to change")


def stage(venv_dir: Path, manifest: Manifest, spec: Spec, distro: Distro, root: Path, *,
          version: PackageVersion | None = None, prestaged: Path | None = None,
          elf: ElfCache | None = None) -> Staged:
    """Lay the package's files out under ``root`` (which must not exist yet). With
    ``version`` (the build's), it and ``manifest.prefix`` are the build's own; without, they
    are read back from the manifest and checked. ``prestaged``: a tree ``prestage`` made
    for this prefix, taken (moved to ``root``) instead of linking the venv from nothing.
    ``elf`` remembers which files are ELF objects (saved once the tree is scanned)."""
    _check_paths(spec)
    _check_inputs(venv_dir, manifest, spec, distro)
    arch = Arch.parse(manifest.arch)
    if not distro.supports(arch):
        raise PackageError(f"{distro.name} is not defined for {arch.value}")
    prefix = manifest.prefix
    if version is None:
        version = package_version(manifest, distro)
        prefix = install_prefix(spec, version)
    if manifest.prefix != prefix:
        raise PackageError(f"the venv was built for {manifest.prefix} but {spec.name} installs "
                           f"it at {prefix}", hint="build it at install_prefix(spec, version): "
                           "a venv does not run from another path")
    family = distro.family
    staged = Staged(root=root, spec=spec, manifest=manifest, distro=distro, arch=arch,
                    family=family, version=version, prefix=prefix, stable=stable_prefix(spec))
    venv_root = staged.path(prefix)
    if prestaged is not None and (prestaged / prefix.lstrip("/")).is_dir() and \
            os.stat(prestaged).st_dev == os.stat(venv_dir).st_dev:  # inode numbers compare
        root.parent.mkdir(parents=True, exist_ok=True)
        prestaged.rename(root)
        _Linker().sync(str(venv_dir), str(venv_root))
        staged.prestaged = True
    else:
        root.mkdir(parents=True)
        venv_root.parent.mkdir(parents=True, exist_ok=True)
        _link_tree(venv_dir, venv_root)
    (venv_root / MANIFEST_NAME).unlink(missing_ok=True)  # a link into the venv, if any
    _write(venv_root / MANIFEST_NAME, manifest.to_json())
    if spec.package.versioned_paths:
        _symlink(staged.path(staged.stable), PurePosixPath(prefix).name)
    staged.owned_dirs = _owned_parents(spec.package.prefix)
    elf = elf or ElfCache(None)
    _scan_venv(staged, venv_dir, elf)
    elf.save()

    meta = _dist_metadata(venv_root, spec.name)
    staged.summary = spec.package.description or meta.get("Summary") or \
        f"OpenStack {spec.name} in a relocatable virtualenv"
    staged.license = meta.get("License-Expression") or meta.get("License") or ""

    for entry in entry_points(spec):
        if not (venv_root / "bin" / entry).exists():
            raise PackageError(f"entry point '{entry}' is not in the venv's bin/",
                               hint=f"check package.entry_points in {_spec_file(spec)} "
                                    "against the console scripts the project installs")
        _symlink(staged.path(f"/usr/bin/{entry}"), f"{staged.stable}/bin/{entry}")

    for unit in spec.package.units:
        _write(staged.path(f"{staged.family_obj.systemd_dir}/{unit.name}"), unit.read_bytes())
        staged.units.append(unit.name)

    group = spec.package.user.group if spec.package.user else None
    for conf in spec.package.config_files:
        _write(staged.path(conf.path), conf.source.read_bytes(), int(conf.mode, 8))
        staged.conffiles.append(Conffile(conf.path, int(conf.mode, 8), group))

    rootwrap = spec.package.rootwrap
    if rootwrap:
        if spec.package.user is None:
            raise PackageError(f"{_spec_file(spec)} sets package.rootwrap but no package.user",
                               hint="rootwrap's sudoers rule is for the service user")
        filters = venv_root / rootwrap_share(spec.name)
        if not filters.is_dir() or not any(filters.glob("*.filters")):
            raise PackageError(f"the venv has no rootwrap filters in "
                               f"{prefix}/{rootwrap_share(spec.name)}",
                               hint=f"the build stage copies <source>/etc/{spec.name}/"
                                    f"rootwrap.d there")
        _write(staged.path(rootwrap.config), rootwrap_conf(spec))
        staged.conffiles.append(Conffile(rootwrap.config, 0o644, None))
        _symlink(staged.path(rootwrap.filters_path),
                 f"{staged.stable}/{rootwrap_share(spec.name)}")
        _write(staged.path(sudoers_path(spec)), sudoers_rule(spec), 0o440)
        staged.conffiles.append(Conffile(sudoers_path(spec), 0o440, None))

    # Directories we create outside the venv: 0755 whatever the umask (invariant 1).
    for dirpath, dirnames, _files in os.walk(root):
        if Path(dirpath) == venv_root:
            dirnames[:] = []  # the venv's own modes were normalised above
        os.chmod(dirpath, 0o755)
    staged.conffiles.sort(key=lambda c: c.path)
    set_mtimes(root, manifest.source_date_epoch)
    return staged


def set_mtimes(root: Path, epoch: int, tree: list[Entry] | None = None) -> None:
    """Every mtime to SOURCE_DATE_EPOCH, not just clamped: a file older than the epoch would
    otherwise keep its own time, and two builds of one tree differ by when files were made.
    A file hard-linked from the venv that is not older than the epoch is left alone: every
    packager clamps mtimes to SOURCE_DATE_EPOCH, which gives it the epoch all the same, and
    its inode is shared with the build (and the deps layer), which packaging never changes.
    ``tree`` is ``scan_tree(root)`` when the caller has it."""
    top = str(root)
    for rel, st in scan_tree(root) if tree is None else tree:
        path = f"{top}/{rel}"
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            if st.st_mtime >= epoch:
                continue
            _unshare(path)
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


class Entry(NamedTuple):
    """One path of a tree: relative to its root (posix), and its lstat."""

    rel: str
    st: os.stat_result


def scan_tree(root: Path) -> list[Entry]:
    """Every path under root (not root itself), lstat'ed once, in one order on every machine:
    each directory's entries sorted by name, a directory followed by what it holds (the
    order of sorted pathlib paths). One walk, str paths: the packagers and lintian read
    the tree's 20,000 entries from this list instead of walking it again."""
    out: list[Entry] = []

    def walk(path: str, prefix: str) -> None:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            rel = prefix + entry.name
            out.append(Entry(rel, st))
            if stat.S_ISDIR(st.st_mode):
                walk(entry.path, rel + "/")

    walk(str(root), "")
    return out
