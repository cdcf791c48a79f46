"""Package families as objects (giftbox.family) and the archive readers they use
(giftbox.repo.archive): pure logic, no engine, no dpkg or rpm."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from giftbox.distros import Arch, load_distros
from giftbox.errors import PackageError, RepoError
from giftbox.family import DEB, NAMES, RPM, get_family
from giftbox.package.common import dep_for
from giftbox.repo.archive import ar_members, cpio_files, tar_files
from giftbox.repo.vercmp import dpkg_compare, rpm_compare
from giftbox.versions import package_version

REPO = Path(__file__).resolve().parent.parent


def test_each_family_spells_the_arches_its_own_way_and_parse_reads_either() -> None:
    assert [DEB.arch(a) for a in Arch] == ["amd64", "ppc64el", "arm64", "s390x"]
    assert [RPM.arch(a) for a in Arch] == ["x86_64", "ppc64le", "aarch64", "s390x"]
    for arch in Arch:
        assert Arch.parse(DEB.arch(arch)) is arch and Arch.parse(RPM.arch(arch)) is arch
        assert arch.deb == DEB.arch(arch)
        assert arch.rpm == RPM.arch(arch)


def test_every_shipped_distro_has_a_family_object_named_as_its_builder_yaml_says() -> None:
    distros = load_distros(REPO / "builders")
    assert distros, "builders/ defines no distro"
    for distro in distros.values():
        family = distro.family_obj
        assert family is get_family(distro.family) and family.name == distro.family
        assert family.name in NAMES
    assert {d.family_obj for d in distros.values()} == {DEB, RPM}


def test_a_family_giftbox_cannot_package_is_named_with_where_to_fix_it() -> None:
    with pytest.raises(PackageError, match="family 'apk'") as caught:
        get_family("apk")
    assert "builder.yaml" in (caught.value.hint or "")


def test_only_the_familys_own_spelling_carries_the_distro_tag() -> None:
    deb = package_version("33.0.0", patch_count=2, patch_digest="4ac0cd51" * 8,
                          family="deb", version_tag="deb12")
    rpm = package_version("33.0.0", patch_count=2, patch_digest="4ac0cd51" * 8,
                          family="rpm", version_tag="el9")
    assert DEB.version(deb) == deb.deb == "33.0.0-1.2.g4ac0cd51~deb12"
    assert RPM.version(rpm) == rpm.rpm_evr == "33.0.0-1.2.g4ac0cd51.el9"
    assert (deb.deb_tag, deb.rpm_tag) == ("deb12", "") and (rpm.deb_tag, rpm.rpm_tag) == \
        ("", "el9")
    assert DEB.version_tags("deb13") == ("deb13", "") and RPM.version_tags("el8") == ("", "el8")


def test_packagers_get_the_version_without_its_epoch_split_as_they_take_it() -> None:
    v = package_version("2!1.0.0rc1", release=3, family="deb", version_tag="deb12")
    assert DEB.version(v) == "2:1.0.0~rc1-3~deb12"
    assert DEB.upstream_and_revision(v) == ("1.0.0~rc1", "3~deb12")
    r = package_version("2!1.0.0rc1", release=3, family="rpm", version_tag="el9")
    assert RPM.version(r) == "2:1.0.0~rc1-3.el9"
    assert RPM.upstream_and_revision(r) == ("1.0.0~rc1", "3.el9")


@pytest.mark.parametrize(("a", "b"), [("1.0~rc1-1", "1.0-1"), ("1.9-1", "1.10-1"),
                                      ("2.0-1", "1:0.1-1"), ("1.0-1", "1.0-1.1")])
def test_each_family_orders_versions_as_its_package_manager(a: str, b: str) -> None:
    assert DEB.compare(a, b) == dpkg_compare(a, b) < 0
    assert RPM.compare(a, b) == rpm_compare(a, b) < 0
    assert sorted([b, a], key=DEB.sort_key()) == [a, b]
    assert sorted([b, a], key=RPM.sort_key()) == [a, b]


def test_dependencies_are_written_in_the_familys_syntax_from_either_spelling() -> None:
    assert dep_for("foo", "deb") == "foo" and dep_for("foo", "rpm") == "foo"
    assert dep_for("foo > 1.0", "deb") == "foo (>> 1.0)"
    assert dep_for("foo (<< 2)", "rpm") == "foo < 2"
    assert dep_for("foo (>= 2)", "rpm") == "foo >= 2"
    assert DEB.dependency("foo", "<", "3") == "foo (<< 3)"


def test_the_interpreter_a_venv_needs_and_where_distro_bindings_live() -> None:
    assert DEB.interpreter_depends("3.11", []) == ["python3.11"]
    assert DEB.interpreter_depends("3.11", ["/usr/bin/python3"]) == \
        ["python3.11", "python3-minimal"]
    assert RPM.interpreter_depends("3.9", ["/usr/bin/python3"]) == \
        ["python(abi) = 3.9", "/usr/bin/python3"]
    assert DEB.bindings_dirs("3.11") == ("/usr/lib/python3/dist-packages",)
    assert RPM.bindings_dirs("3.9") == ("/usr/lib64/python3.9/site-packages",
                                        "/usr/lib/python3.9/site-packages")


def test_what_only_one_family_installs_runs_or_is_served_by() -> None:
    assert DEB.own_paths("giftbox-nova") == {
        "/usr/share/doc/giftbox-nova": "documentation",
        "/usr/share/lintian/overrides/giftbox-nova": "lintian overrides"}
    assert RPM.own_paths("giftbox-nova") == {}
    assert (DEB.systemd_dir, RPM.systemd_dir) == ("/lib/systemd/system",
                                                  "/usr/lib/systemd/system")
    assert (DEB.repository, RPM.repository) == ("apt", "yum")
    assert (DEB.native_tool, RPM.native_tool) == ("dpkg-deb", "rpmbuild")
    assert (DEB.linter, RPM.linter) == ("lintian", "rpmlint")
    assert DEB.install_commands(["a"])[0] == list(DEB.index_update) == \
        ["apt-get", "update", "-qq"]
    assert RPM.install_commands(["a"]) == [["dnf", "install", "-y", "-q", "a"]]
    assert RPM.index_update == ()


# --- the archive readers ------------------------------------------------------------------


def _cpio(entries: list[tuple[str, int, int, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, inode, mode, nlink, data), as rpm2cpio writes one."""
    out = b""
    for name, ino, mode, nlink, data in [*entries, ("TRAILER!!!", 0, 0, 1, b"")]:
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + raw
        out += b"\0" * ((4 - (110 + len(raw)) % 4) % 4) + data + b"\0" * ((4 - len(data) % 4) % 4)
    return out


def _wanted(name: str) -> bool:
    return name.endswith("giftbox-manifest.json")


def test_cpio_reader_keeps_only_wanted_files_and_takes_a_hard_links_data_from_its_last() -> None:
    archive = _cpio([("./opt/x/bin/python", 1, 0o100755, 1, b"\x7fELF" * 100),
                     ("./opt/x/giftbox-manifest.json", 2, 0o100644, 2, b""),
                     ("./opt/x/share/copy.json", 2, 0o100644, 2, b'{"a": 1}'),
                     ("./opt/x/lib", 3, 0o040755, 2, b"")])
    assert list(cpio_files(io.BytesIO(archive), "p.rpm", _wanted)) == \
        [("./opt/x/giftbox-manifest.json", b'{"a": 1}')]


def test_cpio_reader_refuses_a_cut_short_or_oversized_or_foreign_archive() -> None:
    archive = _cpio([("./giftbox-manifest.json", 1, 0o100644, 1, b"x" * 64)])
    with pytest.raises(RepoError, match="ends early"):
        list(cpio_files(io.BytesIO(archive[:150]), "p.rpm", _wanted))
    with pytest.raises(RepoError, match="64 bytes: more than the 10"):
        list(cpio_files(io.BytesIO(archive), "p.rpm", _wanted, limit=10))
    with pytest.raises(RepoError, match="not a newc cpio archive"):
        list(cpio_files(io.BytesIO(b"x" * 200), "p.rpm", _wanted))


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_reader_walks_every_entry_and_refuses_a_truncated_stream() -> None:
    data = _tar({"./opt/x/bin/tool": b"#!/bin/sh\n" * 200, "./opt/x/giftbox-manifest.json": b"{}"})
    walked = [(e.name, content) for e, content in tar_files(io.BytesIO(data), "p", _wanted)]
    assert walked == [("./opt/x/bin/tool", None), ("./opt/x/giftbox-manifest.json", b"{}")]
    with pytest.raises(RepoError, match="p is not a whole tar archive"):
        list(tar_files(io.BytesIO(data[:1000]), "p", lambda n: True))


def test_ar_reader_refuses_what_is_not_a_whole_ar_archive(tmp_path: Path) -> None:
    body = b"2.0\n"
    member = b"debian-binary".ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + \
        b"100644".ljust(8) + str(len(body)).encode().ljust(10) + b"`\n" + body
    whole = tmp_path / "a.deb"
    whole.write_bytes(b"!<arch>\n" + member)
    assert ar_members(whole) == [("debian-binary", body)]
    cut = tmp_path / "cut.deb"
    cut.write_bytes(b"!<arch>\n" + member[:-2])
    with pytest.raises(RepoError, match="has 2 of its 4 bytes"):
        ar_members(cut)
    text = tmp_path / "text.deb"
    text.write_bytes(b"Package: x\n")
    with pytest.raises(RepoError, match="no ar archive header"):
        ar_members(text)
