"""Fixtures for tests/test_package.py: a real demo venv built in a clean Debian 12 container.

The demo project is tiny but has what the packager must handle in nova: console scripts, a
C extension from PyPI (markupsafe's ``_speedups`` links libc), a manylinux wheel bundling its
own libraries (pillow, ``pillow.libs/``), oslo.rootwrap behind a ``demo-rootwrap`` entry point
with a filter file, a config file, a unit, a service user and a distro-only binding
(python3-yaml). The venv is built once per session at its install prefix, the way the build
stage builds nova's, and compiled to unchecked-hash .pyc so nothing is written at run time.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from giftbox.container import Container, Mount
from giftbox.distros import Arch, Distro, get_distro
from giftbox.manifest import Manifest, PatchInfo
from giftbox.package import install_prefix
from giftbox.settings import Settings
from giftbox.spec import Spec, load_spec
from giftbox.versions import package_version

REPO = Path(__file__).resolve().parent.parent
IMAGE = "giftbox-test/debian12-py:latest"
SDE = 1_700_000_000  # the demo's "commit date"

DEMO_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "demo"
version = "1.0.0"
description = "Demo service for giftbox packaging tests"
license = {text = "Apache-2.0"}
dependencies = ["markupsafe", "oslo.rootwrap", "pillow"]

[project.scripts]
demo = "demo:main"
demo-rootwrap = "oslo_rootwrap.cmd:main"

[tool.setuptools]
py-modules = ["demo"]
"""

DEMO_PY = '''\
"""The demo service: proves the venv, its C extension and its bundled libraries load."""

import sys


def main():
    import markupsafe
    from markupsafe import _speedups  # the C extension: fails loudly if it cannot load
    from PIL import Image, features

    print("demo says", markupsafe.escape("<ok>"), "via", _speedups.__name__)
    print("jpeg", features.check("jpg"), Image.new("RGB", (1, 1)).size)
    print("python", sys.version_info[0], sys.version_info[1], sys.prefix)
'''

FILTERS = """\
# demo-rootwrap filters: what the demo user may run as root.
[Filters]
id: CommandFilter, id, root
"""

UNIT = """\
[Unit]
Description=giftbox demo service
Documentation=https://example.org/demo
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
User=demo
Group=demo
ExecStart=/usr/bin/demo

[Install]
WantedBy=multi-user.target
"""

CONF = """\
[DEFAULT]
# demo's configuration
debug = false
"""


APT = ["apt-get", "-q", "-y", "-o", "Acquire::Check-Valid-Until=false",
       "-o", "Dpkg::Options::=--force-confold"]
# What a file listing of / ignores: apt's and dpkg's own state and logs, and kernel/runtime
# file systems. The shadow-utils backups (/etc/passwd- ...) are written by useradd itself.
IGNORED = ("/proc", "/sys", "/dev", "/run", "/tmp", "/pkgs", "/var/lib/apt", "/var/cache",
           "/var/lib/dpkg", "/var/log")
SHADOW_BACKUPS = {"/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-"}



def prepare(c: Container) -> None:
    """What every Debian container image has: services never start during package runs
    (otherwise sudo's maintainer scripts fail on invoke-rc.d without an init system)."""
    c.call(["sh", "-c", "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && "
            "chmod 0755 /usr/sbin/policy-rc.d"], stream=False)


def listing(c: Container) -> set[str]:
    argv = ["find", "/"]
    for path in IGNORED:
        argv += ["-path", path, "-prune", "-o"]
    argv += ["-print"]
    return set(c.call(argv, stream=False).output.splitlines())



def spec_yaml(name: str = "demo", *, versioned: bool = False, package: str | None = None,
              prefix: str | None = None, depends_deb: tuple[str, ...] = ("iproute2",),
              entry_points: tuple[str, ...] = ("demo", "demo-rootwrap"),
              rootwrap: bool = True, conf_path: str | None = None,
              units: tuple[str, ...] = ("demo.service",)) -> str:
    lines = [
        f"name: {name}",
        'release: "2026.1"',
        "constraints: constraints/upper-constraints-2026.1.txt",
        "upstream:",
        "  use: pypi",
        "  pypi:",
        "    name: demo",
        "    version: 1.0.0",
        "    sha256: " + "ab" * 32,
        "package:",
        f"  name: {package or 'giftbox-' + name}",
        f"  prefix: {prefix or '/opt/openstack/' + name}",
        f"  versioned_paths: {'true' if versioned else 'false'}",
        "  description: Demo service for giftbox packaging tests.",
        "  depends:",
        f"    deb: [{', '.join(depends_deb)}]",
        "    rpm: [iproute]",
        "  system_bindings:",
        "    - module: yaml",
        "      deb: python3-yaml",
        "      rpm: python3-pyyaml",
        f"  entry_points: [{', '.join(entry_points)}]",
        "  user:",
        "    name: demo",
        "    home: /var/lib/demo",
        f"  units: [{', '.join(units)}]",
        "  config_files:",
        f"    - path: {conf_path or '/etc/' + name + '/' + name + '.conf'}",
        "      source: demo.conf",
        '      mode: "0640"',
    ]
    if rootwrap:
        lines += ["  rootwrap:",
                  "    command: demo-rootwrap",
                  f"    config: /etc/{name}/rootwrap.conf",
                  f"    filters_path: /etc/{name}/rootwrap.d"]
    lines += ["matrix:", "  distros: [debian12]", "  arches: [x86_64]"]
    return "\n".join(lines) + "\n"


def make_tree(root: Path) -> Path:
    """A giftbox tree (specs/, files/, builders/, constraints/) for the demo specs."""
    (root / "specs").mkdir(parents=True, exist_ok=True)
    (root / "patches").mkdir(exist_ok=True)
    if not (root / "builders").exists():
        shutil.copytree(REPO / "builders", root / "builders")
        shutil.copytree(REPO / "constraints", root / "constraints")
    for name in ("demo", "vdemo", "other"):
        files = root / "files" / name
        files.mkdir(parents=True, exist_ok=True)
        (files / "demo.service").write_text(UNIT)
        (files / f"{name}.service").write_text(UNIT)
        (files / "demo.conf").write_text(CONF)
    return root


def write_spec(root: Path, name: str = "demo", **kwargs: object) -> Spec:
    make_tree(root)
    path = root / "specs" / f"{name}.yaml"
    path.write_text(spec_yaml(name, **kwargs))  # type: ignore[arg-type]
    return load_spec(path, root)


def rpm_distro(root: Path) -> Distro:
    """Rocky 9 as defined in builders/, on its python3.11 stack (EL9 AppStream ships it) so
    the one demo venv (Python 3.11) serves both families."""
    return dataclasses.replace(get_distro(root / "builders", "rocky9"), python="3.11")


def make_manifest(spec: Spec, distro: Distro, *, release: int = 1,
                  prefix: str | None = None, arch: str = "x86_64") -> Manifest:
    version = package_version("1.0.0", release=release, family=distro.family,
                              version_tag=distro.version_tag)
    return Manifest(
        project=spec.name, package_name=spec.package.name, upstream_kind="pypi",
        upstream_url="https://pypi.org/project/demo/", upstream_ref="1.0.0",
        upstream_commit="", upstream_version="1.0.0", upstream_sha256="ab" * 32,
        patches=(PatchInfo("0001-Say-hello.patch", "cd" * 32, "Say hello"),),
        patch_digest="ef" * 32, source_commit="0" * 40, lock_digest="12" * 32,
        builder_image="sha256:" + "34" * 32, distro=distro.name, family=distro.family,
        arch=arch, python=distro.python,
        prefix=prefix or install_prefix(spec, version), version=version.as_dict(),
        source_date_epoch=SDE, system_bindings=("yaml",),
        depends=tuple(spec.package.depends.get(distro.family, ())))


def fake_venv(path: Path, entry_points: tuple[str, ...] = ("demo", "demo-rootwrap"),
              project: str = "demo") -> Path:
    """A venv-shaped tree without a real interpreter: for tests that never run it."""
    (path / "bin").mkdir(parents=True)
    (path / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.2\n")
    (path / "bin" / "python3.11").symlink_to("/usr/bin/python3.11")
    for name in entry_points:
        script = path / "bin" / name
        script.write_text("#!/bin/sh\necho demo\n")
        script.chmod(0o755)
    filters = path / "share" / project / "rootwrap.d"
    filters.mkdir(parents=True)
    (filters / f"{project}.filters").write_text(FILTERS)
    return path


# --- docker ---------------------------------------------------------------------------------


def ensure_image() -> str:
    """The clean Debian 12 image with python3 and venv, bootstrapped once (mmdebstrap)."""
    client = docker.from_env()
    try:
        client.images.get(IMAGE)
        return IMAGE
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()
    debstrap = subprocess.Popen(
        ["mmdebstrap", "--variant=apt", "--include=python3,python3-venv,ca-certificates",
         "bookworm", "-", "http://deb.debian.org/debian"], stdout=subprocess.PIPE)
    assert debstrap.stdout is not None
    imported = subprocess.run(["docker", "import", "-", IMAGE], stdin=debstrap.stdout,
                              capture_output=True, check=False)
    debstrap.stdout.close()
    if debstrap.wait() != 0 or imported.returncode != 0:
        raise RuntimeError(f"could not bootstrap {IMAGE}: {imported.stderr.decode()}")
    return IMAGE


def build_venvs(host_root: Path, settings: Settings) -> dict[str, Path]:
    """Build the demo venv at /opt/openstack/demo and the versioned one at
    /opt/openstack/vdemo/1.0.0-1 inside one clean container; return their host dirs."""
    ensure_image()
    src = host_root / "src" / "demo"
    src.mkdir(parents=True)
    (src / "pyproject.toml").write_text(DEMO_PYPROJECT)
    (src / "demo.py").write_text(DEMO_PY)
    targets = {"demo": "/opt/openstack/demo", "vdemo": "/opt/openstack/vdemo/1.0.0-1"}
    hosts = {name: host_root / "venvs" / name for name in targets}
    for path in hosts.values():
        path.mkdir(parents=True)
    mounts = [Mount(hosts[n], targets[n], read_only=False) for n in targets]
    with Container(IMAGE, Arch.x86_64, settings, mounts=mounts, workdir="/tmp") as c:
        c.copy_into(src, "/tmp/demo-src")
        c.call(["python3.11", "-m", "venv", "/tmp/tools"], stream=False)
        c.call(["/tmp/tools/bin/pip", "wheel", "-q", "-w", "/tmp/wheels", "/tmp/demo-src"],
               stream=False)
        for name, target in targets.items():
            c.call(["python3.11", "-m", "venv", target], stream=False)
            c.call([f"{target}/bin/pip", "install", "-q", "--no-index", "--find-links",
                    "/tmp/wheels", "demo"], stream=False)
            c.call(["mkdir", "-p", f"{target}/share/{name}/rootwrap.d"], stream=False)
            # hash-based bytecode: valid whatever mtimes dpkg gives the sources
            c.call([f"{target}/bin/python", "-m", "compileall", "-q", "-f",
                    "--invalidation-mode", "unchecked-hash", f"{target}/lib"], stream=False)
    for name, path in hosts.items():
        (path / "share" / name / "rootwrap.d" / f"{name}.filters").write_text(FILTERS)
    return hosts


@pytest.fixture(scope="session")
def package_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("package-tree"))


@pytest.fixture(scope="session")
def session_settings(package_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    import os
    env = dict(os.environ, GIFTBOX_CACHE=str(tmp_path_factory.mktemp("cache")))
    return Settings.resolve(root=package_tree, env=env)


@pytest.fixture(scope="session")
def demo_venvs(tmp_path_factory: pytest.TempPathFactory,
               session_settings: Settings) -> Iterator[dict[str, Path]]:
    yield build_venvs(tmp_path_factory.mktemp("demo-venvs"), session_settings)
