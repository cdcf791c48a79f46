"""``giftbox bump``, ``giftbox backport`` and ``giftbox diff``."""

from __future__ import annotations

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.distros import load_distros
from giftbox.spec import find_spec


@cli.command("bump")
@click.argument("project")
@click.option("--ref", help="The new pin: a git ref (tag, branch, commit, refs/changes/..), or "
              "a version for a spec built from its PyPI tarball.")
@click.option("--allow-downgrade", is_flag=True,
              help="Allow a ref whose version sorts below the pinned one.")
@click.option("--no-lock", is_flag=True,
              help="Do not regenerate the project's locks (they are then stale: refresh them "
                   "before building).")
@click.option("--continue", "continue_", is_flag=True,
              help="Go on after resolving a conflict in build/PROJECT-bump/.")
@click.option("--abort", is_flag=True, help="Drop the bump in progress; nothing was written.")
@json_option
@pass_app
def bump_cmd(app: App, project: str, ref: str | None, allow_downgrade: bool, no_lock: bool,
             continue_: bool, abort: bool, as_json: bool) -> None:
    """Move PROJECT's pin to --ref and carry its patch series along.

    Patches upstream already has (same patch-id as a commit between the two pins, or empty
    after the rebase) are dropped; the others are cherry-picked onto the new ref. A conflict
    stops with the work tree left in build/PROJECT-bump/: resolve it there, then --continue
    (or --abort). On success the spec's pin, the series and every lock of the project
    change together; nothing is written before that.

    \b
      giftbox bump nova --ref 33.0.1
      giftbox bump nova --continue
      giftbox bump nova --abort
    """
    from giftbox.workflow import bump

    settings = app.settings
    if sum(map(bool, (ref, continue_, abort))) != 1:
        raise click.UsageError("give exactly one of --ref NEW, --continue, --abort")
    if abort:
        tree = bump.abort(settings, project)
        if as_json:
            emit_json({"project": project, "aborted": str(tree)})
        else:
            click.echo(f"{project}: bump aborted, {tree} removed; the spec, patches and "
                       "locks were not touched")
        return
    spec = find_spec(settings.root, project, frozenset(load_distros(settings.builders_dir)))
    if continue_:
        result = bump.continue_(spec, settings, app.reporter)
    else:
        assert ref is not None
        result = bump.start(spec, settings, ref, allow_downgrade=allow_downgrade,
                            no_lock=no_lock, reporter=app.reporter)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"{project}: {result.old_ref} ({result.old_version}) -> {result.new_ref} "
               f"({result.new_version}), {result.new_commit[:12]}")
    written = set(result.update.written) if result.update else set()
    for name in result.kept:
        click.echo(f"  kept     {name}{' (refreshed)' if name in written else ''}")
    for dropped in result.dropped:
        click.echo(f"  dropped  {dropped.name}: {dropped.reason}")
    for path in result.locks:
        click.echo(f"  locked   {path}")
    for path in result.stale_locks:
        click.echo(f"  stale    {path} (--no-lock: refresh with giftbox lock)")


@cli.command("backport")
@click.argument("project")
@click.argument("commit")
@json_option
@pass_app
def backport_cmd(app: App, project: str, commit: str, as_json: bool) -> None:
    """Add upstream COMMIT (a hash or refs/changes/NN/NNNN/P) as the last patch of PROJECT.

    The commit is cherry-picked with -x onto the patched tree (so it must apply on top of
    the series) and written as a format-patch file; the series list gets its name.
    """
    from giftbox.workflow.backport import backport

    settings = app.settings
    spec = find_spec(settings.root, project, frozenset(load_distros(settings.builders_dir)))
    result = backport(spec, settings, commit, app.reporter)
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(f"{project}: + patches/{project}/{result.name}  "
                   f"({result.upstream_commit[:12]} \"{result.subject}\", added to "
                   f"{result.series_file})")


@cli.command("diff")
@click.argument("project")
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--spec-from", "rev_a", metavar="REV",
              help="Side A's spec, patches and locks as of this giftbox commit "
                   "(default: the working tree).")
@click.option("--spec-to", "rev_b", metavar="REV",
              help="Side B's spec, patches and locks as of this giftbox commit "
                   "(default: the working tree).")
@json_option
@pass_app
def diff_cmd(app: App, project: str, a: str | None, b: str | None, rev_a: str | None,
             rev_b: str | None, as_json: bool) -> None:
    """What differs between A and B: upstream commits, patches, locked versions, versions.

    A and B are upstream git refs; without them each side uses its spec's pin.

    \b
      giftbox diff nova 33.0.0 33.0.1           upstream commits between two tags
      giftbox diff nova --spec-from HEAD~1      what the last commit of this repo changed
    """
    from giftbox.workflow.diff import diff

    if (a is None) != (b is None):
        raise click.UsageError("give both A and B, or neither (each side's pin)")
    result = diff(project, app.settings, a, b, rev_a, rev_b)
    if as_json:
        emit_json(result.as_dict())
        return
    sa, sb = result.a, result.b
    click.echo(f"{project}: {sa.ref} ({sa.upstream_version}"
               f"{', ' + sa.commit[:12] if sa.commit else ''}) [{sa.label}] -> "
               f"{sb.ref} ({sb.upstream_version}{', ' + sb.commit[:12] if sb.commit else ''})"
               f" [{sb.label}]")
    if result.commits is None:
        click.echo("upstream commits: not comparable (PyPI tarballs or different URLs)")
    else:
        click.echo(f"upstream commits ({len(result.commits)}):")
        for commit, subject in result.commits:
            click.echo(f"  + {commit[:12]} {subject}")
        for commit, subject in result.commits_removed:
            click.echo(f"  - {commit[:12]} {subject}")
    patches = result.patches
    click.echo(f"patches ({sum(len(v) for v in patches.values())} differ):")
    for entry in patches["added"]:
        click.echo(f"  + {entry['name']}")
    for entry in patches["removed"]:
        click.echo(f"  - {entry['name']}")
    for entry in patches["changed"]:
        click.echo(f"  ~ {entry['name']} ({entry['from'][:12]} -> {entry['to'][:12]})")
    locks = result.locks
    click.echo(f"locks ({len(locks)} differ):")
    for file, change in locks.items():
        if change.only_in:
            click.echo(f"  {file}: only in {change.only_in.upper()}")
            continue
        click.echo(f"  {file}:")
        for name, version in change.added.items():
            click.echo(f"    + {name} {version}")
        for name, version in change.removed.items():
            click.echo(f"    - {name} {version}")
        for name, (old, new) in change.changed.items():
            click.echo(f"    ~ {name} {old} -> {new}")
    click.echo("versions:")
    for distro in sorted(set(sa.versions) | set(sb.versions)):
        click.echo(f"  {distro:<12} {sa.versions.get(distro, '-')} -> "
                   f"{sb.versions.get(distro, '-')}")
