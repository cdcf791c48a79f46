"""giftbox/data/build_wheel.py, the project's wheel built by calling its PEP 517 backend
directly, run here with a real venv (virtualenv, its bundled pip and setuptools) on real
projects: the wheel's members are pip's, byte for byte (stored, not deflated); an unmet build requirement, static or named by
the backend, fails the build naming it, before anything is built."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

SCRIPT = resources.files("giftbox") / "data" / "build_wheel.py"
SETUP_PY = """\
from setuptools import setup

setup(name="tiny", version="1.2.3", py_modules=["tiny"],
      entry_points={{"console_scripts": ["tiny = tiny:main"]}}{extra})
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "virtualenv", "--quiet", "--no-periodic-update",
                    "--setuptools", "bundle", "--no-wheel", str(where)], check=True)
    return where


def project(path: Path, requires: str = '"setuptools>=40"', extra: str = "") -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        f"[build-system]\nrequires = [{requires}]\nbuild-backend = \"setuptools.build_meta\"\n")
    (path / "setup.py").write_text(SETUP_PY.format(extra=extra))
    (path / "tiny.py").write_text("def main():\n    return 0\n")
    return path


def env() -> dict[str, str]:
    # the two builds must not differ by their clocks (zip timestamps)
    return dict(os.environ, SOURCE_DATE_EPOCH="1700000000", PYTHONDONTWRITEBYTECODE="1",
                PIP_NO_INDEX="1")


def direct(venv: Path, src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    script = src.parent / "build_wheel.py"
    script.write_bytes(SCRIPT.read_bytes())
    return subprocess.run([str(venv / "bin" / "python"), "-B", str(script), str(src), str(out)],
                          capture_output=True, text=True, env=env(), check=False)


def only_wheel(out: Path) -> Path:
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def members(wheel: Path) -> list[tuple[str, tuple[int, ...], int, bytes]]:
    with zipfile.ZipFile(wheel) as z:
        return [(i.filename, i.date_time, i.external_attr, z.read(i)) for i in z.infolist()]


def test_the_wheels_members_are_pips_byte_for_byte_stored(venv: Path, tmp_path: Path) -> None:
    a = project(tmp_path / "a" / "tiny")
    b = project(tmp_path / "b" / "tiny")
    done = direct(venv, a, tmp_path / "out-a")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "built tiny-1.2.3-py3-none-any.whl" in done.stdout
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-B", "-m", "pip", "wheel", "--no-build-isolation",
         "--check-build-dependencies", "--no-deps", "--no-index", "--wheel-dir",
         str(tmp_path / "out-b"), str(b)], capture_output=True, text=True, env=env(),
        check=False)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    ours, pips = only_wheel(tmp_path / "out-a"), only_wheel(tmp_path / "out-b")
    assert ours.name == pips.name
    # the same members (names, order, dates, modes, bytes: RECORD's hashes among them) ...
    assert members(ours) == members(pips)
    # ... stored (the wheel is installed, never shipped), where pip's are deflated
    with zipfile.ZipFile(ours) as z, zipfile.ZipFile(pips) as p:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert zipfile.ZIP_DEFLATED in {i.compress_type for i in p.infolist()}


def test_a_setuptools_before_70_1_deflates_as_before(tmp_path: Path) -> None:
    """bdist_wheel came from the wheel project before setuptools 70.1: it gets no
    --compression (an option it might not know), only --quiet."""
    old = tmp_path / "old"
    subprocess.run([sys.executable, "-m", "virtualenv", "--quiet", "--no-periodic-update",
                    "--no-setuptools", "--no-wheel", str(old)], check=True)
    installed = subprocess.run(
        [str(old / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "setuptools==69.5.1", "wheel==0.43.0"], capture_output=True, text=True, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    src = project(tmp_path / "tiny")
    done = direct(old, src, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "copying" not in done.stdout + done.stderr
    with zipfile.ZipFile(only_wheel(tmp_path / "out")) as z:
        assert zipfile.ZIP_DEFLATED in {i.compress_type for i in z.infolist()}


def test_setuptools_builds_quietly_and_other_backends_get_no_settings(
        venv: Path, tmp_path: Path) -> None:
    """setuptools is asked for --quiet (nova's build listed 13,000 copied files, each
    streamed out of the builder into the log; its wheel's members are still pip's, above); a
    backend
    that may refuse settings it does not know gets none, as pip gives it."""
    src = project(tmp_path / "tiny")
    done = direct(venv, src, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "copying" not in done.stdout + done.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text(
        "[build-system]\nrequires = []\nbuild-backend = \"recording\"\nbackend-path = [\".\"]\n")
    (other / "recording.py").write_text(
        "import os, zipfile\n"
        "def build_wheel(out, config_settings=None, metadata_directory=None):\n"
        "    name = 'rec-1.0-py3-none-any.whl'\n"
        "    with zipfile.ZipFile(os.path.join(out, name), 'w') as z:\n"
        "        z.writestr('settings.txt', repr(config_settings))\n"
        "    return name\n")
    done = direct(venv, other, tmp_path / "out-other")
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(only_wheel(tmp_path / "out-other")) as z:
        assert z.read("settings.txt") == b"None"


def test_an_unmet_static_requirement_fails_naming_it(venv: Path, tmp_path: Path) -> None:
    src = project(tmp_path / "tiny", requires='"setuptools>=40", "giftbox-no-such-dist>=1"')
    done = direct(venv, src, tmp_path / "out")
    assert done.returncode == 1
    assert "giftbox-no-such-dist>=1 (not installed)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_version_the_venv_does_not_have_fails_naming_both(venv: Path, tmp_path: Path) -> None:
    src = project(tmp_path / "tiny", requires='"setuptools>=9999"')
    done = direct(venv, src, tmp_path / "out")
    assert done.returncode == 1
    assert "setuptools>=9999 (setuptools " in done.stderr and "is installed)" in done.stderr


def test_a_requirement_the_backend_names_is_checked_too(venv: Path, tmp_path: Path) -> None:
    # setup_requires reaches the frontend through get_requires_for_build_wheel
    src = project(tmp_path / "tiny", extra=', setup_requires=["giftbox-no-such-helper"]')
    done = direct(venv, src, tmp_path / "out")
    assert done.returncode == 1
    assert "giftbox-no-such-helper (not installed)" in done.stderr
    assert not list(tmp_path.glob("out/*.whl"))


def test_a_marker_for_another_python_is_not_required(venv: Path, tmp_path: Path) -> None:
    src = project(tmp_path / "tiny",
                  requires='"setuptools>=40", "giftbox-no-such-dist; python_version < \'3\'"')
    done = direct(venv, src, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    only_wheel(tmp_path / "out")


@pytest.mark.parametrize(("pyproject", "said"), [
    ("[build-system\nrequires = [", "is not valid TOML"),
    ("[build-system]\nbuild-backend = \"setuptools.build_meta\"\n", "has no 'requires' key"),
    ("[build-system]\nrequires = \"setuptools\"\n", "requires is not a list of strings"),
    ("[build-system]\nrequires = [1]\n", "requires is not a list of strings"),
    ("[build-system]\nrequires = []\nbuild-backend = 3\n", "build-backend is not a string"),
    ("[build-system]\nrequires = []\nbackend-path = \"..\"\n", "backend-path not a list"),
    ("[build-system]\nrequires = []\nbuild-backend = \"x\"\nbackend-path = [\"..\"]\n",
     "is outside the source tree"),
    ("[build-system]\nrequires = []\nbuild-backend = \"giftbox_no_such_backend\"\n",
     "cannot be loaded from the venv"),
    ("[build-system]\nrequires = []\nbuild-backend = \"setuptools.build_meta:nope\"\n",
     "cannot be loaded from the venv"),
])
def test_a_hostile_build_system_table_is_one_error_line(venv: Path, tmp_path: Path,
                                                       pyproject: str, said: str) -> None:
    src = project(tmp_path / "tiny")
    (src / "pyproject.toml").write_text(pyproject)
    done = direct(venv, src, tmp_path / "out")
    assert done.returncode == 1
    assert done.stderr.startswith("ERROR: ") and said in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("out/*.whl"))
