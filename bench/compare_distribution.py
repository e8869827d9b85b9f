"""Revocation distribution end to end: a 10,000-id delta from `revocation publish` to in
service on a node pulling a real nginx on loopback (docs/BENCHMARKS.md, "Revocation
sync").

The node is `python -m engine serve` with `revocation.source_url` at the default poll
interval (30 s; 1 s in the quick run).  Each round publishes a delta of new ids, then
asks the node (revocation_check, every 20 ms) until one of them is revoked.  Rows:

- publish to in service, against the poll interval: the wait for the next poll
  dominates (uniform over the interval when publications come at random: the rounds
  publish at evenly spread phases of it), so the median is about half an interval;
- from the fetch to in service (download, SHA-256, manifest and signature, install,
  reload), against the publish itself (build and sign): the node's own share, from its
  log's timestamps.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

from bench.harness import Row

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "bench" / "distribution"
DELTA_IDS = 10_000
SNAPSHOT_IDS = 1_000_000
FULL = {"interval_s": 30.0, "rounds": 4}  # 30 s: the engine's default poll interval
QUICK = {"interval_s": 1.0, "rounds": 2}


def _ids(path: pathlib.Path, start: int, count: int) -> pathlib.Path:
    """``count`` card ids from number ``start`` on, as a revocation input file."""
    numbers = np.arange(start, start + count)
    path.write_text("".join(f"card Q{n:08d}\n" for n in numbers))
    return path


async def _revoked(port: int, card: str) -> bool:
    from engine.wire.client import Client

    async with await Client.connect("127.0.0.1", port) as client:
        return bool((await client.revocation_check([card], []))["cards"][0])


def _events(log: pathlib.Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def run(quick: bool) -> list[Row]:
    from engine.revocation.build import Signer
    from engine.revocation.publication import publish
    from engine.tools.nginx_process import NginxProcess
    from engine.tools.pki import init
    from engine.tools.processes import wait_until

    plan = QUICK if quick else FULL
    interval = plan["interval_s"]
    work = WORK / ("quick" if quick else "full")
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    pki = init(work / "pki")
    signer = Signer.from_file(pki.publisher_key_path)
    pub = work / "pub"
    publish(pub, signer, snapshot=[_ids(work / "snapshot.txt", 0, SNAPSHOT_IDS)])
    cfg = work / "engine.toml"
    cfg.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\n[metrics]\nport = 0\n'
        f'[trust]\nroot_public_key = "{pki.root_public_key.hex()}"\n'
        f'trust_list = "{pki.trust_list_path}"\n'
        f'[revocation]\nsync_dir = "{work / "node"}"\npoll_interval_s = {interval}\n'
    )
    e2e, node_side, publish_s = [], [], []
    with NginxProcess(work / "nginx", pub) as nginx:
        log = work / "engine.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine",
                    "serve",
                    "--config",
                    str(cfg),
                    "--set",
                    f"revocation.source_url={nginx.url}",
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            wait_until(
                lambda: (
                    proc.poll() is not None
                    or any(e.get("event") == "listening" for e in _events(log))
                ),
                timeout=120,
                what="the node listening",
            )
            if proc.poll() is not None:
                raise RuntimeError(f"the node exited: {log.read_text()[-2000:]}")
            (listening,) = [e for e in _events(log) if e.get("event") == "listening"]
            port = int(listening["address"].rsplit(":", 1)[1])
            for r in range(plan["rounds"]):
                # Each round begins right after the poll that ended the last one: publish
                # at evenly spread phases of the interval, so the rounds sample the wait
                # for the next poll instead of always paying a whole interval.
                time.sleep((r + 0.5) / plan["rounds"] * interval)
                start_id = SNAPSHOT_IDS + r * DELTA_IDS
                card = f"Q{start_id + DELTA_IDS - 1:08d}"
                src = _ids(work / f"delta-{r}.txt", start_id, DELTA_IDS)
                synced_before = sum(e.get("event") == "revocation_synced" for e in _events(log))
                t0 = time.time()
                publish(pub, signer, add=[src])
                t1 = time.time()
                wait_until(
                    lambda card=card: asyncio.run(_revoked(port, card)),
                    timeout=interval * 3 + 60,
                    what="the delta in service",
                )
                t2 = time.time()
                e2e.append(t2 - t0)
                publish_s.append(t1 - t0)
                synced = [e for e in _events(log) if e.get("event") == "revocation_synced"]
                fetch_started = synced[synced_before:][0].get("poll_started_at")
                if fetch_started is not None:
                    node_side.append(t2 - fetch_started)
        finally:
            proc.terminate()
            proc.wait(30)
    rows = [
        Row(
            "distribution",
            f"{DELTA_IDS:,}-id delta on a {SNAPSHOT_IDS:,}-entry snapshot",
            "publish to in service (median of rounds)",
            statistics.median(e2e),
            f"the poll interval ({interval:g} s)",
            interval,
            "s",
            None,
            f"{len(e2e)} rounds: " + ", ".join(f"{x:.2f}" for x in e2e) + " s; the wait for "
            "the next poll is uniform over the interval",
            higher_is_better=False,
        )
    ]
    if node_side:
        rows.append(
            Row(
                "distribution",
                f"{DELTA_IDS:,}-id delta on a {SNAPSHOT_IDS:,}-entry snapshot",
                "the node: poll, fetch, verify, install, reload, in service",
                statistics.median(node_side),
                "the platform: build and sign the delta, index",
                statistics.median(publish_s),
                "s",
                None,
                "from the poll that found the delta to the first answer that has it",
                higher_is_better=False,
            )
        )
    return rows


def _main() -> None:  # python -m bench.compare_distribution
    from bench.harness import format_table

    print(format_table(run("--quick" in sys.argv)))


if __name__ == "__main__":
    _main()
