"""Channels as data: ``channels.yaml`` at the project root, loaded into frozen values.

A channel is a set of repositories published together under ``repos/<channel>/``: one apt
suite per deb codename and one yum repository per rpm distro and architecture, all signed by
the channel's key. What each distro is (family, codename, arches) comes from ``builders/``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from giftbox.distros import Arch, Distro, load_distros
from giftbox.errors import BuilderError, RepoError
from giftbox.repo.gates import Allowance, parse_allow, parse_requires
from giftbox.settings import Settings

CHANNELS_FILE = "channels.yaml"
# Channel names become directory names and apt Suite values.
_CHANNEL_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


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
    # advisories the vulns check allows here (giftbox/repo/gates.py).
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

    @property
    def apt_targets(self) -> tuple[AptTarget, ...]:
        return tuple(AptTarget(d.codename, d.name, tuple(a.deb for a in d.arches))
                     for d in self.distros if d.family == "deb")

    @property
    def yum_targets(self) -> tuple[YumTarget, ...]:
        return tuple(YumTarget(d.name, a.rpm) for d in self.distros if d.family == "rpm"
                     for a in d.arches)


def channels_path(settings: Settings) -> Path:
    return settings.root / CHANNELS_FILE


def load_channels(settings: Settings) -> dict[str, Channel]:
    path = channels_path(settings)
    if not path.is_file():
        raise RepoError(f"no {CHANNELS_FILE} in {settings.root}",
                        hint="channels are configured there; see the one in giftbox's "
                             "repository for the format")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RepoError(f"{path}: not valid YAML: {exc}") from None
    raw = data.get("channels") if isinstance(data, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise RepoError(f"{path}: expected a mapping 'channels:' of channel name to settings")
    distros = load_distros(settings.builders_dir)
    return {name: _channel(path, settings.root, str(name), body, distros)
            for name, body in raw.items()}


def _channel(path: Path, root: Path, name: str, body: Any,
             distros: dict[str, Distro]) -> Channel:
    where = f"{path.name}: channels.{name}"
    if not _CHANNEL_RE.match(name):
        raise RepoError(f"{where}: a channel name is lower-case letters, digits and '-'")
    if not isinstance(body, dict):
        raise RepoError(f"{where}: expected a mapping with key, keep and distros")
    unknown = set(body) - {"description", "key", "key_file", "keep", "distros", "arches",
                           "requires", "allow"}
    if unknown:
        raise RepoError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}",
                        hint="known: description, key, key_file, keep, distros, arches, "
                             "requires, allow")
    key = body.get("key") or f"giftbox-{name}@giftbox.invalid"
    keep = body.get("keep", 5)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise RepoError(f"{where}.keep: expected a whole number of versions, at least 1")
    names = body.get("distros")
    if not isinstance(names, list) or not names:
        raise RepoError(f"{where}.distros: expected a list of distro names",
                        hint="known: " + ", ".join(sorted(distros)))
    arches: tuple[Arch, ...] | None = None
    if body.get("arches") is not None:
        try:
            arches = tuple(Arch.parse(str(a)) for a in body["arches"])
        except BuilderError as exc:
            raise RepoError(f"{where}.arches: {exc.message}", hint=exc.hint) from None
    served: list[Distro] = []
    for d in names:
        if d not in distros:
            close = difflib.get_close_matches(str(d), list(distros), n=1)
            raise RepoError(f"{where}.distros: unknown distro '{d}'",
                            hint=(f"did you mean '{close[0]}'? " if close else "")
                            + "known: " + ", ".join(sorted(distros)))
        distro = distros[d]
        if arches is not None:
            from dataclasses import replace

            distro = replace(distro, arches=tuple(a for a in distro.arches if a in arches))
        served.append(distro)
    codenames = [d.codename for d in served if d.family == "deb"]
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
