"""Fixtures for the repository tests: a giftbox tree, a signing key, tiny real packages, an
HTTP server on loopback and a clean Debian 12 container with apt.

Nothing is mocked: packages are built with dpkg-deb and rpmbuild, metadata read by apt (in a
container) and dnf (on the host, in an install root). A missing tool or engine fails the test,
it never skips it: a green run must mean the clients really accepted the repositories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from plumbum import local

from giftbox.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
APT_IMAGE = "giftbox-test/debian12-apt:latest"

CHANNELS_YAML = """\
channels:
  nightly:
    key: giftbox-nightly@giftbox.invalid
    keep: 3
    distros: [debian12, rocky9]
  stable:
    key: giftbox-stable@giftbox.invalid
    keep: 3
    distros: [debian12]
"""


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; the repository tests need it (they never skip)")
    return path


@dataclass(frozen=True)
class Tree:
    """A giftbox tree of our own: channels.yaml, the real builders/, its own state dir."""

    root: Path
    settings: Settings

    @property
    def repos(self) -> Path:
        return self.settings.repos_dir

    def env(self) -> dict[str, str]:
        return {"GIFTBOX_ROOT": str(self.root), "GIFTBOX_STATE": str(self.settings.state_dir)}


def make_tree(base: Path, channels_yaml: str = CHANNELS_YAML) -> Tree:
    root = base / "tree"
    (root / "specs").mkdir(parents=True)
    (root / "builders").symlink_to(REPO_ROOT / "builders")
    (root / "channels.yaml").write_text(channels_yaml)
    # Who acts and where the records live come from the environment, as for the command line
    # (tests set GIFTBOX_USER before asking for a tree).
    passed = {k: os.environ[k] for k in ("GIFTBOX_USER", "GIFTBOX_DATABASE") if k in os.environ}
    settings = Settings.resolve(root=root, env={"GIFTBOX_STATE": str(base / "state"),
                                                "HOME": str(base), **passed})
    return Tree(root=root, settings=settings)


@pytest.fixture(scope="session")
def keyring_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One GNUPGHOME with the nightly and stable keys, made once (RSA keygen takes seconds)."""
    need("gpg")
    from giftbox.keys import init_key

    base = tmp_path_factory.mktemp("keys")
    tree = make_tree(base)
    init_key(tree.settings, "giftbox-nightly@giftbox.invalid", channel="nightly")
    init_key(tree.settings, "giftbox-stable@giftbox.invalid", channel="stable")
    home = tree.settings.state_dir / "gnupg"
    yield home
    local["gpgconf"]["--homedir", str(home), "--kill", "all"].run(retcode=None)


@pytest.fixture
def tree(tmp_path: Path, keyring_template: Path) -> Iterator[Tree]:
    """A tree whose state dir holds a copy of the session keyring."""
    t = make_tree(tmp_path)
    t.settings.state_dir.mkdir(parents=True)
    shutil.copytree(keyring_template, t.settings.state_dir / "gnupg",
                    ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    yield t
    local["gpgconf"]["--homedir", str(t.settings.state_dir / "gnupg"), "--kill", "all"] \
        .run(retcode=None)


@pytest.fixture
def bare_tree(tmp_path: Path) -> Iterator[Tree]:
    """A tree with an empty keyring."""
    t = make_tree(tmp_path)
    yield t
    home = t.settings.state_dir / "gnupg"
    if home.exists():
        local["gpgconf"]["--homedir", str(home), "--kill", "all"].run(retcode=None)


def make_deb(out: Path, name: str = "giftbox-hello", version: str = "1.0-1~deb12",
             arch: str = "all", message: str = "hello from giftbox") -> Path:
    """A tiny real .deb with a script in /usr/bin that prints ``message``."""
    need("dpkg-deb")
    tree = out / f"deb-{name}-{version}-{arch}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr" / "bin").mkdir(parents=True)
    script = tree / "usr" / "bin" / name
    script.write_text(f"#!/bin/sh\necho '{message}'\n")
    script.chmod(0o755)
    (tree / "DEBIAN" / "control").write_text(textwrap.dedent(f"""\
        Package: {name}
        Version: {version}
        Architecture: {arch}
        Maintainer: giftbox tests <tests@giftbox.invalid>
        Section: misc
        Priority: optional
        Description: giftbox repository test package
         Prints a greeting; built by tests/repo_fixtures.py.
        """))
    deb = out / f"{name}_{version}_{arch}.deb"
    local["dpkg-deb"]["-Zxz", "--root-owner-group", "--build", str(tree), str(deb)].run()
    shutil.rmtree(tree)
    return deb


def make_rpm(out: Path, name: str = "giftbox-hello", version: str = "1.0",
             release: str = "1.el9", message: str = "hello from giftbox") -> Path:
    """A tiny real noarch .rpm with a script in /usr/bin."""
    need("rpmbuild")
    top = out / f"rpmbuild-{name}-{version}-{release}"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text(textwrap.dedent(f"""\
        Name: {name}
        Version: {version}
        Release: {release}
        Summary: giftbox repository test package
        License: Apache-2.0
        BuildArch: noarch
        %description
        Prints a greeting.
        %install
        mkdir -p %{{buildroot}}/usr/bin
        printf '#!/bin/sh\\necho {message}\\n' > %{{buildroot}}/usr/bin/{name}
        chmod 755 %{{buildroot}}/usr/bin/{name}
        %files
        /usr/bin/{name}
        """))
    local["rpmbuild"]["--define", f"_topdir {top}", "-bb", str(spec)].run()
    rpm = next((top / "RPMS" / "noarch").glob("*.rpm"))
    dest = out / rpm.name
    shutil.move(rpm, dest)
    shutil.rmtree(top)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """``python -m http.server`` on loopback serving ``directory``; yields its base URL."""
    port = free_port()
    proc = local[sys.executable]["-m", "http.server", "--bind", "127.0.0.1", "--directory",
                                 str(directory), str(port)].popen()
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("python -m http.server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def apt_image() -> str:
    """A clean Debian 12 image with apt, bootstrapped once with mmdebstrap (no registry)."""
    docker = local[need("docker")]
    code, _, err = docker["info"].run(retcode=None)
    if code != 0:
        pytest.fail(f"the Docker engine is not reachable: {err.strip()}")
    if docker["image", "inspect", APT_IMAGE].run(retcode=None)[0] != 0:
        need("mmdebstrap")
        bootstrap = (local["mmdebstrap"]["--variant=apt", "bookworm", "-",
                                         "http://deb.debian.org/debian"]
                     | docker["import", "-", APT_IMAGE])
        bootstrap.run(timeout=900)
    return APT_IMAGE


def apt_client(image: str, url: str, key: Path, script: str,
               suite: str = "bookworm") -> tuple[int, str]:
    """Run ``script`` in a fresh container whose only apt source is ``url`` signed by ``key``.

    Returns (exit code, combined output). The script is ours, never built from package data.
    """
    setup = textwrap.dedent(f"""\
        set -e
        rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
        echo 'Acquire::Check-Valid-Until "false";' > /etc/apt/apt.conf.d/99giftbox-test
        echo 'deb [signed-by=/etc/apt/keyrings/giftbox.asc] {url} {suite} main' \\
            > /etc/apt/sources.list.d/giftbox.list
        """)
    code, out, err = local["docker"][
        "run", "--rm", "--network", "host",
        "-v", f"{key}:/etc/apt/keyrings/giftbox.asc:ro",
        image, "bash", "-c", setup + script].run(retcode=None, timeout=300)
    return code, out + err


def dnf_repoquery(base: Path, repo_url: str, key: Path, *args: str) -> tuple[int, str]:
    """dnf reading one yum repository with repo_gpgcheck=1, in an install root of its own."""
    dnf = local[need("dnf")]
    root = base / "dnf"
    (root / "repos.d").mkdir(parents=True, exist_ok=True)
    code, out, err = dnf[
        "--installroot", str(root / "root"), "--setopt", f"reposdir={root / 'repos.d'}",
        "--setopt", f"cachedir={root / 'cache'}", "--releasever", "9",
        "--forcearch", "x86_64", "--disableplugin", "*", "-y",
        "--repofrompath", f"gb,{repo_url}", "--setopt", "gb.repo_gpgcheck=1",
        "--setopt", "gb.gpgcheck=0", "--setopt", f"gb.gpgkey=file://{key}",
        "--setopt", "gb.metadata_expire=0",
        "repoquery", "--repo", "gb", *args].run(retcode=None, timeout=120)
    return code, out + err


def giftbox_cli(tree: Tree, *args: str):  # type: ignore[no-untyped-def]
    """The ``giftbox`` command line, as a plumbum command bound to ``tree``."""
    return local[sys.executable]["-c", "from giftbox.cli import main; main()", *args] \
        .with_env(**tree.env())
