"""Which artifacts a promotion takes: projects, their package names, and the entries of a
channel that match a PROJECT, ``--version``, ``--distro`` and ``--arch``.

By default, for each of the project's packages, the highest version per distro and arch present
in the source channel, in dpkg's or rpm's order (``vercmp``). A ``--version`` may name the full
version, the version without epoch or distro tag, or the upstream version alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from giftbox.distros import Arch
from giftbox.errors import BuilderError, RepoError
from giftbox.repo.channels import Channel
from giftbox.repo.state import ChannelState, Entry, scope_key
from giftbox.settings import Settings

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]{0,99}$")
DEFAULT_PREFIX = "giftbox-"  # spec.package.name defaults to giftbox-<project>


# --- projects and packages ----------------------------------------------------------------


def check_name(what: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise RepoError(f"'{name}' is not a {what} name",
                        hint="lower-case letters, digits, '.', '+', '_' and '-'")
    return name


def _spec_package(settings: Settings, project: str) -> str | None:
    """``package.name`` of specs/<project>.yaml (its default when unset), None without a spec.

    Read with plain YAML rather than the spec validator: promotion must work for a project
    whose spec has since changed or been removed.
    """
    from giftbox.spec import raw_spec

    if not (settings.specs_dir / f"{project}.yaml").is_file():
        return None
    data = raw_spec(settings.root, project) or {}
    package = data.get("package")
    name = package.get("name") if isinstance(package, dict) else None
    return str(name) if name else f"{DEFAULT_PREFIX}{project}"


def project_of(settings: Settings, name: str) -> str:
    """The project a PROJECT argument or a package name stands for (how it is recorded)."""
    check_name("project", name)
    if (settings.specs_dir / f"{name}.yaml").is_file():
        return name
    if name.startswith(DEFAULT_PREFIX) and len(name) > len(DEFAULT_PREFIX):
        return name[len(DEFAULT_PREFIX):]
    return name


def package_names(settings: Settings, project: str) -> set[str]:
    """The package names a project ships as: its spec's package.name, else giftbox-<project>;
    the bare name too, so a package can be named directly."""
    project = project_of(settings, project)
    return {project, _spec_package(settings, project) or f"{DEFAULT_PREFIX}{project}"}


# --- which entries ------------------------------------------------------------------------


def _strip_tag(ch: Channel, e: Entry) -> str:
    """The version without the distro tag: ``1.0-1~deb12`` -> ``1.0-1``."""
    for name, _family, tag in ch.known_tags:
        if name == e.distro:
            for sep in ("~", "."):
                if e.version.endswith(sep + tag):
                    return e.version[: -len(sep + tag)]
    return e.version


def _upstream(e: Entry) -> str:
    plain = e.version.split(":", 1)[-1]
    return plain.rpartition("-")[0] or plain


def _version_matches(ch: Channel, e: Entry, wanted: str) -> bool:
    """``--version`` may name the full version, without epoch, without the distro tag (one
    value for every distro), or the upstream version alone (its highest revision wins)."""
    return wanted in (e.version, e.version.split(":", 1)[-1], _strip_tag(ch, e),
                      _strip_tag(ch, e).split(":", 1)[-1], _upstream(e))


def _arch_names(arch: str) -> set[str]:
    try:
        a = Arch.parse(arch)
    except BuilderError as exc:
        raise RepoError(exc.message, hint=exc.hint) from None
    return {a.deb, a.rpm, "all", "noarch"}


def highest(entries: Iterable[Entry]) -> list[Entry]:
    """The highest version per (name, distro, arch)."""
    best: dict[tuple[str, str, str], Entry] = {}
    for e in entries:
        held = best.get(scope_key(e))
        if held is None or e.family.compare(e.version, held.version) > 0:
            best[scope_key(e)] = e
    return [best[k] for k in sorted(best)]


def versions_listing(entries: Iterable[Entry]) -> str:
    by_target: dict[str, list[Entry]] = {}
    for e in entries:
        by_target.setdefault(f"{e.name} {e.distro}/{e.arch}", []).append(e)
    parts = []
    for target in sorted(by_target):
        es = by_target[target]
        versions = sorted({e.version for e in es}, key=es[0].family.sort_key())
        parts.append(f"{target}: {', '.join(versions)}")
    return "; ".join(parts)


def select(settings: Settings, source: Channel, state: ChannelState, project: str, *,
           version: str | None = None, distro: str | None = None,
           arch: str | None = None) -> list[Entry]:
    """The exact entries of ``project`` to promote out of ``state``."""
    names = package_names(settings, project)
    ours = [e for e in state.entries.values() if e.name in names]
    if not ours:
        held = sorted({e.name for e in state.entries.values()})
        raise RepoError(
            f"channel '{source.name}' has no package of project '{project}' "
            f"(looked for {', '.join(sorted(names))})",
            hint=("it holds: " + ", ".join(held)) if held else "it is empty")
    if distro is not None:
        source.distro(distro)  # an unknown distro: RepoError naming the served ones
        picked = [e for e in ours if e.distro == distro]
        if not picked:
            raise RepoError(f"channel '{source.name}' has no {project} for {distro}",
                            hint="it has: " + versions_listing(ours))
        ours = picked
    if arch is not None:
        spellings = _arch_names(arch)
        picked = [e for e in ours if e.arch in spellings]
        if not picked:
            raise RepoError(f"channel '{source.name}' has no {project} for {arch}",
                            hint="it has: " + versions_listing(ours))
        ours = picked
    if version is not None:
        picked = [e for e in ours if _version_matches(source, e, version)]
        if not picked:
            raise RepoError(f"channel '{source.name}' does not have {project} version "
                            f"{version}", hint="it has: " + versions_listing(ours))
        ours = picked
    return highest(ours)
