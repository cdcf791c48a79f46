"""``giftbox builder list|ensure|prune``."""

from __future__ import annotations

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.distros import Arch
from giftbox.errors import BuilderError
from giftbox.targets import Catalog


@cli.group()
def builder() -> None:
    """Builder images: one per distro and arch, where packages are built.

    \b
    A builder is builders/<distro>/Dockerfile on top of a base image: Debian bases are
    bootstrapped here with mmdebstrap (no registry needed), the others are pulled. Image tags
    carry the digest of their definition, so editing a builder.yaml or Dockerfile makes a new
    builder and `prune` removes the old one:
    \b
      giftbox-builder/debian12:ppc64le-8e41d07c55aa
    \b
      giftbox builder list                      what exists, what is up to date
      giftbox builder ensure debian12           build debian12 for every arch it lists
      giftbox builder prune --dry-run           what an edit has made obsolete
    """


@builder.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """Show every builder the builders/ folder defines, and whether its image is current.

    \b
      giftbox builder list
      giftbox builder list --json | jq '.[] | select(.up_to_date | not)'
    \b
    PRESENT: some image of that distro/arch exists; CURRENT: the one for today's definition.
    HERE: whether this machine can bootstrap it (no means it needs a registry).
    SERVED: whether the archive it bootstraps from serves the arch (its suite's Release,
    Architectures:); "?" when unknown (a pulled base, or the archive unreachable).
    """
    from giftbox import builders  # lazily: the Docker SDK costs ~0.3 s to import

    rows = builders.list_builders(app.settings)
    distros = Catalog.load(app.settings).distros
    served = {(r.distro, r.arch): builders.served(distros[r.distro], r.arch, app.settings)
              for r in rows}
    if as_json:
        emit_json([{**r.as_dict(), "archive": served[(r.distro, r.arch)].as_dict()}
                   for r in rows])
        return
    click.echo(f"{'DISTRO':<13}{'ARCH':<9}{'PRESENT':<9}{'CURRENT':<9}{'HERE':<6}{'SERVED':<8}"
               "TAG")
    for r in rows:
        s = served[(r.distro, r.arch)]
        mark = "?" if not s.known else _yes(s.ok)
        click.echo(f"{r.distro:<13}{r.arch.value:<9}{_yes(r.present):<9}{_yes(r.up_to_date):<9}"
                   f"{_yes(r.runnable_here):<6}{mark:<8}{r.tag}")


def _yes(value: bool) -> str:
    return "yes" if value else "no"


@builder.command("ensure")
@click.argument("distros", nargs=-1)
@click.option("--arch", "arches", multiple=True, metavar="ARCH",
              help="Only this arch (repeatable; x86_64, ppc64le, or amd64/ppc64el). "
                   "Default: every arch the distro's builder.yaml lists.")
@click.option("--all-runnable", is_flag=True,
              help="Every distro that can be bootstrapped on this machine (runnable_here).")
@click.option("--pull-timeout", type=float, default=120.0,
              show_default=True, help="Seconds to wait on a registry before giving up.")
@json_option
@pass_app
def ensure(app: App, distros: tuple[str, ...], arches: tuple[str, ...], all_runnable: bool,
           pull_timeout: float, as_json: bool) -> None:
    """Build the builder images that are missing; a current one is reused at no cost.

    \b
      giftbox builder ensure debian12 --arch x86_64
      giftbox builder ensure debian11 debian12 --arch ppc64le     (emulated: slow)
      giftbox builder ensure --all-runnable --json
    \b
    Bootstrapping needs mmdebstrap for Debian and qemu-user-static + binfmt-support for a
    foreign arch. Builders without runnable_here need a registry: point the engine at a mirror,
    or `docker load` the base image and tag it as the error message says.
    """
    from giftbox import builders  # lazily: the Docker SDK costs ~0.3 s to import

    settings = app.settings
    catalog = Catalog.load(settings)
    known = catalog.distros
    names = list(distros)
    if all_runnable:
        names += [n for n, d in known.items() if d.runnable_here and n not in names]
    if not names:
        raise click.UsageError("name at least one distro, or --all-runnable "
                               f"(known: {', '.join(sorted(known))})")
    wanted = [Arch.parse(a) for a in arches]
    targets = []
    for name in names:
        dist = catalog.distro(name)
        for arch in wanted or list(dist.arches):
            if not dist.supports(arch):
                raise BuilderError(f"{name} has no {arch.value} builder",
                                   hint="its builder.yaml lists: "
                                        + ", ".join(a.value for a in dist.arches))
            targets.append((dist, arch))
    results = []
    for dist, arch in targets:
        image = builders.ensure(dist, arch, settings, app.reporter, pull_timeout=pull_timeout)
        results.append(image)
        if not as_json:
            click.echo(f"{'built' if image.built else 'ok':<6}{image.tag}  {image.image_id[:19]}")
    if as_json:
        emit_json([r.as_dict() for r in results])


@builder.command("prune")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
@pass_app
def prune(app: App, dry_run: bool, as_json: bool) -> None:
    """Remove builder and base images whose definition has changed since they were built.

    \b
      giftbox builder prune --dry-run
      giftbox builder prune --json
    \b
    Also removes giftbox containers whose giftbox process died without cleaning up (SIGKILL).
    Images still used by a container are kept and reported.
    """
    from giftbox import builders  # lazily: the Docker SDK costs ~0.3 s to import

    result = builders.prune(app.settings, dry_run=dry_run, reporter=app.reporter)
    if as_json:
        emit_json(result.as_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for tag in result.removed:
        click.echo(f"{verb} {tag}")
    for name in result.removed_containers:
        click.echo(f"{verb} container {name}")
    for kept in result.kept:
        click.echo(f"kept {kept['tag']}: {kept['reason']}")
    if not (result.removed or result.removed_containers or result.kept):
        click.echo("nothing to prune")
