"""The wheelhouse: every wheel a target's locks need, per release + distro + arch + Python ABI.

One wheelhouse serves every project of a release on one target: a wheel built from an sdist
(under qemu that can take an hour for cryptography) is built once and then reused by nova,
keystone and the client alike. It lives in the cache::

    ~/.cache/giftbox/wheelhouse/2026.1-debian12-ppc64le-cp311/*.whl

and travels as a PEP 503 index directory (``export``), which another machine ``import``s after
checking every wheel against the locks and the target's tags, or reads from ``serve``::

    DEST/simple/index.html                   the projects
    DEST/simple/<project>/index.html         links to ../../files/<wheel>#sha256=<hex>
    DEST/files/<wheel>
    DEST/giftbox-wheelhouse.json             target, and per wheel: sha256, pin, origin

A wheel's ``origin`` is ``index`` when its sha256 is one the lock pins (downloaded as such) and
``built`` when it was built from the locked sdist: its own hash cannot be in the lock, so the
export records the lock's hashes of the source it was built from and an import accepts it only
when those are the hashes its own lock pins for that requirement.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.tags import Tag
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import Version

from giftbox.distros import Arch, Distro
from giftbox.errors import BuildError
from giftbox.files import sha256_file, temp_beside
from giftbox.gitutil import locked
from giftbox.settings import Settings

MANIFEST = "giftbox-wheelhouse.json"
FORMAT = 1
# The C library each distro ships: a manylinux_X_Y wheel needs glibc >= X.Y.
GLIBC = {"debian11": (2, 31), "debian12": (2, 36), "debian13": (2, 41),
         "ubuntu16.04": (2, 23), "ubuntu22.04": (2, 35), "ubuntu24.04": (2, 39),
         "rocky9": (2, 34), "centos7": (2, 17)}
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_RELEASE_RE = re.compile(r"^# giftbox lock for (?P<project>\S+) on (?P<target>\S+) "
                         r"\(Python [^)]*\), release (?P<release>\S+?)\.$", re.M)


@dataclass(frozen=True)
class Target:
    release: str
    distro: Distro
    arch: Arch

    @property
    def abi(self) -> str:
        return "cp" + self.distro.python.replace(".", "")

    @property
    def slug(self) -> str:
        """``debian12-x86_64``: the distro/arch part of the target's lock file names."""
        return self.distro.slug(self.arch)

    @property
    def name(self) -> str:
        return f"{self.release}-{self.slug}-{self.abi}"

    def as_dict(self) -> dict[str, str]:
        return {"release": self.release, "distro": self.distro.name, "arch": self.arch.value,
                "python": self.distro.python, "abi": self.abi}


def directory(settings: Settings, target: Target) -> Path:
    return settings.cache_dir / "wheelhouse" / target.name


@contextlib.contextmanager
def filling(path: Path) -> Iterator[None]:
    """Exclusive use of a wheelhouse while wheels are added: two builds of one target (or an
    import) never build or write the same wheel twice; the second sees the first's wheels."""
    path.mkdir(parents=True, exist_ok=True)
    with locked(path):
        yield


# -- what fits the target -------------------------------------------------------------------


def _tag_fits(tag: Tag, target: Target) -> bool:
    major, minor = (int(p) for p in target.distro.python.split(".")[:2])
    interp, abi, platform = tag.interpreter, tag.abi, tag.platform
    if interp.startswith("cp"):
        try:
            version = int(interp[2:3]), int(interp[3:] or 0)
        except ValueError:
            return False
        if abi == "abi3":
            if version[0] != major or version[1] > minor:
                return False
        elif interp != f"cp{major}{minor}" or abi not in (f"cp{major}{minor}", "none"):
            return False
    elif interp.startswith("py"):
        if interp not in (f"py{major}", f"py{major}{minor}") or abi != "none":
            return False
    else:
        return False
    if platform == "any":
        return True
    arch = target.arch.value
    if platform == f"linux_{arch}":
        return True
    match = re.fullmatch(rf"manylinux_(\d+)_(\d+)_{arch}", platform)
    if match:
        need: tuple[int, int] | None = (int(match.group(1)), int(match.group(2)))
    else:
        legacy, _, rest = platform.partition("_")
        need = _LEGACY_MANYLINUX.get(legacy) if rest == arch else None
    if need is None:
        return False
    have = GLIBC.get(target.distro.name)
    return have is None or need <= have


def incompatibility(filename: str, target: Target) -> str | None:
    """Why the wheel cannot be installed on target (another arch, ABI, Python, libc), or None."""
    try:
        _name, _version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        return f"not a wheel file name ({exc})"
    if any(_tag_fits(t, target) for t in tags):
        return None
    shown = ".".join(sorted(str(t) for t in tags))
    return (f"its tags ({shown}) do not fit {target.distro.name}/{target.arch.value} "
            f"(Python {target.distro.python}, {target.abi}, glibc "
            + ".".join(map(str, GLIBC.get(target.distro.name, ("?",)))) + ")")


# -- the locks of a target ------------------------------------------------------------------


@dataclass
class LockIndex:
    """The locked requirements of every project of one target: (name, version) -> hashes."""

    hashes: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    where: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # lock files
    files: list[str] = field(default_factory=list)

    def add(self, path: Path, text: str) -> None:
        from giftbox.lock import requirements

        self.files.append(str(path))
        for dep in requirements(text):
            key = (canonicalize_name(dep.name), str(Version(dep.version)))
            self.hashes.setdefault(key, set()).update(dep.hashes)
            self.where.setdefault(key, []).append(str(path))

    @property
    def all_hashes(self) -> set[str]:
        return set().union(*self.hashes.values()) if self.hashes else set()


def target_locks(settings: Settings, target: Target) -> LockIndex:
    """Every committed lock for target's distro/arch whose release is target's."""
    index = LockIndex()
    name = f"{target.slug}.txt"
    for path in sorted(settings.locks_dir.glob(f"*/{name}")):
        text = path.read_text()
        match = _RELEASE_RE.search(text)
        if match and match.group("release") == target.release:
            index.add(path, text)
    return index


def releases(settings: Settings, distro: Distro, arch: Arch) -> list[str]:
    found = set()
    for path in settings.locks_dir.glob(f"*/{distro.slug(arch)}.txt"):
        match = _RELEASE_RE.search(path.read_text())
        if match:
            found.add(match.group("release"))
    return sorted(found)


def _key(filename: str) -> tuple[str, str]:
    name, version, _build, _tags = parse_wheel_filename(filename)
    return canonicalize_name(name), str(version)


def describe(path: Path, locks: LockIndex) -> dict[str, Any] | None:
    """A wheel's manifest entry (sha256, pin, origin, source hashes), or None when no lock of
    the target pins it."""
    try:
        key = _key(path.name)
    except InvalidWheelFilename:
        return None
    pinned = locks.hashes.get(key)
    if pinned is None:
        return None
    sha = sha256_file(path)
    entry: dict[str, Any] = {"sha256": sha, "pin": f"{key[0]}=={key[1]}",
                             "origin": "index" if sha in pinned else "built"}
    if sha not in pinned:
        entry["source_sha256"] = sorted(pinned)
    return entry


# -- export ---------------------------------------------------------------------------------


@dataclass
class ExportResult:
    dest: str
    wheels: int = 0
    built: int = 0
    skipped: list[str] = field(default_factory=list)  # wheels no lock of the target pins

    def as_dict(self) -> dict[str, Any]:
        return {"dest": self.dest, "wheels": self.wheels, "built": self.built,
                "skipped": self.skipped}


def export(settings: Settings, target: Target, dest: Path) -> ExportResult:
    """Write target's wheelhouse to ``dest`` as a PEP 503 index directory with hashes.

    Written aside and renamed into place: ``dest`` is complete or absent."""
    source = directory(settings, target)
    wheels = sorted(source.glob("*.whl")) if source.is_dir() else []
    if not wheels:
        raise BuildError(f"the wheelhouse {source} is empty: nothing to export",
                         hint=f"fill it with a build for {target.distro.name}/"
                              f"{target.arch.value} first, or import one")
    if dest.exists() and any(dest.iterdir()):
        raise BuildError(f"{dest} exists and is not empty",
                         hint="export into a new directory (an export is never merged)")
    locks = target_locks(settings, target)
    result = ExportResult(dest=str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        (tmp / "files").mkdir()
        entries: dict[str, dict[str, Any]] = {}
        with filling(source):
            for wheel in wheels:
                entry = describe(wheel, locks)
                if entry is None:
                    result.skipped.append(wheel.name)
                    continue
                try:
                    os.link(wheel, tmp / "files" / wheel.name)
                except OSError:
                    shutil.copy2(wheel, tmp / "files" / wheel.name)
                entries[wheel.name] = entry
        result.wheels = len(entries)
        result.built = sum(1 for e in entries.values() if e["origin"] == "built")
        _write_index(tmp, entries)
        (tmp / MANIFEST).write_text(json.dumps(
            {"format": FORMAT, "target": target.as_dict(), "locks": locks.files,
             "wheels": entries}, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_index(root: Path, entries: dict[str, dict[str, Any]]) -> None:
    by_project: dict[str, list[str]] = {}
    for name in entries:
        by_project.setdefault(_key(name)[0], []).append(name)
    simple = root / "simple"
    simple.mkdir()
    links = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(by_project))
    (simple / "index.html").write_text(
        f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    for project, names in sorted(by_project.items()):
        (simple / project).mkdir()
        rows = "".join(
            f'<a href="../../files/{urllib.parse.quote(n)}#sha256={entries[n]["sha256"]}">'
            f"{html.escape(n)}</a>\n" for n in sorted(names))
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body>\n{rows}</body></html>\n")


# -- import ---------------------------------------------------------------------------------


@dataclass
class ImportResult:
    source: str
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "added": self.added, "present": self.present}


def _reader(source: str) -> tuple[Any, str]:
    """A function reading a path relative to the exported wheelhouse (a directory or URL)."""
    if re.match(r"^https?://", source):
        base = source.rstrip("/") + "/"

        def read_url(rel: str) -> bytes:
            url = base + urllib.parse.quote(rel)
            try:
                with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310
                    return response.read()  # type: ignore[no-any-return]
            except (urllib.error.URLError, OSError) as exc:
                raise BuildError(f"cannot read {url}: {exc}",
                                 hint="is `giftbox wheelhouse serve` running there?") from None
        return read_url, base
    root = Path(source)

    def read_file(rel: str) -> bytes:
        path = root / rel
        if not path.is_file():
            raise BuildError(f"{path} is missing from the exported wheelhouse",
                             hint="export it again with `giftbox wheelhouse export`")
        return path.read_bytes()
    return read_file, str(root)


def import_(settings: Settings, target: Target, source: str) -> ImportResult:
    """Add an exported wheelhouse (directory or URL) to target's wheelhouse.

    Every wheel is checked first, and nothing is added unless all pass: its bytes match the
    export's sha256, its tags fit the target, a lock of the target pins it, and its sha256 is
    one that lock pins (or, for a wheel built from an sdist, the source hashes it was built
    from are the ones the lock pins)."""
    read, where = _reader(source)
    try:
        manifest = json.loads(read(MANIFEST))
        wheels = manifest["wheels"]
        assert isinstance(wheels, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise BuildError(f"{where}: {MANIFEST} is missing or malformed",
                         hint="import a directory made by `giftbox wheelhouse export`") from None
    locks = target_locks(settings, target)
    if not locks.files:
        raise BuildError(f"no lock for release {target.release} on {target.distro.name}/"
                         f"{target.arch.value} under {settings.locks_dir}",
                         hint="an import is checked against the target's locks: commit them "
                              "first (giftbox lock PROJECT --distro D --arch A)")
    dest = directory(settings, target)
    staged: list[tuple[str, bytes]] = []
    for name, entry in sorted(wheels.items()):
        if "/" in name or name.startswith(".") or not name.endswith(".whl"):
            raise BuildError(f"{where}: {MANIFEST} names {name!r}, not a wheel file name")
        reason = incompatibility(name, target)
        if reason:
            raise BuildError(f"{where}: files/{name} refused: {reason}",
                             hint="import a wheelhouse exported for this target "
                                  f"({target.name}); nothing was imported")
        try:
            key = _key(name)
        except InvalidWheelFilename as exc:
            raise BuildError(f"{where}: files/{name} refused: {exc}") from None
        pinned = locks.hashes.get(key)
        if pinned is None:
            raise BuildError(f"{where}: files/{name} refused: no lock of {target.name} pins "
                             f"{key[0]}=={key[1]}",
                             hint="locks checked: " + ", ".join(locks.files)
                                  + "; nothing was imported")
        data = read(f"files/{name}")
        sha = hashlib.sha256(data).hexdigest()
        if sha != entry.get("sha256"):
            raise BuildError(f"{where}: files/{name} refused: its sha256 {sha} is not the one "
                             f"the export recorded ({entry.get('sha256')})",
                             hint="the file changed after the export; nothing was imported")
        lock_names = ", ".join(locks.where.get(key, []))
        if sha not in pinned:
            sources = set(entry.get("source_sha256") or ())
            if entry.get("origin") != "built" or not sources or not sources <= pinned:
                raise BuildError(
                    f"{where}: files/{name} refused: its sha256 {sha} is not in the lock "
                    f"({lock_names}) for {key[0]}=={key[1]}, and it was not built from the "
                    "source that lock pins",
                    hint="refresh the lock or rebuild the wheelhouse from it; nothing was "
                         "imported")
        staged.append((name, data))
    result = ImportResult(source=where)
    with filling(dest):
        for name, data in staged:
            path = dest / name
            if path.is_file():
                result.present.append(name)
                continue
            tmp = temp_beside(path)
            tmp.write_bytes(data)
            tmp.replace(path)
            result.added.append(name)
    return result


# -- serve ----------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(root: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an exported wheelhouse read-only over HTTP; yields its base URL."""
    from giftbox.loopback import serve_directory

    with serve_directory(root, host, port, name="giftbox-wheelhouse") as base:
        yield base + "/"


# -- before compiling: what must be built from sdist, and can the builder build it ----------

RUST_BACKENDS = frozenset({"maturin", "setuptools-rust"})
# Run in the builder: which compilers it has and whether crates can be fetched.
PROBE = r"""
import json, os, shutil, socket, subprocess
out = {"cc": bool(shutil.which("cc") or shutil.which("gcc")),
       "cargo": bool(shutil.which("cargo")), "rustc": None, "crates": False,
       "crates_source": ""}
if shutil.which("rustc"):
    out["rustc"] = subprocess.run(["rustc", "--version"], stdout=subprocess.PIPE,
                                  universal_newlines=True).stdout.strip()
for home in (os.environ.get("CARGO_HOME", ""), "/root/.cargo", "/usr/local/cargo"):
    for name in ("config.toml", "config"):
        path = os.path.join(home, name)
        if home and os.path.isfile(path) and "replace-with" in open(path).read():
            out["crates"], out["crates_source"] = True, path
if not out["crates"]:
    try:
        socket.create_connection(("index.crates.io", 443), timeout=8).close()
        out["crates"], out["crates_source"] = True, "https://index.crates.io"
    except OSError as exc:
        out["crates_source"] = "index.crates.io: %s" % (exc,)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class SdistBuild:
    pin: str  # name==version
    filename: str
    rust: bool  # its build backend compiles Rust (maturin, setuptools-rust)
    vendored: bool  # its crates ship inside the sdist


def _index_files(settings: Settings, name: str) -> list[dict[str, Any]]:
    from giftbox import source

    files: list[dict[str, Any]] = []
    for index in (settings.index_url, *settings.extra_index_urls):
        if not index.startswith(("http://", "https://")):
            continue
        page = f"{index}/{name}/"
        try:
            with source._http_get(page, settings, credentials_from=index,
                                  accept="application/vnd.pypi.simple.v1+json") as response:
                if "json" not in response.headers.get("Content-Type", ""):
                    continue
                data = json.loads(response.read().decode())
        except Exception:  # noqa: BLE001 - an index we cannot read tells us nothing
            continue
        for entry in data.get("files", []):
            entry["url"] = urllib.parse.urljoin(page, str(entry.get("url", "")))
            files.append(entry)
    return files


def _inspect_sdist(settings: Settings, url: str, sha: str) -> tuple[bool, bool]:
    """(builds Rust, ships its crates) from the sdist's pyproject.toml and members."""
    import tarfile
    import tomllib
    import zipfile

    from giftbox import source

    cache = settings.cache_dir / "sdists" / sha
    path = cache / Path(urllib.parse.urlsplit(url).path).name
    if not path.is_file():
        with source._http_get(url, settings) as response:
            data = response.read()
        if hashlib.sha256(data).hexdigest() != sha:
            return False, False
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    names: list[str] = []
    pyproject = b""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                top = [n for n in names if n.count("/") == 1 and n.endswith("/pyproject.toml")]
                pyproject = archive.read(top[0]) if top else b""
        else:
            with tarfile.open(path) as tar:
                for member in tar:
                    names.append(member.name)
                    if member.name.count("/") == 1 and member.name.endswith("/pyproject.toml"):
                        handle = tar.extractfile(member)
                        pyproject = handle.read() if handle else b""
    except (tarfile.TarError, zipfile.BadZipFile, OSError):
        return False, False
    try:
        requires = tomllib.loads(pyproject.decode()).get("build-system", {}).get("requires", [])
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        requires = []
    backends = {canonicalize_name(re.split(r"[\s<>=!~;\[(]", str(r), maxsplit=1)[0])
                for r in requires}
    # By its build backend: a Cargo.toml alone may be a vendored build system's test data
    # (numpy's sdist carries meson's).
    rust = bool(backends & RUST_BACKENDS)
    vendored = any("/vendor/" in n and n.endswith("/Cargo.toml") for n in names) or \
        any(n.endswith(("/.cargo/config.toml", "/.cargo/config")) for n in names)
    return rust, vendored


def sdist_builds(settings: Settings, target: Target,
                 missing: dict[str, tuple[str, set[str]]]) -> list[SdistBuild]:
    """Which of the missing pins (name -> (version, locked hashes)) have no wheel for target
    among the locked files on the index, so must be built from their sdist here."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[str, tuple[str, set[str]]]) -> SdistBuild | None:
        name, (version, hashes) = item
        files = [f for f in _index_files(settings, name)
                 if (f.get("hashes") or {}).get("sha256") in hashes]
        if not files:
            return None  # not on an index we can read: pip will say
        if any(str(f["filename"]).endswith(".whl")
               and incompatibility(str(f["filename"]), target) is None for f in files):
            return None
        sdists = [f for f in files if str(f["filename"]).endswith((".tar.gz", ".zip"))]
        if not sdists:
            return None
        first = sdists[0]
        rust, vendored = _inspect_sdist(settings, str(first["url"]), first["hashes"]["sha256"])
        return SdistBuild(f"{name}=={version}", str(first["filename"]), rust, vendored)

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = [b for b in pool.map(one, sorted(missing.items())) if b is not None]
    return found


def toolchain_problems(builds: list[SdistBuild], probe: dict[str, Any],
                       target: Target) -> dict[str, str]:
    """pin -> why the builder cannot build it (named before anything is compiled)."""
    where = f"the {target.distro.name}/{target.arch.value} builder"
    problems: dict[str, str] = {}
    for b in builds:
        if not probe.get("cc"):
            problems[b.pin] = f"{b.filename} is built from source and {where} has no C compiler"
        elif b.rust and not (probe.get("cargo") and probe.get("rustc")):
            problems[b.pin] = (f"{b.filename} builds a Rust extension and {where} has no Rust "
                               "toolchain (cargo, rustc): add it to build_packages in "
                               f"builders/{target.distro.name}/builder.yaml")
        elif b.rust and not b.vendored and not probe.get("crates"):
            problems[b.pin] = (f"{b.filename} builds a Rust extension whose crates come from "
                               f"crates.io, which {where} cannot reach "
                               f"({probe.get('crates_source')})")
    return problems


# -- after a failed compile: what was missing -----------------------------------------------

_HEADER_PACKAGES = {"libxml/": "libxml2-dev", "libxslt/": "libxslt1-dev", "ffi.h": "libffi-dev",
                    "openssl/": "libssl-dev", "Python.h": "python3-dev", "yaml.h": "libyaml-dev",
                    "zlib.h": "zlib1g-dev", "libpq-fe.h": "libpq-dev", "mysql.h":
                    "default-libmysqlclient-dev", "pg_config": "libpq-dev"}


def diagnose(output: str) -> str | None:
    """The missing header, tool or crate registry a failed sdist build tells of, or None."""
    match = re.search(r"fatal error: ([\w./+-]+): No such file or directory", output)
    if match:
        header = match.group(1)
        package = next((p for key, p in _HEADER_PACKAGES.items() if header.startswith(key)
                        or header == key), None)
        return f"missing header {header}" + (f" (Debian: {package})" if package else "")
    for pattern, what in (
            (r"(?:index|static)\.crates\.io|failed to download from .*crates", "crates.io is "
             "unreachable from the builder (Rust crates cannot be fetched)"),
            (r"requires rustc ([\d.]+) or newer", "rustc is too old (needs {0})"),
            (r"can't find Rust compiler|cargo: not found|No such file or directory: 'cargo'|"
             r"rustc: not found", "no Rust toolchain (cargo, rustc) in the builder"),
            (r"(?:gcc|cc|x86_64-linux-gnu-gcc|powerpc64le-linux-gnu-gcc)"
             r"(?:': No such file| failed with exit code| not found)", "no C compiler"),
            (r"Package (\S+) was not found in the pkg-config search path",
             "pkg-config cannot find {0} (its -dev package is missing)"),
            (r"(\S+)-config: not found|Error: (\S+)-config not found", "{0}-config is missing "
             "(its -dev package)")):
        found = re.search(pattern, output)
        if found:
            groups = [g for g in found.groups() if g]
            return what.format(*groups) if groups else what
    return None
