"""``giftbox verify`` (evidence for the gates) and ``giftbox sbom``."""

from __future__ import annotations

from pathlib import Path

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app


@cli.command("verify")
@click.argument("project")
@click.option("--channel", required=True, metavar="CHANNEL",
              help="The channel holding the candidate (installed from it over HTTP).")
@click.option("--distro", help="Only this distro's candidate (default: every one held).")
@click.option("--arch", help="Only this architecture's candidate.")
@click.option("--check", "checks", multiple=True,
              type=click.Choice(["install", "upgrade", "migrate", "vulns"]),
              help="The check to run (repeatable; default: all four).")
@click.option("--against", metavar="CHANNEL",
              help="The channel the candidate is headed for: upgrade and migrate start from "
                   "the version it holds, vulns applies its allow: list. Default: the one "
                   "channel that requires these checks.")
@json_option
@pass_app
def verify_cmd(app: App, project: str, channel: str, distro: str | None, arch: str | None,
               checks: tuple[str, ...], against: str | None, as_json: bool) -> None:
    """Install, upgrade, migrate and audit PROJECT's candidate from CHANNEL; record verdicts.

    \b
    Each check runs in a clean container of the target's base image, installing from the
    channel with apt over loopback HTTP and trusting only the channel's key; its verdict is
    recorded on the artifact's exact sha256, with its log and timings, for the gates of
    channels.yaml (requires:).
    \b
      giftbox verify keystone --channel staging --distro debian12 --arch x86_64
      giftbox verify keystone --channel staging --check migrate --against stable --json
    """
    from giftbox.verify import VerifyFailed, verify

    try:
        results = verify(app.settings, project, channel, distro=distro, arch=arch,
                         checks=checks, against=against, reporter=app.reporter)
    except VerifyFailed as exc:
        if not as_json:
            raise
        # One JSON document: the verdicts, and the error the CLI would otherwise add.
        emit_json({"passed": False, "results": [r.as_dict() for r in exc.results],
                   "error": exc.message, "exit_code": exc.exit_code})
        click.echo("error: " + exc.render(), err=True)
        raise SystemExit(exc.exit_code) from None
    if as_json:
        emit_json({"passed": True, "results": [r.as_dict() for r in results]})
        return
    for r in results:
        click.echo(f"{r.check:8} pass  {r.filename} ({r.distro}/{r.arch}) in {r.duration:.1f}s"
                   f"  verdict #{r.verdict_id}: {r.detail}")
        for step, seconds in r.timings.items():
            click.echo(f"           {seconds:8.2f}s  {step}")


@cli.command("sbom")
@click.argument("artifact")
@click.option("--channel", metavar="CHANNEL",
              help="Print the SBOM published beside ARTIFACT (a filename) in CHANNEL.")
@pass_app
def sbom_cmd(app: App, artifact: str, channel: str | None) -> None:
    """Print the CycloneDX SBOM of ARTIFACT (a .deb path, or a filename with --channel).

    \b
      giftbox sbom out/giftbox-keystone_29.0.0-1~deb12_amd64.deb
      giftbox sbom giftbox-keystone_29.0.0-1~deb12_amd64.deb --channel staging
    """
    from giftbox.errors import PackageError
    from giftbox.sbom import build_sbom, for_entry, validate

    if channel is None:
        path = Path(artifact)
        if not path.is_file():
            raise PackageError(f"{artifact}: no such file",
                               hint="give a .deb path, or a filename with --channel CHANNEL")
        text = build_sbom(path)
        validate(text)
        click.echo(text, nl=False)
        return
    import json

    from giftbox.repo import channel_state, get_channel

    ch = get_channel(app.settings, channel)
    entry = channel_state(app.settings, ch.name).entries.get(artifact)
    if entry is None:
        raise PackageError(f"channel '{ch.name}' holds no {artifact}",
                           hint=f"giftbox channel show {ch.name} lists what it holds")
    click.echo(json.dumps(for_entry(app.settings, ch.name, entry), indent=2))
