"""The packaging stage: a built venv tree plus its Manifest become one native package.

    artifact = build_package(venv_dir, manifest, spec, distro, out_dir,
                             packager="auto", compression_level=None, runner=None,
                             reporter=reporter)

* ``venv_dir`` is the venv exactly as it must appear at ``manifest.prefix`` on the target, and
  ``manifest.prefix`` must equal ``install_prefix(spec, version)`` (the build stage asks that
  function where to build).
* One interface, three packagers (``PACKAGERS``): native deb (dpkg-deb), native rpm
  (rpmbuild), and fpm; ``packager="auto"`` takes the native one when its tool is installed,
  else fpm when it is on PATH.
* ``runner`` (see ``giftbox.package.runner``) is where ``dpkg-shlibdeps`` and the archive check
  of dependencies run: the host by default, the target's builder container in production.
* Every package passes lintian or rpmlint before it is returned (``PackageError`` otherwise),
  and is written to ``out_dir`` atomically (built aside, then renamed).

See ``giftbox.package.layout`` for where each file goes, ``scripts`` for what the maintainer
scripts do, ``deb``/``rpm`` for reproducibility, ``fpm`` for how it differs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from giftbox import __version__, host, trash
from giftbox.distros import Arch, Distro
from giftbox.errors import PackageError
from giftbox.family import NAMES, get_family
from giftbox.files import sha256_file
from giftbox.manifest import Manifest
from giftbox.package.common import COMPRESSORS, DEFAULT_MAINTAINER, Compression, compression_for
from giftbox.package.deb import ImageState, build_deb, dpkg_deb_build
from giftbox.package.fpm import build_fpm, fpm_available, fpm_command
from giftbox.package.layout import (
    MANIFEST_NAME,
    ElfCache,
    Staged,
    check_conflicts,
    install_prefix,
    keep_staged,
    planned_paths,
    rootwrap_share,
    stable_prefix,
    stage,
    version_dir,
)
from giftbox.package.lint import DigestCache, LintianAhead, lintian, lintian_cached, rpmlint
from giftbox.package.rpm import build_rpm
from giftbox.package.runner import ContainerRunner, HostRunner, Runner, RunResult
from giftbox.spec import Spec
from giftbox.ui import NULL_REPORTER, Reporter
from giftbox.versions import PackageVersion

__all__ = [
    "COMPRESSORS", "MANIFEST_NAME", "PACKAGER_CHOICES", "Artifact", "ContainerRunner",
    "HostRunner", "Runner", "RunResult", "build_package", "check_conflicts", "fpm_command",
    "install_prefix", "package_key", "package_manifest", "planned_paths", "rootwrap_share",
    "select_packager", "stable_prefix", "version_dir",
]

PACKAGER_CHOICES = ("auto", "native", "fpm")

Builder = Callable[..., tuple[Path, list[str]]]
# (family, packager) -> the function that turns a staged tree into a package file
PACKAGERS: dict[tuple[str, str], Builder] = {
    ("deb", "native"): build_deb,
    ("rpm", "native"): build_rpm,
    ("deb", "fpm"): build_fpm,
    ("rpm", "fpm"): build_fpm,
}
# family -> its linter (Family.linter names the tool); lintian_cached when a cache is given
LINTERS: dict[str, Callable[[Path, Reporter], tuple[str, ...]]] = {
    "deb": lintian, "rpm": rpmlint}


@dataclass(frozen=True)
class Artifact:
    """One built package, as the channel stage takes it."""

    path: Path
    name: str
    version: str  # deb: the full Debian version; rpm: [epoch:]version-release
    arch: str  # in the target's spelling: amd64/ppc64el, x86_64/ppc64le
    family: str  # deb | rpm
    size: int
    sha256: str
    manifest: Manifest
    packager: str = "native"  # native | fpm
    compression: str = ""  # e.g. zstd-3
    depends: tuple[str, ...] = ()
    lint: tuple[str, ...] = ()  # the warnings lintian/rpmlint left (errors never get here)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _has(tool: str) -> bool:
    return host.which(tool) is not None


def select_packager(family: str, packager: str = "auto") -> str:
    """``native`` or ``fpm`` for a family: auto prefers native, falls back to fpm."""
    if family not in NAMES:
        raise PackageError(f"cannot package for family '{family}'", hint="supported: deb, rpm")
    native_tool = get_family(family).native_tool
    if packager not in PACKAGER_CHOICES:
        raise PackageError(f"unknown packager '{packager}'",
                           hint="use one of " + ", ".join(PACKAGER_CHOICES))
    if packager == "auto":
        if _has(native_tool):
            return "native"
        if fpm_available():
            return "fpm"
        raise PackageError(f"neither {native_tool} nor fpm is installed",
                           hint=f"install {native_tool}")
    return packager


# --- the package's cache key (design invariant 8) ----------------------------------------
#
# The venv is keyed by what builds it (giftbox.build); the package by the venv's key plus
# everything the packaging stage reads: every package.* field, the bytes of every file under
# files/<project>/ it installs, giftbox's packaging code and data (layout, maintainer-script
# templates, lintian overrides, rpmlintrc), the packager, compression and level, the target
# facts packaging reads from builder.yaml, and giftbox's version. A packaging edit rebuilds
# the package from the cached venv; nothing else does.

PACKAGING_KEY_RECIPE = "1"
# giftbox's own files whose bytes shape a package (relative to the giftbox package).
_PACKAGING_SOURCES = ("manifest.py", "versions.py", "family.py", "data/lintian-overrides",
                      "data/rpmlintrc")


@functools.cache
def _packaging_code_digest() -> str:
    top = resources.files("giftbox")
    names = sorted({*_PACKAGING_SOURCES,
                    *(f"package/{entry.name}" for entry in top.joinpath("package").iterdir()
                      if entry.name.endswith(".py"))})
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}\0".encode())
        digest.update(hashlib.sha256(top.joinpath(name).read_bytes()).digest())
    return digest.hexdigest()


def _plain(value: Any, spec: Spec) -> Any:
    """``value`` as JSON, with every file it names replaced by its name and the digest of its
    bytes (a unit's or config file's contents are packaging inputs, not just its name)."""
    if isinstance(value, dict):
        return {str(k): _plain(v, spec) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, spec) for v in value]
    if isinstance(value, Path):
        try:
            data = value.read_bytes()
        except OSError as exc:
            raise PackageError(f"{value} (named by specs/{spec.path.name}) cannot be read: "
                               f"{exc.strerror}", hint=f"put it under files/{spec.name}/ or "
                               f"fix the field in specs/{spec.path.name}") from None
        return {"file": value.name, "sha256": hashlib.sha256(data).hexdigest()}
    return value


def package_manifest(manifest: Manifest, spec: Spec, distro: Distro) -> Manifest:
    """The manifest as the package carries it: the venv's facts from the build, the package's
    own (name, runtime depends) from the spec as it is now, never from a cached build."""
    return dataclasses.replace(manifest, package_name=spec.package.name,
                               depends=tuple(spec.package.depends.get(distro.family, ())))


def package_key(venv_key: str, manifest: Manifest, spec: Spec, distro: Distro, *,
                packager: str = "auto", compression: str | None = None,
                compression_level: int | None = None, lint: bool = True) -> str:
    """The digest of every input of the package of ``venv_key``'s venv (see above);
    ``manifest`` is the package's (``package_manifest``)."""
    chosen = select_packager(distro.family, packager)
    comp = compression_for(distro.compression, compression, compression_level,
                           distro.compression_level)
    inputs = {
        "recipe": PACKAGING_KEY_RECIPE, "giftbox": __version__, "venv": venv_key,
        "project": spec.name, "package": _plain(asdict(spec.package), spec),
        "manifest": manifest.to_json(), "packager": chosen,
        "compression": [comp.kind, comp.level],
        "target": {"distro": distro.name, "family": distro.family, "codename": distro.codename,
                   "python": distro.python, "version_tag": distro.version_tag},
        "lint": lint, "code": _packaging_code_digest(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def build_package(venv_dir: Path, manifest: Manifest, spec: Spec, distro: Distro,
                  out_dir: Path, *, packager: str = "auto", compression: str | None = None,
                  compression_level: int | None = None, runner: Runner | None = None,
                  reporter: Reporter = NULL_REPORTER, maintainer: str = DEFAULT_MAINTAINER,
                  lint: bool = True, check_deps: bool = True,
                  cache_dir: Path | None = None,
                  built_version: PackageVersion | None = None,
                  image: ImageState | None = None,
                  after_archive: Callable[[Path], None] | None = None,
                  prestaged: Path | None = None, keep: Path | None = None) -> Artifact:
    """Turn ``venv_dir`` (the venv as installed at ``manifest.prefix``) into a package for
    ``distro`` in ``out_dir``. ``compression`` defaults to the distro's (builder.yaml),
    ``compression_level`` to the tool's default for it; ``lint=False`` is for benchmarks only.
    ``cache_dir`` keeps file digests and lintian's per-file verdicts between packages
    (giftbox.package.lint): lintian then reads only the files it has no verdict for; and,
    for a native deb, the verdicts of dpkg-shlibdeps and of the archive check, by the
    digest of what they read (giftbox.package.deb.VerdictStore).
    ``built_version`` is the build's own (``BuildResult.version``), taken as it is with the venv at
    ``manifest.prefix``; without it (a venv and manifest from disk) both are read back from
    the manifest and checked against the spec. ``image``: the builder image ``runner``
    is a fresh container of (giftbox.package.deb.target_state). ``after_archive(path)`` is
    called once the package file is written, before its lint verdict is known: the file may
    still be refused (and removed). ``prestaged``: the deps layer's part of the staged tree,
    made ahead for this build (giftbox.package.layout.prestage), taken by the staging.
    ``keep``: where the staged venv is kept once the package is made, for the next build's
    prestage (giftbox.package.layout.kept_staged); the rest of the staged tree goes."""
    if distro.family not in NAMES:
        raise PackageError(f"distro {distro.name} has package family '{distro.family}', "
                           "which giftbox cannot package", hint="supported: deb, rpm")
    family = distro.family_obj
    chosen = select_packager(family.name, packager)
    comp: Compression = compression_for(distro.compression, compression, compression_level,
                                        distro.compression_level)
    runner = runner or HostRunner()
    venv_dir = Path(venv_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".giftbox-package-", dir=out_dir))
    try:
        # What is remembered per inode is kept per project and target: each save keeps only
        # the inodes its package read, so one file shared by nova and keystone would lose
        # the other's deps layer on every build of the one (nightly, --all), read again.
        records = (cache_dir / "inodes" / f"{spec.name}-{distro.name}-"
                   f"{Arch.parse(manifest.arch).value}" if cache_dir is not None else None)
        with reporter.stage(f"stage {spec.package.name} for {distro.name}"):
            staged: Staged = stage(venv_dir, manifest, spec, distro, work / "root",
                                   version=built_version, prestaged=prestaged,
                                   elf=ElfCache(records / "elf-machines.json" if records else None))
            reporter.detail(f"venv at {staged.prefix}; {len(staged.elf_files)} ELF objects, "
                            f"{len(staged.bundled_libs)} bundled wheel libraries"
                            + ("; the deps layer's part staged ahead" if staged.prestaged
                               else ""))
        build = PACKAGERS[(family.name, chosen)]
        label = f"{chosen} {family.name} ({comp.kind} level {comp.level})"
        native_deb = build is build_deb
        digests = DigestCache(records / "digests.json" if records else None)
        extra: dict[str, Any] = {"digests": digests, "cache_dir": cache_dir,
                                 "reporter": reporter, "image": image} if native_deb else {}
        linting: list[Future[tuple[str, ...]]] = []
        notes = io.StringIO()  # the lint thread's report, shown in its own stage
        if lint and native_deb and cache_dir is not None:
            epoch = manifest.source_date_epoch
            if not LintianAhead.waiting():  # a packaging-only change: none started by a build
                LintianAhead.start()

            def lint_alongside(deb: Path) -> None:
                # lintian's unit comes from the staged tree, complete by now: it is linted
                # while dpkg-deb archives that tree (the unit is a .deb of its own)
                linting.append(pool.submit(
                    lintian_cached, deb, staged.root, staged.prefix, cache_dir / "lintian",
                    work, lambda tree, out: dpkg_deb_build(tree, out, comp, epoch),
                    Reporter(notes), digests, staged.tree))

            extra["before_archive"] = lint_alongside
        lint_lines: tuple[str, ...] = ()
        with ThreadPoolExecutor(1) as pool:
            with reporter.stage(f"package {spec.package.name} with {label}"):
                built_dir = work / "out"
                built_dir.mkdir()
                path, depends = build(staged, built_dir, work, compression=comp,
                                      runner=runner, maintainer=maintainer,
                                      check_deps=check_deps, **extra)
                reporter.detail(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
            if after_archive is not None:
                after_archive(path)
            if lint:
                with reporter.stage(f"{family.linter} {path.name}"):
                    if linting:
                        try:
                            lint_lines = linting[0].result()
                        finally:
                            for line in notes.getvalue().splitlines():
                                reporter.info(line)
                    else:
                        lint_lines = LINTERS[family.name](path, reporter)
        final = out_dir / path.name
        path.replace(final)  # same file system: an atomic rename, never a half-written file
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a failure leaves nothing behind, at once
        raise
    if keep is not None:
        keep_staged(staged.path(staged.prefix), keep)
    # the staged tree, removed while the package is published
    trash.discard(work, cache_dir / "trash" if cache_dir is not None else None)
    return Artifact(path=final, name=spec.package.name, version=family.version(staged.version),
                    arch=family.arch(staged.arch), family=family.name,
                    size=final.stat().st_size, sha256=sha256_file(final), manifest=manifest,
                    packager=chosen, compression=f"{comp.kind}-{comp.level}",
                    depends=tuple(depends), lint=lint_lines)
