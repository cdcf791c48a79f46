"""``giftbox lock`` and ``giftbox build``."""

from __future__ import annotations

import sys

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.targets import Catalog, Outcome


@cli.command("lock")
@click.argument("project")
@click.option("--distro", "distros", multiple=True, help="Target distro (repeatable). "
              "Default: every distro of the spec's matrix that can be built here.")
@click.option("--arch", "arches", multiple=True, help="Target arch (repeatable): x86_64, "
              "ppc64le. Default: the spec's matrix.")
@json_option
@pass_app
def lock_cmd(app: App, project: str, distros: tuple[str, ...], arches: tuple[str, ...],
             as_json: bool) -> None:
    """Pin PROJECT's requirements with hashes, per distro and arch, into locks/PROJECT/.

    pip-compile runs inside the target's builder so markers resolve for that Python and
    arch. Inputs: the project's requirements and build requirements, the spec's extra
    requirements, constrained by the release's upper-constraints (the project's own line
    dropped). Commit the result: builds use the committed lock and refuse a stale one.

    \b
      giftbox lock nova --distro debian12 --arch x86_64
    """
    from giftbox.build import make_lock

    catalog = Catalog.load(app.settings)
    spec = catalog.spec(project)
    written = [str(make_lock(t.spec, t.distro, t.arch, app.settings, app.reporter))
               for t in catalog.select(spec, distros, arches)]
    if as_json:
        emit_json({"project": project, "locks": written})
    else:
        for path in written:
            click.echo(path)


@cli.command("build")
@click.argument("project", required=False)
@click.option("--all", "all_projects", is_flag=True,
              help="Every spec, each over its matrix runnable here.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Targets built at once (with --all or several targets).")
@click.option("--distro", "distros", multiple=True, help="Target distro (repeatable), e.g. "
              "debian12. Default: the spec's matrix, where runnable here.")
@click.option("--arch", "arches", multiple=True, help="Target arch (repeatable): x86_64, "
              "ppc64le. Default: the spec's matrix.")
@click.option("--ref", help="Build this git ref instead of the pinned one (git upstreams).")
@click.option("--no-package", is_flag=True, help="Stop at the audited venv.")
@click.option("--packager", type=click.Choice(["auto", "native", "fpm"]), default="auto",
              show_default=True, help="native: dpkg-deb/rpmbuild; fpm when on PATH; auto "
              "prefers native.")
@click.option("--compression", type=click.Choice(["zstd", "xz", "gzip"]),
              help="Package compression. Default: the distro's (builders/<distro>/"
                   "builder.yaml): a .deb is xz, its blocks compressed once per content "
                   "(a warm build compresses what it changed); an .rpm zstd on EL8+, xz "
                   "before. zstd or gzip for a .deb: dpkg-deb compresses the whole tree.")
@click.option("--compression-level", type=int,
              help="Compression level. Default: the distro's for its own compression (xz 1 "
                   "for a .deb), else the tool's (zstd 3, xz 6, gzip 9).")
@click.option("--publish", "channels", multiple=True, metavar="CHANNEL",
              help="Publish the package to CHANNEL (repeatable), signed and atomically.")
@json_option
@pass_app
def build_cmd(app: App, project: str | None, all_projects: bool, jobs: int,
              distros: tuple[str, ...], arches: tuple[str, ...],
              ref: str | None, no_package: bool, packager: str, compression: str | None,
              compression_level: int | None, channels: tuple[str, ...],
              as_json: bool) -> None:
    """Build PROJECT into an audited, relocatable venv and a native package.

    \b
    Stages, each timed:
      resolve     upstream ref -> commit; the builder image (bootstrapped if missing)
      lock        the committed lock must match the requirements (giftbox lock refreshes it)
      deps layer  wheelhouse filled (hashes required); venv at its final prefix; the lock
                  installed offline; bytecode; audited. Cached per lock and builder.
      wheel       the patched project built with `build`, offline. Cached per source.
      audit       no build paths, pip check, imports, console scripts, ELF arch
      package     .deb (dpkg-deb) or .rpm (rpmbuild), lintian/rpmlint clean
      publish     with --publish, into the channel's signed repository

    A build whose inputs are unchanged is a cache hit and takes about a second.

    \b
      giftbox build nova --distro debian12 --arch x86_64
      giftbox build nova --distro debian12 --arch ppc64le --publish nightly --json
      giftbox build --all --jobs 4
    """
    from giftbox.pipeline import run_target

    if all_projects == bool(project):
        raise click.UsageError("name a PROJECT or give --all")
    catalog = Catalog.load(app.settings)
    if all_projects or jobs > 1:
        # Several targets at once, with a progress display: giftbox/runner.py.
        from giftbox.runner import build_targets

        targets = catalog.select_many([project] if project else [], distros, arches)
        _render_many(build_targets(targets, app.settings, jobs=jobs, ref=ref,
                                   package=not no_package, publish=channels,
                                   packager=packager, compression=compression,
                                   compression_level=compression_level), as_json)
        return
    assert project is not None
    spec = catalog.spec(project)
    results = []
    for target in catalog.select(spec, distros, arches):
        result = run_target(target.spec, target.distro, target.arch, app.settings,
                            app.reporter, ref=ref, package=not no_package, publish=channels,
                            packager=packager, compression=compression,
                            compression_level=compression_level, catalog=catalog)
        results.append(result)
        if as_json:
            continue
        b = result.build
        state = "cached" if b.cached else "built"
        click.echo(f"{state}: {project} {b.version.upstream} for "
                   f"{target.distro.name}/{target.arch.value}: venv {b.venv_dir} (installs at "
                   f"{b.manifest.prefix})")
        if result.package:
            p = result.package
            click.echo(f"package: {p.path}\n  name {p.name}  version {p.version}  arch {p.arch}"
                       f"  size {p.size / 1e6:.1f} MB\n  sha256 {p.sha256}")
        for channel in result.published:
            click.echo(f"published to {channel}")
    if as_json:
        emit_json({"builds": [r.as_dict() for r in results]})


def _render_many(outcomes: list[Outcome], as_json: bool) -> None:
    """The summary of several targets built at once; exits non-zero if any failed."""
    failed = [o for o in outcomes if o.outcome == "failed"]
    if as_json:
        emit_json({"builds": [o.result.as_dict() for o in outcomes if o.result is not None],
                   "targets": [o.as_dict() for o in outcomes]})
    else:
        click.echo(f"{len(outcomes)} target(s): {len(outcomes) - len(failed)} ok, "
                   f"{len(failed)} failed")
        for o in outcomes:
            click.echo("  " + o.line().replace("\n", "\n  "))
            if o.result is not None and o.result.package is not None:
                click.echo(f"            package: {o.result.package.path}")
    if failed:
        sys.exit(max(o.exit_code for o in failed) or 1)
