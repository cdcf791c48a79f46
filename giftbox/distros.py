"""Distributions and architectures as data plus a small interface, in mkosi's manner.

Each ``builders/<distro>/builder.yaml`` describes one target: its package family, codename,
Python, how it spells each architecture, the tag its package versions carry, and how its base
image is bootstrapped without a registry. Adding a distro is adding a folder.
"""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from giftbox.errors import YAML_VALUE_ERRORS, BuilderError, SpecError, SpecProblem
from giftbox.family import DEB, RPM, Family, get_family


class Arch(enum.Enum):
    """Architectures by their kernel name, with each family's spelling and Docker platform."""

    x86_64 = "x86_64"
    ppc64le = "ppc64le"
    aarch64 = "aarch64"
    s390x = "s390x"

    @property
    def deb(self) -> str:
        return DEB.arch(self)

    @property
    def rpm(self) -> str:
        return RPM.arch(self)

    @property
    def platform(self) -> str:
        return {"x86_64": "linux/amd64", "ppc64le": "linux/ppc64le", "aarch64": "linux/arm64",
                "s390x": "linux/s390x"}[self.value]

    @property
    def elf_machine(self) -> int:
        """e_machine in the ELF header of code built for this arch."""
        return {"x86_64": 62, "ppc64le": 21, "aarch64": 183, "s390x": 22}[self.value]

    @property
    def qemu(self) -> str:
        return {"x86_64": "x86_64", "ppc64le": "ppc64le", "aarch64": "aarch64",
                "s390x": "s390x"}[self.value]

    @classmethod
    def parse(cls, name: str) -> Arch:
        """An arch by its kernel name or a family's spelling of it (``amd64``, ``ppc64el``)."""
        aliases = {spelled: kernel for kernel, spelled in DEB.arch_names.items()}
        name = aliases.get(name, name)
        try:
            return cls(name)
        except ValueError:
            raise BuilderError(
                f"unknown architecture '{name}'",
                hint="known: " + ", ".join(a.value for a in cls)) from None


@dataclass(frozen=True)
class Bootstrap:
    """How the base image comes to exist: ``mmdebstrap`` from an archive, or a registry pull."""

    method: str  # mmdebstrap | registry
    mirror: str | None = None
    suite: str | None = None
    components: tuple[str, ...] = ("main",)
    keyring: str | None = None
    image: str | None = None  # for registry: e.g. ubuntu:16.04


@dataclass(frozen=True)
class Distro:
    name: str  # debian12
    family: str  # deb | rpm: the name; family_obj is what it does
    distro: str  # debian, ubuntu, rocky, centos
    version: str  # "12"
    codename: str  # bookworm (apt suite); for rpm the major version
    python: str  # "3.11"
    version_tag: str  # deb12 / el9: what package versions carry
    compression: str  # zstd | xz
    compression_level: int | None  # None: the tool's default (common.DEFAULT_LEVELS)
    arches: tuple[Arch, ...]
    bootstrap: Bootstrap
    build_packages: tuple[str, ...]
    directory: Path
    runnable_here: bool = True
    notes: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def supports(self, arch: Arch) -> bool:
        return arch in self.arches

    def slug(self, arch: Arch) -> str:
        """``debian12-x86_64``: this distro's arch as lock, build and log paths name it."""
        return f"{self.name}-{arch.value}"

    @property
    def family_obj(self) -> Family:
        """The package family object (``giftbox.family``) for ``family``; a PackageError
        for a family giftbox cannot package."""
        return get_family(self.family)


def elf_machine(head: bytes) -> int | None:
    """e_machine from the first 20 bytes of a file, or None when they are not an ELF header
    (compare with ``Arch.elf_machine``)."""
    if len(head) < 20 or not head.startswith(b"\x7fELF"):
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def _level(value: Any, where: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise SpecError([SpecProblem(where, None, "compression_level",
                                 f"is {value!r}, not a whole number",
                                 "give the compression level as a number, or leave it out")])


def _load(path: Path) -> Distro:
    # The C loader when PyYAML has it: builder definitions are read on every command.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    where = f"builders/{path.parent.name}/builder.yaml"
    try:
        data = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError, *YAML_VALUE_ERRORS) as exc:
        raise SpecError([SpecProblem(where, None, "", f"not valid YAML: {str(exc)[:200]}",
                                     "fix the file, or restore giftbox's own")]) from None
    try:
        boot = data["bootstrap"]
        return Distro(
            name=data["name"], family=data["family"], distro=data["distro"],
            version=str(data["version"]), codename=str(data["codename"]),
            python=str(data["python"]), version_tag=data["version_tag"],
            compression=data.get("compression", "xz"),
            compression_level=_level(data.get("compression_level"), where),
            arches=tuple(Arch.parse(a) for a in data["arches"]),
            bootstrap=Bootstrap(method=boot["method"], mirror=boot.get("mirror"),
                                suite=boot.get("suite"),
                                components=tuple(boot.get("components", ["main"])),
                                keyring=boot.get("keyring"), image=boot.get("image")),
            build_packages=tuple(data.get("build_packages", ())),
            directory=path.parent,
            runnable_here=bool(data.get("runnable_here", True)),
            notes=data.get("notes", ""),
            raw=data,
        )
    except (KeyError, TypeError) as exc:
        raise SpecError([SpecProblem(where, None, str(exc), "missing or malformed field")]) \
            from None


def load_distros(builders_dir: Path) -> dict[str, Distro]:
    return {d.name: d for d in (_load(p) for p in sorted(builders_dir.glob("*/builder.yaml")))}


def get_distro(builders_dir: Path, name: str) -> Distro:
    return pick_distro(load_distros(builders_dir), name)


def pick_distro(distros: dict[str, Distro], name: str) -> Distro:
    """``name`` among ``distros`` (already loaded), or the error naming the known ones."""
    if name not in distros:
        close = difflib.get_close_matches(name, list(distros), n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + \
            "known: " + ", ".join(sorted(distros))
        raise BuilderError(f"unknown distro '{name}'", hint=hint)
    return distros[name]
