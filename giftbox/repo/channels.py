"""Channels as data: ``channels.yaml`` at the project root, loaded into frozen values.

A channel is a set of repositories published together under ``repos/<channel>/``: one apt
suite per deb codename and one yum repository per rpm distro and architecture, all signed by
the channel's key. What each distro is (family, codename, arches) comes from ``builders/``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from giftbox.distros import Arch, Distro, load_distros
from giftbox.errors import YAML_VALUE_ERRORS, BuilderError, RepoError
from giftbox.family import DEB, RPM, Family
from giftbox.repo.requirements import Allowance, parse_allow, parse_requires
from giftbox.settings import Settings
from giftbox.spec import TreeFileError, control_char_problem, read_tree_text, shown, yaml_depth_line

CHANNELS_FILE = "channels.yaml"
# Channel names become directory names and apt Suite values.
_CHANNEL_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
# What gpg is given as the key: a fingerprint or key id (hex), or an email matched exactly.
# Never something gpg could read as an option or a pattern matching every key.
_KEY_RE = re.compile(r"^((0x)?([0-9A-Fa-f]{16}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})"
                     r"|[A-Za-z0-9_+][A-Za-z0-9._+-]*@[A-Za-z0-9][A-Za-z0-9.-]*)$")
_FIELDS = ("description", "key", "key_file", "keep", "distros", "arches", "requires", "allow")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice (it keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    raise RepoError(f"{CHANNELS_FILE}:{line}: '{shown(key_node.value, 40)}' "
                                    f"appears twice in one mapping (first at line "
                                    f"{seen[key_node.value]})",
                                    hint="YAML would silently keep the last one; keep one")
                seen[key_node.value] = line
        return super().construct_mapping(node, deep)


@dataclass(frozen=True)
class AptTarget:
    """One apt suite of a channel: ``dists/<codename>/main/binary-<arch>``."""

    codename: str
    distro: str
    arches: tuple[str, ...]  # deb spelling, e.g. amd64, ppc64el


@dataclass(frozen=True)
class YumTarget:
    """One yum repository of a channel: ``yum/<distro>/<arch>``."""

    distro: str
    arch: str  # rpm spelling, e.g. x86_64

    @property
    def path(self) -> str:
        return f"{self.distro}/{self.arch}"


@dataclass(frozen=True)
class Channel:
    name: str
    key: str  # email (matched exactly) or fingerprint, in giftbox's GNUPGHOME
    keep: int
    distros: tuple[Distro, ...]
    description: str = ""
    key_file: Path | None = None
    # (name, family, version_tag) of every known distro, served or not: a package tagged for
    # a distro this channel does not serve is named as such rather than as "untagged".
    known_tags: tuple[tuple[str, str, str], ...] = ()
    # The checks (giftbox verify) an artifact must have passed to be promoted in, and the
    # advisories the vulns check allows here (giftbox/repo/requirements.py).
    requires: tuple[str, ...] = ()
    allowances: tuple[Allowance, ...] = ()

    def distro(self, name: str) -> Distro:
        for d in self.distros:
            if d.name == name:
                return d
        raise RepoError(f"channel '{self.name}' does not serve distro '{name}'",
                        hint="it serves " + ", ".join(d.name for d in self.distros)
                             + f"; add it under channels.{self.name}.distros in "
                             + CHANNELS_FILE)

    def distros_of(self, family: Family) -> tuple[Distro, ...]:
        """The served distros whose packages are of ``family``."""
        return _of(self.distros, family)

    @property
    def apt_targets(self) -> tuple[AptTarget, ...]:
        return tuple(AptTarget(d.codename, d.name, tuple(DEB.arch(a) for a in d.arches))
                     for d in self.distros_of(DEB))

    @property
    def yum_targets(self) -> tuple[YumTarget, ...]:
        return tuple(YumTarget(d.name, RPM.arch(a)) for d in self.distros_of(RPM)
                     for a in d.arches)


def _of(distros: Iterable[Distro], family: Family) -> tuple[Distro, ...]:
    # by name: a distro of a family giftbox cannot package is served by no writer
    return tuple(d for d in distros if d.family == family.name)


def channels_path(settings: Settings) -> Path:
    return settings.root / CHANNELS_FILE


def load_channels(settings: Settings) -> dict[str, Channel]:
    path = channels_path(settings)
    if not path.is_file():
        raise RepoError(f"no {CHANNELS_FILE} in {settings.root}",
                        hint="channels are configured there; see the one in giftbox's "
                             "repository for the format")
    try:
        text = read_tree_text(path, settings.root.resolve())
    except TreeFileError as exc:
        raise RepoError(f"{path}: {exc}") from None
    try:
        deep = yaml_depth_line(text)
        if deep is not None:
            raise RepoError(f"{path}:{deep}: nests lists or mappings too deeply",
                            hint="channels.yaml is a mapping of channels to a few fields")
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise RepoError(f"{path}: not valid YAML: {shown(str(exc), 300)}") from None
    except RecursionError:
        raise RepoError(f"{path}: nests too deeply to read") from None
    except YAML_VALUE_ERRORS as exc:
        # a value YAML resolves but Python cannot hold: a 5,000-digit number, 99:99:99 o'clock,
        # a tag its constructor cannot build (!!bool maybe)
        raise RepoError(f"{path}: a value cannot be read ({shown(str(exc), 120)})",
                        hint="quote it, or write a plain number or string") from None
    raw = data.get("channels") if isinstance(data, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise RepoError(f"{path}: expected a mapping 'channels:' of channel name to settings")
    distros = load_distros(settings.builders_dir)
    return {name: _channel(path, settings.root, str(name), body, distros)
            for name, body in raw.items()}


def _channel(path: Path, root: Path, name: str, body: Any,
             distros: dict[str, Distro]) -> Channel:
    where = f"{path.name}: channels.{shown(name, 40)}"
    if not _CHANNEL_RE.match(name):
        raise RepoError(f"{where}: a channel name is lower-case letters, digits and '-'")
    if not isinstance(body, dict):
        raise RepoError(f"{where}: expected a mapping with key, keep and distros")
    unknown = {shown(str(k), 40) for k in body if k not in _FIELDS}
    if unknown:
        raise RepoError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}",
                        hint="known: " + ", ".join(_FIELDS))
    for field_name in ("description", "key", "key_file"):
        value = body.get(field_name)
        if value is None:
            continue
        problem = (None if isinstance(value, str) else "expected a string") or \
            control_char_problem(value, allow_newlines=field_name == "description") or \
            (None if len(value) <= 1000 else "is longer than 1000 characters")
        if problem:
            raise RepoError(f"{where}.{field_name}: {problem}")
    key = body.get("key") or f"giftbox-{name}@giftbox.invalid"
    if not _KEY_RE.match(key):
        raise RepoError(f"{where}.key: '{shown(key, 60)}' is not a key fingerprint or an "
                        "email address",
                        hint="gpg would read a leading '-' as an option and a partial name "
                             "as a pattern; use the key's 40-hex fingerprint or its email")
    keep = body.get("keep", 5)
    if not isinstance(keep, int) or isinstance(keep, bool) or not 1 <= keep <= 100000:
        raise RepoError(f"{where}.keep: expected a whole number of versions, at least 1")
    names = body.get("distros")
    if (not isinstance(names, list) or not names
            or not all(isinstance(d, str) for d in names)):
        raise RepoError(f"{where}.distros: expected a list of distro names",
                        hint="known: " + ", ".join(sorted(distros)))
    if len(set(names)) != len(names):
        raise RepoError(f"{where}.distros: lists a distro twice")
    arches: tuple[Arch, ...] | None = None
    if body.get("arches") is not None:
        raw_arches = body["arches"]
        if (not isinstance(raw_arches, list) or not raw_arches
                or not all(isinstance(a, str) for a in raw_arches)):
            raise RepoError(f"{where}.arches: expected a non-empty list of architectures "
                            "(leave it out to serve every architecture of each distro)")
        try:
            arches = tuple(Arch.parse(a) for a in raw_arches)
        except BuilderError as exc:
            raise RepoError(f"{where}.arches: {exc.message}", hint=exc.hint) from None
    served: list[Distro] = []
    for d in names:
        if d not in distros:
            close = difflib.get_close_matches(str(d), list(distros), n=1)
            raise RepoError(f"{where}.distros: unknown distro '{shown(d, 40)}'",
                            hint=(f"did you mean '{close[0]}'? " if close else "")
                            + "known: " + ", ".join(sorted(distros)))
        distro = distros[d]
        if arches is not None:
            from dataclasses import replace

            distro = replace(distro, arches=tuple(a for a in distro.arches if a in arches))
        served.append(distro)
    codenames = [d.codename for d in _of(served, DEB)]
    if len(codenames) != len(set(codenames)):
        raise RepoError(f"{where}.distros: two deb distros share a codename")
    key_file = body.get("key_file")
    return Channel(name=name, key=str(key), keep=keep, distros=tuple(served),
                   description=str(body.get("description", "")),
                   key_file=(root / key_file) if key_file else None,
                   known_tags=tuple((d.name, d.family, d.version_tag)
                                    for d in distros.values()),
                   requires=parse_requires(where, body.get("requires")),
                   allowances=parse_allow(where, body.get("allow")))


def get_channel(settings: Settings, name: str) -> Channel:
    channels = load_channels(settings)
    if name not in channels:
        close = difflib.get_close_matches(name, list(channels), n=1)
        raise RepoError(f"unknown channel '{name}'",
                        hint=(f"did you mean '{close[0]}'? " if close else "")
                        + "known channels: " + ", ".join(channels)
                        + f" (defined in {channels_path(settings)})")
    return channels[name]
