"""The ``giftbox`` command: parse, call the stage functions, render. Nothing else lives here.

Each area has its own module (``giftbox/cli/<area>.py``) registering commands on ``cli``.
"""

from __future__ import annotations

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


@click.group(context_settings=CONTEXT)
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
    ctx.obj = App(settings=settings, reporter=Reporter())


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
    except click.exceptions.Abort:
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


# Command modules register themselves on import.
from giftbox.cli import build as _build  # noqa: E402,F401
from giftbox.cli import builder as _builder  # noqa: E402,F401
from giftbox.cli import nightly as _nightly  # noqa: E402,F401
from giftbox.cli import package as _package  # noqa: E402,F401
from giftbox.cli import patches as _patches  # noqa: E402,F401
from giftbox.cli import repo as _repo  # noqa: E402,F401
from giftbox.cli import source as _source  # noqa: E402,F401
from giftbox.cli import spec as _spec  # noqa: E402,F401
from giftbox.cli import workflow as _workflow  # noqa: E402,F401
