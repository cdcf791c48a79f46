"""apt suites: Packages from cached stanzas, Release by apt-ftparchive, by-hash, signatures.

A suite is built whole in a new generation directory ``apt/.gen/<codename>/<gen>/`` and then
made live by replacing the symlink ``apt/dists/<codename>`` (rename is atomic), so a client
sees either the old suite or the new one, never a mix. Indexes are also published by hash, and
the previous generation's indexes are carried into the new ``by-hash/`` directories: a client
that read the old InRelease just before the swap still finds every index it names.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from giftbox import host
from giftbox.errors import RepoError
from giftbox.repo.channels import AptTarget
from giftbox.repo.pool import PoolObject, control_value, parse_control, render_control

INDEXES = ("Packages", "Packages.gz", "Packages.xz")
BY_HASH = (("SHA256", hashlib.sha256), ("MD5Sum", hashlib.md5))


def packages_stanza(obj: PoolObject) -> str:
    """The Packages entry for a .deb, generated from its parsed control fields (never the
    control file's text) plus where and what the file is.

    The control is parsed again, strictly, here: a pool object recorded by an older giftbox
    that copied its control verbatim cannot smuggle a second stanza or a duplicate field into
    an index, and Package/Version/Architecture are the ones the channel state holds.
    """
    where = f"pool object {obj.digest[:16]} ({obj.filename})"
    fields = parse_control(obj.control, where)
    for name, value in (("Package", obj.name), ("Version", obj.version),
                        ("Architecture", obj.arch)):
        if control_value(fields, name, where) != value:
            raise RepoError(f"{where}: control {name} does not match the pool's record "
                            f"({value})", hint="republish the package")
    return (f"{render_control(fields)}\nFilename: {obj.apt_pool_path}\nSize: {obj.size}\n"
            f"MD5sum: {obj.md5}\nSHA1: {obj.sha1}\nSHA256: {obj.digest}\n")


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "gz":
        return gzip.compress(data, compresslevel=6, mtime=0)  # mtime 0: reproducible
    # preset 1: a fraction of the time of the default for a few percent more bytes.
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=1)


def write_suite(gen: Path, target: AptTarget, stanzas: Iterable[tuple[str, str]],
                previous: Path | None) -> None:
    """Packages, compressed variants and by-hash links for every arch of ``target``.

    ``stanzas`` are (arch, Packages stanza) pairs in the order they should appear; arch
    ``all`` goes into every architecture's index.
    """
    by_arch: dict[str, list[str]] = {a: [] for a in target.arches}
    for arch, stanza in stanzas:
        for a in (target.arches if arch == "all" else (arch,)):
            if a in by_arch:
                by_arch[a].append(stanza)
    gen.mkdir(parents=True)
    with ThreadPoolExecutor(max_workers=4) as pool:  # zlib and lzma release the GIL
        jobs = []
        for arch, entries in by_arch.items():
            d = gen / "main" / f"binary-{arch}"
            d.mkdir(parents=True)
            data = "\n".join(entries).encode()
            (d / "Packages").write_bytes(data)
            for kind in ("gz", "xz"):
                jobs.append((d / f"Packages.{kind}", pool.submit(_compress, kind, data)))
        for path, job in jobs:
            path.write_bytes(job.result())
    for arch in target.arches:
        d = gen / "main" / f"binary-{arch}"
        for name in INDEXES:
            _carry(d / name, d)
        # The previous generation's indexes stay reachable by hash (invariant 4).
        old = previous / "main" / f"binary-{arch}" if previous else None
        if old is not None and old.is_dir():
            for name in INDEXES:
                if (old / name).is_file():
                    _carry(old / name, d)


def _carry(index: Path, arch_dir: Path) -> None:
    """Hard-link ``index`` into ``arch_dir``'s by-hash directories under each digest."""
    data = index.read_bytes()
    for dirname, algo in BY_HASH:
        d = arch_dir / "by-hash" / dirname
        d.mkdir(parents=True, exist_ok=True)
        dest = d / algo(data).hexdigest()
        if not dest.exists():
            os.link(index, dest)


def release_command(gen: Path, target: AptTarget, channel: str) -> list[str]:
    """The apt-ftparchive argv writing the Release of a generation: MD5Sum and SHA256 only
    (run with ``release_popen`` or ``write_release``)."""
    opts = {
        "Origin": "giftbox",
        "Label": f"giftbox {channel}",
        "Suite": channel,  # lets operators pin by channel: Pin: release a=<channel>
        "Codename": target.codename,
        "Architectures": " ".join(target.arches),
        "Components": "main",
        "Acquire-By-Hash": "yes",
        "Description": f"giftbox {channel} channel for {target.distro}",
        "SHA1": "false",
        "SHA512": "false",
    }
    argv = ["apt-ftparchive"]
    for k, v in opts.items():
        argv += ["-o", f"APT::FTPArchive::Release::{k}={v}"]
    return [*argv, "release", str(gen)]


_RELEASE_NEEDS = "to write the Release file of a channel's apt suites"


def release_popen(gen: Path, target: AptTarget, channel: str) -> host.Popen[bytes]:
    """apt-ftparchive started on the Release of a generation (stdout and stderr piped), so
    that several suites' run side by side."""
    return host.popen(release_command(gen, target, channel), error=RepoError,
                      needed_for=_RELEASE_NEEDS)


def write_release(gen: Path, target: AptTarget, channel: str) -> Path:
    proc = host.run(release_command(gen, target, channel), error=RepoError,
                    needed_for=_RELEASE_NEEDS)
    if proc.returncode != 0:
        raise RepoError(f"apt-ftparchive release failed for {target.codename}: "
                        f"{proc.stderr.strip()}")
    release = gen / "Release"
    release.write_text(proc.stdout)
    return release
