"""Builder images: bootstrapped from the archive, tagged by digest, cached, listed, pruned."""

# Fixtures come from tests/builder_fixtures.py (the lead owns conftest.py); pytest finds them
# by name, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from giftbox import builders
from giftbox.builders import BuilderImage
from giftbox.container import Container
from giftbox.distros import Arch, get_distro
from giftbox.errors import BuilderError
from giftbox.settings import Settings
from giftbox.ui import Reporter
from tests.builder_fixtures import (  # noqa: F401 (fixtures)
    REPO_ROOT,
    builder_settings,
    debian11_x86_64,
    debian12_ppc64le,
    debian12_x86_64,
)

TAG = re.compile(r"^giftbox-builder/debian12:x86_64-[0-9a-f]{12}$")


def _run(image: BuilderImage, settings: Settings, argv: list[str]) -> str:
    with Container(image, image.arch, settings) as c:
        return c.call(argv, stream=False).output.strip()


@pytest.mark.docker
@pytest.mark.network
def test_debian12_x86_64_is_tagged_by_its_digest_and_a_second_ensure_is_free(
        debian12_x86_64: BuilderImage, builder_settings: Settings) -> None:
    assert TAG.match(debian12_x86_64.tag), debian12_x86_64.tag
    assert debian12_x86_64.tag.endswith(debian12_x86_64.digest)
    client = docker.from_env()
    image = client.images.get(debian12_x86_64.tag)
    assert image.id == debian12_x86_64.image_id
    assert image.attrs["Architecture"] == "amd64"
    assert image.labels["org.giftbox.digest"] == debian12_x86_64.digest
    assert image.labels["org.giftbox.python"] == "3.11"

    start = time.monotonic()
    again = builders.ensure("debian12", "x86_64", builder_settings)
    assert time.monotonic() - start < 10
    assert again.built is False
    assert again.image_id == debian12_x86_64.image_id

    # The builder's own tools are the ones builder.yaml pins, not "latest".
    lock = _run(debian12_x86_64, builder_settings,
                ["cat", "/usr/local/share/giftbox/tools.lock"]).splitlines()
    pins = get_distro(builder_settings.builders_dir, "debian12").raw["tools"]
    assert set(pins) <= set(lock)
    out = _run(debian12_x86_64, builder_settings,
               ["/opt/giftbox-tools/bin/uv", "--version"])
    assert out.startswith("uv 0.13.9")


@pytest.mark.docker
def test_index_configuration_never_reaches_the_image(debian12_x86_64: BuilderImage) -> None:
    client = docker.from_env()
    image = client.images.get(debian12_x86_64.tag)
    env = "\n".join(image.attrs["Config"].get("Env") or [])
    assert "INDEX_URL" not in env
    history = json.dumps(image.history())
    assert "index-url" not in history and "PIP_INDEX_URL" not in history
    # What the build did get is a one-shot loopback URL, dead once the build ended.
    assert re.search(r"GIFTBOX_SECRETS_URL=http://127\.0\.0\.1:\d+/", history)


@pytest.mark.docker
@pytest.mark.ppc64le
@pytest.mark.network
def test_debian12_ppc64le_runs_ppc64le(debian12_ppc64le: BuilderImage,
                                      builder_settings: Settings) -> None:
    client = docker.from_env()
    assert client.images.get(debian12_ppc64le.tag).attrs["Architecture"] == "ppc64le"
    assert debian12_ppc64le.arch is Arch.ppc64le
    assert _run(debian12_ppc64le, builder_settings, ["uname", "-m"]) == "ppc64le"


@pytest.mark.docker
@pytest.mark.network
def test_debian11_x86_64_has_its_python_and_tools(debian11_x86_64: BuilderImage,
                                                  builder_settings: Settings) -> None:
    assert debian11_x86_64.python == "3.9"
    out = _run(debian11_x86_64, builder_settings,
               ["/opt/giftbox-tools/bin/python", "-c",
                "import sys, pip; print('%d.%d' % sys.version_info[:2], pip.__version__)"])
    assert out == "3.9 26.0.1"


def test_digest_follows_the_definition(tmp_path: Path, builder_settings: Settings) -> None:
    tree = tmp_path / "tree"
    (tree / "specs").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "builders", tree / "builders")
    settings = replace(builder_settings, root=tree)
    before = builders.definition(get_distro(settings.builders_dir, "debian12"), Arch.x86_64,
                                 settings)
    same = builders.definition(get_distro(builder_settings.builders_dir, "debian12"),
                               Arch.x86_64, builder_settings)
    assert before.tag == same.tag  # where the tree lives is not part of the definition
    shared = tree / "builders" / "Dockerfile.deb"
    shared.write_text(shared.read_text() + "# changed\n")
    after = builders.definition(get_distro(settings.builders_dir, "debian12"), Arch.x86_64,
                                settings)
    assert after.tag != before.tag
    assert after.base_tag == before.base_tag  # the Dockerfile does not change the base
    # A distro's own Dockerfile overrides the family's, for that distro alone.
    (tree / "builders" / "debian12" / "Dockerfile").write_text(shared.read_text() + "# own\n")
    own = builders.definition(get_distro(settings.builders_dir, "debian12"), Arch.x86_64,
                              settings)
    assert own.tag not in (before.tag, after.tag)
    assert builders.definition(get_distro(settings.builders_dir, "debian13"), Arch.x86_64,
                               settings).files["Dockerfile"] == shared.read_bytes()
    ppc = builders.definition(get_distro(settings.builders_dir, "debian12"), Arch.ppc64le,
                              settings)
    assert ppc.base_tag != before.base_tag


@pytest.mark.docker
@pytest.mark.network
def test_a_builder_that_cannot_be_built_names_the_step_and_the_package(
        tmp_path: Path, builder_settings: Settings, debian12_x86_64: BuilderImage) -> None:
    tree = tmp_path / "tree"
    (tree / "specs").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "builders", tree / "builders")
    yaml_path = tree / "builders" / "debian12" / "builder.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(
        "build_packages: [", "build_packages: [giftbox-no-such-package, "))
    settings = replace(builder_settings, root=tree)
    with pytest.raises(BuilderError) as err:
        builders.ensure("debian12", "x86_64", settings, Reporter(stream=sys.stderr))
    assert "Step" in err.value.message and "apt-get install" in err.value.message
    assert "Unable to locate package giftbox-no-such-package" in err.value.message
    assert "last output" in (err.value.hint or "")


def test_unknown_distro_names_the_close_one(builder_settings: Settings) -> None:
    with pytest.raises(BuilderError) as err:
        builders.ensure("debain12", "x86_64", builder_settings)
    assert "unknown distro 'debain12'" in err.value.message
    assert "did you mean 'debian12'" in (err.value.hint or "")


def test_unknown_and_unlisted_arch(builder_settings: Settings) -> None:
    with pytest.raises(BuilderError) as err:
        builders.ensure("debian12", "sparc", builder_settings)
    assert "unknown architecture 'sparc'" in err.value.message
    assert "ppc64le" in (err.value.hint or "")
    with pytest.raises(BuilderError) as err:
        builders.ensure("debian12", "aarch64", builder_settings)
    assert "debian12 has no aarch64 builder" in err.value.message


@pytest.mark.docker
def test_registry_builder_fails_clearly_without_a_registry(builder_settings: Settings) -> None:
    start = time.monotonic()
    with pytest.raises(BuilderError) as err:
        builders.ensure("ubuntu16.04", "x86_64", builder_settings, Reporter(stream=sys.stderr),
                        pull_timeout=20)
    assert time.monotonic() - start < 60
    assert "no registry was reachable" in err.value.message
    assert "ubuntu:16.04" in err.value.message
    hint = err.value.hint or ""
    assert "docker load" in hint and "registry-mirrors" in hint
    assert re.search(r"giftbox-base/ubuntu16\.04:x86_64-[0-9a-f]{12}", hint)


def test_dead_engine_says_how_to_start_one(builder_settings: Settings, tmp_path: Path) -> None:
    dead = replace(builder_settings, docker_host=f"unix://{tmp_path}/nothing-listens.sock")
    for attempt in (lambda: builders.ensure("debian12", "x86_64", dead),
                    lambda: builders.list_builders(dead), lambda: builders.prune(dead)):
        with pytest.raises(BuilderError) as err:
            attempt()
        assert "no container engine answered at unix://" in err.value.message
        assert err.value.exit_code == 5
        assert "dockerd --iptables=false" in (err.value.hint or "")


def test_cli_dead_engine_exits_with_the_builder_code(giftbox, tmp_path: Path) -> None:
    result = giftbox("builder", "list", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert result.code == 5, result.err
    assert "no container engine answered" in result.err
    assert "systemctl start docker" in result.err


@pytest.mark.docker
def test_cli_list_json(giftbox, debian12_x86_64: BuilderImage) -> None:
    result = giftbox("builder", "list", "--json")
    assert result.code == 0, result.err
    rows = {(r["distro"], r["arch"]): r for r in json.loads(result.out)}
    row = rows[("debian12", "x86_64")]
    assert row["tag"] == debian12_x86_64.tag
    assert row["present"] is True and row["up_to_date"] is True
    assert row["image_id"] == debian12_x86_64.image_id
    assert rows[("ubuntu16.04", "ppc64le")]["runnable_here"] is False
    assert rows[("debian11", "ppc64le")]["runnable_here"] is True
    # ...but bullseye's archive no longer serves ppc64el (its Release's Architectures:).
    assert rows[("debian11", "ppc64le")]["archive"]["served"] is False
    assert rows[("debian12", "ppc64le")]["archive"]["served"] is True
    assert set(row) == {"distro", "arch", "tag", "present", "up_to_date", "runnable_here",
                        "image_id", "archive"}


@pytest.mark.docker
def test_cli_ensure_is_a_cache_hit_and_prune_removes_only_stale_tags(
        giftbox, debian12_x86_64: BuilderImage) -> None:
    result = giftbox("builder", "ensure", "debian12", "--arch", "amd64", "--json")
    assert result.code == 0, result.err
    (only,) = json.loads(result.out)
    assert only["tag"] == debian12_x86_64.tag and only["built"] is False

    client = docker.from_env()
    stale = "giftbox-builder/debian12:x86_64-000000000000"
    client.images.get(debian12_x86_64.tag).tag(stale)
    try:
        dry = json.loads(giftbox("builder", "prune", "--dry-run", "--json").out)
        assert stale in dry["removed"] and debian12_x86_64.tag not in dry["removed"]
        assert client.images.get(stale)  # a dry run removes nothing
        result = giftbox("builder", "prune", "--json")
        assert result.code == 0, result.err
        assert stale in json.loads(result.out)["removed"]
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(stale)
        assert client.images.get(debian12_x86_64.tag).id == debian12_x86_64.image_id
    finally:
        try:
            client.images.remove(stale)
        except docker.errors.ImageNotFound:
            pass


def test_cli_help_teaches(giftbox) -> None:
    result = giftbox("builder", "ensure", "--help")
    assert result.code == 0
    assert "giftbox builder ensure debian12 --arch x86_64" in result.out
    assert "--all-runnable" in result.out


def test_mirror_retries_are_read_once_into_settings(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "GIFTBOX_MIRROR_RETRIES": "5",
           "GIFTBOX_MIRROR_RETRY_DELAY": "0.5"}
    settings = Settings.resolve(root=REPO_ROOT, env=env)
    assert (settings.mirror_retries, settings.mirror_retry_delay) == (5, 0.5)
    defaults = Settings.resolve(root=REPO_ROOT, env={"HOME": str(tmp_path)})
    assert (defaults.mirror_retries, defaults.mirror_retry_delay) == (3, 60.0)


@pytest.mark.parametrize(("name", "value"), [("GIFTBOX_MIRROR_RETRIES", "abc"),
                                             ("GIFTBOX_MIRROR_RETRIES", "1.5"),
                                             ("GIFTBOX_MIRROR_RETRY_DELAY", "-1"),
                                             ("GIFTBOX_MIRROR_RETRY_DELAY", "nan")])
def test_a_bad_mirror_retry_setting_is_one_named_error(giftbox, name: str, value: str) -> None:
    # Read when any command starts: one line naming the variable, never a traceback.
    result = giftbox("spec", "list", env={name: value})
    assert result.code == 1, result.err
    assert f"${name} is '{value}'" in result.err and "Traceback" not in result.err
