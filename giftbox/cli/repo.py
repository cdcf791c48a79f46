"""``giftbox publish``, ``giftbox channel show``, ``giftbox keys init``.

The repository layer is imported inside each command: ``giftbox --help`` and unrelated
commands never pay for it.
"""

from __future__ import annotations

from pathlib import Path

import click

from giftbox.cli import App, cli, emit_json, json_option, pass_app


@cli.command("publish")
@click.argument("channel")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--distro", help="The distro the files are for, when their version carries no "
                               "distro tag (~deb12, .el9). Never overrides a tag.")
@json_option
@pass_app
def publish_cmd(app: App, channel: str, files: tuple[Path, ...], distro: str | None,
                as_json: bool) -> None:
    """Add .deb/.rpm FILES to CHANNEL and republish its repositories, signed and atomically.

    \b
    The distro (apt codename or yum repository) comes from the version's distro tag, the
    architecture from the package. Publishing a file the channel already holds is a no-op;
    a filename already published with other bytes is refused (bump the release).
    \b
      giftbox publish nightly out/nova_29.0.0~git20240601.1a2b3c4~deb12-1_amd64.deb
      giftbox publish nightly out/*.rpm --json
    """
    from giftbox.repo import publish

    result = publish(channel, list(files), app.settings, app.reporter, distro=distro)
    if as_json:
        emit_json(result.as_dict())
        return
    for e in result.added:
        click.echo(f"added      {e.filename}  ({e.distro}, sha256:{e.digest[:12]})")
    for e in result.unchanged:
        click.echo(f"unchanged  {e.filename}")
    if result.repositories:
        click.echo(f"published  {', '.join(result.repositories)} in {result.seconds:.2f}s, "
                   f"signed by {result.key}")
    click.echo(f"public key {result.public_key}")


@cli.group()
def channel() -> None:
    """Inspect channels (channels.yaml, published under repos/<channel>/)."""


@channel.command("show")
@click.argument("name")
@json_option
@pass_app
def channel_show(app: App, name: str, as_json: bool) -> None:
    """What CHANNEL holds: package, version, arch, distro, digest.

    \b
      giftbox channel show nightly
      giftbox channel show stable --json
    """
    from giftbox.repo import channel_state, get_channel, public_key_path

    ch = get_channel(app.settings, name)
    state = channel_state(app.settings, name)
    entries = [state.entries[f] for f in sorted(state.entries)]
    if as_json:
        emit_json({"channel": name, "description": ch.description, "key": state.key,
                   "keep": ch.keep, "updated": state.updated, "pending": state.pending,
                   "distros": [d.name for d in ch.distros],
                   "public_key": str(public_key_path(app.settings, name)),
                   "generations": state.generations,
                   "entries": [e.as_dict() for e in entries]})
        return
    click.echo(f"channel {name}: {len(entries)} package(s), serves "
               f"{', '.join(d.name for d in ch.distros)}")
    if state.pending:
        click.echo("pending (an interrupted publish; the next publish finishes it): "
                   + ", ".join(state.pending))
    if not entries:
        return
    rows = [("PACKAGE", "VERSION", "ARCH", "DISTRO", "DIGEST")] + [
        (e.name, e.version, e.arch, e.distro, e.digest[:16]) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@cli.group()
def keys() -> None:
    """Signing keys, kept in <state dir>/gnupg (never under repos/)."""


@keys.command("init")
@click.option("--channel", "channel_name", help="Only this channel's key (default: every "
                                                "channel in channels.yaml).")
@click.option("--algo", type=click.Choice(["rsa3072", "ed25519"]), default="rsa3072",
              show_default=True,
              help="rsa3072 works with every client giftbox serves; ed25519 is smaller but "
                   "unknown to Ubuntu 16.04's gpgv and CentOS 7.")
@click.option("--expire", default="3y", show_default=True,
              help="gpg expiry: 1y, 3y, 2030-01-01, or never.")
@json_option
@pass_app
def keys_init(app: App, channel_name: str | None, algo: str, expire: str,
              as_json: bool) -> None:
    """Create the signing key each channel names (no passphrase), printing its fingerprint.

    \b
    Idempotent: a channel whose key exists keeps it. To use an existing key instead, import
    it and name it in channels.yaml:
      gpg --homedir .giftbox/gnupg --import private.asc
      channels: { stable: { key: <FINGERPRINT>, ... } }
    """
    from giftbox.keys import gnupg_home, init_key
    from giftbox.repo import get_channel, load_channels

    channels = ([get_channel(app.settings, channel_name)] if channel_name
                else list(load_channels(app.settings).values()))
    results = []
    for ch in channels:
        key, created = init_key(app.settings, ch.key, channel=ch.name, algorithm=algo,
                                expire=expire)
        results.append({"channel": ch.name, "fingerprint": key.fingerprint, "uid": key.uid,
                        "created": created, "expires": key.expires})
    if as_json:
        emit_json({"gnupghome": str(gnupg_home(app.settings)), "keys": results})
        return
    for r in results:
        verb = "created" if r["created"] else "exists "
        click.echo(f"{verb} {r['channel']}: {r['fingerprint']}  {r['uid']}")
    click.echo(f"keyring: {gnupg_home(app.settings)} (keep it out of repos/ and back it up)")
