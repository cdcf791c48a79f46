"""Index generations: each apt suite and yum repository of a channel is a directory of
generations (``g000001``, ...), one of them live through one symlink.

A change builds a new generation aside from the channel's state (apt.py's Packages and
Release, yum.py's createrepo_c repodata), signs it, and makes it live by replacing the symlink
(rename(2) is atomic: a client sees the old generation or the new one). The live generation
and the one before it are kept whole, for clients mid-update that still hold the previous
index; package files that left the channel stay while such a generation names them.

    apt/dists/<codename> -> ../.gen/<codename>/gN
    yum/<distro>/<arch>/repodata -> .gen/gN/repodata
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from giftbox.errors import RepoError, StateError
from giftbox.files import temp_beside
from giftbox.repo.channels import AptTarget, Channel, YumTarget
from giftbox.repo.pool import Pool
from giftbox.repo.state import GEN_RE, PACKAGE_PATH_RE, ChannelState, channel_dir, write_json
from giftbox.settings import Settings
from giftbox.ui import Reporter

# --- which generation is live -------------------------------------------------------------


def live_link(repo_id: str) -> str:
    """The channel-relative symlink that makes a repository's metadata live."""
    kind, rest = repo_id.split("/", 1)
    return f"apt/dists/{rest}" if kind == "apt" else f"yum/{rest}/repodata"


def _current_gen(link: Path, yum: bool) -> str | None:
    try:
        parts = Path(os.readlink(link)).parts
    except (FileNotFoundError, OSError):
        return None
    return parts[-2] if yum else parts[-1]


def gen_number(root: Path, repo_id: str) -> int:
    current = _current_gen(root / live_link(repo_id), yum=repo_id.startswith("yum/"))
    m = GEN_RE.match(current or "")
    return int(m.group(1)) if m else 0


def _next_gen(gen_root: Path, current: str | None) -> tuple[str, Path]:
    n = 0
    if current:
        m = GEN_RE.match(current)
        n = int(m.group(1)) if m else 0
    name = f"g{n + 1:06d}"
    path = gen_root / name
    if path.exists():  # left by a publish that was killed before its swap
        shutil.rmtree(path)
    return name, path


# --- building and signing a generation ----------------------------------------------------


def build_generations(ch: Channel, state: ChannelState, repo_ids: list[str], settings: Settings,
                      reporter: Reporter,
                      key) -> dict[str, tuple[Path, str, str]]:  # type: ignore[no-untyped-def]
    """Build and sign new generations; returns repository id -> (live link, link target,
    generation name)."""
    from giftbox.keys import run_all, sign_commands

    root = channel_dir(settings, ch.name)
    built: dict[str, tuple[Path, str, str]] = {}
    signing = []
    apt_targets = {f"apt/{t.codename}": t for t in ch.apt_targets}
    yum_targets = {f"yum/{t.path}": t for t in ch.yum_targets}
    stanzas = _Stanzas(root, Pool(settings.repos_dir))
    release_jobs = []
    stamps: list[tuple[Path, Path | None, tuple[str, ...]]] = []
    for repo_id in repo_ids:
        link = root / live_link(repo_id)
        if repo_id in apt_targets:
            target = apt_targets[repo_id]
            gen, previous, name, proc = _apt_generation(ch, state, target, root, link, stanzas,
                                                        reporter)
            release_jobs.append((gen, target, proc))
            stamps.append((gen, previous, _APT_TOP))
            built[repo_id] = (link, f"../.gen/{target.codename}/{name}", name)
        else:
            repomd, previous, name, cmds = _yum_generation(ch, state, yum_targets[repo_id], root,
                                                           link, settings, key, reporter)
            signing += cmds
            stamps.append((repomd.parent, previous, _YUM_TOP))
            built[repo_id] = (link, f".gen/{name}/repodata", name)
    for gen, target, proc in release_jobs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RepoError(f"apt-ftparchive release failed for {target.codename}: "
                            f"{err.decode(errors='replace').strip()}")
        (gen / "Release").write_bytes(out)
        signing += sign_commands(settings, key, gen / "Release", clear=gen / "InRelease",
                                 detached=gen / "Release.gpg")
    if signing:
        with reporter.stage(f"sign ({key.fingerprint[-16:]})"):
            run_all(signing, "signing")
    for new, old, names in stamps:
        _later_than(new, old, names)
    stanzas.save()
    return built


def _apt_generation(ch: Channel, state: ChannelState, target: AptTarget, root: Path, link: Path,
                    stanzas: _Stanzas,
                    reporter: Reporter) -> tuple[Path, Path | None, str, Any]:
    """The apt half: a suite's next generation (Packages from the entries' parsed fields, by
    apt.py), its Release started (apt-ftparchive, run alongside the other suites'); returns
    (the generation, the live one, its name, the Release process)."""
    from giftbox.repo.apt import release_popen, write_suite

    with reporter.stage(f"apt {ch.name}/{target.codename}"):
        entries = sorted((e for e in state.entries.values()
                          if e.family.repository == "apt" and e.distro == target.distro),
                         key=lambda e: (e.name, e.filename))
        lines = [(e.arch, stanzas.get(e.digest)) for e in entries]
        gen_root = root / "apt" / ".gen" / target.codename
        current = _current_gen(link, yum=False)
        name, gen = _next_gen(gen_root, current)
        previous = gen_root / current if current else None
        write_suite(gen, target, lines, previous)
        proc = release_popen(gen, target, ch.name)
        reporter.detail(f"{len(entries)} package(s), generation {name}")
    return gen, previous, name, proc


def _yum_generation(ch: Channel, state: ChannelState, target: YumTarget, root: Path, link: Path,
                    settings: Settings, key,  # type: ignore[no-untyped-def]
                    reporter: Reporter) -> tuple[Path, Path | None, str, list[Any]]:
    """The yum half: a repository's next generation (createrepo_c over its rpms, by yum.py);
    returns (its repomd.xml, the live generation's repodata, its name, the commands that
    sign it)."""
    from giftbox.keys import sign_commands
    from giftbox.repo.yum import write_repodata

    with reporter.stage(f"yum {ch.name}/{target.path}"):
        repo_dir = root / "yum" / target.distro / target.arch
        repo_dir.mkdir(parents=True, exist_ok=True)
        prefix = f"yum/{target.path}/"
        files = [p[len(prefix):] for e in state.entries.values()
                 if e.family.repository == "yum"
                 for p in e.paths if p.startswith(prefix)]
        current = _current_gen(link, yum=True)
        gen_root = repo_dir / ".gen"
        name, gen = _next_gen(gen_root, current)
        repomd = write_repodata(repo_dir, gen, target, files,
                                gen_root / current if current else None)
        cmds = sign_commands(settings, key, repomd, detached=repomd.with_name("repomd.xml.asc"))
        reporter.detail(f"{len(files)} package(s), generation {name}")
    return repomd, gen_root / current / "repodata" if current else None, name, cmds


class _Stanzas:
    """digest -> Packages stanza, kept in ``.cache/packages.json``: regenerating Packages
    never re-reads a .deb."""

    def __init__(self, root: Path, pool: Pool) -> None:
        self.root = root
        self.pool = pool
        self.cache: dict[str, str] | None = None
        self.dirty = False

    def get(self, digest: str) -> str:
        from giftbox.repo.apt import packages_stanza

        if self.cache is None:
            self.cache = _load_cache(self.root)
        s = self.cache.get(digest)
        if s is None:
            s = self.cache[digest] = packages_stanza(self.pool.load(digest))
            self.dirty = True
        return s

    def save(self) -> None:
        if self.cache is not None and self.dirty:
            _save_cache(self.root, self.cache)


_APT_TOP = ("InRelease", "Release", "Release.gpg")
_YUM_TOP = ("repomd.xml", "repomd.xml.asc")


def _later_than(new: Path, old: Path | None, names: tuple[str, ...]) -> None:
    """Give a generation's top files (the ones fetched by name, not by hash) an mtime at least
    one whole second later than the live generation's.

    HTTP servers answer If-Modified-Since at one-second granularity (python's http.server
    answers 304 when mtime <= the date, nginx when they match; ETags are mtime and size), so two
    changes within one second would hand a client that fetched the first a 304 for the
    second: it would keep the old InRelease, and miss the change, until the next one.
    """
    floor = 0
    for name in names if old is not None else ():
        with contextlib.suppress(FileNotFoundError):
            floor = max(floor, int((old / name).stat().st_mtime) + 1)  # type: ignore[operator]
    stamp = max(float(int(time.time())), float(floor))
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.utime(new / name, (stamp, stamp))


def _load_cache(root: Path) -> dict[str, str]:
    """digest -> Packages stanza: regenerating Packages never re-reads a .deb."""
    try:
        data = json.loads((root / ".cache" / "packages.json").read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # a cache: anything missing is rebuilt from the pool's meta.json


def _save_cache(root: Path, cache: dict[str, str]) -> None:
    (root / ".cache").mkdir(exist_ok=True)
    # No fsync: losing the cache costs time, never correctness.
    write_json(root / ".cache" / "packages.json", cache, sync=False)


def export_key(settings: Settings, key, dest: Path) -> None:  # type: ignore[no-untyped-def]
    """(Re-)export the public key when missing, another key's, or older than the keyring
    (an extended expiry must reach clients)."""
    from giftbox.keys import export_public_key, gnupg_home

    ring = gnupg_home(settings) / "pubring.kbx"
    stamp = dest.with_name(f".{dest.name}.fpr")
    try:
        fresh = (stamp.read_text() == key.fingerprint
                 and dest.stat().st_mtime >= ring.stat().st_mtime)
    except FileNotFoundError:
        fresh = False
    if not fresh:
        export_public_key(settings, key, dest)
        stamp.write_text(key.fingerprint)


# --- making it live -----------------------------------------------------------------------


def swap(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(link)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: clients see the old target or the new one


def prune_generations(link: Path) -> None:
    """Drop generations other than the live one and the one before it, and temp links.

    The one before stays whole for clients that fetched its InRelease and then ask for the
    old plain-named indexes (by-hash copies cover those who use by-hash).
    """
    live = (link.parent / os.readlink(link)).resolve()
    # apt: dists/<codename> -> .gen/<codename>/gN; yum: repodata -> .gen/gN/repodata
    live_gen = live.parent if link.name == "repodata" else live
    gens = sorted((p for p in live_gen.parent.iterdir() if GEN_RE.match(p.name)),
                  key=lambda p: int(p.name[1:]))
    older = [g for g in gens if int(g.name[1:]) < int(live_gen.name[1:])]
    for g in gens:
        if g == live_gen or (older and g == older[-1]):
            continue
        shutil.rmtree(g, ignore_errors=True)
    for stray in link.parent.glob(f".{link.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stray.unlink()


# --- files that left the channel ----------------------------------------------------------


def expire_retired(root: Path, state: ChannelState) -> list[dict[str, Any]]:
    """Delete the retired files no live or previous index generation names any more;
    returns the ones that must stay a while longer."""
    live = {p for e in state.entries.values() for p in e.paths}
    keep = []
    for r in state.retired:
        if r["path"] in live:
            continue  # back in the channel (a rollback restored it): not retired any more
        if gen_number(root, r["repo"]) <= r["gen"]:
            keep.append(r)
            continue
        _unlink_inside(root, r["path"])
    return keep


def _unlink_inside(root: Path, rel: str) -> None:
    """Remove a channel package file, and only that: the path was validated when the state
    was read; it is checked again here against where it really leads."""
    if not PACKAGE_PATH_RE.match(rel):
        raise StateError(f"refusing to delete '{rel}': not a package path of {root}")
    path = root / rel
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise StateError(f"refusing to delete {path}: it leads outside {root}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
