"""The .xz container, block by block (the xz file format 1.2.0, sections 2 to 4).

An xz stream is a header, independent blocks (each decodes without the others: its filters
start afresh), an index of every block's sizes and a footer. dpkg, xz and Python's lzma read
a stream of many blocks as the concatenation of what each block holds (``xz -T0`` writes
such streams). That lets a package's payload be put together from blocks compressed once per
content (giftbox.package.debwriter) and read back a block at a time (the pool,
giftbox.repo.archive), each block's digest standing for what it holds.

``compress_block`` makes one block, ``stream`` puts blocks into one stream, and ``blocks_of``
reads a stream's layout strictly, from its index, without decompressing anything.
``standalone`` wraps one block as a stream of its own, for liblzma to decode and check
(its CRC64, its sizes against the index's).
"""

from __future__ import annotations

import lzma
import struct
import zlib
from typing import NamedTuple

MAGIC = b"\xfd7zXZ\x00"
FOOTER_MAGIC = b"YZ"
CHECK_CRC64 = 0x04
_FLAGS = bytes((0, CHECK_CRC64))


class Block(NamedTuple):
    """One block: its bytes (header, compressed data, padding, check) and the two sizes the
    index records for it."""

    data: bytes
    unpadded: int  # header + compressed data + check, without the padding
    size: int  # the bytes it decompresses to


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The multibyte integer at ``pos`` and where it ends; ValueError when it is not one."""
    value = 0
    for i in range(9):
        if pos + i >= len(data):
            raise ValueError("the index ends inside a number")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                raise ValueError("a number of the index is not in its shortest form")
            return value, pos + i + 1
    raise ValueError("a number of the index is too long")


def _crc(data: bytes | bytearray | memoryview) -> bytes:
    return struct.pack("<I", zlib.crc32(data))


def _header() -> bytes:
    return MAGIC + _FLAGS + _crc(_FLAGS)


def _index(blocks: list[Block]) -> bytes:
    body = bytearray(b"\x00" + _varint(len(blocks)))
    for block in blocks:
        body += _varint(block.unpadded) + _varint(block.size)
    body += bytes(-len(body) % 4)
    return bytes(body) + _crc(body)


def _footer(index_size: int) -> bytes:
    rest = struct.pack("<I", index_size // 4 - 1) + _FLAGS
    return _crc(rest) + rest + FOOTER_MAGIC


def compress_block(data: bytes, preset: int) -> Block:
    """``data`` (not empty) as one block, LZMA2 at ``preset`` with a CRC64 (liblzma's
    one-threaded encoder writes one block per stream: the block is cut out of that stream)."""
    whole = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=preset)
    layout = blocks_of(whole)
    if len(layout) != 1:
        raise ValueError(f"liblzma wrote {len(layout)} blocks for one")
    return layout[0][1]


def stream_size(blocks: list[Block]) -> int:
    return 12 + sum(len(b.data) for b in blocks) + len(_index(blocks)) + 12


def stream_parts(blocks: list[Block]) -> tuple[bytes, bytes]:
    """What goes before the blocks' bytes (the stream header) and after them (the index and
    the footer) to make them one stream."""
    index = _index(blocks)
    return _header(), index + _footer(len(index))


def stream(blocks: list[Block]) -> bytes:
    head, tail = stream_parts(blocks)
    return head + b"".join(b.data for b in blocks) + tail


def standalone(block: Block) -> bytes:
    """The block as a stream of its own (what liblzma decodes to check it)."""
    return stream([block])


def blocks_of(data: bytes | memoryview) -> list[tuple[int, Block]]:
    """Every block of the one xz stream ``data`` is, with its offset, from the stream's
    index and footer: ValueError when ``data`` is not exactly one stream with a CRC64 check
    whose index accounts for every byte between its header and its index (stream padding,
    a second stream, another check, a damaged index or footer: the caller reads the member
    the ordinary way and says what is wrong). Nothing is decompressed: each block's own
    header, data and check are liblzma's to judge (``standalone``)."""
    if len(data) < 24 or bytes(data[:6]) != MAGIC:
        raise ValueError("not an xz stream")
    if bytes(data[6:8]) != _FLAGS or bytes(data[8:12]) != _crc(data[6:8]):
        raise ValueError("the stream header is not one of a CRC64 stream")
    footer = data[len(data) - 12:]
    if bytes(footer[10:12]) != FOOTER_MAGIC or bytes(footer[8:10]) != _FLAGS \
            or bytes(footer[:4]) != _crc(footer[4:10]):
        raise ValueError("the stream does not end with its footer")
    index_size = (struct.unpack("<I", bytes(footer[4:8]))[0] + 1) * 4
    index_at = len(data) - 12 - index_size
    if index_at < 12:
        raise ValueError("the footer's index size is larger than the stream")
    index = data[index_at:len(data) - 12]
    if index[0] != 0 or bytes(index[-4:]) != _crc(index[:-4]):
        raise ValueError("the index is damaged")
    count, pos = _read_varint(index, 1)
    blocks: list[tuple[int, Block]] = []
    at = 12
    for _ in range(count):
        unpadded, pos = _read_varint(index, pos)
        size, pos = _read_varint(index, pos)
        if unpadded < 5 + 8 + 1:  # a block header, its check and at least one byte of data
            raise ValueError("the index records a block smaller than a block can be")
        padded = unpadded + (-unpadded % 4)
        if at + padded > index_at:
            raise ValueError("the index records more blocks than the stream holds")
        blocks.append((at, Block(bytes(data[at:at + padded]), unpadded, size)))
        at += padded
    if at != index_at or bytes(index[pos:-4]) != bytes(len(index) - 4 - pos) \
            or (len(index) - 4 - pos) >= 4:
        raise ValueError("the index does not account for the stream's blocks")
    return blocks
