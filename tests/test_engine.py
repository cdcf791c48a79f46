"""The engine: one connection, made on first use, to the address Settings names; images built,
found, tagged, listed and removed; a refused request named by what the engine said."""

# Fixtures come from tests/builder_fixtures.py (the lead owns conftest.py); pytest finds them
# by name, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from giftbox import builders
from giftbox.builders import BuilderImage
from giftbox.engine import LABEL, OWNER_LABEL, ContainerState, Engine, EngineError
from giftbox.errors import BuilderError
from giftbox.settings import Settings
from tests.builder_fixtures import (  # noqa: F401 (fixtures)
    REPO_ROOT,
    builder_settings,
    debian12_x86_64,
)


def test_the_engine_is_asked_only_when_used_and_at_the_address_settings_name(
        tmp_path: Path) -> None:
    dead = f"unix://{tmp_path}/nothing-listens.sock"
    settings = Settings.resolve(root=REPO_ROOT, env={"DOCKER_HOST": dead, "HOME": str(tmp_path)})
    assert settings.docker_host == dead
    engine = Engine(settings)  # a command that never needs the engine never meets this error
    engine.close()
    with pytest.raises(BuilderError) as err:
        engine.exists("giftbox-builder/debian12:x86_64-000000000000")
    assert f"no container engine answered at {dead}" in err.value.message
    assert err.value.exit_code == 5
    assert "systemctl start docker" in (err.value.hint or "")

    secret = replace(settings, docker_host="tcp://deploy:s3cr3t@127.0.0.1:1")
    with pytest.raises(BuilderError) as err:
        Engine(secret).tags()
    assert "deploy:***@127.0.0.1:1" in err.value.message and "s3cr3t" not in err.value.message


@pytest.mark.docker
def test_a_build_streams_its_lines_and_the_image_is_found_listed_and_removed(
        tmp_path: Path, builder_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The process environment names a dead engine: Settings' address is the one used.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing-listens.sock")
    settings = replace(builder_settings, docker_host="unix:///var/run/docker.sock")
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    tag = f"giftbox-test/engine:{uuid.uuid4().hex[:12]}"
    with Engine(settings) as engine:
        try:
            lines = list(engine.build(tmp_path, tag=tag, platform="linux/amd64",
                                      labels={"org.giftbox.kind": "test"}))
            assert any(line.startswith("Step 2/3 : COPY hello.txt") for line in lines), lines
            image = engine.image(tag)
            assert image is not None and image.id.startswith("sha256:")
            assert image.architecture == "amd64"
            assert image.labels["org.giftbox.kind"] == "test"
            assert engine.tags("giftbox-test/engine:") == {tag: image.id}
            engine.tag(tag, f"{tag}-again")
            assert engine.tags("giftbox-test/engine:") == {tag: image.id,
                                                           f"{tag}-again": image.id}
        finally:
            for ref in (tag, f"{tag}-again"):
                if engine.exists(ref):
                    engine.remove_image(ref)
        assert engine.image(tag) is None and engine.tags("giftbox-test/engine:") == {}
        with pytest.raises(EngineError, match="No such image"):
            engine.remove_image(tag)


@pytest.mark.docker
def test_an_image_is_looked_up_without_the_sdk_and_answers_as_the_sdk_does(
        tmp_path: Path, builder_settings: Settings) -> None:
    # A cache-hit build asks the engine one thing (is the builder image the one it was keyed
    # by?) straight over the socket: the same answer as the SDK's, and the SDK never imported.
    (tmp_path / "Dockerfile").write_text('FROM scratch\nLABEL org.giftbox.kind="test"\n'
                                         'COPY Dockerfile /x\n')
    tag = f"giftbox-test/engine:{uuid.uuid4().hex[:12]}"
    settings = replace(builder_settings, docker_host="unix:///var/run/docker.sock")
    with Engine(settings) as engine:
        list(engine.build(tmp_path, tag=tag, platform="linux/amd64", labels={}))
        by_sdk = engine.image(tag)
    try:
        probe = (
            "import sys\n"
            "from giftbox.engine import Engine\n"
            "from giftbox.settings import Settings\n"
            "s = Settings.resolve(env={'DOCKER_HOST': 'unix:///var/run/docker.sock', "
            "'GIFTBOX_ROOT': sys.argv[2], 'HOME': sys.argv[2]})\n"
            "e = Engine(s)\n"
            "i = e.image(sys.argv[1])\n"
            "print(i.id, i.architecture, dict(i.labels), e.image(sys.argv[1] + '-absent'),"
            " 'docker' in sys.modules)\n")
        out = subprocess.run(["python3", "-c", probe, tag, str(tmp_path)], check=True,
                             capture_output=True, text=True, cwd=tmp_path).stdout.split(" ", 2)
        assert by_sdk is not None
        assert out[:2] == [by_sdk.id, by_sdk.architecture]
        assert out[2].strip() == f"{dict(by_sdk.labels)} None False"
        assert by_sdk.labels["org.giftbox.kind"] == "test"
    finally:
        with Engine(settings) as engine:
            engine.remove_image(tag)


@pytest.mark.docker
def test_a_failed_build_says_what_the_engine_said_after_the_lines_before_it(
        tmp_path: Path, builder_settings: Settings) -> None:
    # A scratch image has no shell: the RUN step fails in the engine, not in giftbox.
    (tmp_path / "Dockerfile").write_text("FROM scratch\nRUN true\n")
    tag = f"giftbox-test/engine:{uuid.uuid4().hex[:12]}"
    lines: list[str] = []
    with Engine(builder_settings) as engine:
        with pytest.raises(EngineError) as err:
            for line in engine.build(tmp_path, tag=tag, platform="linux/amd64"):
                lines.append(line)
        assert not engine.exists(tag)
    assert any(line.startswith("Step 2/2 : RUN true") for line in lines), lines
    assert "/bin/sh" in err.value.reason
    assert err.value.exit_code == 5  # a BuilderError, should a caller not name it


@pytest.mark.docker
def test_prune_finds_the_container_a_killed_giftbox_left_behind(
        debian12_x86_64: BuilderImage, builder_settings: Settings) -> None:
    gone = subprocess.Popen(["true"])  # a pid that no longer runs: a giftbox killed by SIGKILL
    gone.wait()
    name = f"giftbox-test-left-behind-{uuid.uuid4().hex[:8]}"
    with Engine(builder_settings) as engine:
        try:
            status = engine.start(debian12_x86_64.tag, ["sleep", "infinity"], name=name,
                                  platform="linux/amd64", binds=[], workdir="/",
                                  labels={LABEL: "1", OWNER_LABEL: str(gone.pid)})
            assert status == "running"
            mine = engine.containers(f"{OWNER_LABEL}={os.getpid()}")
            assert name not in {c.name for c in mine}
            (left,) = engine.containers(f"{OWNER_LABEL}={gone.pid}")
            assert left.name == name and left.labels[LABEL] == "1"
            result = builders.prune(builder_settings, dry_run=True, engine=engine)
            assert name in result.removed_containers
            assert engine.containers(f"{OWNER_LABEL}={gone.pid}")  # a dry run removes nothing
        finally:
            engine.remove_container(name)
        assert engine.containers(f"{OWNER_LABEL}={gone.pid}") == []
        engine.remove_container(name)  # gone already is fine


@pytest.mark.docker
def test_a_sibling_runs_to_its_end_is_committed_and_asked_with_its_secret_masked(
        debian12_x86_64: BuilderImage, builder_settings: Settings) -> None:
    # verify's MariaDB sibling in small: a detached container without an init or binds, waited
    # on, its file system committed as an image, then a long-running one asked by exec.
    name = f"giftbox-test-sibling-{uuid.uuid4().hex[:8]}"
    ref = f"giftbox-test/engine:sibling-{uuid.uuid4().hex[:8]}"
    labels = {LABEL: "1", OWNER_LABEL: str(os.getpid())}
    with Engine(builder_settings) as engine:
        try:
            engine.start(debian12_x86_64.tag, ["sh", "-c", "echo made > /made; echo done"],
                         name=name, platform="linux/amd64", labels=labels, init=False)
            assert engine.wait(name, timeout=120) == 0
            assert engine.state(name) == ContainerState(status="exited", exit_code=0)
            assert engine.logs(name, tail=5).strip() == "done"
            image = engine.commit(name, ref)
            assert engine.image(ref) == image
            engine.remove_container(name)

            engine.start(ref, ["sleep", "infinity"], name=name, platform="linux/amd64",
                         labels=labels, init=False)
            assert engine.state(name).status == "running"
            assert name in {c.name for c in engine.containers(f"{OWNER_LABEL}={os.getpid()}")}
            assert engine.exec_output(name, ["cat", "/made"]) == (0, "made\n")
            code, out = engine.exec_output(name, ["sh", "-c", "echo pw=hunter22 >&2; exit 4"],
                                           secrets=["hunter22"])
            assert (code, out) == (4, "pw=***\n")
        finally:
            engine.remove_container(name)
            if engine.exists(ref):
                engine.remove_image(ref)
        with pytest.raises(EngineError, match="No such container"):
            engine.state(name)
        with pytest.raises(EngineError, match="No such container"):
            engine.exec_output(name, ["true"])
