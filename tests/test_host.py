"""Host tools, the one way giftbox runs a program on this machine (``giftbox.host``), told with
real programs: a tool missing from the PATH the program would run with is one paragraph naming
it, what needs it and the Debian package to install, raised as the caller's error (so the
caller's exit code); a tool that is there runs, a failing one's stderr reaches the error, the
environment handed over is the one it gets. The fast tier: no engine, no keyring."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from giftbox import host
from giftbox.errors import BuildError, GiftboxError, PackageError, RepoError, SourceError
from giftbox.gitutil import git_env, run_git
from giftbox.keys import list_keys
from giftbox.package.runner import HostRunner
from giftbox.repo.yum import primary_count
from giftbox.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host's PATH is one empty directory: no tool is installed."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def _one_paragraph(exc: GiftboxError) -> str:
    text = exc.render()
    assert "\n" not in text.strip(), text
    return text


def test_a_missing_packaging_tool_is_the_package_stage_s_error(bare_path: Path) -> None:
    with pytest.raises(PackageError) as caught:
        HostRunner().run(["dpkg-shlibdeps", "-O", "-e", "/bin/true"])
    text = _one_paragraph(caught.value)
    assert caught.value.exit_code == 7
    assert "'dpkg-shlibdeps' is not installed" in text
    assert "apt-get install dpkg-dev" in text  # the Debian package, not the tool's name
    assert "pass a runner for the builder" in text  # the caller's other way out


def test_a_missing_gpg_is_a_repository_error(settings: Settings, bare_path: Path) -> None:
    with pytest.raises(RepoError) as caught:
        list_keys(settings)
    text = _one_paragraph(caught.value)
    assert caught.value.exit_code == 8
    assert "'gpg'" in text and "sign channels" in text and "apt-get install gnupg" in text


def test_the_cli_exits_with_the_stage_s_code_and_one_paragraph(
        root: Path, giftbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(REPO / "channels.yaml", root / "channels.yaml")
    empty = tmp_path / "no-tools"
    empty.mkdir()
    result = giftbox("keys", "init", "--channel", "stable", env={"PATH": str(empty)})
    assert result.code == 8, result.out + result.err
    said = [line for line in result.err.splitlines() if line.strip()]
    assert len(said) == 1, said
    assert said[0].startswith("error: 'gpg' is not installed on this host")
    assert "apt-get install gnupg" in said[0]


def test_git_is_looked_up_on_the_sealed_environment_s_path(tmp_path: Path) -> None:
    """The environment handed to git is the one it runs with, PATH included: git being on the
    host's PATH does not matter when the sealed environment's PATH lacks it."""
    assert shutil.which("git"), "git is needed by the whole suite"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = git_env()
    env["PATH"] = str(empty)
    with pytest.raises(SourceError) as caught:
        run_git(["--version"], env=env)
    text = _one_paragraph(caught.value)
    assert caught.value.exit_code == 3
    assert "'git'" in text and "apt-get install git" in text
    assert run_git(["--version"]).stdout.startswith("git version")


def test_the_environment_is_replaced_or_added_to_as_asked(tmp_path: Path) -> None:
    shown = "echo \"[$GIFTBOX_HOST_TEST][${HOME:-no home}]\""
    added = host.run(["sh", "-c", shown], error=BuildError, needed_for="to test",
                     extra_env={"GIFTBOX_HOST_TEST": "added"})
    assert added.stdout == f"[added][{os.environ.get('HOME', 'no home')}]\n"
    sealed = {"PATH": os.environ["PATH"], "GIFTBOX_HOST_TEST": "sealed"}
    replaced = host.run(["sh", "-c", shown], error=BuildError, needed_for="to test",
                        env=sealed)
    assert replaced.stdout == "[sealed][no home]\n"  # nothing of the host's beyond what is given


def test_a_tool_that_is_there_runs_with_its_output_captured() -> None:
    assert host.run(["true"], error=BuildError, needed_for="to test").returncode == 0
    proc = host.run(["sh", "-c", "echo out; echo err >&2; exit 0"], error=BuildError,
                    needed_for="to test", check=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "out\n", "err\n")
    raw = host.run(["sh", "-c", "printf '\\377\\000'"], error=BuildError, needed_for="to test",
                   text=False)
    assert raw.stdout == b"\xff\x00"
    fed = host.run(["cat"], error=BuildError, needed_for="to test", input="given\n")
    assert fed.stdout == "given\n"
    assert host.run(["cat"], error=BuildError, needed_for="to test").stdout == ""  # never the tty


def test_a_failing_tool_s_stderr_tail_reaches_the_caller_s_error() -> None:
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i >&2; done; exit 3"
    with pytest.raises(RepoError) as caught:
        host.run(["sh", "-c", script], error=RepoError, needed_for="to test failing",
                 check=True)
    text = caught.value.message
    assert caught.value.exit_code == 8
    assert text.startswith("sh failed (exit status 3) to test failing:")
    assert "line-10" in text and "line-3" in text and "line-2\n" not in text  # the tail
    unchecked = host.run(["sh", "-c", script], error=RepoError, needed_for="to test")
    assert unchecked.returncode == 3  # without check the caller judges the exit code


def test_a_real_call_site_passes_zstd_s_complaint_on(tmp_path: Path) -> None:
    """yum.primary_count on a primary.xml.zst that is not zstd: zstd's own words, a
    RepoError (exit 8), not a traceback."""
    repodata = tmp_path / "repodata"
    repodata.mkdir()
    (repodata / "primary.xml.zst").write_bytes(b"this is not zstd data\n")
    (repodata / "repomd.xml").write_text(
        '<repomd><data type="primary"><location href="repodata/primary.xml.zst"/></data>'
        "</repomd>")
    with pytest.raises(RepoError) as caught:
        primary_count(repodata / "repomd.xml")
    assert caught.value.message.startswith("zstd failed (exit status 1) to read ")
    assert "primary.xml.zst" in caught.value.message
    assert len(caught.value.message.splitlines()) >= 2  # zstd said something, and it is there


def test_popen_streams_and_leaves_judging_to_the_caller() -> None:
    proc = host.popen([sys.executable, "-c", "import sys; sys.stdout.write('a' * 70000); "
                       "sys.stderr.write('done'); sys.exit(4)"], error=BuildError,
                      needed_for="to test")
    out, err = proc.communicate()
    assert (len(out), err, proc.returncode) == (70000, b"done", 4)
    merged = host.popen(["sh", "-c", "echo one; echo two >&2"], error=BuildError,
                        needed_for="to test", stderr=host.STDOUT)
    assert merged.communicate()[0].split() == [b"one", b"two"]


def test_popen_of_a_missing_tool_raises_before_anything_starts(bare_path: Path) -> None:
    with pytest.raises(PackageError) as caught:
        host.popen(["rpm2cpio", "x.rpm"], error=PackageError, needed_for="to read packages")
    assert "apt-get install rpm2cpio" in _one_paragraph(caught.value)


def test_a_timeout_stops_the_tool() -> None:
    with pytest.raises(host.TimedOut):
        host.run(["sleep", "60"], error=BuildError, needed_for="to test", timeout=0.5)


@pytest.mark.parametrize(("tool", "package"), [
    ("dpkg-deb", "dpkg"), ("rpmbuild", "rpm"), ("createrepo_c", "createrepo-c"),
    ("apt-ftparchive", "apt-utils"), ("gpg", "gnupg"), ("diffoscope", "diffoscope"),
    ("git", "git"), ("lintian", "lintian"), ("rpmlint", "rpmlint"), ("mmdebstrap", "mmdebstrap"),
    ("qemu-aarch64-static", "qemu-user-static")])
def test_each_tool_names_its_debian_package(tool: str, package: str, bare_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        host.find(tool, BuildError, "to build")
    assert f"apt-get install {package} " in _one_paragraph(caught.value)
    assert caught.value.exit_code == 6
