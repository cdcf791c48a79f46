"""The build stage with a real engine, real builder images and real PyPI."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, Upstream, copy_project, git, git_spec, write_spec

from giftbox import build as build_stage
from giftbox import records
from giftbox.audit import elf_machine
from giftbox.distros import Arch, get_distro
from giftbox.errors import BuildError, PackageError
from giftbox.package.layout import KEPT, PRESTAGED
from giftbox.pipeline import package_build, run_target
from giftbox.settings import Settings
from giftbox.spec import load_spec
from giftbox.ui import Reporter

pytestmark = pytest.mark.docker

SETUP_PY = """\
from setuptools import Extension, setup

setup(
    name="demo-ext",
    version="1.0.0",
    packages=["demo_ext"],
    ext_modules=[Extension("demo_ext._speed", ["demo_ext/_speed.c"])],
    install_requires=["six"],
    python_requires="{requires_python}",
    entry_points={{"console_scripts": ["demo-ext = demo_ext.cli:main"]}},
)
"""
SPEED_C = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, "Add."}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&module); }
"""
CLI_PY = """\
import platform
import sys

import six

from demo_ext import _speed


def main():
    if "--help" in sys.argv or "--version" in sys.argv:
        print("demo-ext 1.0.0")
        return 0
    print("demo-ext 2+3={} on {} six {}".format(_speed.add(2, 3), platform.machine(),
                                                six.__version__))
    return 0
"""


def demo_upstream(path: Path, requires_python: str = ">=3.9") -> Upstream:
    up = Upstream(path)
    (path / "setup.py").write_text(SETUP_PY.format(requires_python=requires_python))
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61", "wheel"]\n'
        'build-backend = "setuptools.build_meta"\n')
    (path / "requirements.txt").write_text("six\n")
    pkg = path / "demo_ext"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_speed.c").write_text(SPEED_C)
    (pkg / "cli.py").write_text(CLI_PY)
    (path / "demo.py").unlink()
    up.commit("A C extension and a console script")
    up.tag("1.0.0")
    return up


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    return demo_upstream(tmp_path_factory.mktemp("upstreams") / "demo-ext")


@pytest.fixture
def bsettings(root: Path, build_cache: Path) -> Settings:
    return Settings.resolve(root=root, env=dict(os.environ, GIFTBOX_CACHE=str(build_cache)))


def demo_spec(root: Path, url: str, patches: list[str] | None = None, extra: str = ""):
    body = git_spec("demo-ext", url, "1.0.0", patches=patches, extra=extra).replace(
        "  arches: [x86_64]", "  arches: [x86_64, ppc64le]").replace(
        "  distros: [debian12]", "  distros: [debian12, debian11]")
    write_spec(root, "demo-ext", body)
    return load_spec(root / "specs" / "demo-ext.yaml", root)


def run_in(image: str, arch: Arch, mounts: dict[Path, str], *argv: str) -> str:
    volumes = [f"--volume={src}:{dst}:ro" for src, dst in mounts.items()]
    proc = subprocess.run(["docker", "run", "--rm", f"--platform={arch.platform}", *volumes,
                           image, *argv], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def lock_and_build(root: Path, settings: Settings, spec, distro_name: str, arch: Arch):  # type: ignore[no-untyped-def]
    distro = get_distro(root / "builders", distro_name)
    build_stage.make_lock(spec, distro, arch, settings)
    return build_stage.build(spec, distro, arch, settings)


def test_c_extension_builds_audits_and_rebuilds_from_cache(root: Path, bsettings: Settings,
                                                           demo: Upstream) -> None:
    spec = demo_spec(root, demo.url)
    result = lock_and_build(root, bsettings, spec, "debian12", Arch.x86_64)
    assert not result.cached
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["upstream_commit"] == demo.head("1.0.0")
    assert manifest["prefix"] == "/opt/openstack/demo-ext"
    assert manifest["builder_image"].startswith("sha256:")
    assert manifest["version"]["deb"] == "1.0.0-1~deb12"
    assert len(manifest["lock_digest"]) == 64
    extensions = list(result.venv_dir.glob("lib/python3.11/site-packages/demo_ext/_speed*.so"))
    assert len(extensions) == 1 and elf_machine(extensions[0]) == Arch.x86_64.elf_machine
    audit = json.loads((result.directory / "audit.json").read_text())
    assert audit["extensions"] == {"demo_ext._speed": None}
    assert audit["scripts"] == {"demo-ext": None}
    assert "six" in audit["imports"]
    pycs = list(result.venv_dir.glob("lib/python3.11/site-packages/six*.pyc")) + list(
        result.venv_dir.glob("lib/python3.11/site-packages/__pycache__/six*.pyc"))
    assert pycs and pycs[0].read_bytes()[4:8] == b"\x03\x00\x00\x00"  # checked-hash pyc

    for litter in (".gitignore", "CACHEDIR.TAG", ".lock"):
        assert not (result.venv_dir / litter).exists(), litter

    again = build_stage.build(spec, get_distro(root / "builders", "debian12"), Arch.x86_64,
                              bsettings)
    assert again.cached and again.key == result.key and again.venv_dir == result.venv_dir
    (record,) = records.last_builds(bsettings, "demo-ext")
    assert record.status == "succeeded" and record.upstream_commit == demo.head("1.0.0")
    assert record.version == "1.0.0-1~deb12"


def test_venv_runs_after_being_moved(root: Path, bsettings: Settings, demo: Upstream,
                                     runtime_image: str) -> None:
    spec = demo_spec(root, demo.url)
    distro = get_distro(root / "builders", "debian12")
    try:
        result = build_stage.build(spec, distro, Arch.x86_64, bsettings)
    except BuildError:
        result = lock_and_build(root, bsettings, spec, "debian12", Arch.x86_64)
    out = run_in(runtime_image, Arch.x86_64, {result.venv_dir: "/srv/moved/demo"},
                 "bash", "-c", "ln -s /srv/moved/demo/bin/demo-ext /usr/local/bin/ && demo-ext"
                 " && . /srv/moved/demo/bin/activate && python -c 'import sys; print(sys.prefix)'")
    assert "demo-ext 2+3=5 on x86_64 six" in out
    assert "/srv/moved/demo\n" in out


@pytest.mark.ppc64le
def test_c_extension_for_ppc64le(root: Path, bsettings: Settings, demo: Upstream) -> None:
    spec = demo_spec(root, demo.url)
    result = lock_and_build(root, bsettings, spec, "debian12", Arch.ppc64le)
    so = next(result.venv_dir.glob("lib/python3.11/site-packages/demo_ext/_speed*.so"))
    assert elf_machine(so) == Arch.ppc64le.elf_machine == 21
    assert "powerpc64le" in so.name
    assert json.loads(result.manifest_path.read_text())["arch"] == "ppc64le"
    image = json.loads(result.manifest_path.read_text())["builder_image"]
    out = run_in(image, Arch.ppc64le, {result.venv_dir: "/srv/demo"}, "/srv/demo/bin/demo-ext")
    assert "demo-ext 2+3=5 on ppc64le" in out


def test_debian11_builds_with_its_own_python(root: Path, bsettings: Settings,
                                             demo: Upstream) -> None:
    spec = demo_spec(root, demo.url)
    result = lock_and_build(root, bsettings, spec, "debian11", Arch.x86_64)
    assert list(result.venv_dir.glob("lib/python3.9/site-packages/demo_ext/_speed*.so"))
    assert json.loads(result.manifest_path.read_text())["python"] == "3.9"


def test_stale_and_missing_lock_are_refused(root: Path, bsettings: Settings,
                                            demo: Upstream) -> None:
    distro = get_distro(root / "builders", "debian12")
    spec = demo_spec(root, demo.url)
    with pytest.raises(BuildError, match="no lock for demo-ext on debian12/x86_64") as info:
        build_stage.build(spec, distro, Arch.x86_64, bsettings)
    assert "giftbox lock demo-ext --distro debian12 --arch x86_64" in info.value.render()
    lock_file = root / "locks" / "demo-ext" / "debian12-x86_64.txt"
    lock_file.parent.mkdir(parents=True)
    shutil.copy(REPO / "locks" / "python-openstackclient" / "debian12-x86_64.txt", lock_file)
    with pytest.raises(BuildError, match="is stale"):
        build_stage.build(spec, distro, Arch.x86_64, bsettings)


def test_python_too_old_for_the_project(root: Path, bsettings: Settings,
                                        tmp_path: Path) -> None:
    up = demo_upstream(tmp_path / "new-python", requires_python=">=3.12")
    spec = demo_spec(root, up.url)
    with pytest.raises(BuildError) as info:
        build_stage.build(spec, get_distro(root / "builders", "debian12"), Arch.x86_64,
                          bsettings)
    assert "demo-ext 1.0.0 requires Python >=3.12, but debian12 ships Python 3.11" in \
        info.value.render()


def test_unresolvable_requirements_name_the_conflict(root: Path, bsettings: Settings,
                                                     demo: Upstream) -> None:
    spec = demo_spec(root, demo.url, extra="requirements:\n  - six<1.10\n")
    distro = get_distro(root / "builders", "debian12")
    with pytest.raises(BuildError) as info:
        build_stage.make_lock(spec, distro, Arch.x86_64, bsettings)
    text = info.value.render()
    assert "cannot be resolved" in text and "six" in text


def broken_demo(root: Path, settings: Settings, demo: Upstream, tmp_path: Path, rel: str,
                old: str, new: str):  # type: ignore[no-untyped-def]
    """The demo spec with one patch replacing ``old`` by ``new`` in ``rel``, locked for
    debian12: its spec and distro."""
    work = tmp_path / "breaker"
    git(tmp_path, "clone", "-q", str(demo.path), str(work))
    path = work / rel
    path.write_text(path.read_text().replace(old, new))
    git(work, "commit", "-qam", f"Break {rel}")
    patch = git(work, "format-patch", "-1", "-o", str(tmp_path / "p")).splitlines()[-1]
    (root / "patches" / "demo-ext").mkdir(parents=True)
    shutil.copy(patch, root / "patches" / "demo-ext" / "0001-break.patch")
    spec = demo_spec(root, demo.url, patches=["0001-break.patch"])
    distro = get_distro(root / "builders", "debian12")
    build_stage.make_lock(spec, distro, Arch.x86_64, settings)
    return spec, distro


def test_compile_failure_shows_the_log(root: Path, bsettings: Settings, demo: Upstream,
                                       tmp_path: Path) -> None:
    spec, distro = broken_demo(root, bsettings, demo, tmp_path, "demo_ext/_speed.c",
                               "return PyLong_FromLong(a + b);",
                               "return PyLong_FromLong(a + b) +;")
    with pytest.raises(BuildError) as info:
        build_stage.build(spec, distro, Arch.x86_64, bsettings)
    text = info.value.render()
    assert "building demo-ext's wheel failed" in text
    assert "_speed.c" in text and "error" in text
    log = Path(text.split("full log: ")[1].strip())
    assert log.is_file() and "_speed.c" in log.read_text()
    (record,) = records.last_builds(bsettings, "demo-ext")
    assert record.status == "failed" and "building demo-ext's wheel failed" in record.error


def test_a_refused_audit_leaves_no_package(root: Path, bsettings: Settings, demo: Upstream,
                                           tmp_path: Path) -> None:
    """The package is made while the console scripts are audited: when the audit refuses,
    the package it made goes with the refusal, and the build is not complete."""
    spec, distro = broken_demo(root, bsettings, demo, tmp_path, "demo_ext/cli.py",
                               '        print("demo-ext 1.0.0")\n        return 0',
                               '        raise SystemExit("refused on purpose")')
    notes = io.StringIO()
    with pytest.raises(BuildError) as info:
        run_target(spec, distro, Arch.x86_64, bsettings, Reporter(notes))
    text = info.value.render()
    assert "the audit of demo-ext's venv failed" in text and "demo-ext" in text
    assert "refused on purpose" in text
    shown = notes.getvalue()
    assert "==> package giftbox-demo-ext" in shown  # it was packaged alongside
    assert shown.index("==> package giftbox-demo-ext") < \
        shown.index("==> audit: pip check, imports and console scripts")
    builds = root / "build" / "demo-ext" / "debian12-x86_64"
    # beside the build: the staged venv kept for the next build's prestage, not a package
    (directory,) = (p for p in builds.iterdir() if p.name != KEPT)
    assert not any(p.suffix in (".deb", ".rpm") for p in (builds / KEPT).rglob("*"))
    assert not (directory / "package").exists()
    assert not (directory / PRESTAGED).exists()  # the deps part staged ahead: gone too
    assert not (directory / "result.json").exists()
    assert not list((root / "build").rglob("*.deb"))
    (record,) = records.last_builds(bsettings, "demo-ext")
    assert record.status == "failed" and "refused on purpose" in record.error


def test_a_packaging_error_after_a_passed_audit_leaves_the_build_complete(
        root: Path, bsettings: Settings, demo: Upstream) -> None:
    """Packaged alongside the audit, refused by the archive check: the build passed its
    audit, so it is complete and cached, as when packaging followed it; the error is the
    package's."""
    spec = demo_spec(root, demo.url)
    path = root / "specs" / "demo-ext.yaml"
    path.write_text(path.read_text().replace(
        "  prefix: /opt/openstack/demo-ext\n",
        "  prefix: /opt/openstack/demo-ext\n  depends:\n    deb: [giftbox-no-such-package]\n"))
    spec = load_spec(path, root)
    distro = get_distro(root / "builders", "debian12")
    build_stage.make_lock(spec, distro, Arch.x86_64, bsettings)
    with pytest.raises(PackageError) as info:
        run_target(spec, distro, Arch.x86_64, bsettings)
    assert "'giftbox-no-such-package'" in info.value.message
    again = build_stage.build(spec, distro, Arch.x86_64, bsettings)
    assert again.cached and (again.directory / "audit.json").is_file()
    (record,) = records.last_builds(bsettings, "demo-ext")
    assert record.status == "succeeded"


def test_a_package_staged_ahead_is_the_package_staged_from_the_cached_build(
        root: Path, bsettings: Settings, demo: Upstream) -> None:
    """A fresh build stages the deps layer's part of its package while the wheel is built
    (giftbox.package.layout.prestage); packaging the cached build later stages the venv
    from nothing: the two packages are the same bytes."""
    spec = demo_spec(root, demo.url)
    distro = get_distro(root / "builders", "debian12")
    build_stage.make_lock(spec, distro, Arch.x86_64, bsettings)
    notes = io.StringIO()
    target = run_target(spec, distro, Arch.x86_64, bsettings, Reporter(notes))
    assert "the deps layer's part staged ahead" in notes.getvalue()
    assert target.package is not None and not target.package.cached
    assert not (target.build.directory / PRESTAGED).exists()
    assert not (target.build.directory / f"{PRESTAGED}.partial").exists()
    ahead = target.package.sha256

    shutil.rmtree(target.build.directory / "package")
    later = io.StringIO()
    cached = build_stage.build(spec, distro, Arch.x86_64, bsettings)
    assert cached.cached
    info = package_build(cached, spec, distro, Arch.x86_64, bsettings, Reporter(later))
    assert not info.cached and "staged ahead" not in later.getvalue()
    assert info.sha256 == ahead


@pytest.mark.network
def test_nova_builds_and_reports_its_patched_version(root: Path, bsettings: Settings) -> None:
    """nova 33.0.0 from its PyPI tarball + our patch, with the committed lock."""
    copy_project(root, "nova")
    spec = load_spec(root / "specs" / "nova.yaml", root)
    distro = get_distro(root / "builders", "debian12")
    result = build_stage.build(spec, distro, Arch.x86_64, bsettings)
    assert result.manifest.patches[0].name == "0001-Report-giftbox-as-vendor-and-package.patch"
    assert (result.venv_dir / "lib/python3.11/site-packages/_giftbox_system_bindings.pth").is_file()
    image = result.manifest.builder_image
    out = run_in(image, Arch.x86_64, {result.venv_dir: "/opt/openstack/nova"},
                 "/opt/openstack/nova/bin/nova-manage", "--version")
    assert out.strip() == "33.0.0"
    # Our patch is in: nova reports giftbox as its packager.
    out = run_in(image, Arch.x86_64, {result.venv_dir: "/opt/openstack/nova"},
                 "/opt/openstack/nova/bin/python", "-c",
                 "from nova import version; print(version.NOVA_VENDOR, version.NOVA_PACKAGE)")
    assert out.strip() == "giftbox giftbox"


@pytest.mark.network
def test_first_users_command_on_ubuntu1604_ppc64le_is_refused_clearly(root: Path,
                                                                      giftbox) -> None:
    """`giftbox build nova --distro ubuntu16.04 --arch ppc64le`: nova 33 needs Python 3.10,
    xenial has 3.5. Refused before any image is pulled, saying what to do."""
    copy_project(root, "nova")
    result = giftbox("build", "nova", "--distro", "ubuntu16.04", "--arch", "ppc64le")
    assert result.code == 6
    assert "nova 33.0.0 requires Python >=3.10, but ubuntu16.04 ships Python 3.5" in result.err
    assert "pin a nova release that supports Python 3.5" in result.err
    assert "Traceback" not in result.err
