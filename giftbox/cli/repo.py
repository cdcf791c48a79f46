"""``giftbox publish``, ``promote``, ``prune``, ``pin``/``unpin``, ``channel show|history``,
``keys init``.

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

    # Recorded in the same transaction as the change (channel history lists it).
    result = publish(channel, list(files), app.settings, app.reporter, distro=distro,
                     record=True)
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


def _moved_line(e: object, arrow: str) -> str:
    return (f"  {getattr(e, 'filename', '')}  {getattr(e, 'version', '')}  "
            f"{getattr(e, 'distro', '')}/{getattr(e, 'arch', '')}  "
            f"sha256:{getattr(e, 'digest', '')[:16]}  {arrow}")


@cli.command("promote")
@click.argument("project", required=False)
@click.option("--from", "from_channel", metavar="CHANNEL",
              help="The channel the tested artifacts are in (e.g. nightly).")
@click.option("--to", "to_channel", required=True, metavar="CHANNEL",
              help="The channel to promote into (or, with --rollback, to roll back).")
@click.option("--version", help="Promote this version (full, without the distro tag, or the "
                                "upstream version) instead of the highest.")
@click.option("--distro", help="Only the artifacts for this distro.")
@click.option("--arch", help="Only the artifacts for this architecture (x86_64, amd64, ...).")
@click.option("--all", "all_projects", is_flag=True,
              help="Every project present in the source channel, at its highest version.")
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would move.")
@click.option("--reason", default="", help="Why: recorded, and shown by channel history.")
@click.option("--rollback", is_flag=True,
              help="Bring back the state of --to before its last promotion (of PROJECT).")
@click.option("--release", metavar="RELEASE",
              help="Every project and target of this release (the specs' release:) that the "
                   "source holds, all or none, in one transaction.")
@click.option("--force", is_flag=True,
              help="Promote past the target's gate (channels.yaml requires:); needs --reason, "
                   "and is recorded with what evidence was missing.")
@json_option
@pass_app
def promote_cmd(app: App, project: str | None, from_channel: str | None, to_channel: str,
                version: str | None, distro: str | None, arch: str | None,
                all_projects: bool, dry_run: bool, reason: str, rollback: bool,
                release: str | None, force: bool, as_json: bool) -> None:
    """Move the exact artifacts of PROJECT, by digest, from one channel into another.

    \b
    No bytes are copied: the target links the same pool objects the source holds, so it
    serves exactly what was tested. By default, for each package of PROJECT, the highest
    version per distro and arch in the source channel (dpkg / rpm version order).
    \b
      giftbox promote nova --from nightly --to staging
      giftbox promote nova --from staging --to stable --version 33.0.0-1 --reason "CI #812"
      giftbox promote --all --from staging --to stable --dry-run
      giftbox promote --rollback --to stable nova --reason "breaks live migration"
      giftbox promote --release 2026.1 --from staging --to stable
    """
    from giftbox.errors import RepoError

    if rollback:
        from giftbox.repo.promote import rollback as do_rollback

        if from_channel or version or distro or arch or all_projects or dry_run:
            raise RepoError("--rollback takes only --to, an optional PROJECT and --reason",
                            hint="it restores the channel's state before its last promotion")
        rb = do_rollback(app.settings, to_channel, project, reason=reason,
                         reporter=app.reporter)
        if as_json:
            emit_json(rb.as_dict())
            return
        click.echo(f"rolled back promotion #{rb.promotion_id} of {rb.project} in "
                   f"'{rb.channel}' (recorded as #{rb.rollback_id}, by {rb.who})")
        for e in rb.withdrawn:
            click.echo(_moved_line(e, f"withdrawn from {rb.channel}"))
        for e in rb.restored:
            click.echo(_moved_line(e, f"restored into {rb.channel}"))
        click.echo(f"{rb.channel} now holds: "
                   + (", ".join(e.filename for e in rb.now) or "none of it"))
        return
    if not from_channel:
        raise RepoError("--from CHANNEL is required to promote",
                        hint="e.g. giftbox promote nova --from nightly --to stable")
    from giftbox.repo.promote import promote

    results = promote(app.settings, project, from_channel, to_channel, version=version,
                      distro=distro, arch=arch, all_projects=all_projects, dry_run=dry_run,
                      reason=reason, reporter=app.reporter, release=release, force=force)
    if as_json:
        emit_json({"dry_run": dry_run, "promotions": [r.as_dict() for r in results]})
        return
    verb = "would move" if dry_run else "moved"
    for r in results:
        head = f"{r.project}: {r.from_channel} -> {r.to_channel}"
        if r.promotion_id is not None:
            head += f" (promotion #{r.promotion_id}, by {r.who})"
        click.echo(head + (" [dry run: nothing changed]" if dry_run else ""))
        for e in r.moved:
            click.echo(_moved_line(e, verb))
        for e in r.unchanged:
            click.echo(_moved_line(e, f"already in {r.to_channel}"))
        if not r.moved:
            click.echo(f"  nothing to move: {r.to_channel} already has it")


@cli.command("prune")
@click.argument("channel_name", metavar="CHANNEL", required=False)
@click.option("--keep", type=click.IntRange(min=1),
              help="Versions to keep per package, distro and arch (default: the channel's "
                   "keep in channels.yaml). Pinned versions are kept on top.")
@click.option("--gc", "collect", is_flag=True,
              help="Also delete pool objects that no channel references any more, and "
                   "forget the pool's xz block verdicts (blocks of .debs it has read) that "
                   "no publish used for 30 days.")
@click.option("--min-age", type=click.IntRange(min=0), default=3600, show_default=True,
              help="With --gc: leave pool objects younger than this many seconds (a publish "
                   "may be about to link them).")
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would go.")
@click.option("--reason", default="", help="Recorded in the channel's history.")
@json_option
@pass_app
def prune_cmd(app: App, channel_name: str | None, keep: int | None, collect: bool,
              min_age: float, dry_run: bool, reason: str, as_json: bool) -> None:
    """Withdraw old versions from CHANNEL, keeping the N highest and every pinned version.

    \b
    Only the channel's entries go; the bytes stay in the pool while any channel (or a
    rollback) may want them. --gc deletes pool objects no channel references.
    \b
      giftbox prune nightly --keep 7 --dry-run
      giftbox prune nightly --keep 7
      giftbox prune --gc
    """
    from giftbox.errors import RepoError
    from giftbox.repo.archive import BlockVerdicts
    from giftbox.repo.promote import gc, prune

    if channel_name is None and not collect:
        raise RepoError("name the CHANNEL to prune (or pass --gc to collect the pool)")
    payload: dict[str, object] = {}
    if channel_name is not None:
        pruned = prune(app.settings, channel_name, keep, dry_run=dry_run, reason=reason,
                       reporter=app.reporter)
        payload["prune"] = pruned.as_dict()
        if not as_json:
            verb = "would withdraw" if dry_run else "withdrew"
            click.echo(f"{pruned.channel}: {verb} {len(pruned.withdrawn)} entr"
                       f"{'y' if len(pruned.withdrawn) == 1 else 'ies'} (keep {pruned.keep})"
                       + (" [dry run: nothing changed]" if dry_run else ""))
            for e in pruned.withdrawn:
                still = pruned.elsewhere.get(e.filename)
                click.echo(f"  {e.filename}" + (f"  (still in {', '.join(still)})"
                                                if still else ""))
            for e in pruned.pinned:
                click.echo(f"  kept (pinned) {e.filename}")
    if collect:
        collected = gc(app.settings, dry_run=dry_run, min_age=min_age, reason=reason)
        payload["gc"] = collected.as_dict()
        if not as_json:
            verb = "would delete" if dry_run else "deleted"
            freed = collected.as_dict()["freed_bytes"]
            click.echo(f"pool: {verb} {len(collected.removed)} object(s), {freed} bytes; "
                       f"{collected.referenced} referenced, {collected.young} too young; "
                       f"{collected.verdicts} xz block verdict(s) unused for "
                       f"{BlockVerdicts.KEEP_DAYS} days {'would be ' if dry_run else ''}"
                       "forgotten")
            for r in collected.removed:
                click.echo(f"  {r['filename']}  sha256:{str(r['digest'])[:16]}")
    if as_json:
        emit_json(payload)


@cli.command("pin")
@click.argument("channel_name", metavar="CHANNEL")
@click.argument("package")
@click.argument("version")
@click.option("--reason", default="", help="Why (e.g. which deployment depends on it).")
@json_option
@pass_app
def pin_cmd(app: App, channel_name: str, package: str, version: str, reason: str,
            as_json: bool) -> None:
    """Keep PACKAGE VERSION in CHANNEL: prune never withdraws a pinned version.

    \b
      giftbox pin stable giftbox-nova 33.0.0-1~deb12 --reason "prod-eu deploys it"
    """
    from giftbox.repo.promote import pin

    p = pin(app.settings, channel_name, package, version, reason=reason)
    if as_json:
        emit_json(p.as_dict())
        return
    click.echo(f"pinned {p.package} {p.version} in {p.channel} (by {p.who})")


@cli.command("unpin")
@click.argument("channel_name", metavar="CHANNEL")
@click.argument("package")
@click.argument("version", required=False)
@click.option("--reason", default="", help="Recorded in the channel's history.")
@json_option
@pass_app
def unpin_cmd(app: App, channel_name: str, package: str, version: str | None, reason: str,
              as_json: bool) -> None:
    """Drop the pin(s) of PACKAGE (of VERSION only, when given) in CHANNEL."""
    from giftbox.repo.promote import unpin

    gone = unpin(app.settings, channel_name, package, version, reason=reason)
    if as_json:
        emit_json({"unpinned": [p.as_dict() for p in gone]})
        return
    for p in gone:
        click.echo(f"unpinned {p.package} {p.version} in {p.channel}")


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
    from giftbox.repo.gates import entry_verdicts, verdict_cell

    ch = get_channel(app.settings, name)
    state = channel_state(app.settings, name)
    entries = [state.entries[f] for f in sorted(state.entries)]
    verdicts = entry_verdicts(app.settings, entries)  # giftbox verify's evidence per artifact
    if as_json:
        emit_json({"channel": name, "description": ch.description, "key": state.key,
                   "keep": ch.keep, "updated": state.updated, "pending": state.pending,
                   "distros": [d.name for d in ch.distros],
                   "public_key": str(public_key_path(app.settings, name)),
                   "generations": state.generations,
                   "requires": list(ch.requires),
                   "entries": [{**e.as_dict(), "verdicts": verdicts.get(e.filename, {})}
                               for e in entries]})
        return
    click.echo(f"channel {name}: {len(entries)} package(s), serves "
               f"{', '.join(d.name for d in ch.distros)}")
    if state.pending:
        click.echo("pending (an interrupted publish; the next publish finishes it): "
                   + ", ".join(state.pending))
    if not entries:
        return
    rows = [("PACKAGE", "VERSION", "ARCH", "DISTRO", "DIGEST", "VERDICTS")] + [
        (e.name, e.version, e.arch, e.distro, e.digest[:16],
         verdict_cell(verdicts.get(e.filename, {}), ch.requires)) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@channel.command("history")
@click.argument("name")
@json_option
@pass_app
def channel_history(app: App, name: str, as_json: bool) -> None:
    """What happened to CHANNEL: publishes, promotions in and out, rollbacks, prunes, pins,
    with who, when and why (from the build records).

    \b
      giftbox channel history stable
    """
    from giftbox.repo.promote import history

    events = history(app.settings, name)
    if as_json:
        emit_json({"channel": name, "events": [e.as_dict() for e in events]})
        return
    if not events:
        click.echo(f"no recorded history for {name}")
        return
    for e in events:
        why = f"  ({e.reason})" if e.reason else ""
        click.echo(f"{e.at}  {e.kind:<11} {e.who:<12} {e.summary}{why}")


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
