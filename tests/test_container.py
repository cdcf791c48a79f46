"""The container runner: argv in, output streamed and logged, files in and out, host CA and
index handed over at run time, and the container gone afterwards whatever happened."""

from __future__ import annotations

# Fixtures come from tests/builder_fixtures.py (the lead owns conftest.py); pytest finds them
# by name, which ruff reads as redefinitions.
# ruff: noqa: F811
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from giftbox.builders import BuilderImage
from giftbox.container import CA_PATH, CommandFailed, Container, LazyContainer, Mount, mask_url
from giftbox.distros import Arch
from giftbox.engine import LABEL, OWNER_LABEL, Engine
from giftbox.errors import BuilderError
from giftbox.settings import Settings
from giftbox.ui import Reporter
from tests.builder_fixtures import (  # noqa: F401 (fixtures)
    REPO_ROOT,
    builder_settings,
    containers_of,
    debian12_x86_64,
)

pytestmark = pytest.mark.docker


def test_call_streams_timestamped_lines_and_logs_them(
        debian12_x86_64: BuilderImage, builder_settings: Settings, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello from the host\n")
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "build.log"
    stream = io.StringIO()
    with Container(debian12_x86_64, Arch.x86_64, builder_settings, Reporter(stream=stream),
                   mounts=[Mount(src, "/src"), Mount(out, "/out", read_only=False)],
                   env={"GREETING": "hi"}, workdir="/work/here") as c:
        result = c.call(["sh", "-c", 'cat /src/hello.txt; echo "$GREETING $(pwd)"; '
                         'echo made > /out/made.txt; echo to-stderr >&2'], log_path=log)
        assert result.returncode == 0
        # stdout and stderr are two pipes: their relative order is not defined.
        assert sorted(result.output.splitlines()) == ["hello from the host", "hi /work/here",
                                                      "to-stderr"]
        denied = c.call(["touch", "/src/nope"], check=False, stream=False)
        assert denied.returncode != 0  # the source is mounted read-only
        assert c.call(["pwd"], cwd="/tmp", stream=False).output == "/tmp"
        assert c.call(["sh", "-c", "echo $GREETING"], env={"GREETING": "override"},
                      stream=False).output == "override"
    assert (out / "made.txt").read_text() == "made\n"
    assert not (src / "nope").exists()
    shown = stream.getvalue()
    assert re.search(r"\[\s*\d+\.\d+s\] hello from the host", shown)
    logged = log.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z hi /work/here$", logged, re.M)
    assert "exit 0 after" in logged


def test_failed_command_raises_with_its_output(debian12_x86_64: BuilderImage,
                                               builder_settings: Settings) -> None:
    with Container(debian12_x86_64, Arch.x86_64, builder_settings) as c:
        with pytest.raises(CommandFailed) as err:
            c.call(["sh", "-c", "echo boom; exit 3"], stream=False)
        assert err.value.returncode == 3
        assert "exit code 3" in err.value.message and "boom" in err.value.message
        assert c.call(["false"], check=False, stream=False).returncode == 1


def test_copy_into_copy_out_and_exists(debian12_x86_64: BuilderImage,
                                       builder_settings: Settings, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("alpha\n")
    (tree / "b.txt").write_text("beta\n")
    with Container(debian12_x86_64, Arch.x86_64, builder_settings) as c:
        assert not c.exists("/deep/er/tree")
        c.copy_into(tree, "/deep/er/tree")
        assert c.exists("/deep/er/tree/sub/a.txt")
        c.copy_into(tree / "b.txt", "/single/renamed.txt")
        assert c.call(["cat", "/single/renamed.txt"], stream=False).output == "beta"
        c.call(["sh", "-c", "echo gamma > /deep/er/tree/sub/c.txt"], stream=False)
        back = tmp_path / "back"
        c.copy_out("/deep/er/tree", back)
        c.copy_out("/single/renamed.txt", tmp_path / "renamed.txt")
        with pytest.raises(BuilderError, match="does not exist"):
            c.copy_out("/not/there", tmp_path / "x")
    assert (back / "sub" / "a.txt").read_text() == "alpha\n"
    assert (back / "sub" / "c.txt").read_text() == "gamma\n"
    assert (tmp_path / "renamed.txt").read_text() == "beta\n"


@pytest.mark.network
def test_host_ca_and_index_reach_pip_and_uv(debian12_x86_64: BuilderImage,
                                            builder_settings: Settings, tmp_path: Path) -> None:
    assert builder_settings.ca_bundle is not None, "the host has a CA bundle to propagate"
    out = tmp_path / "out"
    out.mkdir()
    with Container(debian12_x86_64, Arch.x86_64, builder_settings,
                   mounts=[Mount(out, "/out", read_only=False)]) as c:
        env = c.call(["env"], stream=False).output.splitlines()
        assert f"PIP_CERT={CA_PATH}" in env and f"SSL_CERT_FILE={CA_PATH}" in env
        assert f"PIP_INDEX_URL={builder_settings.index_url}" in env
        # Through the TLS-intercepting proxy: fails unless the host CA is trusted.
        c.call(["/opt/giftbox-tools/bin/pip", "download", "--no-deps", "six==1.16.0",
                "-d", "/out"])
        c.copy_into(_write(tmp_path / "req.in", "six==1.16.0\n"), "/work/req.in")
        compiled = c.call(["/opt/giftbox-tools/bin/uv", "pip", "compile", "--no-header",
                           "/work/req.in"], stream=False).output
    assert (out / "six-1.16.0-py2.py3-none-any.whl").is_file()
    assert "six==1.16.0" in compiled


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_index_credentials_are_passed_but_never_shown(
        debian12_x86_64: BuilderImage, builder_settings: Settings, tmp_path: Path) -> None:
    secret_url = "https://deploy:s3cr3t-token@pypi.example.org/simple"
    settings = replace(builder_settings, index_url=secret_url)
    assert mask_url(secret_url) == "https://deploy:***@pypi.example.org/simple"
    stream = io.StringIO()
    log = tmp_path / "log"
    with Container(debian12_x86_64, Arch.x86_64, settings, Reporter(stream=stream)) as c:
        result = c.call(["sh", "-c", 'test "$PIP_INDEX_URL" = "$0" && echo "$PIP_INDEX_URL"',
                         secret_url], log_path=log)
        config_env = docker.from_env().containers.get(c.name).attrs["Config"]["Env"] or []
    assert result.output == "https://deploy:***@pypi.example.org/simple"
    assert "s3cr3t-token" not in stream.getvalue() + log.read_text()
    assert not any("s3cr3t" in e for e in config_env)  # per exec, never in the container config


def test_container_is_removed_when_the_block_raises(debian12_x86_64: BuilderImage,
                                                   builder_settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="inside"):
        with Container(debian12_x86_64, Arch.x86_64, builder_settings) as c:
            name = c.name
            assert docker.from_env().containers.get(name).status == "running"
            raise RuntimeError("inside")
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(name)
    assert containers_of(os.getpid()) == []


# The child takes SIGINT as Python does by default even where it was started with SIGINT
# ignored (`cmd &` in a shell without job control starts cmd so): Python then installs no
# handler of its own, and the test is of what a Ctrl-C does, not of how CI was started.
CHILD = textwrap.dedent("""
    import signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from giftbox.container import Container
    from giftbox.distros import Arch
    from giftbox.settings import Settings
    settings = Settings.resolve(root=__import__("pathlib").Path(sys.argv[2]))
    with Container(sys.argv[1], Arch.x86_64, settings) as c:
        print("ready", c.name, flush=True)
        c.call(["sleep", "120"], stream=False)
    print("unreachable", flush=True)
""")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_container_is_removed_on_interrupt(debian12_x86_64: BuilderImage, signum: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, debian12_x86_64.tag, str(REPO_ROOT)],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("ready"), line + child.stderr.read() if child.stderr else ""
        assert containers_of(child.pid) == [line.split()[1]]
        time.sleep(1)  # let it block in the streaming exec
        child.send_signal(signum)
        _out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert "KeyboardInterrupt" in err
    assert containers_of(child.pid) == []


def test_missing_image_and_dead_engine(builder_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match="is not present") as err:
        with Container("giftbox-builder/nothing:x86_64-000000000000", Arch.x86_64,
                       builder_settings):
            pass
    assert "giftbox builder ensure" in (err.value.hint or "")
    dead = replace(builder_settings, docker_host=f"unix://{tmp_path}/dead.sock")
    with pytest.raises(BuilderError, match="no container engine answered") as err:
        with Container("giftbox-builder/nothing:x86_64-000000000000", Arch.x86_64, dead):
            pass
    assert f"{tmp_path}/dead.sock" in err.value.message
    assert "dockerd --iptables=false" in (err.value.hint or "")


def test_containers_of_one_command_share_its_engine(debian12_x86_64: BuilderImage,
                                                    builder_settings: Settings) -> None:
    with Engine(builder_settings) as engine:
        with Container(debian12_x86_64, Arch.x86_64, builder_settings, engine=engine) as c:
            assert c.call(["echo", "one"], stream=False).output == "one"
            first = c.name
        with Container(debian12_x86_64, Arch.x86_64, builder_settings, engine=engine) as c:
            assert c.call(["echo", "two"], stream=False).output == "two"
        # Each container was removed, and the engine the command lent stayed open.
        assert engine.containers(f"{OWNER_LABEL}={os.getpid()}") == []
        assert engine.exists(debian12_x86_64.tag)
    assert first != c.name


def test_a_block_that_ends_normally_can_leave_the_removal_to_a_thread(
        debian12_x86_64: BuilderImage, builder_settings: Settings) -> None:
    """remove_in_background (a build's container, removed while it is packaged): the block
    need not wait for the removal, and the container goes all the same, through a connection
    of its own (the lent engine may be closed first); a block that raised removes it before
    the error goes on, as every container does."""
    with Engine(builder_settings) as engine:
        with Container(debian12_x86_64, Arch.x86_64, builder_settings, engine=engine,
                       remove_in_background=True) as c:
            assert c.call(["echo", "one"], stream=False).output == "one"
            name = c.name
    # the command's engine is closed now; the removal does not need it
    Container.wait_removed()
    with Engine(builder_settings) as engine:
        assert name not in {x.name for x in engine.containers(f"{OWNER_LABEL}={os.getpid()}")}
        with pytest.raises(RuntimeError, match="inside"):
            with Container(debian12_x86_64, Arch.x86_64, builder_settings, engine=engine,
                           remove_in_background=True) as c:
                failed = c.name
                raise RuntimeError("inside")
        assert failed not in {x.name for x in engine.containers(LABEL)}


def test_a_working_directory_the_image_lacks_is_made_by_the_engine(
        debian12_x86_64: BuilderImage, builder_settings: Settings) -> None:
    with Container(debian12_x86_64, Arch.x86_64, builder_settings,
                   workdir="/giftbox-no-such/dir") as c:
        assert c.call(["pwd"], stream=False).output == "/giftbox-no-such/dir"
        c.call(["touch", "made-here"], stream=False)
        assert c.call(["ls", "/giftbox-no-such/dir"], stream=False).output == "made-here"


def test_builder_of_another_arch_is_refused(debian12_x86_64: BuilderImage,
                                            builder_settings: Settings) -> None:
    with pytest.raises(BuilderError, match="is x86_64, not ppc64le"):
        Container(debian12_x86_64, Arch.ppc64le, builder_settings)


@pytest.mark.ppc64le
def test_foreign_arch_without_binfmt_is_refused(builder_settings: Settings) -> None:
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-ppc64le")
    assert entry.read_text().startswith("enabled"), "qemu-ppc64le must start enabled"
    try:
        entry.write_text("0")
        with pytest.raises(BuilderError, match="disabled") as err:
            # Refused before the engine is even asked: the image need not exist.
            with Container("giftbox-builder/debian12:ppc64le-000000000000", Arch.ppc64le,
                           builder_settings):
                pass
    finally:
        entry.write_text("1")
    assert entry.read_text().startswith("enabled")
    hint = err.value.hint or ""
    assert "qemu-user-static binfmt-support" in hint
    assert "update-binfmts --enable qemu-ppc64le" in hint


def test_a_lazy_container_starts_only_when_something_runs_in_it(
        debian12_x86_64: BuilderImage, builder_settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "not-made-yet"
    with LazyContainer(Container(debian12_x86_64, Arch.x86_64, builder_settings,
                                 mounts=[Mount(missing, "/m")])) as lazy:
        assert lazy.name.startswith("giftbox-") and not lazy.started
        # nothing ran: no container, and its mount was never asked for
        assert lazy.name not in containers_of(os.getpid())
    assert not lazy.started
    missing.mkdir()
    (missing / "f").write_text("seen\n")
    with LazyContainer(Container(debian12_x86_64, Arch.x86_64, builder_settings,
                                 mounts=[Mount(missing, "/m")])) as lazy:
        assert lazy.call(["cat", "/m/f"], stream=False).output == "seen"
        assert lazy.started and lazy.name in containers_of(os.getpid())
    assert lazy.name not in containers_of(os.getpid())  # removed with the block
