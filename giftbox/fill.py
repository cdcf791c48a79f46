"""Filling a target's wheelhouse from its lock, inside the target's builder.

The wheelhouse (``giftbox.wheelhouse``: one per release, distro, arch and Python) gets the
wheels the lock pins and it lacks: downloaded with their hashes checked, or built once from
their sdists (whatever the project: keystone reuses what nova built). Before anything
compiles, the sdists this builder cannot build (a Rust sdist whose crates are out of reach,
headers it lacks) are named, so a failure is a list of what to bring, not an hour-late
compiler error. A parallel fill of the same wheelhouse waits for this one under its lock.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from giftbox import lock
from giftbox import wheelhouse as wheelhouses
from giftbox.container import CommandFailed, Container
from giftbox.errors import BuildError
from giftbox.lock import BUILD_DIR, TOOLS, WHEELHOUSE_DIR
from giftbox.settings import Settings
from giftbox.ui import Reporter

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def present_wheels(wheelhouse: Path) -> set[tuple[str, str]]:
    """(canonical name, normalised version) of every wheel in ``wheelhouse``."""
    found: set[tuple[str, str]] = set()
    for wheel in wheelhouse.glob("*.whl"):
        match = _WHEEL_RE.match(wheel.name)
        if match:
            try:
                version = str(Version(match.group("version")))
            except InvalidVersion:
                continue
            found.add((canonicalize_name(match.group("name")), version))
    return found


def failed_package(output: str) -> str | None:
    """The requirement pip names as the one that failed, if it names one."""
    for pattern in (r"Failed building wheel for (\S+)", r"Failed to build (\S+)",
                    r"No matching distribution found for (\S+)",
                    r"Could not find a version that satisfies the requirement (\S+)",
                    r"THESE PACKAGES DO NOT MATCH THE HASHES[\s\S]*?\n\s+(\S+)"):
        match = re.search(pattern, output)
        if match:
            return match.group(1)
    return None


@dataclass
class WheelhouseFill:
    """One fill of ``target``'s wheelhouse, in the builder ``c`` (which mounts it at
    ``WHEELHOUSE_DIR`` and the build's work directory at ``BUILD_DIR``)."""

    c: Container
    target: wheelhouses.Target
    settings: Settings
    reporter: Reporter
    log_path: Path

    @property
    def wheelhouse(self) -> Path:
        return wheelhouses.directory(self.settings, self.target)

    def run(self, lock_text: str, work: Path) -> None:
        # Under the wheelhouse's lock: a parallel build of the same target waits, then finds
        # the wheels this one built (each wheel is built once per release and target).
        with wheelhouses.filling(self.wheelhouse):
            self._fill(lock_text, work)

    def _fill(self, lock_text: str, work: Path) -> None:
        distro, arch, log_path = self.target.distro, self.target.arch, self.log_path
        pinned = lock.pins(lock_text)
        present = present_wheels(self.wheelhouse)
        missing = [p for p in pinned if (p.name, str(Version(p.version))) not in present]
        self.reporter.detail(f"{len(pinned) - len(missing)} of {len(pinned)} wheels cached, "
                             f"{len(missing)} to fetch or build")
        if not missing:
            return
        blocks = lock.blocks(lock_text)
        problems = self._preflight(missing, blocks)
        buildable = [p for p in missing if p.line not in problems]
        failure: str | None = None
        if buildable:
            (work / "fill.txt").write_text("".join(blocks[p.name] for p in buildable))
            failure = self._download_or_build()
        if problems:
            listed = "\n".join(f"  {pin}: {why}" for pin, why in sorted(problems.items()))
            raise BuildError(
                f"{len(problems)} locked requirement(s) have no wheel for "
                f"{distro.name}/{arch.value} and this builder cannot build them "
                f"(named before compiling; the other {len(buildable)} were filled"
                + (", with failures" if failure else "") + f"):\n{listed}"
                + (f"\n{failure}" if failure else ""),
                hint="fill the wheelhouse from a machine that can build them (a native "
                     f"{arch.value} runner: `giftbox wheelhouse export`, then `giftbox "
                     "wheelhouse import` here; see docs/nightly.md), or give the builder what "
                     f"it lacks. Full log: {log_path}")
        if failure:
            raise BuildError(failure, hint=f"full log: {log_path}")

    def _download_or_build(self) -> str | None:
        """``pip wheel`` over ``BUILD_DIR/fill.txt``, hashes required; what failed, if any."""
        argv = [f"{TOOLS}/pip", "wheel", "--require-hashes", "--no-deps", "--progress-bar",
                "off", "-r", f"{BUILD_DIR}/fill.txt", "--wheel-dir", WHEELHOUSE_DIR]
        try:
            self.c.call(argv, log_path=self.log_path)
        except CommandFailed as exc:
            failed = re.findall(r"^(?:ERROR: )?Failed to build (?:installable wheels for "
                                r"some pyproject\.toml based projects \()?(.+?)\)?$",
                                exc.output, re.M)
            names = failed[-1].replace(",", " ").split() if failed else \
                [n for n in [failed_package(exc.output)] if n]
            why = wheelhouses.diagnose(exc.output)
            return ("filling the wheelhouse failed"
                    + (f" ({', '.join(names)})" if names else "")
                    + (f": {why}" if why else "") + ":\n"
                    + "\n".join(exc.output.splitlines()[-15:]))
        return None

    def _preflight(self, missing: list[lock.Pin], blocks: dict[str, str]) -> dict[str, str]:
        """pin line -> why the builder cannot build it, before anything is compiled."""
        target = self.target
        wanted = {p.name: (p.version, set(re.findall(r"sha256:([0-9a-f]{64})", blocks[p.name])))
                  for p in missing}
        builds = wheelhouses.sdist_builds(self.settings, target, wanted)
        if not builds:
            return {}
        self.reporter.detail(f"built from sdist for {target.distro.name}/{target.arch.value}: "
                             + ", ".join(b.pin for b in builds))
        probe_run = self.c.call(["python3", "-c", wheelhouses.PROBE], check=False,
                                stream=False, log_path=self.log_path)
        try:
            probe = json.loads(probe_run.output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}
        problems = wheelhouses.toolchain_problems(builds, probe, target)
        for pin, why in sorted(problems.items()):
            self.reporter.info(f"==> cannot build {pin}: {why}")
        return problems
