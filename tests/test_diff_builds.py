"""``giftbox diff`` between builds and channels, not only refs.

Real builds of a tiny pure-Python project in the real debian12 x86_64 builder, packaged and
published to a real signed nightly channel, then promoted to stable (module-scoped: built once
for the module). Build 1 is upstream 1.0.0 with ``six==1.16.0``; build 2 is upstream 1.0.1 plus
a patch, re-locked with ``six==1.17.0``. The diff reads each build's manifest.json and the lock
the venv was built from, and each channel entry's giftbox-manifest.json and giftbox-lock.txt
straight out of the .deb in the pool.

The error cases and the .rpm reader need no build: they use hand-made packages (dpkg-deb,
rpmbuild) published to channels of their own, and real records in the build database.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Result, Upstream, git_spec, write_spec
from plumbum import local
from repo_fixtures import keyring_template, make_deb, make_tree, need  # noqa: F401 - a fixture

from giftbox import build as build_stage
from giftbox import records
from giftbox.distros import Arch, get_distro
from giftbox.manifest import Manifest, PatchInfo
from giftbox.pipeline import TargetResult, run_target
from giftbox.repo import publish
from giftbox.repo.promote import promote
from giftbox.settings import Settings
from giftbox.spec import load_spec
from giftbox.workflow.diff import package_files

PROJECT = "greet"
CHANNELS = """\
channels:
  nightly:
    key: giftbox-nightly@giftbox.invalid
    keep: 5
    distros: [debian12]
  stable:
    key: giftbox-stable@giftbox.invalid
    keep: 5
    distros: [debian12]
  attic:
    key: giftbox-nightly@giftbox.invalid
    keep: 5
    distros: [debian11, debian12]
  old:
    key: giftbox-nightly@giftbox.invalid
    keep: 5
    distros: [debian11, debian12]
  fakes:
    key: giftbox-nightly@giftbox.invalid
    keep: 5
    distros: [debian12, rocky9]
"""
PATCH = """\
Description: Greet as a giftbox build
Author: Packager <packager@giftbox.invalid>
--- a/greet.py
+++ b/greet.py
@@ -1,6 +1,6 @@
 \"\"\"The greet project.\"\"\"

-GREETING = "hello"
+GREETING = "hello from giftbox"


 def main():
"""


def cli(root: Path, env: dict[str, str], *args: str) -> Result:
    proc = subprocess.run([sys.executable, "-m", "giftbox", *args], cwd=root,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def make_upstream(path: Path) -> Upstream:
    """A pure-Python project with a console script, released as 1.0.0."""
    up = Upstream(path)
    (path / "demo.py").unlink()
    (path / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='greet', version='1.0.0', py_modules=['greet'],\n"
        "      entry_points={'console_scripts': ['greet = greet:main']})\n")
    (path / "greet.py").write_text(
        '"""The greet project."""\n\nGREETING = "hello"\n\n\n'
        'def main():\n    print(GREETING)\n')
    up.commit("greet 1.0.0")
    up.tag("1.0.0")
    return up


def greet_spec(root: Path, url: str, ref: str, six: str, patches: list[str] | None) -> None:
    body = git_spec(PROJECT, url, ref, patches=patches,
                    extra=f"requirements: [six=={six}]\n")
    # upper-constraints pins six===1.17.0; the test's constraints leave six to the spec
    write_spec(root, PROJECT, body.replace("constraints/upper-constraints-2026.1.txt",
                                           "constraints/no-six.txt"))


def channel_tree(base: Path, keyring: Path) -> tuple[Path, Settings, dict[str, str]]:
    """A giftbox tree with CHANNELS, the session's keys and its own state dir."""
    tree = make_tree(base, CHANNELS)
    state = tree.settings.state_dir
    state.mkdir(parents=True)
    shutil.copytree(keyring, state / "gnupg", ignore=shutil.ignore_patterns("S.*", "*.lock",
                                                                             ".#*"))
    env = {"GIFTBOX_ROOT": str(tree.root), "GIFTBOX_STATE": str(state),
           "GIFTBOX_CACHE": str(base / "cache"), "HOME": str(base)}
    return tree.root, Settings.resolve(root=tree.root, env=dict(os.environ, **env)), env


def kill_agent(settings: Settings) -> None:
    local["gpgconf"]["--homedir", str(settings.state_dir / "gnupg"), "--kill", "all"].run(
        retcode=None)


# --- two real builds, published and promoted (once for the module) -------------------------


@dataclass(frozen=True)
class World:
    root: Path
    settings: Settings
    env: dict[str, str]
    up: Upstream
    first: TargetResult
    second: TargetResult
    fix: str  # the upstream commit between 1.0.0 and 1.0.1

    def diff(self, *args: str) -> Result:
        return cli(self.root, self.env, "diff", PROJECT, *args)

    def diff_json(self, *args: str) -> dict:  # type: ignore[type-arg]
        result = self.diff(*args, "--json")
        assert result.code == 0, result.err
        return json.loads(result.out)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, build_cache: Path,
          keyring_template: Path) -> Iterator[World]:  # noqa: F811
    base = tmp_path_factory.mktemp("diff-builds")
    root = base / "tree"
    for sub in ("specs", "patches", "constraints"):
        (root / sub).mkdir(parents=True)
    shutil.copytree(REPO / "builders", root / "builders")
    upper = (REPO / "constraints" / "upper-constraints-2026.1.txt").read_text()
    (root / "constraints" / "no-six.txt").write_text(
        "".join(line for line in upper.splitlines(keepends=True)
                if not line.startswith("six===")))
    (root / "channels.yaml").write_text(CHANNELS)
    state = base / "state"
    state.mkdir()
    shutil.copytree(keyring_template, state / "gnupg",
                    ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    env = {"GIFTBOX_ROOT": str(root), "GIFTBOX_STATE": str(state),
           "GIFTBOX_CACHE": str(build_cache)}
    settings = Settings.resolve(root=root, env=dict(os.environ, **env))
    distro = get_distro(root / "builders", "debian12")
    up = make_upstream(base / "up" / PROJECT)

    def lock_and_publish() -> TargetResult:
        spec = load_spec(root / "specs" / f"{PROJECT}.yaml", root)
        build_stage.make_lock(spec, distro, Arch.x86_64, settings)
        return run_target(spec, distro, Arch.x86_64, settings, publish=("nightly",))

    greet_spec(root, up.url, "1.0.0", "1.16.0", None)
    first = lock_and_publish()
    # upstream moves on; we add a patch and move six up
    (up.path / "setup.py").write_text((up.path / "setup.py").read_text().replace(
        "version='1.0.0'", "version='1.0.1'"))
    fix = up.commit("Release 1.0.1")
    up.tag("1.0.1")
    (root / "patches" / PROJECT).mkdir()
    (root / "patches" / PROJECT / "greet.patch").write_text(PATCH)
    greet_spec(root, up.url, "1.0.1", "1.17.0", ["greet.patch"])
    second = lock_and_publish()
    promote(settings, PROJECT, "nightly", "stable", reason="tested")
    yield World(root, settings, env, up, first, second, fix)
    kill_agent(settings)


@pytest.mark.docker
def test_two_builds(world: World) -> None:
    one, two = world.first.build.build_id, world.second.build.build_id
    assert one is not None and two is not None and one != two
    data = world.diff_json(f"build:{one}", f"build:{two}")
    assert data["a"]["kind"] == data["b"]["kind"] == "build"
    assert data["a"]["commit"] == world.up.head("1.0.0")
    assert data["b"]["commit"] == world.up.head("1.0.1")
    assert [c["commit"] for c in data["commits"]] == [world.fix]
    assert data["commits_removed"] == []
    patch_sha = hashlib.sha256(PATCH.encode()).hexdigest()
    assert data["patches"] == {"added": [{"name": "greet.patch", "sha256": patch_sha,
                                          "subject": "Greet as a giftbox build"}],
                               "removed": [], "changed": []}
    assert data["locks"] == {"debian12-x86_64.txt": {
        "added": {}, "removed": {}, "changed": {"six": ["1.16.0", "1.17.0"]}}}
    old, new = data["versions"]["debian12"]
    assert old == "1.0.0-1~deb12" == world.first.package.version  # type: ignore[union-attr]
    assert new.startswith("1.0.1-1.1.g") and new == world.second.package.version  # type: ignore[union-attr]
    assert data["same"] is False

    text = world.diff(f"build:{one}", f"build:{two}")
    assert text.code == 0, text.err
    assert f"[build {one}, debian12/x86_64]" in text.out
    assert "upstream commits (1):" in text.out and "Release 1.0.1" in text.out
    assert '+ greet.patch' in text.out and '"Greet as a giftbox build"' in text.out
    assert "~ six 1.16.0 -> 1.17.0" in text.out
    assert f"debian12     1.0.0-1~deb12 -> {new}" in text.out

    back = world.diff_json(f"build:{two}", f"build:{one}")
    assert back["commits"] == [] and [c["commit"] for c in back["commits_removed"]] == [world.fix]
    assert [p["name"] for p in back["patches"]["removed"]] == ["greet.patch"]

    # a build directory from before the venv carried its lock: compared by the lock's digest
    lock_file = world.first.build.venv_dir / "giftbox-lock.txt"
    lock_file.rename(lock_file.with_suffix(".away"))
    try:
        data = world.diff_json(f"build:{one}", f"build:{two}")
        assert data["a"]["locks_recorded"] is False
        assert data["locks"] == {"debian12-x86_64.txt": {"not_recorded": "a"}}
        text = world.diff(f"build:{one}", f"build:{two}")
        assert "its lock was not recorded" in text.out
        assert "differs (by digest; A's lock text was not recorded)" in text.out
        assert world.diff_json(f"build:{one}", f"build:{one}")["locks"] == {}
    finally:
        lock_file.with_suffix(".away").rename(lock_file)


@pytest.mark.docker
def test_build_against_a_channel_and_a_ref(world: World) -> None:
    one, two = world.first.build.build_id, world.second.build.build_id
    # nightly holds both builds' packages: a channel side is its highest version
    data = world.diff_json(f"build:{one}", "channel:nightly")
    b = data["b"]
    assert b["kind"] == "channel" and b["distro"] == "debian12" and b["arch"] == "x86_64"
    assert b["origin"]["filename"] == world.second.package.path.name  # type: ignore[union-attr]
    assert b["origin"]["digest"] == world.second.package.sha256  # type: ignore[union-attr]
    assert [c["commit"] for c in data["commits"]] == [world.fix]
    assert [p["name"] for p in data["patches"]["added"]] == ["greet.patch"]
    assert data["locks"] == {"debian12-x86_64.txt": {
        "added": {}, "removed": {}, "changed": {"six": ["1.16.0", "1.17.0"]}}}

    # the package is exactly build 2: nothing differs, however the target is named
    for args in (("channel:nightly",), ("channel:nightly/debian12/x86_64",),
                 ("channel:nightly", "--distro", "debian12", "--arch", "amd64")):
        same = world.diff_json(f"build:{two}", *args)
        assert same["same"] is True, args
        assert same["commits"] == [] and same["locks"] == {}
    text = world.diff("channel:nightly", f"build:{two}")
    assert text.code == 0, text.err
    assert "in nightly (sha256" in text.out
    assert text.out.rstrip().endswith("no differences in upstream, patches, locks or versions")

    # mixed: an upstream ref (with this tree's spec, patch and lock) against the channel,
    # narrowed to the channel's one target
    mixed = world.diff_json("1.0.0", "channel:nightly")
    assert mixed["a"]["kind"] == "ref" and mixed["a"]["commit"] == world.up.head("1.0.0")
    assert [c["commit"] for c in mixed["commits"]] == [world.fix]
    assert mixed["patches"] == {"added": [], "removed": [], "changed": []}
    assert mixed["locks"] == {}
    assert list(mixed["versions"]) == ["debian12"]


@pytest.mark.docker
def test_two_channels_after_a_promote(world: World) -> None:
    data = world.diff_json("channel:nightly", "channel:stable")
    assert data["same"] is True
    assert data["a"]["origin"]["digest"] == data["b"]["origin"]["digest"]
    assert data["commits"] == [] and data["commits_removed"] == []
    assert data["patches"] == {"added": [], "removed": [], "changed": []}
    assert data["locks"] == {}
    text = world.diff("channel:nightly", "channel:stable")
    assert "upstream commits (0):" in text.out and "patches (0 differ):" in text.out
    assert "locks (0 differ):" in text.out and "no differences" in text.out


# --- the errors, and the .deb/.rpm readers, with hand-made packages --------------------------


@pytest.fixture
def shelf(tmp_path: Path, keyring_template: Path) -> Iterator[tuple[Path, Settings, dict[str, str]]]:  # noqa: F811
    root, settings, env = channel_tree(tmp_path, keyring_template)
    yield root, settings, env
    kill_agent(settings)


def test_errors_name_the_side_at_fault(shelf: tuple[Path, Settings, dict[str, str]],
                                       tmp_path: Path) -> None:
    root, settings, env = shelf

    def diff(*args: str) -> Result:
        return cli(root, env, "diff", PROJECT, *args)

    # build ids
    unknown = diff("build:999", "build:998")
    assert unknown.code == 9 and "build:999: no build 999" in unknown.err
    assert f"giftbox builds {PROJECT}" in unknown.err
    other = records.start_build(settings, "other", "debian12", "x86_64", version="2.0-1~deb12")
    records.finish_build(settings, other, "succeeded")
    wrong = diff(f"build:{other}", "channel:attic")
    assert wrong.code == 9
    assert f"build {other} is a build of other (debian12/x86_64, 2.0-1~deb12), not of greet" \
        in wrong.err
    failed = records.start_build(settings, PROJECT, "debian12", "x86_64",
                                 log_path=tmp_path / "b" / "build.log")
    records.finish_build(settings, failed, "failed", error="boom")
    assert "failed: it left nothing to compare" in diff(f"build:{failed}", "1.0").err
    gone = records.start_build(settings, PROJECT, "debian12", "x86_64",
                               log_path=tmp_path / "gone" / "build.log")
    records.finish_build(settings, gone, "succeeded")
    missing = diff(f"build:{gone}", f"build:{gone}")
    assert missing.code == 9 and "left no build directory" in missing.err
    assert "build:abc" in diff("build:abc", "1.0").err

    # channels
    out = tmp_path / "debs"
    out.mkdir()
    publish("attic", [make_deb(out, "giftbox-hello", "1.0-1~deb12", "amd64")], settings)
    publish("old", [make_deb(out, "giftbox-greet", "0.9-1~deb12", "amd64"),
                    make_deb(out, "giftbox-greet", "0.9-1~deb11", "amd64")], settings)
    empty = diff("channel:attic", "channel:old")
    assert empty.code == 8
    assert "channel 'attic' has no package of project 'greet'" in empty.err
    assert "it holds: giftbox-hello" in empty.err
    both = diff("channel:old", "channel:old")
    assert both.code == 8 and "holds greet for more than one target" in both.err
    assert "debian11/x86_64 (0.9-1~deb11)" in both.err and "debian12/x86_64" in both.err
    assert "channel:old/DISTRO/ARCH" in both.err
    old = diff("channel:old/debian12/x86_64", "channel:old", "--distro", "debian11")
    assert old.code == 7
    assert "giftbox-greet_0.9-1~deb12_amd64.deb in channel 'old' carries no " \
           "giftbox-manifest.json" in old.err
    assert "packaged before giftbox packages carried their manifest" in old.err
    nowhere = diff("channel:nope", "channel:old")
    assert nowhere.code == 8 and "nope" in nowhere.err
    assert diff("channel:old/debian12/x86_64/extra", "1.0").code == 8
    spec_rev = diff("build:1", "channel:old", "--spec-to", "HEAD")
    assert spec_rev.code == 2 and "--spec-to applies to a ref side" in spec_rev.err


def fake_manifest(distro: str, family: str, version: str, patches: list[PatchInfo],
                  lock_text: str) -> str:
    return Manifest(
        project=PROJECT, package_name="giftbox-greet", upstream_kind="pypi",
        upstream_url="pypi:greet==1.0.0", upstream_ref="1.0.0", upstream_commit="c" * 40,
        upstream_version="1.0.0", upstream_sha256="ab" * 32, patches=tuple(patches),
        patch_digest="d" * 64, source_commit="e" * 40,
        lock_digest=hashlib.sha256(lock_text.encode()).hexdigest(), builder_image="sha256:0",
        distro=distro, family=family, arch="x86_64", python="3.11",
        prefix="/opt/openstack/greet", version={family: version}, source_date_epoch=0,
    ).to_json()


def fake_deb(out: Path, manifest: str, lock_text: str) -> Path:
    """A .deb laid out like ours: the manifest and lock in the venv root, and a decoy file of
    the manifest's name deeper in the venv."""
    tree = out / "deb"
    venv = tree / "opt" / "openstack" / "greet"
    (venv / "lib" / "site-packages" / "x").mkdir(parents=True)
    (venv / "lib" / "site-packages" / "x" / "giftbox-manifest.json").write_text("{}")
    (venv / "giftbox-manifest.json").write_text(manifest)
    (venv / "giftbox-lock.txt").write_text(lock_text)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(textwrap.dedent("""\
        Package: giftbox-greet
        Version: 1.0.0-1~deb12
        Architecture: amd64
        Maintainer: giftbox tests <tests@giftbox.invalid>
        Description: greet
         A test package.
        """))
    deb = out / "giftbox-greet_1.0.0-1~deb12_amd64.deb"
    local[need("dpkg-deb")]["-Zzstd", "--root-owner-group", "--build", str(tree), str(deb)].run()
    return deb


def fake_rpm(out: Path, manifest: str) -> Path:
    """An x86_64 .rpm with a manifest and no lock (a package from before the lock travelled);
    the manifest is hard-linked, so cpio carries its data with the last link only."""
    top = out / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    (top / "SOURCES").mkdir()
    (top / "SOURCES" / "manifest.json").write_text(manifest)
    spec = top / "SPECS" / "greet.spec"
    spec.write_text(textwrap.dedent(f"""\
        Name: giftbox-greet
        Version: 1.0.0
        Release: 1.el9
        Summary: greet
        License: Apache-2.0
        BuildArch: x86_64
        %description
        A test package.
        %install
        mkdir -p %{{buildroot}}/opt/openstack/greet/share
        install -m 644 {top}/SOURCES/manifest.json %{{buildroot}}/opt/openstack/greet/giftbox-manifest.json
        ln %{{buildroot}}/opt/openstack/greet/giftbox-manifest.json %{{buildroot}}/opt/openstack/greet/share/copy.json
        %files
        /opt/openstack/greet
        """))
    local[need("rpmbuild")]["--define", f"_topdir {top}", "--define", "debug_package %{nil}",
                            "--define", "__os_install_post %{nil}", "-bb", str(spec)].run()
    return next((top / "RPMS" / "x86_64").glob("*.rpm"))


def test_reads_manifests_and_locks_out_of_debs_and_rpms(
        shelf: tuple[Path, Settings, dict[str, str]], tmp_path: Path) -> None:
    root, settings, env = shelf
    lock_text = "six==1.17.0 \\\n    --hash=sha256:aa\nidna==3.11\n"
    deb_manifest = fake_manifest("debian12", "deb", "1.0.0-1~deb12",
                                 [PatchInfo("a.patch", "1" * 64, "Fix a")], lock_text)
    rpm_manifest = fake_manifest("rocky9", "rpm", "1.0.0-1.el9",
                                 [PatchInfo("a.patch", "2" * 64, "Fix a"),
                                  PatchInfo("b.patch", "3" * 64, "Fix b")], "other lock\n")
    deb = fake_deb(tmp_path, deb_manifest, lock_text)
    rpm = fake_rpm(tmp_path, rpm_manifest)

    read = package_files(deb, "deb")
    assert read.manifest == deb_manifest and read.lock == lock_text
    assert read.manifest_path == "/opt/openstack/greet/giftbox-manifest.json"
    read = package_files(rpm, "rpm")
    assert read.manifest == rpm_manifest and read.lock is None

    publish("fakes", [deb, rpm], settings)
    result = cli(root, env, "diff", PROJECT, "channel:fakes/debian12/x86_64",
                 "channel:fakes/rocky9/x86_64", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["commits"] is None
    assert data["upstream_note"].startswith("upstream: the same tarball greet==1.0.0")
    assert data["patches"]["added"] == [{"name": "b.patch", "sha256": "3" * 64,
                                         "subject": "Fix b"}]
    assert [p["name"] for p in data["patches"]["changed"]] == ["a.patch"]
    assert data["locks"] == {"debian12-x86_64.txt vs rocky9-x86_64.txt": {"not_recorded": "b"}}
    assert data["versions"] == {"debian12": ["1.0.0-1~deb12", None],
                                "rocky9": [None, "1.0.0-1.el9"]}
    assert data["b"]["locks_recorded"] is False

    # a spec built from the PyPI tarball: its pinned version is a ref side without git,
    # narrowed to the channel side's target (its lock file is not in this tree: only in B)
    shutil.copytree(REPO / "constraints", root / "constraints")
    write_spec(root, PROJECT, textwrap.dedent(f"""\
        name: {PROJECT}
        release: "2026.1"
        constraints: constraints/upper-constraints-2026.1.txt
        upstream:
          use: pypi
          pypi: {{name: greet, version: 1.0.0, sha256: "{'ab' * 32}"}}
        patches: []
        package: {{prefix: /opt/openstack/greet}}
        matrix: {{distros: [debian12, rocky9], arches: [x86_64]}}
        """))
    result = cli(root, env, "diff", PROJECT, "1.0.0", "channel:fakes/debian12/x86_64",
                 "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["a"]["upstream_kind"] == "pypi" and data["a"]["ref"] == "1.0.0"
    assert data["upstream_note"].startswith("upstream: the same tarball greet==1.0.0")
    assert [p["name"] for p in data["patches"]["added"]] == ["a.patch"]
    assert data["locks"] == {"debian12-x86_64.txt": {"only_in": "b"}}
    assert list(data["versions"]) == ["debian12"]

    # a .deb whose archive is cut short is a clear error, not a traceback
    broken = tmp_path / "broken.deb"
    broken.write_bytes(deb.read_bytes()[:600])
    from giftbox.errors import PackageError

    with pytest.raises(PackageError, match="cannot read"):
        package_files(broken, "deb")
