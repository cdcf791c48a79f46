"""Package archives read as data: a .deb's ar container and its compressed tar members, the
payload a family's tool streams (``dpkg-deb --fsys-tarfile``'s tar, ``rpm2cpio``'s cpio).

One reader of each format, for the two kinds of reading giftbox does:

* whole and strict (``giftbox.repo.pool``, before a file claims its name in a channel): every
  ar member to its last byte (``ar_members``), every tar member decompressed and walked
  (``list_tar``); anything truncated, damaged or not what it claims is a RepoError;
* a few named files out of a payload as it streams (``payload_files``: ``giftbox diff`` and
  ``giftbox rebuild`` read the manifest and lock a package carries), each at most a given
  size, the rest read past and never stored; the caller stops when it has what it wants.

Nothing here is executed, extracted or written to disk.
"""

from __future__ import annotations

import io
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from giftbox.errors import GiftboxError, PackageError, RepoError

if TYPE_CHECKING:
    import tarfile

    from giftbox.family import Family

# tarfile, giftbox.host and the decompressors are imported on first use: the pool imports this
# module, and giftbox starts fast.

AR_MAGIC = b"!<arch>\n"
MEMBER_COMPRESSIONS = ("", ".gz", ".xz", ".zst", ".bz2")
_DAMAGED = "the file is truncated or damaged; publish the file as built"


# --- ar (a .deb's container) ------------------------------------------------------------------


def ar_members(path: Path) -> list[tuple[str, bytes]]:
    """Every member of the ar archive at ``path``, read to its last byte: (name, data)."""
    members: list[tuple[str, bytes]] = []
    with open(path, "rb") as f:
        if f.read(8) != AR_MAGIC:
            raise RepoError(f"{path} is not a .deb (no ar archive header)")
        while True:
            header = f.read(60)
            if not header:
                break
            if len(header) < 60 or header[58:60] != b"`\n":
                raise RepoError(f"{path} is truncated or damaged: a bad ar member header "
                                f"after {len(members)} member(s)",
                                hint="publish the file as built (dpkg-deb -c must list it)")
            name = header[:16].decode("ascii", errors="replace").strip().rstrip("/")
            size_text = header[48:58].decode("ascii", errors="replace").strip()
            if not size_text.isdigit():
                raise RepoError(f"{path}: ar member {name!r} has no valid size")
            size = int(size_text)
            data = f.read(size)
            if len(data) != size:
                raise RepoError(f"{path} is truncated: ar member {name!r} has {len(data)} of "
                                f"its {size} bytes",
                                hint="publish the whole file (dpkg-deb -c must list it)")
            if size & 1 and f.read(1) != b"\n":
                raise RepoError(f"{path} is truncated after ar member {name!r}")
            members.append((name, data))
    return members


# --- compressed members -------------------------------------------------------------------------


def decompressed(path: Path, member: str, data: bytes) -> Iterator[bytes]:
    """The decompressed bytes of one member (compression by its name), in chunks; raises
    RepoError when it is not a whole stream of its compression."""
    import bz2
    import gzip
    import lzma
    import zlib

    if member.endswith(".zst"):
        yield from _zstd(path, member, data)
        return
    try:
        if member.endswith(".gz"):
            out = gzip.decompress(data)
        elif member.endswith(".xz"):
            out = lzma.decompress(data, format=lzma.FORMAT_XZ)
        elif member.endswith(".bz2"):
            out = bz2.decompress(data)
        else:
            out = data
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
        raise RepoError(f"{path}: member {member} does not decompress: {exc}",
                        hint=_DAMAGED) from None
    yield out


def _zstd(path: Path, member: str, data: bytes) -> Iterator[bytes]:
    import threading

    from giftbox import host

    proc = host.popen(["zstd", "-dcq"], error=RepoError,
                      needed_for=f"to read {path}: its member {member} is zstd-compressed",
                      stdin=host.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        try:
            proc.stdin.write(data)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass  # zstd stopped reading: its exit code says why

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        while chunk := proc.stdout.read(1 << 20):
            yield chunk
    finally:
        proc.stdout.close()
        writer.join()
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        code = proc.wait()
    if code != 0:
        raise RepoError(f"{path}: member {member} does not decompress: {err or f'zstd {code}'}",
                        hint=_DAMAGED)


class _Chunks(io.RawIOBase):
    """A file object over an iterator of byte chunks (tarfile's stream mode reads it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def drain(self) -> None:
        for _ in self._chunks:
            pass


# --- tar ----------------------------------------------------------------------------------------


def _read_exact(stream: IO[bytes], size: int, limit: int | None, what: str) -> bytes:
    if limit is not None and size > limit:
        raise RepoError(f"{what} is {size} bytes: more than the {limit} bytes giftbox reads "
                        "of such a file")
    data = stream.read(size)
    if len(data) != size:
        raise RepoError(f"{what}: the archive ends early")
    return data


def tar_files(stream: IO[bytes], where: str, wanted: Callable[[str], bool],
              limit: int | None = None) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Every entry of the tar archive ``stream`` in order, each with the bytes of a regular
    file whose member name ``wanted`` picks (at most ``limit`` bytes), else None (read past,
    never stored). An archive that is not whole is a RepoError naming ``where``."""
    import tarfile

    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for entry in tar:
                data = None
                if entry.isfile() and wanted(entry.name):
                    handle = tar.extractfile(entry)
                    assert handle is not None
                    data = _read_exact(handle, entry.size, limit, f"{where}: {entry.name}")
                yield entry, data
    except tarfile.TarError as exc:
        raise RepoError(f"{where} is not a whole tar archive: {exc}", hint=_DAMAGED) from None


def list_tar(path: Path, member: str, data: bytes, want: str | None = None) -> bytes | None:
    """Decompress and walk every entry of a .deb's tar member (a truncated or corrupt one
    fails); returns the content of ``want`` (./control) when asked for."""
    chunks = _Chunks(decompressed(path, member, data))
    names = (f"./{want}", want) if want is not None else ()
    found: bytes | None = None
    for entry, content in tar_files(io.BufferedReader(chunks, 1 << 20),
                                    f"{path}: member {member}", lambda name: name in names):
        if entry.name in names:
            if not entry.isfile():
                raise RepoError(f"{path}: {member}'s {want} is not a regular file")
            found = content
    chunks.drain()  # the decompressor's own end-of-stream checks
    return found


# --- cpio (rpm's payload, as rpm2cpio writes it) ------------------------------------------------


def _cpio_exact(stream: IO[bytes], size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise RepoError(f"{what}: the cpio archive ends early")
    return data


def cpio_files(stream: IO[bytes], where: str, wanted: Callable[[str], bool],
               limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """The regular files ``wanted`` picks (by name) of an SVR4 (newc) cpio archive, with their
    data (at most ``limit`` bytes); every other member is read past, never stored. A hard
    link group's data comes with its last link: a wanted name is yielded then."""
    links: dict[int, str] = {}  # inode -> a wanted name whose data comes with a later link
    while True:
        header = _cpio_exact(stream, 110, where)
        if header[:6] not in (b"070701", b"070702"):
            raise RepoError(f"{where}: not a newc cpio archive (magic {header[:6]!r})")
        try:
            ino, mode, _uid, _gid, nlink, _mtime, size, _a, _b, _c, _d, namesize, _chk = (
                int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13))
        except ValueError:
            raise RepoError(f"{where}: a corrupt cpio header") from None
        name = _cpio_exact(stream, namesize, where)[:-1].decode(errors="replace")
        _cpio_exact(stream, (4 - (110 + namesize) % 4) % 4, where)
        if name == "TRAILER!!!":
            return
        regular = stat.S_ISREG(mode)
        named = regular and wanted(name)
        if named and size == 0 and nlink > 1:
            links[ino] = name  # a hard link: its data comes with the group's last
            continue
        carrier = regular and size > 0 and ino in links
        if named or carrier:
            data = _read_exact(stream, size, limit, f"{where}: {name}")
        else:
            remaining = size
            while remaining:
                chunk = stream.read(min(remaining, 1 << 20))
                if not chunk:
                    raise RepoError(f"{where}: the cpio archive ends early")
                remaining -= len(chunk)
            data = b""
        _cpio_exact(stream, (4 - size % 4) % 4, where)
        if carrier:
            yield links.pop(ino), data
        if named:
            yield name, data


# --- a package's payload, as its family's tool streams it -----------------------------------


def _normal(name: str) -> str:
    """An archive member's path without its leading ``./`` or ``/``."""
    return name.removeprefix("./").lstrip("/")


def _payload(stream: IO[bytes], family: Family, where: str, wanted: Callable[[str], bool],
             limit: int | None) -> Iterator[tuple[str, bytes]]:
    if family.payload_format == "cpio":
        yield from cpio_files(stream, where, wanted, limit)
        return
    for entry, data in tar_files(stream, where, wanted, limit):
        if data is not None:
            yield entry.name, data
        elif wanted(entry.name):
            yield entry.name, b""  # a link or directory of that name: there, but no data


def payload_files(path: Path, family: Family, names: tuple[str, ...], *,
                  limit: int | None = None,
                  enough: Callable[[dict[str, bytes]], bool] = lambda found: False,
                  ) -> dict[str, bytes]:
    """The regular files of the package at ``path`` whose base name is one of ``names``
    (path without a leading ``./`` or ``/`` -> bytes), read from its family's payload tool
    (``family.payload_tool``) as it streams; reading stops as soon as ``enough`` says so.
    Raises PackageError ("cannot read ...") with the tool's own complaint when it has one."""
    from giftbox import host

    process = host.popen([*family.payload_tool, str(path)], error=PackageError,
                         needed_for="to read packages")
    assert process.stdout is not None and process.stderr is not None
    found: dict[str, bytes] = {}
    stopped = False
    try:
        for name, data in _payload(process.stdout, family, path.name,
                                   lambda n: PurePosixPath(n).name in names, limit):
            found[_normal(name)] = data
            if enough(found):
                stopped = True  # the rest of the archive is not needed
                break
    except GiftboxError as exc:
        process.kill()
        process.wait()
        err = process.stderr.read().decode(errors="replace").strip()
        raise PackageError(f"cannot read {path}: {err or exc.message}") from None
    finally:
        process.stdout.close()
    if stopped:
        process.kill()
    code = process.wait()
    err = process.stderr.read().decode(errors="replace").strip()
    process.stderr.close()
    if code != 0 and not stopped:
        raise PackageError(f"cannot read {path}: {err or f'exit status {code}'}")
    return found
