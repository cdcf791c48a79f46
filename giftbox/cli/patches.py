"""``giftbox patches export`` and ``giftbox patches check``."""

from __future__ import annotations

from pathlib import Path

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.errors import GiftboxError, PatchError
from giftbox.targets import Catalog


@cli.group("patches")
def patches_group() -> None:
    """Work on a project's patch series: export a work tree back, check the series."""


@patches_group.command("export")
@click.argument("project")
@click.option("--from", "tree", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The work tree `giftbox source PROJECT --into DIR` made (and you edited).")
@json_option
@pass_app
def export_cmd(app: App, project: str, tree: Path, as_json: bool) -> None:
    """Write the commits on top of giftbox-upstream in --from back to patches/PROJECT/.

    One format-patch file per commit (author, date and message kept; no commit hashes, no
    git version, no series numbers, so re-exporting an unchanged tree changes no byte). Existing
    patches keep their file names; new ones are numbered after the last. Files that left the
    series are removed and the series list (the spec's patches:, or patches/PROJECT/series)
    is updated in place, the rest of the spec untouched.

    \b
      giftbox source nova --into build/nova-src
      (edit, git commit --amend, git rebase -i giftbox-upstream, ...)
      giftbox patches export nova --from build/nova-src
    """
    from giftbox.workflow.export import export

    spec = Catalog.load(app.settings).spec(project)
    result = export(spec, app.settings, tree)
    if as_json:
        emit_json(result.as_dict())
        return
    update = result.update
    click.echo(f"{project}: {len(result.patches)} patch(es) on {result.base[:12]} -> "
               f"patches/{project}/ (series in {update.series_file})")
    for patch in result.patches:
        mark = "updated" if patch.name in update.written else "unchanged"
        click.echo(f"  {patch.name:<60} {mark}")
    for name in update.removed:
        click.echo(f"  {name:<60} removed")


_SYMBOL = {"applies": "ok", "applies with offset": "ok", "already merged upstream": "--",
           "applies with fuzz": "~~", "conflicts": "XX", "missing": "XX"}


@patches_group.command("check")
@click.argument("project", required=False)
@click.option("--all", "all_projects", is_flag=True, help="Check every spec's series.")
@json_option
@pass_app
def check_cmd(app: App, project: str | None, all_projects: bool, as_json: bool) -> None:
    """Apply each series to its pinned ref in a scratch tree and judge every patch.

    \b
    applies                  git apply --check: every hunk at its line
    applies with offset      git apply --check, some hunk moved (offset N lines)
    already merged upstream  the reverse applies, or an upstream commit has its patch-id
    applies with fuzz        only a clean three-way merge or -C1 applies it: refresh it
    conflicts                none of the above; the files are named

    Exits 4 when any patch conflicts (or is missing).
    """
    from giftbox.workflow.check import check_series

    if bool(project) == all_projects:
        raise click.UsageError("name one PROJECT, or pass --all")
    settings = app.settings
    catalog = Catalog.load(settings)
    reports: list[dict[str, object]] = []
    failed = False
    for name in catalog.projects() if all_projects else [project or ""]:
        try:
            report = check_series(catalog.spec(name), settings,
                                  app.reporter)
        except GiftboxError as exc:
            if not all_projects:
                raise
            reports.append({"project": name, "ok": False, "error": exc.render()})
            failed = True
            continue
        failed = failed or not report.ok
        reports.append(report.as_dict())
        if not as_json:
            click.echo(f"{name} at {report.ref} ({report.commit[:12]}): "
                       f"{len(report.patches)} patch(es)")
            for status in report.patches:
                detail = f"  {status.detail}" if status.detail else ""
                click.echo(f"  {_SYMBOL.get(status.status, '??')} {status.name}: "
                           f"{status.status}{detail}")
    if as_json:
        emit_json({"projects": reports, "ok": not failed})
    else:
        for entry in reports:
            if "error" in entry:
                click.echo(f"{entry['project']}: ERROR {entry['error']}")
    if failed:
        raise SystemExit(PatchError.exit_code)
