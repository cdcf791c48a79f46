"""Scratch trees removed beside the work that follows them, not in front of it.

A build ends by removing its source checkout and work directory (nova's: 5,000 directories,
40,000 files, seconds of unlink calls), and a package by removing its staged tree. Nothing
after that reads them, so ``discard`` renames the tree out of the way at once (the name is
free again, and a reader never sees a half-removed tree) and removes it with ``rm -rf`` in
the background while packaging, linting and publishing go on. ``settle`` waits for every
removal this process started; it runs when the process exits, so a command never ends with
its scratch trees still on disk, and a test may call it to look at a tree it just built.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
from pathlib import Path

_pending: list[tuple[subprocess.Popen[bytes], Path]] = []
_names = itertools.count()


def discard(path: Path) -> None:
    """Remove ``path`` (a directory giftbox made, or nothing): renamed away now, removed in
    the background. Where a rename or ``rm`` cannot be had, removed here and now."""
    if not os.path.lexists(path):
        return
    grave = path.with_name(f".{path.name}.discarded-{os.getpid()}-{next(_names)}")
    try:
        path.rename(grave)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    rm = shutil.which("rm")
    if rm is None:
        shutil.rmtree(grave, ignore_errors=True)
        return
    if not _pending:
        atexit.register(settle)
    _pending.append((subprocess.Popen([rm, "-rf", "--", str(grave)],  # noqa: S603
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL), grave))


def settle() -> None:
    """Wait for every background removal; finish by hand whatever ``rm`` left."""
    while _pending:
        proc, grave = _pending.pop()
        proc.wait()
        if os.path.lexists(grave):
            shutil.rmtree(grave, ignore_errors=True)
