"""Signing keys: a GNUPGHOME of giftbox's own, the keys that sign each channel, and signing.

The keyring lives under the state directory (``<state>/gnupg``), never under ``repos/``: the
repository tree is what gets served and mirrored, so secret material must never be reachable
from it. Only public keys are exported into ``repos/``. gpg is run through ``giftbox.host`` with
argument lists (invariant 6); nothing here logs key material, only fingerprints.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from giftbox import host
from giftbox.errors import RepoError
from giftbox.files import temp_beside
from giftbox.settings import Settings

if TYPE_CHECKING:
    from giftbox.repo.channels import Channel

ALGORITHMS = ("rsa3072", "ed25519")
# rsa3072 by default: ed25519 signatures are not understood by the gpgv of Ubuntu 16.04 or the
# gpgme of CentOS 7, both of which giftbox serves.
DEFAULT_ALGORITHM = "rsa3072"
DEFAULT_EXPIRY = "3y"

_FPR_RE = re.compile(r"^[0-9A-Fa-f]{40}$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+$")


@dataclass(frozen=True)
class Key:
    fingerprint: str
    uid: str
    expires: int | None  # seconds since the epoch; None: never
    usable: bool  # can sign now: not expired, revoked or disabled, signing capable
    problem: str = ""  # why it is not usable


def gnupg_home(settings: Settings) -> Path:
    """giftbox's GNUPGHOME, created private (gpg refuses group/world-readable homes)."""
    home = settings.state_dir / "gnupg"
    if not home.is_dir():
        home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    return home


_NEEDS = "to make, read and use the keys that sign channels"


def _gpg(settings: Settings) -> list[str]:
    return ["gpg", "--homedir", str(gnupg_home(settings)), "--batch", "--no-tty", "--quiet"]


def _run(settings: Settings, cmd: list[str], *args: str, what: str) -> str:
    proc = host.run([*cmd, *args], error=RepoError, needed_for=_NEEDS)
    code, err = proc.returncode, proc.stderr
    out = proc.stdout
    if code != 0:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit code {code}"
        raise RepoError(f"gpg failed to {what}: {last}",
                        hint="check the keyring: gpg --homedir "
                             f"{gnupg_home(settings)} --list-secret-keys")
    return str(out)


def user_id_pattern(spec: str) -> str:
    """gpg's search pattern for a key spec: fingerprints as is, emails matched exactly."""
    if _FPR_RE.match(spec):
        return spec.upper()
    if _EMAIL_RE.match(spec):
        return f"<{spec}>"  # exact email match, not a substring of some other uid
    return spec


def list_keys(settings: Settings, spec: str | None = None) -> list[Key]:
    """Secret keys in giftbox's keyring matching ``spec`` (all when None)."""
    cmd = [*_gpg(settings), "--with-colons", "--fixed-list-mode", "--list-secret-keys"]
    if spec:
        cmd.append(user_id_pattern(spec))
    proc = host.run(cmd, error=RepoError, needed_for=_NEEDS)
    code, out = proc.returncode, proc.stdout
    if code != 0:  # gpg exits 2 when nothing matches
        return []
    keys: list[Key] = []
    current: dict[str, str] = {}

    def flush() -> None:
        if current.get("fpr"):
            keys.append(_key_from(current))

    for line in str(out).splitlines():
        fields = line.split(":")
        if fields[0] == "sec":
            flush()
            current = {"validity": fields[1], "expires": fields[6], "caps": fields[11]}
        elif fields[0] == "fpr" and current and "fpr" not in current:
            current["fpr"] = fields[9]
        elif fields[0] == "uid" and current and "uid" not in current:
            current["uid"] = fields[9]
    flush()
    return keys


def _key_from(rec: dict[str, str]) -> Key:
    expires = int(rec["expires"]) if rec.get("expires") else None
    problem = ""
    if rec.get("validity") == "r":
        problem = "revoked"
    elif rec.get("validity") == "e" or (expires is not None and expires <= time.time()):
        problem = "expired"
    elif "D" in rec.get("caps", ""):
        problem = "disabled"
    elif "S" not in rec.get("caps", ""):
        problem = "cannot sign (no signing-capable key or subkey)"
    return Key(fingerprint=rec["fpr"], uid=rec.get("uid", ""), expires=expires,
               usable=not problem, problem=problem)


def init_key(settings: Settings, spec: str, *, channel: str = "",
             algorithm: str = DEFAULT_ALGORITHM, expire: str = DEFAULT_EXPIRY) -> tuple[Key, bool]:
    """The signing key ``spec`` names, made if missing; returns (key, created).

    Only an email spec can be created (it becomes the uid). A fingerprint names a key that
    exists elsewhere and has to be imported, which we say rather than guess.
    """
    if algorithm not in ALGORITHMS:
        raise RepoError(f"unknown key algorithm '{algorithm}'", hint="use " + " or ".join(ALGORITHMS))
    existing = [k for k in list_keys(settings, spec) if k.usable]
    if existing:
        return existing[0], False
    if not _EMAIL_RE.match(spec):
        raise RepoError(
            f"key '{spec}' is not in {gnupg_home(settings)} and giftbox can only create keys "
            "named by an email",
            hint=f"import it: gpg --homedir {gnupg_home(settings)} --import private.asc, "
                 "or set the channel's key: to an email in channels.yaml and run keys init")
    name = f"giftbox {channel} channel" if channel else "giftbox"
    uid = f"{name} <{spec}>"
    _run(settings, [*_gpg(settings), "--pinentry-mode", "loopback", "--passphrase", ""],
         "--quick-generate-key", uid, algorithm, "sign", expire, what="create a key")
    made = [k for k in list_keys(settings, spec) if k.usable]
    if not made:
        raise RepoError(f"gpg created no usable key for {uid}")
    return made[0], True


def signing_key(settings: Settings, channel: Channel) -> Key:
    """The one usable key that signs ``channel``, or a RepoError saying how to get one."""
    home = gnupg_home(settings)
    keys = list_keys(settings, channel.key)
    if not keys and channel.key_file is not None:
        _import_key_file(settings, channel)
        keys = list_keys(settings, channel.key)
    usable = [k for k in keys if k.usable]
    if len(usable) == 1:
        return usable[0]
    if len(usable) > 1:
        raise RepoError(
            f"several usable keys match '{channel.key}' for channel '{channel.name}': "
            + ", ".join(k.fingerprint for k in usable),
            hint="set key: to one fingerprint in channels.yaml")
    if keys:
        k = keys[0]
        hint = (f"extend it: gpg --homedir {home} --quick-set-expire {k.fingerprint} 2y "
                "(the next publish re-exports the public key), or make a new one with "
                f"giftbox keys init --channel {channel.name} after removing it"
                if k.problem == "expired" else
                f"make a new one: giftbox keys init --channel {channel.name}, or import one "
                f"into {home} and set its fingerprint as key: in channels.yaml")
        raise RepoError(f"the key signing channel '{channel.name}' ({k.fingerprint}) is "
                        f"{k.problem}", hint=hint)
    raise RepoError(
        f"no secret key '{channel.key}' to sign channel '{channel.name}' in {home}",
        hint=f"create one: giftbox keys init --channel {channel.name}; or import an existing "
             f"key: gpg --homedir {home} --import private.asc, and set its fingerprint as "
             "key: in channels.yaml")


def _import_key_file(settings: Settings, channel: Channel) -> None:
    assert channel.key_file is not None
    path = channel.key_file
    if not path.is_file():
        raise RepoError(f"key_file {path} of channel '{channel.name}' does not exist")
    try:
        path.resolve().relative_to(settings.repos_dir.resolve())
    except ValueError:
        pass
    else:
        raise RepoError(f"key_file {path} is inside {settings.repos_dir}, which is served",
                        hint="move the secret key out of repos/ and rotate it: it may have "
                             "been published")
    _run(settings, _gpg(settings), "--import", str(path), what=f"import {path}")


def export_public_key(settings: Settings, key: Key, dest: Path) -> None:
    """The armored public key (never the secret one), written atomically to ``dest``."""
    tmp = temp_beside(dest)
    _run(settings, _gpg(settings), "--armor", "--export-options", "export-minimal", "--yes",
         "--output", str(tmp), "--export", key.fingerprint, what="export the public key")
    os.replace(tmp, dest)


def sign_commands(settings: Settings, key: Key, src: Path, *, clear: Path | None = None,
                  detached: Path | None = None) -> list[list[str]]:
    """gpg command lines that sign ``src``: clear-signed and/or detached armored.

    Returned rather than run so a caller can run several at once (the agent serialises only
    the private-key operation, which is quick).
    """
    base = [*_gpg(settings), "--yes", "--local-user", key.fingerprint, "--digest-algo", "SHA256"]
    cmds = []
    if clear is not None:
        cmds.append([*base, "--output", str(clear), "--clearsign", str(src)])
    if detached is not None:
        cmds.append([*base, "--armor", "--output", str(detached), "--detach-sign", str(src)])
    return cmds


def run_all(cmds: list[list[str]], what: str) -> None:
    """Run command lines concurrently; any failure is a RepoError naming ``what``."""
    procs = [host.popen(c, error=RepoError, needed_for=_NEEDS) for c in cmds]
    failures = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip() if isinstance(err, bytes) else str(err)
            failures.append(text.splitlines()[-1] if text else str(proc.returncode))
    if failures:
        raise RepoError(f"{what} failed: " + "; ".join(failures),
                        hint="check the signing key with giftbox keys init, or run with --verbose")
