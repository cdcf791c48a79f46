"""yum repositories: createrepo_c metadata in a generation directory, signed, swapped in.

``yum/<distro>/<arch>/repodata`` is a symlink to ``.gen/<gen>/repodata``. createrepo_c writes
the new metadata into a fresh generation (reusing the previous one's parsed headers with
``--update-md-path``, so only new rpms are read), the detached signature is made beside it, and
only then is the symlink replaced. ``--pkglist`` names exactly the channel's entries, so an rpm
linked by a publish that was killed never appears in metadata by accident.
"""

from __future__ import annotations

from pathlib import Path

from giftbox.errors import RepoError
from giftbox.repo.channels import YumTarget


def write_repodata(repo_dir: Path, gen: Path, target: YumTarget, files: list[str],
                   previous: Path | None) -> Path:
    """createrepo_c over ``files`` (relative to ``repo_dir``); returns repomd.xml."""
    from giftbox import host

    gen.mkdir(parents=True)
    pkglist = gen / "pkglist"
    pkglist.write_text("".join(f"{f}\n" for f in sorted(files)))
    argv = ["createrepo_c", "--quiet", "--no-database", "--pkglist", str(pkglist),
            "--outputdir", str(gen)]
    if previous is not None and (previous / "repodata" / "repomd.xml").is_file():
        argv += ["--update", "--update-md-path", str(previous)]
    proc = host.run([*argv, str(repo_dir)], error=RepoError,
                    needed_for="to write the yum repositories of a channel")
    pkglist.unlink()
    if proc.returncode != 0:
        raise RepoError(f"createrepo_c failed for {target.path}: {proc.stderr.strip()}")
    repomd = gen / "repodata" / "repomd.xml"
    if not repomd.is_file():
        raise RepoError(f"createrepo_c wrote no repomd.xml for {target.path}")
    listed = primary_count(repomd)
    if listed != len(files):
        # createrepo_c skips an rpm it cannot read and carries on: the channel state and
        # what dnf sees would disagree. Refuse before anything is swapped in.
        raise RepoError(f"createrepo_c listed {listed} of the {len(files)} package(s) of "
                        f"{target.path} in primary.xml",
                        hint="an rpm in the channel is unreadable: giftbox channel show "
                             "lists them; republish the damaged one")
    return repomd


def primary_count(repomd: Path) -> int:
    """The ``packages=`` count of the primary metadata a repomd.xml names."""
    import bz2
    import gzip
    import lzma
    import re

    from giftbox import host

    text = repomd.read_text()
    m = re.search(r'<data type="primary">.*?<location href="([^"]+)"', text, re.S)
    if m is None:
        raise RepoError(f"{repomd} names no primary metadata")
    path = repomd.parent.parent / m.group(1)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(raw)
    elif path.suffix == ".xz":
        data = lzma.decompress(raw)
    elif path.suffix == ".bz2":
        data = bz2.decompress(raw)
    elif path.suffix == ".zst":
        data = host.run(["zstd", "-dcq"], error=RepoError, needed_for=f"to read {path}",
                        input=raw, text=False, check=True).stdout
    else:
        data = raw
    head = re.search(rb'<metadata[^>]*\bpackages="(\d+)"', data[:4096])
    if head is None:
        raise RepoError(f"{path} has no package count")
    return int(head.group(1))
