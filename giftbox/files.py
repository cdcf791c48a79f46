"""Two file primitives the caches share: a file's sha256, and a file replaced whole.

``write_atomic`` writes beside the target and renames over it, so a reader (another giftbox
run, the next build) sees the old file or the new one, never half of one, and a hard link to
the old file (the deps layer's) keeps its bytes. A kill leaves at most a ``.<name>.<pid>.tmp``
beside it. The repo's own state files add an fsync (``giftbox.repo.state.write_json``): the
caches do not need one, since a lost cache file is a miss.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The hex sha256 of ``path``'s bytes, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_atomic(path: Path, data: str | bytes) -> None:
    """``path`` holding ``data`` (text as UTF-8), written beside it and renamed into place;
    its directory is made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
