"""giftbox's own .deb writer (giftbox.package.debwriter) and the pool's block-by-block reading
of it (giftbox.repo.archive.list_tar with BlockVerdicts), issue #15.

Real tools judge what is written: dpkg-deb lists and unpacks it, xz tests it, lintian-free
here (tests/test_lint_cache.py and the build tests lint whole packages). The pool's reading
is checked against hostile streams: a damaged block, a block that stops inside a member, an
archive end in the middle, a member that leads out of the tree.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from giftbox import xz
from giftbox.errors import RepoError
from giftbox.package import debwriter
from giftbox.package.layout import scan_tree
from giftbox.package.lint import DigestCache
from giftbox.repo.archive import BlockVerdicts, ar_members
from giftbox.repo.pool import read_deb
from tests.repo_fixtures import need

EPOCH = 1_700_000_000
CONTROL = (b"Package: giftbox-writer\nVersion: 1.0-1\nArchitecture: all\n"
           b"Maintainer: giftbox <giftbox@packages.invalid>\nDescription: a test\n x\n")


def make_tree(root: Path, dirs: int = 40) -> None:
    """Directories enough for several chunks, files of several modes, a symlink, a name
    longer than a tar header holds, and a name that is not ASCII."""
    base = root / "opt" / "app"
    for d in range(dirs):
        sub = base / f"pkg{d:02d}"
        sub.mkdir(parents=True)
        for f in range(5):
            (sub / f"mod{f}.py").write_text(f"# {d} {f}\n" + "x = 1\n" * (200 * f + d))
    (base / "bin").mkdir()
    (base / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    os.chmod(base / "bin" / "tool", 0o755)
    os.symlink("../pkg00/mod0.py", base / "bin" / "link")
    deep = base / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / ("f" * 80 + ".txt")).write_text("deep\n")
    (base / "ünïcode.txt").write_text("é\n")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_bytes(CONTROL)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.utime(path, (EPOCH, EPOCH))


def write(root: Path, out: Path, store: Path | None, preset: int = 0) -> tuple[Path, int]:
    tree = [e for e in scan_tree(root) if e.rel != "DEBIAN" and not e.rel.startswith("DEBIAN/")]
    blocks, made = debwriter.data_blocks(root, tree, EPOCH, preset, digests=DigestCache(None),
                                         store=debwriter.BlockStore(store), threads=2)
    debwriter.write_deb(out, debwriter.control_tar(root / "DEBIAN", EPOCH), blocks, EPOCH)
    return out, made


def listing(deb: Path) -> list[str]:
    return subprocess.run(["dpkg-deb", "--contents", str(deb)], check=True,
                          capture_output=True, text=True).stdout.splitlines()


def test_dpkg_deb_reads_the_written_package_as_the_tree(tmp_path: Path) -> None:
    need("dpkg-deb")
    root = tmp_path / "root"
    make_tree(root)
    deb, made = write(root, tmp_path / "w.deb", None)
    assert made > 3  # several chunks: several blocks
    info = subprocess.run(["dpkg-deb", "--field", str(deb), "Package"], check=True,
                          capture_output=True, text=True).stdout
    assert info.strip() == "giftbox-writer"
    lines = listing(deb)
    assert lines[0].split()[-1] == "./"
    assert all(" root/root " in line for line in lines)
    assert any(line.endswith("./opt/app/bin/link -> ../pkg00/mod0.py") for line in lines)
    assert any(line.startswith("-rwxr-xr-x") and line.endswith("./opt/app/bin/tool")
               for line in lines)
    out = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    for entry in scan_tree(root):
        if entry.rel.startswith("DEBIAN"):
            continue
        got = out / entry.rel
        assert os.lstat(got).st_mode == entry.st.st_mode, entry.rel
        if got.is_symlink():
            assert os.readlink(got) == os.readlink(root / entry.rel)
        elif got.is_file():
            assert got.read_bytes() == (root / entry.rel).read_bytes()
    members = [name for name, _ in ar_members(deb)]
    assert members == ["debian-binary", "control.tar.gz", "data.tar.xz"]
    data = dict(ar_members(deb))["data.tar.xz"]
    assert len(xz.blocks_of(data)) == made + 1  # and the end of the archive
    subprocess.run(["xz", "-t"], input=bytes(data), check=True)


def test_blocks_from_the_store_give_the_same_package_and_a_change_compresses_its_chunk(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    store = tmp_path / "store"
    plain, _ = write(root, tmp_path / "plain.deb", None)
    cold, made = write(root, tmp_path / "cold.deb", store)
    warm, again = write(root, tmp_path / "warm.deb", store)
    assert plain.read_bytes() == cold.read_bytes() == warm.read_bytes()
    assert made > 3 and again == 0

    changed = root / "opt" / "app" / "pkg17" / "mod3.py"
    changed.write_text(changed.read_text() + "y = 2\n")
    os.utime(changed, (EPOCH, EPOCH))
    after, redone = write(root, tmp_path / "after.deb", store)
    assert redone == 1
    need("dpkg-deb")
    out = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(after), str(out)], check=True)
    assert (out / "opt/app/pkg17/mod3.py").read_text().endswith("y = 2\n")
    assert write(root, tmp_path / "fresh.deb", None)[0].read_bytes() == after.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 3 << 18), min_size=1, max_size=30))
def test_a_large_file_is_a_chunk_of_its_own_and_chunks_stay_small(
        tmp_path_factory: pytest.TempPathFactory, sizes: list[int]) -> None:
    """A file of _ALONE bytes or more starts its chunk (a patch to it compresses it without
    its neighbours); a chunk grows past _CHUNK_MAX only by its last member; every member is
    in exactly one chunk, in order."""
    root = tmp_path_factory.mktemp("chunks")
    for n, size in enumerate(sizes):
        with open(root / f"f{n:02d}", "wb") as fh:
            fh.truncate(size)  # sparse: only the sizes count
    tree = scan_tree(root)
    cut = debwriter.chunks(tree)
    assert [e.rel for c in cut for e in c] == [e.rel for e in tree]
    for chunk in cut:
        held = [e.st.st_size for e in chunk]
        for i, size in enumerate(held):
            if size >= debwriter._ALONE:
                assert i == 0, held
        assert sum(512 + h + (-h % 512) for h in held[:-1]) < debwriter._CHUNK_MAX, held


def test_a_damaged_cached_block_is_compressed_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    store = tmp_path / "store"
    first, _ = write(root, tmp_path / "first.deb", store)
    for path in sorted(p for p in store.rglob("*") if p.is_file())[:3]:
        path.write_bytes(path.read_bytes()[:30])
    again, made = write(root, tmp_path / "again.deb", store)
    assert made == 3
    assert again.read_bytes() == first.read_bytes()


# --- the pool's reading, block by block -------------------------------------------------------


def test_the_pool_reads_a_block_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    deb, made = write(root, tmp_path / "w.deb", tmp_path / "store")
    verdicts = BlockVerdicts(tmp_path / "verdicts")
    assert read_deb(deb, deb.read_bytes(), verdicts).startswith(b"Package: giftbox-writer")
    kept = sorted(p.name.rsplit(".", 1)[1] for p in (tmp_path / "verdicts").rglob("*.*"))
    assert kept == ["end"] + ["run"] * made

    # a block the pool has a verdict for is not decompressed again: here, one whose bytes
    # would not decompress at all, given the verdict by hand
    data = dict(ar_members(deb))["data.tar.xz"]
    layout = xz.blocks_of(data)
    at, block = layout[1]
    bad = block.data[:20] + bytes(b ^ 0xFF for b in block.data[20:40]) + block.data[40:]
    forged = xz.Block(bad, block.unpadded, block.size)
    blocks = [b for _, b in layout]
    blocks[1] = forged
    rewritten = tmp_path / "forged.deb"
    debwriter.write_deb(rewritten, debwriter.control_tar(root / "DEBIAN", EPOCH), blocks, EPOCH)
    with pytest.raises(RepoError, match="does not decompress"):
        read_deb(rewritten, rewritten.read_bytes(), verdicts)
    verdicts.keep(verdicts.key(forged), "run")
    read_deb(rewritten, rewritten.read_bytes(), verdicts)


def test_verdicts_are_kept_while_used_and_forgotten_when_not(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    deb, made = write(root, tmp_path / "w.deb", tmp_path / "store")
    folder = tmp_path / "verdicts"
    verdicts = BlockVerdicts(folder)
    read_deb(deb, deb.read_bytes(), verdicts)
    files = sorted(folder.rglob("*.*"))
    assert len(files) == made + 1
    long_ago = time.time() - (BlockVerdicts.KEEP_DAYS + 1) * 86400
    for f in files:
        os.utime(f, (long_ago, long_ago))
    read_deb(deb, deb.read_bytes(), verdicts)  # every verdict used: touched
    assert verdicts.prune(time.time()) == 0
    assert sorted(folder.rglob("*.*")) == files

    for f in files:
        os.utime(f, (long_ago, long_ago))
    stray = folder / "not-a-shard"  # what is not a store's shard is left alone
    stray.write_text("x")
    assert verdicts.prune(time.time(), dry_run=True) == made + 1
    assert sorted(folder.rglob("*.*")) == files
    assert verdicts.prune(time.time()) == made + 1
    assert not list(folder.rglob("*.*")) and stray.is_file()
    read_deb(deb, deb.read_bytes(), verdicts)  # forgotten: decoded again, and kept again
    assert len(list(folder.rglob("*.*"))) == made + 1


def _deb_of_blocks(tmp_path: Path, name: str, blocks: list[xz.Block]) -> Path:
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("./control")
        info.size = len(CONTROL)
        tar.addfile(info, io.BytesIO(CONTROL))
    out = tmp_path / f"{name}.deb"
    debwriter.write_deb(out, control.getvalue(), blocks, EPOCH)
    return out


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_blocks_cut_inside_a_member_are_read_as_one_stream(tmp_path: Path) -> None:
    """xz -T cuts blocks by size, not at members: such a member is read whole, as before."""
    data = _tar([("./a", b"a" * 3000), ("./b", b"b" * 700)])
    cut = 1024 + 100  # inside ./a's data
    blocks = [xz.compress_block(data[:cut], 0), xz.compress_block(data[cut:], 0)]
    deb = _deb_of_blocks(tmp_path, "cut", blocks)
    verdicts = BlockVerdicts(tmp_path / "verdicts")
    read_deb(deb, deb.read_bytes(), verdicts)
    assert not list((tmp_path / "verdicts").rglob("*.*"))  # nothing learnt of such blocks


@pytest.mark.parametrize(("why", "order", "message"), [
    ("the end of the archive first", ("end", "run"), "there is data after its end"),
    ("no end of the archive", ("run",), "ends before its end-of-archive block"),
])
def test_known_blocks_in_the_wrong_order_are_refused(tmp_path: Path, why: str,
                                                     order: tuple[str, ...],
                                                     message: str) -> None:
    data = _tar([("./a", b"a" * 3000)])
    run, end = data[:512 * 7], data[512 * 7:]
    known = {"run": xz.compress_block(run, 0), "end": xz.compress_block(end, 0)}
    verdicts = BlockVerdicts(tmp_path / "verdicts")
    right = _deb_of_blocks(tmp_path, "right", [known["run"], known["end"]])
    read_deb(right, right.read_bytes(), verdicts)  # both blocks now have verdicts
    wrong = _deb_of_blocks(tmp_path, "wrong", [known[k] for k in order])
    with pytest.raises(RepoError, match=message):
        read_deb(wrong, wrong.read_bytes(), verdicts)


def test_a_block_with_a_member_that_leads_out_is_refused(tmp_path: Path) -> None:
    good = _tar([("./ok", b"fine\n")])
    evil = _tar([("./usr/../../etc/evil", b"x\n")])
    blocks = [xz.compress_block(good[:1024], 0), xz.compress_block(evil, 0)]
    deb = _deb_of_blocks(tmp_path, "evil", blocks)
    verdicts = BlockVerdicts(tmp_path / "verdicts")
    with pytest.raises(RepoError, match="leads out of the package's tree"):
        read_deb(deb, deb.read_bytes(), verdicts)
    assert not list((tmp_path / "verdicts").rglob("*.*"))


@pytest.mark.parametrize("damage", ["stream padding", "second stream", "cut footer",
                                    "index count", "check type"])
def test_blocks_of_refuses_what_is_not_one_exact_stream(damage: str) -> None:
    blocks = [xz.compress_block(b"a" * 600, 0), xz.compress_block(b"b" * 600, 0)]
    data = bytearray(xz.stream(blocks))
    assert [b for _, b in xz.blocks_of(bytes(data))] == blocks
    if damage == "stream padding":
        data += bytes(4)
    elif damage == "second stream":
        data += xz.stream(blocks[:1])
    elif damage == "cut footer":
        del data[-1]
    elif damage == "index count":
        index_at = len(data) - 12 - (int.from_bytes(data[-8:-4], "little") + 1) * 4
        data[index_at + 1] = 1
    else:
        data[7] = 0x01  # CRC32
    with pytest.raises(ValueError):
        xz.blocks_of(bytes(data))


NAMES = st.sampled_from(["./a", "./b/c", "./" + "d" * 120, "./usr/../../x", "/abs", "./é"])


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.lists(st.tuples(NAMES, st.integers(0, 1500)), min_size=1, max_size=5),
       damage=st.sampled_from(["none", "none", "cut", "garbage"]),
       cuts=st.lists(st.one_of(st.floats(0.01, 0.99), st.integers(0, 6)), max_size=4),
       data=st.data())
def test_reading_by_blocks_agrees_with_reading_whole(tmp_path: Path, members: list[tuple[str, int]],
                                                    damage: str, cuts: list[float],
                                                    data: st.DataObject) -> None:
    """Any tar, cut into blocks anywhere: the pool's reading with verdicts (first with none
    kept, then with what it kept) accepts exactly what the whole-stream reading accepts."""
    from giftbox.repo.archive import list_tar

    raw = _tar([(name, bytes([65 + i % 26]) * size) for i, (name, size) in enumerate(members)])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        starts = [m.offset for m in tar.getmembers()]  # where a member's headers begin
    if damage == "cut":
        raw = raw[:data.draw(st.integers(1, len(raw) - 1))]
    elif damage == "garbage":
        raw += b"hidden"
    # a float cuts anywhere, an integer at a member's start: both kinds of block
    points = sorted({min(len(raw), int(len(raw) * c) if isinstance(c, float)
                         else starts[c % len(starts)]) for c in cuts} | {0, len(raw)})
    blocks = [xz.compress_block(raw[a:b], 0) for a, b in zip(points, points[1:], strict=False)
              if b > a]
    deb = _deb_of_blocks(tmp_path, f"prop-{len(list(tmp_path.iterdir()))}", blocks)
    member = dict(ar_members(deb))["data.tar.xz"]

    def accepted(verdicts: BlockVerdicts | None) -> bool:
        try:
            list_tar(deb, "data.tar.xz", member, verdicts=verdicts)
        except RepoError:
            return False
        return True

    whole = accepted(None)
    verdicts = BlockVerdicts(tmp_path / f"verdicts-{deb.stem}")
    assert accepted(verdicts) == whole
    assert accepted(verdicts) == whole
    kept = list((tmp_path / f"verdicts-{deb.stem}").rglob("*.*"))
    assert not kept or whole  # a refused member leaves no verdict
