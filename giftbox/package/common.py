"""What the packagers share: dependencies, descriptions, compression, the data files."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from giftbox.errors import PackageError
from giftbox.family import get_family
from giftbox.package.layout import Staged
from giftbox.package.runner import Runner

COMPRESSORS = ("zstd", "xz", "gzip")
# The tools' own defaults (dpkg-deb's), used for rpm too so both families match.
DEFAULT_LEVELS = {"zstd": 3, "xz": 6, "gzip": 9}
LEVEL_RANGES = {"zstd": range(1, 20), "xz": range(0, 10), "gzip": range(1, 10)}
DEFAULT_MAINTAINER = "giftbox <giftbox@packages.invalid>"
_DEP_SPLIT_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+._()-]*?)\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\)"
                           r"|([<>=]+)\s*(\S+))?$")


@dataclass(frozen=True)
class Compression:
    kind: str  # zstd | xz | gzip
    level: int
    # Fixed at >= 2 so xz and zstd always take their multi-threaded code path: its output is
    # the same for any thread count, but differs from the single-threaded encoder's, and a
    # one-CPU machine must build the same bytes as a 64-CPU one (invariant 1).
    threads: int


def compression_for(distro_default: str, kind: str | None, level: int | None,
                    distro_level: int | None = None) -> Compression:
    """The compression asked for (``kind``, ``level``), else the distro's (its kind, and
    its level when it gives one for that kind), else the tool's default level."""
    if level is None and kind in (None, distro_default):
        level = distro_level
    kind = kind or distro_default
    if kind not in COMPRESSORS:
        raise PackageError(f"unknown compression '{kind}'", hint="use one of "
                           + ", ".join(COMPRESSORS))
    level = DEFAULT_LEVELS[kind] if level is None else level
    if level not in LEVEL_RANGES[kind]:
        r = LEVEL_RANGES[kind]
        raise PackageError(f"compression level {level} is out of range for {kind} "
                           f"({r.start}..{r.stop - 1})")
    return Compression(kind, level, max(2, os.cpu_count() or 1))


def split_dep(dep: str) -> tuple[str, str | None, str | None]:
    match = _DEP_SPLIT_RE.match(dep.strip())
    if not match:
        raise PackageError(f"'{dep}' is not a dependency giftbox can read")
    name, op, ver = match.group(1), match.group(2) or match.group(4), match.group(3) or \
        match.group(5)
    return name, op, ver


def dep_for(dep: str, family: str) -> str:
    """A spec dependency in the family's syntax: ``name (>= v)`` (deb), ``name >= v`` (rpm)."""
    return get_family(family).dependency(*split_dep(dep))


def spec_depends(staged: Staged) -> list[str]:
    """Runtime dependencies named by the spec: distro bindings, package.depends, sudo for
    rootwrap; in the family's syntax, without duplicates, in a stable order."""
    fam = staged.family
    package = staged.spec.package
    deps = [b.packages[fam] for b in package.system_bindings if fam in b.packages]
    deps += list(package.depends.get(fam, ()))
    if package.rootwrap:
        deps.append("sudo")
    return list(dict.fromkeys(dep_for(d, fam) for d in deps))


def interpreter_depends(staged: Staged) -> list[str]:
    """The exact interpreter minor the venv runs on, plus what owns the interpreter path the
    venv links to when that is not the minor-versioned one."""
    return staged.family_obj.interpreter_depends(staged.distro.python, staged.interpreter_links)


def provenance_lines(staged: Staged) -> list[str]:
    m = staged.manifest
    lines = [f"Upstream: {m.upstream_url} ({m.upstream_kind} {m.upstream_ref}, "
             f"version {m.upstream_version})"]
    if m.upstream_commit:
        lines.append(f"Upstream commit: {m.upstream_commit}")
    if m.patches:
        lines.append(f"Patches ({len(m.patches)}, digest {m.patch_digest[:16]}):")
        lines += [f"  {p.name} sha256:{p.sha256[:16]}" for p in m.patches]
    else:
        lines.append("Patches: none")
    lines.append(f"Lock digest: {m.lock_digest}")
    lines.append(f"Builder image: {m.builder_image}")
    lines.append(f"Venv: {staged.prefix} (manifest: {staged.prefix}/giftbox-manifest.json)")
    lines.append(f"Built by giftbox {m.giftbox_version}")
    return lines


def synopsis(staged: Staged) -> str:
    """One line, under 80 characters, no trailing full stop (lintian's rules; rpm's too)."""
    first = staged.summary.strip().splitlines()[0].strip() if staged.summary.strip() else ""
    first = first.rstrip(".")
    if len(first) > 75:
        first = textwrap.shorten(first, 75, placeholder="...")
    return first or f"OpenStack {staged.spec.name}"


def long_description(staged: Staged, width: int = 78) -> list[str]:
    """Paragraphs (lists of lines, each ≤ width) for the extended description; "" separates
    paragraphs."""
    out: list[str] = []
    text = staged.summary.strip()
    rest = text.splitlines()[1:] if text else []
    body = " ".join(line.strip() for line in rest).strip()
    if body:
        out += textwrap.wrap(body, width)
        out.append("")
    out += textwrap.wrap(f"The {staged.spec.name} virtualenv, installed at {staged.prefix}, "
                         f"with its entry points linked into /usr/bin.", width)
    out.append("")
    for line in provenance_lines(staged):
        # leading spaces of a line survive wrap(); continuation lines indent further
        out += textwrap.wrap(line, width, subsequent_indent="    ", break_long_words=False,
                             break_on_hyphens=False) or [""]
    return out


def data_text(name: str) -> str:
    return resources.files("giftbox").joinpath("data", name).read_text()


def check_known(runner: Runner, deps: list[str], staged: Staged) -> None:
    """Every runtime dependency must exist in the target's archive; name the first that do
    not, and the distro. deb: ``apt-cache`` through the runner; rpm: ``dnf repoquery`` (only
    where the runner is a container: an rpm host is not a target here)."""
    names = list(dict.fromkeys(split_dep(d)[0] for d in deps if not d.startswith("/")))
    names = [n for n in names if not n.startswith("python(abi)")]
    unknown = _UNKNOWN_TO[staged.family_obj.name](runner, names, staged)
    if unknown:
        raise PackageError(
            f"{staged.distro.name} does not know the runtime dependenc"
            f"{'y' if len(unknown) == 1 else 'ies'} " + ", ".join(f"'{u}'" for u in unknown)
            + f" of {staged.name} (checked on the {runner.where})",
            hint=f"fix package.depends.{staged.family} or system_bindings in "
                 f"specs/{staged.spec.path.name}, or drop {staged.distro.name} from its matrix")


def _unknown_to_apt(runner: Runner, names: list[str], staged: Staged) -> list[str]:
    policy = runner.run(["apt-cache", "policy"])
    if " Packages" not in policy.output and "Packages" not in policy.errors:
        raise PackageError(
            f"apt on the {runner.where} has no package lists, so the dependencies of "
            f"{staged.name} cannot be checked against {staged.distro.name}",
            hint="run `apt-get update` there first")
    unknown: list[str] = []
    for name in names:
        result = runner.run(["apt-cache", "show", "--no-all-versions", name])
        if result.returncode == 0 and result.output.strip():
            continue
        virtual = runner.run(["apt-cache", "showpkg", name])
        provided = virtual.output.split("Reverse Provides:", 1)
        if len(provided) == 2 and provided[1].strip():
            continue  # a virtual package some real package provides
        unknown.append(name)
    return unknown


def _unknown_to_dnf(runner: Runner, names: list[str], staged: Staged) -> list[str]:
    if runner.where == "host":
        return []
    unknown: list[str] = []
    for name in names:
        result = runner.run(["dnf", "-q", "repoquery", "--whatprovides", name])
        if result.returncode != 0 or not result.output.strip():
            unknown.append(name)
    return unknown


# family -> which of the names its archive (apt's or dnf's) does not know
_UNKNOWN_TO: dict[str, Callable[[Runner, list[str], Staged], list[str]]] = {
    "deb": _unknown_to_apt, "rpm": _unknown_to_dnf}


def declared_depends(staged: Staged, runner: Runner, check_deps: bool) -> list[str]:
    """The interpreter and the spec's runtime packages, each checked to exist in the
    target's archive (through ``runner``) unless ``check_deps`` is off."""
    declared = interpreter_depends(staged) + spec_depends(staged)
    if check_deps:
        check_known(runner, declared, staged)
    return declared
