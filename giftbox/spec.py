"""Spec files: ``specs/<project>.yaml`` parsed, validated and turned into plain values.

Validation walks PyYAML's node tree rather than the loaded data so that every problem carries
the file and line it comes from. All problems of a file are collected and reported together;
a misspelt field gets a "did you mean". Everything that will later reach a command line or a
path (refs, URLs, patch names, package names, prefixes) is checked here (design invariant 6).
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from giftbox.errors import YAML_VALUE_ERRORS, SpecError, SpecProblem
from giftbox.family import NAMES

KNOWN_ARCHES = ("x86_64", "ppc64le", "aarch64", "s390x")
FAMILIES = NAMES  # the package families (giftbox.family): deb, rpm
ALLOWED_PREFIX_ROOTS = ("/opt", "/usr/lib", "/srv")
GIT_SCHEMES = ("https", "http", "ssh", "git", "file")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_PYPI_NAME_RE = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
_PATCH_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_FILE_NAME_RE = _PATCH_NAME_RE
_PKG_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_DEP_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9+._()-]*"  # name; rpm allows python3dist(foo)
    r"(\s*(\((<<|<=|=|>=|>>)\s*[A-Za-z0-9.+~:-]+\)|(<|<=|=|>=|>)\s*[A-Za-z0-9.+~:-]+))?$")
_ENTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".target", ".path")
_DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]{0,8})$")
_YAML_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

# --- the policy for what reaches a path, a script or an rpm spec (README: Errors) ----------
# A path field is absolute, already normalised, and spelt with letters, digits and ``._+@-``
# only: rpm expands ``%`` and globs ``*?[]`` in %files and scriptlets, a shell expands ``$``
# and quotes; nothing an operator needs in a directory name is lost.
_PATH_RE = re.compile(r"^(/[A-Za-z0-9_+@-][A-Za-z0-9._+@-]{0,99})+$")
MAX_PATH = 200
MAX_STRING = 1000
MAX_NESTING = 32
MAX_FILE_BYTES = 1 << 20
# Directories the system (FHS, the distros) owns: no package may be one, and maintainer
# scripts must never clean them. A prefix or home must be a directory of its own below them.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/lost+found", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv",
    "/sys", "/tmp", "/usr", "/usr/bin", "/usr/games", "/usr/include", "/usr/lib",
    "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/libx32", "/usr/local",
    "/usr/local/bin", "/usr/local/etc", "/usr/local/include", "/usr/local/lib",
    "/usr/local/sbin", "/usr/local/share", "/usr/local/src", "/usr/sbin", "/usr/share",
    "/usr/src", "/usr/lib/systemd", "/usr/lib/sysusers.d", "/usr/lib/tmpfiles.d",
    "/usr/lib/udev", "/usr/lib/modules", "/usr/lib/firmware", "/usr/lib/os-release",
    "/usr/lib/locale", "/usr/lib/debug", "/usr/lib/sudo", "/usr/lib/rpm", "/usr/lib/dpkg",
    "/usr/lib/apt", "/usr/lib/jvm", "/usr/lib/ssl", "/var", "/var/backups", "/var/cache",
    "/var/lib", "/var/local", "/var/lock", "/var/log", "/var/mail", "/var/opt", "/var/run",
    "/var/spool", "/var/tmp", "/var/lib/dpkg", "/var/lib/rpm", "/var/lib/apt",
    "/var/lib/dnf", "/var/lib/yum", "/var/lib/systemd", "/var/lib/misc", "/var/lib/ucf",
    "/var/lib/private", "/var/cache/apt", "/var/cache/dnf", "/srv/www", "/opt/local"})
_SYSTEM_DIR_RE = re.compile(r"^/usr/lib(64)?/(python[0-9.]*|[a-z0-9_]+-linux-gnu[a-z0-9_]*)$")
# Trees that are virtual, volatile or the system's: nothing of a package's own lives there.
_NO_PREFIX_UNDER = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/boot", "/etc",
                    "/usr/bin", "/usr/sbin", "/usr/share", "/usr/include", "/var/lib/dpkg",
                    "/var/lib/rpm", "/lost+found")
_NO_HOME_UNDER = ("/proc", "/sys", "/dev", "/boot", "/etc", "/usr/bin", "/usr/sbin",
                  "/var/lib/dpkg", "/var/lib/rpm")
# /etc/<name>/ directories that belong to the system: a project of that name (specs/ssh.yaml)
# still gets no config there.
_SYSTEM_ETC_DIRS = frozenset({
    "alternatives", "apt", "audit", "cron.d", "cron.daily", "cron.hourly", "cron.monthly",
    "cron.weekly", "default", "dnf", "dpkg", "gnupg", "init.d", "ld.so.conf.d", "logrotate.d",
    "modprobe.d", "modules-load.d", "network", "pam.d", "pki", "polkit-1", "profile.d",
    "rpm", "rsyslog.d", "security", "selinux", "skel", "ssh", "ssl", "sudoers.d", "sysctl.d",
    "systemd", "tmpfiles.d", "udev", "yum", "yum.repos.d", "xdg", "docker", "containerd",
    "apparmor", "apparmor.d", "sysconfig", "sudo", "environment.d", "binfmt.d", "kernel"})
# Files of /etc that are the system's own, named as such when a spec points at one.
_SYSTEM_ETC_FILES = frozenset({
    "/etc/shadow", "/etc/passwd", "/etc/group", "/etc/gshadow", "/etc/sudoers",
    "/etc/hosts", "/etc/resolv.conf", "/etc/fstab", "/etc/crontab", "/etc/environment",
    "/etc/ld.so.preload", "/etc/ld.so.conf", "/etc/profile", "/etc/bash.bashrc",
    "/etc/login.defs", "/etc/nsswitch.conf", "/etc/securetty", "/etc/shells", "/etc/subuid",
    "/etc/subgid", "/etc/hostname", "/etc/machine-id", "/etc/os-release"})
# Accounts with privileges (or shared by unrelated software): never a service user or group.
RESERVED_ACCOUNTS = frozenset({
    "root", "daemon", "bin", "sys", "adm", "tty", "disk", "kmem", "lp", "mail", "news",
    "uucp", "man", "proxy", "operator", "shadow", "sudo", "wheel", "staff", "utmp", "nobody",
    "nogroup", "users", "systemd-journal", "docker", "backup", "list", "irc", "gnats",
    "games", "www-data", "dialout", "cdrom", "floppy", "tape", "audio", "video", "input",
    "kvm", "render", "sgx", "lxd", "ssh", "sshd", "polkitd", "messagebus", "systemd-network",
    "systemd-resolve", "systemd-timesync"})


def system_dir(path: str) -> bool:
    """Whether ``path`` (normalised) is a directory the system owns (see SYSTEM_DIRS)."""
    return path in SYSTEM_DIRS or bool(_SYSTEM_DIR_RE.match(path))


def _under(path: str, roots: tuple[str, ...]) -> str | None:
    return next((r for r in roots if path == r or path.startswith(r + "/")), None)


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be an absolute target path, or None (the syntax policy)."""
    if not value.startswith("/"):
        return "must be an absolute path"
    if len(value) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if value.strip("/") == "":
        return "is /, the root directory"
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal != value:
        if system_dir(normal):
            return f"is {normal}, a system directory"
        return f"is not written in its plain form; write it as {normal}"
    if not _PATH_RE.match(value):
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "/._+@-"))}
                     | ({"."} if re.search(r"/\.", value) else set()))
        shown_bad = " ".join(repr(c) for c in bad) if bad else "'/' with nothing after it"
        return (f"contains {shown_bad}: path fields allow letters, digits and . _ + @ - "
                "(no leading '.'; rpm expands '%', globs and the shell expand '$*?[]' and "
                "quotes)")
    return None


class TreeFileError(Exception):
    """A file the tree supplies that giftbox will not read (why in the message)."""


def read_tree_text(path: Path, base: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of ``path``, which must resolve inside ``base`` (already resolved) and be
    a regular file of at most ``limit`` bytes. Nothing is opened before those checks: a FIFO
    would block and /dev/zero never ends; the content of a file outside never reaches an
    error message."""
    resolved = path.resolve()
    try:
        resolved.relative_to(base)
    except ValueError:
        raise TreeFileError(f"resolves to {resolved}, outside {base}; giftbox reads only "
                            "files inside its tree (replace the symlink with the file)") from None
    try:
        st = os.stat(resolved)
    except OSError as exc:
        raise TreeFileError(f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TreeFileError("is not a regular file (a directory, FIFO, socket or device); "
                            "replace it with a plain text file")
    if st.st_size > limit:
        raise TreeFileError(f"is {st.st_size} bytes, more than the {limit} a text file of the "
                            "tree may have")
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise TreeFileError(f"cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise TreeFileError("is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TreeFileError(f"is more than {limit} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise TreeFileError(f"is not UTF-8 text (line {line}, byte {exc.start})"
                            + ("; it looks like UTF-16" if utf16 else "")
                            + ": save it as UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise TreeFileError(f"contains a NUL byte (line {line}); it is not a text file")
    return text.removeprefix("\ufeff")


def tree_folder(root: Path, rel: str) -> Path:
    """``root/rel``, a folder giftbox writes into, if it is inside the tree once symlinks are
    resolved (a ``patches/<project>`` linked elsewhere would take the writes with it)."""
    base = root.resolve()
    folder = base / rel
    resolved = folder.resolve()
    if resolved != folder:
        raise TreeFileError(f"{rel} resolves to {resolved}; giftbox writes only into real "
                            f"folders of its tree (replace the symlink with a folder)")
    return folder


def yaml_depth_line(text: str, limit: int = MAX_NESTING) -> int | None:
    """The line where ``text`` nests mappings/lists deeper than ``limit``, else None. Checked
    on the event stream, which is flat: PyYAML's composer recurses and would overflow."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limit:
                return event.start_mark.line + 1 if event.start_mark else 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def raw_spec(root: Path, project: str) -> dict[str, Any] | None:
    """specs/<project>.yaml as plain YAML, unvalidated, or None when it is missing or cannot
    be read as a spec. For readers that must work for a project whose spec has since changed
    (promotion, release gates): read with the same file rules as the validator (inside the
    tree, regular, bounded, UTF-8, nesting bounded), so a FIFO or a symlink out never hangs or
    leaks into them."""
    base = root.resolve()
    path = root / "specs" / f"{project}.yaml"
    if not path.is_file():
        return None
    try:
        text = read_tree_text(path, base)
        if yaml_depth_line(text) is not None:
            return None
        data = yaml.safe_load(text)
    except (TreeFileError, yaml.YAMLError, RecursionError, *YAML_VALUE_ERRORS):
        return None
    return data if isinstance(data, dict) else None


_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]*@")


def shown(value: str, limit: int = 80) -> str:
    """``value`` fit for an error message: credentials in URLs masked, control characters
    escaped, long values cut."""
    text = _USERINFO_RE.sub("***@", value)
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(value)} characters)"
    return text


def control_char_problem(value: str, allow_newlines: bool = False) -> str | None:
    for i, c in enumerate(value):
        if allow_newlines and c in "\n\t":
            continue
        if not c.isprintable() and c != " ":
            return (f"contains the control character {c.encode('unicode_escape').decode()!s} "
                    f"at position {i}")
    return None


# --- plain values -------------------------------------------------------------------------


@dataclass(frozen=True)
class GitUpstream:
    url: str
    ref: str
    track: str | None = None


@dataclass(frozen=True)
class PyPIUpstream:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class SystemBinding:
    """A Python binding only the distro ships (libvirt, rados): the venv sees the distro's."""

    module: str
    packages: dict[str, str]  # family -> distro package


@dataclass(frozen=True)
class ServiceUser:
    name: str
    group: str
    home: str
    shell: str = "/usr/sbin/nologin"


@dataclass(frozen=True)
class ConfigFile:
    path: str  # absolute, on the target
    source: Path  # in files/<project>/
    mode: str = "0644"


@dataclass(frozen=True)
class Rootwrap:
    command: str  # e.g. nova-rootwrap
    config: str  # e.g. /etc/nova/rootwrap.conf
    filters_path: str  # e.g. /etc/nova/rootwrap.d


@dataclass(frozen=True)
class PackageMeta:
    name: str
    prefix: str
    release: int = 1
    versioned_paths: bool = False
    description: str | None = None
    depends: dict[str, tuple[str, ...]] = field(default_factory=dict)
    build_depends: dict[str, tuple[str, ...]] = field(default_factory=dict)
    system_bindings: tuple[SystemBinding, ...] = ()
    entry_points: tuple[str, ...] = ()
    user: ServiceUser | None = None
    units: tuple[Path, ...] = ()
    config_files: tuple[ConfigFile, ...] = ()
    rootwrap: Rootwrap | None = None


@dataclass(frozen=True)
class Audit:
    """Checks of the audit gate a spec opts out of, each with its reason in the spec."""

    skip_imports: tuple[str, ...] = ()
    skip_scripts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    name: str
    path: Path
    release: str
    constraints: str  # a path relative to the root, or an https URL
    upstream_kind: str  # "git" | "pypi"
    git: GitUpstream | None
    pypi: PyPIUpstream | None
    requirements: tuple[str, ...]
    patches: tuple[Path, ...]
    package: PackageMeta
    distros: tuple[str, ...]
    arches: tuple[str, ...]
    audit: Audit = field(default_factory=Audit)
    verify: VerifySpec = field(default_factory=lambda: VerifySpec())
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, field_path: str) -> int | None:
        return self.lines.get(field_path)

    @property
    def upstream_url(self) -> str:
        if self.upstream_kind == "git":
            assert self.git is not None
            return self.git.url
        assert self.pypi is not None
        return f"pypi:{self.pypi.name}=={self.pypi.version}"

    @property
    def pinned_ref(self) -> str:
        if self.upstream_kind == "git":
            assert self.git is not None
            return self.git.ref
        assert self.pypi is not None
        return self.pypi.version


# --- the schema ---------------------------------------------------------------------------

Check = Callable[[Any, "Ctx"], str | None]


@dataclass
class F:
    """One field of the schema: its kind, whether it is required, and how to check it."""

    kind: str  # str, int, bool, list, map, any-map
    required: bool = False
    check: Check | None = None
    fields: dict[str, F] | None = None  # for map
    item: F | None = None  # for list items, and any-map values
    hint: str | None = None


@dataclass
class Ctx:
    root: Path
    project: str
    known_distros: frozenset[str] | None


def _check_name(value: str, ctx: Ctx) -> str | None:
    if not _NAME_RE.match(value) or len(value) > 64:
        return "must be lower-case letters, digits, '.', '_' or '-' (at most 64)"
    if value != ctx.project:
        return f"is '{value}' but the file is specs/{ctx.project}.yaml; they must agree"
    return None


def check_git_url(value: str) -> str | None:
    """Refuse transports that run commands and URLs git could read as options."""
    if value.startswith("-"):
        return "must not start with '-' (git would read it as an option)"
    if "::" in value:
        return ("uses a git remote-helper transport ('<transport>::<address>', such as ext:: "
                "or fd::), which can run commands; use an https://, ssh:// or git:// URL")
    if any(c.isspace() or ord(c) < 32 for c in value):
        return "must not contain whitespace or control characters"
    parts = urlsplit(value)
    if parts.scheme not in GIT_SCHEMES:
        return (f"scheme '{parts.scheme or '(none)'}' is not allowed; use one of "
                + ", ".join(s + "://" for s in GIT_SCHEMES))
    if parts.scheme != "file" and not parts.hostname:
        return "names no host"
    if parts.password:
        return ("carries a password; put credentials in git's credential helper, never in a "
                "spec (specs end up in manifests and logs)")
    if parts.username and parts.scheme in ("https", "http"):
        return ("carries a user name, which for https is usually a token; put credentials in "
                "git's credential helper or GIT_ASKPASS, never in a spec (specs end up in "
                "manifests and logs)")
    return None


def check_ref(value: str) -> str | None:
    """A tag, branch, commit or Gerrit change ref, in git's check-ref-format rules."""
    if _SHA_RE.match(value):
        return None
    bad = [c for c in value if c.isspace() or ord(c) < 32 or c in "~^:?*[\\"]
    if (value.startswith(("-", "/", ".")) or value.endswith(("/", ".lock", ".")) or bad
            or ".." in value or "@{" in value or "//" in value or value == "@"
            or any(part.startswith(".") for part in value.split("/"))):
        return ("is not a valid git ref (a tag, branch, commit hash or refs/changes/NN/NNNN/P; "
                "no spaces, '..', '~^:?*[\\', leading '-')")
    if value.startswith("refs/changes/") and not re.match(
            r"^refs/changes/\d{2}/\d+/(\d+|meta)$", value):
        return "a Gerrit change ref looks like refs/changes/45/123445/3"
    return None


def _check_git_url(value: str, ctx: Ctx) -> str | None:
    return check_git_url(value)


def _check_ref(value: str, ctx: Ctx) -> str | None:
    return check_ref(value)


def _check_pypi_name(value: str, ctx: Ctx) -> str | None:
    return None if _PYPI_NAME_RE.match(value) else "is not a valid PyPI project name"


def _check_version(value: str, ctx: Ctx) -> str | None:
    if len(value) > 64:
        return "is longer than 64 characters (it names files and directories)"
    try:
        Version(value)
    except InvalidVersion:
        return "is not a PEP 440 version (for example 33.0.0 or 33.0.0.0rc1)"
    return None


def _check_sha256(value: str, ctx: Ctx) -> str | None:
    if _SHA256_RE.match(value):
        return None
    return "must be 64 lower-case hex digits (the sha256 PyPI lists for the .tar.gz)"


def _inside(folder: Path, rel: str) -> Path | None:
    """``folder/rel`` if it stays inside ``folder`` (symlinks resolved), else None. The folder
    is taken as spelt below its parent: a ``patches/<project>`` that is itself a symlink out
    of the tree does not make its own target the boundary."""
    if PurePosixPath(rel).is_absolute():
        return None
    base = folder.parent.resolve() / folder.name
    candidate = (base / rel).resolve()
    try:
        candidate.relative_to(base)
    except ValueError:
        return None
    return candidate


def _url_problem(value: str) -> str | None:
    """What an http(s) URL read from a spec may not carry."""
    if any(c.isspace() for c in value):
        return "must not contain whitespace"
    parts = urlsplit(value)
    if not parts.hostname:
        return "names no host"
    if parts.username is not None or parts.password is not None:
        return ("carries credentials; put them in ~/.netrc (or the index's configuration), "
                "never in a spec (specs end up in manifests and logs)")
    return None


def _check_constraints(value: str, ctx: Ctx) -> str | None:
    if value.startswith(("https://", "http://")):
        return _url_problem(value)
    path = _inside(ctx.root, value)
    if path is None:
        return "must be a path inside the giftbox tree (e.g. constraints/...) or an https:// URL"
    if not path.is_file():
        return f"file {value} does not exist (or is not a regular file)"
    return None


def _check_requirement(value: str, ctx: Ctx) -> str | None:
    if value.lstrip().startswith("-"):
        return "pip options are not allowed here; list requirements only (e.g. 'pymemcache>=4')"
    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        return f"is not a valid requirement: {exc}"
    if req.url is not None:
        url = req.url
        if "::" in url or not url.startswith(("https://", "git+https://")):
            return ("names a direct reference other than https:// or git+https:// (file:, "
                    "ext:: and other transports read the build host or run commands); pin "
                    "a released version instead")
        problem = _url_problem(url.removeprefix("git+"))
        if problem:
            return problem
    return None


def _check_patch(value: str, ctx: Ctx) -> str | None:
    if not _PATCH_NAME_RE.match(value) or value in {".", ".."}:
        return (f"patch names are plain file names inside patches/{ctx.project}/ "
                "(no '/', no '..', no leading '.' or '-')")
    path = _inside(ctx.root / "patches" / ctx.project, value)
    if path is None:
        return f"escapes patches/{ctx.project}/"
    if not path.is_file():
        return f"patches/{ctx.project}/{value} does not exist"
    return None


def _check_file(value: str, ctx: Ctx) -> str | None:
    if not _FILE_NAME_RE.match(value):
        return f"must be a plain file name inside files/{ctx.project}/"
    path = _inside(ctx.root / "files" / ctx.project, value)
    if path is None:
        return f"escapes files/{ctx.project}/"
    if not path.is_file():
        return f"files/{ctx.project}/{value} does not exist"
    return None


def _check_unit(value: str, ctx: Ctx) -> str | None:
    if not value.endswith(_UNIT_SUFFIXES):
        return "a systemd unit file name ends in " + ", ".join(_UNIT_SUFFIXES)
    return _check_file(value, ctx)


def _check_abs_path(value: str, ctx: Ctx) -> str | None:
    return path_problem(value)


def _check_prefix(value: str, ctx: Ctx) -> str | None:
    problem = path_problem(value)
    if problem:
        return problem
    if system_dir(value) or value.count("/") < 2:
        return ("is a system directory or directly below /; the venv needs a directory of "
                f"its own below one (e.g. /opt/openstack/{ctx.project})")
    inside = _under(value, _NO_PREFIX_UNDER)
    if inside:
        return f"is under {inside}, where no package's venv belongs"
    return None


def _check_home(value: str, ctx: Ctx) -> str | None:
    problem = path_problem(value)
    if problem:
        return problem
    if system_dir(value) or value.count("/") < 2:
        return (f"is a system directory or directly below /; the service needs a home of "
                f"its own (e.g. /var/lib/{ctx.project})")
    inside = _under(value, _NO_HOME_UNDER)
    if inside:
        return f"is under {inside}, which no service user may own"
    return None


def _check_etc_path(value: str, ctx: Ctx) -> str | None:
    problem = path_problem(value)
    if problem:
        return problem
    if value in _SYSTEM_ETC_FILES or value.startswith("/etc/sudoers.d/"):
        return ("is the system's own file; a package never installs it (giftbox writes the "
                "rootwrap sudoers entry itself)")
    own = f"/etc/{ctx.project}/"
    parts = PurePosixPath(value).parts
    if len(parts) >= 3 and parts[1] == "etc" and parts[2] in _SYSTEM_ETC_DIRS:
        return f"is in /etc/{parts[2]}/, which belongs to the system"
    if not value.startswith(own):
        return (f"is outside {own}; a package installs config only in the directory it "
                "owns")
    return None


def _check_pkg_name(value: str, ctx: Ctx) -> str | None:
    if not _PKG_NAME_RE.match(value) or len(value) > 100:
        return "package names are lower-case letters, digits, '+', '-', '.' (at least 2)"
    return None


def _check_dep(value: str, ctx: Ctx) -> str | None:
    if not _DEP_RE.match(value):
        return "is not a package name with an optional version, e.g. 'libvirt0 (>= 9.0)'"
    return None


def _check_entry(value: str, ctx: Ctx) -> str | None:
    return None if _ENTRY_RE.match(value) else "is not a plain command name"


def _check_user(value: str, ctx: Ctx) -> str | None:
    if not _USER_RE.match(value):
        return "is not a valid system user or group name"
    if value in RESERVED_ACCOUNTS:
        return (f"is a system account with privileges; the service runs as a user of its own "
                f"(e.g. {ctx.project.replace('.', '-')[:32]})")
    return None


def _check_module(value: str, ctx: Ctx) -> str | None:
    return None if _MODULE_RE.match(value) else "is not a Python module name"


def _check_mode(value: str, ctx: Ctx) -> str | None:
    return None if re.match(r"^0[0-7]{3}$", value) else "is an octal mode such as '0640'"


def _check_release(value: str, ctx: Ctx) -> str | None:
    return None if _RELEASE_RE.match(value) and len(value) <= 32 \
        else "is an OpenStack release such as '2026.1'"


def _check_positive(value: int, ctx: Ctx) -> str | None:
    return None if value >= 1 else "must be 1 or more"


def _check_distro(value: str, ctx: Ctx) -> str | None:
    if ctx.known_distros is not None and value not in ctx.known_distros:
        return "is not a defined builder; known: " + ", ".join(sorted(ctx.known_distros))
    return None


def _check_arch(value: str, ctx: Ctx) -> str | None:
    if value not in KNOWN_ARCHES:
        return "is not a known architecture; known: " + ", ".join(KNOWN_ARCHES)
    return None


# --- verify: what `giftbox verify` runs in its throwaway containers (giftbox/verify.py) ----


@dataclass(frozen=True)
class VerifyDatabase:
    """A database the migrate check creates, and the config option its URL goes into."""

    name: str
    # The config file the check writes the database's URL into (e.g.
    # /etc/keystone/keystone.conf.d/…), its section and option; all three empty for a database
    # the project finds by itself (nova derives nova_cell0's URL from [database]/connection).
    file: str = ""
    section: str = ""
    option: str = ""


@dataclass(frozen=True)
class VerifySpec:
    smoke: tuple[tuple[str, ...], ...] = ()  # argv lists, run without a shell
    timeout: int = 120  # seconds per command before it counts as hung
    databases: tuple[VerifyDatabase, ...] = ()
    migrate: tuple[tuple[str, ...], ...] = ()  # argv lists, in order, each timed


_INI_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def _check_argv_word(value: str, ctx: Ctx) -> str | None:
    if not value:
        return "is an empty argument"
    return None


def _check_ini_name(value: str, ctx: Ctx) -> str | None:
    if not _INI_NAME_RE.match(value):
        return "is not a config section or option name (letters, digits, '_', '.', '-')"
    return None


def _check_db_config(value: dict[str, Any], ctx: Ctx) -> str | None:
    given = [k for k in ("file", "section", "option") if value.get(k)]
    if given and len(given) < 3:
        missing = [k for k in ("file", "section", "option") if k not in given]
        return (f"names {', '.join(given)} but not {', '.join(missing)}: give file, section "
                "and option together (where the check writes the database's URL), or none of "
                "them for a database the project finds by itself (nova_cell0)")
    return None


def _check_db_name(value: str, ctx: Ctx) -> str | None:
    if not re.match(r"^[a-z][a-z0-9_]{0,63}$", value):
        return "is not a database name (lower-case letters, digits and '_')"
    return None


_ARGV = F("list", item=F("str", check=_check_argv_word))


def _verify_from(d: dict[str, Any] | None) -> VerifySpec:
    d = d or {}
    m = d.get("migrate") or {}
    return VerifySpec(
        smoke=tuple(tuple(c) for c in d.get("smoke") or () if c),
        timeout=d.get("timeout") or 120,
        databases=tuple(VerifyDatabase(**db) for db in m.get("databases") or ()),
        migrate=tuple(tuple(c) for c in m.get("commands") or () if c))


def _per_family(item: F) -> F:
    return F("map", fields={fam: F("list", item=item) for fam in FAMILIES})


STR = "str"
SCHEMA = F("map", fields={
    "name": F(STR, required=True, check=_check_name),
    "release": F(STR, required=True, check=_check_release,
                 hint="the OpenStack release this pin belongs to, e.g. '2026.1'"),
    "constraints": F(STR, required=True, check=_check_constraints),
    "upstream": F("map", required=True, fields={
        "use": F(STR, required=True),
        "git": F("map", fields={
            "url": F(STR, required=True, check=_check_git_url),
            "ref": F(STR, required=True, check=_check_ref),
            "track": F(STR, check=_check_ref),
        }),
        "pypi": F("map", fields={
            "name": F(STR, required=True, check=_check_pypi_name),
            "version": F(STR, required=True, check=_check_version),
            "sha256": F(STR, required=True, check=_check_sha256),
        }),
    }),
    "requirements": F("list", item=F(STR, check=_check_requirement)),
    "patches": F("list", item=F(STR, check=_check_patch)),
    "package": F("map", required=True, fields={
        "name": F(STR, check=_check_pkg_name),
        "prefix": F(STR, required=True, check=_check_prefix),
        "allow_any_prefix": F("bool"),
        "release": F("int", check=_check_positive),
        "versioned_paths": F("bool"),
        "description": F(STR),
        "depends": _per_family(F(STR, check=_check_dep)),
        # deb/rpm: for every arch; deb/ppc64le etc.: only for builds for that arch.
        "build_depends": F("map", fields={
            key: F("list", item=F(STR, check=_check_dep))
            for fam in FAMILIES
            for key in (fam, *(f"{fam}/{a}" for a in ("x86_64", "ppc64le", "aarch64", "s390x")))}),
        "system_bindings": F("list", item=F("map", fields={
            "module": F(STR, required=True, check=_check_module),
            "deb": F(STR, check=_check_pkg_name),
            "rpm": F(STR, check=_check_dep),
        })),
        "entry_points": F("list", item=F(STR, check=_check_entry)),
        "user": F("map", fields={
            "name": F(STR, required=True, check=_check_user),
            "group": F(STR, check=_check_user),
            "home": F(STR, required=True, check=_check_home),
            "shell": F(STR, check=_check_abs_path),
        }),
        "units": F("list", item=F(STR, check=_check_unit)),
        "config_files": F("list", item=F("map", fields={
            "path": F(STR, required=True, check=_check_etc_path),
            "source": F(STR, required=True, check=_check_file),
            "mode": F(STR, check=_check_mode),
        })),
        "rootwrap": F("map", fields={
            "command": F(STR, required=True, check=_check_entry),
            "config": F(STR, required=True, check=_check_etc_path),
            "filters_path": F(STR, required=True, check=_check_etc_path),
        }),
    }),
    "audit": F("map", fields={
        "skip_imports": F("list", item=F(STR, check=_check_module)),
        "skip_scripts": F("list", item=F(STR, check=_check_entry)),
    }),
    "verify": F("map", fields={
        "timeout": F("int", check=_check_positive),
        "smoke": F("list", item=_ARGV),
        "migrate": F("map", fields={
            "databases": F("list", item=F("map", check=_check_db_config, fields={
                "name": F(STR, required=True, check=_check_db_name),
                "file": F(STR, check=_check_etc_path),
                "section": F(STR, check=_check_ini_name),
                "option": F(STR, check=_check_ini_name),
            })),
            "commands": F("list", item=_ARGV),
        }),
    }),
    "matrix": F("map", required=True, fields={
        "distros": F("list", required=True, item=F(STR, check=_check_distro)),
        "arches": F("list", required=True, item=F(STR, check=_check_arch)),
    }),
})


# --- the walk -----------------------------------------------------------------------------


class _Walker:
    def __init__(self, file: str, ctx: Ctx) -> None:
        self.file = file
        self.ctx = ctx
        self.problems: list[SpecProblem] = []
        self.lines: dict[str, int] = {}

    def problem(self, node: yaml.Node | None, path: str, message: str,
                hint: str | None = None) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(SpecProblem(self.file, line, path, message, hint))

    def walk(self, node: yaml.Node, schema: F, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if schema.kind == "map":
            return self._map(node, schema, path)
        if schema.kind == "list":
            return self._list(node, schema, path)
        return self._scalar(node, schema, path)

    def _map(self, node: yaml.Node, schema: F, path: str) -> dict[str, Any] | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, path, "must be a mapping of fields")
            return None
        assert schema.fields is not None
        out: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{shown(str(key), 40)}" if path else shown(str(key), 40)
            if key is None:
                self.problem(key_node, path, "field names must be plain strings")
                continue
            if key in seen:
                self.problem(key_node, sub, f"appears twice (first at line "
                             f"{seen[key].start_mark.line + 1})")
                continue
            seen[key] = key_node
            if key not in schema.fields:
                close = difflib.get_close_matches(key, list(schema.fields), n=1, cutoff=0.6)
                hint = (f"did you mean '{close[0]}'?" if close
                        else "known fields here: " + ", ".join(schema.fields))
                self.problem(key_node, sub, "unknown field", hint)
                continue
            out[key] = self.walk(value_node, schema.fields[key], sub)
        for name, sub_schema in schema.fields.items():
            if sub_schema.required and name not in seen:
                where = f" in {path}" if path else ""
                self.problem(node, f"{path}.{name}" if path else name,
                             f"is required{where} but missing", sub_schema.hint)
        if schema.check is not None:  # a rule across the map's fields
            message = schema.check(out, self.ctx)
            if message:
                self.problem(node, path, message, schema.hint)
        return out

    def _list(self, node: yaml.Node, schema: F, path: str) -> list[Any] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, path, "must be a list")
            return None
        assert schema.item is not None
        return [self.walk(item, schema.item, f"{path}[{i}]") for i, item in enumerate(node.value)]

    def _scalar(self, node: yaml.Node, schema: F, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, path, f"must be a single value ({schema.kind})")
            return None
        tag = node.tag.rsplit(":", 1)[-1]
        value: Any = node.value
        text = shown(node.value)
        control = control_char_problem(node.value, allow_newlines=path.endswith("description"))
        if control or len(node.value) > MAX_STRING:
            self.problem(node, path, control or f"is longer than {MAX_STRING} characters")
            return None
        if schema.kind == "int":
            if tag != "int" or not _DECIMAL_RE.match(node.value):
                self.problem(node, path, f"must be a whole number in decimal digits "
                             f"(at most 9), not '{text}'")
                return None
            value = int(node.value)
        elif schema.kind == "bool":
            if tag != "bool" or node.value.lower() not in _YAML_BOOLS:
                self.problem(node, path, f"must be true or false, not '{text}'")
                return None
            value = _YAML_BOOLS[node.value.lower()]
        elif tag == "null" and not node.value:
            self.problem(node, path, "is empty", schema.hint)
            return None
        elif tag in ("float", "int") and path.endswith("release"):
            # 2026.1 read as a float would lose its trailing zeroes (2026.10 -> 2026.1)
            self.problem(node, path, f"must be quoted: \"{text}\" (YAML reads an "
                         "unquoted release as a number)")
            return None
        if schema.check is not None:
            message = schema.check(value, self.ctx)
            if message:
                self.problem(node, path, f"'{text}' {message}" if schema.kind == STR
                             else message)
                return None
        return value


def parse_yaml(text: str, file: str) -> yaml.Node:
    try:
        deep = yaml_depth_line(text)
        if deep is not None:
            raise SpecError([SpecProblem(file, deep, "", f"nests lists or mappings more than "
                                         f"{MAX_NESTING} deep; a spec is a few levels deep")])
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        detail = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError([SpecProblem(file, line, "", f"invalid YAML: {detail}",
                                     "check indentation and quoting on that line")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecProblem(file, None, "", f"invalid YAML: {shown(str(exc), 200)}")]
                        ) from None
    except RecursionError:
        raise SpecError([SpecProblem(file, None, "", "nests too deeply to read")]) from None
    if node is None:
        raise SpecError([SpecProblem(file, 1, "", "is empty")])
    return node


def _cross_checks(data: dict[str, Any], w: _Walker, node: yaml.Node) -> None:
    """Rules that span fields: which upstream is used, prefix roots, bindings per family."""
    upstream = data.get("upstream") or {}
    use = upstream.get("use")
    if use is not None and use not in ("git", "pypi"):
        w.problems.append(SpecProblem(w.file, w.lines.get("upstream.use"), "upstream.use",
                                      f"'{use}' must be 'git' or 'pypi'"))
    elif use and use not in upstream:
        w.problems.append(SpecProblem(
            w.file, w.lines.get("upstream.use"), "upstream.use",
            f"is '{use}' but there is no upstream.{use} section",
            f"add upstream.{use}, or set use to the section you have"))
    package = data.get("package") or {}
    prefix = package.get("prefix")
    home = (package.get("user") or {}).get("home")
    if prefix and home and (home == prefix or home.startswith(prefix + "/")
                            or prefix.startswith(home + "/")):
        w.problems.append(SpecProblem(
            w.file, w.lines.get("package.user.home"), "package.user.home",
            f"'{home}' and package.prefix '{prefix}' overlap",
            "the venv is the package's files, the home the service's state: keep them apart"))
    etc_paths = [(f"package.config_files[{i}].path", c.get("path"))
                 for i, c in enumerate(package.get("config_files") or []) if c]
    rootwrap = package.get("rootwrap") or {}
    etc_paths += [(f"package.rootwrap.{k}", rootwrap.get(k)) for k in ("config", "filters_path")]
    seen_etc: dict[str, str] = {}
    filters = rootwrap.get("filters_path")
    for field_path, value in etc_paths:
        if not value:
            continue
        if value in seen_etc:
            w.problems.append(SpecProblem(w.file, w.lines.get(field_path), field_path,
                                          f"'{value}' is also {seen_etc[value]}"))
        elif filters and value.startswith(filters + "/"):
            w.problems.append(SpecProblem(
                w.file, w.lines.get(field_path), field_path,
                f"'{value}' is inside package.rootwrap.filters_path, a link into the venv"))
        seen_etc.setdefault(value, field_path)
    if prefix and not package.get("allow_any_prefix"):
        if not any(prefix == r or prefix.startswith(r + "/") for r in ALLOWED_PREFIX_ROOTS):
            w.problems.append(SpecProblem(
                w.file, w.lines.get("package.prefix"), "package.prefix",
                f"'{prefix}' is outside " + ", ".join(ALLOWED_PREFIX_ROOTS),
                "a venv elsewhere collides with distro files; set allow_any_prefix: true "
                "to insist"))
    for i, binding in enumerate(package.get("system_bindings") or []):
        if binding and not (binding.get("deb") or binding.get("rpm")):
            path = f"package.system_bindings[{i}]"
            w.problems.append(SpecProblem(w.file, w.lines.get(path), path,
                                          "names no distro package (deb: or rpm:)"))
    patches = data.get("patches") or []
    if len(set(p for p in patches if p)) != len([p for p in patches if p]):
        w.problems.append(SpecProblem(w.file, w.lines.get("patches"), "patches",
                                      "lists the same patch twice"))


def _series_file(root: Path, project: str) -> list[tuple[int, str]] | None:
    """(line number, patch name) for each entry of a quilt-style ``series`` file."""
    series = root / "patches" / project / "series"
    if not series.exists() and not series.is_symlink():
        return None
    try:
        text = read_tree_text(series, root.resolve() / "patches" / project)
    except TreeFileError as exc:
        raise SpecError([SpecProblem(f"patches/{project}/series", None, "", str(exc))]
                        ) from None
    names = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            names.append((number, line.split()[0]))  # quilt allows "name -p1"
    return names


def load_spec(path: Path, root: Path, known_distros: frozenset[str] | None = None) -> Spec:
    """Read, validate and convert one spec; raise ``SpecError`` listing every problem."""
    project = path.stem
    try:
        file = str(path.relative_to(root))
    except ValueError:
        file = str(path)
    # The folder the caller named (specs/ of the tree, or a checkout of another revision):
    # a spec that is a symlink out of it, a FIFO or a device is refused unread.
    base = path.parent.resolve()
    try:
        text = read_tree_text(path, base)
    except TreeFileError as exc:
        raise SpecError([SpecProblem(file, None, "", str(exc))]) from None
    node = parse_yaml(text, file)
    walker = _Walker(file, Ctx(root=root, project=project, known_distros=known_distros))
    data = walker.walk(node, SCHEMA, "")
    if data is None:
        raise SpecError(walker.problems)
    _cross_checks(data, walker, node)
    patch_names = data.get("patches")
    if patch_names is None:
        series = _series_file(root, project)
        if series is not None:
            for number, name in series:
                message = _check_patch(name, walker.ctx)
                if message:
                    walker.problems.append(SpecProblem(
                        f"patches/{project}/series", number, "", f"'{name}' {message}"))
            patch_names = [name for _, name in series]
    if walker.problems:
        raise SpecError(walker.problems)
    return _to_spec(data, path, root, project, patch_names or [], walker.lines)


def _to_spec(d: dict[str, Any], path: Path, root: Path, project: str,
             patch_names: list[str], lines: dict[str, int]) -> Spec:
    up = d["upstream"]
    git = GitUpstream(**up["git"]) if up.get("git") else None
    pypi = PyPIUpstream(**up["pypi"]) if up.get("pypi") else None
    p = d["package"]
    files = root / "files" / project
    user = None
    if p.get("user"):
        u = p["user"]
        user = ServiceUser(name=u["name"], group=u.get("group") or u["name"], home=u["home"],
                           shell=u.get("shell") or "/usr/sbin/nologin")
    package = PackageMeta(
        name=p.get("name") or f"giftbox-{project}",
        prefix=str(PurePosixPath(p["prefix"])),
        release=p.get("release") or 1,
        versioned_paths=bool(p.get("versioned_paths")),
        description=p.get("description"),
        depends={k: tuple(v or ()) for k, v in (p.get("depends") or {}).items()},
        build_depends={k: tuple(v or ()) for k, v in (p.get("build_depends") or {}).items()},
        system_bindings=tuple(
            SystemBinding(module=b["module"],
                          packages={fam: b[fam] for fam in FAMILIES if b.get(fam)})
            for b in p.get("system_bindings") or []),
        entry_points=tuple(p.get("entry_points") or ()),
        user=user,
        units=tuple(files / u for u in p.get("units") or ()),
        config_files=tuple(ConfigFile(path=c["path"], source=files / c["source"],
                                      mode=c.get("mode") or "0644")
                           for c in p.get("config_files") or ()),
        rootwrap=Rootwrap(**p["rootwrap"]) if p.get("rootwrap") else None,
    )
    return Spec(
        name=d["name"], path=path, release=d["release"], constraints=d["constraints"],
        upstream_kind=up["use"], git=git, pypi=pypi,
        requirements=tuple(d.get("requirements") or ()),
        patches=tuple(root / "patches" / project / n for n in patch_names),
        package=package,
        distros=tuple(d["matrix"]["distros"]), arches=tuple(d["matrix"]["arches"]),
        audit=Audit(skip_imports=tuple((d.get("audit") or {}).get("skip_imports") or ()),
                    skip_scripts=tuple((d.get("audit") or {}).get("skip_scripts") or ())),
        verify=_verify_from(d.get("verify")),
        lines=lines,
    )


def spec_path(root: Path, project: str) -> Path:
    """The spec file for ``project``; the name is checked before it becomes a path."""
    if not _NAME_RE.match(project):
        raise SpecError([SpecProblem("specs/", None, "",
                                     f"'{shown(project, 64)}' is not a project name")])
    return root / "specs" / f"{project}.yaml"


def list_projects(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "specs").glob("*.yaml"))


def find_spec(root: Path, project: str, known_distros: frozenset[str] | None = None) -> Spec:
    path = spec_path(root, project)
    if not path.is_file():
        known = list_projects(root)
        close = difflib.get_close_matches(project, known, n=1)
        hint = (f"did you mean '{close[0]}'?" if close
                else "known projects: " + (", ".join(known) or "(none: add specs/<project>.yaml)"))
        raise SpecError([SpecProblem(f"specs/{project}.yaml", None, "",
                                     f"no spec for project '{project}'", hint)])
    return load_spec(path, root, known_distros)


def canonical(name: str) -> str:
    return canonicalize_name(name)
