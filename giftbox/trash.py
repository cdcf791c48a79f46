"""Scratch trees removed beside the work that follows them, not in front of it.

A build ends by removing its source checkout and work directory (nova's: 5,000 directories,
40,000 files, seconds of unlink calls), and a package by removing its staged tree. Nothing
after that reads them, so ``discard`` renames the tree into a graveyard at once (the name is
free again, and a reader never sees a half-removed tree) and removes it with ``rm -rf`` in
the background while packaging, linting and publishing go on.

The graveyard is a directory of the cache that nothing else lists, walks or removes: a grave
left beside the tree would be inside a directory other code removes or copies (a package's
folder made again), which would race the background ``rm``. Graves are named by the pid that
made them; one whose process is gone (killed before its ``rm`` ended) is removed by the next
``discard``. ``settle`` waits for every removal this process started; it runs when the
process exits, so a command never ends with its scratch trees still on disk.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
from pathlib import Path

_pending: list[tuple[subprocess.Popen[bytes], list[Path]]] = []
_names = itertools.count()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _orphans(graveyard: Path) -> list[Path]:
    """Graves of processes that are gone."""
    found = []
    for grave in graveyard.iterdir():
        pid = grave.name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            found.append(grave)
    return found


def discard(path: Path, graveyard: Path | None) -> None:
    """Remove ``path`` (a directory giftbox made, or nothing): renamed into ``graveyard``
    now, removed in the background. Without a graveyard, on another file system, or without
    ``rm``, removed here and now."""
    if not os.path.lexists(path):
        return
    rm = shutil.which("rm")
    if graveyard is None or rm is None:
        shutil.rmtree(path, ignore_errors=True)
        return
    grave = graveyard / f"{os.getpid()}-{next(_names)}-{path.name}"
    try:
        graveyard.mkdir(parents=True, exist_ok=True)
        path.rename(grave)
    except OSError:  # another file system (EXDEV), or no graveyard to be had
        shutil.rmtree(path, ignore_errors=True)
        return
    graves = [grave, *_orphans(graveyard)]
    if not _pending:
        atexit.register(settle)
    _pending.append((subprocess.Popen([rm, "-rf", "--", *map(str, graves)],  # noqa: S603
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL), graves))


def settle() -> None:
    """Wait for every background removal; finish by hand whatever ``rm`` left."""
    while _pending:
        proc, graves = _pending.pop()
        proc.wait()
        for grave in graves:
            if os.path.lexists(grave):
                shutil.rmtree(grave, ignore_errors=True)
