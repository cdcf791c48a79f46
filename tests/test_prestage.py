"""Staging ahead (giftbox.package.layout.prestage): the deps layer's venv linked while the
build runs, then brought in line with the build's venv, is the tree staging the venv from
nothing makes; and the ELF cache that spares opening the layer's files on every package."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from giftbox.package.layout import (
    PRESTAGED,
    ElfCache,
    _link_tree,
    _Linker,
    keep_staged,
    kept_staged,
    prestage,
)

ELF_X86 = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + b"\x3e\x00"  # e_machine 62


def describe(top: Path, venv: Path) -> list[tuple[str, ...]]:
    """Everything a package's bytes depend on in a staged tree, plus which of its files are
    the venv's own inodes (linked) and whether any two of its paths share an inode."""
    out: list[tuple[str, ...]] = []
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = str(path.relative_to(top))
            st_ = path.lstat()
            mode = oct(stat.S_IMODE(st_.st_mode))
            if stat.S_ISLNK(st_.st_mode):
                out.append((rel, "link", os.readlink(path)))
            elif stat.S_ISDIR(st_.st_mode):
                out.append((rel, "dir", mode))
            else:
                twin = inodes.setdefault(st_.st_ino, rel)
                source = venv / rel
                linked = source.is_file() and not source.is_symlink() and \
                    source.lstat().st_ino == st_.st_ino
                out.append((rel, "file", mode, path.read_bytes().hex(), str(linked),
                            "" if twin == rel else f"shares {twin}"))
    return out


# one edit of the build's venv after the layer was linked into it
names = st.sampled_from(["a.py", "b.so", "c", "pkg", "pkg/d.py", "pkg/e.so", "pkg/sub",
                         "pkg/sub/f.py", "g.txt"])
edits = st.lists(st.tuples(st.sampled_from(["write", "replace", "remove", "mkdir", "symlink",
                                            "twin", "chmod-new", "dir-to-file"]),
                           names, st.binary(max_size=24)), max_size=8)


def layer_tree(top: Path) -> None:
    (top / "pkg" / "sub").mkdir(parents=True)
    (top / "a.py").write_text("A = 1\n")
    (top / "b.so").write_bytes(ELF_X86)
    os.chmod(top / "b.so", 0o644)
    (top / "pkg" / "d.py").write_text("D = 1\n")
    (top / "pkg" / "sub" / "f.py").write_text("F = 1\n")
    (top / "g.txt").write_text("g\n")
    os.symlink("a.py", top / "link-a")
    os.chmod(top / "pkg" / "sub" / "f.py", 0o775)  # a mode the package does not keep


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def apply(venv: Path, edits: list[tuple[str, str, bytes]]) -> None:
    """What a build does to the linked layer: every writer replaces a file (a new inode),
    never writes through a link."""
    for kind, name, data in edits:
        path = venv / name
        if not path.parent.is_dir() or path.parent.is_symlink():
            continue
        if kind in ("write", "replace"):
            if path.is_dir() and not path.is_symlink():
                continue
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data if kind == "write" else path.read_bytes()
                            if path.is_file() and not path.is_symlink() else data)
            os.replace(tmp, path)
        elif kind == "remove":
            _clear(path)
        elif kind == "mkdir":
            _clear(path)
            (path / "new").mkdir(parents=True)
            (path / "new" / "x.py").write_bytes(data)
        elif kind == "symlink":
            _clear(path)
            os.symlink("g.txt" if data[:1] < b"\x80" else "/usr/lib/python3/dist-packages",
                       path)
        elif kind == "twin":
            source = venv / "a.py"
            if source.is_file() and not source.is_symlink() and path != source:
                _clear(path)
                os.link(source, path)
        elif kind == "chmod-new":
            if path.is_file() and not path.is_symlink():
                fresh = path.read_bytes()
                path.unlink()
                path.write_bytes(fresh)
                os.chmod(path, 0o775)
        elif kind == "dir-to-file" and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            path.write_bytes(data)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_staging_ahead_then_syncing_is_staging_from_nothing(
        changes: list[tuple[str, str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        layer = work / "layer"
        layer.mkdir()
        layer_tree(layer)
        venv = work / "venv"  # the build's link step: cp -al of the layer
        shutil.copytree(layer, venv, symlinks=True, copy_function=os.link)
        apply(venv, changes)

        plain = work / "plain"
        _link_tree(venv, plain)
        folder = work / "build"
        folder.mkdir()
        prestage(layer, folder, "/opt/x")
        ahead = folder / PRESTAGED / "opt" / "x"
        _Linker().sync(str(venv), str(ahead))

        assert describe(ahead, venv) == describe(plain, venv)
        assert not (folder / f"{PRESTAGED}.partial").exists()


def tamper(tree: Path, edits: list[tuple[str, str, bytes]], layer: Path) -> None:
    """What a kept tree may hold besides a package's staged venv: anything at all (a
    directory's mode, a stray file, a file hard-linked to another of the layer's paths)."""
    apply(tree, edits)
    for kind, name, _data in edits:
        path = tree / name
        if kind == "chmod-new" and path.is_dir() and not path.is_symlink():
            os.chmod(path, 0o700)
        elif kind == "twin" and path.parent.is_dir() and not path.parent.is_symlink() \
                and name != "g.txt":
            _clear(path)
            os.link(layer / "g.txt", path)  # the layer's inode, at a path not its own


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits, edits, edits)
def test_staging_ahead_from_a_kept_tree_is_staging_ahead_from_nothing(
        before: list[tuple[str, str, bytes]], now: list[tuple[str, str, bytes]],
        tampered: list[tuple[str, str, bytes]]) -> None:
    """A package's staged venv kept for the next build of its target (an earlier build's
    venv, staged, the package's manifest added, then whatever else happened to the tree)
    gives the same prestaged tree, and the same staged tree, as linking the layer anew."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        layer = work / "layer"
        layer.mkdir()
        layer_tree(layer)
        old_venv = work / "old-venv"
        shutil.copytree(layer, old_venv, symlinks=True, copy_function=os.link)
        apply(old_venv, before)
        builds = work / "build" / "nova" / "debian12-x86_64"
        staged = work / "old-package" / "root" / "opt" / "x"
        staged.parent.mkdir(parents=True)
        _link_tree(old_venv, staged)
        (staged / "giftbox-manifest.json").write_text("{}\n")
        tamper(staged, tampered, layer)
        folder = builds / "new-build"
        folder.mkdir(parents=True)
        assert keep_staged(staged, kept_staged(folder)) and not staged.exists()

        venv = work / "venv"
        shutil.copytree(layer, venv, symlinks=True, copy_function=os.link)
        apply(venv, now)
        prestage(layer, folder, "/opt/x")
        assert not kept_staged(folder).exists()  # taken: no other build shares it
        ahead = folder / PRESTAGED / "opt" / "x"
        fresh = work / "fresh"
        fresh.mkdir()
        prestage(layer, fresh, "/opt/x")
        assert describe(ahead, layer) == describe(fresh / PRESTAGED / "opt" / "x", layer)
        _Linker().sync(str(venv), str(ahead))
        plain = work / "plain"
        _link_tree(venv, plain)
        assert describe(ahead, venv) == describe(plain, venv)


def test_a_kept_tree_is_never_merged_into_another(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    layer_tree(layer)
    folder = tmp_path / "builds" / "b1"
    folder.mkdir(parents=True)
    first, second = tmp_path / "p1", tmp_path / "p2"
    _link_tree(layer, first)
    _link_tree(layer, second)
    (second / "only-in-second").write_text("x\n")
    assert keep_staged(first, kept_staged(folder))
    assert not keep_staged(second, kept_staged(folder))  # one is kept already: left as it is
    assert second.is_dir() and not (kept_staged(folder) / "only-in-second").exists()
    assert kept_staged(folder).name.startswith(".")  # not seen as a build directory


def test_a_kept_tree_that_is_not_a_directory_is_never_followed(tmp_path: Path) -> None:
    """A symlink (or a file) where the kept tree goes is removed, not synced through: the
    directory it names is left as it was, and the layer is linked from nothing."""
    layer = tmp_path / "layer"
    layer.mkdir()
    layer_tree(layer)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "precious").write_text("not giftbox's\n")
    for planted in ("symlink", "file"):
        folder = tmp_path / planted / "build"
        folder.mkdir(parents=True)
        kept = kept_staged(folder)
        if planted == "symlink":
            kept.symlink_to(elsewhere)
        else:
            kept.write_text("x\n")
        prestage(layer, folder, "/opt/x")
        made = folder / PRESTAGED / "opt" / "x"
        assert made.is_dir() and not made.is_symlink()
        assert (made / "a.py").samefile(layer / "a.py")
        assert not os.path.lexists(kept)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious"]
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700


def test_prestage_replaces_an_interrupted_attempt(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    layer_tree(layer)
    partial = tmp_path / f"{PRESTAGED}.partial" / "opt" / "x"
    partial.mkdir(parents=True)
    (partial / "stale").write_text("from a killed build\n")
    prestage(layer, tmp_path, "/opt/x")
    made = tmp_path / PRESTAGED / "opt" / "x"
    assert not (made / "stale").exists() and (made / "a.py").samefile(layer / "a.py")
    assert stat.S_IMODE((made / "pkg" / "sub" / "f.py").stat().st_mode) == 0o755
    assert not (made / "pkg" / "sub" / "f.py").samefile(layer / "pkg" / "sub" / "f.py")


def _ident(path: Path) -> str:
    st_ = path.lstat()
    return f"{st_.st_dev}:{st_.st_ino}:{st_.st_size}:{st_.st_mtime_ns}"


def test_elf_cache_answers_from_its_record_per_inode_and_refuses_hostile_records(
        tmp_path: Path) -> None:
    lib = tmp_path / "lib.so"
    lib.write_bytes(ELF_X86)
    text = tmp_path / "mod.py"
    text.write_text("X = 1\n")
    record = tmp_path / "elf.json"
    cache = ElfCache(record)
    assert cache.machine(str(lib), lib.lstat()) == 62
    assert cache.machine(str(text), text.lstat()) is None
    cache.save()
    assert json.loads(record.read_text()) == {_ident(lib): 62, _ident(text): 0}

    # the record answers for an inode it knows (writers replace files, so an inode whose
    # size and mtime did not change holds the bytes it held): the file is not opened
    before = lib.stat()
    with open(lib, "r+b") as fh:
        fh.write(b"not ELF" + b"\0" * (len(ELF_X86) - 7))
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ElfCache(record).machine(str(lib), lib.lstat()) == 62
    # a new inode at that path is read, whatever the record says of the old one
    lib.unlink()
    lib.write_bytes(b"not ELF either\n")
    assert ElfCache(record).machine(str(lib), lib.lstat()) is None

    # damaged or hostile records are misses (the file is read), never answers
    text.unlink()
    text.write_bytes(ELF_X86)
    for bad in ("[]", "{", "null", json.dumps({_ident(text): True}),
                json.dumps({_ident(text): -1}), json.dumps({_ident(text): "0"}),
                json.dumps({_ident(text): 0.0})):
        record.write_text(bad)
        assert ElfCache(record).machine(str(text), text.lstat()) == 62, bad
