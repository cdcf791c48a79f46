"""Host-side work on a built venv tree: no engine, no builder, only files.

The build stage creates its venv at the final install prefix inside the builder; what it then
does to the tree on the host lives here, so it can be tested with any venv on any machine:

* ``relocate``: console scripts find the interpreter beside their own real location (a
  ``/bin/sh`` trampoline instead of an absolute shebang) and ``bin/activate`` finds the venv
  from its own location (bash and zsh); the build tools' litter in the venv root and the
  dist-info files that name build paths or wall-clock times go;
* ``fix_records``: every dist-info's RECORD kept true to the tree after those edits (and after
  compileall rewrote the .pyc files a wheel shipped);
* ``link_tree``, ``project_paths``, ``timestamp_pycs``: the deps layer hard-linked into a
  build, the files of the project's own wheel, the .pyc files that would break reproducibility.

Every file that changes is written by rename, never in place: a build's venv hard-links the
deps layer's files, and an in-place write would change every build that shares them.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
from pathlib import Path

from packaging.utils import canonicalize_name

from giftbox import host
from giftbox.errors import BuildError

# A shebang that finds the interpreter beside the script, wherever the venv was moved. The
# first line is read by the kernel as "run /bin/sh"; the second by sh as an exec of bin/python
# next to the script's real location, and by Python as a harmless string.
TRAMPOLINE = (
    "#!/bin/sh\n"
    "'''exec' \"$(dirname -- \"$(readlink -f -- \"$0\")\")/python\" \"$0\" \"$@\"\n"
    "' '''\n"
)

_ACTIVATE_FIND = """\
# giftbox: the venv is relocatable; find it from this file's location.
if [ -n "${BASH_SOURCE-}" ]; then
    _giftbox_here="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION-}" ]; then
    _giftbox_here="${(%):-%x}"
else
    _giftbox_here="$0"
fi
VIRTUAL_ENV="$(cd "$(dirname -- "$_giftbox_here")/.." && pwd -P)"
unset _giftbox_here
"""

# Build tools' litter in the venv root: virtualenv's .gitignore and CACHEDIR.TAG (the latter
# makes backup tools skip an installed service), uv's world-writable .lock.
LITTER = (".gitignore", "CACHEDIR.TAG", ".lock")


def replace_file(path: Path, data: bytes) -> None:
    """Write by rename, never in place: build venvs hard-link the deps layer's files."""
    tmp = path.with_name(f".{path.name}.giftbox-tmp")
    tmp.write_bytes(data)
    shutil.copymode(path, tmp)
    tmp.replace(path)


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise BuildError(f"no site-packages under {venv}")
    return found[0]


def relocate(venv: Path, prefix: str, dist: str | None = None) -> None:
    """Make scripts and activate find the venv relative to themselves; drop build paths.

    ``prefix`` is where the venv was created (its scripts' shebangs name it). A venv whose
    files were relocated already (a deps layer linked into a build) is left as it is: with
    ``dist`` (the one distribution installed on top of such a venv), only its RECORD and
    those naming a file changed here are read again."""
    changed = _relocate_scripts(venv / "bin", prefix)
    _relocate_activate(venv / "bin" / "activate")
    for litter in LITTER:
        (venv / litter).unlink(missing_ok=True)
    site = site_packages(venv)
    fix_records(site, changed, _drop_build_notes(site), dist=dist, naming=dist is not None)


def _relocate_scripts(bin_dir: Path, prefix: str) -> set[Path]:
    """The trampoline for every script whose shebang names ``prefix``'s python (pip's and
    uv's plain form, or their long-shebang ``/bin/sh`` form); returns the files rewritten,
    whose RECORD entries need a new hash."""
    plain = f"#!{prefix}/bin/python".encode()
    trampoline = TRAMPOLINE.encode()
    changed: set[Path] = set()
    for script in sorted(bin_dir.iterdir()):
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(plain):
            body = data.split(b"\n", 1)[1] if b"\n" in data else b""
        elif data.startswith(b"#!/bin/sh\n'''exec' "):
            body = data.split(b"\n", 3)[3]  # pip's and uv's long-shebang form
        else:
            continue
        if trampoline + body != data:  # a deps layer's scripts are done already
            replace_file(script, trampoline + body)
            changed.add(script)
    return changed


def _relocate_activate(activate: Path) -> None:
    if not activate.is_file():
        return
    text = activate.read_text()
    if "_giftbox_here" in text:
        text = ""  # already made relocatable (a deps layer)
    # Whatever the virtualenv version computed (old ones: the build path; newer ones: the
    # build path if it exists, which is wrong beside another version), override it just
    # before it is exported. The newer "does not exist!" warning goes too.
    text = re.sub(r"^\s*echo \"Virtual environment directory\".*\n", "", text, flags=re.M)
    if not text:
        return
    text, count = re.subn(r"^(\s*)export VIRTUAL_ENV$", lambda m: _ACTIVATE_FIND + m.group(0),
                          text, count=1, flags=re.M)
    if count != 1:
        raise BuildError("cannot make bin/activate relocatable: no 'export VIRTUAL_ENV'"
                         " line (virtualenv changed its activate script?)")
    replace_file(activate, text.encode())


def _drop_build_notes(site: Path) -> set[Path]:
    """Remove the dist-info files that name a build path or a wall-clock time."""
    removed: set[Path] = set()
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        if '"file://' in direct_url.read_text():
            # Names the builder's dist/ directory: a build path, and useless on the target.
            direct_url.unlink()
            removed.add(direct_url)
    for cache_note in site.glob("*.dist-info/uv_cache.json"):
        # uv's cache bookkeeping: the wall-clock time of the install (two builds of the same
        # inputs would differ), nothing the installed distribution needs.
        cache_note.unlink()
        removed.add(cache_note)
    return removed


def record_hash(data: bytes) -> str:
    """A RECORD line's hash field (PEP 376/627: urlsafe base64 sha256, unpadded)."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def fix_records(site: Path, changed: set[Path], removed: set[Path], *,
                bytecode: bool = False, dist: str | None = None,
                naming: bool = False) -> None:
    """Keep every dist-info's RECORD true to the tree: entries of ``removed`` files and of
    files that are not there go (virtualenv's seeder lists .pyc files outside __pycache__ and
    directories), entries of ``changed`` files get their new hash and size (PEP 376/627), and
    with ``bytecode`` so do the .pyc files a wheel shipped and compileall rewrote (numpy's);
    the rest of each line is kept byte for byte. Only RECORDs that change are rewritten (by
    rename). ``dist``: only that distribution's RECORD (the others are the deps layer's,
    fixed when it was made), and with ``naming`` also every other RECORD whose text names
    one of ``changed`` or ``removed`` by its file name."""
    names = {p.name for p in changed | removed} if naming else set()
    for record in sorted(site.glob("*.dist-info/RECORD")):
        mine = dist is None or _dist_of(record.parent) == canonicalize_name(dist)
        if not mine and not names:
            continue  # not read at all: the deps layer's
        text = record.read_text()
        if not mine and not any(name in text for name in names):
            continue
        out: list[str] = []
        edited = False
        for line in text.splitlines():
            row = next(csv.reader([line]), [])
            target = Path(os.path.normpath(site / row[0])) if row else None
            if target is not None and (target in removed or not target.is_file()):
                edited = True
                continue
            if target is not None and len(row) >= 3 and row[1] and (
                    target in changed or (bytecode and target.suffix == ".pyc")):
                data = target.read_bytes()
                if row[1] != record_hash(data) or row[2] != str(len(data)):
                    buf = io.StringIO()
                    csv.writer(buf, lineterminator="").writerow(
                        [row[0], record_hash(data), str(len(data))])
                    line, edited = buf.getvalue(), True
            out.append(line)
        if edited:
            replace_file(record, ("\n".join(out) + "\n").encode())


def link_tree(src: Path, dst: Path) -> None:
    """``dst`` (an empty directory) as a copy of ``src`` made of hard links (directories are
    new, files shared). GNU cp makes the same tree as ``shutil.copytree`` with ``os.link``
    (symlinks kept, directory modes and times copied) in half the time. ``dst`` itself is
    kept (``src``'s contents are copied into it, its mode and times given it), so a
    container that mounts it may start while the tree is linked."""
    host.run(["cp", "-al", "--", f"{src}/.", str(dst)], error=BuildError,
             needed_for="to link the deps layer into a build's venv", check=True)


def _dist_of(info: Path) -> str:
    """The canonical distribution name of a ``*.dist-info`` directory."""
    return canonicalize_name(info.name[: -len(".dist-info")].rsplit("-", 1)[0])


def project_paths(site: Path, dist_name: str) -> list[Path]:
    """The top-level files and directories the project's own wheel installed."""
    wanted = canonicalize_name(dist_name)
    for info in site.glob("*.dist-info"):
        if _dist_of(info) != wanted:
            continue
        tops = set()
        for line in (info / "RECORD").read_text().splitlines():
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first and not first.startswith("..") and not first.endswith(".dist-info"):
                tops.add(first)
        return sorted(site / t for t in tops if (site / t).exists())
    raise BuildError(f"{dist_name} is not installed in {site}")


def own_files(venv: Path, shared: Path) -> list[str]:
    """The regular files of ``venv`` (paths relative to it, sorted) that are not hard links
    to the same path in ``shared`` (the deps layer's venv it was linked from): what the build
    added or replaced. One walk of both trees by directory, comparing the inode numbers
    readdir gives: no file of either is opened or stat'ed (a hard link is only possible on
    one file system, checked once for the two roots)."""
    same_fs = os.stat(venv).st_dev == os.stat(shared).st_dev
    own: list[str] = []

    def walk(here: str, there: str | None, rel: str) -> None:
        theirs: dict[str, int] = {}
        if there is not None:
            try:
                with os.scandir(there) as it:
                    theirs = {e.name: e.inode() for e in it if e.is_file(follow_symlinks=False)
                              or e.is_dir(follow_symlinks=False)}
            except OSError:
                theirs = {}
        with os.scandir(here) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path, f"{there}/{entry.name}" if entry.name in theirs else None,
                     f"{name}/")
            elif entry.is_file(follow_symlinks=False) and not (
                    same_fs and theirs.get(entry.name) == entry.inode()):
                own.append(name)

    walk(str(venv), str(shared), "")
    return own


def timestamp_pycs(venv: Path, shared: Path | None = None,
                   own: list[str] | None = None) -> list[Path]:
    """The .pyc files under ``venv`` that embed their source's mtime (PEP 552 flags 0).
    With ``shared`` (the deps layer's venv, checked when it was made), a file that is a hard
    link to the same path there is the layer's and is not read again; ``own`` is
    ``own_files(venv, shared)`` when the caller has it."""
    if shared is None:
        candidates = sorted(venv.rglob("*.pyc"))
    else:
        mine = own if own is not None else own_files(venv, shared)
        candidates = [venv / rel for rel in mine if rel.endswith(".pyc")]
    found = []
    for pyc in candidates:
        with pyc.open("rb") as fh:
            header = fh.read(8)
        if len(header) == 8 and int.from_bytes(header[4:8], "little") & 1 == 0:
            found.append(pyc)
    return found
