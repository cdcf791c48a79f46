"""The build stage: a locked, audited, relocatable virtualenv inside the target's builder.

Flow for one target (project, distro, arch):

1. resolve the upstream (no checkout) and ensure the builder image;
2. read the project's requirements from git, check Python compatibility and that the
   committed lock is fresh;
3. key the build by the digest of every input (the ``Plan``); an existing complete build with
   that key is a cache hit and costs well under a second;
4. otherwise, in the builder: fill the wheelhouse (per release+distro+arch+Python) with what
   it lacks, hashes required (``giftbox.fill``); create the venv at its final prefix (paths
   right by construction); install the lock offline (``giftbox.installer``: uv where the
   builder has it, pip otherwise); build the patched project's wheel with ``build``,
   offline, from the same wheelhouse; install it;
5. on the host: make the venv relocatable and drop install-time build paths
   (``giftbox.relocate``), add the shim through which the venv sees the distro-only bindings
   (``giftbox.bindings``);
6. back in the builder: compile hash-based bytecode, then the audit gate (giftbox.audit).

The ``BuildResult`` carries the ``Target`` and the ``PackageVersion`` it was built for, as
values: packaging takes them from there rather than reading them back from the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from giftbox import __version__, audit, bindings, lock, source, trash
from giftbox.builders import BuilderImage, ensure
from giftbox.bytecode import BytecodeCache, python_sources
from giftbox.container import CommandFailed, Container
from giftbox.distros import Arch, Distro
from giftbox.engine import Engine, engine_for
from giftbox.errors import BuildError, GiftboxError
from giftbox.family import DEB
from giftbox.files import write_atomic
from giftbox.gitutil import locked
from giftbox.installer import Installer
from giftbox.layer import (
    BUILD_DIR,
    CACHE_DIR,
    LOCK_NAME,
    RECIPE,
    SRC_DIR,
    TOOLS,
    WHEELHOUSE_DIR,
    BuilderSteps,
    build_packages,
    key_of,
    tool_cache,
    wheelhouse_dir,
)
from giftbox.manifest import BuildRecord, Manifest, PatchInfo
from giftbox.package.layout import PRESTAGED, install_prefix, prestage, rootwrap_share
from giftbox.package.lint import LintianAhead
from giftbox.patches import spec_series_digest
from giftbox.relocate import (
    fix_records,
    link_tree,
    own_files,
    project_paths,
    relocate,
    site_packages,
    timestamp_pycs,
)
from giftbox.settings import Settings
from giftbox.spec import Spec
from giftbox.targets import Target
from giftbox.ui import NULL_REPORTER, Reporter
from giftbox.versions import PackageVersion, for_target

__all__ = [
    "LOCK_NAME", "RECIPE", "BuildResult", "Builder", "Plan", "build", "build_requirements_locked",
    "check_python", "fix_records", "link_tree", "make_lock", "place_rootwrap_filters",
    "project_paths", "relocate", "timestamp_pycs", "write_bindings_shim",
]

# Where the project's wheel is built: a tmpfs of the build container's own, over the bind
# mount of the work directory (its files are scratch: only the wheel in dist/ is kept).
WHEEL_TMPFS = f"{BUILD_DIR}/src"


@dataclass(frozen=True)
class BuildResult:
    target: Target
    version: PackageVersion  # the package version of this build, for the target's family
    key: str
    directory: Path
    venv_dir: Path  # its contents are the venv as installed at manifest.prefix
    manifest: Manifest
    manifest_path: Path
    log_path: Path
    cached: bool
    timings: dict[str, float] = field(default_factory=dict)
    build_id: int | None = None  # in the build records

    @property
    def prefix(self) -> str:
        """Where the venv was built, and where the package installs it."""
        return self.manifest.prefix

    def as_dict(self) -> dict[str, object]:
        t = self.target
        return {"build_id": self.build_id, "project": t.spec.name, "distro": t.distro.name,
                "arch": t.arch.value,
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


@dataclass(frozen=True)
class Plan:
    """One build: its target, its inputs as resolved before the cache is asked, and the
    places it works in. What the steps of a fresh build share; its ``key`` is the digest of
    every input the venv stage reads (design invariant 8)."""

    target: Target
    settings: Settings
    upstream: source.Upstream
    image: BuilderImage
    meta: lock.ProjectMeta
    lock_text: str  # the committed lock, checked fresh
    started: str  # ISO 8601, UTC

    @property
    def spec(self) -> Spec:
        return self.target.spec

    @property
    def pins_text(self) -> str:
        """The lock's pins without hashes (``BUILD_DIR/pins.txt``): what is installed, and
        the constraints the project's wheel is built under."""
        return lock.pins_text(lock.pins(self.lock_text))

    @cached_property
    def lock_digest(self) -> str:
        return hashlib.sha256(self.lock_text.encode()).hexdigest()

    @cached_property
    def patch_digest(self) -> str:
        return spec_series_digest(self.spec)

    @cached_property
    def version(self) -> PackageVersion:
        distro = self.target.distro
        return for_target(self.upstream.version, self.spec.package.release,
                          len(self.spec.patches), self.patch_digest, distro.family,
                          distro.version_tag)

    @cached_property
    def prefix(self) -> str:
        return install_prefix(self.spec, self.version)

    @cached_property
    def key(self) -> str:
        spec, t = self.spec, self.target
        return key_of({
            "recipe": RECIPE, "giftbox": __version__, "commit": self.upstream.commit,
            "patches": self.patch_digest, "lock": self.lock_digest,
            "image": self.image.image_id, "distro": t.distro.name, "arch": t.arch.value,
            "prefix": self.prefix,
            "bindings": [b.module for b in spec.package.system_bindings],
            "version": self.version.as_dict(),
            # what else the venv stage reads from the spec (packaging fields are the package's
            # key, giftbox.package.package_key): filters copied for rootwrap, the audit gate's
            # opt-outs, the spec's extra build packages
            "rootwrap": spec.package.rootwrap is not None,
            "audit": dataclasses.asdict(spec.audit), "build_packages": build_packages(t),
        })

    # -- where it works ----------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self.settings.root / "build" / self.spec.name / self.target.slug / self.key[:16]

    @property
    def result_path(self) -> Path:
        """Written last: the build is complete only once this exists."""
        return self.directory / "result.json"

    @property
    def log_path(self) -> Path:
        return self.directory / "build.log"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def venv_dir(self) -> Path:
        return self.directory / "venv"

    @property
    def tree_dir(self) -> Path:
        """The patched source tree, when the project's wheel is not cached."""
        return self.directory / "src"

    @property
    def wheelhouse(self) -> Path:
        return wheelhouse_dir(self.settings, self.target)

    @property
    def tool_cache(self) -> Path:
        return tool_cache(self.settings, self.target)

    @property
    def env(self) -> dict[str, str]:
        """The environment of every command of the build inside the builder."""
        # Compilers record the directory they ran in (DWARF comp_dir, __FILE__): map the
        # builder's directories away so no build path reaches the venv (the audit checks).
        prefix_maps = " ".join(f"-ffile-prefix-map={d}=." for d in (f"{BUILD_DIR}/src", "/tmp"))
        return {"SOURCE_DATE_EPOCH": str(self.upstream.source_date_epoch),
                "PYTHONHASHSEED": "0", "CFLAGS": prefix_maps, "CXXFLAGS": prefix_maps,
                "PIP_CACHE_DIR": f"{CACHE_DIR}/pip", "UV_CACHE_DIR": f"{CACHE_DIR}/uv",
                "UV_LINK_MODE": "copy", "PIP_NO_INPUT": "1"}

    # -- the project's own wheel -------------------------------------------------------

    @cached_property
    def wheel_in_venv(self) -> bool:
        """Whether the project's wheel is built in the deps venv (the lock pins every build
        requirement) rather than by ``build`` in an isolated env."""
        return build_requirements_locked(self.meta.build_requirements, self.lock_text)

    @cached_property
    def wheel_key(self) -> str:
        # The project's wheel depends on the patched source and the build tools (lock, image)
        # only: a build whose other inputs changed (prefix, bindings) reuses it.
        return key_of({"recipe": RECIPE, "commit": self.upstream.commit,
                     "patches": self.patch_digest, "lock": self.lock_digest,
                     "image": self.image.image_id, "version": self.upstream.version,
                     "isolated": not self.wheel_in_venv})

    @property
    def wheel_cache(self) -> Path:
        return (self.settings.cache_dir / "wheels" / f"{self.spec.name}-{self.target.slug}"
                / self.wheel_key[:16])


class Builder(BuilderSteps):
    """One build of one project for one distro and arch (its deps layer: giftbox.layer).

    ``engine``: the command's, lent to ``ensure`` and every container of the build (left
    open); without one each makes its own."""

    def __init__(self, spec: Spec, distro: Distro, arch: Arch, settings: Settings,
                 reporter: Reporter = NULL_REPORTER, ref: str | None = None, *,
                 engine: Engine | None = None,
                 alongside: Callable[[BuildResult], None] | None = None) -> None:
        # Target refuses an arch the distro does not build.
        super().__init__(Target(spec, distro, arch), settings, reporter, engine)
        self.ref = ref
        # Work on the venv done while the audit's console scripts run (the pipeline's
        # packaging): given the build as it will be if the audit passes, before result.json
        # is written; what it made is removed when the audit fails (_audit).
        self.alongside = alongside
        # What alongside raised, when the audit passed: the build is complete and recorded
        # as it would be without alongside, then this is raised (a packaging error leaves a
        # cached build, as when packaging follows the build).
        self.alongside_failed: BaseException | None = None

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
                           self.reporter, engine=self.engine)
            constraints = lock.read_constraints(spec, self.settings)
            inputs = lock.lock_inputs(spec, meta, constraints, self.distro, self.arch)
        return upstream, image, meta, inputs

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
        work = self.settings.cache_dir / "lock-work" / f"{self.spec.name}-{self.target.slug}"
        # Two `giftbox lock` of one target share this directory: one waits for the other.
        with locked(work):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            cache = tool_cache(self.settings, self.target)
            wheelhouse = wheelhouse_dir(self.settings, self.target)
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
                               workdir=BUILD_DIR, engine=self.engine) as c:
                    body = lock.compile_lock(c, inputs, work, log_path)
        lock.write_lock(path, lock.lock_header(self.spec, self.distro, self.arch, inputs), body)
        self.reporter.detail(f"{len(lock.pins(body))} pinned requirements -> {path}")
        return path

    # -- the build -------------------------------------------------------------------------

    def plan(self) -> Plan:
        """The build's inputs, resolved and checked (the committed lock must be fresh)."""
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        upstream, image, meta, inputs = self.inputs()
        lock_file = lock.lock_path(self.settings, self.spec, self.distro, self.arch)
        lock_text = lock.check_fresh(lock_file, self.spec, self.distro, self.arch, inputs)
        return Plan(self.target, self.settings, upstream, image, meta, lock_text, started)

    def run(self) -> BuildResult:
        plan = self.plan()
        if plan.result_path.is_file():
            cached = self._load(plan)
            if cached is not None:
                self.reporter.info(f"==> cache hit: {self.spec.name} for {self.distro.name}/"
                                   f"{self.arch.value} (inputs {plan.key[:16]} unchanged)")
                return cached
        result = self._recorded(plan)
        if self.alongside_failed is not None:
            raise self.alongside_failed
        return result

    def _recorded(self, plan: Plan) -> BuildResult:
        """A fresh build, with its start and end in the build records."""
        from giftbox import records

        spec = self.spec
        build_id = records.start_build(
            self.settings, spec.name, self.distro.name, self.arch.value,
            upstream_commit=plan.upstream.commit, patch_digest=plan.patch_digest,
            lock_digest=plan.lock_digest, builder_image=plan.image.image_id,
            spec_digest=hashlib.sha256(spec.path.read_bytes()).hexdigest(),
            version=self.distro.family_obj.version(plan.version),
            log_path=str(plan.log_path))
        start = time.monotonic()
        try:
            result = self._fresh(plan)
        except BaseException as exc:
            message = exc.render() if isinstance(exc, BuildError) else \
                f"{type(exc).__name__}: {exc}"
            records.finish_build(self.settings, build_id, "failed", error=message[:4000],
                                 duration=round(time.monotonic() - start, 2))
            raise
        records.finish_build(self.settings, build_id, "succeeded",
                             duration=round(time.monotonic() - start, 2))
        result = dataclasses.replace(result, build_id=build_id)
        _write_result(plan.result_path, result)
        return result

    def _fresh(self, plan: Plan) -> BuildResult:
        """Every step of a build whose inputs have no complete build yet."""
        self._prepare(plan)
        layer = self._deps_layer(plan)

        def link() -> None:
            with self._timed("venv: link the deps layer"):
                link_tree(layer / "venv", plan.venv_dir)

        # cp -al of the layer's 20,000 files beside the builder container's start and the
        # checkout of the source: the link and the checkout are mostly the kernel's work, on
        # the two trees of the build directory, the start the engine's. The container mounts
        # the venv directory (the link fills it: nothing runs in the builder before the link
        # is through), and the build directory read-only at SRC_DIR, so the tree the checkout
        # renames into place there is in it. The stack is closed after the pool has joined:
        # a container still starting when the link or the checkout fails is removed all the
        # same. Once the build is through, the container is removed on a thread while the
        # build is packaged and published (0.3 s of the engine's); a failed build waits for
        # the removal.
        mounts = self.mounts(plan.work, plan.tool_cache, plan.wheelhouse, plan.directory,
                             plan.venv_dir, plan.prefix)

        def start(stack: contextlib.ExitStack) -> Container:
            return stack.enter_context(Container(
                plan.image, self.arch, self.settings, self.reporter, mounts=mounts,
                env=plan.env, workdir=BUILD_DIR, engine=self.engine, tmpfs=[WHEEL_TMPFS],
                remove_in_background=True))

        if self.alongside is not None and self.distro.family == DEB.name:
            # lintian compiles itself (about a second of perl on one core) from the build's
            # start, beside the link, the checkout and the wheel: the lint takes it
            LintianAhead.start()
        with contextlib.ExitStack() as stack, ThreadPoolExecutor(2) as pool:
            linking = pool.submit(link)
            starting = pool.submit(start, stack)
            (plan.work / "pins.txt").write_text(plan.pins_text)
            src_record = self._project_source(plan)
            c = starting.result()
            linking.result()  # before anything runs in the builder's venv
            # which installer the builder has, asked while the wheel is built, not after it
            detecting = pool.submit(Installer.detect, c) if self._installer is None else None
            # the package's deps part staged while the builder makes the wheel on one core
            # (giftbox.package.layout.prestage); packaging alongside the audit takes it
            staging = pool.submit(prestage, layer / "venv", plan.directory, plan.prefix) \
                if self.alongside is not None else None
            self._project_wheel(c, plan, src_record)
            if detecting is not None:
                self._installer = detecting.result()
            site = self._install_project(c, plan)
            self._compile_project(c, plan, site)
            manifest = self._manifest(plan, src_record)
            self._audit(c, plan, layer, manifest, staging)
        for left in (PRESTAGED, f"{PRESTAGED}.partial"):  # what packaging did not take
            trash.discard(plan.directory / left, self.settings.cache_dir / "trash")
        return self._finish(plan, manifest)

    # -- the steps of a fresh build, in order ----------------------------------------------

    def _prepare(self, plan: Plan) -> None:
        """An empty build directory (an interrupted earlier attempt goes) and the shared
        caches the builder mounts."""
        if plan.directory.exists():
            shutil.rmtree(plan.directory)  # an interrupted earlier attempt
        plan.directory.mkdir(parents=True)
        plan.work.mkdir()
        plan.venv_dir.mkdir()
        plan.wheelhouse.mkdir(parents=True, exist_ok=True)
        plan.tool_cache.mkdir(parents=True, exist_ok=True)

    def _project_source(self, plan: Plan) -> dict[str, Any]:
        """The project's source record (patched head, patches): from the wheel cache, whose
        wheel is put in ``work/dist``, or from a checkout of the patched tree."""
        src_record = self._cached_wheel(plan.wheel_cache, plan.work)
        if src_record is not None:
            self.reporter.info(f"==> wheel {plan.wheel_key[:16]}: cached (source unchanged)")
            return src_record
        with self._timed("source: checkout and patch"):
            tree = source.checkout(self.spec, plan.upstream, plan.tree_dir, self.settings,
                                   self.reporter, linked=True)
        return {"head": tree.head, "patch_digest": tree.patch_digest,
                "patches": [p.as_dict() for p in tree.patches]}

    def _project_wheel(self, c: Container, plan: Plan, src_record: dict[str, Any]) -> None:
        """The project's wheel in ``work/dist``, built now unless it came from the cache."""
        if (plan.work / "dist").is_dir():
            return
        self._install_build_packages(c, plan.log_path)
        in_venv = plan.wheel_in_venv
        with self._timed(f"wheel: build {self.spec.name} "
                         f"{'in the deps venv' if in_venv else 'with build'}"):
            self._build_wheel(c, plan.upstream.version, plan.work, plan.log_path,
                              plan.prefix if in_venv else None)
        self._store_wheel(plan.wheel_cache, plan.work, src_record)

    def _install_project(self, c: Container, plan: Plan) -> Path:
        """The project's wheel installed into the venv, then the venv relocated, the
        bindings shim and the rootwrap filters added; returns its site-packages."""
        wheel = next((plan.work / "dist").glob("*.whl")).name
        with self._timed(f"install: {self.spec.name} into the venv"):
            self._install(c, plan.prefix, [f"{BUILD_DIR}/dist/{wheel}"], plan.log_path)
            site = site_packages(plan.venv_dir)
            relocate(plan.venv_dir, plan.prefix, plan.meta.name)
            write_bindings_shim(site, self.spec, self.distro)
            place_rootwrap_filters(plan.venv_dir, self.spec, plan.tree_dir)
        return site

    def _compile_project(self, c: Container, plan: Plan, site: Path) -> None:
        """Hash-based bytecode for what the build added to the linked deps layer."""
        with self._timed(f"bytecode: hash-based .pyc for {self.spec.name}"):
            paths = project_paths(site, plan.meta.name)
            shim = site / f"{bindings.SHIM_MODULE}.py"
            if shim.exists():
                paths.append(shim)
            cache = BytecodeCache(self.settings.cache_dir / "bytecode", plan.image.image_id,
                                  plan.venv_dir, plan.prefix)
            sources = python_sources(paths)
            todo, keys = cache.place(sources)
            self.reporter.detail(f"{len(todo)} of {len(sources)} modules to compile (the "
                                 "others' bytecode cached by the digest of their source)")
            self._compile(c, plan.prefix, [plan.prefix + "/" + str(p.relative_to(plan.venv_dir))
                                           for p in todo], plan.log_path)
            cache.store(keys)
            fix_records(site, set(), set(), bytecode=True, dist=plan.meta.name)

    def _audit(self, c: Container, plan: Plan, layer: Path, manifest: Manifest,
               staging: Future[None] | None = None) -> None:
        """The audit gate over the project, ``audit.json`` with the deps layer's report, and
        every .pyc hash-based. The builder's checks (pip check, imports, console scripts)
        run on a thread while the host reads the tree (forbidden paths, foreign ELF
        objects, timestamp-based bytecode) and then does ``alongside`` (the packaging), if
        the host found nothing wrong: a build waits for the longer of the two. The gate
        decides before anything is kept: when it refuses, what ``alongside`` made in the
        build directory goes, and the gate's refusal is the build's error. ``staging``: the
        prestage of the deps layer, awaited before ``alongside`` (packaging stages from
        nothing when it failed)."""
        spec, log_path = self.spec, plan.log_path
        forbidden = [BUILD_DIR, SRC_DIR, WHEELHOUSE_DIR, CACHE_DIR, str(self.settings.root),
                     str(self.settings.cache_dir)]
        verdicts = audit.script_verdicts(
            self.settings.cache_dir / "audit-scripts" / spec.name / f"{self.target.slug}.json",
            plan.venv_dir, plan.prefix, layer, plan.image.image_id)

        started = threading.Event()

        def in_builder() -> tuple[list[str], dict[str, Any]]:
            try:
                report = audit.run_scope(c, "project", plan.prefix, spec, plan.meta.name,
                                         plan.work, log_path, verdicts, started)  # pip check
            finally:
                started.set()  # also when it failed before the builder's checks started
            return audit.failures(report), report

        later: BaseException | None = None  # alongside's failure: the gate's verdict first
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(in_builder)
            # the console scripts (the longest of the builder's checks) start only once the
            # verdicts are read from the venv: that reading goes first, not beside the tree's
            started.wait()
            with self._timed("audit: the venv's tree"):
                own = own_files(plan.venv_dir, layer / "venv")  # what the layer does not hold
                tree_problems, tree_report = audit.tree_checks(
                    plan.venv_dir, self.arch, forbidden, shared=layer / "venv", own=own)
                stale = self._stale_bytecode(plan, layer, own)
            if self.alongside is not None and not tree_problems and not stale:
                failed = staging.exception() if staging is not None else None
                if failed is not None:
                    self.reporter.detail(f"staging ahead failed ({failed}): packaging stages "
                                         "the whole venv")
                try:
                    self.alongside(self._result(plan, manifest))
                except Exception as exc:  # the gate's verdict comes first (an interrupt: now)
                    later = exc
            with self._timed("audit: pip check, imports and console scripts"):
                problems, report = running.result()
        self.reporter.detail(audit.scripts_summary(report))
        try:
            audit.gate(spec, problems + tree_problems, log_path)
            if stale:
                raise BuildError(
                    f"{len(stale)} timestamp-based .pyc in the venv (their bytes change with "
                    f"every build), e.g. {stale[0].relative_to(plan.venv_dir)}",
                    hint="every .pyc must be hash-based: compile it with "
                         "--invalidation-mode checked-hash")
        except BuildError:
            shutil.rmtree(plan.directory / "package", ignore_errors=True)
            raise
        self.alongside_failed = later  # raised once the build is complete (run)
        (layer / "bytecode-checked").touch()  # the layer's own files were among those read
        deps = json.loads((layer / "audit-deps.json").read_text())
        for kind in ("imports", "extensions"):
            report[kind] = {**deps[kind], **report[kind]}
        full = {**report, **tree_report, "layer": layer.name}
        (plan.directory / "audit.json").write_text(json.dumps(full, indent=2) + "\n")

    def _stale_bytecode(self, plan: Plan, layer: Path, own: list[str]) -> list[Path]:
        """The timestamp-based .pyc files in the venv. The deps layer's files are read by the
        first build that links the layer (which then marks it) and skipped by the builds
        after (``own``: the venv's files that are not the layer's)."""
        if not (layer / "bytecode-checked").is_file():
            return timestamp_pycs(plan.venv_dir)
        return timestamp_pycs(plan.venv_dir, shared=layer / "venv", own=own)

    def _manifest(self, plan: Plan, src_record: dict[str, Any]) -> Manifest:
        spec, distro, upstream = self.spec, self.distro, plan.upstream
        return Manifest(
            project=spec.name, package_name=spec.package.name,
            upstream_kind=upstream.kind, upstream_url=upstream.url, upstream_ref=upstream.ref,
            upstream_commit=upstream.commit, upstream_version=upstream.version,
            upstream_sha256=upstream.sha256,
            patches=tuple(PatchInfo(p["name"], p["sha256"], p["subject"])
                          for p in src_record["patches"]),
            patch_digest=src_record["patch_digest"], source_commit=src_record["head"],
            lock_digest=plan.lock_digest,
            builder_image=plan.image.image_id, distro=distro.name, family=distro.family,
            arch=self.arch.value, python=distro.python, prefix=plan.prefix,
            version=plan.version.as_dict(), source_date_epoch=upstream.source_date_epoch,
            system_bindings=tuple(b.module for b in spec.package.system_bindings),
            depends=spec.package.depends.get(distro.family, ()))

    def _finish(self, plan: Plan, manifest: Manifest) -> BuildResult:
        """The manifest and build record written, scratch directories gone, the result."""
        plan.manifest_path.write_text(manifest.to_json())
        graveyard = self.settings.cache_dir / "trash"
        trash.discard(plan.work, graveyard)  # removed while packaging goes on
        trash.discard(plan.tree_dir, graveyard)
        record = BuildRecord(manifest=manifest, started_at=plan.started, timings=self.timings,
                             host=socket.gethostname(), log_path=str(plan.log_path))
        (plan.directory / "build.json").write_text(record.to_json())
        result = self._result(plan, manifest)
        _write_result(plan.result_path, result)  # the build is complete only once this exists
        return result

    def _result(self, plan: Plan, manifest: Manifest) -> BuildResult:
        return BuildResult(target=self.target, version=plan.version, key=plan.key,
                           directory=plan.directory, venv_dir=plan.venv_dir,
                           manifest=manifest, manifest_path=plan.manifest_path,
                           log_path=plan.log_path, cached=False, timings=self.timings)

    def _load(self, plan: Plan) -> BuildResult | None:
        """The complete build of ``plan``'s inputs, or None (and the build is made again)
        when what it left cannot be read: a result or manifest from another giftbox, a
        truncated file, a manifest whose version is not the plan's."""
        path = plan.result_path
        try:
            data = json.loads(path.read_text())
            directory = Path(data["directory"])
            manifest_path = directory / "manifest.json"
            manifest = Manifest.read(manifest_path)
            if manifest.version != plan.version.as_dict():
                raise ValueError("its manifest's version is not this build's")
            return BuildResult(target=self.target, version=plan.version, key=data["key"],
                               directory=directory, venv_dir=Path(data["venv"]),
                               manifest=manifest, manifest_path=manifest_path,
                               log_path=Path(data["log"]), cached=True, timings=self.timings,
                               build_id=data.get("build_id"))
        except (OSError, ValueError, KeyError, TypeError, GiftboxError) as exc:
            why = exc.message if isinstance(exc, GiftboxError) else str(exc)[:200]
            self.reporter.detail(f"{path} cannot be read ({why}): building again")
            return None

    # -- the project's wheel in the builder ------------------------------------------------------------

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

    def _build_wheel(self, c: Container, upstream_version: str, work: Path, log_path: Path,
                     prefix: str | None = None) -> None:
        """The project's wheel into ``BUILD_DIR/dist``. With ``prefix`` (every build
        requirement is pinned by the lock, so the deps venv there holds exactly the versions
        an isolated build env would get from the same pins): built in that venv without an
        isolated env, pip checking the build requirements (static and dynamic) are met;
        otherwise with ``build`` in an isolated env filled offline from the wheelhouse."""
        # A private, writable copy: pbr and setuptools write into the tree they build. It
        # goes to the container's tmpfs at BUILD_DIR/src (WHEEL_TMPFS): setuptools copies
        # every module twice (build/lib, then the bdist dir) before zipping them, which on
        # the host's disk cost more than the build itself.
        # SRC_DIR is the build directory (read-only): the checkout is its src/ (Plan.tree_dir).
        # One exec for the step (an exec costs the engine a round trip and a runc start): the
        # last attempt's dist/ removed, the copy made, then the build exec'ed in its place.
        prepare = ["sh", "-c", 'rm -rf -- "$1" && cp -a -- "$2" "$3" && shift 3 && exec "$@"',
                   "sh", f"{BUILD_DIR}/dist", f"{SRC_DIR}/src/.", f"{BUILD_DIR}/src/"]
        env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE_DIR,
               "PIP_CONSTRAINT": f"{BUILD_DIR}/pins.txt",
               # Patches add commits on top of the release: keep the upstream version.
               "PBR_VERSION": upstream_version,
               "SETUPTOOLS_SCM_PRETEND_VERSION": upstream_version}
        if prefix is not None:
            # The backend called directly (data/build_wheel.py: pip's checks of the build
            # requirements, less pip's start and its metadata pass). -B and
            # PYTHONDONTWRITEBYTECODE: the build imports setuptools from the venv and must
            # leave no bytecode of its own there.
            (work / "build_wheel.py").write_bytes(
                (resources.files("giftbox") / "data" / "build_wheel.py").read_bytes())
            argv = [f"{prefix}/bin/python", "-B", f"{BUILD_DIR}/build_wheel.py",
                    f"{BUILD_DIR}/src", f"{BUILD_DIR}/dist"]
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            # pbr would write AUTHORS and ChangeLog from the history of giftbox's checkout
            # (an import commit and the patches); pip's metadata pass kept the sdist's
            # AUTHORS in the wheel, and so does this: its members are pip's, byte for byte.
            env["SKIP_GENERATE_AUTHORS"] = "1"
            env["SKIP_WRITE_GIT_CHANGELOG"] = "1"
        else:
            argv = [f"{TOOLS}/python", "-m", "build", "--wheel", "--outdir", f"{BUILD_DIR}/dist",
                    f"{BUILD_DIR}/src"]
        try:
            c.call(prepare + argv, env=env, log_path=log_path, stream=self.settings.verbose)
        except CommandFailed as exc:
            raise BuildError(f"building {self.spec.name}'s wheel failed:\n"
                             + "\n".join(exc.output.splitlines()[-20:]),
                             hint=f"full log: {log_path}") from None
        dist = work / "dist"  # BUILD_DIR is ``work``, bind-mounted
        built = sorted(w.name for w in dist.iterdir() if w.name.endswith(".whl")) \
            if dist.is_dir() else []
        if len(built) != 1:
            raise BuildError(f"expected one wheel from {self.spec.name}, got {built}")


# --- host side: the venv tree (relocation itself is giftbox.relocate) ----------------------


def _write_result(path: Path, result: BuildResult) -> None:
    write_atomic(path, json.dumps(result.as_dict(), indent=2, default=str) + "\n")


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
    bindings.write_shim(site, modules, list(distro.family_obj.bindings_dirs(distro.python)))


def build(spec: Spec, distro: Distro, arch: Arch, settings: Settings,
          reporter: Reporter = NULL_REPORTER, ref: str | None = None, *,
          engine: Engine | None = None,
          alongside: Callable[[BuildResult], None] | None = None) -> BuildResult:
    """One build through one engine connection: ``engine`` (left open), else its own.
    ``alongside``: done while a fresh build's console scripts are audited (Builder)."""
    with engine_for(settings, engine) as engine:
        return Builder(spec, distro, arch, settings, reporter, ref, engine=engine,
                       alongside=alongside).run()


def make_lock(spec: Spec, distro: Distro, arch: Arch, settings: Settings,
              reporter: Reporter = NULL_REPORTER, *, engine: Engine | None = None) -> Path:
    with engine_for(settings, engine) as engine:
        return Builder(spec, distro, arch, settings, reporter, engine=engine).make_lock()
