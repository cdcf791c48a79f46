"""Packaging reads the staged tree once and keeps the verdicts of the target's tools by the
digest of what they read (#15): dpkg-shlibdeps per set of ELF objects, the archive check per
set of declared packages and apt lists. Real dpkg-shlibdeps, apt-cache, dpkg-deb and
dpkg-gencontrol on this Debian 12 host; no Docker."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from package_fixtures import fake_venv, make_manifest, write_spec

from giftbox.distros import get_distro
from giftbox.package import HostRunner, RunResult, build_package
from giftbox.package.deb import (
    ImageState,
    TargetState,
    VerdictStore,
    _installed_size,
    checked_depends,
    shlib_depends,
    target_state,
)
from giftbox.package.layout import ElfCache, Staged, scan_tree, stage
from giftbox.package.lint import DigestCache
from giftbox.ui import Reporter

LIBS = Path("/usr/lib/x86_64-linux-gnu")


class CountingHost(HostRunner):
    """This host, remembering which tools it ran (the calls are real)."""

    def __init__(self) -> None:
        self.tools: list[str] = []

    def run(self, argv: Sequence[str], *, cwd: str | None = None) -> RunResult:
        self.tools.append(argv[0])
        return super().run(argv, cwd=cwd)


def staged_demo(tmp: Path, ext: Path) -> Staged:
    """The demo spec staged from a venv-shaped tree holding ``ext`` as an extension."""
    root = tmp / "tree"
    spec = write_spec(root, "demo")
    distro = get_distro(root / "builders", "debian12")
    manifest = make_manifest(spec, distro)
    venv = fake_venv(tmp / "venv")
    (venv / "lib").mkdir()
    shutil.copy(ext, venv / "lib" / "_ext.so")
    return stage(venv, manifest, spec, distro, tmp / "root")


def replace_bytes(path: Path, source: Path) -> None:
    tmp = path.with_name(path.name + ".new")
    shutil.copy(source, tmp)
    tmp.replace(path)  # by rename, as every giftbox writer does


def shlibs(staged: Staged, runner: CountingHost, store: VerdictStore, tmp: Path,
           state: TargetState | None) -> tuple[list[str], str]:
    out = io.StringIO()
    work = Path(tmp) / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    depends = shlib_depends(staged, runner, work, state=state, store=store,
                            digests=DigestCache(None), reporter=Reporter(out))
    return depends, out.getvalue()


@pytest.mark.slow
def test_shlibdeps_verdict_is_cached_by_target_and_elf_objects(tmp_path: Path) -> None:
    staged = staged_demo(tmp_path, LIBS / "libz.so.1")
    runner = CountingHost()
    state = target_state(runner)
    assert state is not None
    store = VerdictStore(tmp_path / "verdicts")

    first, said = shlibs(staged, runner, store, tmp_path, state)
    assert any(d.startswith("libc6") for d in first), first
    assert runner.tools.count("dpkg-shlibdeps") == 1 and "cached" not in said

    # the same ELF objects on the same target: the verdict, not the tool
    again, said = shlibs(staged, runner, store, tmp_path, state)
    assert again == first
    assert runner.tools.count("dpkg-shlibdeps") == 1
    assert "shlibdeps: verdict cached for 1 ELF objects" in said

    # another target (another image): the tool again
    other = TargetState("0" * 64, state.apt)
    shlibs(staged, runner, store, tmp_path, other)
    assert runner.tools.count("dpkg-shlibdeps") == 2

    # one changed ELF object: the tool again, with its own answer (libbz2 links libc too)
    replace_bytes(staged.path(staged.elf_files[0]), LIBS / "libbz2.so.1.0")
    changed, said = shlibs(staged, runner, store, tmp_path, state)
    assert runner.tools.count("dpkg-shlibdeps") == 3 and "cached" not in said
    assert any(d.startswith("libc6") for d in changed)

    # a damaged record is a miss, never a crash or someone else's answer
    for record in (tmp_path / "verdicts").glob("*.json"):
        record.write_text('{"key": "')
    shlibs(staged, runner, store, tmp_path, state)
    assert runner.tools.count("dpkg-shlibdeps") == 4
    for record in (tmp_path / "verdicts").glob("*.json"):
        record.write_text('{"key": "x", "answer": [1]}')
    shlibs(staged, runner, store, tmp_path, state)
    assert runner.tools.count("dpkg-shlibdeps") == 5


@pytest.mark.slow
def test_archive_check_is_cached_by_declared_packages_and_apt_lists(tmp_path: Path) -> None:
    staged = staged_demo(tmp_path, LIBS / "libz.so.1")
    runner = CountingHost()
    state = target_state(runner)
    assert state is not None and state.apt is not None, "this host has apt lists"
    store = VerdictStore(tmp_path / "verdicts")

    def check(with_state: TargetState | None) -> str:
        out = io.StringIO()
        declared = checked_depends(staged, runner, True, state=with_state, store=store,
                                   reporter=Reporter(out))
        assert "python3.11" in declared
        return out.getvalue()

    assert "cached" not in check(state)
    calls = runner.tools.count("apt-cache")
    assert calls > 0
    assert "dependency check: verdict cached" in check(state)
    assert runner.tools.count("apt-cache") == calls
    # new lists (apt-get update brought another archive): checked again
    check(TargetState(state.dpkg, "1" * 64))
    assert runner.tools.count("apt-cache") > calls
    # no lists to key by: checked every time
    calls = runner.tools.count("apt-cache")
    check(TargetState(state.dpkg, None))
    assert runner.tools.count("apt-cache") > calls


def test_scan_tree_orders_as_sorted_paths(tmp_path: Path) -> None:
    for rel in ("a/x", "a-b/x", "a.txt", "b/c/d", "b/c.d"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "b" / "link").symlink_to("c")
    rels = [entry.rel for entry in scan_tree(tmp_path)]
    expected = sorted(p for p in tmp_path.rglob("*"))
    assert rels == [p.relative_to(tmp_path).as_posix() for p in expected]
    assert "b/link/d" not in rels  # a link to a directory is a link, not walked


@pytest.mark.slow
def test_md5sums_and_installed_size_are_dpkgs(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    spec = write_spec(root, "demo")
    distro = get_distro(root / "builders", "debian12")
    venv = fake_venv(tmp_path / "venv")
    (venv / "lib" / "pkg").mkdir(parents=True)
    (venv / "lib" / "pkg" / "big.dat").write_bytes(os.urandom(5000))
    (venv / "lib" / "pkg-extra").mkdir()
    (venv / "lib" / "pkg-extra" / "empty").write_bytes(b"")
    (venv / "lib" / "empty-dir").mkdir()
    artifact = build_package(venv, make_manifest(spec, distro), spec, distro, tmp_path / "out",
                             runner=HostRunner(), lint=False, check_deps=False,
                             cache_dir=tmp_path / "cache")
    files = tmp_path / "files"
    subprocess.run(["dpkg-deb", "-R", str(artifact.path), str(files)], check=True)
    control = files / "DEBIAN"
    # every line of md5sums is right (md5sum checks it) and every file but the conffiles
    # has one
    subprocess.run(["md5sum", "--check", "--quiet", str(control / "md5sums")], cwd=files,
                   check=True)
    listed = {line.split("  ", 1)[1] for line in (control / "md5sums").read_text()
              .splitlines()}
    conffiles = {c.lstrip("/") for c in (control / "conffiles").read_text().split()}
    regular = {p.relative_to(files).as_posix() for p in files.rglob("*")
               if p.is_file() and not p.is_symlink() and not p.is_relative_to(control)}
    assert listed == regular - conffiles
    # Installed-Size as dpkg-gencontrol counts the same files (it adds the root directory)
    shutil.move(control, tmp_path / "control")
    src = tmp_path / "src"
    (src / "debian").mkdir(parents=True)
    (src / "debian" / "control").write_text(
        f"Source: demo\nMaintainer: giftbox <giftbox@packages.invalid>\n\n"
        f"Package: {artifact.name}\nArchitecture: any\nDescription: demo\n demo\n")
    (src / "debian" / "changelog").write_text(
        "demo (1.0-1) unstable; urgency=medium\n\n  * Test.\n\n"
        " -- giftbox <giftbox@packages.invalid>  Tue, 14 Nov 2023 22:13:20 +0000\n")
    out = subprocess.run(["dpkg-gencontrol", f"-p{artifact.name}", f"-P{files}", "-O"],
                         cwd=src, capture_output=True, text=True, check=True).stdout
    gencontrol = int(next(line.split(":", 1)[1] for line in out.splitlines()
                          if line.startswith("Installed-Size:")))
    ours = subprocess.run(["dpkg-deb", "-f", str(artifact.path), "Installed-Size"],
                          capture_output=True, text=True, check=True).stdout
    assert int(ours) == gencontrol - 1 == _installed_size(scan_tree(files))


def test_an_images_state_is_probed_once_and_its_apt_lists_read_on_the_host(
        tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    image = ImageState(tmp_path / "images", "sha256:" + "ab" * 32, lists)
    runner = CountingHost()  # this host stands for the image's container
    probed = target_state(runner)
    assert probed is not None
    first = target_state(runner, image)
    assert first is not None and first.dpkg == probed.dpkg and runner.tools == ["sh", "sh"]
    assert first.apt is None  # no Packages list: the archive check is never cached
    # asked again: from the record, the runner is not run
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("")
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("one")
    again = target_state(runner, image)
    assert again is not None and again.dpkg == probed.dpkg and len(runner.tools) == 2
    assert again.apt is not None
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("two")
    moved = target_state(runner, image)
    assert moved is not None and moved.apt not in (None, again.apt)
    # another image's record, or a damaged one, is not this image's: probed again
    other = ImageState(tmp_path / "images", "sha256:" + "cd" * 32, lists)
    assert other.dpkg() is None
    record = next((tmp_path / "images").glob("*.json"))
    record.write_text('{"image": "sha256:' + "ab" * 32 + '", "dpkg": "../../etc"}')
    assert image.dpkg() is None
    target_state(runner, image)
    assert len(runner.tools) == 3 and image.dpkg() == probed.dpkg



@pytest.mark.slow
def test_inode_records_of_one_project_survive_another_projects_package(tmp_path: Path) -> None:
    # Each save keeps only the inodes its package read. When nova and keystone shared one
    # file, every build of one dropped the other's deps layer (nightly, --all) and the next
    # build of the other read its 20,000 files again; now each project and target has its own.
    root, cache = tmp_path / "tree", tmp_path / "cache"
    kept: dict[str, dict[str, int]] = {}
    for name in ("demo", "other", "demo"):
        spec = write_spec(root, name)
        distro = get_distro(root / "builders", "debian12")
        venv = tmp_path / f"venv-{name}"
        if not venv.exists():
            fake_venv(venv, project=name)
            (venv / "lib").mkdir()
            (venv / "lib" / "data.txt").write_text(f"{name} data\n" * 1000)
        build_package(venv, make_manifest(spec, distro), spec, distro, tmp_path / f"out-{name}",
                      runner=HostRunner(), lint=False, check_deps=False, cache_dir=cache)
        records = cache / "inodes" / f"{name}-debian12-x86_64" / "elf-machines.json"
        machines = json.loads(records.read_text())
        # the staged tree links the venv's files: the record is the venv file's inode
        assert machines[ElfCache.ident(os.stat(venv / "lib" / "data.txt"))] == 0
        kept[name] = machines
        if name == "other":  # other's package left demo's records alone
            demo_file = cache / "inodes" / "demo-debian12-x86_64" / "elf-machines.json"
            assert json.loads(demo_file.read_text()) == kept["demo"]
    assert not set(kept["other"]) & set(kept["demo"])
