"""File primitives the caches share: a file's sha256, a file replaced whole, and facts
remembered per inode (``InodeRecords``).

``write_atomic`` writes beside the target and renames over it, so a reader (another giftbox
run, the next build) sees the old file or the new one, never half of one, and a hard link to
the old file (the deps layer's) keeps its bytes. A kill leaves at most a
``.<name>.<pid>-<n>.tmp`` beside it (``temp_beside``: unique per process and per call, since
the builds of one nightly run are threads of one process writing the same cache files). The
repo's own state files add an fsync (``giftbox.repo.state.write_json``): the caches do not
need one, since a lost cache file is a miss.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    """The hex sha256 of ``path``'s bytes, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


_serials = itertools.count()


def temp_beside(path: Path) -> Path:
    """A temp name beside ``path`` no other writer uses: not another process (the pid), not
    another thread of this one (a serial; ``next`` on a count is atomic under the GIL). The
    ``.<name>.*.tmp`` shape is what the stray-file sweeps look for."""
    return path.with_name(f".{path.name}.{os.getpid()}-{next(_serials)}.tmp")


def write_atomic(path: Path, data: str | bytes | Iterable[bytes]) -> None:
    """``path`` holding ``data`` (text as UTF-8, bytes, or pieces of bytes written in turn:
    a large file need not be held whole), written beside it and renamed into place; its
    directory is made if missing. A failure removes what it had written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    pieces = (data.encode(),) if isinstance(data, str) else \
        (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with open(tmp, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def prune_unused(folder: Path | None, horizon: float, *, dry_run: bool = False) -> int:
    """Remove the files of ``folder``'s two-character shards (``<folder>/ab/<key>...``: the
    layout of giftbox's per-digest stores) last used before ``horizon`` (their mtime: a store
    touches a file it uses); returns how many were (or, ``dry_run``, would be) removed."""
    if folder is None or not folder.is_dir():
        return 0
    removed = 0
    for shard in folder.iterdir():
        if len(shard.name) != 2 or not shard.is_dir():
            continue
        for path in shard.iterdir():
            try:
                if path.lstat().st_mtime < horizon:
                    if not dry_run:
                        path.unlink()
                    removed += 1
            except OSError:
                pass  # gone already, or not ours to remove: left
    return removed


class InodeRecords:
    """Facts about files (a digest, an ELF machine) remembered per inode (device, inode,
    size, mtime) in one JSON file at ``path`` (None: nothing kept).

    Packaging stages the venv with hard links to the build's venv, whose dependency files
    are hard links to the cached deps layer: the same inodes on every build of one lock,
    read once instead of on every build. Every writer in giftbox replaces files by rename
    (a new inode), so an inode whose size and mtime did not change still holds the bytes it
    held. A damaged file is an empty one; a record a subclass cannot use, a miss."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._known: dict[str, Any] = {}
        self._used: dict[str, Any] = {}
        if path is not None:
            try:
                known = json.loads(path.read_text())
            except (OSError, ValueError):
                known = {}
            self._known = known if isinstance(known, dict) else {}

    @staticmethod
    def ident(st: os.stat_result) -> str:
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"

    def known(self, ident: str) -> Any:
        """What the file holds for ``ident`` (unchecked: the subclass judges it), or None:
        what this run found for it, else what the file kept."""
        found = self._used.get(ident)
        return found if found is not None else self._known.get(ident)

    def use(self, ident: str, value: Any) -> None:
        """``value`` is what this run found for ``ident``: kept by ``save``."""
        self._used[ident] = value

    def save(self) -> None:
        """Keep what this run used (older inodes are gone with their builds)."""
        if self.path is not None:
            write_atomic(self.path, json.dumps(self._used, separators=(",", ":")))
