"""The ``giftbox`` command: parse, call the stage functions, render. Nothing else lives here.

Each area has its own module (``giftbox/cli/<area>.py``) registering commands on ``cli``.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from giftbox import __version__
from giftbox.errors import GiftboxError, SpecError
from giftbox.settings import Settings
from giftbox.ui import Reporter


@dataclass
class App:
    settings: Settings
    reporter: Reporter


pass_app = click.make_pass_decorator(App)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class LazyGroup(click.Group):
    """Imports a command's module on first use; the modules register on ``cli`` as usual."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module and cmd_name not in self.commands:
            importlib.import_module(f"giftbox.cli.{module}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in sorted(set(COMMAND_MODULES.values())):
            importlib.import_module(f"giftbox.cli.{module}")
        return super().list_commands(ctx)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="giftbox")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="The giftbox tree (holding specs/, patches/, builders/). "
                   "Default: the nearest directory upwards with specs/, or $GIFTBOX_ROOT.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and full tool output.")
@click.pass_context
def cli(ctx: click.Context, root: Path | None, verbose: bool) -> None:
    """Package OpenStack from a pinned upstream ref plus your local patches.

    \b
    The flow:  spec -> source -> lock -> build -> package -> channel
    \b
      giftbox spec validate --all           check every specs/*.yaml
      giftbox source nova --into ./nova     the patched upstream tree, one commit per patch
      giftbox lock nova --distro debian12 --arch x86_64      pin requirements (commit it)
      giftbox keys init                     a signing key per channel (first run)
      giftbox build nova --distro debian12 --arch x86_64 --publish nightly
      giftbox promote nova --from nightly --to stable --reason "passed staging"
      giftbox status                        pins, commits, last builds, channel versions
    \b
    Every command has --help with examples; most have --json for CI.

    Errors name the file, field, patch or ref at fault. Exit codes: 1 generic, 2 spec,
    3 source, 4 patch, 5 builder, 6 build, 7 package, 8 repository, 9 state.
    """
    settings = Settings.resolve(root=root, verbose=verbose)
    ctx.obj = App(settings=settings, reporter=Reporter(ci_groups=settings.ci_groups))


def emit_json(payload: Any) -> None:
    """The one machine-readable result of a command, on stdout."""
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout (progress stays on stderr).")


def _error_payload(exc: GiftboxError) -> dict[str, Any]:
    payload: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message,
                               "hint": exc.hint, "exit_code": exc.exit_code}
    if isinstance(exc, SpecError):
        payload["problems"] = [p.as_dict() for p in exc.problems]
    return payload


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        cli.main(args=argv, prog_name="giftbox", standalone_mode=False)
    except GiftboxError as exc:
        if verbose:
            traceback.print_exc()
        if "--json" in argv:
            emit_json(_error_payload(exc))
        click.secho("error: ", fg="red", bold=True, err=True, nl=False)
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        # click turns an EOFError escaping a command into Abort, as if ^C: it is a bug
        # (e.g. reading a truncated archive), not an interruption, so it keeps its traceback.
        if isinstance(exc.__cause__, EOFError):
            raise exc.__cause__ from None
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


# Which module defines each command. A command's module is imported only when that command
# runs (or when --help lists them all): `giftbox publish` must not pay for the Docker SDK,
# PyYAML specs or the packaging tools it never uses.
COMMAND_MODULES = {
    "spec": "spec", "source": "source", "lock": "build", "build": "build",
    "builder": "builder", "publish": "repo", "promote": "repo", "prune": "repo",
    "pin": "repo", "unpin": "repo", "keys": "repo", "channel": "repo", "package": "package",
    "patches": "patches", "bump": "workflow", "backport": "workflow", "diff": "workflow",
    "nightly": "nightly", "matrix": "nightly", "status": "nightly", "report": "nightly",
    "builds": "nightly", "log": "nightly",
    "verify": "verify", "sbom": "verify",
    "rebuild": "rebuild",
    "wheelhouse": "wheelhouse",
}
