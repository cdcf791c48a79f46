"""The README's commands on a machine that has nothing: a clean Debian 12 (the base image giftbox
bootstraps with mmdebstrap: no Python, no pip, no Docker) gets a clean copy of this checkout's
HEAD, runs ``scripts/setup-machine`` as the README says, and must then have a ``giftbox``
command that works from ``/``, a Python that imports giftbox and pytest, a running engine,
qemu-user for ppc64le, and what mmdebstrap needs to bootstrap a ppc64el base (arch-test).

The container is privileged (it starts its own engine and sees binfmt_misc): ``--privileged``
itself where the host allows it, else every capability the host has (these machines lack
CAP_SYS_RESOURCE, and runc refuses ``--privileged`` without it) with seccomp, AppArmor and the
masked /proc paths lifted and /sys and the cgroup hierarchies remounted writable, which is what
``--privileged`` adds. It shares the host's network (this project's machines route out only
from the host's namespace), so its engine gets a bridge of its own, made for the test: an engine
with ``"bridge": "none"`` deletes ``docker0`` at start, which in a shared namespace is the
host's (the test checks the host's bridge is still there afterwards). The host's CA bundle and pip configuration go in, as
they would be on an operator's machine behind a TLS-intercepting proxy.

Then the bad input: the same machine without the privileges binfmt_misc needs, where
setup-machine must stop with one line naming that step and the fix.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from giftbox.builders import definition, ensure
from giftbox.distros import Arch, get_distro
from giftbox.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.network]

REPO = Path(__file__).resolve().parent.parent
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# pip's configuration files, system-wide first (those name no host-only paths here; a user's
# ~/.config/pip may point at local wheel directories the container does not have).
PIP_CONFIGS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"))
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO")
CHECKOUT = "/root/giftbox"


def docker(*args: str, check: bool = True,
           timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}… failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def clean_checkout() -> bytes:
    """This repository's HEAD as a tar stream: what `git clone` would give, nothing else."""
    return subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar",
                           f"--prefix={CHECKOUT.lstrip('/')}/", "HEAD"],
                          capture_output=True, check=True).stdout


def copy_in(container: str, host: Path, target: str) -> None:
    docker("exec", container, "mkdir", "-p", os.path.dirname(target))
    docker("cp", "-L", str(host), f"{container}:{target}")


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Debian 12 base giftbox bootstraps (mmdebstrap, minbase): no registry needed."""
    settings = Settings.resolve(root=REPO, env=dict(os.environ, GIFTBOX_CACHE=str(
        tmp_path_factory.mktemp("fresh-cache"))))
    distro = get_distro(REPO / "builders", "debian12")
    ensure(distro, Arch.x86_64, settings)  # bootstraps the base when it is missing
    return definition(distro, Arch.x86_64, settings).base_tag


# --privileged minus what this host cannot grant (see the module docstring)
NEAR_PRIVILEGED = ("--cap-add=ALL", "--cap-drop=SYS_RESOURCE", "--security-opt=seccomp=unconfined",
                   "--security-opt=apparmor=unconfined", "--security-opt=systempaths=unconfined")
REMOUNT_RW = ("mount -o remount,rw /sys && for d in /sys/fs/cgroup/*/; do "
              "mount -o remount,rw \"$d\" 2>/dev/null || true; done")


def start(image: str, name: str, *, privileged: bool, extra: tuple[str, ...] = ()) -> str:
    env = [f"--env={v}={CA_BUNDLE}" for v in CA_VARIABLES]
    common = ("run", "-d", "--name", name, "--network", "host", "--label", "giftbox.test=fresh",
              *env, *extra)
    if not privileged:
        docker(*common, image, "sleep", "infinity")
        return name
    tried = docker(*common, "--privileged", image, "sleep", "infinity", check=False)
    if tried.returncode != 0:
        assert "unable to apply caps" in tried.stderr, tried.stderr
        docker("rm", "-f", "-v", name, check=False)
        docker(*common, *NEAR_PRIVILEGED, image, "sleep", "infinity")
        docker("exec", name, "sh", "-c", REMOUNT_RW)
    return name


@pytest.fixture(scope="module")
def fresh(base_image: str) -> Iterator[tuple[str, float]]:
    """A clean Debian 12 after `scripts/setup-machine`, and how long setup-machine took."""
    name = f"giftbox-fresh-{os.getpid()}"
    had_docker0 = Path("/sys/class/net/docker0").exists()
    bridge = f"gbfresh{os.getpid() % 100000}"
    subnet = f"10.250.{20 + os.getpid() % 200}.1/24"
    for argv in (["ip", "link", "add", "name", bridge, "type", "bridge"],
                 ["ip", "addr", "add", subnet, "dev", bridge], ["ip", "link", "set", bridge, "up"]):
        subprocess.run(argv, check=True, capture_output=True)
    try:
        # /var/lib/docker as a volume: the inner engine's overlay2 cannot sit on the
        # container's own overlay root.
        start(base_image, name, privileged=True,
              extra=("--mount", "type=volume,dst=/var/lib/docker"))
        docker("exec", name, "test", "!", "-e", "/usr/bin/python3")  # really nothing there
        copy_in(name, CA_BUNDLE, str(CA_BUNDLE))
        # kept when apt's ca-certificates regenerates the bundle
        copy_in(name, CA_BUNDLE, "/usr/local/share/ca-certificates/host-ca-bundle.crt")
        for config in PIP_CONFIGS:
            if config.exists():
                copy_in(name, config, str(config))
        docker("exec", name, "sh", "-c", "mkdir -p /etc/docker && "
               f"echo '{{\"bridge\": \"{bridge}\"}}' > /etc/docker/daemon.json")
        # as Debian's own container images have it: dpkg does not fsync every file
        docker("exec", name, "sh", "-c", "echo force-unsafe-io > "
               "/etc/dpkg/dpkg.cfg.d/docker-apt-speedup")
        subprocess.run(["docker", "cp", "-", f"{name}:/"], input=clean_checkout(),
                       capture_output=True, check=True)
        began = time.monotonic()
        run = docker("exec", name, f"{CHECKOUT}/scripts/setup-machine", check=False,
                     timeout=2400)
        took = time.monotonic() - began
        assert run.returncode == 0, f"setup-machine failed:\n{run.stdout[-3000:]}\n" \
                                    f"{run.stderr[-6000:]}"
        print(f"\nsetup-machine on a fresh Debian 12: {took:.0f} s")
        yield name, took
    finally:
        docker("rm", "-f", "-v", name, check=False)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
        assert Path("/sys/class/net/docker0").exists() or not had_docker0, \
            "the host's docker0 bridge is gone"


def in_fresh(name: str, *argv: str, workdir: str = "/") -> subprocess.CompletedProcess[str]:
    return docker("exec", "-w", workdir, name, *argv, check=False)


def test_giftbox_runs_from_root_after_setup_machine(fresh: tuple[str, float]) -> None:
    name, _took = fresh
    version = in_fresh(name, "giftbox", "--version")
    assert version.returncode == 0, version.stderr
    want = (REPO / "giftbox" / "__init__.py").read_text().split('__version__ = "')[1]
    assert version.stdout.split()[-1] == want.split('"')[0]
    # the README's test command's python imports both, from outside the checkout
    imports = in_fresh(name, "python3", "-c", "import giftbox, pytest, hypothesis; "
                       "print(giftbox.__file__)")
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.strip() == f"{CHECKOUT}/giftbox/__init__.py"
    assert in_fresh(name, "docker", "info").returncode == 0


def test_ppc64el_bootstrap_prerequisites(fresh: tuple[str, float]) -> None:
    name, _took = fresh
    assert in_fresh(name, "test", "-e", "/proc/sys/fs/binfmt_misc/qemu-ppc64le").returncode == 0
    check = in_fresh(name, "arch-test", "ppc64el")
    assert check.returncode == 0 and "ppc64el: ok" in check.stdout, check.stdout + check.stderr


def test_second_run_only_checks(fresh: tuple[str, float]) -> None:
    name, _took = fresh
    again = in_fresh(name, f"{CHECKOUT}/scripts/setup-machine", workdir=CHECKOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "installing" not in again.stderr, again.stderr


def test_no_binfmt_misc_is_one_line_naming_the_step(fresh: tuple[str, float]) -> None:
    """The same machine, unprivileged (binfmt_misc cannot be mounted), its engine the host's."""
    name, _took = fresh
    image = f"giftbox-test/fresh-machine:{os.getpid()}"
    docker("commit", name, image)
    bad = f"{name}-unprivileged"
    try:
        start(image, bad, privileged=False,
              extra=("-v", "/var/run/docker.sock:/var/run/docker.sock"))
        run = in_fresh(bad, f"{CHECKOUT}/scripts/setup-machine")
        assert run.returncode != 0
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("setup-machine: mounting binfmt_misc:"), run.stderr[-2000:]
        assert "--privileged" in last and "modprobe binfmt_misc" in last
        assert "Traceback" not in run.stderr
    finally:
        docker("rm", "-f", bad, check=False)
        docker("rmi", "-f", image, check=False)
