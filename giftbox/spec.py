"""Spec files: ``specs/<project>.yaml`` parsed, validated and turned into plain values.

Validation walks PyYAML's node tree rather than the loaded data so that every problem carries
the file and line it comes from. All problems of a file are collected and reported together;
a misspelt field gets a "did you mean". Everything that will later reach a command line or a
path (refs, URLs, patch names, package names, prefixes) is checked here (design invariant 6).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from giftbox.errors import SpecError, SpecProblem

KNOWN_ARCHES = ("x86_64", "ppc64le", "aarch64", "s390x")
FAMILIES = ("deb", "rpm")
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
    if not _NAME_RE.match(value):
        return "must be lower-case letters, digits, '.', '_' or '-'"
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
    try:
        Version(value)
    except InvalidVersion:
        return "is not a PEP 440 version (for example 33.0.0 or 33.0.0.0rc1)"
    return None


def _check_sha256(value: str, ctx: Ctx) -> str | None:
    if _SHA256_RE.match(value):
        return None
    return "must be 64 lower-case hex digits (the sha256 PyPI lists for the .tar.gz)"


def _inside(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it stays inside ``root`` (symlinks resolved), else None."""
    if PurePosixPath(rel).is_absolute():
        return None
    candidate = (root / rel).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate


def _check_constraints(value: str, ctx: Ctx) -> str | None:
    if value.startswith(("https://", "http://")):
        return None
    path = _inside(ctx.root, value)
    if path is None:
        return "must be a path inside the giftbox tree (e.g. constraints/...) or an https:// URL"
    if not path.is_file():
        return f"file {value} does not exist"
    return None


def _check_requirement(value: str, ctx: Ctx) -> str | None:
    if value.lstrip().startswith("-"):
        return "pip options are not allowed here; list requirements only (e.g. 'pymemcache>=4')"
    try:
        Requirement(value)
    except InvalidRequirement as exc:
        return f"is not a valid requirement: {exc}"
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
    p = PurePosixPath(value)
    if not p.is_absolute() or ".." in p.parts or any(c.isspace() for c in value):
        return "must be an absolute path without '..' or spaces"
    return None


def _check_etc_path(value: str, ctx: Ctx) -> str | None:
    problem = _check_abs_path(value, ctx)
    if problem:
        return problem
    if not value.startswith("/etc/"):
        return "config files live under /etc/"
    return None


def _check_pkg_name(value: str, ctx: Ctx) -> str | None:
    if not _PKG_NAME_RE.match(value):
        return "package names are lower-case letters, digits, '+', '-', '.' (at least 2)"
    return None


def _check_dep(value: str, ctx: Ctx) -> str | None:
    if not _DEP_RE.match(value):
        return "is not a package name with an optional version, e.g. 'libvirt0 (>= 9.0)'"
    return None


def _check_entry(value: str, ctx: Ctx) -> str | None:
    return None if _ENTRY_RE.match(value) else "is not a plain command name"


def _check_user(value: str, ctx: Ctx) -> str | None:
    return None if _USER_RE.match(value) else "is not a valid system user or group name"


def _check_module(value: str, ctx: Ctx) -> str | None:
    return None if _MODULE_RE.match(value) else "is not a Python module name"


def _check_mode(value: str, ctx: Ctx) -> str | None:
    return None if re.match(r"^0[0-7]{3}$", value) else "is an octal mode such as '0640'"


def _check_release(value: str, ctx: Ctx) -> str | None:
    return None if _RELEASE_RE.match(value) else "is an OpenStack release such as '2026.1'"


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
        "prefix": F(STR, required=True, check=_check_abs_path),
        "allow_any_prefix": F("bool"),
        "release": F("int", check=_check_positive),
        "versioned_paths": F("bool"),
        "description": F(STR),
        "depends": _per_family(F(STR, check=_check_dep)),
        "build_depends": _per_family(F(STR, check=_check_dep)),
        "system_bindings": F("list", item=F("map", fields={
            "module": F(STR, required=True, check=_check_module),
            "deb": F(STR, check=_check_pkg_name),
            "rpm": F(STR, check=_check_dep),
        })),
        "entry_points": F("list", item=F(STR, check=_check_entry)),
        "user": F("map", fields={
            "name": F(STR, required=True, check=_check_user),
            "group": F(STR, check=_check_user),
            "home": F(STR, required=True, check=_check_abs_path),
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
            sub = f"{path}.{key}" if path else str(key)
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
        if schema.kind == "int":
            if tag != "int":
                self.problem(node, path, f"must be a whole number, not '{node.value}'")
                return None
            value = int(node.value)
        elif schema.kind == "bool":
            if tag != "bool":
                self.problem(node, path, f"must be true or false, not '{node.value}'")
                return None
            value = node.value.lower() in ("true", "yes", "on")
        elif tag == "null" and not node.value:
            self.problem(node, path, "is empty", schema.hint)
            return None
        elif tag in ("float", "int") and path.endswith("release"):
            # 2026.1 read as a float would lose its trailing zeroes (2026.10 -> 2026.1)
            self.problem(node, path, f"must be quoted: \"{node.value}\" (YAML reads an "
                         "unquoted release as a number)")
            return None
        if schema.check is not None:
            message = schema.check(value, self.ctx)
            if message:
                self.problem(node, path, f"'{node.value}' {message}" if schema.kind == STR
                             else message)
                return None
        return value


def parse_yaml(text: str, file: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        detail = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError([SpecProblem(file, line, "", f"invalid YAML: {detail}",
                                     "check indentation and quoting on that line")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecProblem(file, None, "", f"invalid YAML: {exc}")]) from None
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
    if not series.is_file():
        return None
    names = []
    for number, raw in enumerate(series.read_text().splitlines(), 1):
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
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([SpecProblem(file, None, "", f"cannot be read: {exc.strerror}")]) from None
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
        lines=lines,
    )


def spec_path(root: Path, project: str) -> Path:
    """The spec file for ``project``; the name is checked before it becomes a path."""
    if not _NAME_RE.match(project):
        raise SpecError([SpecProblem("specs/", None, "", f"'{project}' is not a project name")])
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
