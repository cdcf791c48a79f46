"""Hash-based bytecode for the project, compiled once per source file's content.

A warm build with a new patch installs the whole project again (nova: 1,700 modules), and
compiling all of it in the builder cost seconds for the one file the patch changed. A
checked-hash ``.pyc`` (PEP 552) is a function of the interpreter (the builder image), the
path it is compiled at (``co_filename``) and the source's bytes, so each one is kept under
the cache keyed by the digest of those three, and a build compiles only the sources whose
key has no entry. The entry carries the sha256 of its own bytes: a damaged or edited entry is
compiled again, never placed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from giftbox.files import write_atomic

_MAGIC = b"giftbox-pyc 1\n"


def python_sources(paths: Iterable[Path]) -> list[Path]:
    """The ``.py`` files compileall would compile under ``paths`` (files or directories;
    ``__pycache__`` and symlinked directories are not descended into)."""
    found: list[Path] = []
    for top in paths:
        if top.is_file():
            if top.suffix == ".py":
                found.append(top)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__"
                                 and not os.path.islink(os.path.join(dirpath, d)))
            found.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return found


class BytecodeCache:
    """Compiled ``.pyc`` files of one builder image, keyed by install path and source."""

    def __init__(self, folder: Path, image_id: str, venv_dir: Path, prefix: str) -> None:
        self.folder = folder / image_id.replace("sha256:", "")[:16]
        self.image_id = image_id
        self.venv_dir = venv_dir
        self.prefix = prefix

    def _key(self, source: Path) -> str:
        # the path the builder compiles it at: what co_filename records
        where = self.prefix + "/" + source.relative_to(self.venv_dir).as_posix()
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        return hashlib.sha256(f"{self.image_id}\0{where}\0{digest}".encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pyc"

    def place(self, sources: list[Path]) -> tuple[list[Path], dict[Path, str]]:
        """Put every cached ``.pyc`` beside its source; return the sources left to compile
        and the key of each of them (to ``store`` once compiled)."""
        todo: dict[Path, str] = {}
        for source in sources:
            if source.is_symlink():
                todo[source] = ""  # compiled every time, never cached
                continue
            key = self._key(source)
            cached = self._read(self._entry(key))
            if cached is None:
                todo[source] = key
                continue
            name, data = cached
            write_atomic(source.parent / "__pycache__" / name, data)
        return list(todo), todo

    def store(self, compiled: dict[Path, str]) -> None:
        """Keep the ``.pyc`` compileall wrote for each source (by its key)."""
        for source, key in compiled.items():
            if not key:
                continue
            pycs = sorted((source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"))
            pyc = next((p for p in pycs if p.name.count(".") == 2), None)  # not .opt-1
            if pyc is None:
                continue
            data = pyc.read_bytes()
            write_atomic(self._entry(key), _MAGIC + f"{pyc.name}\n"
                         f"{hashlib.sha256(data).hexdigest()}\n".encode() + data)

    @staticmethod
    def _read(entry: Path) -> tuple[str, bytes] | None:
        try:
            blob = entry.read_bytes()
        except OSError:
            return None
        if not blob.startswith(_MAGIC):
            return None
        head, sep, rest = blob[len(_MAGIC):].partition(b"\n")
        digest, sep2, data = rest.partition(b"\n")
        try:
            name = head.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not sep or not sep2 or hashlib.sha256(data).hexdigest().encode() != digest \
                or "/" in name or not name.endswith(".pyc") or name.startswith("."):
            return None
        return name, data
