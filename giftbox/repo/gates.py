"""Evidence gates: a channel that ``requires:`` checks takes only artifacts that passed them.

``channels.yaml`` names, per channel, the checks (``giftbox verify``) an artifact must have
passed before ``promote`` links it in, and the vulnerability advisories the ``vulns`` check may
allow there, each with its reason::

    stable:
      requires: [install, upgrade, migrate, vulns]
      allow:
        - advisory: GHSA-xxxx-xxxx-xxxx   # or PYSEC-…, CVE-…
          package: requests               # optional: only for this dependency
          reason: not reachable: we never pass user URLs to requests

The evidence is a verdict in the records (giftbox/records/verdicts.py) for the exact sha256 of the
artifact, its distro and its architecture; the latest verdict per check counts, so a check that
failed after it once passed blocks again. The gate is judged before the target's lock is taken
and before anything is linked: a refusal leaves every channel as it was. ``--force --reason``
moves the artifacts anyway and records, with the promotion, what evidence was missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from giftbox.errors import RepoError
from giftbox.repo.requirements import CHECKS, VERIFY_CHECKS, Allowance  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from giftbox.records import Records, Verdict
    from giftbox.repo.channels import Channel
    from giftbox.repo.publish import Entry
    from giftbox.settings import Settings

# --- judging ------------------------------------------------------------------------------


def _arch(entry_arch: str) -> str | None:
    """giftbox's name of a package's architecture; None for all/noarch (any arch counts)."""
    if entry_arch in ("all", "noarch"):
        return None
    from giftbox.distros import Arch

    return Arch.parse(entry_arch).value


@dataclass(frozen=True)
class Missing:
    """One check an artifact lacks for a channel: never run, or failed last time."""

    project: str
    filename: str
    digest: str
    distro: str
    arch: str
    check: str
    why: str  # "no verdict" | "failed <when>: <detail>"
    command: str  # what produces the verdict

    def line(self) -> str:
        return (f"{self.project} {self.distro}/{self.arch} {self.filename} "
                f"(sha256:{self.digest[:16]}): {self.check}: {self.why}; run: {self.command}")

    def as_dict(self) -> dict[str, str]:
        return {"project": self.project, "filename": self.filename, "digest": self.digest,
                "distro": self.distro, "arch": self.arch, "check": self.check,
                "why": self.why, "command": self.command}


def verdicts_for(db: Records, entry: Entry) -> dict[str, Verdict]:
    """The latest verdict per check on ``entry``'s exact bytes for its distro and arch."""
    arch = _arch(entry.arch)
    if arch is not None:
        return db.latest_verdicts(entry.digest, entry.distro, arch)
    latest: dict[str, Verdict] = {}
    for v in db.verdicts(entry.digest, distro=entry.distro):
        latest[v.check] = v
    return latest


def missing(db: Records, source: Channel, target: Channel,
            chosen: Mapping[str, Iterable[Entry]]) -> list[Missing]:
    """What ``target``'s gate lacks for each entry of ``chosen`` (project -> entries)."""
    out: list[Missing] = []
    if not target.requires:
        return out
    for project, entries in chosen.items():
        for e in entries:
            have = verdicts_for(db, e)
            arch = _arch(e.arch) or e.arch
            for check in target.requires:
                v = have.get(check)
                if v is not None and v.passed:
                    continue
                why = "no verdict" if v is None else \
                    f"failed {v.at}: {v.detail or 'see ' + str(v.log_path)}"
                # upgrade and migrate start from the target's version; vulns uses its allow:
                against = f" --against {target.name}" if check != "install" else ""
                command = (f"giftbox verify {project} --channel {source.name} --distro "
                           f"{e.distro} --arch {arch} --check {check}{against}")
                if check == "reproducible":
                    command = (f"giftbox rebuild --check channel:{source.name}/{project}/"
                               f"{e.distro}/{arch}")
                out.append(Missing(project, e.filename, e.digest, e.distro, arch, check, why,
                                   command))
    return out


def enforce(settings: Settings, source: Channel, target: Channel,
            chosen: Mapping[str, Iterable[Entry]], *, force: bool = False,
            reason: str = "") -> str:
    """Refuse (RepoError) a promotion into ``target`` lacking required evidence; with
    ``force`` (and a reason) let it through and return what was missing, to be recorded."""
    from giftbox.records import open_records

    if force and not reason.strip():
        raise RepoError("--force needs --reason: a promotion past a gate is recorded with why",
                        hint='e.g. --force --reason "hotfix for CVE-…, verified by hand"')
    if not target.requires:
        return ""
    chosen = {p: list(es) for p, es in chosen.items()}
    with open_records(settings) as db:
        lacking = missing(db, source, target, chosen)
    if not lacking:
        return ""
    if force:
        return "; ".join(m.line() for m in lacking)
    shown = lacking[:12]
    more = f"\n  … and {len(lacking) - len(shown)} more" if len(lacking) > len(shown) else ""
    raise GateRefused(
        f"'{target.name}' requires {', '.join(target.requires)}; refused, nothing moved:\n"
        + "\n".join("  " + m.line() for m in shown) + more,
        lacking,
        hint="run the checks named (their verdicts are recorded for the exact sha256), or "
             "override with --force --reason \"…\" (recorded with the promotion)")


class GateRefused(RepoError):
    """A promotion refused by a channel's gate; ``missing`` says what evidence lacks."""

    def __init__(self, message: str, lacking: list[Missing], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.missing = lacking


# --- releases -----------------------------------------------------------------------------


def spec_release(settings: Settings, project: str) -> str | None:
    """``release:`` of specs/<project>.yaml, read with plain YAML (as promote reads specs)."""
    from giftbox.spec import raw_spec

    value = (raw_spec(settings.root, project) or {}).get("release")
    return str(value) if value is not None else None


def release_projects(settings: Settings, projects: Iterable[str], release: str) -> list[str]:
    """Which of ``projects`` belong to ``release`` (by their spec's ``release:``)."""
    return sorted(p for p in set(projects) if spec_release(settings, p) == release)


__all__ = ["CHECKS", "Allowance", "GateRefused", "Missing", "enforce", "missing",
           "release_projects", "spec_release", "verdicts_for"]


# --- showing ------------------------------------------------------------------------------


def entry_verdicts(settings: Settings, entries: Iterable[Entry]) -> dict[str, dict[str, Any]]:
    """filename -> check -> the latest verdict (as a dict) on that entry's exact bytes; for
    ``channel show`` and the report. Empty when the records cannot be opened."""
    from giftbox.errors import StateError
    from giftbox.records import open_records

    out: dict[str, dict[str, Any]] = {}
    try:
        with open_records(settings) as db:
            for e in entries:
                out[e.filename] = {c: v.as_dict() for c, v in verdicts_for(db, e).items()}
    except StateError:
        return {}
    return out


def verdict_cell(verdicts: Mapping[str, Any], requires: Iterable[str] = ()) -> str:
    """``install:pass upgrade:FAIL migrate:- …``: every required check, then any other."""
    checks = list(dict.fromkeys([*requires, *[c for c in CHECKS if c in verdicts]]))
    if not checks:
        return "-"
    parts = []
    for c in checks:
        v = verdicts.get(c)
        parts.append(f"{c}:" + ("-" if v is None else "pass" if v["passed"] else "FAIL"))
    return " ".join(parts)


# --- releases as a whole (giftbox status) -------------------------------------------------


@dataclass(frozen=True)
class ReleaseState:
    """Whether ``channel`` holds every project of ``release`` for every target, verified."""

    release: str
    channel: str
    projects: tuple[str, ...]
    checks: tuple[str, ...]  # the evidence asked for
    blockers: tuple[str, ...]  # "keystone debian12/x86_64: not in staging", …

    @property
    def consistent(self) -> bool:
        return not self.blockers

    def as_dict(self) -> dict[str, Any]:
        return {"release": self.release, "channel": self.channel,
                "projects": list(self.projects), "checks": list(self.checks),
                "consistent": self.consistent, "blockers": list(self.blockers)}


def release_states(settings: Settings) -> list[ReleaseState]:
    """Per release (the specs' release:) and per channel holding any of its projects: is every
    project there for every target of its matrix the channel serves, with passing verdicts for
    every check a channel's gate requires (all four when no channel has a gate)?"""
    from giftbox.errors import GiftboxError
    from giftbox.records import open_records
    from giftbox.repo.channels import load_channels
    from giftbox.repo.publish import channel_state
    from giftbox.repo.selection import highest, package_names

    channels = load_channels(settings)
    checks = tuple(c for c in CHECKS if any(c in ch.requires for ch in channels.values())) \
        or CHECKS
    releases: dict[str, list[str]] = {}
    matrix: dict[str, tuple[list[str], list[str]]] = {}
    from giftbox.spec import raw_spec

    for path in sorted(settings.specs_dir.glob("*.yaml")):
        project = path.stem
        data = raw_spec(settings.root, project)
        rel = spec_release(settings, project)
        if data is None or rel is None:
            continue
        m = data.get("matrix")
        if not isinstance(m, dict):
            m = {}
        distros, arches = m.get("distros"), m.get("arches")
        matrix[project] = ([str(d) for d in distros] if isinstance(distros, list) else [],
                           [str(a) for a in arches] if isinstance(arches, list) else [])
        releases.setdefault(rel, []).append(project)
    out: list[ReleaseState] = []
    with open_records(settings) as db:
        for rel, projects in sorted(releases.items()):
            for name, ch in channels.items():
                try:
                    entries = list(channel_state(settings, name).entries.values())
                except GiftboxError:
                    continue
                names = {p: package_names(settings, p) for p in projects}
                if not any(e.name in ns for e in entries for ns in names.values()):
                    continue
                blockers: list[str] = []
                for p in sorted(projects):
                    distros, arches = matrix.get(p, ([], []))
                    for d in distros:
                        served = next((x for x in ch.distros if x.name == d), None)
                        if served is None:
                            continue
                        for a in arches:
                            if a not in {x.value for x in served.arches}:
                                continue
                            held = [e for e in entries if e.name in names[p] and
                                    e.distro == d and (_arch(e.arch) in (a, None))]
                            if not held:
                                blockers.append(f"{p} {d}/{a}: not in {name}")
                                continue
                            best = highest(held)[0]
                            have = verdicts_for(db, best)
                            lacking = [c for c in checks if not (c in have and have[c].passed)]
                            if lacking:
                                blockers.append(f"{p} {d}/{a} {best.version}: "
                                                + ", ".join(f"{c}: " + (
                                                    "no verdict" if c not in have else "failed")
                                                    for c in lacking))
                out.append(ReleaseState(rel, name, tuple(sorted(projects)), checks,
                                        tuple(blockers)))
    return out
