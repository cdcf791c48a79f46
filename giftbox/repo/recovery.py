"""Recovery: finishing, under the channel lock and before anything else, what an interrupted
change journaled (step 2 of the transaction in publish.py's docstring), and writing a change's
records to the build records exactly once, keyed by its id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from giftbox.errors import RepoError, StateError
from giftbox.repo.pool import Pool
from giftbox.repo.routing import link_all
from giftbox.repo.state import JOURNAL, ChannelState, fold_journal, load_journal, save_state
from giftbox.settings import Settings


def recover(settings: Settings, root: Path, state: ChannelState, pool: Pool) -> None:
    """Finish what an interrupted change journaled, before anything else happens.

    The journal is rolled forward into ``state.json`` (and its records into the build
    records, exactly once) and only then removed, so it never has to be merged with the
    next change's: whatever sequence of kills came before, every entry that was journaled or
    live is in the state afterwards (unless the change was its explicit withdrawal).
    """
    journal = load_journal(root)
    if journal is None:
        return
    if journal.serial == 0 or journal.serial > state.serial:
        fold_journal(journal, state)
        for e in journal.entries:  # the links precede the journal; a hand-made gap is refilled
            missing = [rel for rel in e.paths if not (root / rel).is_file()]
            if missing:
                try:
                    obj = pool.load(e.digest)
                except RepoError:
                    raise StateError(
                        f"{root / JOURNAL} adds {e.filename}, but neither {missing[0]} nor its "
                        f"pool object {e.digest[:16]}… exists",
                        hint="restore the pool from backup, or publish the file again") \
                        from None
                link_all(pool, obj, root, missing)
        save_state(settings, state)
    apply_records(settings, journal.txid, journal.records)
    (root / JOURNAL).unlink()


def clean_strays(root: Path) -> None:
    """Temp files of writers that died (under the lock, every temp file is someone dead's)."""
    for d in (root, root / ".cache"):
        if d.is_dir():
            for stray in d.glob(".*.json.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    stray.unlink()


def apply_records(settings: Settings, txid: str, intents: Sequence[dict[str, Any]]) -> list[Any]:
    """Write a change's records (promotions, events, publishes) in one records transaction
    marked with the change's id: a journal replayed twice records once."""
    if not intents:
        return []
    from giftbox.records import open_records

    def write(db: Any) -> list[Any]:
        out = []
        for i in intents:
            args = dict(i["args"])
            if i["op"] == "promotion":
                args["scope"] = [tuple(s) for s in args.get("scope", [])]
                out.append(db.record_promotion(**args))
            elif i["op"] == "event":
                out.append(db.record_event(**args))
            else:
                args["items"] = [tuple(x) for x in args["items"]]
                out.append(db.record_publishes(**args))
        return out

    with open_records(settings) as db:
        return db.once(f"txn:{txid}", lambda: write(db)) or []

