"""One target through the whole flow: build the venv, package it, publish it.

``giftbox build`` and ``giftbox nightly`` both go through ``run_target``. Packaging runs its
target-sensitive steps (dpkg-shlibdeps, the check that every runtime dependency exists in the
target's archive) inside the target's builder, so the answers are the target's, not the host's.
A package is keyed by its venv's key plus every packaging input (``giftbox.package.package_key``):
building again with nothing changed reuses it; a packaging edit (depends, units, config files,
user, rootwrap, entry points, description, lintian overrides, compression) repackages the
cached venv without rebuilding it.

A target's run holds one engine connection (``giftbox.engine.Engine``, made on first use):
the build's ``ensure``, its containers and packaging's all go through it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giftbox.build import BuildResult, build
from giftbox.distros import Arch, Distro
from giftbox.engine import Engine, engine_for
from giftbox.package import Artifact, Runner
from giftbox.settings import Settings
from giftbox.spec import Spec
from giftbox.targets import Catalog
from giftbox.ui import NULL_REPORTER, Reporter


@dataclass(frozen=True)
class PackageInfo:
    path: Path
    name: str
    version: str
    arch: str
    family: str
    size: int
    sha256: str
    packager: str
    compression: str
    depends: tuple[str, ...]
    cached: bool
    key: str = ""  # giftbox.package.package_key: the venv's key plus every packaging input

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.name, "version": self.version,
                "arch": self.arch, "family": self.family, "size": self.size,
                "sha256": self.sha256, "packager": self.packager,
                "compression": self.compression, "depends": list(self.depends),
                "cached": self.cached, "key": self.key}


@dataclass(frozen=True)
class TargetResult:
    build: BuildResult
    package: PackageInfo | None
    published: list[str]  # channels it was published to

    def as_dict(self) -> dict[str, Any]:
        return {"build": self.build.as_dict(),
                "package": self.package.as_dict() if self.package else None,
                "published": self.published}


def _cached_package(folder: Path, key: str) -> PackageInfo | None:
    """The package made from exactly these inputs, if it is complete (``package.json`` is
    written last) and its file is the one recorded."""
    record = folder / "package.json"
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
        path = folder / Path(data["path"]).name  # beside its record, wherever the tree moved
        if data.get("key") != key or not path.is_file() or path.stat().st_size != data["size"]:
            return None
        data["path"] = path
        data["depends"] = tuple(data["depends"])
        data["cached"] = True
        return PackageInfo(**data)
    except (ValueError, KeyError, TypeError):
        return None  # a record from another giftbox: package again


def check_against_tree(spec: Spec, settings: Settings, family: str,
                       catalog: Catalog | None = None) -> None:
    """Refuse a package that would install a file another spec's package installs too."""
    from giftbox.package import check_conflicts

    catalog = catalog or Catalog.load(settings)
    others = [catalog.spec(name) for name in catalog.projects() if name != spec.name]
    check_conflicts([spec, *others], family=family)


def package_build(result: BuildResult, spec: Spec, distro: Distro, arch: Arch,
                  settings: Settings, reporter: Reporter = NULL_REPORTER, *,
                  packager: str = "auto", compression: str | None = None,
                  compression_level: int | None = None, runner: Runner | None = None,
                  lint: bool = True, catalog: Catalog | None = None,
                  engine: Engine | None = None,
                  after_archive: Callable[[Path], None] | None = None) -> PackageInfo:
    """The .deb/.rpm of ``result``, made once per set of packaging inputs.

    ``runner`` is where dpkg-shlibdeps and the archive check run: the target's builder when
    None (production); a test on a host of the target's distro may pass ``HostRunner()``.
    ``lint=False`` (tests and benchmarks) is part of the key: never served to a linted call.
    ``engine``: the command's (left open), for the builder's ``ensure`` and container.
    ``after_archive``: see ``build_package`` (not called for a cached package)."""
    from giftbox.builders import ensure
    from giftbox.container import Container, LazyContainer
    from giftbox.package import build_package, package_key, package_manifest
    from giftbox.package.deb import ImageState
    from giftbox.package.layout import PRESTAGED, kept_staged
    from giftbox.package.runner import ContainerRunner

    check_against_tree(spec, settings, distro.family, catalog)
    manifest = package_manifest(result.manifest, spec, distro)
    key = package_key(result.key, manifest, spec, distro, packager=packager,
                      compression=compression, compression_level=compression_level, lint=lint)
    folder = result.directory / "package" / key[:16]
    cached = _cached_package(folder, key)
    if cached is not None:
        reporter.info(f"==> package {cached.path.name}: cached (packaging inputs {key[:16]} "
                      "unchanged)")
        return cached
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted earlier attempt at these inputs

    prestaged = result.directory / PRESTAGED  # a fresh build's (giftbox.package.layout)

    def make(where: Runner, image: ImageState | None = None) -> Artifact:
        return build_package(result.venv_dir, manifest, spec, distro, folder,
                             packager=packager, compression=compression,
                             compression_level=compression_level, runner=where,
                             reporter=reporter, lint=lint,
                             cache_dir=settings.cache_dir / "package",
                             built_version=result.version, image=image,
                             after_archive=after_archive,
                             prestaged=prestaged if prestaged.is_dir() else None,
                             keep=kept_staged(result.directory))

    if runner is not None:
        artifact = make(runner)
    else:
        from giftbox.container import Mount
        from giftbox.package.deb import APT_LISTS_TARGET, apt_lists_dir, refresh_apt_lists

        image = ensure(distro, arch, settings, reporter, engine=engine)
        # The builder keeps no apt lists; the dependency check needs the archive's: kept on
        # the host per image and refreshed when older than an hour, not on every package.
        lists = apt_lists_dir(settings.cache_dir, distro.name, arch.value, image.image_id) \
            if distro.family_obj.index_update else None
        mounts = [Mount(lists, APT_LISTS_TARGET, read_only=False)] if lists else []
        # Started only if something runs in it (an apt-get update, a tool whose verdict is
        # not cached): the image's dpkg state is kept per image id, the apt lists are read
        # on the host.
        with LazyContainer(Container(image, arch, settings, reporter,
                                     workdir="/giftbox-package", mounts=mounts,
                                     engine=engine)) as c:
            if lists is not None:
                refresh_apt_lists(c, lists, reporter, distro.name)
            artifact = make(ContainerRunner(c), ImageState(
                settings.cache_dir / "package" / "images", image.image_id, lists))
    info = PackageInfo(path=artifact.path, name=artifact.name, version=artifact.version,
                       arch=artifact.arch, family=artifact.family, size=artifact.size,
                       sha256=artifact.sha256, packager=artifact.packager,
                       compression=artifact.compression, depends=tuple(artifact.depends),
                       cached=False, key=key)
    (folder / "manifest.json").write_text(manifest.to_json())  # what the package carries
    record = info.as_dict()
    record.pop("cached")
    partial = folder / "package.json.partial"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(folder / "package.json")  # the package is complete only once this exists
    return info


def run_target(spec: Spec, distro: Distro, arch: Arch, settings: Settings,
               reporter: Reporter = NULL_REPORTER, *, ref: str | None = None,
               package: bool = True, publish: tuple[str, ...] = (), packager: str = "auto",
               compression: str | None = None,
               compression_level: int | None = None,
               catalog: Catalog | None = None,
               engine: Engine | None = None) -> TargetResult:
    """Build and package one target through one engine connection (``engine`` when the
    caller lends one, left open; else one for this target), then publish it."""
    with engine_for(settings, engine) as engine, ThreadPoolExecutor(1) as ahead:
        made: list[PackageInfo] = []
        reading: list[Future[None]] = []

        def read_ahead(path: Path) -> None:
            # the channel's reading of the package, while its lint runs (the pool's
            # read_before): publishing it then reads its bytes only to hash them
            from giftbox.repo.pool import Pool
            from giftbox.repo.pool import read_ahead as read

            reading.append(ahead.submit(read, path, Pool(settings.repos_dir).verdicts))

        def package_it(result: BuildResult) -> None:
            made.append(package_build(result, spec, distro, arch, settings, reporter,
                                      packager=packager, compression=compression,
                                      compression_level=compression_level, catalog=catalog,
                                      engine=engine,
                                      after_archive=read_ahead if publish else None))

        # A fresh build packages while its console scripts are audited (its package goes if
        # the audit refuses); a cached build is packaged after, from its package cache.
        built = build(spec, distro, arch, settings, reporter, ref=ref, engine=engine,
                      alongside=package_it if package else None)
        if not package:
            return TargetResult(build=built, package=None, published=[])
        if not made:
            package_it(built)
        info = made[0]
        for future in reading:
            future.result()
    from giftbox import records

    if built.build_id is not None:
        records.add_artifacts(settings, built.build_id, {info.path.name: info.sha256})
    published = []
    for channel in publish:
        from giftbox.repo import publish as publish_files

        # Recorded by the publish, in its transaction, linked to the build.
        with reporter.stage(f"publish {info.path.name} to {channel}"):
            publish_files(channel, [info.path], settings, reporter, record=True,
                          build_id=built.build_id)
        published.append(channel)
    return TargetResult(build=built, package=info, published=published)
