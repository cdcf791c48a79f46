"""What a channel demands of an artifact, as ``channels.yaml`` says it: the checks it
``requires:`` and the vulnerability advisories it ``allow:``s, each with its reason.

Parsed here, with the channel's configuration (giftbox/repo/channels.py); judged by the gates
(giftbox/repo/gates.py) against the verdicts in the records.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from giftbox.errors import RepoError

VERIFY_CHECKS = ("install", "upgrade", "migrate", "vulns")  # what giftbox verify runs
CHECKS = (*VERIFY_CHECKS, "reproducible")  # the last: giftbox rebuild --check records it


@dataclass(frozen=True)
class Allowance:
    """A known vulnerability the ``vulns`` check accepts in one channel, and why."""

    advisory: str  # an advisory id or alias (GHSA-…, PYSEC-…, CVE-…)
    reason: str
    package: str | None = None  # only in this dependency (any when None)

    def covers(self, advisory_ids: Iterable[str], package: str) -> bool:
        if self.package is not None and self.package.lower() != package.lower():
            return False
        return self.advisory.upper() in {a.upper() for a in advisory_ids}


def parse_requires(where: str, value: Any) -> tuple[str, ...]:
    """``channels.<name>.requires``: a list of known checks."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise RepoError(f"{where}.requires: expected a list of checks",
                        hint="known checks: " + ", ".join(CHECKS))
    for check in value:
        if check not in CHECKS:
            close = difflib.get_close_matches(check, CHECKS, n=1)
            raise RepoError(f"{where}.requires: unknown check '{check}'",
                            hint=(f"did you mean '{close[0]}'? " if close else "")
                            + "known checks: " + ", ".join(CHECKS))
    return tuple(dict.fromkeys(value))


def parse_allow(where: str, value: Any) -> tuple[Allowance, ...]:
    """``channels.<name>.allow``: advisories the vulns check accepts, each with a reason."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RepoError(f"{where}.allow: expected a list of {{advisory, reason}} entries")
    out = []
    for i, item in enumerate(value):
        at = f"{where}.allow[{i}]"
        if not isinstance(item, dict):
            raise RepoError(f"{at}: expected a mapping with advisory and reason")
        unknown = set(item) - {"advisory", "reason", "package"}
        if unknown:
            raise RepoError(f"{at}: unknown field(s) {', '.join(sorted(map(str, unknown)))}",
                            hint="known: advisory, reason, package")
        advisory = item.get("advisory")
        if not isinstance(advisory, str) or not advisory.strip():
            raise RepoError(f"{at}.advisory: name the advisory (GHSA-…, PYSEC-…, CVE-…)")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise RepoError(f"{at}: the allowance of {advisory} has no reason",
                            hint="say why the advisory does not apply here (reason: …); an "
                                 "allowance without one is refused")
        package = item.get("package")
        if package is not None and not isinstance(package, str):
            raise RepoError(f"{at}.package: expected a dependency name")
        out.append(Allowance(advisory.strip(), reason.strip(), package))
    return tuple(out)
