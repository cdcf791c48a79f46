"""What installs wheels into a build's venv inside the builder: uv where the builder's pinned
tools have it (much faster on a few hundred wheels), pip otherwise (old Pythons uv does not
serve). Chosen once per build, by asking the builder (``Installer.detect``); both install
offline from the wheelhouse, without dependencies (the lock names every one) and without
bytecode (the build compiles hash-based .pyc itself).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from giftbox.container import Container
from giftbox.lock import TOOLS, WHEELHOUSE_DIR


class Installer(ABC):
    """Installs wheelhouse wheels into the venv at a prefix, inside the builder."""

    name: ClassVar[str]

    @staticmethod
    def detect(c: Container) -> Installer:
        """uv if the builder's tools have it, else pip."""
        has_uv = c.call(["test", "-x", f"{TOOLS}/uv"], check=False, stream=False).returncode == 0
        return UvInstaller() if has_uv else PipInstaller()

    @abstractmethod
    def argv(self, prefix: str, what: list[str]) -> list[str]:
        """The command installing ``what`` (wheel paths, or ``-r FILE``) into ``prefix``."""

    def install(self, c: Container, prefix: str, what: list[str], log_path: Path) -> None:
        c.call(self.argv(prefix, what), log_path=log_path, stream=False)


class UvInstaller(Installer):
    name = "uv"

    def argv(self, prefix: str, what: list[str]) -> list[str]:
        return [f"{TOOLS}/uv", "pip", "install", "--python", f"{prefix}/bin/python",
                "--offline", "--no-index", "--find-links", WHEELHOUSE_DIR, "--no-deps",
                "--no-progress", *what]


class PipInstaller(Installer):
    name = "pip"

    def argv(self, prefix: str, what: list[str]) -> list[str]:
        return [f"{prefix}/bin/python", "-m", "pip", "install", "--no-index",
                "--find-links", WHEELHOUSE_DIR, "--no-deps", "--progress-bar", "off",
                "--no-compile", *what]
