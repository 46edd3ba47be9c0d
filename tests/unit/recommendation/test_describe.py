"""What ``python -m services.recommendation train`` prints about the model it trained."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.recommendation.model import ModelInfo, describe


def test_a_model_is_described_in_plain_json() -> None:
    info = ModelInfo(
        version=4,
        algorithm="als",
        trained_at=datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
        data_from=datetime(1997, 9, 20, tzinfo=UTC),
        data_to=None,
        interactions=99_000,
        metrics={"ndcg@10": 0.44},
        parameters={"factors": 64},
    )
    described = json.loads(json.dumps(describe(info, customers=943, items=1_682)))
    assert described == {
        "version": 4,
        "algorithm": "als",
        "trainedAt": "2026-12-03T12:00:00+00:00",
        "dataFrom": "1997-09-20T00:00:00+00:00",
        "dataTo": None,
        "customers": 943,
        "items": 1682,
        "interactions": 99000,
        "metrics": {"ndcg@10": 0.44},
        "parameters": {"factors": 64},
        "revision": 0,
    }
