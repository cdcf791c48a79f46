"""``giftbox wheelhouse export|import|serve``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.distros import Arch
from giftbox.errors import BuildError
from giftbox.targets import Catalog

if TYPE_CHECKING:
    from giftbox.wheelhouse import Target

F = TypeVar("F", bound=Callable[..., Any])


@cli.group()
def wheelhouse() -> None:
    """The wheelhouse of a release on one target (distro, arch, Python ABI).

    \b
    Every wheel the target's locks need, fetched or built once (a wheel built from an sdist
    under qemu can take an hour) and reused by every project of the release. It travels as a
    PEP 503 index directory with hashes:
    \b
      giftbox wheelhouse export --distro debian12 --arch ppc64le DIR    (on a native runner)
      giftbox wheelhouse serve  --distro debian12 --arch ppc64le        (or serve it)
      giftbox wheelhouse import --distro debian12 --arch ppc64le DIR|URL
    \b
    An import checks every wheel first and adds nothing unless all pass: its sha256 is in a
    lock of the target (or it was built from the sdist that lock pins), and its tags fit the
    target's arch, Python and ABI.
    """


def _target(app: App, distro: str, arch: str, release: str | None) -> Target:
    from giftbox import wheelhouse as wh

    dist = Catalog.load(app.settings).distro(distro)
    a = Arch.parse(arch)
    if release is None:
        found = wh.releases(app.settings, dist, a)
        if len(found) != 1:
            raise BuildError(f"which release? locks for {dist.name}/{a.value} name "
                             + (", ".join(found) if found else "none"),
                             hint="pass --release (e.g. --release 2026.1)")
        release = found[0]
    return wh.Target(release, dist, a)


def _options(f: F) -> F:
    for option in (
            click.option("--release", help="The release (default: the one the target's locks "
                                           "name)."),
            click.option("--arch", required=True, help="x86_64, ppc64le"),
            click.option("--distro", required=True, help="e.g. debian12")):
        f = option(f)
    return f


@wheelhouse.command("export")
@click.argument("dest", type=click.Path(path_type=Path))
@_options
@json_option
@pass_app
def export_cmd(app: App, dest: Path, distro: str, arch: str, release: str | None,
               as_json: bool) -> None:
    """Write the target's wheelhouse to DEST as a PEP 503 index directory with hashes."""
    from giftbox import wheelhouse as wh

    target = _target(app, distro, arch, release)
    result = wh.export(app.settings, target, dest)
    if as_json:
        emit_json({"target": target.as_dict(), **result.as_dict()})
        return
    click.echo(f"{result.wheels} wheels ({result.built} built from sdist) -> {dest}")
    for name in result.skipped:
        click.echo(f"  not exported (no lock of {target.name} pins it): {name}")


@wheelhouse.command("import")
@click.argument("source")
@_options
@json_option
@pass_app
def import_cmd(app: App, source: str, distro: str, arch: str, release: str | None,
               as_json: bool) -> None:
    """Add an exported wheelhouse (a directory or an http(s) URL) after checking every wheel
    against the target's locks and tags; a wheel that fails refuses the whole import."""
    from giftbox import wheelhouse as wh

    target = _target(app, distro, arch, release)
    result = wh.import_(app.settings, target, source)
    if as_json:
        emit_json({"target": target.as_dict(), **result.as_dict()})
        return
    click.echo(f"{len(result.added)} wheels added, {len(result.present)} already present "
               f"-> {wh.directory(app.settings, target)}")


@wheelhouse.command("serve")
@_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8503, show_default=True)
@pass_app
def serve_cmd(app: App, distro: str, arch: str, release: str | None, host: str,
              port: int) -> None:
    """Serve the target's wheelhouse (exported afresh) over HTTP until interrupted; builders
    elsewhere `giftbox wheelhouse import` its URL."""
    import tempfile

    from giftbox import wheelhouse as wh

    target = _target(app, distro, arch, release)
    with tempfile.TemporaryDirectory(prefix="giftbox-wheelhouse-") as tmp:
        root = Path(tmp) / target.name
        result = wh.export(app.settings, target, root)
        with wh.serving(root, host, port) as url:
            click.echo(f"serving {result.wheels} wheels of {target.name} at {url}", err=True)
            click.echo(f"  giftbox wheelhouse import --distro {target.distro.name} --arch "
                       f"{target.arch.value} {url}", err=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
