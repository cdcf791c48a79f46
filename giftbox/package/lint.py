"""Quality gates: lintian on every .deb, rpmlint on every .rpm.

Errors fail the build with the tags shown. Tags we accept on purpose are overridden in the repo
with the reason beside each: ``giftbox/data/lintian-overrides`` (shipped in the package as
/usr/share/lintian/overrides/<package>, where lintian reads it) and ``giftbox/data/rpmlintrc``
(passed to rpmlint with ``-r``). Warnings that remain are returned and shown, not fatal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from giftbox.errors import PackageError
from giftbox.package.common import data_text, tool
from giftbox.ui import Reporter


def _linter(name: str):  # type: ignore[no-untyped-def]
    return tool(name, f"'{name}' is not installed, and every package must pass it",
                f"install {name} (apt-get install {name})")


def _verdict(linter: str, package: Path, lines: list[str], errors: list[str], ok: bool,
             stderr: str, stdout: str, overrides: str, reporter: Reporter) -> tuple[str, ...]:
    """Refuse the package on any error tag (or a linter failure); show and return warnings."""
    if errors or not ok:
        detail = "\n".join(errors) or (stderr.strip() or stdout.strip())
        raise PackageError(f"{linter} rejected {package.name}:\n{detail}",
                           hint=f"fix the package, or accept the tag in {overrides} with the "
                                "reason beside it")
    for line in lines:
        reporter.detail(line)
    return tuple(lines)


def lintian(deb: Path, reporter: Reporter) -> tuple[str, ...]:
    """Run lintian; raise on E: tags, return the W: lines."""
    cmd = _linter("lintian")
    # --allow-root: packaging runs as root in builders and CI; lintian only reads the file.
    code, out, err = cmd["--allow-root", "--tag-display-limit", "0", "--fail-on", "error",
                         str(deb)].run(retcode=None)
    lines = [line for line in out.splitlines() if line[:2] in ("E:", "W:")]
    errors = [line for line in lines if line.startswith("E:")]
    return _verdict("lintian", deb, lines, errors, code in (0, 1), err, out,
                    "giftbox/data/lintian-overrides", reporter)


def rpmlint(rpm: Path, reporter: Reporter) -> tuple[str, ...]:
    """Run rpmlint with our rpmlintrc; raise on E: lines, return the W: lines."""
    cmd = _linter("rpmlint")
    with tempfile.TemporaryDirectory(prefix="giftbox-rpmlint-") as tmp:
        rc = Path(tmp) / "rpmlintrc"
        rc.write_text(data_text("rpmlintrc"))
        # HOME points at an empty dir so a user's ~/.config/rpmlint cannot change the verdict.
        code, out, err = cmd["-r", str(rc), str(rpm)].with_env(HOME=tmp).run(retcode=None)
    lines = [line for line in out.splitlines() if ": E: " in line or ": W: " in line]
    errors = [line for line in lines if ": E: " in line]
    return _verdict("rpmlint", rpm, lines, errors, code == 0, err, out,
                    "giftbox/data/rpmlintrc", reporter)
