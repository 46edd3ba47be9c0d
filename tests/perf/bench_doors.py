"""Door benchmark (``make bench``): what the ingest door's checks cost per event, in process
on one core, against the floor of only decoding the same JSON, and (with ``--baseline REV``)
against the door of an earlier commit, measured side by side in the same run.

Prints JSON lines with the machine's core count: events/s through the door (bytes of a
100-event batch to validated ``Event`` messages), events/s of ``json.loads`` alone, and the
ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count on every line."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def batch_body(size: int) -> bytes:
    """A realistic batch: e-commerce track calls with context, as an SDK sends them."""
    calls = [
        {
            "type": "track",
            "userId": f"u-{i % 50}",
            "anonymousId": f"a-{i % 70}",
            "event": "Product Viewed",
            "messageId": f"m-{i}",
            "timestamp": "2026-12-01T10:00:00.000Z",
            "properties": {
                "product_id": f"sku-{i}",
                "name": "Trail shoe",
                "price": 89.9,
                "currency": "EUR",
                "categories": ["shoes", "outdoor"],
            },
            "context": {
                "library": {"name": "analytics-python", "version": "2.3.3"},
                "traits": {"email": f"u{i % 50}@example.com"},
                "device": {"id": f"d-{i % 30}"},
            },
        }
        for i in range(size)
    ]
    return json.dumps({"batch": calls, "sentAt": "2026-12-01T10:00:01.000Z"}).encode()


def measure(seconds: float, size: int) -> dict[str, float]:
    """Events/s of the door (this checkout's code) and of json.loads alone."""
    sys.path[:0] = [str(Path.cwd()), str(Path.cwd() / "protos")]
    from gateway import segment

    loads: Callable[[bytes], Any] = json.loads
    # Before the hardening the door decoded with json.loads.
    with contextlib.suppress(ImportError):
        from gateway.jsonsafe import loads
    raw = batch_body(size)

    def door() -> Any:
        return segment.parse_batch(loads(raw), datetime.now(UTC), 32 * 1024)

    assert len(door()) == size
    rates = {}
    for name, work in (("door", door), ("json_loads", lambda: json.loads(raw))):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            work()
            done += size
        rates[name] = done / (time.perf_counter() - started)
    return rates


def run_in(checkout: Path, seconds: float, size: int) -> dict[str, float]:
    """:func:`measure` in another checkout, in a fresh interpreter."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from bench_doors import measure; "
        "print(json.dumps(measure(float(sys.argv[2]), int(sys.argv[3]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(seconds), str(size)],
        cwd=checkout,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{checkout}:{checkout / 'protos'}"},
    )
    rates: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return rates


def main() -> None:
    """Measure this checkout (and a baseline commit, if given), alternating, on one core."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="", help="a commit to compare with, e.g. HEAD~5")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "baseline"
        if args.baseline:
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(base), args.baseline],
                cwd=ROOT,
                check=True,
            )
        try:
            now: list[dict[str, float]] = []
            before: list[dict[str, float]] = []
            for _ in range(args.rounds):
                now.append(run_in(ROOT, args.seconds, args.batch_size))
                if args.baseline:
                    before.append(run_in(base, args.seconds, args.batch_size))
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False
                )
    best = max(r["door"] for r in now)
    floor = max(r["json_loads"] for r in now)
    record: dict[str, object] = {
        "metric": "ingest_door_events_per_s",
        "value": round(best, 1),
        "json_loads_floor_events_per_s": round(floor, 1),
        "share_of_floor": round(best / floor, 3),
        "batch_size": args.batch_size,
        "pinned_cores": 1,
        "rounds": args.rounds,
    }
    if before:
        old = max(r["door"] for r in before)
        record |= {"baseline": args.baseline, "baseline_events_per_s": round(old, 1)}
        record["ratio_to_baseline"] = round(best / old, 3)
    emit(record)


if __name__ == "__main__":
    main()
