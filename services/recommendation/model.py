"""A trained model as data: the factors, who and what they stand for, popularity, purchases
and co-purchases; and its byte form (a NumPy ``.npz`` without pickles) for storage.

A model is immutable: erasing a customer makes a new one without them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

ARTIFACT_FORMAT = 1
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelInfo:
    """What a stored model is: version, algorithm, when and on what it was trained."""

    version: int
    algorithm: str
    trained_at: datetime
    data_from: datetime | None
    data_to: datetime | None
    interactions: int
    metrics: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    # Bumped when the stored artifact is rewritten (an erased customer taken out).
    revision: int = 0


def describe(info: ModelInfo, customers: int, items: int) -> dict[str, object]:
    """A model's metadata as plain JSON values (what ``train`` prints)."""

    def when(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {
        "version": info.version,
        "algorithm": info.algorithm,
        "trainedAt": when(info.trained_at),
        "dataFrom": when(info.data_from),
        "dataTo": when(info.data_to),
        "customers": customers,
        "items": items,
        "interactions": info.interactions,
        "metrics": dict(info.metrics),
        "parameters": dict(info.parameters),
        "revision": info.revision,
    }


def _pack_strings(values: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Strings as one UTF-8 buffer and their end offsets (compact, no pickles)."""
    encoded = [v.encode() for v in values]
    ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), ends


def _unpack_strings(buffer: npt.NDArray[np.uint8], ends: npt.NDArray[np.int64]) -> list[str]:
    raw = buffer.tobytes()
    starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
    return [raw[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _csr(
    shape: tuple[int, int],
    indptr: npt.NDArray[Any],
    indices: npt.NDArray[Any],
    data: npt.NDArray[Any] | None = None,
) -> sp.csr_matrix:
    values = np.ones(len(indices), dtype=np.float32) if data is None else data
    return sp.csr_matrix((values, indices, indptr), shape=shape)


@dataclass(frozen=True, eq=False)
class FactorModel:
    """A trained model: one factor row per customer and per item (scores are dot products),
    each item's popularity (distinct customers), each customer's purchased items and, per
    item, how often each other item was in the same order."""

    info: ModelInfo
    customer_ids: list[str]
    item_ids: list[str]
    user_factors: FloatArray
    item_factors: FloatArray
    popularity: npt.NDArray[np.float64]
    purchased: sp.csr_matrix
    together: sp.csr_matrix

    def __post_init__(self) -> None:
        users, items = len(self.customer_ids), len(self.item_ids)
        if self.user_factors.shape[0] != users or self.item_factors.shape[0] != items:
            raise ValueError("factor rows must match the customer and item ids")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError("user and item factors must have the same width")
        if self.popularity.shape != (items,):
            raise ValueError("popularity must have one value per item")
        if self.purchased.shape != (users, items) or self.together.shape != (items, items):
            raise ValueError("purchases and co-purchases must match the ids")

    def holds(self, customer_id: str) -> bool:
        """Whether the model has factors for ``customer_id``."""
        return customer_id in set(self.customer_ids)

    def without_customers(self, customer_ids: Iterable[str]) -> FactorModel:
        """The same model with these customers' rows taken out (an erasure)."""
        gone = set(customer_ids)
        keep = np.array([c not in gone for c in self.customer_ids], dtype=bool)
        if keep.all():
            return self
        return replace(
            self,
            info=replace(self.info, revision=self.info.revision + 1),
            customer_ids=[c for c, k in zip(self.customer_ids, keep, strict=True) if k],
            user_factors=np.ascontiguousarray(self.user_factors[keep]),
            purchased=sp.csr_matrix(self.purchased[keep]),
        )

    def to_bytes(self) -> bytes:
        """The artifact: every array in one ``.npz`` (ids as UTF-8 buffers, no pickles)."""
        customers, customer_ends = _pack_strings(self.customer_ids)
        items, item_ends = _pack_strings(self.item_ids)
        out = io.BytesIO()
        np.savez(
            out,
            format=np.array([ARTIFACT_FORMAT]),
            customers=customers,
            customer_ends=customer_ends,
            items=items,
            item_ends=item_ends,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            popularity=self.popularity,
            purchased_indptr=self.purchased.indptr,
            purchased_indices=self.purchased.indices,
            together_indptr=self.together.indptr,
            together_indices=self.together.indices,
            together_data=self.together.data,
        )
        return out.getvalue()

    @classmethod
    def from_bytes(cls, info: ModelInfo, data: bytes) -> FactorModel:
        """Read an artifact written by :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if int(arrays["format"][0]) != ARTIFACT_FORMAT:
                raise ValueError(f"unsupported artifact format {int(arrays['format'][0])}")
            customer_ids = _unpack_strings(arrays["customers"], arrays["customer_ends"])
            item_ids = _unpack_strings(arrays["items"], arrays["item_ends"])
            users, items = len(customer_ids), len(item_ids)
            return cls(
                info=info,
                customer_ids=customer_ids,
                item_ids=item_ids,
                user_factors=np.ascontiguousarray(arrays["user_factors"], dtype=np.float32),
                item_factors=np.ascontiguousarray(arrays["item_factors"], dtype=np.float32),
                popularity=arrays["popularity"].astype(np.float64),
                purchased=_csr(
                    (users, items), arrays["purchased_indptr"], arrays["purchased_indices"]
                ),
                together=_csr(
                    (items, items),
                    arrays["together_indptr"],
                    arrays["together_indices"],
                    arrays["together_data"],
                ),
            )


class ModelMetadata(TypedDict):
    """A model version's metadata as stored beside its artifact (:func:`info_document`)."""

    version: int
    algorithm: str
    trained_at: datetime
    data_from: datetime | None
    data_to: datetime | None
    interactions: int
    metrics: dict[str, float]
    parameters_json: str
    # Absent in versions stored before artifacts could be rewritten.
    revision: NotRequired[int]


class StoredModel(ModelMetadata):
    """A stored model version: its metadata and its artifact's id (``_id`` is the version)."""

    _id: int
    file_id: object


def info_document(info: ModelInfo) -> ModelMetadata:
    """The metadata as stored beside the artifact."""
    return {
        "version": info.version,
        "algorithm": info.algorithm,
        "trained_at": info.trained_at,
        "data_from": info.data_from,
        "data_to": info.data_to,
        "interactions": info.interactions,
        "metrics": dict(info.metrics),
        "parameters_json": json.dumps(info.parameters, sort_keys=True),
        "revision": info.revision,
    }


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def info_from_document(doc: ModelMetadata) -> ModelInfo:
    """The metadata read back from :func:`info_document`'s form."""
    trained_at = _utc(doc["trained_at"])
    assert trained_at is not None
    return ModelInfo(
        version=int(doc["version"]),
        algorithm=str(doc["algorithm"]),
        trained_at=trained_at,
        data_from=_utc(doc.get("data_from")),
        data_to=_utc(doc.get("data_to")),
        interactions=int(doc.get("interactions", 0)),
        metrics={k: float(v) for k, v in (doc.get("metrics") or {}).items()},
        parameters=json.loads(doc.get("parameters_json") or "{}"),
        revision=int(doc.get("revision", 0)),
    )
