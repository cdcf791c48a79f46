"""``giftbox rebuild --check``: rebuild a published artifact from its manifest, compare."""

from __future__ import annotations

import sys

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app


@cli.command("rebuild")
@click.argument("artifact", metavar="ARTIFACT|channel:NAME/PROJECT[/DISTRO/ARCH]")
@click.option("--check", "check", is_flag=True,
              help="Rebuild from the manifest alone in an empty cache and compare byte for "
                   "byte (required: the only mode).")
@json_option
@pass_app
def rebuild_cmd(app: App, artifact: str, check: bool, as_json: bool) -> None:
    """Prove a published package is reproducible: rebuild it from what its manifest names
    (upstream commit or tarball sha256, patches by digest, the lock it carries, the builder
    image by id) in an empty cache, and compare the bytes.

    On a mismatch a diffoscope report is written beside the rebuild (and linked from
    `giftbox report`); the exit status is 1. Either way the verdict `reproducible` is recorded
    on the artifact's sha256, which a channel can require (`requires: [reproducible]`). An
    input that is no longer available is refused by name (exit 6) and records nothing.

    \b
      giftbox rebuild --check channel:nightly/nova/debian12/x86_64
      giftbox rebuild --check build/demo/debian12-x86_64/…/giftbox-demo_1.0.0-1~deb12_amd64.deb
    """
    if not check:
        raise click.UsageError("giftbox rebuild needs --check (rebuild and compare; the only "
                               "mode)")
    from giftbox.rebuild import check as rebuild_check

    result = rebuild_check(artifact, app.settings, app.reporter)
    if as_json:
        emit_json(result.as_dict())
    elif result.reproducible:
        click.echo(f"reproducible: {result.filename} sha256:{result.digest[:16]} rebuilt bit "
                   f"for bit in {result.duration:.0f}s ({result.directory})")
    else:
        click.echo(f"NOT reproducible: {result.filename} sha256:{result.digest[:16]}, rebuilt "
                   f"sha256:{result.rebuilt_digest[:16]}\n{result.detail}")
    if not result.reproducible:
        sys.exit(1)
