"""The operator's story for nova: the real .deb installed with apt in a clean Debian 12,
run, upgraded with a local config edit kept, removed and purged without a trace."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import copy_project
from package_fixtures import APT, IMAGE, ensure_image, listing, prepare

from giftbox.container import Container, Mount
from giftbox.distros import Arch, get_distro
from giftbox.pipeline import run_target
from giftbox.settings import Settings
from giftbox.spec import load_spec

pytestmark = [pytest.mark.docker, pytest.mark.network]


def test_nova_deb_installs_runs_upgrades_and_purges(root: Path, build_cache: Path,
                                                    tmp_path: Path) -> None:
    copy_project(root, "nova")
    settings = Settings.resolve(root=root, env=dict(os.environ, GIFTBOX_CACHE=str(build_cache)))
    distro = get_distro(root / "builders", "debian12")
    spec_file = root / "specs" / "nova.yaml"
    first = run_target(load_spec(spec_file, root), distro, Arch.x86_64, settings)
    # A newer build of the same upstream: the operator bumped package.release.
    spec_file.write_text(spec_file.read_text().replace(
        "  prefix: /opt/openstack/nova\n", "  prefix: /opt/openstack/nova\n  release: 2\n"))
    second = run_target(load_spec(spec_file, root), distro, Arch.x86_64, settings)
    assert first.package and second.package
    r1, r2 = first.package, second.package
    assert r1.version == "33.0.0-1.1.g4ac0cd51~deb12"
    assert r2.version == "33.0.0-2.1.g4ac0cd51~deb12"
    assert subprocess.run(["dpkg", "--compare-versions", r1.version, "lt", r2.version],
                          check=False).returncode == 0
    assert "python3.11" in r1.depends and "python3-libvirt" in r1.depends
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    for p in (r1, r2):
        shutil.copy(p.path, pkgs / p.path.name)

    ensure_image()
    env = {"DEBIAN_FRONTEND": "noninteractive", "SUDO_FORCE_REMOVE": "yes"}
    with Container(IMAGE, Arch.x86_64, settings, mounts=[Mount(pkgs, "/pkgs")]) as c:
        prepare(c)
        before = listing(c)
        c.call([*APT[:1], "update", *APT[1:]], env=env, stream=False)
        c.call([*APT, "install", f"/pkgs/{r1.path.name}"], env=env, stream=False)
        assert c.call(["/usr/bin/nova-manage", "--version"], stream=False).output.strip() \
            == "33.0.0"
        assert "usage: nova-status" in c.call(["/usr/bin/nova-status", "--help"],
                                              stream=False).output
        assert c.call(["getent", "passwd", "nova"], stream=False).output.startswith("nova:")
        # The distro-only binding, from python3-libvirt, seen by the venv and nothing else.
        seen = c.call(["/opt/openstack/nova/bin/python", "-c",
                       "import libvirt, sys; print(libvirt.__file__); "
                       "print(any('dist-packages' in p for p in sys.path))"],
                      stream=False).output.split()
        assert seen == ["/usr/lib/python3/dist-packages/libvirt.py", "False"]
        # rootwrap from the package alone: privsep-helper is found in the venv's bin.
        as_nova = ["setpriv", "--reuid=nova", "--regid=nova", "--init-groups", "sudo", "-n",
                   "/usr/bin/nova-rootwrap", "/etc/nova/rootwrap.conf"]
        refused = c.call([*as_nova, "cat", "/etc/shadow"], check=False, stream=False)
        assert refused.returncode != 0 and "Unauthorized command" in refused.output
        allowed = c.call([*as_nova, "privsep-helper", "--config-file", "/etc/nova/nova.conf",
                          "--privsep_context", "nova.privsep.sys_admin_pctxt",
                          "--privsep_sock_path", "/tmp/giftbox-test.sock"],
                         check=False, stream=False)
        assert "Unauthorized command" not in allowed.output
        assert "Executable not found" not in allowed.output
        # An operator edits nova.conf; the upgrade keeps the edit.
        c.call(["sh", "-c", "echo 'debug = true  # local edit' >> /etc/nova/nova.conf"],
               stream=False)
        c.call([*APT, "install", f"/pkgs/{r2.path.name}"], env=env, stream=False)
        assert c.call(["dpkg-query", "-W", "-f", "${Version}", "giftbox-nova"],
                      stream=False).output == r2.version
        assert "debug = true  # local edit" in c.call(["cat", "/etc/nova/nova.conf"],
                                                      stream=False).output
        assert c.call(["/usr/bin/nova-manage", "--version"], stream=False).output.strip() \
            == "33.0.0"
        owned = set(c.call(["dpkg", "-L", "giftbox-nova"], stream=False).output.split())
        c.call([*APT, "remove", "giftbox-nova"], env=env, stream=False)
        assert c.exists("/etc/nova/nova.conf") and not c.exists("/usr/bin/nova-manage")
        c.call([*APT, "purge", "giftbox-nova"], env=env, stream=False)
        after = listing(c)
        # A directory the package shares with one it pulled in (sudo's /etc/sudoers.d)
        # rightly stays: keep only what no installed package owns.
        candidates = [p for p in after - before if p in owned]
        shared = {p for p in candidates
                  if c.call(["dpkg", "-S", p], check=False, stream=False).returncode == 0}
    # Everything the package owned or made is gone; directories it shared with the system
    # (/usr/bin, /etc, /opt ...) stay as they were. (What apt installed for nova's
    # dependencies is apt's business: autoremove keeps what base packages recommend.)
    left = sorted(p for p in after - before - shared
                  if p in owned or p.startswith(("/opt/openstack", "/etc/nova", "/var/lib/nova",
                                                 "/var/log/nova", "/usr/bin/nova-",
                                                 "/etc/sudoers.d/nova",
                                                 "/lib/systemd/system/nova-")))
    assert left == []
    assert "/opt/openstack/nova/bin/nova-manage" in owned
    assert sorted(before - after) == []  # and nothing of the system's went missing
