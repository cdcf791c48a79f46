"""The content-addressed pool: ``repos/.pool/<sha256[:2]>/<sha256>/<filename>``.

Every artifact's bytes are stored once, read-only, beside a ``meta.json`` of what the package
says about itself (name, version, arch, distro, control stanza). Channels hard-link into the
pool, so publishing, promoting and republishing copy no bytes.

``.pool/by-name/<filename>`` is a symlink to the object a filename was first given to. Creating
a symlink is atomic and fails if the name exists, so the first publisher of a name wins without
any lock, and a later file of the same name with other bytes is refused (invariant 5).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from giftbox.errors import RepoError

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
    def apt_pool_path(self) -> str:
        """Path in a channel's apt tree, Debian-style: pool/main/<initial>/<name>/<file>."""
        initial = self.name[:4] if self.name.startswith("lib") else self.name[0]
        return f"pool/main/{initial}/{self.name}/{self.filename}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PoolObject:
        return cls(**data)  # type: ignore[arg-type]


def hash_file(path: Path) -> tuple[str, str, str, int]:
    """sha256, md5, sha1 and size in one read: apt indexes carry all three digests."""
    sha256, md5, sha1 = hashlib.sha256(), hashlib.md5(), hashlib.sha1()  # noqa: S324
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
            sha1.update(chunk)
            size += len(chunk)
    return sha256.hexdigest(), md5.hexdigest(), sha1.hexdigest(), size


class Pool:
    def __init__(self, repos_dir: Path) -> None:
        self.root = repos_dir / ".pool"

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

    def add(self, source: Path, obj: PoolObject) -> Path:
        """Store ``source``'s bytes as ``obj`` unless already there; return the pool path.

        The object directory is assembled under ``.tmp/`` and renamed into place whole, so a
        pool object either exists complete (bytes and meta) or not at all.
        """
        final = self.object_dir(obj.digest)
        if (final / "meta.json").is_file():
            return final / obj.filename
        tmp_root = self.root / ".tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = tmp_root / f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            data = tmp / obj.filename
            shutil.copyfile(source, data)
            with open(data, "rb") as f:
                os.fsync(f.fileno())
            if hash_file(data)[0] != obj.digest:
                raise RepoError(f"{source} changed while being added to the pool",
                                hint="publish a file nothing else is writing")
            os.chmod(data, 0o444)  # pool bytes are immutable; hard links share the mode
            (tmp / "meta.json").write_text(json.dumps(obj.as_dict(), sort_keys=True))
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


def _control_from_ar(path: Path) -> str | None:
    """The control file of a .deb read directly (ar + control.tar.{gz,xz,}), or None when
    it is compressed in a way only dpkg-deb knows here (zstd). Spares a process per package:
    a bulk publish of a thousand packages is otherwise dominated by dpkg-deb start-ups."""
    import io
    import tarfile

    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            return None
        while header := f.read(60):
            if len(header) < 60:
                return None
            name = header[:16].decode(errors="replace").strip().rstrip("/")
            length = int(header[48:58].decode().strip() or 0)
            if name.startswith("control.tar"):
                if name not in ("control.tar", "control.tar.gz", "control.tar.xz"):
                    return None
                data = f.read(length)
                mode = "r:" if name == "control.tar" else f"r:{name.rsplit('.', 1)[1]}"
                with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:  # type: ignore[call-overload]
                    for member in tar:
                        if member.name in ("./control", "control") and member.isfile():
                            fobj = tar.extractfile(member)
                            return fobj.read().decode() if fobj else None
                return None
            f.seek(length + (length & 1), 1)
    return None


def inspect_deb(path: Path, digest: str, md5: str, sha1: str, size: int) -> tuple[PoolObject, str]:
    """Read the control stanza (directly, or with dpkg-deb for compressions like zstd)."""
    try:
        control = _control_from_ar(path)
    except (OSError, ValueError, EOFError, UnicodeDecodeError):
        control = None
    if control is None:
        from plumbum import local

        code, out, err = local["dpkg-deb"]["--field", str(path)].run(retcode=None)
        if code != 0:
            raise RepoError(f"{path} is not a valid .deb: {err.strip()}")
        control = str(out)
    control = control.rstrip("\n")
    fields: dict[str, str] = {}
    for line in control.splitlines():
        if line and not line[0].isspace() and ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    try:
        name = _check_field(path, "name", fields["package"])
        version = _check_field(path, "version", fields["version"])
        arch = _check_field(path, "architecture", fields["architecture"])
    except KeyError as exc:
        raise RepoError(f"{path}: control has no {exc.args[0].title()} field") from None
    plain = version.split(":", 1)[-1]  # the epoch is not part of Debian filenames
    obj = PoolObject(digest=digest, filename=f"{name}_{plain}_{arch}.deb", kind="deb",
                     name=name, version=version, arch=arch, distro="", size=size, md5=md5,
                     sha1=sha1, control=control)
    return obj, plain


def inspect_rpm(path: Path, digest: str, md5: str, sha1: str, size: int) -> tuple[PoolObject, str]:
    from plumbum import local

    fmt = "%{NAME}\n%|EPOCH?{%{EPOCH}}:{0}|\n%{VERSION}\n%{RELEASE}\n%{ARCH}\n%|SOURCERPM?{bin}:{src}|\n"
    code, out, err = local["rpm"]["-qp", "--nosignature", "--nodigest", "--queryformat", fmt,
                                  str(path)].run(retcode=None)
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
    obj = PoolObject(digest=digest, filename=f"{name}-{version}-{release}.{arch}.rpm",
                     kind="rpm", name=name, version=full, arch=arch, distro="", size=size,
                     md5=md5, sha1=sha1)
    return obj, release


def check_filename(name: str) -> None:
    if not _FILENAME_RE.match(name):
        raise RepoError(f"'{name}' is not a filename a repository can hold")
