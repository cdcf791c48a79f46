"""A .deb written by giftbox, its data.tar.xz put together from blocks compressed once per
content: the deps layer's 300 MB are compressed once per lock, and a build with a new patch
compresses only the part of the tree it changed.

The package is the one deb(5) describes and dpkg-deb writes: an ar archive of debian-binary,
control.tar.gz and data.tar.xz; tar members in GNU format named ``./path``, root:root, every
mtime clamped to SOURCE_DATE_EPOCH, in ``scan_tree``'s order (a directory before what it
holds); no hard links (a file linked twice is stored twice). The data tar is cut, at member
boundaries, into chunks (``chunks``), each one block of the single xz stream (giftbox.xz):
dpkg, lintian and every xz reader read the stream whole, as the concatenation of its blocks.

A chunk's block is kept in ``<cache>/package/xz-blocks`` under the digest of everything its
bytes are made of (``chunk_key``: each member's name, type, mode, size, mtime and content
sha256 or link target, the preset and this writer's version), so it is the block that
compressing those bytes again would give (invariant 1: the package is bit-identical on a hit
and on a miss). Blocks unused for ``_KEEP_DAYS`` go.
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path

from giftbox import xz
from giftbox.errors import PackageError
from giftbox.files import prune_unused, write_atomic
from giftbox.package.layout import Entry
from giftbox.package.lint import DigestCache

WRITER = "giftbox-debwriter-2"  # in every chunk's key: how members become bytes
_BLOCK = 512
_RECORD = 10240  # GNU tar's record: the archive is padded to a whole one
# A chunk starts at a directory whose path's CRC32 is 0 mod _CUT (about one directory in
# eight: where the cuts fall depends on names only, so a changed file changes its own chunk
# and no other), once the chunk holds _CHUNK_MAX bytes, or at a file of _ALONE bytes or more.
# A new patch compresses the chunks of what it changed (the module, its bytecode, the
# dist-info, the docs): the smaller they are, the less is compressed again, and a large
# module (nova's libvirt driver, 600 KB, and its .pyc) is compressed without its
# neighbours. 512 KiB blocks make the package about 2.5% larger than 1 MiB blocks did.
_CUT = 8
_CHUNK_MAX = 1 << 19
_ALONE = 1 << 18
_KEEP_DAYS = 14
_STORE_MAGIC = b"GBXZBLK1"


def _entry_header(rel: str, st: os.stat_result, epoch: int, link: str) -> bytes:
    info = tarfile.TarInfo("./" + rel if rel else "./")
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = min(int(st.st_mtime), epoch)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, link
    else:
        info.type, info.size = tarfile.REGTYPE, st.st_size
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _kind(rel: str, st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "d"
    if stat.S_ISLNK(st.st_mode):
        return "l"
    if stat.S_ISREG(st.st_mode):
        return "f"
    raise PackageError(f"the staged tree holds {rel or '.'}, which is neither a file, a "
                       "directory nor a symlink: a package holds none of those")


def chunks(tree: list[Entry]) -> list[list[Entry]]:
    """``tree`` (the root first, then ``scan_tree``'s order) cut into chunks (see _CUT)."""
    out: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in tree:
        st = entry.st
        if current and (size >= _CHUNK_MAX or (
                stat.S_ISDIR(st.st_mode) and zlib.crc32(entry.rel.encode()) % _CUT == 0) or (
                stat.S_ISREG(st.st_mode) and st.st_size >= _ALONE)):
            out.append(current)
            current, size = [], 0
        current.append(entry)
        size += _BLOCK + (st.st_size + (-st.st_size % _BLOCK) if stat.S_ISREG(st.st_mode) else 0)
    if current:
        out.append(current)
    return out


class BlockStore:
    """Compressed chunks by key, one file each (None: nothing kept). A file that cannot be
    read back as the block it was is a miss."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / key[:2] / key

    def get(self, key: str) -> xz.Block | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            raw = path.read_bytes()
            os.utime(path)  # used: kept _KEEP_DAYS from now
        except OSError:
            return None
        if len(raw) < 24 or raw[:8] != _STORE_MAGIC:
            return None
        unpadded, size = struct.unpack("<QQ", raw[8:24])
        data = raw[24:]
        if len(data) != unpadded + (-unpadded % 4) or not data or data[0] == 0:
            return None
        return xz.Block(data, unpadded, size)

    def put(self, key: str, block: xz.Block) -> None:
        path = self._path(key)
        if path is not None:
            try:
                write_atomic(path, _STORE_MAGIC + struct.pack("<QQ", block.unpadded, block.size)
                             + block.data)
            except OSError:
                pass  # a full disk, a race with another writer: compressed again next time

    def prune(self, now: float) -> None:
        """Remove the blocks no package used for _KEEP_DAYS."""
        prune_unused(self.folder, now - _KEEP_DAYS * 86400)


class _Chunk:
    """One chunk of the data tar: its members, its key, its bytes when asked."""

    def __init__(self, root: str, members: list[Entry], epoch: int, preset: int,
                 digests: DigestCache) -> None:
        self.root, self.members, self.epoch, self.preset = root, members, epoch, preset
        self.links: dict[str, str] = {}
        key = sha256(f"{WRITER}\0{preset}\n".encode())
        for rel, st in members:
            path = f"{root}/{rel}" if rel else root
            kind = _kind(rel, st)
            what = ""
            if kind == "f":
                what = digests.digests_at(path, st)[0]
            elif kind == "l":
                what = self.links[rel] = os.readlink(path)
            key.update(f"{rel}\0{kind}\0{stat.S_IMODE(st.st_mode):o}\0"
                       f"{st.st_size if kind == 'f' else 0}\0{min(int(st.st_mtime), epoch)}\0"
                       f"{what}\n".encode("utf-8", "surrogateescape"))
        self.key = key.hexdigest()

    def tar_bytes(self) -> bytes:
        out = bytearray()
        for rel, st in self.members:
            out += _entry_header(rel, st, self.epoch, self.links.get(rel, ""))
            if stat.S_ISREG(st.st_mode):
                with open(f"{self.root}/{rel}", "rb") as fh:
                    data = fh.read(st.st_size + 1)
                if len(data) != st.st_size:
                    raise PackageError(f"{rel} changed while it was being packaged")
                out += data
                out += bytes(-len(data) % _BLOCK)
        return bytes(out)


def data_blocks(root: Path, tree: list[Entry], epoch: int, preset: int, *,
                digests: DigestCache, store: BlockStore, threads: int,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[xz.Block], int]:
    """The blocks of data.tar.xz for the staged tree at ``root`` (``tree``: its scan_tree,
    DEBIAN/ left out), each from ``store`` or compressed now, ``threads`` at a time (the
    last is the end of the archive), and how many were compressed now. ``progress(done,
    todo)`` as chunks are compressed."""
    top = str(root)
    members = [Entry("", os.lstat(top))] + [e for e in tree if e.rel != "DEBIAN"
                                            and not e.rel.startswith("DEBIAN/")]
    parts = [_Chunk(top, c, epoch, preset, digests) for c in chunks(members)]
    found = [store.get(c.key) for c in parts]
    todo = [i for i, b in enumerate(found) if b is None]

    def make(i: int) -> xz.Block:
        block = xz.compress_block(parts[i].tar_bytes(), preset)
        store.put(parts[i].key, block)
        return block

    if todo:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for n, (i, block) in enumerate(zip(todo, pool.map(make, todo), strict=True), 1):
                found[i] = block
                if progress is not None:
                    progress(n, len(todo))
    blocks = [b for b in found if b is not None]
    total = sum(b.size for b in blocks)
    end = bytes(2 * _BLOCK + (-(total + 2 * _BLOCK) % _RECORD))
    blocks.append(xz.compress_block(end, preset))
    return blocks, len(todo)


def control_tar(debian: Path, epoch: int) -> bytes:
    """control.tar of DEBIAN/ (its files, sorted), as dpkg-deb writes it."""
    out = bytearray(_entry_header("", os.lstat(debian), epoch, ""))
    for name in sorted(os.listdir(debian)):
        st = os.lstat(debian / name)
        if not stat.S_ISREG(st.st_mode):
            raise PackageError(f"DEBIAN/{name} is not a regular file")
        data = (debian / name).read_bytes()
        out += _entry_header(name, st, epoch, "")
        out += data + bytes(-len(data) % _BLOCK)
    out += bytes(2 * _BLOCK)
    out += bytes(-len(out) % _RECORD)
    return bytes(out)


def _ar_header(name: str, size: int, epoch: int) -> bytes:
    header = f"{name:<16}{epoch:<12}{0:<6}{0:<6}{'100644':<8}{size:<10}`\n".encode()
    assert len(header) == 60
    return header


def write_deb(out: Path, control: bytes, blocks: list[xz.Block], epoch: int) -> None:
    """The .deb at ``out`` (``write_atomic``, piece by piece): debian-binary,
    ``control`` (the control tar) as control.tar.gz, the blocks as data.tar.xz. The
    control tar is gzip'd: it is new on every build (md5sums, 2.7 MB for nova), and zlib
    packs it as small as xz -1 in a third of the time."""
    control_gz = gzip.compress(control, 9, mtime=0)
    head, tail = xz.stream_parts(blocks)
    data_size = xz.stream_size(blocks)

    def pieces() -> Iterator[bytes]:
        yield b"!<arch>\n"
        for name, member in (("debian-binary", b"2.0\n"), ("control.tar.gz", control_gz)):
            yield _ar_header(name, len(member), epoch) + member + b"\n" * (len(member) % 2)
        yield _ar_header("data.tar.xz", data_size, epoch) + head
        for block in blocks:
            yield block.data
        yield tail + b"\n" * (data_size % 2)

    write_atomic(out, pieces())
