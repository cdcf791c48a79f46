"""A throwaway PostgreSQL server (Debian's ``postgresql`` package) for the records tests.

initdb and pg_ctl refuse to run as root, so the cluster belongs to the ``postgres`` user the
package creates (``runuser``) when the tests run as root; it listens on 127.0.0.1 only, on a
free port, with its data and socket in a temporary directory, and is stopped afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PASSWORD = "pg-test-secret"


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise RuntimeError(f"{tool} not found: install Debian's postgresql package "
                           "(scripts/setup-machine does)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="giftbox-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "postgres" if os.getuid() == 0 else None

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, check=check,
                              timeout=120)

    def start(self) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "giftbox",
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                  "-E", "UTF8", "--no-sync")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l",
                  str(self.dir / "server.log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://giftbox:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database on the server (one per test: tests do not share records)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # our own test names, never input
        return self.url(name)

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop",
                  check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
