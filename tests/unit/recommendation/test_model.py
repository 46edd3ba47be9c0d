"""A model's artifact round trip and erasure of a customer from it."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import scipy.sparse as sp

from services.recommendation.model import (
    FactorModel,
    ModelInfo,
    info_document,
    info_from_document,
)

TRAINED = datetime(2026, 11, 1, 12, tzinfo=UTC)


def toy_model() -> FactorModel:
    info = ModelInfo(
        version=7,
        algorithm="als",
        trained_at=TRAINED,
        data_from=datetime(2026, 1, 1, tzinfo=UTC),
        data_to=datetime(2026, 10, 31, tzinfo=UTC),
        interactions=6,
        metrics={"train_seconds": 0.5},
        parameters={"factors": 2, "weights": {"viewed": 1.0}},
    )
    return FactorModel(
        info=info,
        customer_ids=["c-1", "c-2", "klant-ü"],
        item_ids=["a", "b", "ç-3", "d"],
        user_factors=np.array([[1, 0], [0, 1], [0.5, 0.5]], dtype=np.float32),
        item_factors=np.array([[1, 0], [0, 1], [1, 1], [0.1, 0.2]], dtype=np.float32),
        popularity=np.array([2, 1, 3, 0], dtype=np.float64),
        purchased=sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])),
        together=sp.csr_matrix(
            np.array([[0, 2, 0, 0], [2, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]), dtype=np.float32
        ),
    )


def test_the_artifact_round_trip_keeps_every_array_and_id() -> None:
    model = toy_model()
    data = model.to_bytes()
    assert data[:2] == b"PK"  # an npz (zip) file
    back = FactorModel.from_bytes(model.info, data)
    assert back.customer_ids == model.customer_ids
    assert back.item_ids == model.item_ids
    np.testing.assert_array_equal(back.user_factors, model.user_factors)
    np.testing.assert_array_equal(back.item_factors, model.item_factors)
    np.testing.assert_array_equal(back.popularity, model.popularity)
    np.testing.assert_array_equal(back.purchased.toarray(), model.purchased.toarray())
    np.testing.assert_array_equal(back.together.toarray(), model.together.toarray())


def test_metadata_round_trips_through_its_document() -> None:
    info = toy_model().info
    assert info_from_document(info_document(info)) == info
    naive = info_document(info)
    naive["trained_at"] = TRAINED.replace(tzinfo=None)
    assert info_from_document(naive).trained_at == TRAINED


def test_an_erased_customer_leaves_the_model_and_the_revision_moves_on() -> None:
    model = toy_model()
    erased = model.without_customers(["c-2"])
    assert erased.customer_ids == ["c-1", "klant-ü"]
    assert erased.info.revision == 1
    np.testing.assert_array_equal(erased.user_factors, [[1, 0], [0.5, 0.5]])
    assert erased.purchased.shape == (2, 4)
    np.testing.assert_array_equal(erased.purchased.toarray()[0], [1, 0, 0, 0])
    assert not erased.holds("c-2")
    assert model.holds("c-2")  # the original is untouched
    assert model.without_customers(["nobody"]) is model
    back = FactorModel.from_bytes(erased.info, erased.to_bytes())
    assert back.customer_ids == ["c-1", "klant-ü"]


def test_inconsistent_arrays_are_refused() -> None:
    model = toy_model()
    with pytest.raises(ValueError, match="factor rows"):
        FactorModel(
            model.info,
            model.customer_ids[:2],
            model.item_ids,
            model.user_factors,
            model.item_factors,
            model.popularity,
            model.purchased,
            model.together,
        )
