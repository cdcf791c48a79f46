"""``giftbox source`` and ``giftbox status``."""

from __future__ import annotations

from pathlib import Path

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.distros import load_distros
from giftbox.errors import GiftboxError
from giftbox.patches import spec_series_digest
from giftbox.spec import find_spec, list_projects
from giftbox.versions import for_target


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
    spec = find_spec(settings.root, project, frozenset(load_distros(settings.builders_dir)))
    into = into or Path("build") / f"{project}-src"
    tree = source_stage.prepare(spec, into, settings, app.reporter, ref=ref)
    if as_json:
        emit_json(tree.as_dict())
    else:
        click.echo(f"{tree.path}  {project} {tree.upstream.version} "
                   f"{tree.upstream.commit[:12]} + {len(tree.patches)} patch(es) "
                   f"-> {tree.head[:12]}")


@cli.command("status")
@click.argument("projects", nargs=-1)
@json_option
@pass_app
def status_cmd(app: App, projects: tuple[str, ...], as_json: bool) -> None:
    """Per project: pinned ref, resolved commit, patch count and package version.

    Resolving fetches the git mirror or the PyPI tarball when they are not cached yet.
    """
    from giftbox import source as source_stage

    settings = app.settings
    distros = load_distros(settings.builders_dir)
    rows = []
    for name in projects or list_projects(settings.root):
        row: dict[str, object] = {"project": name}
        try:
            spec = find_spec(settings.root, name, frozenset(distros))
            row.update({"upstream": spec.upstream_kind, "url": spec.upstream_url,
                        "ref": spec.pinned_ref, "patches": len(spec.patches)})
            upstream = source_stage.resolve(spec, settings, app.reporter)
            digest = spec_series_digest(spec)
            row.update({"commit": upstream.commit, "upstream_version": upstream.version,
                        "versions": {}})
            for distro_name in spec.distros:
                d = distros[distro_name]
                v = for_target(upstream.version, spec.package.release, len(spec.patches),
                               digest, d.family, d.version_tag)
                row["versions"][distro_name] = v.for_family(d.family)  # type: ignore[index]
        except GiftboxError as exc:
            row["error"] = exc.render()
        rows.append(row)
    if as_json:
        emit_json({"projects": rows})
        return
    for row in rows:
        if "error" in row:
            click.echo(f"{row['project']:<24} ERROR {row['error']}")
            continue
        click.echo(f"{row['project']:<24} {row['upstream']} {row['ref']} -> "
                   f"{str(row['commit'])[:12]}  {row['patches']} patch(es)  "
                   f"upstream {row['upstream_version']}")
        for distro_name, version in row["versions"].items():  # type: ignore[attr-defined]
            click.echo(f"{'':<24}   {distro_name:<12} {version}")
    if any("error" in r for r in rows):
        raise SystemExit(1)
