"""The build stage: a locked, audited, relocatable virtualenv inside the target's builder.

Flow for one (project, distro, arch):

1. resolve the upstream (no checkout) and ensure the builder image;
2. read the project's requirements from git, check Python compatibility and that the
   committed lock is fresh;
3. key the build by the digest of every input; an existing complete build with that key is a
   cache hit and costs well under a second;
4. otherwise, in the builder: fill the wheelhouse (per release+distro+arch+Python) with what
   it lacks, hashes required; create the venv at its final prefix (paths right by
   construction); install the lock offline (uv where the builder has it, pip otherwise); build
   the patched project's wheel with ``build``, offline, from the same wheelhouse; install it;
5. on the host: make the venv relocatable (script shebangs and ``activate`` find the
   interpreter relative to themselves), drop install-time build paths, add the shim through
   which the venv sees the distro-only bindings;
6. back in the builder: compile hash-based bytecode, then the audit gate (giftbox.audit).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from giftbox import __version__, audit, lock, source
from giftbox import wheelhouse as wheelhouses
from giftbox.builders import BuilderImage, ensure
from giftbox.container import CommandFailed, Container, Mount
from giftbox.distros import Arch, Distro
from giftbox.errors import BuildError, GiftboxError
from giftbox.gitutil import locked
from giftbox.manifest import BuildRecord, Manifest, PatchInfo
from giftbox.package.layout import install_prefix, rootwrap_share
from giftbox.patches import spec_series_digest
from giftbox.settings import Settings
from giftbox.spec import Spec
from giftbox.ui import NULL_REPORTER, Reporter
from giftbox.versions import PackageVersion, for_target

TOOLS = lock.TOOLS
BUILD_DIR = lock.BUILD_DIR
SRC_DIR = lock.SRC_DIR
WHEELHOUSE_DIR = lock.WHEELHOUSE_DIR
CACHE_DIR = lock.CACHE_DIR
LOCK_NAME = "giftbox-lock.txt"  # in the venv root, beside giftbox-manifest.json
# Bumped when the way a venv is assembled changes, so old cache entries are not reused.
RECIPE = "7"

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True)
class BuildResult:
    project: str
    distro: str
    arch: str
    key: str
    directory: Path
    venv_dir: Path  # its contents are the venv as installed at manifest.prefix
    manifest: Manifest
    manifest_path: Path
    log_path: Path
    cached: bool
    timings: dict[str, float] = field(default_factory=dict)
    build_id: int | None = None  # in the build records

    def as_dict(self) -> dict[str, object]:
        return {"build_id": self.build_id, "project": self.project, "distro": self.distro,
                "arch": self.arch,
                "key": self.key, "directory": str(self.directory),
                "venv": str(self.venv_dir), "prefix": self.manifest.prefix,
                "version": self.manifest.version, "manifest": str(self.manifest_path),
                "log": str(self.log_path), "cached": self.cached, "timings": self.timings}


def check_python(spec: Spec, meta: lock.ProjectMeta, upstream_version: str,
                 distro: Distro) -> None:
    if not meta.requires_python:
        return
    try:
        allowed = SpecifierSet(meta.requires_python)
        ok = Version(distro.python) in allowed
    except (InvalidSpecifier, InvalidVersion):
        return
    if not ok:
        raise BuildError(
            f"{spec.name} {upstream_version} requires Python {meta.requires_python}, but "
            f"{distro.name} ships Python {distro.python}",
            hint=f"pin a {spec.name} release that supports Python {distro.python} for "
                 f"{distro.name} (a spec of its own), or build for a newer distro")


def _key(parts: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _wheelhouse(settings: Settings, spec: Spec, distro: Distro, arch: Arch) -> Path:
    return wheelhouses.directory(settings, wheelhouses.Target(spec.release, distro, arch))


def _tool_cache(settings: Settings, distro: Distro, arch: Arch) -> Path:
    return settings.cache_dir / "builder-cache" / f"{distro.name}-{arch.value}-py{distro.python}"


def _present_wheels(wheelhouse: Path) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for wheel in wheelhouse.glob("*.whl"):
        match = _WHEEL_RE.match(wheel.name)
        if match:
            try:
                version = str(Version(match.group("version")))
            except InvalidVersion:
                continue
            found.add((canonicalize_name(match.group("name")), version))
    return found


def build_requirements_locked(requirements: tuple[str, ...] | list[str],
                              lock_text: str) -> bool:
    """Whether the lock pins every build requirement (so the deps venv can build the
    project's wheel without an isolated env of its own)."""
    from packaging.requirements import InvalidRequirement, Requirement

    pinned = {p.name for p in lock.pins(lock_text)}
    for text in requirements:
        try:
            name = canonicalize_name(Requirement(text).name)
        except InvalidRequirement:
            return False
        if name not in pinned:
            return False
    return bool(requirements)


def _failed_package(output: str) -> str | None:
    for pattern in (r"Failed building wheel for (\S+)", r"Failed to build (\S+)",
                    r"No matching distribution found for (\S+)",
                    r"Could not find a version that satisfies the requirement (\S+)",
                    r"THESE PACKAGES DO NOT MATCH THE HASHES[\s\S]*?\n\s+(\S+)"):
        match = re.search(pattern, output)
        if match:
            return match.group(1)
    return None


class Builder:
    """One build of one project for one distro and arch."""

    def __init__(self, spec: Spec, distro: Distro, arch: Arch, settings: Settings,
                 reporter: Reporter = NULL_REPORTER, ref: str | None = None) -> None:
        if not distro.supports(arch):
            raise BuildError(f"{distro.name} has no {arch.value} builder",
                             hint="its arches: " + ", ".join(a.value for a in distro.arches))
        self.spec = spec
        self.distro = distro
        self.arch = arch
        self.settings = settings
        self.reporter = reporter
        self.ref = ref
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def _timed(self, label: str) -> Iterator[None]:
        """A reported stage whose duration lands in ``timings`` under its short name."""
        start = time.monotonic()
        with self.reporter.stage(label):
            yield
        self.timings[label.split(":")[0]] = round(
            self.timings.get(label.split(":")[0], 0) + time.monotonic() - start, 2)

    # -- inputs ----------------------------------------------------------------------------

    # The arch whose builder image inputs() ensures, when not the target's (make_lock).
    builder_arch: Arch | None = None

    def inputs(self) -> tuple[source.Upstream, BuilderImage, lock.ProjectMeta, lock.LockInputs]:
        spec = self.spec
        with self._timed("resolve: upstream and builder"):
            upstream = source.resolve(spec, self.settings, self.reporter, self.ref)
            self.reporter.detail(f"{upstream.ref} -> {upstream.commit[:12]} "
                                 f"(upstream version {upstream.version})")
            meta = lock.project_meta(upstream.repo, upstream.commit,
                                     spec.pypi.name if spec.pypi else spec.name)
            # Before the image: refusing an incompatible Python costs nothing, while a
            # builder may have to be bootstrapped or pulled first.
            check_python(spec, meta, upstream.version, self.distro)
            image = ensure(self.distro, self.builder_arch or self.arch, self.settings,
                           self.reporter)
            constraints = lock.read_constraints(spec, self.settings)
            inputs = lock.lock_inputs(spec, meta, constraints, self.distro, self.arch)
        return upstream, image, meta, inputs

    def mounts(self, work: Path, image_cache: Path, wheelhouse: Path,
               src: Path | None = None, prefix_dir: Path | None = None,
               prefix: str | None = None) -> list[Mount]:
        mounts = [Mount(work, BUILD_DIR, read_only=False),
                  Mount(image_cache, CACHE_DIR, read_only=False),
                  Mount(wheelhouse, WHEELHOUSE_DIR, read_only=False)]
        if src is not None:
            mounts.append(Mount(src, SRC_DIR, read_only=True))
        if prefix_dir is not None and prefix is not None:
            mounts.append(Mount(prefix_dir, prefix, read_only=False))
        return mounts

    # -- the lock command ------------------------------------------------------------------

    def lock_builder_arch(self) -> Arch:
        """Where the lock is computed: an arch uv resolves for by platform (ppc64le...) is
        locked in the distro's builder for this machine's own arch, at native speed; the lock
        is a function of its inputs (Python version, platform), not of where it ran."""
        import platform

        try:
            host = Arch.parse(platform.machine())
        except GiftboxError:
            return self.arch
        if self.arch.value in lock.UV_PLATFORMS and self.distro.supports(host):
            return host
        return self.arch

    def make_lock(self) -> Path:
        builder_arch = self.builder_arch = self.lock_builder_arch()
        upstream, image, meta, inputs = self.inputs()
        path = lock.lock_path(self.settings, self.spec, self.distro, self.arch)
        work = self.settings.cache_dir / "lock-work" / f"{self.spec.name}-{self.distro.name}-" \
            f"{self.arch.value}"
        # Two `giftbox lock` of one target share this directory: one waits for the other.
        with locked(work):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            cache = _tool_cache(self.settings, self.distro, self.arch)
            wheelhouse = _wheelhouse(self.settings, self.spec, self.distro, self.arch)
            cache.mkdir(parents=True, exist_ok=True)
            wheelhouse.mkdir(parents=True, exist_ok=True)
            log_path = work / "lock.log"
            with self._timed(f"lock: pip-compile {self.spec.name} for {self.distro.name}/"
                             f"{self.arch.value}"):
                if builder_arch is not self.arch:
                    self.reporter.detail(f"resolving for {self.arch.value} (uv, by platform) in "
                                         f"the {builder_arch.value} builder")
                with Container(image, builder_arch, self.settings, self.reporter,
                               mounts=self.mounts(work, cache, wheelhouse),
                               workdir=BUILD_DIR) as c:
                    body = lock.compile_lock(c, inputs, work, log_path)
        lock.write_lock(path, lock.lock_header(self.spec, self.distro, self.arch, inputs), body)
        self.reporter.detail(f"{len(lock.pins(body))} pinned requirements -> {path}")
        return path

    # -- the build -------------------------------------------------------------------------

    def run(self) -> BuildResult:
        spec, distro, arch, settings = self.spec, self.distro, self.arch, self.settings
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        upstream, image, meta, inputs = self.inputs()
        lock_file = lock.lock_path(settings, spec, distro, arch)
        lock_text = lock.check_fresh(lock_file, spec, distro, arch, inputs)
        lock_digest = hashlib.sha256(lock_text.encode()).hexdigest()
        patch_digest = spec_series_digest(spec)
        version = for_target(upstream.version, spec.package.release, len(spec.patches),
                             patch_digest, distro.family, distro.version_tag)
        prefix = install_prefix(spec, version)
        key = _key({
            "recipe": RECIPE, "giftbox": __version__, "commit": upstream.commit,
            "patches": patch_digest, "lock": lock_digest, "image": image.image_id,
            "distro": distro.name, "arch": arch.value, "prefix": prefix,
            "bindings": [b.module for b in spec.package.system_bindings],
            "version": version.as_dict(),
            # what else the venv stage reads from the spec (packaging fields are the package's
            # key, giftbox.package.package_key): filters copied for rootwrap, the audit gate's
            # opt-outs, the spec's extra build packages
            "rootwrap": spec.package.rootwrap is not None,
            "audit": dataclasses.asdict(spec.audit), "build_packages": self.build_packages(),
        })
        directory = settings.root / "build" / spec.name / f"{distro.name}-{arch.value}" / key[:16]
        result_path = directory / "result.json"
        if result_path.is_file():
            self.reporter.info(f"==> cache hit: {spec.name} for {distro.name}/{arch.value} "
                               f"(inputs {key[:16]} unchanged)")
            return self._load(result_path, cached=True)
        from giftbox import records

        build_id = records.start_build(
            settings, spec.name, distro.name, arch.value, upstream_commit=upstream.commit,
            patch_digest=patch_digest, lock_digest=lock_digest, builder_image=image.image_id,
            spec_digest=hashlib.sha256(spec.path.read_bytes()).hexdigest(),
            version=version.for_family(distro.family),
            log_path=str(directory / "build.log"))
        start = time.monotonic()
        try:
            result = self._fresh(upstream, image, meta, lock_text, lock_digest, patch_digest,
                                 version, prefix, key, directory, started)
        except BaseException as exc:
            message = exc.render() if isinstance(exc, BuildError) else \
                f"{type(exc).__name__}: {exc}"
            records.finish_build(settings, build_id, "failed", error=message[:4000],
                                 duration=round(time.monotonic() - start, 2))
            raise
        records.finish_build(settings, build_id, "succeeded",
                             duration=round(time.monotonic() - start, 2))
        result = dataclasses.replace(result, build_id=build_id)
        _write_result(directory / "result.json", result)
        return result

    def _fresh(self, upstream: source.Upstream, image: BuilderImage, meta: lock.ProjectMeta,
               lock_text: str, lock_digest: str, patch_digest: str, version: PackageVersion,
               prefix: str, key: str, directory: Path, started: str) -> BuildResult:
        spec, distro, arch, settings = self.spec, self.distro, self.arch, self.settings
        result_path = directory / "result.json"
        if directory.exists():
            shutil.rmtree(directory)  # an interrupted earlier attempt
        directory.mkdir(parents=True)
        log_path = directory / "build.log"
        work = directory / "work"
        venv_dir = directory / "venv"
        work.mkdir()
        venv_dir.mkdir()
        wheelhouse = _wheelhouse(settings, spec, distro, arch)
        cache = _tool_cache(settings, distro, arch)
        wheelhouse.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        env = self._env(upstream.source_date_epoch)
        forbidden = [BUILD_DIR, SRC_DIR, WHEELHOUSE_DIR, CACHE_DIR, str(settings.root),
                     str(settings.cache_dir)]
        layer = self._deps_layer(image, prefix, lock_text, lock_digest, wheelhouse, cache, env,
                                 spec, meta.name, log_path)
        with self._timed("venv: link the deps layer"):
            link_tree(layer / "venv", venv_dir)
        (work / "pins.txt").write_text(lock.pins_text(lock.pins(lock_text)))
        # The project's wheel depends on the patched source and the build tools (lock, image)
        # only: a build whose other inputs changed (prefix, bindings) reuses it.
        in_venv = build_requirements_locked(meta.build_requirements, lock_text)
        wheel_key = _key({"recipe": RECIPE, "commit": upstream.commit, "patches": patch_digest,
                          "lock": lock_digest, "image": image.image_id,
                          "version": upstream.version, "isolated": not in_venv})
        wheel_cache = (settings.cache_dir / "wheels" / f"{spec.name}-{distro.name}-"
                       f"{arch.value}" / wheel_key[:16])
        tree_dir = directory / "src"
        src_record = self._cached_wheel(wheel_cache, work)
        if src_record is None:
            with self._timed("source: checkout and patch"):
                tree = source.checkout(spec, upstream, tree_dir, settings, self.reporter)
            src_record = {"head": tree.head, "patch_digest": tree.patch_digest,
                          "patches": [p.as_dict() for p in tree.patches]}
        else:
            self.reporter.info(f"==> wheel {wheel_key[:16]}: cached (source unchanged)")
        mounts = self.mounts(work, cache, wheelhouse, tree_dir if tree_dir.exists() else None,
                             venv_dir, prefix)
        with Container(image, arch, settings, self.reporter, mounts=mounts, env=env,
                       workdir=BUILD_DIR) as c:
            if not (work / "dist").is_dir():
                self._install_build_packages(c, log_path)
                with self._timed(f"wheel: build {spec.name} "
                                 f"{'in the deps venv' if in_venv else 'with build'}"):
                    self._build_wheel(c, upstream.version, log_path,
                                      prefix if in_venv else None)
                self._store_wheel(wheel_cache, work, src_record)
            wheel = next((work / "dist").glob("*.whl")).name
            with self._timed(f"install: {spec.name} into the venv"):
                self._install(c, prefix, [f"{BUILD_DIR}/dist/{wheel}"], log_path)
                site = _site_packages(venv_dir)
                relocate(venv_dir, prefix)
                write_bindings_shim(site, spec, distro)
                place_rootwrap_filters(venv_dir, spec, tree_dir)
            with self._timed(f"bytecode: hash-based .pyc for {spec.name}"):
                paths = project_paths(site, meta.name)
                shim = site / "_giftbox_system_bindings.py"
                if shim.exists():
                    paths.append(shim)
                self._compile(c, prefix, [prefix + "/" + str(p.relative_to(venv_dir))
                                          for p in paths], log_path)
                fix_records(site, set(), set(), bytecode=True)
            with self._timed("audit"):
                problems = audit.pip_check(c, prefix, log_path)
                report = audit.run_scope(c, "project", prefix, spec, meta.name, work, log_path)
                problems += audit.failures(report)
                tree_problems, tree_report = audit.tree_checks(venv_dir, arch, forbidden,
                                                               shared=layer / "venv")
                problems += tree_problems
                audit.gate(spec, problems, log_path)
                deps = json.loads((layer / "audit-deps.json").read_text())
                for kind in ("imports", "extensions"):
                    report[kind] = {**deps[kind], **report[kind]}
                full = {**report, **tree_report, "layer": layer.name}
                (directory / "audit.json").write_text(json.dumps(full, indent=2) + "\n")
        stale = timestamp_pycs(venv_dir)
        if stale:
            raise BuildError(f"{len(stale)} timestamp-based .pyc in the venv (their bytes change "
                             f"with every build), e.g. {stale[0].relative_to(venv_dir)}",
                             hint="every .pyc must be hash-based: compile it with "
                                  "--invalidation-mode checked-hash")
        manifest = Manifest(
            project=spec.name, package_name=spec.package.name,
            upstream_kind=upstream.kind, upstream_url=upstream.url, upstream_ref=upstream.ref,
            upstream_commit=upstream.commit, upstream_version=upstream.version,
            upstream_sha256=upstream.sha256,
            patches=tuple(PatchInfo(p["name"], p["sha256"], p["subject"])
                          for p in src_record["patches"]),
            patch_digest=src_record["patch_digest"], source_commit=src_record["head"],
            lock_digest=lock_digest,
            builder_image=image.image_id, distro=distro.name, family=distro.family,
            arch=arch.value, python=distro.python, prefix=prefix, version=version.as_dict(),
            source_date_epoch=upstream.source_date_epoch,
            system_bindings=tuple(b.module for b in spec.package.system_bindings),
            depends=spec.package.depends.get(distro.family, ()))
        manifest_path = directory / "manifest.json"
        manifest_path.write_text(manifest.to_json())
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tree_dir, ignore_errors=True)
        record = BuildRecord(manifest=manifest, started_at=started, timings=self.timings,
                             host=socket.gethostname(), log_path=str(log_path))
        (directory / "build.json").write_text(record.to_json())
        result = BuildResult(project=spec.name, distro=distro.name, arch=arch.value, key=key,
                             directory=directory, venv_dir=venv_dir, manifest=manifest,
                             manifest_path=manifest_path, log_path=log_path, cached=False,
                             timings=self.timings)
        _write_result(result_path, result)  # the build is complete only once this exists
        return result

    def _load(self, path: Path, cached: bool) -> BuildResult:
        data = json.loads(path.read_text())
        directory = Path(data["directory"])
        manifest_path = directory / "manifest.json"
        return BuildResult(project=data["project"], distro=data["distro"], arch=data["arch"],
                           key=data["key"], directory=directory, venv_dir=Path(data["venv"]),
                           manifest=Manifest.read(manifest_path), manifest_path=manifest_path,
                           log_path=Path(data["log"]), cached=cached, timings=self.timings,
                           build_id=data.get("build_id"))

    # -- steps inside the builder ------------------------------------------------------------

    def _env(self, source_date_epoch: int) -> dict[str, str]:
        # Compilers record the directory they ran in (DWARF comp_dir, __FILE__): map the
        # builder's directories away so no build path reaches the venv (the audit checks).
        prefix_maps = " ".join(f"-ffile-prefix-map={d}=." for d in (f"{BUILD_DIR}/src", "/tmp"))
        return {"SOURCE_DATE_EPOCH": str(source_date_epoch), "PYTHONHASHSEED": "0",
                "CFLAGS": prefix_maps, "CXXFLAGS": prefix_maps,
                "PIP_CACHE_DIR": f"{CACHE_DIR}/pip", "UV_CACHE_DIR": f"{CACHE_DIR}/uv",
                "UV_LINK_MODE": "copy", "PIP_NO_INPUT": "1"}

    def _deps_layer(self, image: BuilderImage, prefix: str, lock_text: str, lock_digest: str,
                    wheelhouse: Path, cache: Path, env: dict[str, str], spec: Spec,
                    dist_name: str, log_path: Path) -> Path:
        """The venv with the locked dependencies installed, relocated, compiled and audited.

        It depends only on the lock, the builder image, the prefix and the project's name
        (whose own line the deps audit leaves out), so every build of a project whose lock did
        not change reuses it: builds hard-link its files and add only the project.
        """
        parts: dict[str, object] = {
            "recipe": RECIPE, "lock": lock_digest, "image": image.image_id, "prefix": prefix,
            "python": self.distro.python, "project": dist_name,
            "skip_imports": list(spec.audit.skip_imports)}
        if self.build_packages():  # only then: existing layers keep their keys
            parts["build_packages"] = self.build_packages()
        key = _key(parts)
        layer = (self.settings.cache_dir / "layers" /
                 f"{self.distro.name}-{self.arch.value}" / key[:16])
        with locked(layer):
            if (layer / "audit-deps.json").is_file():
                self.reporter.info(f"==> deps layer {key[:16]}: cached")
                _package_modes(layer)
                return layer
            tmp = layer.with_name(f"{layer.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(layer, ignore_errors=True)
            (tmp / "venv").mkdir(parents=True)
            (tmp / "work").mkdir()
            work = tmp / "work"
            pinned = lock.pins(lock_text)
            (work / "pins.txt").write_text(lock.pins_text(pinned))
            mounts = self.mounts(work, cache, wheelhouse, None, tmp / "venv", prefix)
            with Container(image, self.arch, self.settings, self.reporter, mounts=mounts,
                           env=env, workdir=BUILD_DIR) as c:
                self._install_build_packages(c, log_path)
                with self._timed("wheelhouse: fill from the lock"):
                    self._fill_wheelhouse(c, lock_text, pinned, wheelhouse, work, log_path)
                with self._timed("venv: create and install the lock offline"):
                    self._create_venv(c, prefix, log_path)
                    relocate(tmp / "venv", prefix)
                    # What is in the venv, pinned with hashes: travels with every package
                    # (an SBOM for operators; what `giftbox diff` compares between builds).
                    (tmp / "venv" / LOCK_NAME).write_text(lock_text)
                with self._timed("bytecode: hash-based .pyc for the dependencies"):
                    self._compile(c, prefix, [f"{prefix}/lib"], log_path)
                    fix_records(_site_packages(tmp / "venv"), set(), set(), bytecode=True)
                with self._timed("audit: the dependencies"):
                    report = audit.run_scope(c, "deps", prefix, spec, dist_name, work, log_path)
                    audit.gate(spec, audit.failures(report), log_path)
            (tmp / "audit-deps.json").write_text(json.dumps(report, indent=2) + "\n")
            shutil.rmtree(work)
            _package_modes(tmp)
            tmp.rename(layer)
            return layer

    def _cached_wheel(self, folder: Path, work: Path) -> dict[str, Any] | None:
        """Put the cached wheel in ``work/dist`` and return its source record, if cached."""
        record = folder / "source.json"
        wheels = list(folder.glob("*.whl"))
        if not record.is_file() or len(wheels) != 1:
            return None
        (work / "dist").mkdir()
        shutil.copy2(wheels[0], work / "dist" / wheels[0].name)
        return json.loads(record.read_text())  # type: ignore[no-any-return]

    def _store_wheel(self, folder: Path, work: Path, src_record: dict[str, Any]) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for wheel in (work / "dist").glob("*.whl"):
            shutil.copy2(wheel, tmp / wheel.name)
        (tmp / "source.json").write_text(json.dumps(src_record, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def _compile(self, c: Container, prefix: str, paths: list[str], log_path: Path) -> None:
        # -f: a .pyc written by an earlier import (site.py imports _distutils_hack through
        # distutils-precedence.pth) is timestamp-based, and compileall keeps a timestamp .pyc
        # that matches its source even in checked-hash mode; -B: that import writes none.
        if paths:
            c.call([f"{prefix}/bin/python", "-B", "-m", "compileall", "-q", "-f", "-j", "0",
                    "--invalidation-mode", "checked-hash", *paths],
                   log_path=log_path, stream=False)

    def build_packages(self) -> list[str]:
        """The spec's extra build packages for this family, and for this family on this arch
        (``package.build_depends``: ``deb``, ``deb/ppc64le``), added to the builder's own."""
        family = self.distro.family
        wanted = self.spec.package.build_depends
        names = {d.split("(")[0].strip()  # a version constraint is for the package's Depends
                 for d in (*wanted.get(family, ()), *wanted.get(f"{family}/{self.arch.value}", ()))}
        return sorted(names - set(self.distro.build_packages))

    def _install_build_packages(self, c: Container, log_path: Path) -> None:
        packages = self.build_packages()
        if not packages:
            return
        bad = [p for p in packages if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*", p)]
        if bad:
            raise BuildError(f"package.build_depends in {self.spec.path.name}: not a package "
                             f"name: {', '.join(bad)}", hint="plain names only, no versions")
        if self.distro.family == "deb":
            steps = [["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]]
        else:
            steps = [["dnf", "install", "-y", "-q", *packages]]
        with self._timed("builder: the spec's build packages " + " ".join(packages)):
            try:
                for argv in steps:
                    c.call(argv, log_path=log_path, stream=False,
                           env={"DEBIAN_FRONTEND": "noninteractive"})
            except CommandFailed as exc:
                raise BuildError(
                    f"installing {self.spec.name}'s build packages ({', '.join(packages)}) in "
                    f"the {self.distro.name}/{self.arch.value} builder failed:\n"
                    + "\n".join(exc.output.splitlines()[-8:]),
                    hint=f"check package.build_depends in {self.spec.path.name} (names as "
                         f"{self.distro.name}'s archive spells them); full log: {log_path}"
                ) from None

    def _fill_wheelhouse(self, c: Container, lock_text: str, pinned: list[lock.Pin],
                         wheelhouse: Path, work: Path, log_path: Path) -> None:
        # Under the wheelhouse's lock: a parallel build of the same target waits, then finds
        # the wheels this one built (each wheel is built once per release and target).
        with wheelhouses.filling(wheelhouse):
            self._fill_locked(c, lock_text, pinned, wheelhouse, work, log_path)

    def _fill_locked(self, c: Container, lock_text: str, pinned: list[lock.Pin],
                     wheelhouse: Path, work: Path, log_path: Path) -> None:
        present = _present_wheels(wheelhouse)
        missing = [p for p in pinned if (p.name, str(Version(p.version))) not in present]
        self.reporter.detail(f"{len(pinned) - len(missing)} of {len(pinned)} wheels cached, "
                             f"{len(missing)} to fetch or build")
        if not missing:
            return
        blocks = lock.blocks(lock_text)
        target = wheelhouses.Target(self.spec.release, self.distro, self.arch)
        problems = self._preflight(c, target, missing, blocks, log_path)
        buildable = [p for p in missing if p.line not in problems]
        failure: str | None = None
        if buildable:
            (work / "fill.txt").write_text("".join(blocks[p.name] for p in buildable))
            argv = [f"{TOOLS}/pip", "wheel", "--require-hashes", "--no-deps", "--progress-bar",
                    "off", "-r", f"{BUILD_DIR}/fill.txt", "--wheel-dir", WHEELHOUSE_DIR]
            try:
                c.call(argv, log_path=log_path)
            except CommandFailed as exc:
                failed = re.findall(r"^(?:ERROR: )?Failed to build (?:installable wheels for "
                                    r"some pyproject\.toml based projects \()?(.+?)\)?$",
                                    exc.output, re.M)
                names = failed[-1].replace(",", " ").split() if failed else \
                    [n for n in [_failed_package(exc.output)] if n]
                why = wheelhouses.diagnose(exc.output)
                failure = ("filling the wheelhouse failed"
                           + (f" ({', '.join(names)})" if names else "")
                           + (f": {why}" if why else "") + ":\n"
                           + "\n".join(exc.output.splitlines()[-15:]))
        if problems:
            listed = "\n".join(f"  {pin}: {why}" for pin, why in sorted(problems.items()))
            raise BuildError(
                f"{len(problems)} locked requirement(s) have no wheel for "
                f"{self.distro.name}/{self.arch.value} and this builder cannot build them "
                f"(named before compiling; the other {len(buildable)} were filled"
                + (", with failures" if failure else "") + f"):\n{listed}"
                + (f"\n{failure}" if failure else ""),
                hint="fill the wheelhouse from a machine that can build them (a native "
                     f"{self.arch.value} runner: `giftbox wheelhouse export`, then `giftbox "
                     "wheelhouse import` here; see docs/nightly.md), or give the builder what "
                     f"it lacks. Full log: {log_path}")
        if failure:
            raise BuildError(failure, hint=f"full log: {log_path}")

    def _preflight(self, c: Container, target: wheelhouses.Target, missing: list[lock.Pin],
                   blocks: dict[str, str], log_path: Path) -> dict[str, str]:
        """pin line -> why the builder cannot build it, before anything is compiled."""
        wanted = {p.name: (p.version, set(re.findall(r"sha256:([0-9a-f]{64})", blocks[p.name])))
                  for p in missing}
        builds = wheelhouses.sdist_builds(self.settings, target, wanted)
        if not builds:
            return {}
        self.reporter.detail(f"built from sdist for {self.distro.name}/{self.arch.value}: "
                             + ", ".join(b.pin for b in builds))
        probe_run = c.call(["python3", "-c", wheelhouses.PROBE], check=False, stream=False,
                           log_path=log_path)
        try:
            probe = json.loads(probe_run.output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}
        problems = wheelhouses.toolchain_problems(builds, probe, target)
        for pin, why in sorted(problems.items()):
            self.reporter.info(f"==> cannot build {pin}: {why}")
        return problems

    def _create_venv(self, c: Container, prefix: str, log_path: Path) -> None:
        """virtualenv at the final prefix with the builder's pinned virtualenv, then the lock
        installed offline from the wheelhouse (hashes were checked when it was filled)."""
        python = f"/usr/bin/python{self.distro.python}"
        c.call([f"{TOOLS}/virtualenv", "--no-setuptools", "--no-wheel", "--no-periodic-update",
                "--activators", "bash,python", "--python", python, prefix],
               log_path=log_path, stream=False)
        self._install(c, prefix, ["-r", f"{BUILD_DIR}/pins.txt"], log_path)

    def _install(self, c: Container, prefix: str, what: list[str], log_path: Path) -> None:
        has_uv = c.call(["test", "-x", f"{TOOLS}/uv"], check=False, stream=False).returncode == 0
        if has_uv:
            argv = [f"{TOOLS}/uv", "pip", "install", "--python", f"{prefix}/bin/python",
                    "--offline", "--no-index", "--find-links", WHEELHOUSE_DIR, "--no-deps",
                    "--no-progress", *what]
        else:
            argv = [f"{prefix}/bin/python", "-m", "pip", "install", "--no-index",
                    "--find-links", WHEELHOUSE_DIR, "--no-deps", "--progress-bar", "off",
                    "--no-compile", *what]
        c.call(argv, log_path=log_path, stream=False)

    def _build_wheel(self, c: Container, upstream_version: str, log_path: Path,
                     prefix: str | None = None) -> None:
        """The project's wheel into ``BUILD_DIR/dist``. With ``prefix`` (every build
        requirement is pinned by the lock, so the deps venv there holds exactly the versions
        an isolated build env would get from the same pins): built in that venv without an
        isolated env, pip checking the build requirements (static and dynamic) are met;
        otherwise with ``build`` in an isolated env filled offline from the wheelhouse."""
        # A private, writable copy: pbr and setuptools write into the tree they build.
        c.call(["rm", "-rf", f"{BUILD_DIR}/src", f"{BUILD_DIR}/dist"], stream=False)
        c.call(["cp", "-a", SRC_DIR, f"{BUILD_DIR}/src"], stream=False)
        env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE_DIR,
               "PIP_CONSTRAINT": f"{BUILD_DIR}/pins.txt",
               # Patches add commits on top of the release: keep the upstream version.
               "PBR_VERSION": upstream_version,
               "SETUPTOOLS_SCM_PRETEND_VERSION": upstream_version}
        if prefix is not None:
            # -B and PYTHONDONTWRITEBYTECODE: the build imports setuptools from the venv and
            # must leave no bytecode of its own there.
            argv = [f"{prefix}/bin/python", "-B", "-m", "pip", "wheel", "--no-build-isolation",
                    "--check-build-dependencies", "--no-deps", "--no-index", "--progress-bar",
                    "off", "--wheel-dir", f"{BUILD_DIR}/dist", f"{BUILD_DIR}/src"]
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            argv = [f"{TOOLS}/python", "-m", "build", "--wheel", "--outdir", f"{BUILD_DIR}/dist",
                    f"{BUILD_DIR}/src"]
        try:
            c.call(argv, env=env, log_path=log_path, stream=self.settings.verbose)
        except CommandFailed as exc:
            raise BuildError(f"building {self.spec.name}'s wheel failed:\n"
                             + "\n".join(exc.output.splitlines()[-20:]),
                             hint=f"full log: {log_path}") from None
        wheels = c.call(["ls", f"{BUILD_DIR}/dist"], stream=False).output.split()
        built = [w for w in wheels if w.endswith(".whl")]
        if len(built) != 1:
            raise BuildError(f"expected one wheel from {self.spec.name}, got {built}")


# --- relocation (host side) ---------------------------------------------------------------

# A shebang that finds the interpreter beside the script, wherever the venv was moved. The
# first line is read by the kernel as "run /bin/sh"; the second by sh as an exec of bin/python
# next to the script's real location, and by Python as a harmless string.
_TRAMPOLINE = (
    "#!/bin/sh\n"
    "'''exec' \"$(dirname -- \"$(readlink -f -- \"$0\")\")/python\" \"$0\" \"$@\"\n"
    "' '''\n"
)

_ACTIVATE_FIND = """\
# giftbox: the venv is relocatable; find it from this file's location.
if [ -n "${BASH_SOURCE-}" ]; then
    _giftbox_here="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION-}" ]; then
    _giftbox_here="${(%):-%x}"
else
    _giftbox_here="$0"
fi
VIRTUAL_ENV="$(cd "$(dirname -- "$_giftbox_here")/.." && pwd -P)"
unset _giftbox_here
"""


def _write_result(path: Path, result: BuildResult) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    tmp.replace(path)


def _replace(path: Path, data: bytes) -> None:
    """Write by rename, never in place: build venvs hard-link the deps layer's files."""
    tmp = path.with_name(f".{path.name}.giftbox-tmp")
    tmp.write_bytes(data)
    shutil.copymode(path, tmp)
    tmp.replace(path)


def _package_modes(layer: Path) -> None:
    """The modes a package gives the deps layer's files (0644/0755, extensions not
    executable), given once to the layer: packaging stages its files by hard link and must
    otherwise copy every file whose mode it changes (a chmod there would reach every build)."""
    marker = layer / "modes-normalised"
    if not marker.exists():
        from giftbox.package.layout import _normalise_modes

        _normalise_modes(layer / "venv")
        marker.write_text("")


def link_tree(src: Path, dst: Path) -> None:
    """``dst`` as a copy of ``src`` made of hard links (directories are new, files shared)."""
    dst.rmdir()
    shutil.copytree(src, dst, symlinks=True, copy_function=os.link)


def project_paths(site: Path, dist_name: str) -> list[Path]:
    """The top-level files and directories the project's own wheel installed."""
    wanted = canonicalize_name(dist_name)
    for info in site.glob("*.dist-info"):
        if canonicalize_name(info.name[: -len(".dist-info")].rsplit("-", 1)[0]) != wanted:
            continue
        tops = set()
        for line in (info / "RECORD").read_text().splitlines():
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first and not first.startswith("..") and not first.endswith(".dist-info"):
                tops.add(first)
        return sorted(site / t for t in tops if (site / t).exists())
    raise BuildError(f"{dist_name} is not installed in {site}")


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise BuildError(f"no site-packages under {venv}")
    return found[0]


def relocate(venv: Path, prefix: str) -> None:
    """Make scripts and activate find the venv relative to themselves; drop build paths."""
    bin_dir = venv / "bin"
    shebangs = (f"#!{prefix}/bin/python".encode(), b"#!/bin/sh\n'''exec' " +
                f"{prefix}/bin/python".encode())
    changed: set[Path] = set()  # rewritten files whose RECORD entries need a new hash
    for script in sorted(bin_dir.iterdir()):
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(shebangs[0]):
            body = data.split(b"\n", 1)[1] if b"\n" in data else b""
        elif data.startswith(b"#!/bin/sh\n'''exec' "):
            body = data.split(b"\n", 3)[3]  # pip's and uv's long-shebang form
        else:
            continue
        if _TRAMPOLINE.encode() + body != data:  # a deps layer's scripts are done already
            _replace(script, _TRAMPOLINE.encode() + body)
            changed.add(script)
    activate = bin_dir / "activate"
    if activate.is_file():
        text = activate.read_text()
        if "_giftbox_here" in text:
            text = ""  # already made relocatable (a deps layer)
        # Whatever the virtualenv version computed (old ones: the build path; newer ones:
        # the build path if it exists, which is wrong beside another version), override it
        # just before it is exported. The newer "does not exist!" warning goes too.
        text = re.sub(r"^\s*echo \"Virtual environment directory\".*\n", "", text, flags=re.M)
        if text:
            text, count = re.subn(r"^(\s*)export VIRTUAL_ENV$",
                                  lambda m: _ACTIVATE_FIND + m.group(0), text, count=1,
                                  flags=re.M)
            if count != 1:
                raise BuildError("cannot make bin/activate relocatable: no 'export VIRTUAL_ENV'"
                                 " line (virtualenv changed its activate script?)")
            _replace(activate, text.encode())
    # Build tools' litter in the venv root: virtualenv's .gitignore and CACHEDIR.TAG (the
    # latter makes backup tools skip an installed service), uv's world-writable .lock.
    for litter in (".gitignore", "CACHEDIR.TAG", ".lock"):
        (venv / litter).unlink(missing_ok=True)
    site = _site_packages(venv)
    removed: set[Path] = set()
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        if '"file://' in direct_url.read_text():
            # Names the builder's dist/ directory: a build path, and useless on the target.
            direct_url.unlink()
            removed.add(direct_url)
    for cache_note in site.glob("*.dist-info/uv_cache.json"):
        # uv's cache bookkeeping: the wall-clock time of the install (two builds of the same
        # inputs would differ), nothing the installed distribution needs.
        cache_note.unlink()
        removed.add(cache_note)
    fix_records(site, changed, removed)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def fix_records(site: Path, changed: set[Path], removed: set[Path], *,
                bytecode: bool = False) -> None:
    """Keep every dist-info's RECORD true to the tree: entries of ``removed`` files and of
    files that are not there go (virtualenv's seeder lists .pyc files outside __pycache__ and
    directories), entries of ``changed`` files get their new hash and size (PEP 376/627), and
    with ``bytecode`` so do the .pyc files a wheel shipped and compileall rewrote (numpy's);
    the rest of each line is kept byte for byte. Only RECORDs that change are rewritten (by
    rename)."""
    for record in sorted(site.glob("*.dist-info/RECORD")):
        text = record.read_text()
        out: list[str] = []
        edited = False
        for line in text.splitlines():
            row = next(csv.reader([line]), [])
            target = Path(os.path.normpath(site / row[0])) if row else None
            if target is not None and (target in removed or not target.is_file()):
                edited = True
                continue
            if target is not None and len(row) >= 3 and row[1] and (
                    target in changed or (bytecode and target.suffix == ".pyc")):
                data = target.read_bytes()
                if row[1] != _record_hash(data) or row[2] != str(len(data)):
                    buf = io.StringIO()
                    csv.writer(buf, lineterminator="").writerow(
                        [row[0], _record_hash(data), str(len(data))])
                    line, edited = buf.getvalue(), True
            out.append(line)
        if edited:
            _replace(record, ("\n".join(out) + "\n").encode())


def timestamp_pycs(venv: Path) -> list[Path]:
    """The .pyc files under ``venv`` that embed their source's mtime (PEP 552 flags 0)."""
    found = []
    for pyc in sorted(venv.rglob("*.pyc")):
        with pyc.open("rb") as fh:
            header = fh.read(8)
        if len(header) == 8 and int.from_bytes(header[4:8], "little") & 1 == 0:
            found.append(pyc)
    return found


def place_rootwrap_filters(venv: Path, spec: Spec, source_tree: Path) -> None:
    """Put the project's rootwrap filters where the package installs them from
    (giftbox.package.layout.rootwrap_share): from the wheel's data files (pbr installs
    etc/<project>/rootwrap.d into the venv), else from the source tree."""
    if spec.package.rootwrap is None:
        return
    target = venv / rootwrap_share(spec.name)
    for candidate in (venv / "etc" / spec.name / "rootwrap.d",
                      source_tree / "etc" / spec.name / "rootwrap.d"):
        if candidate.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(candidate, target, dirs_exist_ok=True)
            return
    raise BuildError(f"{spec.name} declares package.rootwrap but ships no rootwrap filters "
                     f"(etc/{spec.name}/rootwrap.d in its wheel or source)",
                     hint=f"drop package.rootwrap from specs/{spec.name}.yaml, or add the "
                          "filters with a patch")


def write_bindings_shim(site: Path, spec: Spec, distro: Distro) -> None:
    """Let the venv import exactly the named distro-only bindings, and nothing else of the
    distro's site-packages (``include-system-site-packages`` would expose all of it)."""
    modules = [b.module for b in spec.package.system_bindings if distro.family in b.packages]
    if not modules:
        return
    if distro.family == "deb":
        dirs = ["/usr/lib/python3/dist-packages"]
    else:
        dirs = [f"/usr/lib64/python{distro.python}/site-packages",
                f"/usr/lib/python{distro.python}/site-packages"]
    (site / "_giftbox_system_bindings.py").write_text(
        '"""Generated by giftbox: import the distro-only bindings '
        f'{", ".join(modules)} from the distro."""\n\n'
        "import importlib.machinery\nimport sys\n\n"
        f"MODULES = {tuple(modules)!r}\nDIRS = {dirs!r}\n\n\n"
        "class _Finder:\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        "        if path is None and name.startswith(MODULES):\n"
        "            return importlib.machinery.PathFinder.find_spec(name, DIRS)\n"
        "        return None\n\n\n"
        "sys.meta_path.append(_Finder)\n")
    (site / "_giftbox_system_bindings.pth").write_text("import _giftbox_system_bindings\n")
    # (both files are new in each build venv: writing them does not touch the deps layer)


def build(spec: Spec, distro: Distro, arch: Arch, settings: Settings,
          reporter: Reporter = NULL_REPORTER, ref: str | None = None) -> BuildResult:
    return Builder(spec, distro, arch, settings, reporter, ref).run()


def make_lock(spec: Spec, distro: Distro, arch: Arch, settings: Settings,
              reporter: Reporter = NULL_REPORTER) -> Path:
    return Builder(spec, distro, arch, settings, reporter).make_lock()

