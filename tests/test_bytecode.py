"""The project's bytecode, compiled once per source content (giftbox/bytecode.py), and the
scratch trees removed in the background (giftbox/trash.py). Compiled by the host's real
python with compileall, as the builder's is."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from giftbox import trash
from giftbox.bytecode import BytecodeCache, python_sources

PREFIX = "/opt/openstack/demo"


def project(venv: Path) -> Path:
    pkg = venv / "lib" / "site-packages" / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("def f():\n    return 2\n")
    (pkg / "data.txt").write_text("not python\n")
    return pkg


def compile_all(paths: list[Path]) -> None:
    if paths:
        subprocess.run([sys.executable, "-B", "-m", "compileall", "-q", "-f",
                        "--invalidation-mode", "checked-hash", *map(str, paths)], check=True)


def pycs(pkg: Path) -> dict[str, bytes]:
    return {str(p.relative_to(pkg)): p.read_bytes() for p in sorted(pkg.rglob("*.pyc"))}


def build(tmp: Path, cache_dir: Path, edit: str | None = None) -> tuple[
        dict[str, bytes], list[Path]]:
    """One 'build': a fresh venv (at one path, as a prefix is), cached bytecode placed, the
    rest compiled and stored; returns the venv's pycs."""
    venv = tmp / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    pkg = project(venv)
    if edit:
        (pkg / "sub" / "mod.py").write_text(edit)
    cache = BytecodeCache(cache_dir, "sha256:" + "ab" * 32, venv, PREFIX)
    todo, keys = cache.place(python_sources([pkg]))
    compile_all(todo)
    cache.store(keys)
    return pycs(pkg), todo


def test_sources_are_what_compileall_compiles(tmp_path: Path) -> None:
    pkg = project(tmp_path / "venv")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "stray.py").write_text("")
    names = [p.relative_to(pkg).as_posix() for p in python_sources([pkg])]
    assert names == ["__init__.py", "sub/__init__.py", "sub/mod.py"]


def test_a_second_build_compiles_only_what_changed_and_gets_the_same_bytes(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, todo1 = build(tmp_path, cache)
    assert len(todo1) == 3
    second, todo2 = build(tmp_path, cache)
    assert todo2 == []
    assert second == first
    edit = "def f():\n    return 3\n"
    third, todo3 = build(tmp_path, cache, edit=edit)
    assert [p.name for p in todo3] == ["mod.py"]
    # what was placed is what compileall writes for that tree at that path
    venv = tmp_path / "venv"
    shutil.rmtree(venv)
    pkg = project(venv)
    (pkg / "sub" / "mod.py").write_text(edit)
    compile_all(python_sources([pkg]))
    assert pycs(pkg) == third
    assert third != first


def test_a_damaged_entry_is_compiled_again_never_placed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(tmp_path, cache)
    entries = sorted(cache.rglob("*.pyc"))
    assert len(entries) == 3
    for entry in entries:
        blob = bytearray(entry.read_bytes())
        blob[-1] ^= 0xFF
        entry.write_bytes(bytes(blob))
    _pycs, todo = build(tmp_path, cache)
    assert len(todo) == 3
    entries[0].write_bytes(b"giftbox-pyc 1\n../evil.pyc\n" + b"0" * 64 + b"\nx")
    entries[1].write_bytes(b"")
    _pycs, todo = build(tmp_path, cache)
    assert len(todo) == 2


def test_another_image_or_prefix_does_not_share_bytecode(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(tmp_path, cache)
    venv = tmp_path / "two"
    pkg = project(venv)
    for image, prefix in (("sha256:" + "cd" * 32, PREFIX), ("sha256:" + "ab" * 32, "/opt/x")):
        todo, _keys = BytecodeCache(cache, image, venv, prefix).place(python_sources([pkg]))
        assert len(todo) == 3


def test_a_discarded_tree_is_gone_once_settled_and_its_name_free_at_once(
        tmp_path: Path) -> None:
    graveyard = tmp_path / "cache" / "trash"
    tree = tmp_path / "work"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    trash.discard(tree, graveyard)
    assert not tree.exists()
    tree.mkdir()  # the name can be used again while the old tree goes
    # the grave is in the graveyard, never beside the tree: the tree's folder can be
    # removed or copied whole meanwhile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "work"]
    shutil.rmtree(tree)
    trash.settle()
    assert list(graveyard.iterdir()) == []
    trash.discard(tmp_path / "absent", graveyard)  # nothing to do
    trash.settle()


def test_graves_of_a_killed_process_go_with_the_next_discard(tmp_path: Path) -> None:
    graveyard = tmp_path / "trash"
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = graveyard / f"{dead.pid}-0-work"
    (orphan / "x").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    trash.discard(tmp_path / "work", graveyard)
    trash.settle()
    assert list(graveyard.iterdir()) == []


def test_without_a_graveyard_a_tree_is_removed_at_once(tmp_path: Path) -> None:
    (tmp_path / "work" / "a").mkdir(parents=True)
    trash.discard(tmp_path / "work", None)
    assert list(tmp_path.iterdir()) == []
