"""Shared fixtures: a giftbox tree in a temp dir, real upstream git repositories, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from giftbox.settings import Settings

REPO = Path(__file__).resolve().parent.parent

# Session fixtures shared by several test modules (package_tree, session_settings, demo_venvs);
# declared here, once, so pytest rewrites their asserts before any module imports them.
pytest_plugins = ["package_fixtures"]


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty giftbox tree that knows the real builder definitions and constraints."""
    tree = tmp_path / "tree"
    (tree / "specs").mkdir(parents=True)
    (tree / "patches").mkdir()
    shutil.copytree(REPO / "builders", tree / "builders")
    shutil.copytree(REPO / "constraints", tree / "constraints")
    return tree


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def settings(root: Path, cache: Path) -> Settings:
    env = dict(os.environ, GIFTBOX_CACHE=str(cache))
    return Settings.resolve(root=root, env=env)


@pytest.fixture
def giftbox(root: Path, cache: Path):
    """Run the real ``giftbox`` command line against ``root``."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
        full_env = dict(os.environ, GIFTBOX_CACHE=str(cache), GIFTBOX_ROOT=str(root))
        full_env.update(env or {})
        proc = subprocess.run([sys.executable, "-m", "giftbox", *args], cwd=cwd or root,
                              env=full_env, capture_output=True, text=True, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full = dict(os.environ, GIT_AUTHOR_NAME="Upstream Dev", GIT_AUTHOR_EMAIL="dev@upstream.org",
                GIT_COMMITTER_NAME="Upstream Dev", GIT_COMMITTER_EMAIL="dev@upstream.org",
                GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    full.update(env or {})
    return subprocess.run(["git", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          check=True).stdout.strip()


class Upstream:
    """A real upstream git repository for a tiny Python project, made by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counter = 0
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "master")
        (path / "setup.py").write_text(
            "from setuptools import setup\nsetup(name='demo', version='0.0.0', "
            "py_modules=['demo'])\n")
        (path / "demo.py").write_text(
            '"""The demo project."""\n\nGREETING = "hello"\n\n\n'
            'def main():\n    print(GREETING)\n')
        self.commit("Initial import")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def commit(self, message: str, file: str = "CHANGES", text: str | None = None) -> str:
        self.counter += 1
        target = self.path / file
        if text is None:
            previous = target.read_text() if target.exists() else ""
            text = previous + f"{message}\n"
        target.write_text(text)
        git(self.path, "add", "-A")
        stamp = f"@{1700000000 + self.counter * 60} +0000"
        git(self.path, "commit", "-q", "-m", message,
            env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
        return git(self.path, "rev-parse", "HEAD")

    def tag(self, name: str) -> None:
        git(self.path, "tag", "-a", name, "-m", f"Release {name}")

    def head(self, ref: str = "HEAD") -> str:
        return git(self.path, "rev-parse", f"{ref}^{{commit}}")


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream" / "demo")


def write_spec(root: Path, name: str, body: str) -> Path:
    path = root / "specs" / f"{name}.yaml"
    path.write_text(body)
    return path


def git_spec(name: str, url: str, ref: str, patches: list[str] | None = None,
             extra: str = "") -> str:
    lines = [
        f"name: {name}",
        'release: "2026.1"',
        "constraints: constraints/upper-constraints-2026.1.txt",
        "upstream:",
        "  use: git",
        "  git:",
        f"    url: {url}",
        f"    ref: {ref}",
    ]
    if patches is not None:
        lines.append("patches:")
        lines += [f"  - {p}" for p in patches]
    lines += [
        "package:",
        f"  prefix: /opt/openstack/{name}",
        "matrix:",
        "  distros: [debian12]",
        "  arches: [x86_64]",
    ]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, like one machine's: wheelhouses, deps layers and wheels
    are reused across tests (as across builds on an operator's machine)."""
    return tmp_path_factory.mktemp("build-cache")


def copy_project(root: Path, project: str) -> None:
    """This repository's spec, patches, files and locks of ``project`` into ``root``."""
    shutil.copy(REPO / "specs" / f"{project}.yaml", root / "specs")
    for sub in ("patches", "files", "locks"):
        if (REPO / sub / project).is_dir():
            shutil.copytree(REPO / sub / project, root / sub / project)


RUNTIME_IMAGE = "giftbox-test/debian12-py:latest"


@pytest.fixture(scope="session")
def runtime_image() -> str:
    """A clean Debian 12 with only python3: where built venvs and packages are tried.

    Bootstrapped from Debian's archive with mmdebstrap (no registry is reachable), once.
    """
    inspect = subprocess.run(["docker", "image", "inspect", RUNTIME_IMAGE],
                             capture_output=True, check=False)
    if inspect.returncode != 0:
        boot = subprocess.Popen(
            ["mmdebstrap", "--quiet", "--variant=apt", "--aptopt=Acquire::Check-Valid-Until false",
             "--include=python3,python3-venv,ca-certificates", "bookworm", "-",
             "http://deb.debian.org/debian"], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", RUNTIME_IMAGE], stdin=boot.stdout,
                       check=True, capture_output=True)
        assert boot.wait() == 0, "mmdebstrap failed"
    return RUNTIME_IMAGE


# --- the fast tier: pytest -m "not docker and not slow" -----------------------------------

# A test that signs (a real gpg keyring, made once per session) is tool-driven: the slow tier.
SLOW_FIXTURES = frozenset({"keyring_template"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- CI must not pass when the engine tests did not run -----------------------------------

_docker_outcomes: dict[str, int] = {"passed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "docker" not in report.keywords:
        return
    if report.skipped:
        _docker_outcomes["skipped"] += 1
    elif report.when == "call" and report.passed:
        _docker_outcomes["passed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, a run that selected docker tests but passed none of them fails."""
    if os.environ.get("CI") != "true" or exitstatus != 0:
        return
    selected = [i for i in session.items if "docker" in i.keywords]
    if selected and _docker_outcomes["passed"] == 0:
        print("\nCI: docker tests were selected but none ran and passed; failing the run.")
        session.exitstatus = 1
    if _docker_outcomes["skipped"]:
        print(f"\nCI: {_docker_outcomes['skipped']} docker test(s) were skipped; CI must run "
              "them all. Failing the run.")
        session.exitstatus = 1
