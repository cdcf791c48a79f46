"""``giftbox nightly``, ``matrix``, ``status``, ``report``, ``builds`` and ``log``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.errors import StateError


def _jobs_option(f: Any) -> Any:
    return click.option("-j", "--jobs", type=click.IntRange(min=1), default=1,
                        show_default=True,
                        help="Targets built at once (each in its own container).")(f)


@cli.command("nightly")
@click.argument("projects", nargs=-1)
@click.option("--channel", default="nightly", show_default=True,
              help="Channel the changed builds are published to.")
@_jobs_option
@json_option
@pass_app
def nightly_cmd(app: App, projects: tuple[str, ...], channel: str, jobs: int,
                as_json: bool) -> None:
    """Build every tracked branch that changed since the last nightly, and publish it.

    For each spec with upstream.git.track (or only PROJECTS), the branch head is resolved
    and each target of its matrix that can be built here is built at it. A target whose
    inputs (commit, patches, lock, builder) did not change is a cache hit: "unchanged",
    nothing published. PyPI upstreams and specs without track: are skipped. A failing
    target never stops the others; the exit code is non-zero if any failed.

    \b
      giftbox nightly --jobs 4
      giftbox nightly nova --channel nightly --json
    """
    from giftbox.nightly import run_nightly

    result = run_nightly(app.settings, channel=channel, jobs=jobs, projects=projects,
                         reporter=app.reporter)
    if as_json:
        emit_json(result.as_dict())
    else:
        counts = ", ".join(f"{v} {k}" for k, v in result.summary().items() if v) or "nothing"
        click.echo(f"nightly #{result.run_id} into {channel}: {counts} "
                   f"({result.seconds:.0f}s)")
        skipped: dict[str, list[str]] = {}
        for o in result.outcomes:
            if o.outcome == "skipped":  # one line per project, not per target
                skipped.setdefault(f"{o.project}  ({o.detail})", []).append(o.target)
                continue
            click.echo("  " + o.line().replace("\n", "\n  "))
        for what, targets in skipped.items():
            click.echo(f"  skipped   {len(targets)} target(s) of {what}")
    if result.failed:
        sys.exit(max(o.exit_code for o in result.failed) or 1)


@cli.command("matrix")
@click.option("--runnable-here", is_flag=True,
              help="Only distros whose builder this giftbox can bootstrap (builder.yaml "
                   "runnable_here).")
@click.option("--tracked", is_flag=True, help="Only projects that track a branch.")
@json_option
@pass_app
def matrix_cmd(app: App, runnable_here: bool, tracked: bool, as_json: bool) -> None:
    """Every project x distro x arch, as CI matrix cells.

    --json prints {"include": [...]} for a GitHub Actions matrix (fromJSON). Each cell says
    whether it is runnable here, whether its arch is emulated on an x86_64 runner (needs
    qemu), and the branch a nightly builds (ref; empty for the pinned ref).
    """
    from giftbox.nightly import matrix

    cells = matrix(app.settings, runnable_here=runnable_here, tracked_only=tracked)
    if as_json:
        # Compact and on one line: it goes into $GITHUB_OUTPUT as matrix=<json>.
        import json

        click.echo(json.dumps({"include": cells}, sort_keys=True, separators=(",", ":")))
        return
    for c in cells:
        marks = [m for m, on in (("emulated", c["emulated"]), ("tracked", c["tracked"]),
                                 ("not-runnable-here", not c["runnable_here"])) if on]
        if not c["served"]:
            marks.append(f"not-served: {c['problem']}")
        click.echo(f"{c['project']:<24} {c['distro']:<12} {c['arch']:<8} {' '.join(marks)}")


@cli.command("status")
@click.argument("projects", nargs=-1)
@click.option("--offline", is_flag=True,
              help="Resolve refs from the cached mirrors and tarballs only (no fetch).")
@json_option
@pass_app
def status_cmd(app: App, projects: tuple[str, ...], offline: bool, as_json: bool) -> None:
    """Per project: pinned and tracked ref -> commit, patches, last build per distro/arch,
    the version in each channel.

    Resolving fetches each git mirror once (or downloads a PyPI tarball not cached yet);
    --offline reads only the cache.
    """
    from giftbox.report import collect

    overview = collect(app.settings, projects, offline=offline, reporter=app.reporter)
    releases = _release_states(app)  # giftbox/repo/gates.py: is each release whole?
    if as_json:
        emit_json({"projects": [p.as_dict() for p in overview.projects],
                   "channels": overview.channels, "channel_error": overview.channel_error,
                   "releases": [r.as_dict() for r in releases]})
    else:
        for p in overview.projects:
            if p.error:
                click.echo(f"{p.project:<24} ERROR {p.error}")
                continue
            commit = (p.commit or "?")[:12]
            click.echo(f"{p.project:<24} {p.upstream} {p.ref} -> {commit}  "
                       f"{p.patches} patch(es)  upstream {p.upstream_version or '?'}")
            if p.track:
                click.echo(f"{'':<24} tracks {p.track} -> {(p.track_commit or '?')[:12]}  "
                           f"upstream {p.track_version or '?'}")
            if p.versions:
                click.echo(f"{'':<24} pinned builds as: " + ", ".join(
                    f"{d} {v}" for d, v in p.versions.items()))
            for note in p.notes:
                click.echo(f"{'':<24} note: {note}")
            for target in sorted(set(p.targets) | set(p.builds)):
                b = p.builds.get(target)
                line = (f"build #{b['id']} {b['status']} {b['version']}" if b
                        else "never built")
                n = p.nightly.get(target)
                if n:
                    line += f"; nightly #{n['run']} {n['outcome']}"
                click.echo(f"{'':<24}   {target:<20} {line}")
                if b and b["status"] == "failed" and b.get("error"):
                    click.echo(f"{'':<24}   {'':<20} {b['error']}")
            for channel, versions in p.channels.items():
                for target, version in versions.items():
                    click.echo(f"{'':<24}   {channel + ':':<9}{target:<11} {version}")
        if overview.channel_error:
            click.echo(f"channels: {overview.channel_error}")
        for r in releases:
            click.echo(f"release {r.release} in {r.channel}: "
                       + ("consistent (every project built and verified for every target: "
                          + ", ".join(r.checks) + ")" if r.consistent else "NOT consistent"))
            for b in r.blockers:
                click.echo(f"    blocked by {b}")
    if any(p.error for p in overview.projects):
        raise SystemExit(1)


def _release_states(app: App) -> list[Any]:
    from giftbox.errors import GiftboxError
    from giftbox.repo.gates import release_states

    try:
        return release_states(app.settings)
    except GiftboxError as exc:  # status still shows the projects
        app.reporter.info(f"releases: {exc.message}")
        return []


@cli.command("report")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Directory for index.html and logs/ (created if missing).")
@click.option("--offline", is_flag=True, help="Do not fetch to resolve refs.")
@pass_app
def report_cmd(app: App, output: Path, offline: bool) -> None:
    """A static HTML page: the project x distro/arch matrix coloured by the last build,
    versions per channel, nightly runs, recent promotions, failed builds' logs (copied
    into OUTPUT/logs/ so the links work offline)."""
    from giftbox.report import collect, render

    overview = collect(app.settings, offline=offline, reporter=app.reporter)
    page = render(overview, app.settings, output)
    click.echo(str(page))


@cli.command("builds")
@click.argument("project", required=False)
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@pass_app
def builds_cmd(app: App, project: str | None, limit: int, as_json: bool) -> None:
    """Recent builds (of PROJECT), newest first. Builds that were cache hits are not
    recorded: the build they reused is."""
    from giftbox import records

    with records.open_records(app.settings) as db:
        found = db.recent_builds(project, limit)
    if as_json:
        emit_json({"builds": [b.as_dict() for b in found]})
        return
    if not found:
        click.echo("no builds recorded" + (f" for {project}" if project else ""))
    for b in found:
        took = f"{b.duration:.0f}s" if b.duration is not None else "-"
        click.echo(f"#{b.id:<5} {b.started_at[:19]}  {b.project:<20} {b.distro}/{b.arch:<8} "
                   f"{b.status:<9} {took:>6}  {b.version}")
        if b.error:
            click.echo(f"{'':<7}{b.error.strip().splitlines()[0]}")


@cli.command("log")
@click.argument("build_id", type=int)
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N lines.")
@pass_app
def log_cmd(app: App, build_id: int, tail: int | None) -> None:
    """Print the log of build BUILD_ID (see `giftbox builds`)."""
    from collections import deque

    from giftbox import records

    with records.open_records(app.settings) as db:
        b = db.build(build_id)
        # A nightly's transcript of the target, when the build failed before its own log.
        transcript = db.nightly_log_path(build_id)
    candidates = [p for p in (b.log_path, transcript) if p]
    path = next((Path(p) for p in candidates if Path(p).is_file()), None)
    if path is None:
        if b.error:
            click.echo(f"build #{build_id} ({b.status}) has no log file "
                       f"({b.log_path or 'none recorded'}); its recorded error:", err=True)
            click.echo(b.error)
            return
        raise StateError(f"build #{build_id} has no log: {b.log_path or 'none recorded'} "
                         "does not exist",
                         hint="logs live in the build directory; a cleaned cache drops them")
    with open(path, errors="replace") as f:
        lines = deque(f, maxlen=tail) if tail else f.readlines()
    sys.stdout.writelines(lines)

