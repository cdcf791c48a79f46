"""Maintainer scripts (deb) and scriptlets (rpm), written out by hand.

Everything interpolated comes from a validated spec (user names, absolute paths without
spaces, unit file names) and is quoted with ``shlex.quote`` anyway (invariant 6). The scripts
are plain POSIX sh; what they do, per family:

* service user: deb postinst ``configure`` creates group and user (``addgroup``/``adduser
  --system``, falling back to ``groupadd``/``useradd --system``) and the home directory;
  rpm ``%pre`` uses ``getent``/``groupadd -r``/``useradd -r`` (the Fedora guideline), and the
  home directory is a ``%dir`` of the package. Users are never deleted (both families' policy:
  a uid may still own files elsewhere and must not be reused).
* config files readable by the service group: deb chowns them to root:<group> in postinst
  unless an admin set a ``dpkg-statoverride``; rpm says so with ``%attr``.
* systemd units: deb enables and starts them (Debian policy) the way debhelper's
  ``deb-systemd-helper`` snippets do, restarting on upgrade, stopping on remove, and purging
  the enablement state on purge; rpm applies presets on first install (Fedora/EL policy: the
  preset decides) and disables on erase. ``daemon-reload`` only where systemd runs.
* runtime leftovers: a venv run as root can write ``__pycache__`` files the package did not
  ship. Once the package's files are gone (its ``pyvenv.cfg`` no longer exists, i.e. on
  remove, or on upgrade away from a versioned directory) the postrm removes ``__pycache__``
  directories and empty directories under its own prefix (never crossing into another
  filesystem), then empty parents up to /opt.
* purge (deb): the service's state under ``/var/lib/<...>`` (the user's home, only when it is
  a directory of its own below /var/lib and still owned by the service user) is removed; dpkg
  itself removes the conffiles.

A script only ever cleans what its package created: a prefix or home that is a system
directory (``giftbox.spec.system_dir``) is refused here too, though spec validation already
refuses it, so that no spec, however it got here, yields ``find /usr/lib -delete``.
"""

from __future__ import annotations

from shlex import quote

from giftbox.errors import PackageError
from giftbox.package.layout import Staged
from giftbox.spec import ALLOWED_PREFIX_ROOTS, path_problem, system_dir

_HEADER = "#!/bin/sh\n# Written by giftbox for {name}; see giftbox/package/scripts.py.\nset -e\n"


def _q(*words: str) -> str:
    return " ".join(quote(w) for w in words)


def _own_dir(what: str, path: str) -> str:
    """``path`` if a script may clean it: plain, absolute, not a system directory."""
    problem = path_problem(path)
    if problem or system_dir(path) or path.count("/") < 2:
        raise PackageError(f"{what} '{path}' "
                           + (problem or "is a system directory or directly below /")
                           + "; maintainer scripts clean only the package's own directories",
                           hint="fix the spec (giftbox spec validate names the field)")
    return path


def _state_dir(staged: Staged) -> str | None:
    user = staged.spec.package.user
    if user and user.home.startswith("/var/lib/"):
        home = _own_dir("package.user.home", user.home)
        return home if home.count("/") >= 3 else None
    return None


def _cleanup_block(staged: Staged) -> str:
    prefix = _own_dir("the venv prefix", staged.prefix)
    _own_dir("package.prefix", staged.spec.package.prefix)
    lines = [
        f"    if [ -d {_q(prefix)} ] && [ ! -e {_q(prefix + '/pyvenv.cfg')} ]; then",
        f"        find {_q(prefix)} -xdev -depth -type d -name __pycache__ "
        "-exec rm -rf {} +",
        f"        find {_q(prefix)} -xdev -depth -type d -empty -delete",
        "    fi",
    ]
    parents = sorted(set(staged.owned_dirs) | ({staged.spec.package.prefix}
                                              - {prefix}), key=len, reverse=True)
    for parent in parents:
        lines.append(f"    if [ -d {_q(parent)} ]; then rmdir --ignore-fail-on-non-empty "
                     f"{_q(parent)}; fi")
    return "\n".join(lines) + "\n"


def _prefix_root(staged: Staged) -> str | None:
    prefix = staged.spec.package.prefix
    return next((r for r in ALLOWED_PREFIX_ROOTS if prefix.startswith(r + "/")), None)


# --- deb ----------------------------------------------------------------------------------


def deb_scripts(staged: Staged) -> dict[str, str]:
    name = staged.name
    spec = staged.spec
    user = spec.package.user
    units = staged.units
    post = [_HEADER.format(name=name)]
    post.append('if [ "$1" = configure ]; then\n')
    if user:
        gecos = f"{name} service"
        post.append(
            f"    if ! getent group {_q(user.group)} >/dev/null; then\n"
            "        if command -v addgroup >/dev/null 2>&1; then\n"
            f"            addgroup --quiet --system {_q(user.group)}\n"
            "        else\n"
            f"            groupadd --system {_q(user.group)}\n"
            "        fi\n"
            "    fi\n"
            f"    if ! getent passwd {_q(user.name)} >/dev/null; then\n"
            "        if command -v adduser >/dev/null 2>&1; then\n"
            f"            adduser --quiet --system --ingroup {_q(user.group)} --home "
            f"{_q(user.home)} --no-create-home --shell {_q(user.shell)} --gecos {_q(gecos)} "
            f"{_q(user.name)}\n"
            "        else\n"
            f"            useradd --system --gid {_q(user.group)} --home-dir {_q(user.home)} "
            f"--no-create-home --shell {_q(user.shell)} --comment {_q(gecos)} "
            f"{_q(user.name)}\n"
            "        fi\n"
            "    fi\n"
            f"    if [ ! -d {_q(user.home)} ]; then\n"
            f"        install -d -m 0750 -o {_q(user.name)} -g {_q(user.group)} "
            f"{_q(user.home)}\n"
            "    fi\n")
    for conf in staged.conffiles:
        if conf.group:
            post.append(
                f"    if ! dpkg-statoverride --list {_q(conf.path)} >/dev/null 2>&1; then\n"
                f"        chown {_q('root:' + conf.group)} {_q(conf.path)}\n"
                f"        chmod {conf.mode:04o} {_q(conf.path)}\n"
                "    fi\n")
    post.append("    :\nfi\n")
    if units:
        for unit in units:
            post.append(
                'if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || '
                '[ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then\n'
                "    if command -v deb-systemd-helper >/dev/null 2>&1; then\n"
                f"        deb-systemd-helper unmask {_q(unit)} >/dev/null || true\n"
                f"        if deb-systemd-helper --quiet was-enabled {_q(unit)}; then\n"
                f"            deb-systemd-helper enable {_q(unit)} >/dev/null || true\n"
                "        else\n"
                f"            deb-systemd-helper update-state {_q(unit)} >/dev/null || true\n"
                "        fi\n"
                "    fi\n"
                "fi\n")
        post.append(
            'if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || '
            '[ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then\n'
            "    if [ -d /run/systemd/system ]; then\n"
            "        systemctl --system daemon-reload >/dev/null || true\n"
            '        if [ -n "$2" ]; then action=restart; else action=start; fi\n'
            f"        deb-systemd-invoke \"$action\" {_q(*units)} >/dev/null || true\n"
            "    fi\n"
            "fi\n")
    post.append("exit 0\n")

    pre_rm = [_HEADER.format(name=name)]
    if units:
        pre_rm.append('if [ -d /run/systemd/system ] && [ "$1" = remove ]; then\n'
                      f"    deb-systemd-invoke stop {_q(*units)} >/dev/null || true\n"
                      "fi\n")
    pre_rm.append("exit 0\n")

    post_rm = [_HEADER.format(name=name)]
    if units:
        post_rm.append('if [ "$1" = remove ] && command -v deb-systemd-helper >/dev/null 2>&1; then\n'
                       + "".join(f"    deb-systemd-helper mask {_q(u)} >/dev/null || true\n"
                                 for u in units)
                       + "fi\n"
                       'if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null 2>&1; then\n'
                       + "".join(f"    deb-systemd-helper purge {_q(u)} >/dev/null || true\n"
                                 f"    deb-systemd-helper unmask {_q(u)} >/dev/null || true\n"
                                 for u in units)
                       + "fi\n"
                       "if [ -d /run/systemd/system ]; then\n"
                       "    systemctl --system daemon-reload >/dev/null || true\n"
                       "fi\n")
    post_rm.append('if [ "$1" = remove ] || [ "$1" = purge ] || [ "$1" = upgrade ]; then\n'
                   + _cleanup_block(staged) + "fi\n")
    root = _prefix_root(staged)
    if root:
        # The data tarball lists /opt (every parent is in it), and when no other package
        # claims it, dpkg deletes the empty directory on removal: put the FHS directory back.
        post_rm.append(f'if [ "$1" = remove ] || [ "$1" = purge ]; then\n'
                       f"    if [ ! -d {_q(root)} ]; then mkdir -m 0755 {_q(root)}; fi\n"
                       "fi\n")
    state = _state_dir(staged)
    if state and user:
        # only the home the service user still owns: not a directory someone else made
        post_rm.append(f'if [ "$1" = purge ] && [ -d {_q(state)} ] && [ ! -L {_q(state)} ] '
                       f'&& [ "$(stat -c %U {_q(state)})" = {_q(user.name)} ]; then\n'
                       f"    rm -rf {_q(state)}\n"
                       "fi\n")
    post_rm.append("exit 0\n")
    return {"postinst": "".join(post), "prerm": "".join(pre_rm), "postrm": "".join(post_rm)}


# --- rpm ----------------------------------------------------------------------------------


def rpm_scriptlets(staged: Staged) -> dict[str, str]:
    """Bodies for %pre, %post, %preun, %postun (rpm passes the count of installed instances
    of the package after the transaction as $1: 1 on install, 2 on upgrade, 0 on erase)."""
    user = staged.spec.package.user
    units = staged.units
    out: dict[str, str] = {}
    if user:
        out["pre"] = (
            f"getent group {_q(user.group)} >/dev/null || groupadd -r {_q(user.group)}\n"
            f"getent passwd {_q(user.name)} >/dev/null || useradd -r -g {_q(user.group)} "
            f"-d {_q(user.home)} -s {_q(user.shell)} -c {_q(staged.name + ' service')} "
            f"{_q(user.name)}\n"
            "exit 0\n")
    post = []
    if units:
        post.append("if [ $1 -eq 1 ] && [ -x /usr/bin/systemctl ]; then\n"
                    f"    systemctl --no-reload preset {_q(*units)} >/dev/null 2>&1 || :\n"
                    "fi\n"
                    "if [ -d /run/systemd/system ]; then\n"
                    "    systemctl daemon-reload >/dev/null 2>&1 || :\n"
                    "fi\n")
        out["preun"] = ("if [ $1 -eq 0 ] && [ -x /usr/bin/systemctl ]; then\n"
                        f"    systemctl --no-reload disable --now {_q(*units)} >/dev/null 2>&1"
                        " || :\nfi\n")
    if post:
        out["post"] = "".join(post)
    postun = []
    if units:
        postun.append("if [ -d /run/systemd/system ]; then\n"
                      "    systemctl daemon-reload >/dev/null 2>&1 || :\n"
                      "    if [ $1 -ge 1 ]; then\n"
                      f"        systemctl try-restart {_q(*units)} >/dev/null 2>&1 || :\n"
                      "    fi\n"
                      "fi\n")
    postun.append(_cleanup_block(staged).replace("\n    ", "\n").lstrip())
    postun.append("exit 0\n")
    out["postun"] = "".join(postun)
    return out
