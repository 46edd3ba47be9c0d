"""Request bounds: ids refused by name without echo, JSON nesting found without recursion."""

from __future__ import annotations

import json

import pytest

from services.platform.errors import InvalidArgument
from services.platform.validation import (
    MAX_ID_LENGTH,
    check_id,
    check_ids,
    json_nesting_exceeds,
    load_json,
)


def test_ids_are_refused_by_name_and_limit_without_echo() -> None:
    assert check_id("customer_id", "c-1") == "c-1"
    assert check_id("event_id", "", required=False) == ""
    with pytest.raises(InvalidArgument, match=r"^customer_id is required$"):
        check_id("customer_id", "")
    with pytest.raises(InvalidArgument) as long:
        check_id("customer_id", "z" * (MAX_ID_LENGTH + 1))
    assert str(long.value) == f"customer_id is longer than {MAX_ID_LENGTH} characters"


def test_batches_are_bounded_in_count_and_in_each_id() -> None:
    assert check_ids("customer_ids", ["a", "b"], most=2) == ["a", "b"]
    with pytest.raises(InvalidArgument, match="at most 2 per call"):
        check_ids("customer_ids", ["a", "b", "c"], most=2)
    with pytest.raises(InvalidArgument) as long:
        check_ids("customer_ids", ["a", "z" * 10_000], most=2)
    assert str(long.value) == f"customer_ids[1] is longer than {MAX_ID_LENGTH} characters"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('{"a": [1, {"b": 2}]}', 3),
        ('{"a": "[[[[[[[[[[", "b": "\\"[[[["}', 1),
        ("[]", 1),
        ('"just text"', 0),
        ("[" * 100_000, 100_000),
        ('["unterminated [[[[[[[', 1),
    ],
)
def test_nesting_is_measured_outside_strings(text: str, depth: int) -> None:
    assert not json_nesting_exceeds(text, depth)
    assert json_nesting_exceeds(text, depth - 1) == (depth > 0)


def test_load_json_refuses_deep_text_before_parsing_it() -> None:
    assert load_json('{"n": [1]}', 2) == {"n": [1]}
    with pytest.raises(ValueError, match="nests deeper than 2 levels"):
        load_json("[[[1]]]", 2)
    deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(RecursionError):
        json.loads(deep)  # what the check stands in front of
    with pytest.raises(ValueError, match="deeper than 64"):
        load_json(deep, 64)
