"""``python -m services.recommendation``: the recommendation service.

``train`` (one-shot training, what a CronJob runs), ``evaluate`` (holdout metrics, MovieLens-100k
by default) and ``import-catalog FILE.csv`` are commands of :mod:`services.recommendation.cli`.
"""

import sys

if sys.argv[1:2] and sys.argv[1] in ("train", "evaluate", "import-catalog", "-h", "--help"):
    from services.recommendation.cli import main

    sys.exit(main(sys.argv[1:]))
elif sys.argv[1:]:
    sys.exit(
        f"unknown command {' '.join(sys.argv[1:])!r}; expected no argument, train, evaluate "
        "or import-catalog"
    )
else:
    from services.platform.runtime import run_service
    from services.recommendation.server import serve
    from services.recommendation.settings import RecommendationSettings

    run_service("recommendation", RecommendationSettings, serve)
