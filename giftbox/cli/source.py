"""``giftbox source`` (``giftbox status`` lives in giftbox/cli/nightly.py)."""

from __future__ import annotations

from pathlib import Path

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.targets import Catalog


@cli.command("source")
@click.argument("project")
@click.option("--ref", help="Build this git ref instead of the pinned one (tag, branch, "
              "commit, or refs/changes/NN/NNNN/P). Git upstreams only.")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path),
              help="Where to put the patched work tree (must not exist or be empty). "
                   "Default: ./build/<project>-src")
@json_option
@pass_app
def source_cmd(app: App, project: str, ref: str | None, into: Path | None,
               as_json: bool) -> None:
    """Produce PROJECT's patched source tree: upstream at the pinned ref, one commit per patch.

    The upstream is the spec's git URL (a cached bare mirror, fetched incrementally) or its
    PyPI release tarball (downloaded once, checked against the pinned sha256). Patches from
    patches/PROJECT/ are applied in series order; a patch that does not apply is named with
    the file and hunk at fault, and no half-patched tree is left at --into.

    \b
      giftbox source nova --into ./nova
      giftbox source nova --ref refs/changes/45/123445/3 --into ./nova-review
    """
    from giftbox import source as source_stage

    settings = app.settings
    spec = Catalog.load(settings).spec(project)
    into = into or Path("build") / f"{project}-src"
    tree = source_stage.prepare(spec, into, settings, app.reporter, ref=ref)
    if as_json:
        emit_json(tree.as_dict())
    else:
        click.echo(f"{tree.path}  {project} {tree.upstream.version} "
                   f"{tree.upstream.commit[:12]} + {len(tree.patches)} patch(es) "
                   f"-> {tree.head[:12]}")

