"""``python -m services.recommendation``: the recommendation service."""

from services.platform.runtime import run_service
from services.recommendation.server import serve
from services.recommendation.settings import RecommendationSettings

run_service("recommendation", RecommendationSettings, serve)
