"""``giftbox package``: package an existing build (a venv tree plus its manifest)."""

from __future__ import annotations

from pathlib import Path

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app
from giftbox.manifest import Manifest
from giftbox.package import COMPRESSORS, PACKAGER_CHOICES, build_package, check_conflicts
from giftbox.package.common import DEFAULT_MAINTAINER
from giftbox.targets import Catalog


@cli.command("package")
@click.argument("venv_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--manifest", "manifest_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The build's manifest (giftbox-manifest.json); names project and distro.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Where the package is written.")
@click.option("--packager", type=click.Choice(PACKAGER_CHOICES), default="auto",
              envvar="GIFTBOX_PACKAGER", show_default=True,
              help="native (dpkg-deb/rpmbuild), fpm, or auto (native when installed). "
                   "Env: GIFTBOX_PACKAGER.")
@click.option("--compression", type=click.Choice(COMPRESSORS), envvar="GIFTBOX_COMPRESSION",
              help="Default: the distro's (builders/<distro>/builder.yaml). "
                   "Env: GIFTBOX_COMPRESSION.")
@click.option("--compression-level", type=int, envvar="GIFTBOX_COMPRESSION_LEVEL",
              help="Default: the distro's for its own compression (xz 1 for a .deb), else "
                   "the tool's (zstd 3, xz 6, gzip 9). Env: GIFTBOX_COMPRESSION_LEVEL.")
@click.option("--maintainer", envvar="GIFTBOX_MAINTAINER", default=DEFAULT_MAINTAINER,
              show_default=True, help="Maintainer/Packager field. Env: GIFTBOX_MAINTAINER.")
@json_option
@pass_app
def package_cmd(app: App, venv_dir: Path, manifest_path: Path, out: Path, packager: str,
                compression: str | None, compression_level: int | None, maintainer: str,
                as_json: bool) -> None:
    """Turn VENV_DIR (a venv exactly as installed at the manifest's prefix) into a .deb or
    .rpm for the manifest's distro, lint it, and print its path.

    Dependencies are resolved on this host (dpkg-shlibdeps, apt-cache): run it on the target
    distro, or let `giftbox build` package inside the builder.

    \b
      giftbox package build/nova-venv --manifest build/nova-venv/giftbox-manifest.json
    """
    settings = app.settings
    manifest = Manifest.read(manifest_path)
    catalog = Catalog.load(settings)
    spec = catalog.spec(manifest.project)
    # Refuse early when another spec of this tree would install the same files.
    check_conflicts(catalog.specs(), family=manifest.family)
    distro = catalog.distro(manifest.distro)
    artifact = build_package(venv_dir, manifest, spec, distro, out, packager=packager,
                             compression=compression, compression_level=compression_level,
                             reporter=app.reporter, maintainer=maintainer)
    if as_json:
        data = artifact.as_dict()
        data["manifest"] = None  # it is the input; keep the result short
        emit_json(data)
    else:
        click.echo(f"{artifact.path}  {artifact.name} {artifact.version} {artifact.arch} "
                   f"{artifact.size / 1e6:.1f} MB sha256:{artifact.sha256[:16]}")
