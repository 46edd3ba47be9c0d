"""MovieLens demo benchmark, each part on a private stack on free ports.

(a) ``load``: the full demo load (943 customers, 1,682 films, 100,000 ratings as ``Product
    Rated`` and the 4-5 ratings also as ``Order Completed``) through the ingest API: events/s
    until the profiles caught up, and the seconds to send and to catch up.
(b) ``make-run``: ``python -m infra.local`` (what ``make run`` runs) on free ports, from start
    to the printed tour: wall seconds.
(c) ``evaluate``: the through-stack evaluation (infra/local/demo_eval.py) for each rating
    weighting (``LODESTAR_RECOMMENDATION_RATING_WEIGHT=rating`` and ``one``), each on a fresh
    stack: precision/MAP/nDCG@10.

``--part`` picks parts (all by default); ``--users N`` slices MovieLens for a quick try.
Prints JSON lines with the core count.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.local.connection import write_connection
from infra.local.demo_eval import evaluate_through_stack
from infra.local.demo_load import load
from infra.local.movielens import DEMO_STORE_SETTINGS, read_source
from infra.local.stack import ROOT, SERVICES, Stack, StackPorts
from services.recommendation.datasets import movielens_dir

PARTS = ("load", "make-run", "evaluate")
# The tour's first line: make run has loaded and finished the demo.
TOUR_MARKER = "MovieLens-100k demo:"


def emit(record: Mapping[str, object]) -> None:
    """One JSON line with the core count."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def private_stack(log_dir: Path, extra_env: Mapping[str, str] | None = None) -> Stack:
    """A started stack on free ports with its own servers."""
    stack = Stack(StackPorts.free(), log_dir, extra_env=dict(extra_env or {}))
    stack.start()
    return stack


def bench_load(users: int | None) -> None:
    """(a) The demo load's events/s until the profiles caught up."""
    with tempfile.TemporaryDirectory() as folder:
        stack = private_stack(Path(folder), DEMO_STORE_SETTINGS)
        try:
            target = write_connection(Path(folder), stack)
            source = read_source(movielens_dir(), users)
            result = load(source, target)
        finally:
            stack.stop()
    emit(
        {
            "bench": "demo_load",
            "customers": len(source.users),
            "ratings": len(source.ratings),
            "events": result.events,
            "send_s": round(result.send_s, 1),
            "until_caught_up_s": round(result.total_s, 1),
            "events_per_s": round(result.events_per_s, 1),
        }
    )


def _port_env() -> dict[str, str]:
    ports = StackPorts.free()
    env = {
        "LODESTAR_MONGO_PORT": str(ports.mongo),
        "LODESTAR_KAFKA_PORT": str(ports.kafka),
        "LODESTAR_GATEWAY_HTTP_PORT": str(ports.gateway),
        "LODESTAR_WALLET_HTTP_PORT": str(ports.passkit),
        "LODESTAR_APNS_STAND_IN_PORT": str(ports.apns),
        "LODESTAR_GOOGLE_STAND_IN_PORT": str(ports.google),
    }
    for service in SERVICES:
        env[f"LODESTAR_{service.upper()}_GRPC_PORT"] = str(ports.grpc[service])
        env[f"LODESTAR_{service.upper()}_METRICS_PORT"] = str(ports.metrics[service])
    for owner, port in ports.mongo_per_service.items():
        env[f"LODESTAR_{owner.upper()}_MONGO_PORT"] = str(port)
    return env


def bench_make_run(users: int | None, timeout_s: float) -> None:
    """(b) ``python -m infra.local`` from start to the printed tour."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "infra.local", "--log-dir", folder]
        if users is not None:
            command += ["--users", str(users)]
        started = time.monotonic()
        errors = (Path(folder) / "launcher.err").open("w")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **_port_env()},
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        seen = False
        deadline = started + timeout_s
        # Raw reads: a buffered readline can swallow the tour's lines into its buffer, and the
        # selector then waits on a pipe that has nothing more to say.
        marker, tail = TOUR_MARKER.encode(), b""
        while not seen and time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=1.0):
                chunk = os.read(process.stdout.fileno(), 65_536)
                if not chunk:
                    break
                tail = tail[-len(marker) :] + chunk
                seen = marker in tail
        wall = time.monotonic() - started
        # Without a tour, the launcher's last words say why (the load's error, or progress).
        last = (Path(folder) / "launcher.err").read_text().strip().splitlines()[-1:] or [""]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        errors.close()
    emit(
        {
            "bench": "make_run_to_tour",
            "users": users or 943,
            "tour_printed": seen,
            "wall_s": round(wall, 1),
            **({} if seen else {"launcher_last_line": last[0][-300:]}),
        }
    )


def bench_evaluate(users: int | None, weightings: list[str], env: Mapping[str, str]) -> None:
    """(c) nDCG@10 through the stack for each rating weighting, each on a fresh stack."""
    for weighting in weightings:
        with tempfile.TemporaryDirectory() as folder:
            stack = private_stack(
                Path(folder),
                {**DEMO_STORE_SETTINGS, **env, "LODESTAR_RECOMMENDATION_RATING_WEIGHT": weighting},
            )
            try:
                target = write_connection(Path(folder), stack)
                result = evaluate_through_stack(target, movielens_dir(), users=users)
            finally:
                stack.stop()
        emit({"bench": "demo_evaluate_through_stack", "setting": weighting, **env, **result})


def main() -> None:
    """Run the chosen parts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=PARTS, action="append")
    parser.add_argument("--users", type=int, help="only the first N MovieLens users")
    parser.add_argument(
        "--weighting", choices=("rating", "one"), action="append", help="default: both"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="LODESTAR_X=V",
        help="evaluate: a further setting of the evaluated stacks (e.g. other weights)",
    )
    parser.add_argument("--make-run-timeout", type=float, default=1_800.0)
    args = parser.parse_args()
    parts = args.part or list(PARTS)
    if "load" in parts:
        bench_load(args.users)
    if "make-run" in parts:
        bench_make_run(args.users, args.make_run_timeout)
    if "evaluate" in parts:
        env = dict(item.split("=", 1) for item in args.env)
        bench_evaluate(args.users, args.weighting or ["rating", "one"], env)


if __name__ == "__main__":
    main()
