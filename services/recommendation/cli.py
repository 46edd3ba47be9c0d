"""One-shot commands of the recommendation service:

- ``train``: train, store and report a model version (what a Kubernetes CronJob runs), with a
  progress bar when stderr is a terminal;
- ``evaluate``: precision@10, MAP@10 and nDCG@10 of the configured model and of the popularity
  baseline on one holdout, as a table and as JSON lines (MovieLens-100k by default; the
  same holdout through a running stack is the local launcher's ``evaluate-demo``);
- ``import-catalog FILE.csv``: store catalog items (item_id,name,category,price,image_url);
- ``load-movielens``: MovieLens-100k as catalog and interactions, then train (demo data).

Errors are one line on stderr and exit code 2 (bad input) or 1 (nothing to do now), never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from services.platform.commandline import USAGE_ERROR, CommandParser, fraction, parse_command
from services.platform.errors import InvalidArgument, Unavailable
from services.platform.logs import configure_logging
from services.platform.mongo import database, mongo_client
from services.platform.settings import load_settings
from services.recommendation.catalog import read_catalog
from services.recommendation.datasets import (
    movielens_catalog,
    movielens_ratings,
    read_interactions,
)
from services.recommendation.evaluation import EvaluationResult, evaluate
from services.recommendation.interactions import InteractionWeights
from services.recommendation.model import describe
from services.recommendation.serving import Recommendations
from services.recommendation.settings import SETTABLE_HYPERPARAMETERS, RecommendationSettings
from services.recommendation.store import RecommendationStore
from services.recommendation.trainer import NothingToTrain, Trainer
from services.recommendation.training import TrainingConfig, build_matrix

PROG = "python -m services.recommendation"
NOTHING_DONE = 1
COMMANDS = ("train", "evaluate", "import-catalog")


def _parser() -> CommandParser:
    parser = CommandParser(
        prog=PROG, description="Recommendation service and its one-shot commands."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    commands.add_parser(
        "train",
        help="train a model on the stored interactions, store it as the newest version",
        description="Train with the LODESTAR_RECOMMENDATION_* settings, store the model as "
        "the newest version (replicas pick it up) and print its metadata as JSON.",
    )
    evaluate_ = commands.add_parser(
        "evaluate",
        help="precision/MAP/nDCG@10 of the model and the popularity baseline on a holdout",
        description="Hold out a random 25%% of each customer's items, train on the rest, and "
        "print precision@10, MAP@10 and nDCG@10 of the model and of the popularity baseline.",
    )
    evaluate_.add_argument(
        "--interactions",
        metavar="FILE",
        help="CSV with user_id,item_id,weight,timestamp (default: MovieLens-100k from recbole, "
        "every rating one positive interaction)",
    )
    evaluate_.add_argument("--algorithm", choices=("als", "bpr"), help="default: the setting")
    evaluate_.add_argument("--weighting", choices=("bm25", "tfidf", "none"))
    evaluate_.add_argument("--factors", type=int, metavar="N")
    evaluate_.add_argument("--regularization", type=float, metavar="X")
    evaluate_.add_argument("--iterations", type=int, metavar="N")
    evaluate_.add_argument("--learning-rate", type=float, metavar="X", help="BPR only")
    evaluate_.add_argument("--test-fraction", type=fraction, default=0.25, metavar="F")
    evaluate_.add_argument("--seed", type=int, default=0)
    catalog = commands.add_parser(
        "import-catalog",
        help="store catalog items from a CSV file",
        description="Store the items of a CSV with item_id and any of name, category, price, "
        "image_url; catalog properties win over those seen in events.",
    )
    catalog.add_argument("file", metavar="FILE.csv")
    commands.add_parser(
        "load-movielens",
        help="store MovieLens-100k as catalog and interactions, then train (demo data)",
        description="Store the MovieLens-100k movies (from the installed recbole package) as "
        "catalog items and its ratings as interactions of customers movielens-<user>, moved "
        "in time so the newest rating is now, then train and store a model. make run does "
        "this in the background so the demo serves real recommendations.",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the command in ``argv`` (without the program name); return the exit code."""
    arguments = parse_command(_parser(), argv, PROG)
    if isinstance(arguments, int):
        return arguments
    settings = load_settings(RecommendationSettings)
    if arguments.command == "evaluate":
        return _evaluate(arguments, settings)
    configure_logging("recommendation", settings.log_level)
    if arguments.command == "train":
        return asyncio.run(_train(settings))
    if arguments.command == "load-movielens":
        return asyncio.run(_load_movielens(settings))
    return asyncio.run(_import_catalog(arguments.file, settings))


async def _load_movielens(settings: RecommendationSettings) -> int:
    items, ratings = movielens_catalog(), movielens_ratings()
    # 1997-98 ratings would fall outside the training window: the newest becomes "now".
    shift = datetime.now(UTC) - max(r.at for r in ratings)
    moved = [replace(r, customer_id=f"movielens-{r.customer_id}", at=r.at + shift) for r in ratings]
    client = mongo_client(settings.mongo_uri, "lodestar-recommendation-cli")
    try:
        store = RecommendationStore(
            database(client, settings.mongo_database_prefix, "recommendation")
        )
        await store.ensure_indexes()
        imported = await store.import_catalog(items, datetime.now(UTC))
        for start in range(0, len(moved), 5_000):
            await store.save_interactions(moved[start : start + 5_000])
    finally:
        client.close()
    print(json.dumps({"items": imported, "interactions": len(moved)}), flush=True)
    return await _train(settings)


async def _train(settings: RecommendationSettings) -> int:
    client = mongo_client(settings.mongo_uri, "lodestar-recommendation-cli")
    try:
        store = RecommendationStore(
            database(client, settings.mongo_database_prefix, "recommendation")
        )
        await store.ensure_indexes()
        serving = Recommendations(store)
        trainer = Trainer(store, serving, settings.training_plan())
        try:
            await trainer.train(show_progress=sys.stderr.isatty())
        except (NothingToTrain, Unavailable) as reason:
            print(f"train: {reason}", file=sys.stderr)
            return NOTHING_DONE
        model = serving.model
        assert model is not None
        summary = describe(model.info, len(model.customer_ids), len(model.item_ids))
        print(json.dumps(summary, indent=2, default=str))
        return 0
    finally:
        client.close()


async def _import_catalog(path: str, settings: RecommendationSettings) -> int:
    try:
        items = read_catalog(path)
    except OSError as error:
        print(
            f"import-catalog: error: cannot read {path}: {error.strerror or error}", file=sys.stderr
        )
        return USAGE_ERROR
    except InvalidArgument as error:
        print(f"import-catalog: error: {path}: {error}", file=sys.stderr)
        return USAGE_ERROR
    client = mongo_client(settings.mongo_uri, "lodestar-recommendation-cli")
    try:
        store = RecommendationStore(
            database(client, settings.mongo_database_prefix, "recommendation")
        )
        await store.ensure_indexes()
        imported = await store.import_catalog(items, datetime.now(UTC))
    finally:
        client.close()
    print(json.dumps({"imported": imported}))
    return 0


def evaluation_config(arguments: argparse.Namespace, base: TrainingConfig) -> TrainingConfig:
    """The configured hyper-parameters with the command line's overrides."""
    # A flag's destination is the TrainingConfig field it overrides.
    overrides = {
        name: value
        for name in SETTABLE_HYPERPARAMETERS
        if (value := getattr(arguments, name, None)) is not None
    }
    return replace(base, **overrides)


def _evaluate(arguments: argparse.Namespace, settings: RecommendationSettings) -> int:
    source = arguments.interactions or "MovieLens-100k"
    try:
        if arguments.interactions:
            interactions = read_interactions(arguments.interactions)
        else:
            interactions = movielens_ratings()
    except OSError as error:
        print(f"evaluate: error: {source}: {error.strerror or error}", file=sys.stderr)
        return USAGE_ERROR
    except ValueError as error:
        print(f"evaluate: error: {source}: {error}", file=sys.stderr)
        return USAGE_ERROR
    config = evaluation_config(arguments, settings.training_config())
    # Every interaction counts by its own weight: no decay, ratings at face value.
    matrix = build_matrix(interactions, InteractionWeights(), datetime.now(UTC))
    results = evaluate(
        matrix.weights,
        [config],
        test_fraction=arguments.test_fraction,
        seed=arguments.seed,
        show_progress=sys.stderr.isatty(),
    )
    customers, items = matrix.shape
    print(
        f"{source}: {customers} customers, {items} items, {matrix.weights.nnz} interactions; "
        f"{arguments.test_fraction:.0%} held out per customer (seed {arguments.seed})"
    )
    print(format_table(results))
    for result in results:
        print(json.dumps(result.as_dict()))
    return 0


def format_table(results: Sequence[EvaluationResult]) -> str:
    """The results as an aligned text table."""
    columns = list(results[0].metrics) if results else []
    header = f"{'model':<12}" + "".join(f"{c:>14}" for c in columns)
    lines = [header, "-" * len(header)]
    for result in results:
        lines.append(
            f"{result.model:<12}" + "".join(f"{result.metrics[c]:>14.4f}" for c in columns)
        )
    return "\n".join(lines)
