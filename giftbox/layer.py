"""The deps layer: a venv with the lock's dependencies installed, relocated, compiled and
audited, made once per lock and builder and hard-linked into every build of the project.

It is keyed by the lock, the builder image, the prefix, the Python, the project's name (whose
own line the deps audit leaves out), the audit's import opt-outs and the spec's extra build
packages, so a build whose lock did not change links its files and adds only the project
(``giftbox.build``). On disk: ``<cache>/layers/<target slug>/<key[:16]>/`` with ``venv/`` and
``audit-deps.json``, the latter written last: a layer without it is made again.

``BuilderSteps`` holds the steps inside the builder that the layer and the project's part of
a build share (timed stages, mounts, the spec's build packages, bytecode, installs); the
``Builder`` is one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from giftbox import audit, lock
from giftbox import wheelhouse as wheelhouses
from giftbox.builders import BuilderImage
from giftbox.container import CommandFailed, Container, Mount
from giftbox.engine import Engine
from giftbox.errors import BuildError
from giftbox.fill import WheelhouseFill
from giftbox.gitutil import locked
from giftbox.installer import Installer
from giftbox.relocate import fix_records, relocate, site_packages
from giftbox.settings import Settings
from giftbox.targets import Target
from giftbox.ui import NULL_REPORTER, Reporter

TOOLS = lock.TOOLS
BUILD_DIR = lock.BUILD_DIR
SRC_DIR = lock.SRC_DIR
WHEELHOUSE_DIR = lock.WHEELHOUSE_DIR
CACHE_DIR = lock.CACHE_DIR
LOCK_NAME = "giftbox-lock.txt"  # in the venv root, beside giftbox-manifest.json
# Bumped when the way a venv is assembled changes, so old cache entries are not reused.
RECIPE = "7"


def key_of(parts: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def wheelhouse_target(target: Target) -> wheelhouses.Target:
    """The wheelhouse ``target`` builds from: its release's, for its distro and arch."""
    return wheelhouses.Target(target.spec.release, target.distro, target.arch)


def wheelhouse_dir(settings: Settings, target: Target) -> Path:
    return wheelhouses.directory(settings, wheelhouse_target(target))


def tool_cache(settings: Settings, target: Target) -> Path:
    return settings.cache_dir / "builder-cache" / f"{target.slug}-py{target.distro.python}"


def build_packages(target: Target) -> list[str]:
    """The spec's extra build packages for this family, and for this family on this arch
    (``package.build_depends``: ``deb``, ``deb/ppc64le``), added to the builder's own."""
    family = target.distro.family
    wanted = target.spec.package.build_depends
    names = {d.split("(")[0].strip()  # a version constraint is for the package's Depends
             for d in (*wanted.get(family, ()), *wanted.get(f"{family}/{target.arch.value}", ()))}
    return sorted(names - set(target.distro.build_packages))


class LayerPlan(Protocol):
    """What the layer reads of a build's plan (``giftbox.build.Plan`` is one)."""

    @property
    def image(self) -> BuilderImage: ...
    @property
    def meta(self) -> lock.ProjectMeta: ...
    @property
    def lock_text(self) -> str: ...
    @property
    def lock_digest(self) -> str: ...
    @property
    def pins_text(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def log_path(self) -> Path: ...
    @property
    def tool_cache(self) -> Path: ...
    @property
    def wheelhouse(self) -> Path: ...
    @property
    def env(self) -> dict[str, str]: ...


def package_modes(layer: Path) -> None:
    """The modes a package gives the deps layer's files (0644/0755, extensions not
    executable), given once to the layer: packaging stages its files by hard link and must
    otherwise copy every file whose mode it changes (a chmod there would reach every build)."""
    marker = layer / "modes-normalised"
    if not marker.exists():
        from giftbox.package.layout import _normalise_modes

        _normalise_modes(layer / "venv")
        marker.write_text("")


class BuilderSteps:
    """The steps inside one target's builder that the deps layer and the project share."""

    def __init__(self, target: Target, settings: Settings, reporter: Reporter = NULL_REPORTER,
                 engine: Engine | None = None) -> None:
        self.target = target
        self.spec = target.spec
        self.distro = target.distro
        self.arch = target.arch
        self.settings = settings
        self.reporter = reporter
        self.engine = engine  # the command's, lent to every container and ensure (or None)
        self.timings: dict[str, float] = {}
        self._installer: Installer | None = None  # chosen in the first container that installs

    @contextlib.contextmanager
    def _timed(self, label: str) -> Iterator[None]:
        """A reported stage whose duration lands in ``timings`` under its short name."""
        start = time.monotonic()
        with self.reporter.stage(label):
            yield
        self.timings[label.split(":")[0]] = round(
            self.timings.get(label.split(":")[0], 0) + time.monotonic() - start, 2)

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

    # -- the deps layer ----------------------------------------------------------------------

    def _layer_key(self, plan: LayerPlan) -> str:
        parts: dict[str, object] = {
            "recipe": RECIPE, "lock": plan.lock_digest, "image": plan.image.image_id,
            "prefix": plan.prefix, "python": self.distro.python, "project": plan.meta.name,
            "skip_imports": list(self.spec.audit.skip_imports)}
        if self.build_packages():  # only then: existing layers keep their keys
            parts["build_packages"] = self.build_packages()
        return key_of(parts)

    def _deps_layer(self, plan: LayerPlan) -> Path:
        """The venv with the locked dependencies installed, relocated, compiled and audited.

        It depends only on the lock, the builder image, the prefix and the project's name
        (whose own line the deps audit leaves out), so every build of a project whose lock did
        not change reuses it: builds hard-link its files and add only the project.
        """
        key = self._layer_key(plan)
        layer = self.settings.cache_dir / "layers" / self.target.slug / key[:16]
        with locked(layer):
            if (layer / "audit-deps.json").is_file():
                self.reporter.info(f"==> deps layer {key[:16]}: cached")
                package_modes(layer)
                return layer
            tmp = layer.with_name(f"{layer.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(layer, ignore_errors=True)
            self._make_layer(plan, tmp)
            package_modes(tmp)
            tmp.rename(layer)
            return layer

    def _make_layer(self, plan: LayerPlan, tmp: Path) -> None:
        """The deps layer built in ``tmp``: ``venv/`` and ``audit-deps.json``."""
        spec, prefix, log_path = self.spec, plan.prefix, plan.log_path
        venv = tmp / "venv"
        work = tmp / "work"
        venv.mkdir(parents=True)
        work.mkdir()
        (work / "pins.txt").write_text(plan.pins_text)
        mounts = self.mounts(work, plan.tool_cache, plan.wheelhouse, None, venv, prefix)
        with Container(plan.image, self.arch, self.settings, self.reporter, mounts=mounts,
                       env=plan.env, workdir=BUILD_DIR, engine=self.engine) as c:
            self._install_build_packages(c, log_path)
            with self._timed("wheelhouse: fill from the lock"):
                WheelhouseFill(c, wheelhouse_target(self.target), self.settings,
                               self.reporter, log_path).run(plan.lock_text, work)
            with self._timed("venv: create and install the lock offline"):
                self._create_venv(c, prefix, log_path)
                relocate(venv, prefix)
                # What is in the venv, pinned with hashes: travels with every package
                # (an SBOM for operators; what `giftbox diff` compares between builds).
                (venv / LOCK_NAME).write_text(plan.lock_text)
            with self._timed("bytecode: hash-based .pyc for the dependencies"):
                self._compile(c, prefix, [f"{prefix}/lib"], log_path)
                fix_records(site_packages(venv), set(), set(), bytecode=True)
            with self._timed("audit: the dependencies"):
                report = audit.run_scope(c, "deps", prefix, spec, plan.meta.name, work,
                                         log_path)
                audit.gate(spec, audit.failures(report), log_path)
        (tmp / "audit-deps.json").write_text(json.dumps(report, indent=2) + "\n")
        shutil.rmtree(work)

    # -- steps inside the builder ------------------------------------------------------------

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
        return build_packages(self.target)

    def _install_build_packages(self, c: Container, log_path: Path) -> None:
        packages = self.build_packages()
        if not packages:
            return
        bad = [p for p in packages if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*", p)]
        if bad:
            raise BuildError(f"package.build_depends in {self.spec.path.name}: not a package "
                             f"name: {', '.join(bad)}", hint="plain names only, no versions")
        steps = self.distro.family_obj.install_commands(packages)
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

    def _create_venv(self, c: Container, prefix: str, log_path: Path) -> None:
        """virtualenv at the final prefix with the builder's pinned virtualenv, then the lock
        installed offline from the wheelhouse (hashes were checked when it was filled)."""
        python = f"/usr/bin/python{self.distro.python}"
        c.call([f"{TOOLS}/virtualenv", "--no-setuptools", "--no-wheel", "--no-periodic-update",
                "--activators", "bash,python", "--python", python, prefix],
               log_path=log_path, stream=False)
        self._install(c, prefix, ["-r", f"{BUILD_DIR}/pins.txt"], log_path)

    def _install(self, c: Container, prefix: str, what: list[str], log_path: Path) -> None:
        if self._installer is None:  # one builder image per build: asked once
            self._installer = Installer.detect(c)
        self._installer.install(c, prefix, what, log_path)
