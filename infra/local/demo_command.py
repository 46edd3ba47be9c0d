"""``python -m infra.local load-demo`` and what ``make run`` does after start-up: MovieLens-100k
through the front door (:mod:`infra.local.demo_load`), the demo around it, then the tour; and
``evaluate-demo``, the offline holdout scored through the running stack
(:mod:`infra.local.demo_eval`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import grpc

from infra.local.demo import DEMO_OFFER_ID, WALLET_DEMO_USER
from infra.local.demo_eval import evaluate_through_stack
from infra.local.demo_load import DemoLoadError, DemoTarget, Stopped, customer_ids, finish, load
from infra.local.movielens import DemoSourceError, read_source
from infra.local.tour import tour
from services.recommendation.datasets import movielens_dir

USAGE_ERROR = 2
FAILED = 1


def run_demo(
    target: DemoTarget,
    *,
    users: int | None = None,
    source_dir: Path | None = None,
    stream: TextIO | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    wallet_customer_id: str = "",
) -> int:
    """Load, finish and print the tour; the exit code (errors are one line on stderr)."""
    out = stream or sys.stdout
    try:
        source = read_source(source_dir or movielens_dir(), users)
        print(
            f"loading MovieLens-100k through the ingest API: {len(source.users):,} customers, "
            f"{len(source.films):,} films, {len(source.ratings):,} ratings",
            file=out,
            flush=True,
        )
        loaded = load(source, target, stream=sys.stderr, should_stop=should_stop)
        finished = finish(target, loaded.customers)
        if not wallet_customer_id:
            wallet_customer_id = customer_ids(target, [WALLET_DEMO_USER]).get(WALLET_DEMO_USER, "")
    except (DemoSourceError, FileNotFoundError) as error:
        print(f"load-demo: error: {error}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    except Stopped:
        return FAILED
    except DemoLoadError as error:
        print(f"load-demo: {error}", file=sys.stderr, flush=True)
        return FAILED
    except grpc.RpcError as error:
        print(
            f"load-demo: a service refused: {error.code().name} {error.details()}",
            file=sys.stderr,
            flush=True,
        )
        return FAILED
    print(
        tour(
            gateway_url=target.gateway_url,
            api_key=target.api_key,
            write_key=target.write_key,
            loaded=loaded,
            finished=finished,
            offer_id=DEMO_OFFER_ID,
            wallet_customer_id=wallet_customer_id,
        ),
        file=out,
        flush=True,
    )
    return 0


def evaluate_demo(
    target: DemoTarget,
    *,
    users: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    source_dir: Path | None = None,
) -> int:
    """Score the stack's recommendations on the MovieLens holdout; one JSON line, or one error
    line on stderr and the exit code."""
    try:
        result = evaluate_through_stack(
            target,
            source_dir or movielens_dir(),
            users=users,
            test_fraction=test_fraction,
            seed=seed,
        )
    except (DemoSourceError, OSError, ValueError) as error:
        print(f"evaluate-demo: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except DemoLoadError as error:
        print(f"evaluate-demo: {error}", file=sys.stderr)
        return FAILED
    except grpc.RpcError as error:
        print(f"evaluate-demo: a service refused: {error.code().name}", file=sys.stderr)
        return FAILED
    print(json.dumps(result))
    return 0
