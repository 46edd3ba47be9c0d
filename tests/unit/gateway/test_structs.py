"""The fast Struct conversion gives exactly what MessageToDict gives."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from hypothesis import given
from hypothesis import strategies as st

from gateway.structs import struct_dict

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6))
def test_the_same_as_message_to_dict(document: dict[str, Any]) -> None:
    struct = Struct()
    struct.update(document)
    assert struct_dict(struct) == MessageToDict(struct)


def test_numbers_stay_floats_and_nested_values_convert() -> None:
    struct = Struct()
    struct.update({"n": 3, "list": [1, "a", None, {"b": True}], "obj": {"c": []}})
    converted = struct_dict(struct)
    assert converted == {"n": 3.0, "list": [1.0, "a", None, {"b": True}], "obj": {"c": []}}
    assert isinstance(converted["n"], float)


def test_a_value_left_unset_is_null() -> None:
    struct = Struct()
    struct.fields["empty"].Clear()
    assert struct_dict(struct) == {"empty": None}


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_number_json_cannot_hold_is_refused(number: float) -> None:
    struct = Struct()
    struct.fields["x"].number_value = number
    with pytest.raises(ValueError, match="not finite"):
        struct_dict(struct)
