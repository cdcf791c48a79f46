"""The file primitives the caches share, under the concurrency nightly gives them: its builds
are threads of one process, and two of them saved the same cache file (the package stage's
``elf-machines.json``) through one temp name, ``.<name>.<pid>.tmp``. One writer's rename took
the other's temp file away: FileNotFoundError, and a project failed for a cache."""

from __future__ import annotations

import threading
from pathlib import Path

from giftbox.files import InodeRecords, temp_beside, write_atomic
from giftbox.repo.state import write_json


def _race(workers: int, rounds: int, write: object) -> list[BaseException]:
    """Run ``write(worker, round)`` from ``workers`` threads released together; the errors."""
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def run(worker: int) -> None:
        start.wait()
        for n in range(rounds):
            try:
                write(worker, n)  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001 - the test reports them all
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_threads_of_one_process_replace_one_file_without_taking_each_others_temp(
        tmp_path: Path) -> None:
    target = tmp_path / "cache" / "elf-machines.json"
    payloads = {(w, n): f'{{"writer":{w},"round":{n}}}' + "x" * 4096
                for w in range(6) for n in range(150)}
    errors = _race(6, 150, lambda w, n: write_atomic(target, payloads[w, n]))
    assert errors == []
    assert target.read_text() in payloads.values()  # one writer's whole file, never a mix
    assert sorted(p.name for p in target.parent.iterdir()) == ["elf-machines.json"]


def test_inode_records_saved_by_concurrent_builds(tmp_path: Path) -> None:
    path = tmp_path / "package" / "elf-machines.json"

    def build(worker: int, n: int) -> None:
        records = InodeRecords(path)
        records.use(f"1:{worker}:{n}:0", worker)
        records.save()

    assert _race(4, 100, build) == []
    assert len(InodeRecords(path)._known) == 1


def test_repo_state_files_written_from_threads(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    assert _race(4, 50, lambda w, n: write_json(target, {"w": w, "n": n}, sync=False)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_temp_names_are_unique_and_look_like_what_the_sweeps_remove(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    names = {temp_beside(target) for _ in range(1000)}
    assert len(names) == 1000
    assert all(n.parent == tmp_path and n.match(".index.json.*.tmp") for n in names)
    # recovery.clean_strays globs ".*.json.*.tmp"; generations.prune_generations
    # ".<link>.*.tmp": both still match.
    assert all(n.match(".*.json.*.tmp") for n in names)
