"""Package versions: upstream version + a local part, mapped to Debian and RPM.

The rules (design invariant 2), checked in tests with the real ``dpkg --compare-versions`` and
rpm's own ``rpm.vercmp``:

* pre-releases and dev builds sort below the release: PEP 440 ``33.0.0.0rc1`` becomes
  ``33.0.0~rc1`` and ``33.0.1.dev5`` becomes ``33.0.1~dev5`` (``~`` sorts before anything);
* later nightlies of a branch sort higher: an untagged commit gets pbr's ``X.Y.(Z+1).devN``
  where N counts the commits since the last tag, and N only grows along a branch;
* a patched build sorts above the unpatched build of the same upstream: the revision is
  ``<release>`` unpatched and ``<release>.<npatches>.g<digest>`` patched; a numeric segment
  sorts above the ``~deb12``/``.el9`` distro tag in both dpkg and rpm;
* the distro tag (``~deb12``, ``.el9``) keeps one upstream version built for two distros from
  ever naming two byte streams with one filename (invariant 5). Bump ``package.release`` in the
  spec to move a rebuild above an earlier one whose inputs were different.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from giftbox.errors import SourceError
from giftbox.family import get_family

_PRE_NAMES = {"a": "a", "b": "b", "rc": "rc"}
_VERSION_TAG_RE = re.compile(r"^v?(\d+(\.\d+)*((a|b|rc|\.0a|\.0b|\.0rc)\d+)?)$")


def parse_upstream(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion:
        raise SourceError(f"'{version}' is not a PEP 440 version",
                          hint="tags should look like 33.0.0 or 33.0.0.0rc1") from None


def tag_version(tag: str) -> str | None:
    """The version a release tag names (``33.0.0``, ``v1.2``, ``33.0.0.0rc1``), else None."""
    match = _VERSION_TAG_RE.match(tag)
    if not match:
        return None
    try:
        return str(Version(match.group(1)))
    except InvalidVersion:
        return None


def dev_version(last_tag_version: str | None, commits_since: int) -> str:
    """pbr's version for an untagged commit: the next version, ``.devN`` after the last tag.

    After a final release X.Y.Z the next is X.Y.(Z+1); after a pre-release X.Y.Z.0rcK the next
    is X.Y.Z.0rc(K+1) (pbr would say the same), so a commit after rc1 sorts above rc1.
    """
    if last_tag_version is None:
        return f"0.0.1.dev{commits_since}"
    v = parse_upstream(last_tag_version)
    if v.pre is not None:
        letter, number = v.pre
        base = ".".join(str(p) for p in v.release)
        return f"{base}{letter}{number + 1}.dev{commits_since}"
    release = list(v.release) + [0] * (3 - len(v.release))
    release[-1] += 1
    return ".".join(str(p) for p in release) + f".dev{commits_since}"


def _release(v: Version) -> tuple[int, ...]:
    """The release numbers without trailing zeros past the third: pbr's ``33.0.0.0rc1``
    is 33.0.0's rc1, and ``33.0.0.0~rc1`` would sort above ``33.0.0`` in dpkg."""
    parts = list(v.release)
    while len(parts) > 3 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def debianize(version: str) -> str:
    """PEP 440 to a Debian upstream version: pre-release and dev parts behind ``~``."""
    v = parse_upstream(version)
    out = ".".join(str(p) for p in _release(v))
    if v.pre is not None:
        out += f"~{_PRE_NAMES[v.pre[0]]}{v.pre[1]}"
    if v.post is not None:
        out += f".post{v.post}"
    if v.dev is not None:
        out += f"~dev{v.dev}"
    if v.epoch:
        out = f"{v.epoch}:{out}"
    return out


def rpmize(version: str) -> tuple[int, str]:
    """PEP 440 to an RPM (Epoch, Version); rpm >= 4.10 sorts ``~`` like dpkg does."""
    v = parse_upstream(version)
    deb = debianize(version)
    return v.epoch, deb.split(":", 1)[-1]


@dataclass(frozen=True)
class PackageVersion:
    """One build's version in every spelling a target needs."""

    upstream: str  # PEP 440, e.g. 33.0.1.dev5
    release: int  # package.release from the spec
    patch_count: int
    patch_digest: str  # hex digest of the patch series, "" when unpatched
    deb_tag: str  # deb12 (apt) — empty for rpm-only targets
    rpm_tag: str  # el9 — empty for deb-only targets

    @property
    def revision(self) -> str:
        if not self.patch_count:
            return str(self.release)
        return f"{self.release}.{self.patch_count}.g{self.patch_digest[:8]}"

    @property
    def pep440_local(self) -> str:
        """The version with a PEP 440 local label, what the venv's own metadata can carry."""
        local = f"gb{self.revision}".replace("-", ".")
        return f"{self.upstream}+{local}"

    @property
    def deb(self) -> str:
        """Full Debian version: ``[epoch:]upstream-revision~tag``."""
        tag = f"~{self.deb_tag}" if self.deb_tag else ""
        return f"{debianize(self.upstream)}-{self.revision}{tag}"

    @property
    def rpm_epoch(self) -> int:
        return rpmize(self.upstream)[0]

    @property
    def rpm_version(self) -> str:
        return rpmize(self.upstream)[1]

    @property
    def rpm_release(self) -> str:
        tag = f".{self.rpm_tag}" if self.rpm_tag else ""
        return f"{self.revision}{tag}"

    @property
    def rpm_evr(self) -> str:
        epoch = f"{self.rpm_epoch}:" if self.rpm_epoch else ""
        return f"{epoch}{self.rpm_version}-{self.rpm_release}"

    def as_dict(self) -> dict[str, object]:
        return {"upstream": self.upstream, "release": self.release,
                "patch_count": self.patch_count, "patch_digest": self.patch_digest,
                "deb": self.deb, "rpm": self.rpm_evr, "pep440": self.pep440_local}


def package_version(upstream: str, *, release: int = 1, patch_count: int = 0,
                    patch_digest: str = "", family: str = "deb",
                    version_tag: str = "") -> PackageVersion:
    parse_upstream(upstream)
    deb_tag, rpm_tag = get_family(family).version_tags(version_tag)
    return PackageVersion(upstream=upstream, release=release, patch_count=patch_count,
                          patch_digest=patch_digest, deb_tag=deb_tag, rpm_tag=rpm_tag)


def for_target(upstream_version: str, package_release: int, patch_count: int,
               patch_digest: str, family: str, version_tag: str) -> PackageVersion:
    """The package version of one build of a spec for one distro."""
    return package_version(upstream_version, release=package_release, patch_count=patch_count,
                           patch_digest=patch_digest, family=family, version_tag=version_tag)
