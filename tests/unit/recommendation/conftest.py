"""A hand-made model every recommendation unit test can reason about.

Customers: ``c-shoes`` likes shoes (factor 0), ``c-coats`` likes outerwear (factor 1).
Items: boots and sneakers (shoes), parka and raincoat (outerwear), socks (accessories, no
factors to speak of). Popularity: sneakers 5, parka 4, boots 3, socks 2, raincoat 1.
``c-shoes`` bought boots; boots were ordered with socks twice and with the parka once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import scipy.sparse as sp

from services.recommendation.interactions import ItemProperties
from services.recommendation.model import FactorModel, ModelInfo
from services.recommendation.recommender import Recommender

ITEMS = ["boots", "sneakers", "parka", "raincoat", "socks"]
CATALOG = {
    "boots": ItemProperties("boots", "Trail boots", "Shoes", 129.0, "https://img/boots.png"),
    "sneakers": ItemProperties("sneakers", "Sneakers", "shoes", 79.0),
    "parka": ItemProperties("parka", "Parka", "outerwear", 199.0),
    "raincoat": ItemProperties("raincoat", "Raincoat", "outerwear"),
    "socks": ItemProperties("socks", "Wool socks", "accessories", 12.5),
    "hat": ItemProperties("hat", "Hat", "accessories"),  # in the catalog, not in the model
}


def shop_model(version: int = 3) -> FactorModel:
    """The model described in the module docstring."""
    together = np.zeros((5, 5), dtype=np.float32)
    together[0, 4] = together[4, 0] = 2
    together[0, 2] = together[2, 0] = 1
    return FactorModel(
        info=ModelInfo(version, "als", datetime(2026, 11, 1, tzinfo=UTC), None, None, 10),
        customer_ids=["c-shoes", "c-coats"],
        item_ids=ITEMS,
        user_factors=np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32),
        item_factors=np.array(
            [[0.9, 0.1], [0.8, 0.0], [0.1, 0.9], [0.0, 0.7], [0.05, 0.05]], dtype=np.float32
        ),
        popularity=np.array([3, 5, 4, 1, 2], dtype=np.float64),
        purchased=sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32)),
        together=sp.csr_matrix(together),
    )


@pytest.fixture
def recommender() -> Recommender:
    """The hand-made model with its catalog."""
    return Recommender(shop_model(), CATALOG)
