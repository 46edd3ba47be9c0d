"""Rule text nested past the limit is a RuleError naming it, at any depth, never a
RecursionError."""

from __future__ import annotations

import json

import pytest

from services.segmentation.rules import MAX_DEPTH, MAX_JSON_DEPTH, RuleError, load, parse
from services.segmentation.segments import parse_rule

LEAF = {"field": "orders.count", "op": "gt", "value": 1}


def nested(levels: int, kind: str = "not") -> str:
    """Built as text: json.dumps itself recurses on deep objects."""
    head, tail = ('{"not": ', "}") if kind == "not" else (f'{{"{kind}": [', "]}")
    return head * levels + json.dumps(LEAF) + tail * levels


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 3_000, 100_000])
def test_text_nested_past_the_json_limit_names_the_limit(levels: int) -> None:
    with pytest.raises(RuleError) as refused:
        parse_rule(nested(levels), frozenset())
    assert refused.value.path == "rule"
    assert f"deeper than {MAX_JSON_DEPTH} levels" in refused.value.message


def test_the_deepest_valid_rule_fits_the_json_limit() -> None:
    deepest = nested(MAX_DEPTH - 1, "all")
    assert parse_rule(deepest, frozenset()).to_json() == json.loads(deepest)
    with pytest.raises(RuleError, match=f"more than {MAX_DEPTH} deep"):
        parse_rule(nested(MAX_DEPTH, "any"), frozenset())


def test_load_still_names_bad_json() -> None:
    with pytest.raises(RuleError, match="not valid JSON"):
        load("{")
    assert parse(load(json.dumps(LEAF))).to_json() == LEAF
