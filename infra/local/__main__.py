"""``python -m infra.local`` (what ``make run`` calls): the whole platform on this machine.

Starts SecantusDB and Tansu, creates the topics, starts the five services and the gateway,
sends demo data, prints where to go, publishes the doors and keys in ``<log dir>/connection.json``
and loads MovieLens-100k through the ingest API (then prints a tour; ``load-demo`` does that
alone against a running launcher), then supervises: a process that dies is restarted with
backoff and reported here; ``python -m infra.local status`` shows each process's state and
restarts. Stops everything on Ctrl-C or SIGTERM; if the launcher itself is killed, every
process it started dies with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from infra.local.connection import read_connection, remove_connection, write_connection
from infra.local.demo import (
    DEMO_CUSTOMERS,
    DEMO_OFFER_ID,
    WALLET_DEMO_USER,
    DemoCards,
    create_demo_segments,
    create_demo_wallet,
    send_demo_data,
)
from infra.local.demo_command import evaluate_demo, run_demo
from infra.local.demo_load import DemoTarget
from infra.local.movielens import DEMO_STORE_SETTINGS
from infra.local.stack import DEV_PASS_TYPE_ID, ROOT, Stack, StackPorts
from infra.local.status import print_status, write_status
from services.platform.commandline import fraction


def banner(stack: Stack) -> str:
    """Where everything runs, the dev keys, and a first event to send."""
    url = stack.gateway_url
    width = max(15, *(len(name) + 1 for name in stack.service_processes()))
    grpc_lines = "\n".join(
        f"    {name:<{width}} 127.0.0.1:{stack.ports.grpc[name]}"
        f"  (metrics :{stack.ports.metrics[name]})"
        for name in stack.service_processes()
    )
    email = DEMO_CUSTOMERS[0][3]
    query = (
        f'{{ customer(by: {{identifier: {{type: \\"email\\", value: \\"{email}\\"}}}}) '
        "{ id traits eventCounts { name count } } }"
    )
    return f"""
Lodestar is running.

  GraphQL          {url}/graphql   (GraphiQL in a browser, with the dev key:
                   {url}/graphql#key={stack.api_key} )
                   header  Authorization: Bearer {stack.api_key}
                   (the dev key holds every scope; more: python -m gateway keys create)
  Ingest API       {url}/v1/identify | track | page | screen | alias | group | batch
                   write key (HTTP Basic username, empty password): {stack.write_key}
  Metrics          {url}/metrics
  PassKit (Apple)  {stack.passkit_url}/v1/   (wallet web service, dev certificates in
                   {stack.wallet_certs_dir}: not Apple's, phones reject them)
{stand_ins(stack)}
  gRPC services
{grpc_lines}
  MongoDB wire     {mongo_lines(stack)}
  Kafka wire       {stack.kafka_bootstrap}
  Logs             {stack.log_dir}

Send an event:
  curl -u '{stack.write_key}:' -H 'Content-Type: application/json' \\
    -d '{{"userId": "u-42", "traits": {{"email": "you@example.com", "name": "You"}}}}' \\
    {url}/v1/identify

Query a demo customer:
  curl -H 'Authorization: Bearer {stack.api_key}' -H 'Content-Type: application/json' \\
    -d '{{"query": "{query}"}}' {url}/graphql

A process that dies is restarted (see this log); states and restarts:
  python -m infra.local status

Ctrl-C stops everything.
"""


def mongo_lines(stack: Stack) -> str:
    """The shared MongoDB-wire URI, or each database owner's own (per-service mode)."""
    if not stack.mongo_servers:
        return stack.mongo_uri
    return "\n                   ".join(
        f"{owner:<15} {server.uri}" for owner, server in stack.mongo_servers.items()
    )


def stand_ins(stack: Stack) -> str:
    """Where the loopback APNs and Google Wallet stand-ins listen, when they run."""
    lines = []
    if "fake-apns" in stack.stand_ins:
        lines.append(
            f"  APNs stand-in    {stack.apns_url}  (loopback, NOT Apple; pushes it received:\n"
            f"                   curl --cacert {stack.apns_ca} {stack.apns_url}/fake/pushes)"
        )
    if "fake-google" in stack.stand_ins:
        lines.append(
            f"  Google stand-in  {stack.google_url}  (loopback, NOT Google; calls it received:\n"
            f"                   curl {stack.google_url}/fake/calls)"
        )
    return "\n".join(lines)


def wallet_story(stack: Stack, cards: DemoCards) -> str:
    """The demo cards and the commands that play the wallet story with them."""
    card = cards.apple
    user = WALLET_DEMO_USER
    auth = f"-H 'Authorization: ApplePass {card.authentication_token}'"
    pass_path = f"{DEV_PASS_TYPE_ID}/{card.serial_number}"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    steps = (
        ("Gold tier", "Order Completed", {"order_id": "demo-1", "total": 1600}),
        (
            "Shipping",
            "Order Shipped",
            {
                "order_id": "demo-1",
                "delivery_start": f"{tomorrow}T10:00:00Z",
                "delivery_end": f"{tomorrow}T12:00:00Z",
            },
        ),
        ("Survey", "Survey Answered", {"offer_id": DEMO_OFFER_ID, "answer": "yes"}),
    )
    commands = "\n".join(
        f"    {n}. {title}:\n"
        f"       curl -u '{stack.write_key}:' -H 'Content-Type: application/json' \\\n"
        f"         -d '{json.dumps({'userId': user, 'event': event, 'properties': props})}' \\\n"
        f"         {stack.gateway_url}/v1/track"
        for n, (title, event, props) in enumerate(steps, 1)
    )
    google = ""
    if cards.google is not None:
        google = (
            f"  Google card      {cards.google.serial_number}\n"
            f"                   save link: {cards.google.save_link[:60]}...\n"
        )
    return f"""
Wallet demo ({user}, customer {cards.customer_id}):
  Apple card       {card.serial_number}  (pass type {DEV_PASS_TYPE_ID})
                   curl {auth} -o card.pkpass \\
                     {stack.passkit_url}/v1/passes/{pass_path}
{google}  A phone registers for pushes with
    curl -X POST {auth} -d '{{"pushToken": "{"ab" * 32}"}}' \\
      {stack.passkit_url}/v1/devices/my-phone/registrations/{pass_path}
  and each step below changes the card and pushes (see the APNs stand-in's /fake/pushes).
  Gold members see the presentation offer; its offer pass (gRPC IssuePass, kind COUPON,
  offer_id "{DEMO_OFFER_ID}") becomes the event ticket when the survey is answered.
{commands}
"""


def demo_in_background(
    target: DemoTarget, stopping: threading.Event, wallet_customer_id: str, users: int | None
) -> threading.Thread:
    """MovieLens-100k through the ingest API, then the demo around it and the tour, while the
    launcher keeps supervising."""

    def run() -> None:
        code = run_demo(
            target,
            users=users,
            should_stop=stopping.is_set,
            wallet_customer_id=wallet_customer_id,
        )
        if code != 0 and not stopping.is_set():
            print(
                "the MovieLens demo did not load (see above); the stack keeps running", flush=True
            )

    thread = threading.Thread(target=run, name="movielens-demo", daemon=True)
    thread.start()
    return thread


def load_demo(log_dir: Path, users: int | None, source: Path | None) -> int:
    """``load-demo``: the MovieLens demo into the launcher running with ``log_dir``."""
    try:
        target = read_connection(log_dir)
    except (OSError, ValueError) as error:
        print(f"load-demo: error: {error}", file=sys.stderr)
        return 1
    try:
        return run_demo(target, users=users, source_dir=source)
    except KeyboardInterrupt:
        # Loading again later sends the same events: nothing doubles.
        print("load-demo: interrupted (loading again resumes safely)", file=sys.stderr)
        return 130


def evaluate_demo_command(
    log_dir: Path, users: int | None, source: Path | None, test_fraction: float, seed: int
) -> int:
    """``evaluate-demo``: recommendation quality through the launcher running with
    ``log_dir`` (start it with ``--no-demo``: the command loads the training part itself)."""
    try:
        target = read_connection(log_dir)
    except (OSError, ValueError) as error:
        print(f"evaluate-demo: error: {error}", file=sys.stderr)
        return 2
    return evaluate_demo(
        target, users=users, test_fraction=test_fraction, seed=seed, source_dir=source
    )


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value[:20]!r} is not a whole number >= 1")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "status", "load-demo", "evaluate-demo"),
        default="run",
        help="default: run; load-demo: MovieLens-100k into the running stack; evaluate-demo: "
        "nDCG@10 of the running stack's recommendations on a MovieLens holdout (start the "
        "stack with --no-demo; minutes)",
    )
    parser.add_argument("--no-demo", action="store_true", help="start without demo data")
    parser.add_argument("--log-dir", type=Path, default=ROOT / ".local" / "logs")
    parser.add_argument(
        "--users",
        type=_positive,
        metavar="N",
        help="demo: only the first N MovieLens users and their ratings (default: all 943)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="load-demo: the folder with ml-100k.user/.item/.inter (default: recbole's copy)",
    )
    parser.add_argument(
        "--test-fraction",
        type=fraction,
        default=0.25,
        metavar="F",
        help="evaluate-demo: held out per customer",
    )
    parser.add_argument("--seed", type=int, default=0, help="evaluate-demo: the split's seed")
    return parser


def main() -> None:
    """Run until Ctrl-C / SIGTERM (``status``: print the running launcher's processes); exit
    non-zero if the stack broke beyond repair (an in-memory server died)."""
    args = _parser().parse_args()
    status_file = args.log_dir / "status.json"
    if args.command == "status":
        sys.exit(print_status(status_file))
    if args.command == "load-demo":
        sys.exit(load_demo(args.log_dir, args.users, args.source))
    if args.command == "evaluate-demo":
        sys.exit(
            evaluate_demo_command(
                args.log_dir, args.users, args.source, args.test_fraction, args.seed
            )
        )
    # The supervisor reports exits and restarts here: names, exit codes and signals only
    # (other libraries stay at WARNING: health probes are not news).
    logging.basicConfig(format="%(asctime)s launcher: %(message)s", stream=sys.stderr)
    logging.getLogger("infra.local").setLevel(logging.INFO)

    stack = Stack(
        StackPorts.from_env(os.environ),
        args.log_dir,
        write_key=os.environ.get("LODESTAR_WRITE_KEY"),
        extra_env={k: v for k, v in DEMO_STORE_SETTINGS.items() if k not in os.environ},
    )
    stopping = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print("starting SecantusDB, Tansu, 5 services and the gateway ...", flush=True)
    status = 0
    try:
        stack.start()
        target = write_connection(args.log_dir, stack)
        if not args.no_demo:
            segments = create_demo_segments(stack.grpc_target("segmentation"), stack.grpc_token)
            sent = send_demo_data(stack.gateway_url, stack.write_key)
            print(
                f"created {segments} demo segments; sent {sent} demo events for "
                f"{len(DEMO_CUSTOMERS)} customers",
                flush=True,
            )
            cards = create_demo_wallet(
                stack.grpc_target("identity"), stack.grpc_target("wallet"), stack.grpc_token
            )
        print(banner(stack), flush=True)
        if not args.no_demo:
            print(wallet_story(stack, cards), flush=True)
        if not args.no_demo:
            demo_in_background(target, stopping, cards.customer_id, args.users)
        # The supervisor restarts what dies; wake to refresh the status file and to stop if
        # the stack broke beyond repair.
        while not stopping.wait(0.5):
            write_status(status_file, stack)
            if stack.failure:
                print(f"stopping: {stack.failure}", file=sys.stderr, flush=True)
                status = 1
                break
    finally:
        print("stopping ...", flush=True)
        status_file.unlink(missing_ok=True)
        remove_connection(args.log_dir)
        stack.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
