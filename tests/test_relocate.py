"""The build's host-side work on a venv, told with real venvs made here (the stdlib's venv and
virtualenv, which the builders use): built at one path, relocated, moved, then its scripts
and ``activate`` run from the new place; the bindings shim serves exactly the named distro
modules. No engine, no builder: the fast tier."""

from __future__ import annotations

import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from giftbox.bindings import SHIM_MODULE, write_shim
from giftbox.relocate import (
    TRAMPOLINE,
    fix_records,
    link_tree,
    own_files,
    project_paths,
    record_hash,
    relocate,
    site_packages,
    timestamp_pycs,
)

PLAIN_SCRIPT = "#!{prefix}/bin/python\n# -*- coding: utf-8 -*-\n" \
    "import sys\nprint('demo', sys.prefix)\n"
# pip's and uv's form when the shebang would be too long for the kernel
LONG_SCRIPT = "#!/bin/sh\n'''exec' \"{prefix}/bin/python\" \"$0\" \"$@\"\n' '''\n" \
    "import sys\nprint('demo-long', sys.prefix)\n"
OTHER_SCRIPT = "#!/bin/sh\necho not a python script\n"


def _make_venv(kind: str, path: Path) -> None:
    if kind == "virtualenv":
        pytest.importorskip("virtualenv")
        argv = [sys.executable, "-m", "virtualenv", "-q", "--no-setuptools", "--no-wheel",
                "--no-periodic-update", "--activators", "bash,python", str(path)]
    else:
        argv = [sys.executable, "-m", "venv", "--without-pip", str(path)]
    subprocess.run(argv, check=True, capture_output=True)


def _install_demo(venv: Path) -> Path:
    """What installing a small wheel leaves: two console scripts, a module, a dist-info whose
    RECORD lists them (and a file that is not there) and a direct_url.json naming the build's
    dist/ directory; uv's cache note. Returns the dist-info."""
    prefix = str(venv)
    for name, text in (("demo", PLAIN_SCRIPT), ("demo-long", LONG_SCRIPT),
                       ("other", OTHER_SCRIPT)):
        script = venv / "bin" / name
        script.write_text(text.format(prefix=prefix))
        script.chmod(0o755)
    site = site_packages(venv)
    (site / "demo.py").write_text("VALUE = 1\n")
    info = site / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (info / "direct_url.json").write_text('{"url": "file:///giftbox-build/dist/demo.whl"}')
    (info / "uv_cache.json").write_text('{"timestamp": 1234567890}')
    rows = [f"{rel},{record_hash(path.read_bytes())},{path.stat().st_size}"
            for rel, path in (("../../../bin/demo", venv / "bin" / "demo"),
                              ("../../../bin/demo-long", venv / "bin" / "demo-long"),
                              ("demo.py", site / "demo.py"),
                              ("demo-1.0.dist-info/METADATA", info / "METADATA"))]
    rows += ["demo-1.0.dist-info/direct_url.json,,", "demo-1.0.dist-info/uv_cache.json,,",
             "gone.py,sha256=AAAA,4", "demo-1.0.dist-info/RECORD,,"]
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    return info


def _bash(script: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("kind", ["venv", "virtualenv"])
def test_a_relocated_venv_runs_its_scripts_and_activates_after_being_moved(
        kind: str, tmp_path: Path) -> None:
    prefix = tmp_path / "builder" / "opt" / "openstack" / "demo"
    _make_venv(kind, prefix)
    info = _install_demo(prefix)
    relocate(prefix, str(prefix))

    for name in ("demo", "demo-long"):
        assert (prefix / "bin" / name).read_text().startswith(TRAMPOLINE), name
    assert (prefix / "bin" / "other").read_text() == OTHER_SCRIPT
    for litter in (".gitignore", "CACHEDIR.TAG", ".lock"):
        assert not (prefix / litter).exists(), litter
    assert not (info / "direct_url.json").exists() and not (info / "uv_cache.json").exists()
    record = (info / "RECORD").read_text()
    demo = (prefix / "bin" / "demo").read_bytes()
    assert f"../../../bin/demo,{record_hash(demo)},{len(demo)}\n" in record
    assert "direct_url.json" not in record and "uv_cache.json" not in record
    assert "gone.py" not in record
    assert "demo-1.0.dist-info/RECORD,,\n" in record

    # Installed elsewhere: nothing is left at the build path, and an entry point is reached
    # through a symlink from another directory, as /usr/bin's links reach a package's venv.
    moved = tmp_path / "target" / "srv" / "moved"
    moved.parent.mkdir(parents=True)
    shutil.move(prefix, moved)
    assert not prefix.exists()
    links = tmp_path / "target" / "usr-bin"
    links.mkdir()
    (links / "demo").symlink_to(moved / "bin" / "demo")
    real = os.path.realpath(moved)
    out = _bash(f"{links}/demo && {moved}/bin/demo-long && . {moved}/bin/activate && "
                "echo \"venv $VIRTUAL_ENV\" && python -c 'import sys; print(\"python\", "
                "sys.prefix)' && deactivate && echo \"after ${VIRTUAL_ENV-none}\"", tmp_path)
    assert out.splitlines() == [f"demo {moved}", f"demo-long {moved}", f"venv {real}",
                                f"python {real}", "after none"]


def test_a_linked_layer_relocated_again_is_left_as_it_is(tmp_path: Path) -> None:
    """A build hard-links the deps layer's files and relocates the result again: nothing of
    the layer is rewritten (each inode stays shared with the layer)."""
    layer = tmp_path / "layer" / "venv"
    _make_venv("venv", layer)
    _install_demo(layer)
    relocate(layer, str(layer))
    build = tmp_path / "build" / "venv"
    build.mkdir(parents=True)
    link_tree(layer, build)
    relocate(build, str(layer))
    files = [p for p in layer.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files
    for path in files:
        assert os.stat(path).st_ino == os.stat(build / path.relative_to(layer)).st_ino, path


def test_the_link_fills_the_directory_it_is_given(tmp_path: Path) -> None:
    """link_tree keeps the directory (a builder container may have it mounted already) and
    makes in it the tree cp -al of the layer makes: the same names, types, modes, link
    targets, and every file the layer's inode."""
    layer = tmp_path / "layer" / "venv"
    _make_venv("venv", layer)
    _install_demo(layer)
    (layer / "lib" / "odd").mkdir(mode=0o700)
    os.chmod(layer / "lib" / "odd", 0o700)
    build = tmp_path / "build" / "venv"
    build.mkdir(parents=True)
    before = os.stat(build).st_ino
    link_tree(layer, build)
    assert os.stat(build).st_ino == before

    def shape(root: Path) -> list[tuple[str, int, str]]:
        return sorted((str(p.relative_to(root)), p.lstat().st_mode,
                       os.readlink(p) if p.is_symlink() else "") for p in root.rglob("*"))

    assert shape(build) == shape(layer)
    assert os.stat(build).st_mode == os.stat(layer).st_mode
    for path in layer.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert os.stat(build / path.relative_to(layer)).st_ino == os.stat(path).st_ino


def test_relocation_writes_by_rename_never_through_a_hard_link(tmp_path: Path) -> None:
    layer = tmp_path / "layer" / "venv"
    _make_venv("venv", layer)
    info = _install_demo(layer)
    before = {p: p.read_bytes() for p in (layer / "bin" / "demo", info / "RECORD",
                                          layer / "bin" / "activate")}
    build = tmp_path / "build" / "venv"
    build.mkdir(parents=True)
    link_tree(layer, build)
    relocate(build, str(layer))
    assert (build / "bin" / "demo").read_text().startswith(TRAMPOLINE)
    assert {p: p.read_bytes() for p in before} == before
    assert (info / "direct_url.json").is_file()  # removed from the build's tree only


def test_bytecode_rewritten_by_compileall_gets_its_record_hash(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _make_venv("venv", venv)
    info = _install_demo(venv)
    site = site_packages(venv)
    pyc = site / "__pycache__" / "demo.cpython-311.pyc"
    py_compile.compile(str(site / "demo.py"), cfile=str(pyc),
                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    record = info / "RECORD"
    record.write_text(record.read_text() + "__pycache__/demo.cpython-311.pyc,sha256=AAAA,1\n")
    assert timestamp_pycs(venv) == [pyc]
    py_compile.compile(str(site / "demo.py"), cfile=str(pyc),
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    assert timestamp_pycs(venv) == []
    fix_records(site, set(), set())
    assert "demo.cpython-311.pyc,sha256=AAAA,1" in record.read_text()  # only with bytecode
    fix_records(site, set(), set(), bytecode=True)
    data = pyc.read_bytes()
    assert f"__pycache__/demo.cpython-311.pyc,{record_hash(data)},{len(data)}\n" in \
        record.read_text()


def test_project_paths_are_what_the_projects_record_installed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _make_venv("venv", venv)
    _install_demo(venv)
    site = site_packages(venv)
    assert project_paths(site, "Demo") == [site / "demo.py"]  # bin/ and dist-info left out


# --- the distro-only bindings --------------------------------------------------------------


def _distro_site(path: Path) -> Path:
    """A distro's dist-packages: two bindings (one a package), and what else is there."""
    (path / "libvirt.py").parent.mkdir(parents=True)
    (path / "libvirt.py").write_text("import libvirtmod\nFROM = 'distro'\n")
    (path / "libvirtmod.py").write_text("")  # libvirt's C half, in the real package
    (path / "rados").mkdir()
    (path / "rados" / "__init__.py").write_text("FROM = 'distro'\n")
    (path / "rados" / "ioctx.py").write_text("")
    (path / "six.py").write_text("FROM = 'distro'\n")
    (path / "apt_pkg.py").write_text("")
    return path


def _python(venv: Path, code: str) -> str:
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_bindings_shim_serves_exactly_the_named_modules(tmp_path: Path) -> None:
    distro = _distro_site(tmp_path / "usr" / "lib" / "python3" / "dist-packages")
    venv = tmp_path / "venv"
    _make_venv("venv", venv)
    site = site_packages(venv)
    (site / "six.py").write_text("FROM = 'venv'\n")  # the venv's own, pinned by the lock
    shim = write_shim(site, ["libvirt", "rados", "six"], [str(distro)])
    assert shim == site / f"{SHIM_MODULE}.py"
    out = _python(venv, (
        "import importlib.util, libvirt, rados.ioctx, six\n"
        "print(libvirt.FROM, rados.FROM, six.FROM)\n"
        "print(importlib.util.find_spec('apt_pkg'))\n"))
    # The named bindings (and what starts with their names: libvirtmod) come from the
    # distro; a module the venv has itself stays the venv's; the rest of the distro's
    # directory is not there at all.
    assert out.splitlines() == ["distro distro venv", "None"]


def test_no_bindings_no_shim(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    assert write_shim(site, [], ["/usr/lib/python3/dist-packages"]) is None
    assert list(site.iterdir()) == []


def test_own_files_are_what_the_build_added_or_replaced(tmp_path: Path) -> None:
    layer = tmp_path / "layer" / "venv"
    (layer / "lib" / "pkg" / "__pycache__").mkdir(parents=True)
    (layer / "lib" / "pkg" / "a.py").write_text("A = 1\n")
    (layer / "lib" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0" * 16)
    (layer / "lib" / "gone.py").write_text("")
    venv = tmp_path / "venv"
    shutil.copytree(layer, venv, copy_function=os.link, symlinks=True)
    (venv / "lib" / "gone.py").unlink()
    (venv / "lib" / "new").mkdir()
    (venv / "lib" / "new" / "b.py").write_text("B = 2\n")
    replaced = venv / "lib" / "pkg" / "a.py"
    (tmp_path / "tmp").write_text("A = 2\n")
    os.replace(tmp_path / "tmp", replaced)  # a new inode at the layer's path
    (venv / "lib" / "link.py").symlink_to("pkg/a.py")
    (venv / "lib64").symlink_to("lib")
    assert own_files(venv, layer) == ["lib/new/b.py", "lib/pkg/a.py"]
    # a timestamp-based .pyc of the layer's own is not read again; one the build wrote is
    stale = venv / "lib" / "new" / "__pycache__" / "b.cpython-311.pyc"
    stale.parent.mkdir()
    stale.write_bytes(b"\x00" * 16)  # flags 0: timestamp-based
    assert timestamp_pycs(venv, shared=layer) == [stale]
    assert timestamp_pycs(venv) == [stale, venv / "lib" / "pkg" / "__pycache__" /
                                    "a.cpython-311.pyc"]


def test_relocating_one_dist_reads_only_its_record_and_those_naming_a_change(
        tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _make_venv("venv", venv)
    info = _install_demo(venv)
    site = site_packages(venv)
    # a deps-layer distribution: its RECORD names a file that is not there (a full pass
    # would drop that line) and nothing relocate changes
    layer_info = site / "dep-2.0.dist-info"
    layer_info.mkdir()
    layer_record = layer_info / "RECORD"
    layer_record.write_text("dep.py,sha256=AAAA,1\ndep-2.0.dist-info/RECORD,,\n")
    # another one that lists the project's script "demo-long" (installed over its own)
    naming_info = site / "shadow-1.0.dist-info"
    naming_info.mkdir()
    naming_record = naming_info / "RECORD"
    naming_record.write_text("../../../bin/demo-long,sha256=AAAA,1\n")
    before = layer_record.read_bytes()
    relocate(venv, str(venv), dist="demo")
    assert layer_record.read_bytes() == before
    script = (venv / "bin" / "demo-long").read_bytes()
    assert script.startswith(TRAMPOLINE.encode())
    assert f"../../../bin/demo-long,{record_hash(script)},{len(script)}\n" in \
        naming_record.read_text()
    assert "direct_url.json" not in (info / "RECORD").read_text()
    relocate(venv, str(venv))  # every RECORD: the missing file's line goes
    assert layer_record.read_text() == "dep-2.0.dist-info/RECORD,,\n"
