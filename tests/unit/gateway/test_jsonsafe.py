"""The JSON checks behind the ingest door: paths that name the bad key or value, a fast test
that never lets a problem through, and a scan for bodies too deep to parse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import jsonsafe


def nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = {"n": value}
    return value


BAD: list[tuple[Any, str]] = [
    ({"a": [1, {"b": "x\ud800"}]}, "f.a[1].b"),
    ({"\udfff": 1}, 'f["\\udfff"]'),
    ({"ok": {"k\u0000": 1}}, 'f.ok["k\\u0000"]'),
    (["\u0000"], "f[0]"),
    ({"n": float("nan")}, "f.n"),
    ([1, float("-inf")], "f[1]"),
    ({"n": 10**400}, "f.n"),
    ({"n": -(10**5000)}, "f.n"),
    (nested(21), "f"),
    ([[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]], "f"),
]


@pytest.mark.parametrize(("value", "path"), BAD)
def test_problems_are_found_and_named(value: Any, path: str) -> None:
    assert not jsonsafe.looks_safe({"f": value}, 21)
    with pytest.raises(jsonsafe.UnsafeJson) as raised:
        jsonsafe.check_field(value, "f", 20)
    assert raised.value.path == path


@pytest.mark.parametrize(
    "value",
    [
        nested(20),
        {"a.b": {"$c": [None, True, 1.5, -(10**299), "é😀", "\u0001"]}},
        {"": {"": ""}},
        "a literal \\u0000 is text, not a NUL",
        {"brackets": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{{{{{"},
        {"quote": '"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"'},
    ],
)
def test_what_can_be_stored_passes_both_checks(value: Any) -> None:
    jsonsafe.check_field(value, "f", 20)
    if "literal" not in str(value):
        assert jsonsafe.looks_safe({"f": value}, 21)


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("plain_key1", "p.plain_key1"),
        ("a.b", 'p["a.b"]'),
        ("", 'p[""]'),
        ('q"uote', 'p["q\\"uote"]'),
        ("x" * 100, 'p["' + "x" * 40 + '..."]'),
        ("\ud800\u0000", 'p["\\ud800\\u0000"]'),
    ],
)
def test_paths_are_printable_and_short(key: str, shown: str) -> None:
    assert jsonsafe.child("p", key) == shown
    shown.encode("ascii")


def test_deep_path_follows_keys_and_indexes() -> None:
    raw = b'{"a": [{}, "x", {"b": {"c": [[[[[1]]]]]}}], "d": 1}'
    assert jsonsafe.deep_path(raw, 5) == ["a", 2, "b", "c", 0]
    assert jsonsafe.deep_path(raw, 50) is None
    assert jsonsafe.render(["a", 2, "b.c", 0]) == 'a[2]["b.c"][0]'


def test_deep_path_of_a_body_too_deep_to_parse() -> None:
    raw = b'{"batch": [{"properties": {"p": ' + b"[" * 5_000 + b"]" * 5_000 + b"}}]}"
    with pytest.raises(RecursionError):
        jsonsafe.loads(raw)
    assert jsonsafe.deep_path(raw, 10) == ["batch", 0, "properties", "p", 0, 0, 0, 0, 0, 0]


def test_integers_too_long_for_the_parser_become_infinite() -> None:
    assert jsonsafe.loads(b"[" + b"9" * 5_000 + b"]") == [float("inf")]
    assert jsonsafe.loads(b"[" + b"9" * 300 + b"]") == [int("9" * 300)]
    assert json.dumps(jsonsafe.loads(b'{"a": 1.5}')) == '{"a": 1.5}'
