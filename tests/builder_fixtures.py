"""Fixtures for the builder and container tests: real images, built once per session.

Nothing is mocked and nothing skips: without an engine, mmdebstrap or qemu these tests fail,
because a green run has to mean the builders really exist and really run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import docker
import pytest

from giftbox import builders
from giftbox.builders import BuilderImage
from giftbox.container import LABEL, OWNER_LABEL
from giftbox.settings import Settings
from giftbox.ui import Reporter

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def builder_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings over this repository's builders/, with a cache of its own."""
    cache = tmp_path_factory.mktemp("builder-cache")
    return Settings.resolve(root=REPO_ROOT, env=dict(os.environ, GIFTBOX_CACHE=str(cache)))


def _ensure(settings: Settings, distro: str, arch: str) -> BuilderImage:
    return builders.ensure(distro, arch, settings, Reporter(stream=sys.stderr))


@pytest.fixture(scope="session")
def debian12_x86_64(builder_settings: Settings) -> BuilderImage:
    return _ensure(builder_settings, "debian12", "x86_64")


@pytest.fixture(scope="session")
def debian12_ppc64le(builder_settings: Settings) -> BuilderImage:
    return _ensure(builder_settings, "debian12", "ppc64le")


@pytest.fixture(scope="session")
def debian11_x86_64(builder_settings: Settings) -> BuilderImage:
    return _ensure(builder_settings, "debian11", "x86_64")


def containers_of(pid: int) -> list[str]:
    """giftbox containers started by process ``pid`` that still exist."""
    client = docker.from_env()
    try:
        return [c.name for c in client.containers.list(
            all=True, filters={"label": [LABEL, f"{OWNER_LABEL}={pid}"]})]
    finally:
        client.close()
