"""Builder images: one per distro and arch, named by the digest of what defines them.

A builder is ``builders/Dockerfile.<family>`` (or the distro's own
``builders/<distro>/Dockerfile``) built ``FROM`` a base image. Debian bases are
bootstrapped here with mmdebstrap from the archive (no registry needed); the others are pulled.
Tags carry the digest of the definition, so a tag that exists is up to date by construction:

    giftbox-base/debian12:ppc64le-3f2a9c0d1b7e      the bootstrapped (or pulled) distro
    giftbox-builder/debian12:ppc64le-8e41d07c55aa   + build packages + the builder's own tools

What feeds a digest: builder.yaml and every file in the builder's folder, the base's recipe
(``RECIPE_VERSION`` below, sources, apt options), the tools pins, the install script and the host
CA bundle that gets copied in. The package index (which may carry credentials) is not part of the
definition and never reaches a layer: the build fetches it once from a one-shot local server.

This module is the policy (what an image is, when it is made, what is stale); what the engine is
asked goes through ``giftbox.engine.Engine``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import http.server
import json
import re
import secrets
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from giftbox import host
from giftbox.distros import Arch, Distro, get_distro, load_distros
from giftbox.engine import (
    LABEL,
    OWNER_LABEL,
    Engine,
    EngineError,
    Image,
    check_platform,
    engine_for,
    mask,
    mask_url,
    url_secrets,
)
from giftbox.errors import BuilderError
from giftbox.files import temp_beside
from giftbox.settings import Settings
from giftbox.ui import NULL_REPORTER, Reporter

# Bump when the bootstrap or build recipe in this file changes in a way images should see.
RECIPE_VERSION = "1"
BASE_REPO = "giftbox-base"
BUILDER_REPO = "giftbox-builder"
TOOLS_PREFIX = "/opt/giftbox-tools"
LABEL_PREFIX = "org.giftbox."
DEFAULT_PULL_TIMEOUT = 120.0

# Only options that change what apt accepts from a mirror are propagated from the host: a
# caching mirror may serve Release files past their Valid-Until. Proxy settings are not copied
# (they may carry credentials and they are not part of what an image is).
_APT_KEYS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date")

_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!-]*$")
_WORD = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# The classic builder colours a step's stderr.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Runs in the Dockerfile (one RUN, so the fetched pip config never lands in a layer). POSIX sh
# and Python 3.5 syntax: it has to work on the oldest builder.
INSTALL_TOOLS = r"""#!/bin/sh
# Install the builder's own pinned tooling into a venv made with the distro's python.
set -eu
tools=/opt/giftbox-tools
share=/usr/local/share/giftbox
conf=/tmp/giftbox-pip.conf
trap 'rm -f "$conf"' EXIT
if [ -n "${GIFTBOX_SECRETS_URL:-}" ]; then
    python3 -c 'import sys, urllib.request
data = urllib.request.urlopen(sys.argv[1], timeout=60).read()
open(sys.argv[2], "wb").write(data)' "$GIFTBOX_SECRETS_URL" "$conf"
    export PIP_CONFIG_FILE="$conf"
else
    export PIP_CONFIG_FILE=/dev/null
fi
if [ -s "$share/ca-bundle.crt" ]; then
    export PIP_CERT="$share/ca-bundle.crt" SSL_CERT_FILE="$share/ca-bundle.crt"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
python3 -m venv "$tools"
# The pinned pip first: the distro's bundled pip may be too old to read the other pins' wheels.
"$tools/bin/python" -m pip install -c "$share/tools-constraints.txt" \
    "$(grep '^pip==' "$share/tools.txt")"
"$tools/bin/python" -m pip install -c "$share/tools-constraints.txt" -r "$share/tools.txt"
"$tools/bin/python" -m pip check
"$tools/bin/python" -m pip freeze --all > "$share/tools.lock"
"$tools/bin/pip-compile" --version
if [ -x "$tools/bin/uv" ]; then "$tools/bin/uv" --version; fi
"""

_BASE_DOCKERFILE = 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n'


@dataclass(frozen=True)
class BuilderImage:
    """A builder image known to exist, with what a build manifest records about it."""

    tag: str
    image_id: str  # the engine's content id (sha256:...): the builder image digest
    distro: str
    arch: Arch
    python: str
    digest: str  # of the definition; also the tag's suffix
    tools: str = TOOLS_PREFIX  # venv with pip, pip-tools, build, virtualenv, (uv)
    built: bool = False  # whether this ensure() had to build it

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "image_id": self.image_id, "distro": self.distro,
                "arch": self.arch.value, "python": self.python, "digest": self.digest,
                "tools": self.tools, "built": self.built}


@dataclass(frozen=True)
class BuilderRow:
    distro: str
    arch: Arch
    tag: str
    present: bool  # some image of this distro/arch exists, current or not
    up_to_date: bool  # the image for the current definition exists
    runnable_here: bool
    image_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"distro": self.distro, "arch": self.arch.value, "tag": self.tag,
                "present": self.present, "up_to_date": self.up_to_date,
                "runnable_here": self.runnable_here, "image_id": self.image_id}


@dataclass(frozen=True)
class PruneResult:
    removed: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)  # tag and why it stayed
    removed_containers: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "kept": self.kept,
                "removed_containers": self.removed_containers, "dry_run": self.dry_run}


@dataclass(frozen=True)
class Definition:
    """Everything an image is built from, and the tags that digest names."""

    distro: Distro
    arch: Arch
    base_tag: str
    base_digest: str
    tag: str
    digest: str
    sources: tuple[str, ...]  # apt source lines of a bootstrapped base
    apt_options: tuple[str, ...]
    files: dict[str, bytes]  # the builder's build context, by relative path
    build_args: dict[str, str]


# -- definitions and digests ----------------------------------------------------------------


@lru_cache(maxsize=1)
def host_apt_options() -> tuple[str, ...]:
    """The host's apt options from ``_APT_KEYS`` (e.g. ``Acquire::Check-Valid-Until "false"``)."""
    if host.which("apt-config") is None:
        return ()  # not a Debian-family host: nothing to propagate
    proc = host.run(["apt-config", "dump"], error=BuilderError,
                    needed_for="to read the host's apt options")
    if proc.returncode != 0:
        return ()
    found = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in _APT_KEYS and re.fullmatch(r'"[A-Za-z0-9]+";', value):
            found.append(f"{key} {value.rstrip(';')}")
    return tuple(sorted(found))


def _where(distro: Distro) -> str:
    return f"builders/{distro.directory.name}/builder.yaml"


def _apt_sources(distro: Distro, arch: Arch) -> tuple[str, ...]:
    boot = distro.bootstrap
    raw = distro.raw.get("bootstrap", {})
    if boot.method != "mmdebstrap":
        return ()
    problems = []
    if not boot.mirror or not re.fullmatch(r"https?://[A-Za-z0-9.:/_~-]+", boot.mirror):
        problems.append(f"bootstrap.mirror {boot.mirror!r} is not an http(s) URL")
    if not boot.suite or not _WORD.match(boot.suite):
        problems.append(f"bootstrap.suite {boot.suite!r} is not a suite name")
    if not all(_WORD.match(c) for c in boot.components):
        problems.append(f"bootstrap.components {list(boot.components)!r} are not component names")
    security = raw.get("security")
    if security and not re.fullmatch(r"https?://[A-Za-z0-9.:/_~-]+", str(security)):
        problems.append(f"bootstrap.security {security!r} is not an http(s) URL")
    if problems:
        raise BuilderError(f"{_where(distro)}: " + "; ".join(problems))
    comps = " ".join(boot.components)
    lines = [f"deb {boot.mirror} {boot.suite} {comps}"]
    if raw.get("updates", True):
        lines.append(f"deb {boot.mirror} {boot.suite}-updates {comps}")
    security_arches = raw.get("security_arches")
    if security and (security_arches is None
                     or arch in {Arch.parse(a) for a in security_arches}):
        lines.append(f"deb {security} {boot.suite}-security {comps}")
    return tuple(lines)


def _pins(distro: Distro, key: str, *, required: bool) -> list[str]:
    pins = distro.raw.get(key)
    if pins is None and not required:
        return []
    if not isinstance(pins, list) or (required and not pins):
        raise BuilderError(f"{_where(distro)}: '{key}' must be a list of name==version pins",
                           hint="the builder's tooling is pinned per builder; see debian12")
    bad = [p for p in pins if not isinstance(p, str) or not _PIN.match(p)]
    if bad:
        raise BuilderError(f"{_where(distro)}: {key}: not an exact pin: {', '.join(map(str, bad))}",
                           hint="write name==version")
    if key == "tools" and not any(p.startswith("pip==") for p in pins):
        raise BuilderError(f"{_where(distro)}: tools must pin pip (pip==...)")
    return list(pins)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def docker_arch(arch: Arch) -> str:
    """How the engine spells an arch in ``docker image inspect`` (Architecture)."""
    return arch.platform.split("/", 1)[1]


def definition(distro: Distro, arch: Arch, settings: Settings) -> Definition:
    """Compute the tags of the base and builder images for distro/arch from their inputs."""
    if not distro.supports(arch):
        raise BuilderError(f"{distro.name} has no {arch.value} builder",
                           hint=f"{_where(distro)} lists arches: "
                                + ", ".join(a.value for a in distro.arches))
    bad = [p for p in distro.build_packages if not _PACKAGE.match(p)]
    if bad:
        raise BuilderError(f"{_where(distro)}: build_packages: not a package name: "
                           + ", ".join(bad))
    apt_options = host_apt_options() if distro.family_obj.repository == "apt" else ()
    sources = _apt_sources(distro, arch)
    boot = distro.bootstrap
    if boot.method == "registry":
        if not boot.image or not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", boot.image):
            raise BuilderError(f"{_where(distro)}: bootstrap.image {boot.image!r} "
                               "is not an image reference")
    elif boot.method != "mmdebstrap":
        raise BuilderError(f"{_where(distro)}: bootstrap.method '{boot.method}' is unknown",
                           hint="use mmdebstrap or registry")
    base_inputs = {"recipe": RECIPE_VERSION, "method": boot.method, "arch": arch.value,
                   "image": boot.image, "sources": sources, "apt_options": apt_options,
                   "variant": "minbase"}
    base_digest = _sha(json.dumps(base_inputs, sort_keys=True).encode())[:12]
    base_tag = f"{BASE_REPO}/{distro.name}:{arch.value}-{base_digest}"

    files: dict[str, bytes] = {}
    for path in sorted(distro.directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(distro.directory).as_posix()] = path.read_bytes()
    if "Dockerfile" not in files:
        # The family's shared Dockerfile, unless the distro's own folder overrides it.
        shared = distro.directory.parent / f"Dockerfile.{distro.family}"
        if not shared.is_file():
            raise BuilderError(f"neither builders/{distro.directory.name}/Dockerfile nor "
                               f"builders/{shared.name} exists",
                               hint="a builder needs a Dockerfile: its own or its family's")
        files["Dockerfile"] = shared.read_bytes()
    tools = _pins(distro, "tools", required=True)
    constraints = _pins(distro, "tools_constraints", required=False)
    files["giftbox/tools.txt"] = "".join(f"{p}\n" for p in tools).encode()
    files["giftbox/tools-constraints.txt"] = "".join(f"{p}\n" for p in constraints).encode()
    files["giftbox/install-tools.sh"] = INSTALL_TOOLS.encode()
    files["giftbox/apt.conf"] = "".join(f"{o};\n" for o in apt_options).encode()
    # Public certificates: fine in an image, and pip needs them while the image is built.
    files["giftbox/ca-bundle.crt"] = settings.ca_bundle.read_bytes() if settings.ca_bundle \
        else b""
    build_args = {"BASE": base_tag, "PYTHON": distro.python,
                  "BUILD_PACKAGES": " ".join(distro.build_packages)}
    inputs = {"recipe": RECIPE_VERSION, "base": base_tag, "args": build_args,
              "files": {name: _sha(data) for name, data in files.items()}}
    digest = _sha(json.dumps(inputs, sort_keys=True).encode())[:12]
    return Definition(distro=distro, arch=arch, base_tag=base_tag, base_digest=base_digest,
                      tag=f"{BUILDER_REPO}/{distro.name}:{arch.value}-{digest}", digest=digest,
                      sources=sources, apt_options=apt_options, files=files,
                      build_args=build_args)


# -- what the archive serves ----------------------------------------------------------------

# A Release file read less than this long ago is trusted (an archive drops an arch rarely).
ARCHIVE_TTL = 6 * 3600
# mmdebstrap against a mirror caught mid-sync is tried again: settings.mirror_retries times,
# settings.mirror_retry_delay seconds apart.
_MID_SYNC = ("Mirror sync in progress", "File has unexpected size", "Hash Sum mismatch",
             "Clearsigned file isn't valid")


@dataclass(frozen=True)
class Served:
    """What a suite's Release says about one arch: served, not served, or unknown (offline)."""

    distro: str
    arch: Arch
    url: str  # the Release file read
    suite: str
    arches: tuple[str, ...] | None  # Architectures: as the archive spells them; None: unknown

    @property
    def known(self) -> bool:
        return self.arches is not None

    @property
    def ok(self) -> bool:
        """Served, or unknown (an unreachable archive is the bootstrap's to report)."""
        return self.arches is None or self.arch.deb in self.arches

    def problem(self) -> str:
        return (f"{self.distro}/{self.arch.value} cannot be built: the archive's {self.suite} "
                f"suite does not serve {self.arch.deb} (Architectures: in {self.url} lists "
                f"{' '.join(self.arches or ())})")

    def as_dict(self) -> dict[str, Any]:
        return {"distro": self.distro, "arch": self.arch.value, "suite": self.suite,
                "release": self.url, "served": self.ok if self.known else None,
                "archive_arches": list(self.arches) if self.arches is not None else None}


def release_architectures(text: str) -> tuple[str, ...] | None:
    """``Architectures:`` of a Release/InRelease file (None when it has no such field)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == "Architectures":
            return tuple(value.split())
    return None


def _fetch_release(mirror: str, suite: str, timeout: float) -> tuple[str, str] | None:
    for name in ("InRelease", "Release"):
        url = f"{mirror.rstrip('/')}/dists/{suite}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                return url, response.read(4 * 1024 * 1024).decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return None


def served(distro: Distro, arch: Arch, settings: Settings, *, timeout: float = 15.0) -> Served:
    """Whether the suite distro bootstraps from serves arch, read from its Release file
    (cached for ``ARCHIVE_TTL``). Distros that are pulled from a registry: unknown."""
    boot = distro.bootstrap
    if boot.method != "mmdebstrap" or not boot.mirror or not boot.suite:
        return Served(distro.name, arch, "", str(boot.suite or ""), None)
    url = f"{boot.mirror.rstrip('/')}/dists/{boot.suite}/InRelease"
    cache = settings.cache_dir / "archive" / (_sha(url.encode())[:16] + ".json")
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(cache.read_text())
        if time.time() - float(data["fetched"]) < ARCHIVE_TTL:
            return Served(distro.name, arch, data["url"], boot.suite, tuple(data["arches"]))
    fetched = _fetch_release(boot.mirror, boot.suite, timeout)
    arches = release_architectures(fetched[1]) if fetched else None
    if fetched is None or arches is None:
        return Served(distro.name, arch, url, boot.suite, None)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(cache)
    tmp.write_text(json.dumps({"url": fetched[0], "arches": list(arches),
                               "fetched": time.time()}))
    tmp.replace(cache)
    return Served(distro.name, arch, fetched[0], boot.suite, arches)


def check_served(distro: Distro, arch: Arch, settings: Settings) -> None:
    """Refuse, naming suite and arch, a cell whose archive does not serve the arch."""
    s = served(distro, arch, settings)
    if not s.ok:
        raise BuilderError(s.problem(),
                           hint=f"drop {arch.value} from {_where(distro)}'s arches (or the "
                                "spec's matrix), or point bootstrap.mirror at an archive that "
                                f"serves {arch.deb} (for an LTS suite: its archive's mirror)")


# -- the bootstrap's own checks -------------------------------------------------------------

# What a minbase bootstrap always has: a shell, dpkg and apt, and these packages installed.
_ESSENTIAL_FILES = (("bin/sh", "usr/bin/sh"), ("usr/bin/dpkg",), ("usr/bin/apt-get",),
                    ("etc/os-release", "usr/lib/os-release"))
_ESSENTIAL_PACKAGES = ("base-files", "bash", "coreutils", "dpkg", "libc6", "apt")


def _status_packages(status: str) -> dict[str, tuple[str, str]]:
    """package -> (Status, Architecture) from a dpkg status file."""
    out: dict[str, tuple[str, str]] = {}
    for block in status.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" "):
                fields[key] = value.strip()
        if "Package" in fields:
            out[fields["Package"]] = (fields.get("Status", ""), fields.get("Architecture", ""))
    return out


def check_rootfs(rootfs: Path, distro: Distro, arch: Arch) -> None:
    """The bootstrapped tarball is a system of this arch before it is imported: the essential
    files are there and the essential packages installed for ``arch``."""
    what = f"the {distro.name} {arch.value} bootstrap ({rootfs.stat().st_size} bytes)"
    names: set[str] = set()
    status = None
    try:
        with tarfile.open(rootfs) as tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                names.add(name)
                if name == "var/lib/dpkg/status" and member.isfile():
                    handle = tar.extractfile(member)
                    status = handle.read().decode("utf-8", errors="replace") if handle else ""
    except (tarfile.TarError, OSError) as exc:
        raise BuilderError(f"{what} is not a readable tarball: {exc}; nothing was imported",
                           hint="run `giftbox builder ensure` again; if it repeats, try "
                                "mmdebstrap by hand") from None
    missing = ["/" + alts[0] for alts in _ESSENTIAL_FILES if not any(a in names for a in alts)]
    packages = _status_packages(status or "")
    absent = [p for p in _ESSENTIAL_PACKAGES
              if not packages.get(p, ("", ""))[0].endswith(" installed")]
    wrong = sorted({a for p, (_s, a) in packages.items()
                    if p in _ESSENTIAL_PACKAGES and a not in ("all", arch.deb, "")})
    if missing or absent or wrong:
        parts = []
        if missing:
            parts.append("no " + ", ".join(missing))
        if absent:
            parts.append("essential packages not installed: " + ", ".join(absent))
        if wrong:
            parts.append(f"packages for {', '.join(wrong)} instead of {arch.deb}")
        raise BuilderError(f"{what} is not a usable {distro.name} system: " + "; ".join(parts)
                           + "; nothing was imported",
                           hint=f"check that {distro.bootstrap.mirror} serves "
                                f"{distro.bootstrap.suite}/{arch.deb} (its Release's "
                                "Architectures:) and that mmdebstrap's output has no errors")


# A package file its own index lists is missing from the pool: the pool is behind the index.
_POOL_404 = re.compile(r"Failed to fetch \S+/pool/\S+\s+404\b")


def _mid_sync(tail: collections.deque[str] | list[str]) -> str | None:
    """The apt error line that says a mirror is mid-sync, if any."""
    for line in tail:
        if any(marker in line for marker in _MID_SYNC) or _POOL_404.search(line):
            return line.strip()
    return None


# -- ensure ---------------------------------------------------------------------------------


def _builder_image(d: Definition, image: Image, built: bool) -> BuilderImage:
    return BuilderImage(tag=d.tag, image_id=image.id, distro=d.distro.name, arch=d.arch,
                        python=d.distro.python, digest=d.digest, built=built)


@contextlib.contextmanager
def _lock(settings: Settings, name: str) -> Iterator[None]:
    # Two giftbox runs ensuring the same builder would both bootstrap it: let one wait.
    locks = settings.cache_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(distro: str | Distro, arch: str | Arch, settings: Settings,
           reporter: Reporter = NULL_REPORTER, *,
           pull_timeout: float = DEFAULT_PULL_TIMEOUT,
           engine: Engine | None = None) -> BuilderImage:
    """The builder image for distro/arch, bootstrapping and building what is missing.

    ``engine``: the command's, when it has one (left open); else one for this call."""
    dist = distro if isinstance(distro, Distro) else get_distro(settings.builders_dir, distro)
    arch = arch if isinstance(arch, Arch) else Arch.parse(arch)
    d = definition(dist, arch, settings)
    check_platform(arch)
    with engine_for(settings, engine) as engine:
        image = engine.image(d.tag)
        if image is not None:
            reporter.detail(f"{d.tag}: up to date")
            return _builder_image(d, image, built=False)
        with _lock(settings, f"{dist.name}-{arch.value}"):
            image = engine.image(d.tag)  # another run may have built it while we waited
            if image is not None:
                return _builder_image(d, image, built=False)
            if not engine.exists(d.base_tag):
                if dist.bootstrap.method == "mmdebstrap":
                    check_served(dist, arch, settings)
                with reporter.stage(f"base image {dist.name}/{arch.value}"):
                    if dist.bootstrap.method == "mmdebstrap":
                        _bootstrap_debian(engine, d, settings, reporter)
                    else:
                        _pull_base(engine, d, reporter, pull_timeout)
            with reporter.stage(f"builder image {dist.name}/{arch.value}"):
                image = _build_builder(engine, d, settings, reporter)
            reporter.detail(f"{d.tag}: built ({image.id[:19]})")
            return _builder_image(d, image, built=True)


def _scratch_dir(settings: Settings, prefix: str) -> tempfile.TemporaryDirectory[str]:
    tmp = settings.cache_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=tmp, prefix=prefix)


def _bootstrap_debian(engine: Engine, d: Definition, settings: Settings,
                      reporter: Reporter) -> None:
    host.find("mmdebstrap", BuilderError, f"to bootstrap the {d.distro.name} base image")
    with _scratch_dir(settings, f"base-{d.distro.name}-{d.arch.value}-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        args = ["mmdebstrap", "--variant=minbase", f"--architectures={d.arch.deb}", "--format=tar",
                *(f"--aptopt={o}" for o in d.apt_options),
                str(d.distro.bootstrap.suite), str(rootfs), *d.sources]
        reporter.detail(f"mmdebstrap {d.distro.bootstrap.suite} {d.arch.deb} from "
                        + ", ".join(mask_url(s.split()[1]) + " " + s.split()[2]
                                    for s in d.sources))
        step = f"mmdebstrap of {d.distro.name} ({d.arch.deb})"
        retries, delay = settings.mirror_retries, settings.mirror_retry_delay
        for attempt in range(1, max(retries, 1) + 1):
            code, tail = _stream(args, reporter)
            if code == 0:
                break
            synced = _mid_sync(tail)
            if synced is None:
                _raise_failed(step, code, tail)
            if attempt < retries:
                reporter.info(f"==> the mirror looks mid-sync ({synced}); trying again in "
                              f"{delay:.0f} s (attempt {attempt + 1} of {retries})")
                rootfs.unlink(missing_ok=True)
                time.sleep(delay)
                continue
            raise BuilderError(
                f"cannot bootstrap {d.distro.name}/{d.arch.value}: the mirror was caught "
                f"mid-sync for {d.distro.bootstrap.suite} ({d.arch.deb}) {retries} times, "
                f"{delay:.0f} s apart: {synced}",
                hint="while a mirror syncs, its indexes disagree with its Release file or "
                     "with its pool: "
                     "try again later, or set bootstrap.mirror to another mirror in "
                     f"{_where(d.distro)} (GIFTBOX_MIRROR_RETRIES and "
                     "GIFTBOX_MIRROR_RETRY_DELAY set how long to insist)")
        check_rootfs(rootfs, d.distro, d.arch)
        (Path(tmp) / "Dockerfile").write_text(_BASE_DOCKERFILE)
        labels = _labels(d, "base", d.base_digest)
        _docker_build(engine, Path(tmp), d.base_tag, d.arch, {}, labels, reporter,
                      what=f"the {d.distro.name} {d.arch.value} base image", secrets_=())


def _run_streaming(argv: list[str], reporter: Reporter, *, step: str) -> None:
    code, tail = _stream(argv, reporter)
    if code != 0:
        _raise_failed(step, code, tail)


def _raise_failed(step: str, code: int, tail: list[str]) -> None:
    failing = [line for line in tail if line.startswith("E:")]
    raise BuilderError(f"{step} failed (exit {code})" + (f": {failing[0]}" if failing else ""),
                       hint="last output:\n" + "\n".join(tail))


def _stream(argv: list[str], reporter: Reporter) -> tuple[int, list[str]]:
    """Run argv, every line to the reporter; its exit code and last 25 lines."""
    tail: collections.deque[str] = collections.deque(maxlen=25)
    proc = host.popen(argv, error=BuilderError, needed_for=f"to run {argv[0]}",
                      stderr=host.STDOUT)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                tail.append(line)
                reporter.detail(line)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, list(tail)


def _pull_base(engine: Engine, d: Definition, reporter: Reporter, timeout: float) -> None:
    ref = str(d.distro.bootstrap.image)
    local_image = engine.image(ref)
    if local_image is not None and local_image.architecture == docker_arch(d.arch):
        # An image the operator `docker load`ed under the upstream name counts.
        reporter.detail(f"using the local {ref} ({d.arch.platform})")
        image = local_image
    else:
        reporter.detail(f"pulling {ref} for {d.arch.platform}")
        try:
            image = engine.pull(ref, platform=d.arch.platform, timeout=timeout)
        except EngineError as exc:
            raise BuilderError(
                f"cannot get the {d.distro.name} base image for {d.arch.value}: pulling "
                f"{ref} ({d.arch.platform}) failed, no registry was reachable: {exc.reason}",
                hint=f"Either point the engine at a registry mirror you can reach "
                     f"(\"registry-mirrors\" in /etc/docker/daemon.json, restart dockerd), "
                     f"or load the image by hand: `docker load -i image.tar`, then tag it "
                     f"{ref} (it must be {d.arch.platform}) or {d.base_tag}; then run "
                     f"`giftbox builder ensure {d.distro.name} --arch {d.arch.value}` "
                     "again.") from None
    if image.architecture != docker_arch(d.arch):
        raise BuilderError(f"{ref} is {image.architecture}, not {docker_arch(d.arch)}",
                           hint=f"load or pull the {d.arch.platform} variant of {ref}")
    engine.tag(image.id, d.base_tag)


def _labels(d: Definition, kind: str, digest: str) -> dict[str, str]:
    return {LABEL_PREFIX + "kind": kind, LABEL_PREFIX + "distro": d.distro.name,
            LABEL_PREFIX + "arch": d.arch.value, LABEL_PREFIX + "digest": digest,
            LABEL_PREFIX + "python": d.distro.python, LABEL_PREFIX + "recipe": RECIPE_VERSION}


def _pip_conf(settings: Settings) -> str:
    lines = ["[global]", f"index-url = {settings.index_url}"]
    if settings.extra_index_urls:
        lines.append("extra-index-url = " + " ".join(settings.extra_index_urls))
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _one_shot_config(body: str) -> Iterator[str]:
    """Serve ``body`` on 127.0.0.1 under a random path for the duration of a build.

    The classic builder has no build secrets: a build-arg or a COPY would keep index credentials
    in the image forever. The URL handed to the build is dead once the build is over.
    """
    token = secrets.token_urlsafe(24)
    payload = body.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != f"/{token}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    from giftbox.loopback import serve

    with serve(Handler, name="giftbox-builder-config") as base:
        yield f"{base}/{token}"


def _build_builder(engine: Engine, d: Definition, settings: Settings,
                   reporter: Reporter) -> Image:
    with _scratch_dir(settings, f"builder-{d.distro.name}-{d.arch.value}-") as tmp:
        for name, data in d.files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        with _one_shot_config(_pip_conf(settings)) as url:
            args = {**d.build_args, "GIFTBOX_SECRETS_URL": url}
            hidden = url_secrets([settings.index_url, *settings.extra_index_urls])
            return _docker_build(engine, Path(tmp), d.tag, d.arch, args,
                                 {**_labels(d, "builder", d.digest),
                                  LABEL_PREFIX + "tools": TOOLS_PREFIX},
                                 reporter, what=f"the {d.distro.name} {d.arch.value} builder",
                                 secrets_=hidden)


def _docker_build(engine: Engine, context: Path, tag: str, arch: Arch,
                  build_args: dict[str, str], labels: dict[str, str], reporter: Reporter, *,
                  what: str, secrets_: tuple[str, ...]) -> Image:
    tail: collections.deque[str] = collections.deque(maxlen=25)
    step = "preparing the build"
    error: str | None = None

    def show(line: str) -> None:
        nonlocal step
        line = mask(_ANSI.sub("", line).rstrip(), secrets_)
        if not line.strip():
            return
        if line.startswith("Step "):
            step = line
        tail.append(line)
        reporter.detail(line)

    try:
        for line in engine.build(context, tag=tag, platform=arch.platform,
                                 build_args=build_args, labels=labels):
            show(line)
    except EngineError as exc:
        error = mask(exc.reason, secrets_)
    if error is None:
        image = engine.image(tag)
        if image is not None:
            return image
        error = "the engine reported no error but the image is missing"
    # apt, dnf and pip say what went wrong in their own error lines; the engine only says
    # "returned a non-zero code".
    culprit = next((line.strip() for line in tail
                    if line.lstrip().startswith(("E: ", "ERROR: ", "Error: "))), None)
    raise BuilderError(f"building {what} failed at {step}: {error.splitlines()[0]}"
                       + (f"\n{culprit}" if culprit else ""),
                       hint="last output:\n" + "\n".join(tail))


# -- list and prune -------------------------------------------------------------------------


def _all_tags(engine: Engine) -> dict[str, str]:
    """Every giftbox base/builder tag present, with its image id."""
    return engine.tags(f"{BASE_REPO}/", f"{BUILDER_REPO}/")


def _definitions(settings: Settings) -> list[Definition]:
    return [definition(dist, arch, settings)
            for dist in load_distros(settings.builders_dir).values() for arch in dist.arches]


def list_builders(settings: Settings, engine: Engine | None = None) -> list[BuilderRow]:
    """One row per distro and arch the builders/ folder defines."""
    with engine_for(settings, engine) as engine:
        tags = _all_tags(engine)
    rows = []
    for d in _definitions(settings):
        prefix = f"{BUILDER_REPO}/{d.distro.name}:{d.arch.value}-"
        rows.append(BuilderRow(distro=d.distro.name, arch=d.arch, tag=d.tag,
                               present=any(t.startswith(prefix) for t in tags),
                               up_to_date=d.tag in tags, runnable_here=d.distro.runnable_here,
                               image_id=tags.get(d.tag)))
    return rows


def _pid_alive(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}").stat()
    except FileNotFoundError:
        return False
    return True


def prune(settings: Settings, dry_run: bool = False, reporter: Reporter = NULL_REPORTER,
          engine: Engine | None = None) -> PruneResult:
    """Remove giftbox images whose tag digest is no longer current, and containers whose
    giftbox process is gone (killed with SIGKILL, so it could not clean up)."""
    current = set()
    for d in _definitions(settings):
        current.update({d.tag, d.base_tag})
    result = PruneResult(dry_run=dry_run)
    with engine_for(settings, engine) as engine:
        for container in engine.containers(LABEL):
            owner = container.labels.get(OWNER_LABEL, "")
            if owner.isdigit() and not _pid_alive(int(owner)):
                result.removed_containers.append(container.name)
                if not dry_run:
                    engine.remove_container(container.name)
        # Builders before bases: a base is still referenced by the builders made from it.
        stale = sorted((t for t in _all_tags(engine) if t not in current),
                       key=lambda t: (not t.startswith(BUILDER_REPO), t))
        for tag in stale:
            if dry_run:
                result.removed.append(tag)
                reporter.detail(f"would remove {tag}")
                continue
            try:
                engine.remove_image(tag)
            except EngineError as exc:
                result.kept.append({"tag": tag, "reason": exc.reason})
                reporter.detail(f"kept {tag}: {exc.reason}")
                continue
            result.removed.append(tag)
            reporter.detail(f"removed {tag}")
    return result
