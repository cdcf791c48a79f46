"""The packaging stage, told as the operator's story: package a real venv, lint it, install it
with apt in a clean Debian 12 container, run it, upgrade it, remove and purge it, and check
nothing is left; for rpm, read the headers and install into a scratch root. Real tools only:
a missing dpkg-deb, rpmbuild, lintian, rpmlint or Docker engine fails these tests."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from package_fixtures import (
    APT,
    IMAGE,
    SHADOW_BACKUPS,
    fake_venv,
    listing,
    make_manifest,
    prepare,
    rpm_distro,
    write_spec,
)

from giftbox.container import Container, Mount
from giftbox.distros import Arch, get_distro
from giftbox.errors import PackageError
from giftbox.package import (
    Artifact,
    HostRunner,
    build_package,
    check_conflicts,
    fpm_command,
    install_prefix,
    planned_paths,
    select_packager,
)
from giftbox.package.common import compression_for
from giftbox.package.layout import stage
from giftbox.package.lint import lintian
from giftbox.settings import Settings
from giftbox.versions import package_version


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


# --- layout, conflicts, bad input: no engine needed -----------------------------------------


def test_install_prefix_plain_and_versioned(tmp_path: Path) -> None:
    plain = write_spec(tmp_path, "demo")
    versioned = write_spec(tmp_path, "vdemo", versioned=True)
    v = package_version("33.0.1.dev5", release=2, patch_count=1, patch_digest="ab" * 32,
                        version_tag="deb12")
    assert install_prefix(plain, v) == "/opt/openstack/demo"
    assert install_prefix(versioned, v) == "/opt/openstack/vdemo/33.0.1.dev5-2.1.gabababab"
    paths = planned_paths(plain, "deb")
    assert "/usr/bin/demo" in paths and "/lib/systemd/system/demo.service" in paths
    assert "/etc/sudoers.d/demo" in paths
    assert "/usr/lib/systemd/system/demo.service" in planned_paths(plain, "rpm")


def test_check_conflicts_names_both_specs_and_the_path(tmp_path: Path) -> None:
    demo = write_spec(tmp_path, "demo")
    other = write_spec(tmp_path, "other", rootwrap=False, entry_points=("demo",),
                       conf_path="/etc/other/other.conf")
    with pytest.raises(PackageError) as err:
        check_conflicts([demo, other])
    assert "specs/demo.yaml" in err.value.message and "specs/other.yaml" in err.value.message
    assert "/usr/bin/demo" in err.value.message
    # same prefix
    clash = write_spec(tmp_path, "other", rootwrap=False, entry_points=("other",),
                       prefix="/opt/openstack/demo", conf_path="/etc/other/other.conf")
    with pytest.raises(PackageError, match="/opt/openstack/demo"):
        check_conflicts([demo, clash])
    # same unit file name
    unit = write_spec(tmp_path, "other", rootwrap=False, entry_points=("other",),
                      conf_path="/etc/other/other.conf")
    with pytest.raises(PackageError, match="/lib/systemd/system/demo.service"):
        check_conflicts([demo, unit], family="deb")
    fine = write_spec(tmp_path, "other", rootwrap=False, entry_points=("other",),
                      conf_path="/etc/other/other.conf", units=("other.service",))
    check_conflicts([demo, fine])


def test_unsupported_family_and_packager(tmp_path: Path) -> None:
    import dataclasses
    spec = write_spec(tmp_path, "demo")
    debian = get_distro(tmp_path / "builders", "debian12")
    apk = dataclasses.replace(debian, family="apk")
    venv = fake_venv(tmp_path / "venv")
    with pytest.raises(PackageError, match="family 'apk'"):
        build_package(venv, make_manifest(spec, debian), spec, apk, tmp_path / "out")
    with pytest.raises(PackageError, match="unknown packager"):
        select_packager("deb", "alien")
    with pytest.raises(PackageError, match="out of range"):
        compression_for("zstd", None, 42)


def test_manifest_for_another_prefix_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "demo")
    debian = get_distro(tmp_path / "builders", "debian12")
    venv = fake_venv(tmp_path / "venv")
    manifest = make_manifest(spec, debian, prefix="/opt/elsewhere")
    with pytest.raises(PackageError, match="built for /opt/elsewhere"):
        build_package(venv, manifest, spec, debian, tmp_path / "out")


@pytest.mark.slow
def test_unknown_runtime_dependency_names_dep_and_distro(tmp_path: Path) -> None:
    # The host is Debian 12 and has apt lists: it stands in for the builder here.
    spec = write_spec(tmp_path, "demo", depends_deb=("iproute2", "no-such-package-giftbox"))
    debian = get_distro(tmp_path / "builders", "debian12")
    venv = fake_venv(tmp_path / "venv")
    with pytest.raises(PackageError) as err:
        build_package(venv, make_manifest(spec, debian), spec, debian, tmp_path / "out",
                      runner=HostRunner(), lint=False)
    assert "'no-such-package-giftbox'" in err.value.message
    assert "debian12" in err.value.message and "iproute2" not in err.value.message


def test_fpm_command_line(tmp_path: Path) -> None:
    """fpm cannot be installed here: check the argv the fpm packager would run."""
    spec = write_spec(tmp_path, "demo")
    for distro in (get_distro(tmp_path / "builders", "debian12"), rpm_distro(tmp_path)):
        venv = fake_venv(tmp_path / f"venv-{distro.family}")
        staged = stage(venv, make_manifest(spec, distro), spec, distro,
                       tmp_path / f"root-{distro.family}")
        comp = compression_for(distro.compression, None, None)
        out = tmp_path / "pkg"
        argv = fpm_command(staged, out, tmp_path / f"scripts-{distro.family}",
                           ["python3.11", "python3-yaml"], compression=comp,
                           maintainer="giftbox <x@y.invalid>")
        assert argv[:4] == ["-s", "dir", "-t", distro.family]
        pairs = list(zip(argv, argv[1:], strict=False))
        assert ("--depends", "python3.11") in pairs and ("--depends", "python3-yaml") in pairs
        assert ("--config-files", "/etc/demo/demo.conf") in pairs
        assert ("--config-files", "/etc/demo/rootwrap.conf") in pairs
        assert ("--config-files", "/etc/sudoers.d/demo") in pairs
        assert ("-C", str(staged.root)) in pairs and ("--package", str(out)) in pairs
        assert ("--source-date-epoch-default", "1700000000") in pairs
        tops = ["etc", "lib", "opt", "usr"] if distro.family == "deb" else ["etc", "opt", "usr"]
        assert argv[-len(tops):] == tops and argv[-len(tops) - 1] == str(out)
        if distro.family == "deb":
            assert ("-v", "1.0.0") in pairs and ("--iteration", "1~deb12") in pairs
            assert ("-a", "amd64") in pairs and ("--deb-compression", "xz") in pairs
            postinst = Path(argv[argv.index("--after-install") + 1]).read_text()
            assert "adduser --quiet --system" in postinst and "useradd --system" in postinst
            assert "--before-remove" in argv and "--after-remove" in argv
        else:
            assert ("-v", "1.0.0") in pairs and ("--iteration", "1.el9") in pairs
            assert ("-a", "x86_64") in pairs and "--rpm-autoreq" in argv
            pre = Path(argv[argv.index("--before-install") + 1]).read_text()
            assert "useradd -r -g demo" in pre and "getent passwd demo" in pre
            assert ("--rpm-attr", "0640,root,demo:/etc/demo/demo.conf") in pairs
            assert any(a.startswith("__provides_exclude_from ^/opt/openstack/demo/")
                       for a in argv)


@pytest.mark.slow
def test_lintian_errors_fail_with_the_tags(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/bad").write_text("#!/bin/sh\n")
    (root / "DEBIAN/control").write_text(
        "Package: bad\nVersion: 1\nArchitecture: all\nMaintainer: x <x@example.org>\n"
        "Description: bad\n bad\n")
    run("dpkg-deb", "--root-owner-group", "--build", str(root), str(tmp_path / "bad.deb"))
    from giftbox.ui import NULL_REPORTER
    with pytest.raises(PackageError) as err:
        lintian(tmp_path / "bad.deb", NULL_REPORTER)
    assert "no-copyright-file" in err.value.message


# --- real venv, real packages -------------------------------------------------------------


def _build(venv: Path, tmp: Path, tree: Path, family: str, *, release: int = 1,
           name: str = "demo", **kwargs: object) -> Artifact:
    spec = write_spec(tree, name, versioned=(name == "vdemo"))
    distro = get_distro(tree / "builders", "debian12") if family == "deb" else rpm_distro(tree)
    manifest = make_manifest(spec, distro, release=release)
    return build_package(venv, manifest, spec, distro, tmp, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def debs(demo_venvs: dict[str, Path], package_tree: Path,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("debs")
    return {"r1": _build(demo_venvs["demo"], out, package_tree, "deb"),
            "r2": _build(demo_venvs["demo"], out, package_tree, "deb", release=2),
            "versioned": _build(demo_venvs["vdemo"], out, package_tree, "deb", name="vdemo")}


@pytest.fixture(scope="session")
def rpm(demo_venvs: dict[str, Path], package_tree: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return _build(demo_venvs["demo"], tmp_path_factory.mktemp("rpms"), package_tree, "rpm")


@pytest.mark.docker
def test_deb_metadata(debs: dict[str, Artifact]) -> None:
    art = debs["r1"]
    assert art.path.name == "giftbox-demo_1.0.0-1~deb12_amd64.deb"
    assert (art.name, art.version, art.arch, art.family) == \
        ("giftbox-demo", "1.0.0-1~deb12", "amd64", "deb")
    assert art.sha256 == sha256(art.path) and art.size == art.path.stat().st_size
    fields = {f: run("dpkg-deb", "-f", str(art.path), f).strip()
              for f in ("Architecture", "Depends", "Description", "Version")}
    assert fields["Architecture"] == "amd64"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    names = [d.split()[0] for d in depends]
    for wanted in ("python3.11", "python3-yaml", "iproute2", "sudo", "libc6", "zlib1g"):
        assert wanted in names, fields["Depends"]
    # pillow's bundled libraries (libjpeg-<hash>.so...) resolve inside the package
    assert not any("jpeg" in n or "tiff" in n for n in names), fields["Depends"]
    assert "Patches (1" in fields["Description"] and "0001-Say-hello.patch" in \
        fields["Description"]
    contents = run("dpkg-deb", "-c", str(art.path))
    assert "./opt/openstack/demo/giftbox-manifest.json" in contents
    assert "./usr/bin/demo -> /opt/openstack/demo/bin/demo" in contents
    assert "./etc/demo/rootwrap.d -> /opt/openstack/demo/share/demo/rootwrap.d" in contents
    assert "-r--r----- root/root" in contents  # the sudoers rule
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(art.path)],
                             capture_output=True, check=True).stdout
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(control)) as tar:
        member = tar.extractfile("./conffiles")
        assert member is not None
        conffiles = member.read().decode().split()
    assert conffiles == ["/etc/demo/demo.conf", "/etc/demo/rootwrap.conf",
                         "/etc/sudoers.d/demo"]
    assert "data.tar.xz" in run("ar", "t", str(art.path))
    assert art.lint == ()  # lintian: no errors, no warnings left


@pytest.mark.docker
def test_versioned_layout(debs: dict[str, Artifact]) -> None:
    art = debs["versioned"]
    contents = run("dpkg-deb", "-c", str(art.path))
    assert "./opt/openstack/vdemo/1.0.0-1/bin/demo" in contents
    assert "./opt/openstack/vdemo/current -> 1.0.0-1" in contents
    assert "./usr/bin/demo -> /opt/openstack/vdemo/current/bin/demo" in contents
    assert "./opt/openstack/vdemo/1.0.0-1/giftbox-manifest.json" in contents


@pytest.mark.docker
def test_deb_is_byte_identical_from_two_copies(demo_venvs: dict[str, Path],
                                               package_tree: Path, tmp_path: Path) -> None:
    copies = []
    for n in (1, 2):
        copy = tmp_path / f"copy{n}" / ("deep/" * n) / "demo"
        shutil.copytree(demo_venvs["demo"], copy, symlinks=True)
        copies.append(copy)
    one = _build(copies[0], tmp_path / "out1", package_tree, "deb", lint=False)
    two = _build(copies[1], tmp_path / "out2", package_tree, "deb", lint=False)
    assert one.sha256 == two.sha256
    rpm_one = _build(copies[0], tmp_path / "out1", package_tree, "rpm", lint=False)
    rpm_two = _build(copies[1], tmp_path / "out2", package_tree, "rpm", lint=False)
    assert rpm_one.sha256 == rpm_two.sha256


@pytest.mark.docker
def test_compression_per_target(demo_venvs: dict[str, Path], package_tree: Path,
                                tmp_path: Path) -> None:
    xz = _build(demo_venvs["demo"], tmp_path, package_tree, "deb", compression="xz",
                compression_level=1, lint=False)
    assert "data.tar.xz" in run("ar", "t", str(xz.path)) and xz.compression == "xz-1"


@pytest.mark.docker
def test_rpm_headers_payload_and_scratch_install(rpm: Artifact, demo_venvs: dict[str, Path],
                                                 tmp_path: Path) -> None:
    path = str(rpm.path)
    assert rpm.path.name == "giftbox-demo-1.0.0-1.el9.x86_64.rpm"
    info = run("rpm", "-qpi", path)
    assert "Architecture: x86_64" in info and "Build Host  : giftbox" in info
    requires = run("rpm", "-qpR", path).splitlines()
    assert "python(abi) = 3.11" in requires
    assert "libc.so.6()(64bit)" in requires and "libz.so.1()(64bit)" in requires
    assert not [r for r in requires if r.startswith(("python3dist", "python3.11dist"))]
    assert not [r for r in requires if "-" in r.split(".so")[0] and ".so" in r], requires
    assert {"python3-pyyaml", "iproute", "sudo"} <= set(requires)
    provides = run("rpm", "-qp", "--provides", path).splitlines()
    assert not [p for p in provides if ".so" in p or "python3dist" in p], provides
    assert run("rpm", "-qp", "--qf", "%{PAYLOADCOMPRESSOR}", path) == "zstd"
    # the payload is the venv tree, at the prefix
    listed = set(run("rpm", "-qpl", path).splitlines())
    venv = demo_venvs["demo"]
    tree = {"/opt/openstack/demo/" + p.relative_to(venv).as_posix() for p in venv.rglob("*")}
    assert tree <= listed
    extra = listed - tree - {"/opt/openstack/demo"}
    assert extra == {"/opt/openstack", "/opt/openstack/demo/giftbox-manifest.json",
                     "/usr/bin/demo", "/usr/bin/demo-rootwrap",
                     "/usr/lib/systemd/system/demo.service", "/etc/demo",
                     "/etc/demo/demo.conf", "/etc/demo/rootwrap.conf", "/etc/demo/rootwrap.d",
                     "/etc/sudoers.d/demo", "/var/lib/demo"}
    configs = run("rpm", "-qpc", path).split()
    assert configs == ["/etc/demo/demo.conf", "/etc/demo/rootwrap.conf", "/etc/sudoers.d/demo"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    subprocess.run(["rpm", "--root", str(scratch), "--dbpath", str(scratch / "rpmdb"),
                    "--nodeps", "--noscripts", "-i", path], check=True, capture_output=True)
    assert (scratch / "opt/openstack/demo/bin/demo").is_file()
    assert (scratch / "usr/bin/demo").is_symlink()
    assert (scratch / "etc/sudoers.d/demo").stat().st_mode & 0o777 == 0o440
    assert rpm.lint == ()


@pytest.mark.docker
def test_apt_install_run_upgrade_remove_purge(debs: dict[str, Artifact],
                                              session_settings: Settings) -> None:
    out = debs["r1"].path.parent
    r1, r2 = (f"/pkgs/{debs[k].path.name}" for k in ("r1", "r2"))
    # sudo refuses to be removed on a system without a root password unless told
    env = {"DEBIAN_FRONTEND": "noninteractive", "SUDO_FORCE_REMOVE": "yes"}
    with Container(IMAGE, Arch.x86_64, session_settings, mounts=[Mount(out, "/pkgs")]) as c:
        prepare(c)
        before = listing(c)
        c.call([*APT[:1], "update", *APT[1:]], env=env, stream=False)
        c.call([*APT, "install", r1], env=env, stream=False)
        said = c.call(["/usr/bin/demo"], stream=False).output
        assert "demo says &lt;ok&gt; via markupsafe._speedups" in said
        assert "jpeg True (1, 1)" in said and "python 3 11 /opt/openstack/demo" in said
        assert c.call(["getent", "passwd", "demo"], stream=False).output.startswith("demo:")
        assert c.call(["stat", "-c", "%U:%G %a", "/etc/demo/demo.conf", "/var/lib/demo"],
                      stream=False).output.split("\n") == ["root:demo 640", "demo:demo 750"]
        # rootwrap from the package alone: the service user runs an allowed command as root
        as_demo = ["setpriv", "--reuid=demo", "--regid=demo", "--init-groups", "sudo", "-n",
                   "/usr/bin/demo-rootwrap", "/etc/demo/rootwrap.conf"]
        assert c.call([*as_demo, "id", "-u"], stream=False).output.strip() == "0"
        refused = c.call([*as_demo, "cat", "/etc/shadow"], check=False, stream=False)
        assert refused.returncode != 0 and "Unauthorized command" in refused.output
        # an operator edits the config; the upgrade keeps the edit
        c.call(["sh", "-c", "echo 'debug = true  # local' >> /etc/demo/demo.conf"],
               stream=False)
        c.call([*APT, "install", r2], env=env, stream=False)
        assert c.call(["dpkg-query", "-W", "-f", "${Version}", "giftbox-demo"],
                      stream=False).output == "1.0.0-2~deb12"
        assert "debug = true  # local" in c.call(["cat", "/etc/demo/demo.conf"],
                                                 stream=False).output
        assert "demo says" in c.call(["/usr/bin/demo"], stream=False).output
        # remove keeps config, purge removes everything the package created
        c.call([*APT, "remove", "giftbox-demo"], env=env, stream=False)
        assert c.exists("/etc/demo/demo.conf") and not c.exists("/usr/bin/demo")
        assert not c.exists("/opt/openstack/demo")
        c.call([*APT, "purge", "giftbox-demo"], env=env, stream=False)
        c.call([*APT, "autoremove", "--purge"], env=env, stream=False)
        after = listing(c)
    left = sorted(after - before - SHADOW_BACKUPS)
    assert left == [], left
    assert not [p for p in before - after], sorted(before - after)[:20]


@pytest.mark.docker
def test_versioned_install_runs_through_current(debs: dict[str, Artifact],
                                                session_settings: Settings) -> None:
    art = debs["versioned"]
    # sudo refuses to be removed on a system without a root password unless told
    env = {"DEBIAN_FRONTEND": "noninteractive", "SUDO_FORCE_REMOVE": "yes"}
    with Container(IMAGE, Arch.x86_64, session_settings,
                   mounts=[Mount(art.path.parent, "/pkgs")]) as c:
        prepare(c)
        before = listing(c)
        c.call([*APT[:1], "update", *APT[1:]], env=env, stream=False)
        c.call([*APT, "install", f"/pkgs/{art.path.name}"], env=env, stream=False)
        said = c.call(["/usr/bin/demo"], stream=False).output
        assert "python 3 11 /opt/openstack/vdemo/1.0.0-1" in said
        assert c.call(["readlink", "/opt/openstack/vdemo/current"],
                      stream=False).output.strip() == "1.0.0-1"
        c.call([*APT, "purge", "giftbox-vdemo"], env=env, stream=False)
        c.call([*APT, "autoremove", "--purge"], env=env, stream=False)
        after = listing(c)
    assert sorted(after - before - SHADOW_BACKUPS) == []
