"""Host tools: the one way giftbox runs a program on this machine.

Every program giftbox runs on the host (git, gpg, dpkg-deb, rpmbuild, createrepo_c,
apt-ftparchive, lintian, rpmlint, mmdebstrap, diffoscope, zstd, ...) goes through here, with an
argument list, never a shell (invariant 6):

* ``find(name, error, needed_for)`` looks the tool up on the PATH it will run with, or raises
  the caller's ``GiftboxError`` subclass (so the caller's exit code) with one paragraph naming
  the tool, what needs it and the Debian package that provides it;
* ``run(argv, ...)`` runs it to the end and captures its output (``check=True``: a non-zero exit
  raises the caller's error with the tail of its stderr);
* ``popen(argv, ...)`` starts it, for the callers that stream (a package's payload read as it
  comes, mmdebstrap's log, Release files and signatures made side by side).

subprocess underneath. ``env`` replaces the environment whole (git's sealed one,
``gitutil.git_env``, is handed over exactly as it is); ``extra_env`` adds to the host's. stdin
is empty unless the caller gives ``input`` or ``stdin``: no tool ever reads the terminal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from giftbox.errors import GiftboxError

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL
TimedOut = subprocess.TimeoutExpired
Completed = subprocess.CompletedProcess
Popen = subprocess.Popen

# tool -> the Debian package that provides it (a tool not listed is its own package's name)
PACKAGES: dict[str, str] = {
    "apt-cache": "apt",
    "apt-config": "apt",
    "apt-ftparchive": "apt-utils",
    "createrepo_c": "createrepo-c",
    "dpkg-deb": "dpkg",
    "dpkg-shlibdeps": "dpkg-dev",
    "gpg": "gnupg",
    "qemu-aarch64-static": "qemu-user-static",
    "qemu-x86_64-static": "qemu-user-static",
    "rpm": "rpm",
    "rpm2cpio": "rpm2cpio",
    "rpmbuild": "rpm",
}

# tools that no Debian package provides: how to get them instead
_INSTALL: dict[str, str] = {"fpm": "gem install fpm"}


def install_hint(name: str) -> str:
    """How to get the tool ``name`` on a Debian host, e.g. ``apt-get install dpkg``."""
    return _INSTALL.get(name) or f"apt-get install {PACKAGES.get(name, name)}"


def _search_path(env: Mapping[str, str] | None) -> str:
    # The PATH the program will be looked up on by exec: the environment it is handed.
    return (env if env is not None else os.environ).get("PATH", os.defpath)


def which(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The path of the tool ``name`` on the PATH of ``env`` (the host's when None), or None."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name, path=_search_path(env))


def missing(name: str, error: type[GiftboxError], needed_for: str,
            otherwise: str | None = None) -> GiftboxError:
    """The one-paragraph error saying that ``name`` is not installed."""
    text = (f"'{name}' is not installed on this host (not on PATH), and giftbox needs it "
            f"{needed_for}: install it with {install_hint(name)} (scripts/setup-machine "
            "installs every tool giftbox uses)")
    if otherwise:
        text += f", or {otherwise}"
    return error(text)


def find(name: str, error: type[GiftboxError], needed_for: str, *,
         otherwise: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The path of the tool ``name``, or ``error`` (see ``missing``) when it is not on PATH."""
    found = which(name, env)
    if found is None:
        raise missing(name, error, needed_for, otherwise)
    return found


def tail(text: str | bytes | None, lines: int = 8) -> str:
    """The last ``lines`` non-blank lines of a tool's output."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kept = [line for line in (text or "").strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _prepare(argv: Sequence[str | Path], error: type[GiftboxError], needed_for: str,
             otherwise: str | None, env: Mapping[str, str] | None,
             extra_env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
    if env is not None and extra_env is not None:
        raise TypeError("env replaces the environment, extra_env adds to the host's: not both")
    environment = dict(env) if env is not None else \
        {**os.environ, **extra_env} if extra_env is not None else None
    args = [str(a) for a in argv]
    args[0] = find(args[0], error, needed_for, otherwise=otherwise, env=environment)
    return args, environment


def run(argv: Sequence[str | Path], *, error: type[GiftboxError], needed_for: str,
        otherwise: str | None = None, check: bool = False, cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None, extra_env: Mapping[str, str] | None = None,
        input: str | bytes | None = None, stdin: IO[Any] | int | None = None,
        timeout: float | None = None, text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` to the end, stdout and stderr captured (str when ``text``, else bytes).

    A missing tool raises ``error`` (see ``find``); with ``check`` a non-zero exit raises
    ``error`` too, naming the tool, its exit status and the tail of its stderr. A ``timeout``
    raises ``TimedOut`` (subprocess.TimeoutExpired), the tool killed.
    """
    args, environment = _prepare(argv, error, needed_for, otherwise, env, extra_env)
    if input is None and stdin is None:
        stdin = DEVNULL
    proc = subprocess.run(  # noqa: S603 - an argument list, never a shell
        args, cwd=cwd, env=environment, input=input, stdin=stdin, capture_output=True,
        text=text, errors="replace" if text else None, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        said = tail(proc.stderr) or tail(proc.stdout) or "no output"
        raise error(f"{Path(args[0]).name} failed (exit status {proc.returncode}) {needed_for}:"
                    f"\n{said}")
    return proc


def popen(argv: Sequence[str | Path], *, error: type[GiftboxError], needed_for: str,
          otherwise: str | None = None, cwd: str | Path | None = None,
          env: Mapping[str, str] | None = None, extra_env: Mapping[str, str] | None = None,
          stdin: IO[Any] | int | None = DEVNULL, stdout: IO[Any] | int | None = PIPE,
          stderr: IO[Any] | int | None = PIPE) -> subprocess.Popen[bytes]:
    """Start ``argv`` (bytes pipes for stdout and stderr unless told otherwise); a missing tool
    raises ``error`` (see ``find``). The caller reads, waits and judges the exit code."""
    args, environment = _prepare(argv, error, needed_for, otherwise, env, extra_env)
    return subprocess.Popen(  # noqa: S603 - an argument list, never a shell
        args, cwd=cwd, env=environment, stdin=stdin, stdout=stdout, stderr=stderr)
