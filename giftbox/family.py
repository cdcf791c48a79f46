"""Package families as objects: one per package format (deb, rpm), in mkosi's manner.

A distro's ``builder.yaml`` names its family (``family: deb``); ``Distro.family_obj`` (or
``get_family(name)`` for a manifest's ``family`` or a pool object's ``kind``) is the object
that knows everything that differs between the formats, so the rest of the code asks it
instead of testing the name:

* how it spells an architecture (``amd64`` / ``x86_64``) and a version (``33.0.0-1~deb12`` /
  ``33.0.0-1.el9``: which spelling of a ``PackageVersion`` it takes and where the distro tag
  goes; the PEP 440 mapping itself is ``giftbox.versions``'s), and how versions sort (dpkg's
  or rpm's order, ``giftbox.repo.vercmp``);
* how a dependency is written (``name (>= 1)`` / ``name >= 1``) and which interpreter a venv
  depends on (``python3.11`` / ``python(abi) = 3.11``);
* its native packager and linter (tool names; the code is ``giftbox.package.deb``/``rpm`` and
  ``lint``), the repository writer that serves it (``apt`` / ``yum``), where units and the
  distro's Python bindings live on the target, and the paths only its packages install;
* how its payload is read as data (``giftbox.repo.archive``): ``dpkg-deb``'s tar or
  ``rpm2cpio``'s cpio.

Adding a family is adding a subclass here (and its packager).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from giftbox.errors import PackageError


class _Arch(Protocol):  # giftbox.distros.Arch (not imported: distros imports this module)
    @property
    def value(self) -> str: ...


class _Version(Protocol):  # giftbox.versions.PackageVersion (it imports this module)
    @property
    def deb(self) -> str: ...
    @property
    def rpm_evr(self) -> str: ...
    @property
    def rpm_version(self) -> str: ...
    @property
    def rpm_release(self) -> str: ...


@dataclass(frozen=True, eq=False)
class Family:
    """What one package format is; the subclasses fill in what differs. There is one object
    per family (``DEB``, ``RPM``): compare them with ``is``."""

    name: str  # deb | rpm: builder.yaml's family, a manifest's family, a pool object's kind
    repository: str  # the writer that serves it: apt | yum
    native_tool: str  # the native packager's tool: dpkg-deb | rpmbuild
    linter: str  # lintian | rpmlint
    payload_tool: tuple[str, ...]  # argv prefix that writes the payload archive to stdout
    payload_format: str  # tar | cpio: what payload_tool writes
    systemd_dir: str  # where the package installs units
    # what a builder runs before its archive's packages can be queried or installed (apt
    # keeps no lists in the images; dnf fetches its metadata when asked)
    index_update: tuple[str, ...]
    # kernel arch name -> this family's spelling, where they differ
    arch_names: Mapping[str, str] = field(default_factory=dict)

    def arch(self, arch: _Arch) -> str:
        """``arch`` as this family spells it in package names and indexes."""
        return self.arch_names.get(arch.value, arch.value)

    def version(self, v: _Version) -> str:
        """The full version of ``v`` this family's tools compare."""
        raise NotImplementedError

    def version_tags(self, version_tag: str) -> tuple[str, str]:
        """``PackageVersion``'s (deb_tag, rpm_tag) for a distro of this family tagged
        ``version_tag``: only this family's spelling carries the distro tag."""
        raise NotImplementedError

    def upstream_and_revision(self, v: _Version) -> tuple[str, str]:
        """The version without its epoch, split as packagers take it (fpm's ``-v`` and
        ``--iteration``)."""
        raise NotImplementedError

    def compare(self, a: str, b: str) -> int:
        """<0, 0, >0 as this family's package manager orders the two versions."""
        raise NotImplementedError

    def sort_key(self) -> Callable[[str], Any]:
        """A ``key=`` for sorting this family's version strings in ascending order."""
        import functools

        return functools.cmp_to_key(self.compare)

    def dependency(self, name: str, op: str | None, version: str | None) -> str:
        """One dependency in this family's syntax (``op`` in either family's spelling)."""
        raise NotImplementedError

    def interpreter_depends(self, python: str, links: list[str]) -> list[str]:
        """The exact interpreter minor a venv runs on, plus what owns the interpreter path it
        links to (``links``) when that is not the minor-versioned one."""
        raise NotImplementedError

    def bindings_dirs(self, python: str) -> tuple[str, ...]:
        """Where the distro's own Python packages (the ``system_bindings``) live."""
        raise NotImplementedError

    def install_commands(self, packages: list[str]) -> list[list[str]]:
        """The argvs that install ``packages`` from the distro's archive in a builder."""
        raise NotImplementedError

    def own_paths(self, package: str) -> dict[str, str]:
        """Paths outside the prefix that only this family's packages install (for conflict
        checks), each with what it is."""
        return {}


@dataclass(frozen=True, eq=False)
class Deb(Family):
    def version(self, v: _Version) -> str:
        return v.deb

    def version_tags(self, version_tag: str) -> tuple[str, str]:
        return version_tag, ""

    def upstream_and_revision(self, v: _Version) -> tuple[str, str]:
        upstream, _, revision = v.deb.split(":", 1)[-1].rpartition("-")
        return upstream, revision

    def compare(self, a: str, b: str) -> int:
        from giftbox.repo.vercmp import dpkg_compare  # repo/ imports distros, which needs us

        return dpkg_compare(a, b)

    def dependency(self, name: str, op: str | None, version: str | None) -> str:
        if not op:
            return name
        op = {"<": "<<", ">": ">>"}.get(op, op)
        return f"{name} ({op} {version})"

    def interpreter_depends(self, python: str, links: list[str]) -> list[str]:
        deps = [f"python{python}"]
        if "/usr/bin/python3" in links:
            deps.append("python3-minimal")  # ships the /usr/bin/python3 link
        return deps

    def bindings_dirs(self, python: str) -> tuple[str, ...]:
        return ("/usr/lib/python3/dist-packages",)

    def install_commands(self, packages: list[str]) -> list[list[str]]:
        return [list(self.index_update),
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]]

    def own_paths(self, package: str) -> dict[str, str]:
        return {f"/usr/share/doc/{package}": "documentation",
                f"/usr/share/lintian/overrides/{package}": "lintian overrides"}


@dataclass(frozen=True, eq=False)
class Rpm(Family):
    def version(self, v: _Version) -> str:
        return v.rpm_evr

    def version_tags(self, version_tag: str) -> tuple[str, str]:
        return "", version_tag

    def upstream_and_revision(self, v: _Version) -> tuple[str, str]:
        return v.rpm_version, v.rpm_release

    def compare(self, a: str, b: str) -> int:
        from giftbox.repo.vercmp import rpm_compare  # repo/ imports distros, which needs us

        return rpm_compare(a, b)

    def dependency(self, name: str, op: str | None, version: str | None) -> str:
        if not op:
            return name
        op = {"<<": "<", ">>": ">"}.get(op, op)
        return f"{name} {op} {version}"

    def interpreter_depends(self, python: str, links: list[str]) -> list[str]:
        deps = [f"python(abi) = {python}"]
        if "/usr/bin/python3" in links:
            deps.append("/usr/bin/python3")
        return deps

    def bindings_dirs(self, python: str) -> tuple[str, ...]:
        return (f"/usr/lib64/python{python}/site-packages",
                f"/usr/lib/python{python}/site-packages")

    def install_commands(self, packages: list[str]) -> list[list[str]]:
        return [["dnf", "install", "-y", "-q", *packages]]


DEB = Deb(name="deb", repository="apt", native_tool="dpkg-deb",
          linter="lintian", payload_tool=("dpkg-deb", "--fsys-tarfile"), payload_format="tar",
          systemd_dir="/lib/systemd/system", index_update=("apt-get", "update", "-qq"),
          arch_names={"x86_64": "amd64", "ppc64le": "ppc64el", "aarch64": "arm64"})
RPM = Rpm(name="rpm", repository="yum", native_tool="rpmbuild",
          linter="rpmlint", payload_tool=("rpm2cpio",), payload_format="cpio",
          systemd_dir="/usr/lib/systemd/system", index_update=())

FAMILIES: dict[str, Family] = {f.name: f for f in (DEB, RPM)}
NAMES = tuple(FAMILIES)  # ("deb", "rpm")


def get_family(name: str) -> Family:
    """The family called ``name`` (builder.yaml's ``family``, a manifest's, a pool kind)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise PackageError(f"giftbox cannot package for family '{name}'",
                           hint="a builders/<distro>/builder.yaml family is one of: "
                                + ", ".join(NAMES)) from None
