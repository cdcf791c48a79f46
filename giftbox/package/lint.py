"""Quality gates: lintian on every .deb, rpmlint on every .rpm.

Errors fail the build with the tags shown. Tags we accept on purpose are overridden in the repo
with the reason beside each: ``giftbox/data/lintian-overrides`` (shipped in the package as
/usr/share/lintian/overrides/<package>, where lintian reads it) and ``giftbox/data/rpmlintrc``
(passed to rpmlint with ``-r``). Warnings that remain are returned and shown, not fatal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from plumbum import local
from plumbum.commands.processes import CommandNotFound

from giftbox.errors import PackageError
from giftbox.package.common import data_text
from giftbox.ui import Reporter


def _tool(name: str, package: str):  # type: ignore[no-untyped-def]
    try:
        return local[name]
    except CommandNotFound:
        raise PackageError(f"'{name}' is not installed, and every package must pass it",
                           hint=f"install {package} (apt-get install {package})") from None


def lintian(deb: Path, reporter: Reporter) -> tuple[str, ...]:
    """Run lintian; raise on E: tags, return the W: lines."""
    cmd = _tool("lintian", "lintian")
    # --allow-root: packaging runs as root in builders and CI; lintian only reads the file.
    code, out, err = cmd["--allow-root", "--tag-display-limit", "0", "--fail-on", "error",
                         str(deb)].run(retcode=None)
    lines = [line for line in out.splitlines() if line[:2] in ("E:", "W:")]
    errors = [line for line in lines if line.startswith("E:")]
    if errors or code not in (0, 1):
        detail = "\n".join(errors) or (err.strip() or out.strip())
        raise PackageError(f"lintian rejected {deb.name}:\n{detail}",
                           hint="fix the package, or accept the tag in "
                                "giftbox/data/lintian-overrides with the reason beside it")
    for line in lines:
        reporter.detail(line)
    return tuple(lines)


def rpmlint(rpm: Path, reporter: Reporter) -> tuple[str, ...]:
    """Run rpmlint with our rpmlintrc; raise on E: lines, return the W: lines."""
    cmd = _tool("rpmlint", "rpmlint")
    with tempfile.TemporaryDirectory(prefix="giftbox-rpmlint-") as tmp:
        rc = Path(tmp) / "rpmlintrc"
        rc.write_text(data_text("rpmlintrc"))
        # HOME points at an empty dir so a user's ~/.config/rpmlint cannot change the verdict.
        code, out, err = cmd["-r", str(rc), str(rpm)].with_env(HOME=tmp).run(retcode=None)
    lines = [line for line in out.splitlines() if ": E: " in line or ": W: " in line]
    errors = [line for line in lines if ": E: " in line]
    if errors or code not in (0,):
        detail = "\n".join(errors) or (err.strip() or out.strip())
        raise PackageError(f"rpmlint rejected {rpm.name}:\n{detail}",
                           hint="fix the package, or accept the tag in giftbox/data/rpmlintrc "
                                "with the reason beside it")
    for line in lines:
        reporter.detail(line)
    return tuple(lines)
