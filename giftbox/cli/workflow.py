"""``giftbox bump``, ``giftbox backport`` and ``giftbox diff``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.targets import Catalog

if TYPE_CHECKING:
    from giftbox.workflow.diff import Side


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
    spec = Catalog.load(settings).spec(project)
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
    spec = Catalog.load(settings).spec(project)
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
                   "(default: the working tree; ref sides only).")
@click.option("--spec-to", "rev_b", metavar="REV",
              help="Side B's spec, patches and locks as of this giftbox commit "
                   "(default: the working tree; ref sides only).")
@click.option("--distro", help="For a channel:NAME side: the target's distro (default: the "
              "only one the channel holds the project for).")
@click.option("--arch", help="For a channel:NAME side: the target's architecture.")
@json_option
@pass_app
def diff_cmd(app: App, project: str, a: str | None, b: str | None, rev_a: str | None,
             rev_b: str | None, distro: str | None, arch: str | None, as_json: bool) -> None:
    """What differs between A and B: upstream commits, patches, locked versions, versions.

    A and B are each an upstream git ref, build:ID (a build of the build records, read from
    its manifest.json and venv/giftbox-lock.txt) or channel:NAME[/DISTRO/ARCH] (the project's
    highest version in that channel, read from the giftbox-manifest.json and giftbox-lock.txt
    the package carries). Without A and B each side uses its spec's pin. A ref compared with
    a build or a channel is narrowed to that one target's lock and distro.

    \b
      giftbox diff nova 33.0.0 33.0.1           upstream commits between two tags
      giftbox diff nova --spec-from HEAD~1      what the last commit of this repo changed
      giftbox diff nova build:12 build:15       what changed between two builds
      giftbox diff nova build:15 channel:stable what stable ships, against a build
      giftbox diff nova channel:nightly/debian12/x86_64 channel:stable/debian12/x86_64
    """
    from giftbox.workflow.diff import diff, parse_side

    if (a is None) != (b is None):
        raise click.UsageError("give both A and B, or neither (each side's pin)")
    for rev, given, option in ((rev_a, a, "--spec-from"), (rev_b, b, "--spec-to")):
        if rev and given is not None and parse_side(given).kind != "ref":
            raise click.UsageError(f"{option} applies to a ref side; {given} carries its own "
                                   "spec, patches and lock")
    result = diff(project, app.settings, a, b, rev_a, rev_b, distro=distro, arch=arch)
    if as_json:
        emit_json(result.as_dict())
        return
    sa, sb = result.a, result.b

    def describe(side: Side) -> str:
        where = side.label + (f", {side.target}" if side.target else "")
        commit = f", {side.commit[:12]}" if side.commit else ""
        return f"{side.ref} ({side.upstream_version}{commit}) [{where}]"

    click.echo(f"{project}: {describe(sa)} -> {describe(sb)}")
    for key, side in (("A", sa), ("B", sb)):
        origin = side.origin
        if side.kind == "build":
            click.echo(f"  {key}: build {origin['build_id']} in {origin['directory']}")
        elif side.kind == "channel":
            click.echo(f"  {key}: {origin['filename']} in {origin['channel']} "
                       f"(sha256 {str(origin['digest'])[:16]}…)")
        if not side.locks_recorded:
            click.echo(f"  {key}: its lock was not recorded (made before giftbox-lock.txt "
                       "travelled with the venv): compared by digest only")
    if result.commits is None:
        click.echo(result.upstream_note or "upstream commits: not comparable")
    else:
        click.echo(f"upstream commits ({len(result.commits)}):")
        for commit, subject in result.commits:
            click.echo(f"  + {commit[:12]} {subject}")
        for commit, subject in result.commits_removed:
            click.echo(f"  - {commit[:12]} {subject}")
    patches = result.patches

    def titled(entry: dict[str, str]) -> str:
        return f"  \"{entry['subject']}\"" if entry.get("subject") else ""

    click.echo(f"patches ({sum(len(v) for v in patches.values())} differ):")
    for entry in patches["added"]:
        click.echo(f"  + {entry['name']} ({entry['sha256'][:12]}){titled(entry)}")
    for entry in patches["removed"]:
        click.echo(f"  - {entry['name']} ({entry['sha256'][:12]}){titled(entry)}")
    for entry in patches["changed"]:
        click.echo(f"  ~ {entry['name']} ({entry['from'][:12]} -> {entry['to'][:12]})")
    locks = result.locks
    click.echo(f"locks ({len(locks)} differ):")
    for file, change in locks.items():
        if change.only_in:
            click.echo(f"  {file}: only in {change.only_in.upper()}")
            continue
        if change.not_recorded:
            click.echo(f"  {file}: differs (by digest; {change.not_recorded.upper()}'s lock "
                       "text was not recorded)")
            continue
        click.echo(f"  {file}:")
        for name, version in change.added.items():
            click.echo(f"    + {name} {version}")
        for name, version in change.removed.items():
            click.echo(f"    - {name} {version}")
        for name, (old, new) in change.changed.items():
            click.echo(f"    ~ {name} {old} -> {new}")
    click.echo("versions:")
    for name in sorted(set(sa.versions) | set(sb.versions)):
        click.echo(f"  {name:<12} {sa.versions.get(name, '-')} -> "
                   f"{sb.versions.get(name, '-')}")
    if sa.builder_image and sb.builder_image and sa.builder_image != sb.builder_image:
        click.echo(f"builder image: {sa.builder_image[:19]} -> {sb.builder_image[:19]}")
    if result.same:
        click.echo("no differences in upstream, patches, locks or versions")
