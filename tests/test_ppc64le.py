"""ppc64le for real: what the archive serves, bootstraps checked before import, every shipped
spec's runnable cell locked, and a project with a C extension (needing a -dev header) and a
Rust extension built for ppc64le under qemu, installed with apt in a clean ppc64el container
and run there; its wheelhouse exported, imported into an empty cache, and rebuilt from it
with nothing compiled.

Cost: the tests without Docker take 20-40 s (the lock check downloads the three shipped
upstream tarballs once and reads three Release files). The x86_64 round trip (lock, build,
package, apt install and run, export, import into an empty cache, rebuild) took 543 s on this
project's 2-core machine at a load of ~16 (a few minutes when the machine is otherwise idle);
the ppc64le one (no rebuild) runs the same first half under qemu-user: several times that,
and it needs the debian12/ppc64le builder image (about 60 minutes to make under that load).
"""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Upstream, git_spec, write_spec

from giftbox import builders, lock, source
from giftbox import wheelhouse as wh
from giftbox.distros import Arch, get_distro, load_distros
from giftbox.errors import BuilderError
from giftbox.nightly import matrix_targets
from giftbox.settings import Settings
from giftbox.spec import find_spec, list_projects

# -- which arches an archive serves (a loopback archive with a real Release file) ----------

RELEASE = """Origin: Debian
Label: Debian
Suite: oldoldstable
Codename: bullseye
Architectures: all amd64 arm64 armhf i386
Components: main contrib non-free
Description: Debian 11.11 Released 31 August 2024
"""


@pytest.fixture
def archive() -> Iterator[str]:
    """http://127.0.0.1:PORT/debian serving dists/bullseye/InRelease."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/debian/dists/bullseye/InRelease":
                self.send_error(404)
                return
            body = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + RELEASE).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/debian"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback_debian11(root: Path, archive: str) -> Path:
    path = root / "builders" / "debian11" / "builder.yaml"
    path.write_text(path.read_text().replace("http://deb.debian.org/debian", archive))
    return path


def test_release_architectures_are_read_not_guessed(loopback_debian11: Path,
                                                    settings: Settings) -> None:
    distro = get_distro(settings.builders_dir, "debian11")
    ppc = builders.served(distro, Arch.ppc64le, settings)
    assert ppc.known and not ppc.ok
    assert ppc.arches == ("all", "amd64", "arm64", "armhf", "i386")
    assert "bullseye" in ppc.problem() and "ppc64el" in ppc.problem()
    assert builders.served(distro, Arch.x86_64, settings).ok
    with pytest.raises(BuilderError, match=r"debian11/ppc64le cannot be built: the archive's "
                                           r"bullseye suite does not serve ppc64el"):
        builders.check_served(distro, Arch.ppc64le, settings)


@pytest.mark.slow
def test_matrix_names_the_cell_the_archive_cannot_serve(loopback_debian11: Path, root: Path,
                                                        giftbox) -> None:
    write_spec(root, "client", git_spec("client", "https://example.org/c.git", "1.0").replace(
        "  distros: [debian12]", "  distros: [debian11]").replace(
        "  arches: [x86_64]", "  arches: [x86_64, ppc64le]"))
    out = giftbox("matrix", "--json")
    assert out.code == 0, out.err
    cells = {c["arch"]: c for c in json.loads(out.out)["include"]}
    assert cells["x86_64"]["served"] is True
    assert cells["ppc64le"]["served"] is False
    assert "bullseye suite does not serve ppc64el" in cells["ppc64le"]["problem"]
    text = giftbox("matrix").out
    assert re.search(r"client\s+debian11\s+ppc64le\s+emulated not-served: .*bullseye", text)


@pytest.mark.docker
def test_build_of_an_unserved_cell_is_refused_before_bootstrapping(loopback_debian11: Path,
                                                                   giftbox) -> None:
    out = giftbox("builder", "ensure", "debian11", "--arch", "ppc64le")
    assert out.code == 5 and "Traceback" not in out.err
    assert "debian11/ppc64le cannot be built" in out.err and "bullseye" in out.err
    assert "mmdebstrap" not in out.err  # refused before any bootstrap


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _status(arch: str) -> bytes:
    return "".join(f"Package: {p}\nStatus: install ok installed\nArchitecture: {arch}\n\n"
                   for p in builders._ESSENTIAL_PACKAGES).encode()


def test_a_bootstrap_is_checked_before_it_is_imported(tmp_path: Path, settings: Settings) -> None:
    distro = get_distro(settings.builders_dir, "debian11")
    # What mmdebstrap "succeeded" with for bullseye/ppc64el: an empty tarball.
    empty = _tar(tmp_path / "empty.tar", {})
    with pytest.raises(BuilderError, match=r"not a usable debian11 system: no /bin/sh, "
                                           r"/usr/bin/dpkg, .*nothing was imported"):
        builders.check_rootfs(empty, distro, Arch.ppc64le)
    files = {"usr/bin/sh": b"", "usr/bin/dpkg": b"", "usr/bin/apt-get": b"",
             "etc/os-release": b"ID=debian\n"}
    good = _tar(tmp_path / "good.tar", {**files, "var/lib/dpkg/status": _status("ppc64el")})
    builders.check_rootfs(good, distro, Arch.ppc64le)
    other = _tar(tmp_path / "other.tar", {**files, "var/lib/dpkg/status": _status("amd64")})
    with pytest.raises(BuilderError, match="packages for amd64 instead of ppc64el"):
        builders.check_rootfs(other, distro, Arch.ppc64le)


def test_a_mirror_mid_sync_is_recognised() -> None:
    # apt's own words on 2026-12-01 for trixie-updates' ppc64el index.
    tail = ["E: Failed to fetch http://deb.debian.org/debian/dists/trixie-updates/main/"
            "binary-ppc64el/Packages.xz  File has unexpected size (5640 != 5712). Mirror sync "
            "in progress? [IP: 151.101.2.132 80]", "E: Some index files failed to download."]
    assert "trixie-updates" in (builders._mid_sync(tail) or "")
    # ...and later that day: the index lists files the pool does not have yet.
    pool = ["E: Failed to fetch http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.41-12%2b"
            "deb13u5_ppc64el.deb  404  Not Found [IP: 203.0.113.80 80]"]
    assert "libc6_2.41" in (builders._mid_sync(pool) or "")
    assert builders._mid_sync(["E: Unable to locate package python3"]) is None


# -- every shipped spec's runnable cell has a fresh lock ------------------------------------


@pytest.fixture(scope="module")
def repo_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    cache = tmp_path_factory.mktemp("lock-check-cache")
    return Settings.resolve(root=REPO, env=dict(os.environ, GIFTBOX_CACHE=str(cache)))


def runnable_cells(settings: Settings) -> list[tuple[str, str, str]]:
    distros = load_distros(settings.builders_dir)
    cells = []
    for project in list_projects(settings.root):
        spec = find_spec(settings.root, project, frozenset(distros))
        for t in matrix_targets(spec, distros, runnable_only=True):
            if builders.served(t.distro, t.arch, settings).ok:
                cells.append((project, t.distro.name, t.arch.value))
    return cells


@pytest.mark.slow
def test_every_runnable_cell_of_every_shipped_spec_has_a_fresh_lock(repo_settings: Settings):
    distros = load_distros(repo_settings.builders_dir)
    cells = runnable_cells(repo_settings)
    assert ("nova", "debian12", "ppc64le") in cells
    assert ("python-openstackclient", "debian13", "ppc64le") in cells
    problems = []
    metas: dict[str, tuple[object, lock.ProjectMeta, str]] = {}
    for project, distro_name, arch_name in cells:
        spec = find_spec(repo_settings.root, project, frozenset(distros))
        if project not in metas:
            upstream = source.resolve(spec, repo_settings)
            meta = lock.project_meta(upstream.repo, upstream.commit,
                                     spec.pypi.name if spec.pypi else spec.name)
            metas[project] = (upstream, meta, lock.read_constraints(spec, repo_settings))
        _upstream, meta, constraints = metas[project]
        distro, arch = distros[distro_name], Arch.parse(arch_name)
        inputs = lock.lock_inputs(spec, meta, constraints, distro, arch)
        path = lock.lock_path(repo_settings, spec, distro, arch)
        command = f"giftbox lock {project} --distro {distro_name} --arch {arch_name}"
        if not path.is_file():
            problems.append(f"{path.relative_to(REPO)}: missing ({command})")
        elif lock.recorded_digest(path.read_text()) != inputs.digest:
            problems.append(f"{path.relative_to(REPO)}: stale ({command})")
    assert not problems, "\n".join(problems)


# -- a C and a Rust extension, built for ppc64le, installed and run in a clean container ---

SETUP_PY = """\
from setuptools import Extension, setup
from setuptools_rust import Binding, RustExtension

setup(
    name="powerdemo",
    version="1.0.0",
    packages=["powerdemo"],
    ext_modules=[Extension("powerdemo._zinfo", ["powerdemo/_zinfo.c"], libraries=["z"])],
    rust_extensions=[RustExtension("powerdemo._rs", path="Cargo.toml",
                                   binding=Binding.NoBinding)],
    install_requires=["testresources"],
    entry_points={"console_scripts": ["powerdemo = powerdemo.cli:main"]},
    zip_safe=False,
)
"""
PYPROJECT = """\
[build-system]
requires = ["setuptools>=61", "wheel", "setuptools-rust"]
build-backend = "setuptools.build_meta"
"""
# zlib.h comes from zlib1g-dev: a build without the -dev package fails naming the header.
ZINFO_C = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <zlib.h>

static PyObject *version(PyObject *self, PyObject *args) {
    return PyUnicode_FromString(zlibVersion());
}
static PyMethodDef methods[] = {{"version", version, METH_NOARGS, "zlib's version."},
                                {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_zinfo", NULL, -1, methods};
PyMODINIT_FUNC PyInit__zinfo(void) { return PyModule_Create(&module); }
"""
# No crates at all (crates.io is out of reach here): the CPython C API declared by hand.
CARGO_TOML = """\
[package]
name = "powerdemo-rs"
version = "1.0.0"
edition = "2021"

[lib]
name = "_rs"
path = "src/lib.rs"
crate-type = ["cdylib"]
"""
LIB_RS = r"""
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::ptr;

#[repr(C)] pub struct PyObject { ob_refcnt: isize, ob_type: *mut c_void }
#[repr(C)] pub struct PyModuleDefBase {
    ob_base: PyObject, m_init: Option<extern "C" fn() -> *mut PyObject>,
    m_index: isize, m_copy: *mut PyObject }
#[repr(C)] pub struct PyMethodDef {
    ml_name: *const c_char,
    ml_meth: Option<unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject>,
    ml_flags: c_int, ml_doc: *const c_char }
#[repr(C)] pub struct PyModuleDef {
    m_base: PyModuleDefBase, m_name: *const c_char, m_doc: *const c_char, m_size: isize,
    m_methods: *mut PyMethodDef, m_slots: *mut c_void, m_traverse: *mut c_void,
    m_clear: *mut c_void, m_free: *mut c_void }

extern "C" {
    fn PyModule_Create2(def: *mut PyModuleDef, apiver: c_int) -> *mut PyObject;
    fn PyLong_FromLong(v: c_long) -> *mut PyObject;
}

unsafe extern "C" fn answer(_m: *mut PyObject, _a: *mut PyObject) -> *mut PyObject {
    PyLong_FromLong(6 * 7)
}

static mut METHODS: [PyMethodDef; 2] = [
    PyMethodDef { ml_name: b"answer\0".as_ptr() as *const c_char, ml_meth: Some(answer),
                  ml_flags: 0x0004 /* METH_NOARGS */, ml_doc: ptr::null() },
    PyMethodDef { ml_name: ptr::null(), ml_meth: None, ml_flags: 0, ml_doc: ptr::null() },
];
static mut MODULE: PyModuleDef = PyModuleDef {
    m_base: PyModuleDefBase { ob_base: PyObject { ob_refcnt: 1, ob_type: ptr::null_mut() },
                              m_init: None, m_index: 0, m_copy: ptr::null_mut() },
    m_name: b"_rs\0".as_ptr() as *const c_char, m_doc: ptr::null(), m_size: -1,
    m_methods: ptr::null_mut(), m_slots: ptr::null_mut(), m_traverse: ptr::null_mut(),
    m_clear: ptr::null_mut(), m_free: ptr::null_mut() };

#[no_mangle]
#[allow(static_mut_refs)]
pub unsafe extern "C" fn PyInit__rs() -> *mut PyObject {
    MODULE.m_methods = METHODS.as_mut_ptr();
    PyModule_Create2(ptr::addr_of_mut!(MODULE), 1013)
}
"""
CLI_PY = """\
import platform
import sys

from powerdemo import _rs, _zinfo


def main():
    if "--help" in sys.argv or "--version" in sys.argv:
        print("powerdemo 1.0.0")
        return 0
    print("powerdemo on {}: rust says {}, zlib {}".format(platform.machine(), _rs.answer(),
                                                          _zinfo.version()))
    return 0
"""


def powerdemo_upstream(path: Path) -> Upstream:
    up = Upstream(path)
    (path / "setup.py").write_text(SETUP_PY)
    (path / "pyproject.toml").write_text(PYPROJECT)
    (path / "requirements.txt").write_text("testresources\n")
    (path / "Cargo.toml").write_text(CARGO_TOML)
    (path / "MANIFEST.in").write_text("include Cargo.toml\nrecursive-include src *.rs\n")
    (path / "src").mkdir()
    (path / "src" / "lib.rs").write_text(LIB_RS)
    pkg = path / "powerdemo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_zinfo.c").write_text(ZINFO_C)
    (pkg / "cli.py").write_text(CLI_PY)
    (path / "demo.py").unlink()
    up.commit("A C extension on zlib and a Rust extension without crates")
    up.tag("1.0.0")
    return up


def _giftbox(root: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GIFTBOX_CACHE=str(cache), GIFTBOX_ROOT=str(root))
    return subprocess.run([sys.executable, "-m", "giftbox", *args], cwd=root, env=env,
                          capture_output=True, text=True, check=False)


def _apt_install_and_run(deb: Path, arch: Arch, *command: str) -> str:
    """apt-get install the .deb in a clean Debian 12 of arch (the base image, not the builder)
    and run command there."""
    settings = Settings.resolve(root=REPO)
    base = builders.definition(get_distro(REPO / "builders", "debian12"), arch,
                               settings).base_tag
    script = ("set -e; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y "
              f"-qq --no-install-recommends /pkg/{deb.name} >/dev/null; " + " ".join(command))
    proc = subprocess.run(["docker", "run", "--rm", f"--platform={arch.platform}", "--network=host",
                           f"--volume={deb.parent}:/pkg:ro", base, "sh", "-c", script],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.docker
@pytest.mark.ppc64le
def test_c_and_rust_extensions_for_ppc64le_installed_and_run_in_a_clean_container(
        root: Path, tmp_path: Path) -> None:
    powerdemo_round_trip(root, tmp_path, Arch.ppc64le, rebuild=False)


@pytest.mark.docker
def test_a_wheelhouse_exported_and_imported_leaves_a_rebuild_nothing_to_compile(
        root: Path, tmp_path: Path) -> None:
    # The same project natively: the wheelhouse logic is the same for every arch, and under
    # qemu the second build would double the test's cost.
    powerdemo_round_trip(root, tmp_path, Arch.x86_64, rebuild=True)


def powerdemo_round_trip(root: Path, tmp_path: Path, arch: Arch, *, rebuild: bool) -> None:
    up = powerdemo_upstream(tmp_path / "powerdemo")
    write_spec(root, "powerdemo", git_spec("powerdemo", up.url, "1.0.0").replace(
        "  arches: [x86_64]", f"  arches: [{arch.value}]").replace(
        "  prefix: /opt/openstack/powerdemo",
        "  prefix: /opt/openstack/powerdemo\n  entry_points: [powerdemo]"))
    cache = tmp_path / "cache"
    target = ("--distro", "debian12", "--arch", arch.value)
    out = _giftbox(root, cache, "lock", "powerdemo", *target)
    assert out.returncode == 0, out.stderr
    out = _giftbox(root, cache, "build", "powerdemo", *target, "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = json.loads(out.stdout)["builds"]
    deb = Path(result["package"]["path"])
    assert deb.name.endswith(f"_{arch.deb}.deb")
    assert "testresources" in out.stderr  # built from its sdist: it has no wheel
    ran = _apt_install_and_run(deb, arch, "powerdemo")
    assert f"powerdemo on {arch.value}: rust says 42, zlib 1.2.13" in ran
    if not rebuild:
        return

    # The wheelhouse, exported and imported into an empty cache: the rebuild compiles nothing
    # from sdist (every wheel cached).
    export = tmp_path / "export"
    out = _giftbox(root, cache, "wheelhouse", "export", *target, str(export), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["built"] >= 1
    empty = tmp_path / "empty-cache"
    out = _giftbox(root, empty, "wheelhouse", "import", *target, str(export))
    assert out.returncode == 0, out.stderr
    shutil.rmtree(root / "build")  # the tree's build results too: a machine that has nothing
    out = _giftbox(root, empty, "build", "powerdemo", *target, "--no-package")
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"(\d+) of \1 wheels cached, 0 to fetch or build", out.stderr), \
        out.stderr[-3000:]
    house = wh.directory(Settings.resolve(root=root, env=dict(os.environ,
                                                              GIFTBOX_CACHE=str(empty))),
                         wh.Target("2026.1", get_distro(root / "builders", "debian12"), arch))
    assert sorted(p.name for p in house.glob("*.whl")) == sorted(
        p.name for p in (export / "files").glob("*.whl"))
