"""Build records on a real PostgreSQL server: the same migrations and the same behaviour as
the embedded SQLite default, so verdicts from CI jobs on many machines gate one promotion."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pg_fixtures import PASSWORD, PostgresServer, postgres_server

from giftbox.errors import StateError
from giftbox.records import MIGRATIONS, SCHEMA_VERSION, Records, open_records
from giftbox.settings import Settings

# A real PostgreSQL server on loopback: the slow tier (pyproject.toml's markers).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    yield from postgres_server()


@pytest.fixture
def pg_url(pg: PostgresServer, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return pg.create_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/giftbox.db"
    return str(request.getfixturevalue("pg_url"))


def _columns_sqlite(path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(path)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}


def _columns_pg(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND table_name <> 'giftbox_schema' "
                            "ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def test_the_same_migrations_make_the_same_schema(pg_url: str, tmp_path: Path) -> None:
    with Records(pg_url) as db:
        assert db.postgres and db.user_version() == SCHEMA_VERSION
    Records(pg_url).close()  # opening a current database again migrates nothing
    Records(tmp_path / "giftbox.db").close()
    assert _columns_pg(pg_url) == _columns_sqlite(tmp_path / "giftbox.db")


def test_records_round_trip_on_both_backends(location: str) -> None:
    with Records(location) as db:
        bid = db.start_build("keystone", "debian12", "x86_64", version="29.0.0-1~deb12")
        done = db.finish_build(bid, "succeeded", artifacts={"k.deb": "a" * 64}, duration=12.25)
        assert done.duration == 12.25 and done.artifacts == {"k.deb": "a" * 64}
        db.record_publishes("nightly", [("a" * 64, "k.deb"), ("b" * 64, "n.deb")],
                            build_id=bid)
        p = db.record_promotion(kind="promote", project="keystone", from_channel="nightly",
                                to_channel="stable", digests=["a" * 64], filenames=["k.deb"],
                                version="29.0.0-1~deb12", reason="CI #1",
                                scope=[("giftbox-keystone", "debian12", "amd64")],
                                forced="install: no verdict")
        assert (p.forced, p.scope) == ("install: no verdict",
                                       (("giftbox-keystone", "debian12", "amd64"),))
        db.pin("stable", "giftbox-keystone", "29.0.0-1~deb12", "first")
        db.pin("stable", "giftbox-keystone", "29.0.0-1~deb12", "again")  # upsert
        assert [x.reason for x in db.pins("stable")] == ["again"]
        v1 = db.record_verdict(digest="a" * 64, distro="debian12", arch="x86_64",
                               check="install", passed=False, detail="smoke failed",
                               timings={"install": 1.5})
        v2 = db.record_verdict(digest="a" * 64, distro="debian12", arch="x86_64",
                               check="install", passed=True, timings={"install": 1.25},
                               log_path="/tmp/x.log", duration=3.5)
        assert v2.id > v1.id and v2.passed is True and v2.timings == {"install": 1.25}
        assert db.latest_verdicts("a" * 64, "debian12", "x86_64")["install"].id == v2.id
        assert db.latest_verdicts("a" * 64, "debian12", "ppc64le") == {}
        assert [e.kind for e in db.history("stable")] == ["promote", "pin", "pin"]
        row = db.conn.execute("SELECT COUNT(*) AS n FROM publishes WHERE channel = ?",
                              ("nightly",)).fetchone()
        assert row[0] == row["n"] == 2


def test_settings_name_the_server(pg_url: str, settings: Settings) -> None:
    # $GIFTBOX_DATABASE as the command line resolves it into Settings.database.
    on_server = Settings.resolve(root=settings.root, env={
        **os.environ, "GIFTBOX_CACHE": str(settings.cache_dir), "GIFTBOX_DATABASE": pg_url})
    assert on_server.database == pg_url
    with open_records(on_server) as db:
        assert db.postgres and PASSWORD not in str(db.path)
    assert not (on_server.state_dir / "giftbox.db").exists()


def test_writers_queue_and_a_held_lock_is_named(pg_url: str) -> None:
    Records(pg_url).close()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with Records(pg_url) as db, db._write():
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10)
        with Records(pg_url, timeout=0.3) as db, pytest.raises(StateError) as err:
            db.start_build("nova", "debian12", "x86_64")
        assert "locked" in err.value.message and PASSWORD not in err.value.message
        with Records(pg_url, timeout=10) as db:  # a patient writer waits its turn
            threading.Timer(0.3, release.set).start()
            started = time.monotonic()
            db.start_build("nova", "debian12", "x86_64")
            assert time.monotonic() - started > 0.2
            assert len(db.last_builds()) == 1
    finally:
        release.set()
        t.join()


def test_a_newer_schema_on_the_server_is_refused(pg_url: str) -> None:
    Records(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE giftbox_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StateError, match="newer"):
        Records(pg_url)


def test_an_old_server_database_is_migrated_forward(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT",
                                           "SERIAL PRIMARY KEY"))
        conn.execute("CREATE TABLE giftbox_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO giftbox_schema VALUES (1)")
        conn.execute("INSERT INTO builds (project, distro, arch, status, started_at) "
                     "VALUES ('nova', 'debian12', 'x86_64', 'succeeded', '2024-06-01T00:00Z')")
    with Records(pg_url) as db:
        assert db.user_version() == SCHEMA_VERSION
        assert [b.project for b in db.last_builds()] == ["nova"]


def test_a_wrong_password_or_a_missing_server_is_named(pg: PostgresServer) -> None:
    with pytest.raises(StateError) as err:
        Records(pg.url(password="not-the-password"))
    assert "cannot connect" in err.value.message and "not-the-password" not in err.value.message
    with pytest.raises(StateError, match="cannot connect"):
        Records(f"postgresql://giftbox:{PASSWORD}@127.0.0.1:1/postgres", timeout=2)
