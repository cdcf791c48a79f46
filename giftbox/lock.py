"""The lock stage: the project's requirements, pinned with hashes, per distro and arch.

pip-compile runs inside the builder so that environment markers resolve for that distro's
Python and that architecture. The inputs are the project's own requirements (its
requirements.txt, or the dependencies its pyproject/setup.cfg declare), its build
requirements (so the project's wheel builds offline from the same wheelhouse), the spec's
extra requirements, constrained by the release's upper-constraints with the project's own line
dropped. The lock records a digest of those inputs: a build whose inputs changed refuses a
stale lock instead of silently installing something else.
"""

from __future__ import annotations

import configparser
import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from giftbox.container import CommandFailed, Container
from giftbox.distros import Arch, Distro
from giftbox.errors import BuildError
from giftbox.files import write_atomic
from giftbox.gitutil import run_git
from giftbox.settings import Settings
from giftbox.spec import Spec

TOOLS = "/opt/giftbox-tools/bin"
# Paths inside the builder. Unusual names on purpose: the audit greps the venv for them, and
# a match can only be a leaked build path.
BUILD_DIR = "/giftbox-build"
SRC_DIR = "/giftbox-src"
WHEELHOUSE_DIR = "/giftbox-wheelhouse"
CACHE_DIR = "/giftbox-cache"
_HEADER_RE = re.compile(r"^# inputs: sha256:(?P<digest>[0-9a-f]{64})$", re.M)
_PIN_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>[^\s;\\]+)",
                     re.M)
_HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class ProjectMeta:
    """What the source tree says about itself, read from git without a checkout."""

    name: str  # distribution name
    requirements: tuple[str, ...]
    build_requirements: tuple[str, ...]
    requires_python: str | None


@dataclass(frozen=True)
class LockInputs:
    requirements_in: str
    constraints: str
    python: str
    arch: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.requirements_in, self.constraints, self.python, self.arch):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version}"


def lock_path(settings: Settings, spec: Spec, distro: Distro, arch: Arch) -> Path:
    return settings.locks_dir / spec.name / f"{distro.slug(arch)}.txt"


def _show(repo: Path, commit: str, path: str) -> str | None:
    proc = run_git(["show", f"{commit}:{path}"], cwd=repo, check=False)
    return proc.stdout if proc.returncode == 0 else None


def _requirement_lines(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise BuildError(f"requirements.txt line '{line}' is a pip option; giftbox locks "
                             "plain requirements only",
                             hint="add a patch that inlines the included file")
        out.append(line)
    return out


def project_meta(repo: Path, commit: str, fallback_name: str) -> ProjectMeta:
    """Name, requirements, build requirements and Requires-Python of the tree at ``commit``."""
    pyproject = _show(repo, commit, "pyproject.toml")
    setup_cfg = _show(repo, commit, "setup.cfg")
    pkg_info = _show(repo, commit, "PKG-INFO")
    requirements = _show(repo, commit, "requirements.txt")
    project: dict[str, object] = {}
    build_requires: list[str] = []
    if pyproject:
        data = tomllib.loads(pyproject)
        project = data.get("project", {})
        build_requires = list(data.get("build-system", {}).get("requires", []))
    cfg = configparser.ConfigParser(interpolation=None)
    if setup_cfg:
        cfg.read_string(setup_cfg)
    name = str(project.get("name") or cfg.get("metadata", "name", fallback="") or fallback_name)
    requires_python = project.get("requires-python") or cfg.get(
        "options", "python_requires", fallback=None) or cfg.get(
        "metadata", "python_requires", fallback=None)
    if pkg_info and not requires_python:
        match = re.search(r"^Requires-Python: (.+)$", pkg_info, re.M)
        requires_python = match.group(1).strip() if match else None
    setup_py = _show(repo, commit, "setup.py") or ""
    if not requires_python:
        # A literal in setup.py; anything computed there is not worth executing it for.
        match = re.search(r"python_requires\s*=\s*[\"']([^\"']+)[\"']", setup_py)
        requires_python = match.group(1) if match else None
    if requirements is not None:
        reqs = _requirement_lines(requirements)
    elif project.get("dependencies"):
        reqs = [str(r) for r in project["dependencies"]]  # type: ignore[attr-defined]
    elif cfg.has_option("options", "install_requires"):
        reqs = _requirement_lines(cfg.get("options", "install_requires"))
    else:
        reqs = []
    if not build_requires:
        build_requires = ["setuptools", "wheel"]
    if setup_cfg and "pbr" not in " ".join(build_requires) and "pbr" in setup_py:
        build_requires.append("pbr")
    return ProjectMeta(name=name, requirements=tuple(reqs),
                       build_requirements=tuple(build_requires),
                       requires_python=str(requires_python) if requires_python else None)


def read_constraints(spec: Spec, settings: Settings) -> str:
    if spec.constraints.startswith(("http://", "https://")):
        from giftbox.source import _http_get
        with _http_get(spec.constraints, settings) as response:
            return response.read().decode()
    return (settings.root / spec.constraints).read_text()


def drop_own_line(constraints: str, name: str) -> str:
    """Upper-constraints without the project itself: it is built from source, not pinned."""
    own = canonicalize_name(name)
    kept = []
    for line in constraints.splitlines():
        head = re.split(r"[=<>!~;\[ ]", line.strip(), maxsplit=1)[0]
        if head and canonicalize_name(head) == own:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def lock_inputs(spec: Spec, meta: ProjectMeta, constraints: str, distro: Distro,
                arch: Arch) -> LockInputs:
    bindings = {b.module for b in spec.package.system_bindings}
    lines: list[str] = []
    for req in (*meta.requirements, *meta.build_requirements, *spec.requirements):
        try:
            name = canonicalize_name(Requirement(req).name)
        except InvalidRequirement as exc:
            raise BuildError(f"requirement '{req}' of {spec.name} is invalid: {exc}") from None
        if name in bindings:
            continue  # the distro's binding serves it (system_bindings)
        lines.append(req)
    body = "-c constraints.txt\n" + "\n".join(sorted(set(lines), key=str.lower)) + "\n"
    return LockInputs(requirements_in=body, constraints=drop_own_line(constraints, meta.name),
                      python=distro.python, arch=arch.value)


def lock_header(spec: Spec, distro: Distro, arch: Arch, inputs: LockInputs) -> str:
    return (f"# giftbox lock for {spec.name} on {distro.name}/{arch.value} "
            f"(Python {distro.python}), release {spec.release}.\n"
            f"# inputs: sha256:{inputs.digest}\n"
            f"# Do not edit. Refresh with: giftbox lock {spec.name} --distro {distro.name} "
            f"--arch {arch.value}\n")


def recorded_digest(lock_text: str) -> str | None:
    match = _HEADER_RE.search(lock_text)
    return match.group("digest") if match else None


def pins(lock_text: str) -> list[Pin]:
    return [Pin(canonicalize_name(m.group("name")), m.group("version"))
            for m in _PIN_RE.finditer(lock_text)]


@dataclass(frozen=True)
class Locked:
    """A pinned requirement of a lock: its name as written, its version, and the sha256 of
    every file pip may install for it."""

    name: str
    version: str
    hashes: tuple[str, ...]


def requirements(lock_text: str) -> list[Locked]:
    """Every pin line with the ``--hash=sha256:`` values on it and on its indented
    continuation lines, as pip-compile and uv write them. The one reader of that format:
    the SBOM and the wheelhouse's hash check both read locks through it."""
    out: list[Locked] = []
    name = version = None
    hashes: list[str] = []
    for line in lock_text.splitlines():
        if line.startswith((" ", "\t")):
            if name is not None:
                hashes.extend(_HASH_RE.findall(line))
            continue
        if name is not None and version is not None:
            out.append(Locked(name, version, tuple(hashes)))
        match = _PIN_RE.match(line)
        name, version = (match.group("name"), match.group("version")) if match else (None, None)
        hashes = _HASH_RE.findall(line) if match else []
    if name is not None and version is not None:
        out.append(Locked(name, version, tuple(hashes)))
    return out


def blocks(lock_text: str) -> dict[str, str]:
    """Each pinned requirement's block (its pin line and --hash lines), by canonical name."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in lock_text.splitlines():
        if line.startswith((" ", "\t")):
            if current:
                found[current] += line + "\n"
            continue
        match = _PIN_RE.match(line)
        current = canonicalize_name(match.group("name")) if match else None
        if current:
            found[current] = line.split(" #", 1)[0] + "\n"
    return found


def check_fresh(path: Path, spec: Spec, distro: Distro, arch: Arch, inputs: LockInputs) -> str:
    """The committed lock's text, or a BuildError saying how to refresh it."""
    command = f"giftbox lock {spec.name} --distro {distro.name} --arch {arch.value}"
    if not path.is_file():
        raise BuildError(f"no lock for {spec.name} on {distro.name}/{arch.value}: "
                         f"{path} does not exist", hint=f"make it with `{command}` and commit it")
    text = path.read_text()
    if recorded_digest(text) != inputs.digest:
        raise BuildError(
            f"the lock {path} is stale: {spec.name}'s requirements, the spec's extra "
            "requirements or the upper-constraints changed since it was made",
            hint=f"refresh it with `{command}`, review the diff and commit it")
    return text


# Arches locked with uv for the target platform instead of pip-compile inside the builder.
UV_PLATFORMS = {"ppc64le": "powerpc64le-unknown-linux-gnu", "aarch64": "aarch64-unknown-linux-gnu",
                "s390x": "s390x-unknown-linux-gnu"}


def compile_lock(container: Container, inputs: LockInputs, work: Path, log_path: Path) -> str:
    """Run pip-compile inside ``container`` and return the lock body (no giftbox header).

    ``work`` is the host directory mounted at ``BUILD_DIR`` in the container.
    """
    folder = work / "lock"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.in").write_text(inputs.requirements_in)
    (folder / "constraints.txt").write_text(inputs.constraints)
    output = folder / "lock.txt"
    output.unlink(missing_ok=True)
    argv = [f"{TOOLS}/pip-compile", "--quiet", "--generate-hashes", "--allow-unsafe",
            "--no-emit-index-url", "--no-emit-find-links", "--strip-extras", "--no-header",
            "--annotation-style=line", "--cache-dir", f"{CACHE_DIR}/pip-tools",
            "--output-file", "lock.txt", "requirements.in"]
    env = {"PIP_CACHE_DIR": f"{CACHE_DIR}/pip"}
    platform = UV_PLATFORMS.get(inputs.arch)
    if platform:
        # pip-compile prepares the metadata of an sdist by building it: for a requirement with
        # no wheel for this arch that means compiling under qemu, and for a Rust sdist
        # (cryptography) fetching its crates, which may be out of reach. uv resolves for the
        # target platform from the wheels' metadata of the same version and hashes every file.
        argv = [f"{TOOLS}/uv", "pip", "compile", "--quiet", "--generate-hashes", "--no-header",
                "--annotation-style=line", "--python-platform", platform, "--python-version",
                inputs.python, "--cache-dir", f"{CACHE_DIR}/uv", "--output-file", "lock.txt",
                "requirements.in"]
        env = {"UV_CACHE_DIR": f"{CACHE_DIR}/uv"}
        # A host's file:// index means nothing inside the builder (pip skips it, uv fails).
        env["UV_EXTRA_INDEX_URL"] = " ".join(
            u for u in container.settings.extra_index_urls if u.startswith(("http:", "https:")))
    try:
        container.call(argv, cwd=f"{BUILD_DIR}/lock", log_path=log_path, env=env)
    except CommandFailed as exc:
        raise BuildError(_explain_resolution(exc.output), hint=f"full log: {log_path}") from None
    return output.read_text()


def _explain_resolution(output: str) -> str:
    lines = output.splitlines()
    keep = [i for i, line in enumerate(lines)
            if "ResolutionImpossible" in line or "conflict" in line.lower()
            or "Could not find a version" in line or "No matching distribution" in line
            or line.strip().startswith("The user requested")
            or "depends on" in line]
    if keep:
        detail = "\n".join(lines[i] for i in sorted(set(keep)))[:3000]
        return f"the requirements cannot be resolved:\n{detail}"
    return "pip-compile failed:\n" + "\n".join(lines[-20:])


def write_lock(path: Path, header: str, body: str) -> None:
    write_atomic(path, header + body.rstrip("\n") + "\n")


def pins_text(pinned: list[Pin]) -> str:
    return "".join(pin.line + "\n" for pin in pinned)
