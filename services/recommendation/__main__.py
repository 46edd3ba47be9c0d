"""``python -m services.recommendation``: the recommendation service.

``train`` (one-shot training, what a CronJob runs), ``evaluate`` (holdout metrics, MovieLens-100k
by default), ``import-catalog FILE.csv`` and ``load-movielens`` (demo data) are commands of
:mod:`services.recommendation.cli`.
"""

import sys

COMMANDS = ("train", "evaluate", "import-catalog", "load-movielens", "-h", "--help")

if sys.argv[1:2] and sys.argv[1] in COMMANDS:
    from services.recommendation.cli import main

    sys.exit(main(sys.argv[1:]))
elif sys.argv[1:]:
    sys.exit(
        f"unknown command {' '.join(sys.argv[1:])!r}; expected no argument, train, evaluate, "
        "import-catalog or load-movielens"
    )
else:
    from services.platform.runtime import run_service
    from services.recommendation.server import serve
    from services.recommendation.settings import RecommendationSettings

    run_service("recommendation", RecommendationSettings, serve)
