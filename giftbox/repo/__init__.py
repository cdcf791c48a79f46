"""The repository layer: channels, the content-addressed pool, signed atomic publishing.

Public API (everything else is internal):

- ``load_channels(settings)`` / ``get_channel(settings, name)``: ``channels.yaml`` as frozen
  ``Channel`` values; an unknown name is a RepoError listing the known ones.
- ``publish(channel, files, settings, reporter, distro=None)``: add .deb/.rpm files and
  republish the repositories they belong to, atomically.
- ``publish_objects(channel, digests, settings, reporter)``: add pool objects by sha256 (what
  ``promote`` does: hard links, no bytes copied), then republish.
- ``republish(channel, settings, reporter)``: regenerate and re-sign everything.
- ``withdraw(channel, filenames, settings, reporter)`` / ``change(channel, plan, ...,
  record=)``: remove entries (and add pool objects) under the channel lock, then republish,
  with the records ``record`` returns, as one journaled transaction (publish.py's docstring):
  promotion, prune and rollback.
- ``giftbox.repo.promote``: promote, ``move`` (a list of ``Move``s into one channel, all or
  none: release promotion), rollback, channel history; and, from ``giftbox.repo.retention``,
  prune, gc, pin/unpin (imported on use: they read the build records database).
- ``giftbox.repo.vercmp``: dpkg's and rpm's version order.
- ``channel_state(settings, name)``: the ``ChannelState`` recorded in
  ``repos/<channel>/state.json`` (entries by filename, each with its pool digest).
- ``Pool(settings.repos_dir).load(digest)``: the ``PoolObject`` stored under a digest.

Inside: ``publish`` is the transaction; ``state`` the channel's state.json, journal and lock;
``recovery`` the roll-forward of an interrupted change; ``routing`` which repository a package
goes to; ``generations`` the index generations (built by ``apt`` and ``yum``, signed, swapped);
``interrupts`` signals and closed pipes; ``selection`` which entries a promotion takes;
``gates`` the evidence a channel requires; ``pool`` and ``channels`` as named.

These modules are light; the tools' wrappers (``giftbox.host``, gzip/lzma, the apt and yum
writers) are imported on first use so that ``giftbox`` starts fast.
"""

from __future__ import annotations

from giftbox.repo.channels import AptTarget, Channel, YumTarget, get_channel, load_channels
from giftbox.repo.pool import Pool, PoolObject
from giftbox.repo.publish import (
    Artifact,
    ChannelState,
    Entry,
    PublishResult,
    change,
    channel_state,
    public_key_path,
    publish,
    publish_objects,
    republish,
    withdraw,
)

__all__ = ["AptTarget", "Artifact", "Channel", "ChannelState", "Entry", "Pool", "PoolObject",
           "PublishResult", "YumTarget", "change", "channel_state", "get_channel",
           "load_channels", "public_key_path", "publish", "publish_objects", "republish",
           "withdraw"]
