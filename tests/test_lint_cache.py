"""Verdicts cached by content digest (#15): lintian per file, the deps layer's tree scan, and
staging by hard links that never changes the venv it links to. Real lintian and dpkg-deb on
small packages made here; no Docker."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from giftbox.audit import scan_tree, scan_tree_shared
from giftbox.distros import Arch
from giftbox.errors import PackageError
from giftbox.package.common import Compression, data_text
from giftbox.package.deb import (
    APT_LISTS_MAX_AGE,
    apt_lists_age,
    dpkg_deb_build,
    mark_apt_lists,
)
from giftbox.package.layout import _link_tree, set_mtimes
from giftbox.package.lint import DigestCache, LintianAhead, lintian, lintian_cached
from giftbox.ui import Reporter

EPOCH = 1_700_000_000
COMP = Compression("zstd", 3, 2)
PREFIX = "/opt/openstack/lintdemo"
CONTROL = ("Package: lintdemo\nVersion: {version}\nArchitecture: all\n"
           "Maintainer: giftbox <giftbox@packages.invalid>\nInstalled-Size: 10\n"
           "Depends: {depends}\nSection: net\nPriority: optional\n"
           "Description: lint cache demo\n A package made by the lint cache tests.\n")
OVERRIDES = data_text("lintian-overrides")  # what every giftbox package ships


def make_tree(root: Path, *, version: str = "1.0-1", depends: str = "python3",
              overrides: str = OVERRIDES) -> Path:
    """A staged package tree: control, docs, overrides and a small "venv" under PREFIX."""
    venv = root / PREFIX.lstrip("/")
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "a.py").write_text("A = 1\n")
    (venv / "lib" / "b.py").write_text("B = 2\n")
    picture = venv / "lib" / "logo.png"  # an executable non-script: a W: tag on that file
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    picture.chmod(0o755)
    (venv / "bin").mkdir()
    (venv / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (venv / "bin" / "tool").chmod(0o755)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").symlink_to(f"{PREFIX}/bin/tool")
    doc = root / "usr/share/doc/lintdemo"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("lintdemo\n\nCopyright: 2026 the giftbox authors\n"
                                   "License: Expat\n")
    import gzip
    with gzip.GzipFile(doc / "changelog.Debian.gz", "wb", mtime=0) as gz:
        gz.write(f"lintdemo ({version}) bookworm; urgency=medium\n\n  * Test.\n\n"
                 " -- giftbox <giftbox@packages.invalid>  Tue, 14 Nov 2023 22:13:20 +0000\n"
                 .encode())
    (root / "usr/share/lintian/overrides").mkdir(parents=True)
    (root / "usr/share/lintian/overrides/lintdemo").write_text(overrides)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(CONTROL.format(version=version, depends=depends))
    for dirpath, _dirs, _files in os.walk(root):
        os.chmod(dirpath, 0o755)
    return root


def lint(tree: Path, cache: Path, work: Path) -> tuple[tuple[str, ...], int, int]:
    """lintian_cached on ``tree``; returns the verdict and how many files were linted / had
    a cached verdict, as the reporter told it."""
    out = io.StringIO()
    deb = work / "lintdemo.deb"
    dpkg_deb_build(tree, deb, COMP, EPOCH)
    verdict = lintian_cached(deb, tree, PREFIX, cache, work,
                             lambda t, o: dpkg_deb_build(t, o, COMP, EPOCH), Reporter(out),
                             DigestCache(cache / "digests.json"))
    match = re.search(r"linting (\d+) of \d+ files with lintian \((\d+) have", out.getvalue())
    assert match, out.getvalue()
    return verdict, int(match.group(1)), int(match.group(2))


def replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)  # by rename, as every giftbox writer does


@pytest.mark.slow
def test_a_cached_lint_verdict_is_reused_only_for_the_same_digest(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    # the reference: plain lintian over the whole package
    dpkg_deb_build(tree, work / "full.deb", COMP, EPOCH)
    full = lintian(work / "full.deb", Reporter(io.StringIO()))
    assert any("executable-not-elf-or-script" in line and "logo.png" in line for line in full)

    first, linted, cached = lint(tree, cache, work)
    assert (linted, cached) == (4, 0)  # a.py, b.py, logo.png, bin/tool: every venv file
    assert sorted(first) == sorted(full)

    # a new build: a new version, the same venv files -> none of them is linted again but
    # bin/tool, which /usr/bin/tool points at (links and their targets: every time), and the
    # cached tag still reaches the verdict
    (tree / "DEBIAN/control").write_text(CONTROL.format(version="1.0-2", depends="python3"))
    second, linted, cached = lint(tree, cache, work)
    assert (linted, cached) == (1, 3)
    assert sorted(second) == sorted(full)

    # a changed project file is linted again, and only it
    replace(tree / PREFIX.lstrip("/") / "lib" / "a.py", "A = 3\n")
    _third, linted, cached = lint(tree, cache, work)
    assert (linted, cached) == (2, 2)

    # a mode is part of the digest: the file that lost its x bit is linted, its tag is gone
    (tree / PREFIX.lstrip("/") / "lib" / "logo.png").chmod(0o644)
    fourth, linted, cached = lint(tree, cache, work)
    assert (linted, cached) == (2, 2)
    assert not any("logo.png" in line for line in fourth)

    # another package context (Depends are read by per-file checks): everything again
    (tree / "DEBIAN/control").write_text(CONTROL.format(version="1.0-2", depends="python3.11"))
    _fifth, linted, cached = lint(tree, cache, work)
    assert (linted, cached) == (4, 0)


@pytest.mark.slow
def test_a_rejected_package_is_rejected_on_every_build(tmp_path: Path) -> None:
    # without the override, every file under /opt is an error (dir-or-file-in-opt)
    tree = make_tree(tmp_path / "tree", overrides=OVERRIDES.replace("dir-or-file-in-opt *",
                                                                     ""))
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    for _ in range(2):  # an error is never cached as a pass
        with pytest.raises(PackageError) as err:
            lint(tree, cache, work)
        assert "dir-or-file-in-opt" in err.value.message
    assert not list(cache.glob("*.json")) or all(
        p.name == "digests.json" for p in cache.glob("*.json"))


def test_digests_follow_the_inode_and_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("one")
    cache = DigestCache(tmp_path / "digests.json")
    first = cache.digests(path)
    cache.save()
    again = DigestCache(tmp_path / "digests.json")
    assert again.digests(path) == first
    replace(path, "two")
    assert again.digests(path) != first


def test_tree_scan_reads_only_what_is_not_linked_from_the_layer(tmp_path: Path) -> None:
    layer = tmp_path / "layer" / "venv"
    (layer / "lib").mkdir(parents=True)
    (layer / "lib" / "dep.py").write_text("PATH = '/giftbox-build/leak'\n")
    (layer / "lib" / "clean.py").write_text("X = 1\n")
    venv = tmp_path / "venv"
    venv.mkdir()
    shutil.rmtree(venv)
    shutil.copytree(layer, venv, copy_function=os.link)
    (venv / "lib" / "project.py").write_text("Y = '/giftbox-build/also'\n")
    needles = ["/giftbox-build"]
    wrong, hits = scan_tree_shared(venv, Arch.parse("x86_64"), needles, layer)
    assert (wrong, hits) == scan_tree(venv, Arch.parse("x86_64"), needles)
    assert set(hits) == {"lib/dep.py", "lib/project.py"}
    # the layer's verdict is kept beside it, for its arch and needles
    assert (layer.parent / "tree-scan.json").is_file()
    # a file replaced in the build (a new inode) is read again, not taken from the layer
    replace(venv / "lib" / "dep.py", "PATH = None\n")
    _wrong, hits = scan_tree_shared(venv, Arch.parse("x86_64"), needles, layer)
    assert set(hits) == {"lib/project.py"}


def test_staging_by_hard_links_never_changes_the_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "lib").mkdir(parents=True)
    ext = venv / "lib" / "_ext.so"
    ext.write_bytes(b"\x7fELF" + b"\0" * 16)
    ext.chmod(0o775)  # wheels ship extensions executable; packages want them 0644
    old = venv / "lib" / "old.py"
    old.write_text("OLD = 1\n")
    os.utime(old, (EPOCH - 10, EPOCH - 10))  # older than the epoch: must be set, not clamped
    new = venv / "lib" / "new.py"
    new.write_text("NEW = 1\n")
    (venv / "lib" / "twin.py").unlink(missing_ok=True)
    os.link(new, venv / "lib" / "twin.py")  # two paths, one inode, inside the venv
    before = {p.name: p.lstat() for p in (venv / "lib").iterdir()}

    staged = tmp_path / "root" / "venv"
    staged.parent.mkdir()
    _link_tree(venv, staged)
    set_mtimes(tmp_path / "root", EPOCH)

    for name, st in before.items():  # the venv's inodes: untouched
        now = (venv / "lib" / name).lstat()
        assert (stat.S_IMODE(now.st_mode), now.st_mtime_ns) == \
            (stat.S_IMODE(st.st_mode), st.st_mtime_ns), name
    assert stat.S_IMODE((staged / "lib" / "_ext.so").stat().st_mode) == 0o644
    assert (staged / "lib" / "old.py").stat().st_mtime == EPOCH
    assert (staged / "lib" / "new.py").samefile(new)  # linked, not copied
    # the twin became a file of its own: tar never sees a hard link inside the package
    assert not (staged / "lib" / "twin.py").samefile(staged / "lib" / "new.py")


def test_apt_lists_age_from_the_last_update(tmp_path: Path) -> None:
    assert apt_lists_age(tmp_path, 10_000) is None  # never updated: refresh
    mark_apt_lists(tmp_path, 10_000)
    assert apt_lists_age(tmp_path, 12_000) == 2_000  # fresh for APT_LISTS_MAX_AGE
    assert APT_LISTS_MAX_AGE <= 24 * 3600


def test_lintians_version_is_asked_again_when_the_program_is_not_the_one_recorded(
        tmp_path: Path) -> None:
    from giftbox.package.lint import lintian_version

    real = subprocess.run(["lintian", "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()
    record = tmp_path / "lintian-version.record"
    try:
        lintian_version.cache_clear()
        assert lintian_version(tmp_path) == real  # asked, and recorded
        data = json.loads(record.read_text())
        assert data["version"] == real
        # the record is what answers while the program is the one it names
        record.write_text(json.dumps({**data, "version": "Lintian vRECORDED"}))
        lintian_version.cache_clear()
        assert lintian_version(tmp_path) == "Lintian vRECORDED"
        # another program (an upgrade replaces the file: new inode, ctime) is asked again
        program = list(data["program"])
        program[2] += 1
        record.write_text(json.dumps({"program": program, "version": "Lintian vSTALE"}))
        for text in (json.dumps({"program": program, "version": "Lintian vSTALE"}),
                     "{not json", json.dumps({"program": data["program"], "version": 7}),
                     json.dumps(["a", "list"])):
            record.write_text(text)
            lintian_version.cache_clear()
            assert lintian_version(tmp_path) == real
    finally:
        lintian_version.cache_clear()


# --- lintian started ahead ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_lintian_waiting() -> Iterator[None]:
    """Each test starts and ends with no lintian started ahead in this process (a build of
    an earlier test may have left one, unused)."""
    LintianAhead.close_all()
    yield
    LintianAhead.close_all()


def _plain_and_ahead(deb: Path, *extra: str) -> tuple[tuple[int, str, str],
                                                     tuple[int, str, str]]:
    args = ["--allow-root", "--tag-display-limit", "0", "--fail-on", "error", *extra,
            str(deb)]
    plain = subprocess.run(["lintian", *args], capture_output=True, text=True, check=False)
    LintianAhead.start()
    ahead = LintianAhead.take()
    assert ahead is not None
    return (plain.returncode, plain.stdout, plain.stderr), ahead.run(args)


@pytest.mark.slow
def test_lintian_started_ahead_is_lintians_verdict_for_a_warning_and_for_an_error(
        tmp_path: Path) -> None:
    # a package with W: tags (exit 0) and one with E: tags (exit 2): the same exit code,
    # the same lines in the same order, the same stderr, as lintian run afresh
    warned = make_tree(tmp_path / "warned")
    refused = make_tree(tmp_path / "refused",
                        overrides=OVERRIDES.replace("dir-or-file-in-opt *", ""))
    for tree, code in ((warned, 0), (refused, 2)):
        deb = tmp_path / f"{tree.name}.deb"
        dpkg_deb_build(tree, deb, COMP, EPOCH)
        plain, ahead = _plain_and_ahead(deb)
        assert plain[0] == code, plain
        assert ahead == plain
        assert ("E: " in plain[1]) == (code == 2) and "W: " in plain[1]
    assert LintianAhead.waiting() == 0


@pytest.mark.slow
def test_the_profile_loaded_ahead_is_the_one_lintian_would_load(tmp_path: Path) -> None:
    """The run is handed the profile loaded ahead only when it asks for that one; the
    options that change a profile after its load still do; another profile is loaded."""
    deb = tmp_path / "warned.deb"
    dpkg_deb_build(make_tree(tmp_path / "warned"), deb, COMP, EPOCH)
    plain, _ = _plain_and_ahead(deb)
    tag = next(line.split()[2] for line in plain[1].splitlines() if line.startswith("W: "))
    for extra in (("--suppress-tags", tag), ("--profile", "debian"), ("--profile", "dpkg")):
        plain, ahead = _plain_and_ahead(deb, *extra)
        assert ahead == plain, extra
        if extra[1] != "dpkg":
            assert (tag in plain[1]) == (extra[0] != "--suppress-tags"), extra


@pytest.mark.slow
def test_the_lint_takes_the_lintian_started_ahead(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    LintianAhead.start()
    assert LintianAhead.waiting() == 1
    first, _linted, _cached = lint(tree, cache, work)
    assert LintianAhead.waiting() == 0  # taken, and it gave lintian's verdict
    shutil.rmtree(cache)
    again, _linted, _cached = lint(tree, cache, work)  # no lintian waiting: started now
    assert sorted(first) == sorted(again)
    assert any("logo.png" in line for line in first)


def test_a_lintian_whose_loading_fails_is_run_afresh_and_one_not_taken_runs_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a "lintian" beside no Lintian modules: the loading fails, the program is exec'ed with
    # the arguments as given (a space, an empty one, a non-ASCII one kept whole)
    bin_dir = tmp_path / "share" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "lintian"
    fake.write_text("#!/usr/bin/perl\nprint join('|', @ARGV), \"\\n\"; exit 3;\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    LintianAhead.start()
    ahead = LintianAhead.take()
    assert ahead is not None and ahead.program == str(fake)
    assert ahead.run(["a b", "", "é", "--x"]) == (3, "a b||é|--x\n", "")

    LintianAhead.start()
    proc = LintianAhead._waiting[-1].proc
    LintianAhead.close_all()  # what the process does at exit for those left
    assert proc.returncode == 0 and LintianAhead.waiting() == 0

    # one started for another lintian than the PATH's now is not used, nor one started in
    # another environment than this process has now
    LintianAhead.start()
    monkeypatch.setenv("PATH", os.environ["PATH"].split(":", 1)[1])
    assert LintianAhead.take() is None
    LintianAhead.start()
    monkeypatch.setenv("LINTIAN_PROFILE", "debian")
    assert LintianAhead.take() is None
    assert LintianAhead.waiting() == 0
