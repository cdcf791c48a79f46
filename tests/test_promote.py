"""Promotion, rollback, retention and the build records, told as the operator's story.

Promote what nightly tested into stable, install it from stable with apt in a clean container
and get the same bytes; roll it back and apt sees the previous version; prune without breaking
pins or other channels. Version order is checked against the real ``dpkg --compare-versions``
and ``rpm.vercmp``; the records database against real concurrent processes. Nothing is mocked;
a missing tool or engine fails the test, it never skips it.
"""

# Fixtures are imported from tests/repo_fixtures.py (the lead owns conftest.py), so pytest
# parameters shadow the imported names by design.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import pytest
from plumbum import local

from giftbox.errors import RepoError, StateError
from giftbox.records import MIGRATIONS, SCHEMA_VERSION, Records, open_records
from giftbox.repo import Pool, channel_state, publish, republish
from giftbox.repo.archive import BlockVerdicts
from giftbox.repo.promote import gc, history, pin, promote, prune, rollback, unpin
from giftbox.repo.vercmp import dpkg_compare, rpm_compare
from giftbox.settings import Settings
from tests.repo_fixtures import (
    Tree,
    apt_client,
    apt_image,  # noqa: F401  (fixture)
    giftbox_cli,
    http_server,
    keyring_template,  # noqa: F401  (fixture)
    make_deb,
    need,
    tree,  # noqa: F401  (fixture)
)

HELLO = "giftbox-hello"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _nightly(tree: Tree, tmp: Path, *versions: str) -> dict[str, Path]:
    """Publish one giftbox-hello per version into nightly; returns version -> .deb."""
    debs = {v: make_deb(tmp / v, version=v, message=f"hello {v}") for v in versions}
    publish("nightly", list(debs.values()), tree.settings)
    return debs


def _versions(tree: Tree, channel: str, name: str = HELLO) -> list[str]:
    return sorted(e.version for e in channel_state(tree.settings, channel).entries.values()
                  if e.name == name)


@pytest.fixture(autouse=True)
def _actor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIFTBOX_USER", "alice")
    monkeypatch.delenv("GIFTBOX_DATABASE", raising=False)


# --- version order, against the real tools ------------------------------------------------

VERSIONS = ["1.0", "1.0-1", "1.0-1~deb12", "1.0-2~deb12", "1.0~rc1-1", "1:0.9-1", "1.10-1",
            "1.9-1", "1.0+git1-1", "1.0a-1", "1.0-1.1.gabcdef12~deb12", "1.0-1~deb12u1",
            "33.0.1~dev5-1~deb12", "33.0.1-1~deb12", "1.0-0", "1.0-1+b1", "1.0-01", "1.0.0-1",
            "1.0-1.el9", "1.0-1.1.g1234.el9", "1.0-10.el9", "1.0~rc1-1.el9", "1.0.1-1.el9",
            "2:1.0-1.el9", "1.0^post1-1.el9"]


@pytest.mark.slow
def test_version_order_matches_dpkg() -> None:
    dpkg = local[need("dpkg")]
    deb_versions = [v for v in VERSIONS if "^" not in v]  # ^ is not valid in Debian versions
    for a, b in itertools.product(deb_versions, deb_versions):
        ours = dpkg_compare(a, b)
        for op, holds in (("lt", ours < 0), ("eq", ours == 0), ("gt", ours > 0)):
            code = dpkg["--compare-versions", a, op, b].run(retcode=None)[0]
            assert (code == 0) == holds, f"dpkg says {a} {op} {b} is {code == 0}"


def test_version_order_matches_rpm_vercmp() -> None:
    pairs = list(itertools.product(VERSIONS, VERSIONS))
    lua = "".join(f"print(rpm.vercmp('{a}', '{b}') .. ' ')" for a, b in pairs)
    out = local[need("rpm")]["--eval", "%{lua:" + lua + "}"]().split()
    assert len(out) == len(pairs)
    for (a, b), theirs in zip(pairs, out, strict=True):
        assert rpm_compare(a, b) == int(theirs), f"rpm.vercmp({a}, {b}) = {theirs}"


# --- promote ------------------------------------------------------------------------------


def test_promote_links_the_highest_version_by_digest(tree: Tree, tmp_path: Path) -> None:
    debs = _nightly(tree, tmp_path, "1.9-1~deb12", "1.10-1~deb12", "1.10~rc1-1~deb12")
    [moved] = promote(tree.settings, "hello", "nightly", "stable", reason="CI #1 green")
    # 1.10 sorts above 1.9 and above its own rc (string order would say 1.9).
    assert [e.version for e in moved.moved] == ["1.10-1~deb12"]
    entry = moved.moved[0]
    assert entry.digest == _sha256(debs["1.10-1~deb12"])
    # No bytes copied: nightly, stable and the pool hold one inode.
    pooled = Pool(tree.repos).object_path(Pool(tree.repos).load(entry.digest))
    in_nightly = tree.repos / "nightly" / entry.paths[0]
    in_stable = tree.repos / "stable" / entry.paths[0]
    assert os.stat(pooled).st_ino == os.stat(in_nightly).st_ino == os.stat(in_stable).st_ino
    assert os.stat(pooled).st_nlink == 3
    assert _versions(tree, "stable") == ["1.10-1~deb12"]
    with open_records(tree.settings) as db:
        [p] = db.promotions("stable")
    assert (p.kind, p.project, p.from_channel, p.to_channel) == \
        ("promote", "hello", "nightly", "stable")
    assert p.digests == (entry.digest,) and p.who == "alice" and p.reason == "CI #1 green"
    assert p.id == moved.promotion_id

    # Again: nothing moves and nothing is recorded.
    [again] = promote(tree.settings, HELLO, "nightly", "stable")
    assert again.moved == () and [e.filename for e in again.unchanged] == [entry.filename]
    assert len(history(tree.settings, "stable")) == 1


def test_promote_an_exact_version(tree: Tree, tmp_path: Path) -> None:
    _nightly(tree, tmp_path, "1.0-1~deb12", "1.1-1~deb12")
    for wanted in ("1.0-1~deb12", "1.0-1", "1.0"):
        [r] = promote(tree.settings, "hello", "nightly", "stable", version=wanted,
                      dry_run=True)
        assert [e.version for e in r.moved] == ["1.0-1~deb12"], wanted
    promote(tree.settings, "hello", "nightly", "stable", version="1.0")
    assert _versions(tree, "stable") == ["1.0-1~deb12"]


def test_promote_all_and_filters(tree: Tree, tmp_path: Path) -> None:
    publish("nightly", [make_deb(tmp_path / "a", name="giftbox-alpha", version="1.0-1~deb12"),
                        make_deb(tmp_path / "b", name="giftbox-beta", version="2.0-1~deb12"),
                        make_deb(tmp_path / "c", name="giftbox-beta", version="2.1-1~deb12")],
            tree.settings)
    results = promote(tree.settings, None, "nightly", "stable", all_projects=True,
                      distro="debian12", arch="x86_64")
    assert {r.project: [e.version for e in r.moved] for r in results} == \
        {"alpha": ["1.0-1~deb12"], "beta": ["2.1-1~deb12"]}
    assert _versions(tree, "stable", "giftbox-beta") == ["2.1-1~deb12"]


def test_dry_run_changes_nothing(tree: Tree, tmp_path: Path) -> None:
    _nightly(tree, tmp_path, "1.0-1~deb12")
    publish("stable", [make_deb(tmp_path / "s", name="giftbox-other", version="1.0-1~deb12")],
            tree.settings)

    def snapshot() -> dict[str, tuple[int, int, float]]:
        return {str(p.relative_to(tree.repos)): (p.lstat().st_ino, p.lstat().st_nlink,
                                                 p.lstat().st_mtime)
                for p in tree.repos.rglob("*")}

    before = snapshot()
    db_before = (tree.settings.state_dir / "giftbox.db").exists()
    out = giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to", "stable",
                      "--dry-run")()
    assert "would move" in out and "giftbox-hello_1.0-1~deb12_all.deb" in out
    assert "dry run: nothing changed" in out
    data = json.loads(giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to",
                                  "stable", "--dry-run", "--json")())
    assert data["dry_run"] and data["promotions"][0]["moved"][0]["version"] == "1.0-1~deb12"
    assert snapshot() == before
    assert (tree.settings.state_dir / "giftbox.db").exists() == db_before
    out = giftbox_cli(tree, "prune", "nightly", "--keep", "1", "--dry-run", "--gc",
                      "--min-age", "0")()
    assert snapshot() == before, out


def test_bad_input_gets_clear_errors(tree: Tree, tmp_path: Path) -> None:
    _nightly(tree, tmp_path, "1.0-1~deb12", "1.1-1~deb12")
    with pytest.raises(RepoError) as err:
        promote(tree.settings, "hello", "nightly", "stable", version="9.9")
    assert "does not have hello version 9.9" in err.value.message
    assert "1.0-1~deb12, 1.1-1~deb12" in (err.value.hint or "")
    with pytest.raises(RepoError) as err:
        promote(tree.settings, "hello", "nightly", "stabel")
    assert "did you mean 'stable'" in err.value.render()
    with pytest.raises(RepoError) as err:
        promote(tree.settings, "hello", "nightly", "nightly")
    assert "to itself" in err.value.message
    with pytest.raises(RepoError) as err:
        promote(tree.settings, "nova", "nightly", "stable")
    assert "no package of project 'nova'" in err.value.message
    assert HELLO in (err.value.hint or "")
    with pytest.raises(RepoError) as err:
        rollback(tree.settings, "stable", "hello")
    assert "nothing to roll back" in err.value.message
    with pytest.raises(RepoError) as err:
        pin(tree.settings, "nightly", HELLO, "3.0-1~deb12")
    assert "does not have giftbox-hello version 3.0-1~deb12" in err.value.message
    assert "1.0-1~deb12, 1.1-1~deb12" in (err.value.hint or "")
    with pytest.raises(RepoError) as err:
        unpin(tree.settings, "nightly", HELLO)
    assert "not pinned" in err.value.message
    # The same through the command: exit code 8, the message on stderr.
    code, _, err_text = giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to",
                                    "stable", "--version", "9.9").run(retcode=None)
    assert code == 8 and "it has: giftbox-hello debian12/all: 1.0-1~deb12, 1.1-1~deb12" \
        in err_text
    assert channel_state(tree.settings, "stable").entries == {}


def test_history_shows_who_when_why(tree: Tree, tmp_path: Path) -> None:
    deb = make_deb(tmp_path, version="1.0-1~deb12")
    env = {"GIFTBOX_USER": "bob"}
    giftbox_cli(tree, "publish", "nightly", str(deb)).with_env(**env)()
    out = giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to", "stable",
                      "--reason", "passed tempest").with_env(**env)()
    assert "hello: nightly -> stable (promotion #1, by bob)" in out
    assert "giftbox-hello_1.0-1~deb12_all.deb  1.0-1~deb12  debian12/all  sha256:" in out
    giftbox_cli(tree, "pin", "stable", HELLO, "1.0-1~deb12", "--reason", "prod-eu").with_env(
        GIFTBOX_USER="carol")()
    text = giftbox_cli(tree, "channel", "history", "stable")()
    assert "promote" in text and "bob" in text and "(passed tempest)" in text
    assert "pin" in text and "carol" in text and "(prod-eu)" in text
    events = json.loads(giftbox_cli(tree, "channel", "history", "stable", "--json")())["events"]
    assert [(e["kind"], e["who"], e["reason"]) for e in events] == \
        [("promote", "bob", "passed tempest"), ("pin", "carol", "prod-eu")]
    assert events[0]["at"].endswith("Z") and events[0]["detail"]["from_channel"] == "nightly"
    nightly = json.loads(giftbox_cli(tree, "channel", "history", "nightly", "--json")())
    assert [e["kind"] for e in nightly["events"]] == ["publish", "promote-out"]
    assert nightly["events"][0]["detail"]["digest"] == _sha256(deb)


# --- rollback -----------------------------------------------------------------------------


def test_rollback_restores_the_previous_entries(tree: Tree, tmp_path: Path) -> None:
    _nightly(tree, tmp_path, "1.0-1~deb12")
    promote(tree.settings, "hello", "nightly", "stable")
    _nightly(tree, tmp_path, "1.1-1~deb12")
    promote(tree.settings, "hello", "nightly", "stable")
    _nightly(tree, tmp_path, "1.2-1~deb12")
    promote(tree.settings, "hello", "nightly", "stable")
    assert _versions(tree, "stable") == ["1.0-1~deb12", "1.1-1~deb12", "1.2-1~deb12"]
    # Prune stable meanwhile: the rollback brings back what was there before the promotion,
    # linking it from the pool again.
    prune(tree.settings, "stable", 1)
    assert _versions(tree, "stable") == ["1.2-1~deb12"]

    rb = rollback(tree.settings, "stable", "hello", reason="1.2 breaks boot")
    assert [e.version for e in rb.withdrawn] == ["1.2-1~deb12"]
    assert sorted(e.version for e in rb.restored) == ["1.0-1~deb12", "1.1-1~deb12"]
    assert _versions(tree, "stable") == ["1.0-1~deb12", "1.1-1~deb12"]
    packages = (tree.repos / "stable/apt/dists/bookworm/main/binary-amd64/Packages").read_text()
    assert "Version: 1.2-1~deb12" not in packages and "Version: 1.1-1~deb12" in packages
    # The withdrawn file stays for clients holding the previous index generation, and goes
    # with the next generation.
    withdrawn = tree.repos / "stable" / rb.withdrawn[0].paths[0]
    assert withdrawn.exists()
    republish("stable", tree.settings)
    assert not withdrawn.exists()
    # The pool keeps the withdrawn object (nightly has it anyway).
    Pool(tree.repos).load(rb.withdrawn[0].digest)

    # Rollbacks stack: the next undoes the promotion before.
    rollback(tree.settings, "stable")
    assert _versions(tree, "stable") == ["1.0-1~deb12"]
    rollback(tree.settings, "stable")
    assert _versions(tree, "stable") == []
    with pytest.raises(RepoError, match="nothing to roll back"):
        rollback(tree.settings, "stable")
    with open_records(tree.settings) as db:
        promotions = db.promotions("stable")
    assert [p.kind for p in promotions] == ["promote"] * 3 + ["rollback"] * 3
    assert all(p.rolled_back_by for p in promotions[:3])
    assert promotions[3].rolls_back == promotions[2].id and promotions[3].reason == \
        "1.2 breaks boot"


def test_rollback_refuses_when_the_previous_bytes_are_gone(tree: Tree, tmp_path: Path) -> None:
    _nightly(tree, tmp_path, "1.0-1~deb12")
    promote(tree.settings, "hello", "nightly", "stable")
    _nightly(tree, tmp_path, "1.1-1~deb12")
    promote(tree.settings, "hello", "nightly", "stable")
    prune(tree.settings, "stable", 1)
    prune(tree.settings, "nightly", 1)
    collected = gc(tree.settings, min_age=0)
    assert [r["filename"] for r in collected.removed] == ["giftbox-hello_1.0-1~deb12_all.deb"]
    before = (tree.repos / "stable" / "state.json").read_bytes()
    with pytest.raises(RepoError) as err:
        rollback(tree.settings, "stable")
    assert "no longer in the pool" in err.value.message
    assert (tree.repos / "stable" / "state.json").read_bytes() == before


# --- prune and gc -------------------------------------------------------------------------


def test_prune_keeps_n_pinned_and_what_another_channel_holds(tree: Tree,
                                                             tmp_path: Path) -> None:
    versions = [f"1.{n}-1~deb12" for n in range(6)]
    _nightly(tree, tmp_path, *versions)
    promote(tree.settings, "hello", "nightly", "stable", version="1.1")
    pin(tree.settings, "nightly", HELLO, "1.0-1~deb12", reason="prod pins it")
    stable_entry = channel_state(tree.settings, "stable").entries[
        "giftbox-hello_1.1-1~deb12_all.deb"]
    ino = os.stat(tree.repos / "stable" / stable_entry.paths[0]).st_ino

    dry = prune(tree.settings, "nightly", 2, dry_run=True)
    assert [e.version for e in dry.withdrawn] == ["1.3-1~deb12", "1.2-1~deb12", "1.1-1~deb12"]
    assert [e.version for e in dry.pinned] == ["1.0-1~deb12"]
    assert dry.elsewhere["giftbox-hello_1.1-1~deb12_all.deb"] == ["stable"]
    assert len(_versions(tree, "nightly")) == 6

    pruned = prune(tree.settings, "nightly", 2, reason="retention")
    assert pruned.as_dict()["withdrawn"] == dry.as_dict()["withdrawn"]
    assert _versions(tree, "nightly") == ["1.0-1~deb12", "1.4-1~deb12", "1.5-1~deb12"]
    packages = (tree.repos / "nightly/apt/dists/bookworm/main/binary-amd64/Packages").read_text()
    assert "Version: 1.3-1~deb12" not in packages and "Version: 1.0-1~deb12" in packages
    # stable still serves 1.1, the very same inode, from the pool object nightly dropped.
    assert _versions(tree, "stable") == ["1.1-1~deb12"]
    assert os.stat(tree.repos / "stable" / stable_entry.paths[0]).st_ino == ino

    # gc: removes 1.2 and 1.3 (no channel has them), keeps 1.1 (stable) and the rest.
    dry_gc = gc(tree.settings, min_age=0, dry_run=True)
    assert sorted(r["filename"] for r in dry_gc.removed) == \
        ["giftbox-hello_1.2-1~deb12_all.deb", "giftbox-hello_1.3-1~deb12_all.deb"]
    assert gc(tree.settings).removed == ()  # too young for the default grace period
    # the pool's xz block verdicts: one no publish used for KEEP_DAYS goes with gc
    shard = tree.repos / ".pool" / "xz-blocks" / "ab"
    shard.mkdir(parents=True, exist_ok=True)
    old, recent = shard / ("ab" + "0" * 62 + ".run"), shard / ("ab" + "1" * 62 + ".end")
    old.touch()
    recent.touch()
    long_ago = time.time() - (BlockVerdicts.KEEP_DAYS + 1) * 86400
    os.utime(old, (long_ago, long_ago))
    assert gc(tree.settings, min_age=0, dry_run=True).verdicts == 1 and old.exists()
    done = gc(tree.settings, min_age=0)
    assert done.verdicts == 1 and not old.exists() and recent.exists()
    assert done.as_dict()["removed"] == dry_gc.as_dict()["removed"]
    for r in done.removed:
        with pytest.raises(RepoError):
            Pool(tree.repos).load(str(r["digest"]))
        # The filename stays bound to its bytes: other bytes under it are still refused.
        assert Pool(tree.repos).owner_of(str(r["filename"])) == r["digest"]
    Pool(tree.repos).load(stable_entry.digest)

    # Unpinned, the old version goes at the next prune.
    unpin(tree.settings, "nightly", HELLO)
    prune(tree.settings, "nightly", 2)
    assert _versions(tree, "nightly") == ["1.4-1~deb12", "1.5-1~deb12"]
    kinds = [e.kind for e in history(tree.settings, "nightly")]
    assert kinds.count("prune") == 2 and "pin" in kinds and "unpin" in kinds


def test_cli_prune_and_pin(tree: Tree, tmp_path: Path) -> None:
    _nightly(tree, tmp_path, "1.0-1~deb12", "1.1-1~deb12", "1.2-1~deb12")
    out = giftbox_cli(tree, "pin", "nightly", HELLO, "1.0-1~deb12")()
    assert "pinned giftbox-hello 1.0-1~deb12 in nightly" in out
    data = json.loads(giftbox_cli(tree, "prune", "nightly", "--keep", "1", "--json")())
    assert [w["version"] for w in data["prune"]["withdrawn"]] == ["1.1-1~deb12"]
    assert [p["version"] for p in data["prune"]["pinned"]] == ["1.0-1~deb12"]
    code, _, err = giftbox_cli(tree, "pin", "nightly", HELLO, "7.0").run(retcode=None)
    assert code == 8 and "only a version the channel holds can be pinned" in err


# --- real apt clients ---------------------------------------------------------------------

DOWNLOAD_AND_RUN = """
apt-get update
cd /tmp && apt-get download giftbox-hello && sha256sum giftbox-hello_*.deb
apt-get install -y --no-install-recommends giftbox-hello
giftbox-hello
dpkg-query -W giftbox-hello
"""


@pytest.mark.docker
def test_apt_installs_the_promoted_bytes_and_sees_a_rollback(tree: Tree, tmp_path: Path,
                                                             apt_image: str) -> None:
    debs = _nightly(tree, tmp_path, "1.0-1~deb12")
    tested_old = _sha256(debs["1.0-1~deb12"])
    promote(tree.settings, "hello", "nightly", "stable")
    debs = _nightly(tree, tmp_path, "1.1-1~deb12")
    tested = _sha256(debs["1.1-1~deb12"])
    giftbox_cli(tree, "promote", "hello", "--from", "nightly", "--to", "stable")()
    key = tree.repos / "stable" / "giftbox-stable.asc"
    with http_server(tree.repos) as url:
        code, out = apt_client(apt_image, f"{url}/stable/apt", key, DOWNLOAD_AND_RUN)
        assert code == 0, out
        assert f"{tested}  giftbox-hello_1.1-1~deb12_all.deb" in out
        assert "hello 1.1-1~deb12" in out
        assert "Hash Sum mismatch" not in out

        giftbox_cli(tree, "promote", "--rollback", "--to", "stable", "hello", "--reason",
                    "regression")()
        code, out = apt_client(apt_image, f"{url}/stable/apt", key, DOWNLOAD_AND_RUN)
        assert code == 0, out
        assert f"{tested_old}  giftbox-hello_1.0-1~deb12_all.deb" in out
        assert "hello 1.0-1~deb12" in out and "1.1-1~deb12" not in out


# --- the records database -----------------------------------------------------------------


def test_build_records_lifecycle(tree: Tree) -> None:
    from giftbox import records

    bid = records.start_build(tree.settings, "nova", "debian12", "x86_64",
                              upstream_commit="a" * 40, patch_digest="p", lock_digest="l",
                              builder_image="sha256:b", spec_digest="s", log_path="/tmp/x.log")
    assert records.build(tree.settings, bid).status == "running"
    done = records.finish_build(tree.settings, bid, "succeeded", version="33.0.0-1~deb12",
                                artifacts={"giftbox-nova_33.0.0-1~deb12_amd64.deb": "d" * 64})
    assert done.status == "succeeded" and done.duration is not None and done.duration >= 0
    assert done.who == "alice" and done.upstream_commit == "a" * 40
    assert done.artifacts == {"giftbox-nova_33.0.0-1~deb12_amd64.deb": "d" * 64}
    failed = records.start_build(tree.settings, "nova", "debian12", "x86_64")
    records.finish_build(tree.settings, failed, "failed", error="pip failed")
    other = records.start_build(tree.settings, "keystone", "rocky9", "x86_64")
    assert [(b.project, b.id, b.status) for b in records.last_builds(tree.settings)] == \
        [("keystone", other, "running"), ("nova", failed, "failed")]
    assert [b.id for b in records.last_builds(tree.settings, "nova")] == [failed]
    with pytest.raises(StateError, match="already finished"):
        records.finish_build(tree.settings, bid, "failed")
    with pytest.raises(StateError, match="succeeded or failed"):
        records.finish_build(tree.settings, other, "done")
    records.record_publish(tree.settings, "nightly", "d" * 64,
                           "giftbox-nova_33.0.0-1~deb12_amd64.deb", build_id=bid)
    assert [e.kind for e in history(tree.settings, "nightly")] == ["publish"]
    db = sqlite3.connect(tree.settings.state_dir / "giftbox.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "giftbox.db"
    Records(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError) as err:
        Records(path)
    assert str(path) in err.value.message and "newer" in err.value.message
    assert "upgrade giftbox" in (err.value.hint or "")


def test_migrations_run_forward_from_an_older_version(tmp_path: Path) -> None:
    path = tmp_path / "giftbox.db"
    old = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO builds (project, distro, arch, status, started_at) "
                "VALUES ('nova', 'debian12', 'x86_64', 'succeeded', '2024-06-01T00:00:00Z')")
    old.commit()
    old.close()
    with Records(path) as db:
        assert db.user_version() == SCHEMA_VERSION
        [b] = db.last_builds()
        assert (b.project, b.status, b.who) == ("nova", "succeeded", "")
        db.pin("stable", "giftbox-nova", "1.0-1~deb12", "kept")
        assert [p.version for p in db.pins("stable")] == ["1.0-1~deb12"]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "giftbox.db"
    script = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from giftbox.records import Records
        with Records(Path({str(path)!r})) as db:
            for i in range(40):
                bid = db.start_build("p" + sys.argv[1], "debian12", "x86_64")
                db.finish_build(bid, "succeeded", artifacts={{f"f{{i}}": "x"}})
                db.record_publish("nightly", "d" * 64, f"w{{sys.argv[1]}}-{{i}}.deb")
        """)
    procs = [local[sys.executable]["-c", script, str(n)].popen() for n in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Records(path) as db:
        assert db.conn.execute("SELECT COUNT(*) FROM builds WHERE status = 'succeeded'") \
            .fetchone()[0] == 240
        assert db.conn.execute("SELECT COUNT(*) FROM publishes").fetchone()[0] == 240
        assert len(db.last_builds()) == 6


def test_a_locked_database_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "giftbox.db"
    Records(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with Records(path, timeout=0.3) as db, pytest.raises(StateError) as err:
            db.start_build("nova", "debian12", "x86_64")
        assert str(path) in err.value.message and "locked" in err.value.message
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_database_url(tree: Tree, tmp_path: Path) -> None:
    # PostgreSQL is supported (tests/test_records_pg.py); a server that is not there is named,
    # the password never shown.
    def at(database: str) -> Settings:  # $GIFTBOX_DATABASE, as the command line resolves it
        return Settings.resolve(root=tree.root, env={**tree.env(), "GIFTBOX_DATABASE": database})

    with pytest.raises(StateError) as err:
        open_records(at("postgresql://giftbox:hunter2@127.0.0.1:1/giftbox"))
    assert "cannot connect" in err.value.message and "hunter2" not in err.value.message
    open_records(at(f"sqlite:///{tmp_path}/elsewhere.db")).close()
    assert (tmp_path / "elsewhere.db").is_file()
    not_a_db = tmp_path / "garbage.db"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a usable build records database"):
        open_records(at(str(not_a_db)))
