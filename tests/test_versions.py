"""Design invariant 2, checked with the real ``dpkg --compare-versions`` and rpm's vercmp."""

from __future__ import annotations

import subprocess
from itertools import pairwise

import pytest
from conftest import Upstream

from giftbox import source
from giftbox.settings import Settings
from giftbox.versions import debianize, dev_version, package_version, tag_version


def dpkg_lt(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b],
                          check=False).returncode == 0


def rpm_cmp(a: str, b: str) -> int:
    # rpm.vercmp compares full [E:]V-R strings exactly as rpm and dnf order packages.
    out = subprocess.run(["rpm", "--eval", f"%{{lua:print(rpm.vercmp('{a}', '{b}'))}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return int(out)


def assert_ascending(upstreams: list[str], **kwargs: object) -> None:
    debs = [package_version(u, family="deb", version_tag="deb12", **kwargs).deb  # type: ignore[arg-type]
            for u in upstreams]
    rpms = [package_version(u, family="rpm", version_tag="el9", **kwargs).rpm_evr  # type: ignore[arg-type]
            for u in upstreams]
    for a, b in pairwise(debs):
        assert dpkg_lt(a, b), f"dpkg: {a} should sort below {b}"
    for a, b in pairwise(rpms):
        assert rpm_cmp(a, b) == -1, f"rpm: {a} should sort below {b}"


def test_release_sorts_above_its_prereleases() -> None:
    # pbr's spellings (33.0.0.0rc1) and PEP 440's (33.0.0rc1) alike.
    assert_ascending(["33.0.0.0b1", "33.0.0.0rc1.dev3", "33.0.0.0rc1", "33.0.0rc2",
                      "33.0.0", "33.0.0.post1", "33.0.1.dev4", "33.0.1"])


def test_pbr_style_versions_rise_with_commits() -> None:
    assert_ascending([dev_version("33.0.0", n) for n in (1, 2, 9, 10, 11, 100)])
    assert_ascending(["33.0.0.0rc1", dev_version("33.0.0.0rc1", 5), "33.0.0"])


def test_patched_build_sorts_above_unpatched() -> None:
    for upstream in ("33.0.0", "33.0.1.dev5", "33.0.0.0rc1"):
        for family, tag in (("deb", "deb12"), ("rpm", "el9"), ("rpm", "suse15")):
            plain = package_version(upstream, family=family, version_tag=tag)
            patched = package_version(upstream, family=family, version_tag=tag,
                                      patch_count=1, patch_digest="ffffffff00")
            if family == "deb":
                assert dpkg_lt(plain.deb, patched.deb)
            else:
                assert rpm_cmp(plain.rpm_evr, patched.rpm_evr) == -1
    # A rebuild with package.release bumped sorts above, patched or not.
    low = package_version("33.0.0", patch_count=3, patch_digest="ab" * 8, version_tag="deb12")
    high = package_version("33.0.0", release=2, version_tag="deb12")
    assert dpkg_lt(low.deb, high.deb)


def test_next_upstream_release_beats_any_local_revision() -> None:
    patched = package_version("33.0.0", release=9, patch_count=9, patch_digest="f" * 16,
                              version_tag="deb12")
    assert dpkg_lt(patched.deb, package_version("33.0.1.dev1", version_tag="deb12").deb)


def test_distro_tags_keep_filenames_apart() -> None:
    a = package_version("33.0.0", version_tag="deb12").deb
    b = package_version("33.0.0", version_tag="deb13").deb
    assert a != b and dpkg_lt(a, b)


@pytest.mark.parametrize("pep440, deb", [
    ("33.0.0", "33.0.0"), ("33.0.0.0rc1", "33.0.0~rc1"), ("33.0.1.dev5", "33.0.1~dev5"),
    ("1!2.0", "1:2.0"), ("2.0.post1", "2.0.post1"), ("33.0.0rc1.dev2", "33.0.0~rc1~dev2"),
])
def test_debianize(pep440: str, deb: str) -> None:
    assert debianize(pep440) == deb


@pytest.mark.parametrize("tag, version", [
    ("33.0.0", "33.0.0"), ("v1.2", "1.2"), ("33.0.0.0rc1", "33.0.0.0rc1"),
    ("stable/2026.1", None), ("release-1", None), ("2026.1-eol", None),
])
def test_tag_version(tag: str, version: str | None) -> None:
    assert tag_version(tag) == version


def test_nightlies_of_a_real_branch_sort_higher(upstream: Upstream, settings: Settings) -> None:
    """Successive heads of a branch, versioned from the real repository, always rise."""
    upstream.tag("33.0.0")
    mirror = source.GitMirror(upstream.url, settings)
    versions = []
    for night in range(4):
        upstream.commit(f"Nightly change {night}")
        if night == 2:
            upstream.tag("33.0.1")  # a release lands between two nightlies
        head = mirror.resolve("master")
        versions.append(mirror.version_of(head, "master"))
    assert versions == ["33.0.1.dev1", "33.0.1.dev2", "33.0.1", "33.0.2.dev1"]
    assert_ascending(versions)
    assert_ascending(versions, patch_count=2, patch_digest="0123456789abcdef")
