"""``giftbox lock`` and ``giftbox build``."""

from __future__ import annotations

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.distros import Arch, Distro, get_distro, load_distros
from giftbox.errors import BuildError
from giftbox.spec import Spec, find_spec


def _targets(app: App, spec: Spec, distros: tuple[str, ...],
             arches: tuple[str, ...]) -> list[tuple[Distro, Arch]]:
    """The requested (distro, arch) pairs; by default the spec's matrix runnable here."""
    builders = app.settings.builders_dir
    if distros:
        chosen = [get_distro(builders, d) for d in distros]
    else:
        known = load_distros(builders)
        chosen = [known[d] for d in spec.distros if known[d].runnable_here]
    arch_list = [Arch.parse(a) for a in arches] if arches else [Arch.parse(a)
                                                               for a in spec.arches]
    pairs = [(d, a) for d in chosen for a in arch_list if d.supports(a)]
    if not pairs:
        raise BuildError(f"nothing to do for {spec.name}: no requested distro supports "
                         + ", ".join(a.value for a in arch_list))
    return pairs


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

    spec = find_spec(app.settings.root, project, frozenset(load_distros(app.settings.builders_dir)))
    written = [str(make_lock(spec, d, a, app.settings, app.reporter))
               for d, a in _targets(app, spec, distros, arches)]
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
              help="Package compression. Default: what the target's dpkg/rpm read best "
                   "(zstd on Debian 12+, Ubuntu 21.10+, EL8+; xz before).")
@click.option("--compression-level", type=int, help="Compression level (tool's default).")
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
    if all_projects or jobs > 1:
        # Several targets at once, with a progress display: giftbox/cli/nightly.py.
        from giftbox.cli.nightly import build_many

        build_many(app, [project] if project else [], distros=distros, arches=arches,
                   ref=ref, jobs=jobs, as_json=as_json,
                   run={"package": not no_package, "publish": channels, "packager": packager,
                        "compression": compression, "compression_level": compression_level})
        return
    assert project is not None
    spec = find_spec(app.settings.root, project, frozenset(load_distros(app.settings.builders_dir)))
    results = []
    for distro, arch in _targets(app, spec, distros, arches):
        result = run_target(spec, distro, arch, app.settings, app.reporter, ref=ref,
                            package=not no_package, publish=channels, packager=packager,
                            compression=compression, compression_level=compression_level)
        results.append(result)
        if as_json:
            continue
        b = result.build
        state = "cached" if b.cached else "built"
        click.echo(f"{state}: {project} {b.manifest.version['upstream']} for "
                   f"{distro.name}/{arch.value}: venv {b.venv_dir} (installs at "
                   f"{b.manifest.prefix})")
        if result.package:
            p = result.package
            click.echo(f"package: {p.path}\n  name {p.name}  version {p.version}  arch {p.arch}"
                       f"  size {p.size / 1e6:.1f} MB\n  sha256 {p.sha256}")
        for channel in result.published:
            click.echo(f"published to {channel}")
    if as_json:
        emit_json({"builds": [r.as_dict() for r in results]})
