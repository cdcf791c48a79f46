"""Which repository of a channel a package belongs to, and its place there.

The package says it. A .deb's Version and an rpm's Release carry the distro's ``version_tag``
(``~deb12``, ``.el9``; builders/<distro>/builder.yaml), and its architecture comes from the
package header. ``distro=`` overrides the tag for packages without one, but never contradicts
one. An entry's paths are where its hard links to the pool object live: a .deb once under
``apt/pool/main/``, an rpm under ``yum/<distro>/<arch>/Packages/`` of each arch it serves
(every arch for noarch).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from giftbox.distros import Distro
from giftbox.errors import RepoError
from giftbox.files import temp_beside
from giftbox.repo.channels import Channel
from giftbox.repo.pool import Pool, PoolObject, check_filename, read_before, read_whole
from giftbox.repo.state import Entry, utc_now


def _tag_matches(tag: str, text: str) -> bool:
    # A tag stands on its own: deb12 in 1.0~deb12 or 1.0+deb12u1, not in 1.0~deb120.
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(tag)}(?![0-9])", text) is not None


def _distro_for(channel: Channel, obj: PoolObject, tagged: str, path: Path,
                explicit: str | None) -> Distro:
    tagged_as = [name for name, family, tag in channel.known_tags
                 if family == obj.kind and _tag_matches(tag, tagged)]
    if explicit:
        d = channel.distro(explicit)
        if d.family != obj.kind:
            raise RepoError(f"{path} is a .{obj.kind} but distro '{explicit}' uses .{d.family}")
        if tagged_as and explicit not in tagged_as:
            raise RepoError(f"{path}: version {obj.version} carries the tag of "
                            f"{tagged_as[0]}, not of {explicit}",
                            hint="drop --distro, or publish the package built for " + explicit)
        return d
    served = [d for d in channel.distros if d.name in tagged_as]
    if len(served) == 1:
        return served[0]
    if tagged_as and not served:
        raise RepoError(f"{path} is built for {', '.join(tagged_as)}, which channel "
                        f"'{channel.name}' does not serve",
                        hint="it serves " + ", ".join(d.name for d in channel.distros))
    tags = ", ".join(f"{d.version_tag} ({d.name})" for d in channel.distros
                     if d.family == obj.kind) or "none"
    raise RepoError(
        f"{path}: cannot tell which distro {obj.name} {obj.version} is for"
        + (" (several tags match)" if served else ""),
        hint=f"its version should carry one of the tags channel '{channel.name}' serves: {tags}; "
             "or pass --distro")


def _check_arch(channel: Channel, distro: Distro, obj: PoolObject, path: Path) -> tuple[str, ...]:
    """The arch directories the package goes to (arch-independent ones go to all)."""
    spelled = tuple(distro.family_obj.arch(a) for a in distro.arches)
    if obj.arch in ("all", "noarch"):
        return spelled
    if obj.arch not in spelled:
        raise RepoError(f"{path}: architecture {obj.arch} is not served for {distro.name} by "
                        f"channel '{channel.name}' (it serves {', '.join(spelled)})")
    return (obj.arch,)


def inspect_artifact(path: Path, channel: Channel, explicit: str | None,
                     pool: Pool | None = None) -> tuple[PoolObject, Entry]:
    """Read ``path`` whole (pool.inspect_deb / inspect_rpm) and say where it goes in
    ``channel``: its pool object (with its distro) and its channel entry.

    Bytes the ``pool`` already holds, read whole by this giftbox's reader, are not read again:
    their sha256 is the same, so the reading is (``Pool.known``); nor are bytes this process
    read whole before (``pool.read_before``: a package read ahead while it was linted). The
    file is read once: the bytes hashed are the bytes read whole (``Pool.add`` checks its
    copy against the sha256).
    """
    if not path.is_file():
        raise RepoError(f"{path}: no such file")
    kinds = {".deb": "deb", ".rpm": "rpm"}
    if path.suffix not in kinds:
        raise RepoError(f"{path}: not a .deb or .rpm")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    known = pool.known(digest, kinds[path.suffix]) if pool is not None else None
    if known is None:
        known = read_before(digest, kinds[path.suffix])  # read whole by this process
    obj = known if known is not None else read_whole(
        path, kinds[path.suffix], data, digest, pool.verdicts if pool is not None else None)
    check_filename(obj.filename)
    distro = _distro_for(channel, obj, obj.tagged, path, explicit)
    arches = _check_arch(channel, distro, obj, path)
    obj = PoolObject(**{**obj.as_dict(), "distro": distro.name})  # type: ignore[arg-type]
    return obj, _entry(obj, _paths(obj, distro, arches))


def _entry(obj: PoolObject, paths: tuple[str, ...]) -> Entry:
    return Entry(digest=obj.digest, filename=obj.filename, kind=obj.kind, name=obj.name,
                 version=obj.version, arch=obj.arch, distro=obj.distro, size=obj.size,
                 paths=paths, added=utc_now())


def entry_for(channel: Channel, obj: PoolObject) -> Entry:
    """The channel entry for a pool object (what promotion adds to the target channel)."""
    distro = channel.distro(obj.distro)
    arches = _check_arch(channel, distro, obj, Path(obj.filename))
    return _entry(obj, _paths(obj, distro, arches))


def _paths(obj: PoolObject, distro: Distro, arches: tuple[str, ...]) -> tuple[str, ...]:
    """Where the package is linked in a channel: apt keeps one pool per suite, yum one
    ``Packages/`` directory per arch."""
    if obj.family.repository == "apt":
        return (f"apt/{obj.apt_pool_path}",)
    return tuple(f"yum/{distro.name}/{a}/Packages/{obj.filename}" for a in arches)


def repositories_of(channel: Channel, entry: Entry) -> set[str]:
    if entry.family.repository == "apt":
        return {f"apt/{channel.distro(entry.distro).codename}"}
    return {"yum/" + "/".join(p.split("/")[1:3]) for p in entry.paths}


def repo_of_path(ch: Channel, e: Entry, rel: str) -> str:
    if e.family.repository == "apt":
        return f"apt/{ch.distro(e.distro).codename}"
    return "yum/" + "/".join(rel.split("/")[1:3])


# --- putting it there ---------------------------------------------------------------------


def link_all(pool: Pool, obj: PoolObject, root: Path, paths: Iterable[str]) -> list[Path]:
    """Hard-link ``obj`` at each channel path; returns the links this call created."""
    created = []
    for rel in paths:
        dest = root / rel
        if not dest.exists():
            created.append(dest)
        _link(pool.object_path(obj), dest)
    return created


def relink_repaired(pool: Pool, obj: PoolObject, paths: Iterable[str]) -> None:
    """After the pool stored a damaged object again: every channel's link to the old inode
    (where the entry's paths are) now links the whole one; the indexes already name its
    digest, so nothing else changes."""
    for root in sorted(p for p in pool.root.parent.iterdir()
                       if p.is_dir() and not p.name.startswith(".")):
        for rel in paths:
            if (root / rel).is_file():
                _link(pool.object_path(obj), root / rel)


def _link(src: Path, dest: Path) -> None:
    """Hard-link a pool object into the channel; an existing link must be the same object."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except FileExistsError:
        if not os.path.samefile(src, dest):
            # A stray file (not a pool link) where a package should go: replace it atomically.
            tmp = temp_beside(dest)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.link(src, tmp)
            os.replace(tmp, dest)

