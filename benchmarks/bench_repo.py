"""Publishing and promoting one package in channels of 1,000: giftbox beside aptly, same run.

    python benchmarks/bench_repo.py [--packages 1000] [--rounds 5]

Not part of the test suite. Synthetic tiny .debs are generated once (cached under
``$TMPDIR/giftbox-bench/debs-<n>``). Both tools sign with the same key from the same GNUPGHOME
and publish amd64 only. giftbox is timed twice: the ``publish()`` call in-process, and the
``giftbox publish`` command (interpreter start-up and imports included), which is what aptly's
figure (``aptly repo add`` + ``aptly publish update``, two processes) compares with.

Promotion: one new package promoted from a channel of 1,000 into another of 1,000 (giftbox
``promote()`` and ``giftbox promote``: hard links, the target re-indexed and re-signed, the
promotion recorded), beside aptly's way, a snapshot of the repository switched in for the
published stable distribution (``aptly snapshot create`` + ``aptly publish switch``; the
switch alone is shown too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from plumbum import local

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from giftbox.keys import gnupg_home, init_key  # noqa: E402
from giftbox.repo import publish, publish_objects  # noqa: E402
from giftbox.repo.promote import promote  # noqa: E402
from giftbox.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "giftbox-bench@giftbox.invalid"


def make_deb(out: Path, name: str, version: str) -> Path:
    tree = out / f".build-{name}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr" / "share" / name).mkdir(parents=True)
    (tree / "usr" / "share" / name / "README").write_text(f"{name} {version}\n")
    (tree / "DEBIAN" / "control").write_text(textwrap.dedent(f"""\
        Package: {name}
        Version: {version}
        Architecture: amd64
        Maintainer: giftbox bench <bench@giftbox.invalid>
        Description: synthetic benchmark package
         Nothing to see.
        """))
    deb = out / f"{name}_{version}_amd64.deb"
    local["dpkg-deb"]["-Zgzip", "--root-owner-group", "--build", str(tree), str(deb)].run()
    shutil.rmtree(tree)
    return deb


def synthetic_debs(n: int) -> list[Path]:
    cache = Path(tempfile.gettempdir()) / "giftbox-bench" / f"debs-{n}"
    done = cache / ".complete"
    if not done.exists():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        start = time.monotonic()
        for i in range(n):
            make_deb(cache, f"bench-pkg{i:04d}", "1.0-1~deb12")
        done.write_text("")
        print(f"generated {n} debs in {time.monotonic() - start:.1f}s (cached in {cache})")
    return sorted(cache.glob("*.deb"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for tool in ("dpkg-deb", "apt-ftparchive", "gpg", "aptly"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (aptly: apt-get install aptly)")

    base = Path(tempfile.mkdtemp(prefix="giftbox-bench-"))
    try:
        debs = synthetic_debs(args.packages)
        (base / "new").mkdir()
        new = [make_deb(base / "new", f"bench-new{i}", "1.0-1~deb12")
               for i in range(args.rounds * 3)]
        (base / "promo").mkdir()
        promo = [make_deb(base / "promo", f"bench-promo{i}", "1.0-1~deb12")
                 for i in range(args.rounds * 3)]

        # --- giftbox ------------------------------------------------------------------
        tree = base / "tree"
        (tree / "specs").mkdir(parents=True)
        (tree / "builders").symlink_to(ROOT / "builders")
        (tree / "channels.yaml").write_text(
            f"channels:\n  bench:\n    key: {KEY}\n    keep: 3\n    distros: [debian12]\n"
            "    arches: [x86_64]\n"
            f"  bench-stable:\n    key: {KEY}\n    keep: 3\n    distros: [debian12]\n"
            "    arches: [x86_64]\n")
        env = {"GIFTBOX_ROOT": str(tree), "GIFTBOX_STATE": str(base / "state")}
        settings = Settings.resolve(root=tree, env={**env, "HOME": str(base)})
        key, _ = init_key(settings, KEY, channel="bench")
        start = time.monotonic()
        publish("bench", debs, settings)
        initial = time.monotonic() - start
        in_process = []
        for deb in new[: args.rounds]:
            start = time.monotonic()
            publish("bench", [deb], settings)
            in_process.append(time.monotonic() - start)
        cli = local[sys.executable]["-c", "from giftbox.cli import main; main()"].with_env(**env)
        via_cli = []
        for deb in new[args.rounds: 2 * args.rounds]:
            start = time.monotonic()
            cli("publish", "bench", str(deb))
            via_cli.append(time.monotonic() - start)

        # Promotion: bench-stable starts with the same 1,000 (linked, not copied).
        first = publish("bench", debs, settings)
        publish_objects("bench-stable", [e.digest for e in first.unchanged + first.added],
                        settings)
        publish("bench", promo[: 2 * args.rounds], settings)
        promote_in_process = []
        for deb in promo[: args.rounds]:
            start = time.monotonic()
            promote(settings, deb.name.split("_")[0], "bench", "bench-stable")
            promote_in_process.append(time.monotonic() - start)
        promote_cli = []
        for deb in promo[args.rounds: 2 * args.rounds]:
            start = time.monotonic()
            cli("promote", deb.name.split("_")[0], "--from", "bench", "--to", "bench-stable")
            promote_cli.append(time.monotonic() - start)

        # --- aptly, same key, same keyring -------------------------------------------
        conf = base / "aptly.conf"
        conf.write_text(json.dumps({"rootDir": str(base / "aptly"), "gpgProvider": "gpg",
                                    "architectures": ["amd64"], "downloadConcurrency": 1}))
        aptly = local["aptly"].with_env(GNUPGHOME=str(gnupg_home(settings)))
        a = aptly[f"-config={conf}"]
        a("repo", "create", "-distribution=bookworm", "-component=main", "bench")
        start = time.monotonic()
        a("repo", "add", "-remove-files=false", "bench", *map(str, debs))
        a("publish", "repo", f"-gpg-key={key.fingerprint}", "-architectures=amd64", "bench")
        aptly_initial = time.monotonic() - start
        aptly_times = []
        for deb in new[2 * args.rounds:]:
            start = time.monotonic()
            a("repo", "add", "bench", str(deb))
            a("publish", "update", f"-gpg-key={key.fingerprint}", "bookworm")
            aptly_times.append(time.monotonic() - start)

        # aptly promotion: publish a snapshot as "stable", then switch it to a new snapshot
        # holding one more package.
        a("snapshot", "create", "stable-0", "from", "repo", "bench")
        a("publish", "snapshot", f"-gpg-key={key.fingerprint}", "-architectures=amd64",
          "-distribution=bookworm", "stable-0", "stable")
        aptly_promote = []
        aptly_switch = []
        for n, deb in enumerate(promo[2 * args.rounds:], start=1):
            a("repo", "add", "bench", str(deb))
            start = time.monotonic()
            a("snapshot", "create", f"stable-{n}", "from", "repo", "bench")
            mid = time.monotonic()
            a("publish", "switch", f"-gpg-key={key.fingerprint}", "bookworm", "stable",
              f"stable-{n}")
            end = time.monotonic()
            aptly_promote.append(end - start)
            aptly_switch.append(end - mid)
    finally:
        for home in (base / "state" / "gnupg",):
            if home.exists():
                local["gpgconf"]["--homedir", str(home), "--kill", "all"].run(retcode=None)
        shutil.rmtree(base, ignore_errors=True)

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.3f}s (min {min(xs):.3f}s, max {max(xs):.3f}s)"

    print(f"channel of {args.packages} packages, one new package added and published, signed "
          f"({args.rounds} rounds each; {os.cpu_count()} CPUs)")
    print(f"  giftbox publish() in-process : {fmt(in_process)}")
    print(f"  giftbox publish (command)    : {fmt(via_cli)}")
    print(f"  aptly repo add + publish update: {fmt(aptly_times)}")
    print(f"  initial publish of {args.packages}: giftbox {initial:.2f}s, aptly {aptly_initial:.2f}s")
    print(f"one package promoted between two channels of {args.packages} ({args.rounds} rounds)")
    print(f"  giftbox promote() in-process : {fmt(promote_in_process)}")
    print(f"  giftbox promote (command)    : {fmt(promote_cli)}")
    print(f"  aptly snapshot create + publish switch: {fmt(aptly_promote)}")
    print(f"  aptly publish switch alone   : {fmt(aptly_switch)}")


if __name__ == "__main__":
    main()
