"""Running git safely: argument lists only, a sealed environment, errors that name the repo.

The environment is sealed so that the host's git configuration can neither widen what a fetch
may do nor redirect it somewhere the spec did not say: no system or global config (so no
``url.<x>.insteadOf`` rewrites and no ``core.hooksPath``), only the transport the spec's URL
uses (``GIT_ALLOW_PROTOCOL``: ``ext::`` and ``fd::`` can never run), no HTTP redirects, and no
prompts. Operators needing credentials use ssh keys, ``GIT_ASKPASS`` or a credential helper
named by ``GIFTBOX_GIT_CREDENTIAL_HELPER``; a URL carrying credentials is refused, and every URL
shown is passed through ``redact_url``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from giftbox import host
from giftbox.errors import SourceError

IDENTITY = {
    "GIT_AUTHOR_NAME": "giftbox",
    "GIT_AUTHOR_EMAIL": "giftbox@localhost",
    "GIT_COMMITTER_NAME": "giftbox",
    "GIT_COMMITTER_EMAIL": "giftbox@localhost",
}

_PASSTHROUGH = ("PATH", "HOME", "LANG", "SSH_AUTH_SOCK", "GIT_ASKPASS", "SSH_ASKPASS",
                "GIT_SSH_COMMAND", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
                "HTTPS_PROXY", "NO_PROXY", "GIT_SSL_CAINFO", "TMPDIR")


def git_env(url: str | None = None, ca_bundle: Path | None = None,
            extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASSTHROUGH}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        # Configuration given through the environment, not via a config file we would have
        # to write: hooks off, no redirects, no automatic gc racing a concurrent build.
        # A tree's own attributes can name a filter or an encoding, never a command: no
        # attributes file outside the repository, no fsmonitor hook, no CRLF guessing.
        "GIT_CONFIG_COUNT": "7",
        "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": os.devnull,
        "GIT_CONFIG_KEY_1": "http.followRedirects", "GIT_CONFIG_VALUE_1": "false",
        "GIT_CONFIG_KEY_2": "gc.auto", "GIT_CONFIG_VALUE_2": "0",
        "GIT_CONFIG_KEY_3": "advice.detachedHead", "GIT_CONFIG_VALUE_3": "false",
        "GIT_CONFIG_KEY_4": "core.fsmonitor", "GIT_CONFIG_VALUE_4": "false",
        "GIT_CONFIG_KEY_5": "core.attributesFile", "GIT_CONFIG_VALUE_5": os.devnull,
        "GIT_CONFIG_KEY_6": "core.autocrlf", "GIT_CONFIG_VALUE_6": "false",
    })
    helper = os.environ.get("GIFTBOX_GIT_CREDENTIAL_HELPER")
    if helper:
        # The host's git config is sealed off, so its credential.helper is named explicitly;
        # the credentials stay with the helper, never in a URL or a mirror's config.
        count = int(env["GIT_CONFIG_COUNT"])
        env.update({f"GIT_CONFIG_KEY_{count}": "credential.helper",
                    f"GIT_CONFIG_VALUE_{count}": helper, "GIT_CONFIG_COUNT": str(count + 1)})
    env.update(IDENTITY)
    if url is not None:
        scheme = urlsplit(url).scheme or "ssh"
        env["GIT_ALLOW_PROTOCOL"] = scheme
    if ca_bundle is not None and "GIT_SSL_CAINFO" not in env:
        env["GIT_SSL_CAINFO"] = str(ca_bundle)
    if extra:
        env.update(extra)
    return env


def run_git(args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            check: bool = True, input: str | None = None,
            stdin: IO[bytes] | None = None) -> host.Completed[str]:
    """``git <args>`` with an argument list (never a shell), captured, in the sealed
    environment (``env``, else ``git_env()``) handed over as it is."""
    proc = host.run(["git", *args], error=SourceError,
                    needed_for="to fetch and read upstream source", cwd=cwd,
                    env=env if env is not None else git_env(), input=input, stdin=stdin)
    if check and proc.returncode != 0:
        raise GitFailed(list(args), proc.returncode, proc.stdout, proc.stderr)
    return proc


def redact_url(url: str) -> str:
    """``url`` as it may be printed or stored: never a password, never an http(s) user name.

    An http(s) user name without a password is as secret as a password (a token as user
    name); an ssh user name (``ssh://git@host/..``) is not, and stays.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a malformed URL)"
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if ":" not in userinfo and parts.scheme.lower() not in ("http", "https"):
        return url
    return url.replace(parts.netloc, f"***@{hostport}", 1)


def url_credential_problem(url: str) -> str | None:
    """Why git must not be given ``url`` (it carries a credential), or None."""
    if redact_url(url) == url:
        return None
    return ("carries credentials in its user info; giftbox never stores or prints them: "
            "use an ssh key, GIT_ASKPASS or a git credential helper instead")


class GitFailed(SourceError):
    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_ = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = "\n".join((stderr or stdout).strip().splitlines()[-8:])
        super().__init__(f"git {args[0]} failed (exit {returncode}):\n{tail}")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` so concurrent builds share one mirror safely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
