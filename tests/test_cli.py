"""The command line as a whole: every command reachable, help that teaches, errors as text."""

from __future__ import annotations

import subprocess
import sys

from giftbox.cli import COMMAND_MODULES, cli


def test_every_command_is_mapped_to_its_module() -> None:
    """Commands load lazily by name: one missing from COMMAND_MODULES would be unreachable."""
    import click

    listed = cli.list_commands(click.Context(cli))  # imports every command module
    assert sorted(listed) == sorted(COMMAND_MODULES)


def test_running_one_command_imports_only_its_module() -> None:
    probe = ("import sys; from giftbox.cli import main; "
             "sys.argv = ['giftbox', 'publish', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('giftbox.cli.')))\n"
             "print('docker' in sys.modules, 'yaml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[-2] == "['giftbox.cli.repo']"
    assert out[-1] == "False False"


def test_help_teaches_the_flow() -> None:
    out = subprocess.run([sys.executable, "-m", "giftbox", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "spec -> source -> lock -> build -> package -> channel" in out
    for command in ("build", "publish", "promote", "nightly", "bump", "status"):
        assert f"  {command} " in out
