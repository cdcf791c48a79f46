"""The content-addressed pool: ``repos/.pool/<sha256[:2]>/<sha256>/<filename>``.

Every artifact's bytes are stored once, read-only, beside a ``meta.json`` of what the package
says about itself (name, version, arch, distro, control stanza). Channels hard-link into the
pool, so publishing, promoting and republishing copy no bytes.

``.pool/by-name/<filename>`` is a symlink to the object a filename was first given to. Creating
a symlink is atomic and fails if the name exists, so the first publisher of a name wins without
any lock, and a later file of the same name with other bytes is refused (invariant 5).

``meta.json`` also names the version of the strict reader (``READER``) that read the bytes
whole: publishing the same bytes again (a no-change build with ``--publish``) hashes them and
takes the pool's reading instead of decompressing every member again, unless the reader has
become stricter since.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from giftbox.errors import RepoError
from giftbox.family import DEB, RPM, Family, get_family
from giftbox.files import sha256_file, temp_beside
from giftbox.repo.archive import MEMBER_COMPRESSIONS, BlockVerdicts, ar_members, list_tar

# What may appear in a published filename: it becomes a path and a URL.
_FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*\.(deb|rpm)$")
_FIELD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~:_-]*$")
_TMP_MAX_AGE = 3600.0  # a pool temp dir this old was left by a killed publish


@dataclass(frozen=True)
class PoolObject:
    """One artifact in the pool, as the package itself describes it."""

    digest: str  # sha256, hex
    filename: str  # canonical: name_version_arch.deb / name-version-release.arch.rpm
    kind: str  # deb | rpm
    name: str
    version: str  # deb: [epoch:]upstream-revision; rpm: [epoch:]version-release
    arch: str  # as the package spells it: amd64, all, x86_64, noarch
    distro: str  # builders/<distro> it was built for
    size: int
    md5: str
    sha1: str
    control: str = ""  # deb only: the control stanza, as dpkg-deb prints it

    @property
    def family(self) -> Family:
        """The package family (``kind`` as the object: ``DEB`` or ``RPM``)."""
        return get_family(self.kind)

    @property
    def tagged(self) -> str:
        """Where its distro tag is (``~deb12``, ``.el9``): a .deb's version without its epoch,
        an .rpm's release."""
        plain = self.version.split(":", 1)[-1]
        return plain if self.family is DEB else plain.rsplit("-", 1)[-1]

    @property
    def apt_pool_path(self) -> str:
        """Path in a channel's apt tree, Debian-style: pool/main/<initial>/<name>/<file>."""
        initial = self.name[:4] if self.name.startswith("lib") else self.name[0]
        return f"pool/main/{initial}/{self.name}/{self.filename}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PoolObject:
        data = {k: v for k, v in data.items() if k != "reader"}
        return cls(**data)  # type: ignore[arg-type]


def _well_formed(obj: PoolObject) -> bool:
    """A meta.json's record is what inspect_deb / inspect_rpm would have made: fields that can
    go into a repository path, and the canonical filename they spell (a hand-edited meta
    cannot route a package elsewhere)."""
    text = (obj.name, obj.version, obj.arch, obj.filename, obj.md5, obj.sha1, obj.control)
    if not all(isinstance(v, str) for v in text) or not isinstance(obj.size, int):
        return False
    if not all(_FIELD_RE.match(v) for v in (obj.name, obj.version, obj.arch)):
        return False
    if obj.filename != canonical_filename(obj.family, obj.name, obj.version, obj.arch):
        return False
    return obj.family is not DEB or bool(
        _DEB_NAME_RE.match(obj.name) and _DEB_VERSION_RE.match(obj.version)
        and _DEB_ARCH_RE.match(obj.arch))


def canonical_filename(family: Family, name: str, version: str, arch: str) -> str:
    """The one filename a package of this family has (the epoch is never part of it):
    name_version_arch.deb, name-version-release.arch.rpm."""
    plain = version.split(":", 1)[-1]
    return f"{name}_{plain}_{arch}.deb" if family is DEB else f"{name}-{plain}.{arch}.rpm"


# The strict reading of a package (inspect_deb, inspect_rpm, archive.py): bump it whenever they
# refuse something they accepted before, and every pool object is read whole again.
READER = 3  # 3: archive.walk_tar, stricter than tarfile (what dpkg-deb writes, nothing else)


class Pool:
    def __init__(self, repos_dir: Path) -> None:
        self.root = repos_dir / ".pool"
        self.repaired: set[str] = set()  # digests add() stored again over a damaged copy
        # the xz blocks of .deb data members this pool has read (see archive.list_tar)
        self.verdicts = BlockVerdicts(self.root / "xz-blocks")

    def object_dir(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def object_path(self, obj: PoolObject) -> Path:
        return self.object_dir(obj.digest) / obj.filename

    def load(self, digest: str) -> PoolObject:
        """The pool object with this digest (promotion starts here)."""
        meta = self.object_dir(digest) / "meta.json"
        try:
            return PoolObject.from_dict(json.loads(meta.read_text()))
        except FileNotFoundError:
            raise RepoError(f"no object {digest} in the pool {self.root}") from None

    def known(self, digest: str, kind: str) -> PoolObject | None:
        """The pool's reading of the bytes with this sha256, when this giftbox's strict reader
        made it (``READER``) and the object is whole; None means read the file whole."""
        where = self.object_dir(digest)
        try:
            data = json.loads((where / "meta.json").read_text())
            if not isinstance(data, dict) or data.get("reader") != READER \
                    or data.get("kind") != kind or data.get("digest") != digest:
                return None
            obj = PoolObject.from_dict(data)
            if not _well_formed(obj) or (where / obj.filename).stat().st_size != obj.size:
                return None
        except (OSError, ValueError, TypeError):
            return None
        return obj

    def _meta(self, obj: PoolObject) -> str:
        return json.dumps({**obj.as_dict(), "reader": READER}, sort_keys=True)

    def add(self, source: Path, obj: PoolObject) -> Path:
        """Store ``source``'s bytes as ``obj`` unless already there; return the pool path.

        The object directory is assembled under ``.tmp/`` and renamed into place whole, so a
        pool object either exists complete (bytes and meta) or not at all.
        """
        final = self.object_dir(obj.digest)
        tmp_root = self.root / ".tmp"
        if (final / "meta.json").is_file():
            if self.known(obj.digest, obj.kind) is not None:
                return final / obj.filename
            held = final / obj.filename
            if held.is_file() and sha256_file(held) == obj.digest:
                # An older reader's object, read whole again just now: say so in its meta,
                # replaced by rename (a reader sees the old meta or the new one).
                tmp_meta = temp_beside(final / "meta.json")
                tmp_meta.write_text(self._meta(obj))
                os.replace(tmp_meta, final / "meta.json")
                return held
            # The pool's copy is damaged or missing: set aside, stored again from ``source``
            # (the caller relinks the channels: ``repaired``).
            self.repaired.add(obj.digest)
            tmp_root.mkdir(parents=True, exist_ok=True)
            aside = tmp_root / f"damaged-{obj.digest[:16]}-{secrets.token_hex(4)}"
            os.rename(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = tmp_root / f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            data = tmp / obj.filename
            shutil.copyfile(source, data)
            with open(data, "rb") as f:
                os.fsync(f.fileno())
            if sha256_file(data) != obj.digest:
                raise RepoError(f"{source} changed while being added to the pool",
                                hint="publish a file nothing else is writing")
            os.chmod(data, 0o444)  # pool bytes are immutable; hard links share the mode
            (tmp / "meta.json").write_text(self._meta(obj))
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "meta.json").is_file():
                    raise
                # Another publisher stored the same bytes first: theirs is as good as ours.
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final / obj.filename

    def claim_name(self, obj: PoolObject) -> None:
        """Bind ``obj.filename`` to ``obj.digest`` for good, or refuse if it names other bytes."""
        names = self.root / "by-name"
        names.mkdir(parents=True, exist_ok=True)
        link = names / obj.filename
        target = f"../{obj.digest[:2]}/{obj.digest}/{obj.filename}"
        try:
            os.symlink(target, link)
            return
        except FileExistsError:
            pass
        existing = os.readlink(link).split("/")[2]
        if existing != obj.digest:
            raise RepoError(
                f"{obj.filename} is already published with different bytes "
                f"(sha256 {existing[:16]}…, this file {obj.digest[:16]}…); a filename must "
                "never name two different files, or clients and mirrors would serve a mix",
                hint="bump the package release (e.g. -1 to -2, or .el9 release 1 to 2) and "
                     "rebuild, so the new build gets a new filename")

    def owner_of(self, filename: str) -> str | None:
        """The digest a filename is bound to, if any."""
        try:
            return os.readlink(self.root / "by-name" / filename).split("/")[2]
        except FileNotFoundError:
            return None

    def clean_tmp(self) -> None:
        """Remove temp dirs left by killed publishers (by age, or a pid that is gone)."""
        tmp_root = self.root / ".tmp"
        if not tmp_root.is_dir():
            return
        now = time.time()
        for entry in tmp_root.iterdir():
            pid = entry.name.split("-", 1)[0]
            alive = True
            if pid.isdigit():
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    pass
            try:
                old = now - entry.lstat().st_mtime > _TMP_MAX_AGE
            except FileNotFoundError:
                continue
            if not alive or old:
                shutil.rmtree(entry, ignore_errors=True)


def _check_field(path: Path, field: str, value: str) -> str:
    if not _FIELD_RE.match(value):
        raise RepoError(f"{path}: package {field} '{value}' has characters that cannot go "
                        "into a repository path")
    return value


# --- reading a .deb whole -------------------------------------------------------------------

# Fields a Packages index generates itself: a control file carrying them would contradict (or
# duplicate) what giftbox writes after it, so such a package is refused.
INDEX_FIELDS = frozenset({"filename", "size", "md5sum", "sha1", "sha256", "sha512",
                          "description-md5", "msdos-filename"})
_CONTROL_FIELD_RE = re.compile(r"^([!-9;-~]+):(.*)$")  # deb822: printable, no colon, no space
_DEB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
_DEB_VERSION_RE = re.compile(
    r"^(?:(?P<epoch>[0-9]+):)?(?P<upstream>[0-9][A-Za-z0-9.+~-]*?)(?:-(?P<rev>[A-Za-z0-9.+~]+))?$")
_DEB_ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def parse_control(data: bytes | str, where: str) -> list[tuple[str, str]]:
    """A binary package's control file, parsed strictly as one deb822 stanza.

    Returns (field, value) pairs in order; a multi-line value keeps its continuation lines
    (each starting with a space or tab). Refused, with the reason: anything not UTF-8, control
    characters, a blank or whitespace-only line (a second stanza), a line that is neither a
    field nor a continuation, a field given twice, a field only an index may carry.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RepoError(f"{where}: the control file is not UTF-8 ({exc.reason} at byte "
                            f"{exc.start})", hint="rebuild the package with UTF-8 fields") \
                from None
    else:
        text = data
    if text.startswith("\ufeff"):
        raise RepoError(f"{where}: the control file starts with a byte-order mark")
    body = text.rstrip("\n")
    if not body:
        raise RepoError(f"{where}: the control file is empty")
    fields: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for n, line in enumerate(body.split("\n"), 1):
        bad = next((c for c in line if (ord(c) < 32 and c != "\t") or ord(c) == 127), None)
        if bad is not None:
            raise RepoError(f"{where}: control line {n} contains the control character "
                            f"{ord(bad):#04x}")
        if not line.strip():
            raise RepoError(f"{where}: control line {n} is blank: a binary package's control "
                            "file is one stanza (a blank line would start a second package "
                            "in the index)", hint="remove the blank line and rebuild")
        if line[0] in " \t":
            if not fields:
                raise RepoError(f"{where}: control line {n} continues a field that was never "
                                "started")
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + line)
            continue
        m = _CONTROL_FIELD_RE.match(line)
        if m is None or line.startswith(("#", "-")):
            raise RepoError(f"{where}: control line {n} is not 'Field: value': {line[:60]!r}")
        name, value = m.group(1), m.group(2).strip(" \t")
        key = name.lower()
        if key in seen:
            raise RepoError(f"{where}: control field {name} is given twice (lines {seen[key]} "
                            f"and {n}): the index and giftbox could read different values",
                            hint="keep one and rebuild")
        if key in INDEX_FIELDS:
            raise RepoError(f"{where}: control field {name} belongs to the repository index, "
                            "not to a package", hint="remove it and rebuild")
        seen[key] = str(n)
        fields.append((name, value))
    return fields


def control_value(fields: list[tuple[str, str]], name: str, where: str) -> str:
    for k, v in fields:
        if k.lower() == name.lower():
            if "\n" in v:
                raise RepoError(f"{where}: control field {name} spans several lines")
            return v
    raise RepoError(f"{where}: control has no {name} field")


def render_control(fields: list[tuple[str, str]]) -> str:
    """The stanza for parsed ``fields`` (no trailing newline): what indexes are built from."""
    return "\n".join(f"{k}: {v}" if v and not v.startswith("\n") else f"{k}:{v}"
                     for k, v in fields)


def read_deb(path: Path, data: bytes, verdicts: BlockVerdicts | None = None) -> bytes:
    """Read a .deb (whose bytes are ``data``) whole: the ar archive to its last byte, every
    member decompressed and its tar listed. Returns the control file's bytes. Raises
    RepoError naming what is wrong. ``verdicts``: the blocks of an xz data member read
    before (see list_tar)."""
    members = ar_members(path, data)
    names = [n for n, _ in members if not n.startswith("_")]  # _gpgorigin & co: signatures
    if (len(names) != 3 or names[0] != "debian-binary"
            or not any(names[1] == f"control.tar{c}" for c in MEMBER_COMPRESSIONS)
            or not any(names[2] == f"data.tar{c}" for c in MEMBER_COMPRESSIONS)
            or members[0][0] != "debian-binary"):
        raise RepoError(f"{path}: ar members are {', '.join(n for n, _ in members) or 'none'}; "
                        "a .deb has debian-binary, control.tar[.gz|.xz|.zst] and data.tar[…]",
                        hint="build it with dpkg-deb")
    by_name = dict(members)
    if by_name["debian-binary"] != b"2.0\n":
        raise RepoError(f"{path}: debian-binary says {bytes(by_name['debian-binary'][:16])!r}, "
                        "not 2.0")
    control = list_tar(path, names[1], by_name[names[1]], want="control")
    if control is None:
        raise RepoError(f"{path}: {names[1]} has no control file")
    list_tar(path, names[2], by_name[names[2]], verdicts=verdicts)
    return control


def read_whole(path: Path, kind: str, data: bytes, digest: str,
               verdicts: BlockVerdicts | None = None) -> PoolObject:
    """Read the artifact at ``path`` (its bytes ``data``, sha256 ``digest``) whole, strictly
    (inspect_deb / inspect_rpm), while md5 and sha1, which indexes carry too, are computed on
    a thread of their own alongside (hashlib lets go of the GIL): of the same bytes."""
    from concurrent.futures import ThreadPoolExecutor

    def md5_sha1() -> tuple[str, str]:
        return hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()  # noqa: S324

    with ThreadPoolExecutor(1) as thread:
        sums = thread.submit(md5_sha1)
        obj = (inspect_deb(path, data, digest, verdicts) if kind == "deb"
               else inspect_rpm(path, digest))
        md5, sha1 = sums.result()
    return replace(obj, md5=md5, sha1=sha1, size=len(data))


# What this process read ahead (read_whole, by ``read_ahead``), by sha256 and kind: the same
# bytes read by the same reader give the same object, so a package read while its lint ran
# is not read again when it is published.
_READ: dict[tuple[str, str], PoolObject] = {}
_READ_LOCK = threading.Lock()


def read_before(digest: str, kind: str) -> PoolObject | None:
    """The object ``read_ahead`` made of these bytes in this process, if it did."""
    with _READ_LOCK:
        return _READ.get((digest, kind))


def read_ahead(path: Path, verdicts: BlockVerdicts | None = None) -> None:
    """Read the package at ``path`` whole now (read_whole), so that publishing these bytes
    later does not read them again. A file that is gone, changed or refused is left to the
    publish, which reads it itself and says why."""
    kind = {".deb": "deb", ".rpm": "rpm"}.get(path.suffix)
    if kind is None:
        return
    try:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        obj = read_whole(path, kind, data, digest, verdicts)
    except (OSError, RepoError):
        return
    with _READ_LOCK:
        _READ[(digest, kind)] = obj


def inspect_deb(path: Path, data: bytes, digest: str,
                verdicts: BlockVerdicts | None = None) -> PoolObject:
    """Read the whole .deb and its control stanza, strictly (see ``parse_control``); its
    md5, sha1 and size are read_whole's."""
    fields = parse_control(read_deb(path, data, verdicts), str(path))
    name = control_value(fields, "Package", str(path))
    version = control_value(fields, "Version", str(path))
    arch = control_value(fields, "Architecture", str(path))
    if not _DEB_NAME_RE.match(name):
        raise RepoError(f"{path}: package name '{name}' is not a Debian package name",
                        hint="lower-case letters, digits, '+', '-' and '.', starting with a "
                             "letter or digit, at least two characters")
    if not _DEB_VERSION_RE.match(version):
        raise RepoError(f"{path}: version '{version}' is not a Debian version",
                        hint="[epoch:]upstream[-revision], the upstream part starting with a "
                             "digit")
    if not _DEB_ARCH_RE.match(arch):
        raise RepoError(f"{path}: architecture '{arch}' is not a Debian architecture")
    for field, value in (("name", name), ("version", version), ("architecture", arch)):
        _check_field(path, field, value)
    obj = PoolObject(digest=digest, filename=canonical_filename(DEB, name, version, arch),
                     kind="deb", name=name, version=version, arch=arch, distro="", size=0,
                     md5="", sha1="", control=render_control(fields))
    return obj


# --- reading an .rpm whole ------------------------------------------------------------------

_RPM_LEAD_MAGIC = b"\xed\xab\xee\xdb"
_RPM_HEADER_MAGIC = b"\x8e\xad\xe8\x01"


def _check_rpm(path: Path) -> None:
    """A real rpm lead and signature header, and rpm's own check of every digest it carries
    (header and payload): a truncated, altered or 'manifest' file is refused."""
    from giftbox import host

    with open(path, "rb") as f:
        lead = f.read(96)
        sig = f.read(8)
    if len(lead) < 96 or lead[:4] != _RPM_LEAD_MAGIC:
        raise RepoError(f"{path} is not an rpm package (no rpm lead): rpm would read a text "
                        "file as a list of other packages", hint="publish the .rpm itself")
    if lead[4] not in (3, 4) or lead[6:8] != b"\x00\x00" or lead[78:80] != b"\x00\x05":
        raise RepoError(f"{path}: the rpm lead is not a binary package's (version "
                        f"{lead[4]}, type {int.from_bytes(lead[6:8], 'big')})")
    if sig[:4] != _RPM_HEADER_MAGIC:
        raise RepoError(f"{path}: no rpm signature header after the lead")
    proc = host.run(["rpm", "-Kv", "--nosignature", "--", path], error=RepoError,
                    needed_for="to check the .rpm packages a channel takes")
    code, out, err = proc.returncode, proc.stdout, proc.stderr
    lines = [line.strip() for line in str(out).splitlines()[1:] if line.strip()]
    bad = [line for line in lines if "OK" not in line.split(":")[-1]]
    header_ok = any(line.startswith("Header ") and line.endswith(": OK") for line in lines)
    payload_ok = any((line.startswith("Payload ") or line.startswith("MD5 "))
                     and line.endswith(": OK") for line in lines)
    if code != 0 or bad or not header_ok or not payload_ok:
        detail = "; ".join(bad) or str(err).strip() or "no header and payload digests"
        raise RepoError(f"{path}: rpm's digest check fails: {detail[:300]}",
                        hint="the file is truncated or damaged; publish the file as built")


def inspect_rpm(path: Path, digest: str) -> PoolObject:
    """rpm's own reading of the whole .rpm (``_check_rpm``) and its header; its md5, sha1
    and size are read_whole's."""
    from giftbox import host

    _check_rpm(path)
    fmt = "%{NAME}\n%|EPOCH?{%{EPOCH}}:{0}|\n%{VERSION}\n%{RELEASE}\n%{ARCH}\n%|SOURCERPM?{bin}:{src}|\n"
    proc = host.run(["rpm", "-qp", "--nosignature", "--nodigest", "--queryformat", fmt, path],
                    error=RepoError, needed_for="to read the .rpm packages a channel takes")
    code, out, err = proc.returncode, proc.stdout, proc.stderr
    if code != 0:
        raise RepoError(f"{path} is not a valid .rpm: {err.strip()}")
    try:
        name, epoch, version, release, arch, what = str(out).split("\n")[:6]
    except ValueError:
        raise RepoError(f"{path}: rpm printed no header for it") from None
    if what != "bin":
        raise RepoError(f"{path} is a source rpm; channels hold binary packages")
    for field, value in (("name", name), ("version", version), ("release", release),
                         ("arch", arch)):
        _check_field(path, field, value)
    full = f"{version}-{release}" if epoch == "0" else f"{epoch}:{version}-{release}"
    obj = PoolObject(digest=digest, filename=canonical_filename(RPM, name, full, arch),
                     kind="rpm", name=name, version=full, arch=arch, distro="", size=0,
                     md5="", sha1="")
    return obj


def check_filename(name: str) -> None:
    if not _FILENAME_RE.match(name):
        raise RepoError(f"'{name}' is not a filename a repository can hold")
