"""Package archives read as data: a .deb's ar container and its compressed tar members, the
payload a family's tool streams (``dpkg-deb --fsys-tarfile``'s tar, ``rpm2cpio``'s cpio).

For the two kinds of reading giftbox does:

* whole and strict (``giftbox.repo.pool``, before a file claims its name in a channel): every
  ar member to its last byte (``ar_members``), every tar member decompressed and walked by a
  reader of its own (``list_tar``, ``walk_tar``: the tar dpkg-deb writes, nothing it has to
  guess at); anything truncated, damaged or not what it claims is a RepoError;
* a few named files out of a payload as it streams (``payload_files``: ``giftbox diff`` and
  ``giftbox rebuild`` read the manifest and lock a package carries), each at most a given
  size, the rest read past and never stored; the caller stops when it has what it wants.

Nothing here is executed, extracted or written to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Callable, Generator, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, NamedTuple

from giftbox import xz
from giftbox.errors import GiftboxError, PackageError, RepoError
from giftbox.files import prune_unused, write_atomic

if TYPE_CHECKING:
    import tarfile

    from giftbox.family import Family

# tarfile, giftbox.host and the decompressors are imported on first use: the pool imports this
# module, and giftbox starts fast.

AR_MAGIC = b"!<arch>\n"
MEMBER_COMPRESSIONS = ("", ".gz", ".xz", ".zst", ".bz2")
_DAMAGED = "the file is truncated or damaged; publish the file as built"


# --- ar (a .deb's container) ------------------------------------------------------------------


def ar_members(path: Path, data: bytes | None = None) -> list[tuple[str, memoryview]]:
    """Every member of the ar archive at ``path`` (whose bytes are ``data`` when the caller
    has read them), to its last byte: (name, its bytes, a view into the file's, not a copy)."""
    if data is None:
        data = path.read_bytes()
    view = memoryview(data)
    if data[:8] != AR_MAGIC:
        raise RepoError(f"{path} is not a .deb (no ar archive header)")
    members: list[tuple[str, memoryview]] = []
    pos = 8
    while pos < len(data):
        header = data[pos:pos + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise RepoError(f"{path} is truncated or damaged: a bad ar member header "
                            f"after {len(members)} member(s)",
                            hint="publish the file as built (dpkg-deb -c must list it)")
        name = header[:16].decode("ascii", errors="replace").strip().rstrip("/")
        size_text = header[48:58].decode("ascii", errors="replace").strip()
        if not size_text.isdigit():
            raise RepoError(f"{path}: ar member {name!r} has no valid size")
        size = int(size_text)
        start = pos + 60
        pos = end = start + size
        if end > len(data):
            raise RepoError(f"{path} is truncated: ar member {name!r} has {len(data) - start} "
                            f"of its {size} bytes",
                            hint="publish the whole file (dpkg-deb -c must list it)")
        if size & 1:
            if data[pos:pos + 1] != b"\n":
                raise RepoError(f"{path} is truncated after ar member {name!r}")
            pos += 1
        members.append((name, view[start:end]))
    return members


# --- compressed members -------------------------------------------------------------------------


def decompressed(path: Path, member: str,
                 data: bytes | memoryview) -> Generator[bytes, None, None]:
    """The decompressed bytes of one member (compression by its name), in chunks; raises
    RepoError when it is not one whole stream of its compression.

    dpkg reads an xz, bzip2 or zstd member's first stream (frame) and ignores whatever
    follows it, where Python's and zstd's readers go on to the next: a member with more
    would install less than giftbox listed, so it is refused. gzip is read to its last
    member by both (zlib's gzread)."""
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
        elif member.endswith((".xz", ".bz2")):
            reader = lzma.LZMADecompressor(format=lzma.FORMAT_XZ) if member.endswith(".xz") \
                else bz2.BZ2Decompressor()
            out = reader.decompress(data)
            if not reader.eof:
                raise EOFError("the stream ends early")
            if reader.unused_data:
                raise _after_first(path, member, len(reader.unused_data), "stream")
        else:
            out = bytes(data)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
        raise RepoError(f"{path}: member {member} does not decompress: {exc}",
                        hint=_DAMAGED) from None
    yield out


def _after_first(path: Path, member: str, extra: int, unit: str) -> RepoError:
    return RepoError(f"{path}: member {member} holds {extra} bytes after its first {unit}: "
                    f"dpkg reads only that {unit}, so what it installs would not be what "
                    "giftbox read", hint="build the package with dpkg-deb")


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_frame_end(data: bytes | memoryview) -> int:
    """Where the zstd frame at the start of ``data`` ends, from its header, its blocks'
    headers and its checksum flag (RFC 8878, 3.1.1), without decompressing it; ValueError
    when it is not a frame, or is cut short."""
    if bytes(data[:4]) != _ZSTD_MAGIC or len(data) < 6:
        raise ValueError("no zstd frame header")
    descriptor = data[4]
    if descriptor & 0x08:
        raise ValueError("a reserved bit of the frame header is set")
    single = (descriptor >> 5) & 1
    pos = 5 + (1 - single) + (0, 1, 2, 4)[descriptor & 3] + \
        (single, 2, 4, 8)[descriptor >> 6]
    while True:
        if pos + 3 > len(data):
            raise ValueError("the frame ends early")
        header = int.from_bytes(data[pos:pos + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        if kind == 3:
            raise ValueError("a block of the reserved type")
        pos += 3 + (1 if kind == 1 else size)  # an RLE block holds one byte
        if header & 1:
            break
    pos += 4 * ((descriptor >> 2) & 1)  # the content checksum
    if pos > len(data):
        raise ValueError("the frame ends early")
    return pos


def _zstd(path: Path, member: str, data: bytes | memoryview) -> Generator[bytes, None, None]:
    import threading

    from giftbox import host

    try:
        end = zstd_frame_end(data)
    except ValueError as exc:
        raise RepoError(f"{path}: member {member} does not decompress: {exc}",
                        hint=_DAMAGED) from None
    if end != len(data):
        raise _after_first(path, member, len(data) - end, "zstd frame")

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


class BlockVerdicts:
    """The xz blocks the pool has read whole and found to hold a run of whole tar members
    that pass walk_tar and _check_inside ('run'), or the end of an archive ('end'), by the
    digest of their bytes and sizes: one empty file each in ``folder`` (None: none kept).
    giftbox's own .deb (giftbox.package.debwriter) is made of blocks compressed once per
    content, so the package of a build with a new patch holds a few blocks the pool has not
    read yet, and the pool reads only those."""

    KEEP_DAYS = 30

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @staticmethod
    def key(block: xz.Block) -> str:
        digest = hashlib.sha256(f"{block.unpadded}:{block.size}:".encode())
        digest.update(block.data)
        return digest.hexdigest()

    def known(self, key: str) -> str | None:
        if self.folder is None:
            return None
        for verdict in ("run", "end"):
            path = self.folder / key[:2] / f"{key}.{verdict}"
            if path.is_file():
                with contextlib.suppress(OSError):
                    os.utime(path)  # used: kept by gc
                return verdict
        return None

    def prune(self, now: float, *, dry_run: bool = False) -> int:
        """Forget the verdicts no publish used for ``KEEP_DAYS`` (``giftbox prune
        --gc``): a block of a package that left the pool is not read again, and a verdict
        forgotten too early is a block decoded once more. Returns how many."""
        return prune_unused(self.folder, now - self.KEEP_DAYS * 86400, dry_run=dry_run)

    def keep(self, key: str, verdict: str) -> None:
        if self.folder is not None:
            try:
                write_atomic(self.folder / key[:2] / f"{key}.{verdict}", b"")
            except OSError:
                pass  # a verdict not kept is read again next time


def _listed_by_blocks(path: Path, member: str, data: bytes | memoryview,
                      verdicts: BlockVerdicts) -> bool:
    """Whether the xz data member ``data`` is, block by block, a tar archive list_tar
    accepts: each block a run of whole members (the last one ending the archive), read
    already (its verdict) or now: decoded on its own by liblzma (its check, its sizes
    against the index) and walked as a fragment. False when not: the member is then read
    the ordinary way, which says what is wrong with it (or accepts a stream whose blocks
    do not fall on member boundaries, as ``xz -T`` writes them)."""
    import lzma

    try:
        layout = xz.blocks_of(data)
    except ValueError:
        return False
    if not layout:
        return False
    where = f"{path}: member {member}"
    found: list[tuple[str, str]] = []
    for n, (_, block) in enumerate(layout):
        key = verdicts.key(block)
        verdict = verdicts.known(key)
        if verdict is None:
            try:
                content = lzma.decompress(xz.standalone(block), format=lzma.FORMAT_XZ)
                walk = walk_tar(iter((content,)), where, lambda name: False, fragment=True)
                while True:
                    try:
                        entry, _ = next(walk)
                    except StopIteration as stop:
                        verdict = "end" if stop.value else "run"
                        break
                    _check_inside(entry, where)
            except (lzma.LZMAError, GiftboxError):
                return False
            found.append((key, verdict))
        if verdict != ("end" if n == len(layout) - 1 else "run"):
            return False
    for key, verdict in found:
        verdicts.keep(key, verdict)
    return True


def list_tar(path: Path, member: str, data: bytes | memoryview,
             want: str | None = None, verdicts: BlockVerdicts | None = None) -> bytes | None:
    """Decompress and walk every entry of a .deb's tar member strictly (``walk_tar``: a
    truncated, corrupt or ambiguous one fails); returns the content of ``want`` (./control)
    when asked for. ``verdicts``: an xz member made of blocks read before is read only
    where it is new (``_listed_by_blocks``)."""
    if (verdicts is not None and want is None and member.endswith(".xz")
            and _listed_by_blocks(path, member, data, verdicts)):
        return None
    chunks = decompressed(path, member, data)
    names = (f"./{want}", want) if want is not None else ()
    found: bytes | None = None
    try:
        for entry, content in walk_tar(chunks, f"{path}: member {member}",
                                       lambda name: name in names):
            _check_inside(entry, f"{path}: member {member}")
            if entry.name in names:
                if entry.type != REGULAR:
                    raise RepoError(f"{path}: {member}'s {want} is not a regular file")
                if found is not None:
                    raise RepoError(f"{path}: {member} holds {want} twice: dpkg and giftbox "
                                    "could read different ones", hint="build it with dpkg-deb")
                found = content
        for _ in chunks:
            pass  # walk_tar read to the end; the decompressor's end-of-stream checks ran
    finally:
        chunks.close()  # a refused member: the decompressor stops
    return found


# --- tar, read strictly (the pool's reading of a .deb's members) ------------------------------
#
# Python's tarfile reads 23,900 headers of a big package in seconds, and accepts more than it
# should of a hostile file (an archive that stops at a header boundary or goes on after its end
# with garbage, a bad header after the first ends the listing silently). walk_tar reads the
# subset dpkg-deb and Python's tarfile write (ustar and GNU headers, GNU long names and links,
# pax extended headers with the keys that carry names, sizes, owners and times) and refuses
# everything else, rather than guessing: whatever it accepts, tarfile reads the same way (same
# entries, names, sizes, links; tests/test_fuzz.py checks it on generated archives).

_BLOCK = 512
_ZEROS = bytes(_BLOCK)
REGULAR = b"0"
DIRECTORY = b"5"
_MEMBER_TYPES = (REGULAR, b"1", b"2", b"3", b"4", DIRECTORY, b"6")  # file, links, devices, fifo
_LONGNAME, _LONGLINK, _PAX = b"L", b"K", b"x"
_EXTENSION_LIMIT = 1 << 20  # a path dpkg writes is a few KiB at most
_POSIX_MAGIC, _GNU_MAGIC = b"ustar\x0000", b"ustar  \x00"
_HIGH_BYTES = bytes(range(128))  # deleted by translate: what is left has the high bit set
_OCTAL = b"01234567"
# mode, uid, gid, size, mtime and chksum as GNU tar and Python's tarfile spell them: one match
# checks them all (other spellings take the general path, _number).
_CANONICAL = re.compile(rb"[0-7]{7}\0[0-7]{7}\0[0-7]{7}\0[0-7]{11}\0[0-7]{11}\0[0-7]{6}\0 ")
_NUMBERS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156))
_PAX_RECORD = re.compile(rb"([1-9][0-9]*) ([^=\0\n]+)=")
_PAX_INT, _PAX_TIME = re.compile(r"[0-9]+"), re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_PAX_KEYS: dict[str, re.Pattern[str] | None] = {
    "path": None, "linkpath": None, "uname": None, "gname": None, "size": _PAX_INT,
    "uid": _PAX_INT, "gid": _PAX_INT, "mtime": _PAX_TIME, "atime": _PAX_TIME, "ctime": _PAX_TIME}


class TarEntry(NamedTuple):
    """One member of a tar archive, as tarfile would name it."""

    name: str
    type: bytes  # the typeflag: REGULAR, b"1" hard link, b"2" symlink, ..., DIRECTORY
    size: int  # bytes of data (regular files only; every other member has none)
    linkname: str


class _Stream:
    """Exact reads and skips over an iterator of byte chunks; what is skipped is never
    copied (a data member is mostly file contents, read past)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes, or fewer where the stream ends."""
        end = self._pos + size
        if end <= len(self._buf):
            self._pos = end
            return self._buf[end - size:end]
        parts = [self._buf[self._pos:]]
        need = size - len(parts[0])
        self._buf, self._pos = b"", 0
        for chunk in self._chunks:
            if need <= len(chunk):
                parts.append(chunk[:need])
                self._buf, self._pos = chunk, need
                break
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    def skip(self, size: int) -> bool:
        """Read past ``size`` bytes; False when the stream ends first."""
        end = self._pos + size
        while end > len(self._buf):
            end -= len(self._buf)
            chunk = next(self._chunks, None)
            if chunk is None:
                self._buf, self._pos = b"", 0
                return False
            self._buf = chunk
        self._pos = end
        return True

    def rest_is_zero(self) -> bool:
        """Whether everything left is NUL bytes (read to the end either way)."""
        zero = self._buf.count(0, self._pos) == len(self._buf) - self._pos
        for chunk in self._chunks:
            zero = zero and chunk.count(0) == len(chunk)
        self._buf, self._pos = b"", 0
        return zero


def _refuse(where: str, reason: str) -> RepoError:
    return RepoError(f"{where} is not a whole tar archive as dpkg-deb writes it: {reason}",
                     hint=_DAMAGED)


def _number(field: bytes) -> int | None:
    """A numeric header field: octal digits (space-led, space- or NUL-padded) or GNU's
    base-256; None when it is neither (tarfile would misread or refuse it)."""
    if field[0] in (0x80, 0xFF):
        value = int.from_bytes(field[1:], "big")
        return value if field[0] == 0x80 else value - 256 ** (len(field) - 1)
    digits = field.rstrip(b" \0").lstrip(b" ")
    if digits.translate(None, _OCTAL):
        return None
    return int(digits, 8) if digits else 0


def _text(field: bytes) -> str:
    """A name field up to its first NUL, decoded as tarfile does."""
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _header(block: bytes, where: str, at: int) -> tuple[bytes, int, str, str]:
    """One 512-byte header, checked whole: (type, size, name, linkname), the name as tarfile
    builds it (a ustar prefix joined, a directory's trailing slashes dropped)."""
    if _CANONICAL.match(block, 100) is not None:
        size, chksum = int(block[124:135], 8), int(block[148:154], 8)
    else:
        numbers = [_number(block[a:b]) for a, b in _NUMBERS]
        if None in numbers:
            raise _refuse(where, f"the header at byte {at} has a number that is not one")
        size, chksum = numbers[3], numbers[5]  # type: ignore[assignment]
    unsigned = 256 + sum(block) - sum(block[148:156])
    if chksum != unsigned and chksum != unsigned - 256 * len(
            (block[:148] + block[156:]).translate(None, _HIGH_BYTES)):
        raise _refuse(where, f"the header at byte {at} has a bad checksum")
    if block[329:345] != _ZEROS[:16] and None in (_number(block[329:337]),
                                                  _number(block[337:345])):
        raise _refuse(where, f"the header at byte {at} has a device number that is not one")
    if size < 0:
        raise _refuse(where, f"the header at byte {at} has a negative size")
    magic = block[257:265]
    kind = block[156:157]
    name = _text(block[:100])
    if kind == DIRECTORY:
        name = name.rstrip("/")
    if magic == _GNU_MAGIC:
        if block[345:500] != _ZEROS[345:500]:
            # GNU's atime, ctime and sparse maps: tarfile would take them for a name prefix
            raise _refuse(where, f"the GNU header at byte {at} has fields giftbox does not read")
    elif magic != _POSIX_MAGIC:
        raise _refuse(where, f"the header at byte {at} is neither ustar nor GNU tar "
                             f"(magic {magic!r})")
    elif block[345]:
        name = _text(block[345:500]) + "/" + name
        if kind == DIRECTORY:
            name = name.rstrip("/")
    return kind, size, name, _text(block[157:257]) if block[157] else ""


def _extension_text(data: bytes, where: str, at: int) -> str:
    """A GNU long name or link: one NUL-terminated name."""
    if not data.endswith(b"\0") or data.count(0) != 1:
        raise _refuse(where, f"the GNU long name at byte {at} is not one NUL-terminated name")
    return data[:-1].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes, where: str, at: int) -> dict[str, str]:
    """A pax extended header: ``<length> <key>=<value>\\n`` records, each whole, of keys
    tarfile applies or ignores alike; a key giftbox does not know, given twice or with a value
    that is not what the key holds is refused."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        m = _PAX_RECORD.match(data, pos)
        end = pos + int(m.group(1)) if m is not None else 0
        if m is None or end > len(data) or end <= m.end() or data[end - 1] != 0x0A:
            raise _refuse(where, f"the pax header at byte {at} has a malformed record")
        try:
            key, value = m.group(2).decode(), data[m.end():end - 1].decode()
        except UnicodeDecodeError:
            raise _refuse(where, f"the pax header at byte {at} is not UTF-8") from None
        if key not in _PAX_KEYS or key in records:
            raise _refuse(where, f"the pax header at byte {at} has the key {key!r} "
                                 + ("twice" if key in records else "that giftbox does not read"))
        form = _PAX_KEYS[key]
        if (form is not None and not form.fullmatch(value)) or "\0" in value \
                or "\n" in value:
            raise _refuse(where, f"the pax header at byte {at} has a bad {key} {value[:40]!r}")
        records[key] = value
        pos = end
    return records


def walk_tar(chunks: Iterator[bytes], where: str, wanted: Callable[[str], bool], *,
             fragment: bool = False) -> Generator[tuple[TarEntry, bytes | None], None, bool]:
    """Every member of the tar archive in ``chunks`` in order, each with the data of a
    regular file whose name ``wanted`` picks, else None (read past, never stored); read to
    the end of the stream. Refused (RepoError naming ``where``): a header that is not whole,
    checksummed and ustar/GNU, a type other than a file, link, device, directory or fifo, data
    on anything but a file, an extension header not followed by its member, long names,
    links or pax keys given twice, an empty name, an archive that ends early, has no
    end-of-archive block or anything but NULs after it. Returns True.

    ``fragment``: ``chunks`` may be a run of whole members that stops at a member's end,
    where the archive goes on (an xz block of it, list_tar): then it returns False there,
    True where the run holds the end-of-archive."""
    stream = _Stream(chunks)
    at = 0
    extended: dict[bytes, object] = {}  # the long name, long link, pax records for the next
    while True:
        block = stream.read(_BLOCK)
        if fragment and not block and not extended:
            return False
        if len(block) < _BLOCK:
            raise _refuse(where, "it ends before its end-of-archive block" if not block
                          else f"it ends inside the header at byte {at}")
        if block == _ZEROS:
            if extended:
                raise _refuse(where, f"the extension header before byte {at} has no member")
            if not stream.rest_is_zero():
                raise _refuse(where, f"there is data after its end at byte {at}")
            return True
        kind, size, name, linkname = _header(block, where, at)
        data_at, at = at + _BLOCK, at + _BLOCK + size + (-size % _BLOCK)
        if kind in (_LONGNAME, _LONGLINK, _PAX):
            if kind in extended or (extended and (kind == _PAX or _PAX in extended)):
                raise _refuse(where, f"the extension headers before byte {at} repeat or mix")
            if size > _EXTENSION_LIMIT:
                raise _refuse(where, f"the extension header at byte {data_at - _BLOCK} is "
                                     f"{size} bytes")
            data = stream.read(at - data_at)
            if len(data) < at - data_at:
                raise _refuse(where, f"it ends inside the extension header at byte {data_at}")
            if data.count(0, size) != len(data) - size:
                raise _refuse(where, f"the extension header at byte {data_at} has data in its "
                                     "padding")
            extended[kind] = (_pax_records(data[:size], where, data_at) if kind == _PAX
                              else _extension_text(data[:size], where, data_at))
            continue
        if kind not in _MEMBER_TYPES:
            raise _refuse(where, f"the member {name!r} has the tar type {kind!r}, which dpkg-deb "
                                 "does not write")
        if extended:
            entry = _member(kind, size, name, linkname, extended, where)
            extended = {}
        elif not name or name.endswith("/"):  # a directory's trailing slashes are gone
            raise _refuse(where, f"a member has the name {name!r}")
        else:
            entry = TarEntry(name, kind, size, linkname)
        if entry.type != REGULAR and size:
            raise _refuse(where, f"the member {entry.name!r} is not a file but has data")
        at = data_at + entry.size + (-entry.size % _BLOCK)
        content = None
        if entry.type == REGULAR and wanted(entry.name):
            content = stream.read(entry.size)
            whole = len(content) == entry.size and stream.skip(-entry.size % _BLOCK)
        else:
            whole = stream.skip(at - data_at)
        if not whole:
            raise _refuse(where, f"it ends inside the member {entry.name!r}")
        yield entry, content


def _check_inside(entry: TarEntry, where: str) -> None:
    """A member's name, and a hard link's target, stay inside the tree it unpacks to: no
    absolute path, no ``..`` (a symlink's target is the link's own business: dpkg writes
    absolute and relative ones alike, and following it is the filesystem's)."""
    for what, path in (("the member", entry.name),
                       *((("the hard link target", entry.linkname),)
                         if entry.type == b"1" else ())):
        if path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise RepoError(f"{where}: {what} {path!r} leads out of the package's tree "
                            f"({'an absolute path' if path.startswith('/') else 'a .. part'})"
                            ": dpkg-deb never writes one", hint="build the package with "
                            "dpkg-deb from a staged tree")


def _member(kind: bytes, size: int, name: str, linkname: str, extended: dict[bytes, object],
            where: str) -> TarEntry:
    """A member header with the extension headers before it applied, as tarfile applies them
    (a long name replaces the name, pax keys replace name, link and size)."""
    raw = name
    if _LONGNAME in extended:
        raw = name = str(extended[_LONGNAME])
        if kind == DIRECTORY:
            name = name.removesuffix("/")
    if _LONGLINK in extended:
        linkname = str(extended[_LONGLINK])
    pax = extended.get(_PAX)
    if isinstance(pax, dict):
        if "path" in pax:
            raw, name = pax["path"], pax["path"].rstrip("/")
        linkname = pax.get("linkpath", linkname)
        if "size" in pax:
            if kind != REGULAR and int(pax["size"]):
                raise _refuse(where, f"the member {name!r} is not a file but has data")
            size = int(pax["size"]) if kind == REGULAR else size
    if not name or name.endswith("/") or (kind != DIRECTORY and raw.endswith("/")):
        raise _refuse(where, f"a member has the name {raw!r}")
    return TarEntry(name, kind, size, linkname)


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
