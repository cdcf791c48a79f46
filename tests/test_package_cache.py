"""The package cache is honest: an operator who edits a packaging input and builds again gets a
package that carries the edit, made from the cached venv; one who edits nothing gets the same
package back. One test per family of packaging input (depends, units, config files and their
contents under files/, user, rootwrap, entry points, description, giftbox's lintian overrides,
compression).

The venv is a venv-shaped tree (package_fixtures.fake_venv) standing for a cached build:
these tests are about the packaging stage and its key, which read the venv only as files.
Packaging is real (dpkg-deb, dpkg-shlibdeps and apt-cache on this Debian 12 host, lintian where
the test is about lintian); the packages are read back with dpkg-deb.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from package_fixtures import CONF, UNIT, fake_venv, make_manifest, write_spec

import giftbox
from giftbox.build import BuildResult
from giftbox.distros import Arch, Distro, get_distro
from giftbox.manifest import Manifest
from giftbox.package import HostRunner, RunResult
from giftbox.package.layout import package_version
from giftbox.pipeline import PackageInfo, package_build
from giftbox.settings import Settings
from giftbox.spec import load_spec
from giftbox.targets import Target

# dpkg-deb, apt-cache and lintian on the host: the slow tier (pyproject.toml's markers).
pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
VENV_KEY = "5e" * 32  # stands for the build stage's key of the cached venv


class HostWithAptCache(HostRunner):
    """This host, with apt-cache keeping its binary cache between calls: the host's
    docker-clean apt.conf turns it off (Dir::Cache::pkgcache ""), and rebuilding it costs
    about 2 s per call. The answers are apt's own either way."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir
        self.options = ["-o", f"Dir::Cache::pkgcache={cache_dir}/pkgcache.bin",
                        "-o", f"Dir::Cache::srcpkgcache={cache_dir}/srcpkgcache.bin"]

    def run(self, argv: Sequence[str], *, cwd: str | None = None) -> RunResult:
        if argv and argv[0] == "apt-cache":
            argv = [argv[0], *self.options, *argv[1:]]
        return super().run(argv, cwd=cwd)


@dataclass
class Tree:
    root: Path
    settings: Settings
    distro: Distro
    result: BuildResult  # the cached build, made from the spec as it was first written
    runner: HostWithAptCache
    first: PackageInfo | None = None  # the package of the spec as first written

    @property
    def spec_file(self) -> Path:
        return self.root / "specs" / "demo.yaml"

    def edit_spec(self, old: str, new: str) -> None:
        text = self.spec_file.read_text()
        assert old in text, old
        self.spec_file.write_text(text.replace(old, new))

    def package(self, **options: object) -> PackageInfo:
        spec = load_spec(self.spec_file, self.root)
        return package_build(self.result, spec, self.distro, Arch.x86_64, self.settings,
                             runner=self.runner, lint=bool(options.pop("lint", False)),
                             **options)  # type: ignore[arg-type]


def make_tree(root: Path, cache: Path, apt_cache: Path) -> Tree:
    """The demo tree with its cached build (a venv-shaped tree and the build's manifest)."""
    if not root.exists():
        spec = write_spec(root, "demo")
        directory = root / "build" / "demo" / "debian12-x86_64" / VENV_KEY[:16]
        fake_venv(directory / "venv", entry_points=("demo", "demo-rootwrap", "demo-extra"))
        distro = get_distro(root / "builders", "debian12")
        (directory / "manifest.json").write_text(make_manifest(spec, distro).to_json())
    settings = Settings.resolve(root=root, env=dict(os.environ, GIFTBOX_CACHE=str(cache)))
    distro = get_distro(root / "builders", "debian12")
    directory = root / "build" / "demo" / "debian12-x86_64" / VENV_KEY[:16]
    manifest = Manifest.read(directory / "manifest.json")
    result = BuildResult(target=Target(load_spec(root / "specs" / "demo.yaml", root), distro,
                                       Arch.x86_64),
                         version=package_version(manifest, distro), key=VENV_KEY,
                         directory=directory, venv_dir=directory / "venv", manifest=manifest,
                         manifest_path=directory / "manifest.json",
                         log_path=directory / "build.log", cached=True)
    return Tree(root, settings, distro, result, HostWithAptCache(apt_cache))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """Packaged once; each test works on a copy of this tree, as if moved elsewhere."""
    top = tmp_path_factory.mktemp("package-cache")
    tree = make_tree(top / "tree", top / "cache", top / "apt-cache")
    tree.first = tree.package()
    assert not tree.first.cached
    return tree


@pytest.fixture
def tree(baseline: Tree, tmp_path: Path) -> Tree:
    shutil.copytree(baseline.root, tmp_path / "tree", symlinks=True)
    copy = make_tree(tmp_path / "tree", tmp_path / "cache", baseline.runner.cache_dir)
    copy.first = baseline.first
    return copy


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def unpack(deb: Path, into: Path) -> Path:
    """The package's files under ``into``, its control files under ``into/DEBIAN``."""
    subprocess.run(["dpkg-deb", "-R", str(deb), str(into)], check=True)
    return into


def carried_manifest(files: Path) -> dict[str, Any]:
    return json.loads((files / "opt/openstack/demo/giftbox-manifest.json").read_text())


def assert_repackaged(first: PackageInfo, second: PackageInfo) -> None:
    assert not second.cached
    assert second.key != first.key
    # each set of inputs keeps its own package beside the other's
    assert second.path.is_file()
    assert (second.path.parent.parent / first.key[:16] / first.path.name).is_file()


def test_unchanged_inputs_are_a_cache_hit(tree: Tree) -> None:
    first = tree.first
    assert first is not None
    again = tree.package()  # in a copy of the tree: a moved checkout keeps its cache
    assert not first.cached and again.cached
    assert again.path.is_relative_to(tree.root) and again.path.name == first.path.name
    assert again.sha256 == first.sha256 and again.key == first.key


def test_depends_edit_reaches_control_and_the_carried_manifest(tree: Tree,
                                                               tmp_path: Path) -> None:
    first = tree.first
    assert first is not None
    tree.edit_spec("deb: [iproute2]", "deb: [iproute2, ebtables]")
    second = tree.package()
    assert_repackaged(first, second)
    assert "ebtables" in second.depends and "ebtables" not in first.depends
    assert "ebtables" in field(second.path, "Depends")
    # written when the package is made, not copied from the cached build's manifest
    assert "ebtables" not in tree.result.manifest.depends
    assert "ebtables" in carried_manifest(unpack(second.path, tmp_path / "x"))["depends"]
    manifest = json.loads((second.path.parent / "manifest.json").read_text())
    assert manifest["depends"] == ["iproute2", "ebtables"]


def test_unit_contents_edit_is_packaged(tree: Tree, tmp_path: Path) -> None:
    first = tree.first
    assert first is not None
    unit = tree.root / "files" / "demo" / "demo.service"
    unit.write_text(UNIT.replace("Type=oneshot", "Type=simple"))
    second = tree.package()
    assert_repackaged(first, second)
    files = unpack(second.path, tmp_path / "x")
    assert "Type=simple" in (files / "lib/systemd/system/demo.service").read_text()


def test_config_file_contents_and_mode_edits_are_packaged(tree: Tree, tmp_path: Path) -> None:
    first = tree.first
    assert first is not None
    (tree.root / "files" / "demo" / "demo.conf").write_text(CONF.replace("false", "true"))
    second = tree.package()
    assert_repackaged(first, second)
    conf = unpack(second.path, tmp_path / "a") / "etc/demo/demo.conf"
    assert "debug = true" in conf.read_text()
    tree.edit_spec('mode: "0640"', 'mode: "0600"')
    third = tree.package()
    assert_repackaged(second, third)
    listing = subprocess.run(["dpkg-deb", "-c", str(third.path)], capture_output=True,
                             text=True, check=True).stdout
    line = next(x for x in listing.splitlines() if x.endswith("./etc/demo/demo.conf"))
    assert line.startswith("-rw-------"), line


def test_service_user_edit_reaches_the_maintainer_scripts(tree: Tree, tmp_path: Path) -> None:
    first = tree.first
    assert first is not None
    tree.edit_spec("    name: demo\n    home: /var/lib/demo",
                   "    name: demosvc\n    home: /var/lib/demosvc")
    second = tree.package()
    assert_repackaged(first, second)
    files = unpack(second.path, tmp_path / "x")
    assert "demosvc" in (files / "DEBIAN/postinst").read_text()
    assert "demosvc ALL=(root)" in (files / "etc/sudoers.d/demo").read_text()


def test_rootwrap_edit_is_packaged(tree: Tree, tmp_path: Path) -> None:
    first = tree.first
    assert first is not None
    tree.edit_spec("config: /etc/demo/rootwrap.conf", "config: /etc/demo/rootwrap-demo.conf")
    second = tree.package()
    assert_repackaged(first, second)
    files = unpack(second.path, tmp_path / "x")
    assert (files / "etc/demo/rootwrap-demo.conf").is_file()
    assert not (files / "etc/demo/rootwrap.conf").exists()
    assert "/etc/demo/rootwrap-demo.conf" in (files / "DEBIAN/conffiles").read_text()


def test_entry_point_edit_is_packaged(tree: Tree, tmp_path: Path) -> None:
    first = tree.first
    assert first is not None
    tree.edit_spec("entry_points: [demo, demo-rootwrap]",
                   "entry_points: [demo, demo-rootwrap, demo-extra]")
    second = tree.package()
    assert_repackaged(first, second)
    files = unpack(second.path, tmp_path / "x")
    assert os.readlink(files / "usr/bin/demo-extra") == "/opt/openstack/demo/bin/demo-extra"


def test_description_edit_is_packaged(tree: Tree) -> None:
    first = tree.first
    assert first is not None
    tree.edit_spec("description: Demo service for giftbox packaging tests.",
                   "description: Demo service, now described anew.")
    second = tree.package()
    assert_repackaged(first, second)
    assert field(second.path, "Description").startswith("Demo service, now described anew")


def test_compression_and_level_are_keyed(tree: Tree) -> None:
    xz = tree.first  # debian12's own: xz at its builder.yaml's level, giftbox's writer
    assert xz is not None and xz.compression == "xz-1"
    zstd = tree.package(compression="zstd")
    assert_repackaged(xz, zstd)
    members = subprocess.run(["ar", "t", str(zstd.path)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "data.tar.zst" in members and zstd.compression == "zstd-3"
    xz9 = tree.package(compression="xz", compression_level=9)
    assert_repackaged(zstd, xz9)
    assert xz9.compression == "xz-9"
    # the distro's default spelled out is the same input as the default left implicit, and
    # its level goes with its kind
    assert tree.package(compression="xz", compression_level=1).cached
    assert tree.package(compression="xz").cached


def test_interrupted_or_tampered_package_is_made_again(tree: Tree) -> None:
    first = tree.package()
    assert first.cached
    first.path.unlink()  # e.g. removed by hand
    again = tree.package()
    assert not again.cached and again.path.is_file() and again.key == first.key
    (again.path.parent / "package.json").write_text("{not json")
    assert not tree.package().cached


_DRIVER = """
import json, sys
from pathlib import Path
from typing import Any
import giftbox
from giftbox.build import BuildResult
from giftbox.distros import Arch, get_distro
from giftbox.manifest import Manifest
from giftbox.package import HostRunner, RunResult
from giftbox.package.layout import package_version
from giftbox.pipeline import package_build
from giftbox.settings import Settings
from giftbox.spec import load_spec
from giftbox.targets import Target

root, directory, key, cache = (Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4])
settings = Settings.resolve(root=root, env={"GIFTBOX_CACHE": cache, "PATH": "/usr/bin:/bin"})
distro = get_distro(root / "builders", "debian12")
manifest = Manifest.read(directory / "manifest.json")
spec = load_spec(root / "specs" / "demo.yaml", root)
result = BuildResult(target=Target(spec, distro, Arch.x86_64),
                     version=package_version(manifest, distro), key=key, directory=directory,
                     venv_dir=directory / "venv", manifest=manifest,
                     manifest_path=directory / "manifest.json", log_path=directory / "build.log",
                     cached=True)
info = package_build(result, spec, distro, Arch.x86_64, settings, runner=HostRunner(),
                     lint=False)
print(json.dumps({"giftbox": giftbox.__file__, **info.as_dict()}))
"""


def test_lintian_overrides_edit_in_giftbox_is_packaged(tree: Tree, tmp_path: Path) -> None:
    """An operator's checkout whose giftbox/data/lintian-overrides gained a line: the package
    made by that giftbox carries it, and this checkout's own package is still its cache hit."""
    first = tree.first
    assert first is not None
    copy = tmp_path / "giftbox-copy"
    shutil.copytree(Path(giftbox.__file__).parent, copy / "giftbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    overrides = copy / "giftbox" / "data" / "lintian-overrides"
    edit = "# Accepted by this site's packaging review (giftbox test)\n"
    overrides.write_text(overrides.read_text() + edit)
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(tree.root), str(tree.result.directory), VENV_KEY,
         str(tmp_path / "c")],
        cwd=tmp_path, env={"PYTHONPATH": f"{copy}:{TESTS}", "PATH": os.environ["PATH"]},
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["giftbox"] == str(copy / "giftbox" / "__init__.py")  # the edited giftbox ran
    assert not out["cached"] and out["key"] != first.key
    files = unpack(Path(out["path"]), tmp_path / "x")
    assert (files / "usr/share/lintian/overrides/giftbox-demo").read_text().endswith(edit)
    assert tree.package().cached

