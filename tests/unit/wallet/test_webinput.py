"""The PassKit web service's input checks: a capped body stops being read at the cap, JSON
is bounded, parameters are plain ASCII of bounded length, and no refusal repeats the input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.wallet.webinput import (
    MAX_BODY,
    MAX_DEPTH,
    InputProblem,
    json_object,
    pass_token,
    path_problem,
    read_capped,
    updated_since_tag,
)


class Endless:
    """An endless body of 10 KB chunks that counts how many were read."""

    def __init__(self) -> None:
        self.read = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            self.read += 1
            yield b"x" * 10_000


async def test_reading_stops_at_the_first_chunk_past_the_cap() -> None:
    body = Endless()
    with pytest.raises(InputProblem) as refused:
        await read_capped(None, body.chunks())
    assert refused.value.status == 413
    assert body.read == MAX_BODY // 10_000 + 1


@pytest.mark.parametrize(
    ("declared", "status"), [(str(MAX_BODY + 1), 413), ("9" * 40, 413), ("²", 400), ("-1", 400)]
)
async def test_a_declared_length_is_refused_before_any_chunk(declared: str, status: int) -> None:
    body = Endless()
    with pytest.raises(InputProblem) as refused:
        await read_capped(declared, body.chunks())
    assert refused.value.status == status
    assert body.read == 0


async def test_a_body_within_the_cap_is_read_whole() -> None:
    async def two() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b" 1}"

    assert await read_capped("10", two()) == b'{"a": 1}'


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested"),
        (b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "nested"),
        (b"[" * 50_000, "nested"),
        (b'{"n": ' + b"7" * 5_000 + b"}", "digits"),
        (b'{"n": -' + b"7" * 21 + b"}", "digits"),
        (b"[1]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"\xed\xa0\x80", "UTF-8"),
        (b"{", "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_odd_json_is_refused_by_name(body: bytes, named: str) -> None:
    with pytest.raises(InputProblem) as refused:
        json_object(body)
    assert refused.value.status == 400
    assert named in refused.value.message
    assert len(refused.value.message) < 120


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '{"logs": ["' + "[" * 1_000 + '", "a \\" [[[[ b"]}'
    assert json_object(text.encode()) == {"logs": ["[" * 1_000, 'a " [[[[ b']}
    lone = json_object(b'{"pushToken": "\\ud800", "n": 12345678901234567890}')
    assert lone == {"pushToken": "\ud800", "n": 12345678901234567890}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"deviceLibraryIdentifier": "abc\n"}, "deviceLibraryIdentifier"),
        ({"deviceLibraryIdentifier": "d" * 129}, "deviceLibraryIdentifier"),
        ({"deviceLibraryIdentifier": "dévice"}, "deviceLibraryIdentifier"),
        ({"passTypeIdentifier": "pass." + "a" * 300}, "passTypeIdentifier"),
        ({"passTypeIdentifier": "pass.com.x\n"}, "passTypeIdentifier"),
        ({"passTypeIdentifier": "com.example"}, "passTypeIdentifier"),
        ({"serialNumber": ""}, "serialNumber"),
        ({"serialNumber": "s" * 129}, "serialNumber"),
        ({"serialNumber": "s\ud800"}, "serialNumber"),
    ],
)
def test_path_parameters_are_bounded_ascii(params: dict[str, str], named: str) -> None:
    problem = path_problem(params)
    assert problem is not None
    assert named in problem
    assert "aaaa" not in problem


def test_good_path_parameters_pass() -> None:
    assert (
        path_problem(
            {
                "deviceLibraryIdentifier": "a" * 128,
                "passTypeIdentifier": "pass.com.example." + "a" * 200,
                "serialNumber": "0f3c-9.x_y",
            }
        )
        is None
    )


@pytest.mark.parametrize(
    "raw", ["²", "١٢", "", " 1", "1 ", "+1", "-1", "1e3", str(2**63), "9" * 5_000]
)
def test_tags_are_ascii_digits_within_int64(raw: str) -> None:
    with pytest.raises(InputProblem) as refused:
        updated_since_tag(raw)
    assert "passesUpdatedSince" in refused.value.message


def test_good_tags() -> None:
    assert updated_since_tag(None) is None
    assert updated_since_tag("0") == 0
    assert updated_since_tag(str(2**63 - 1)) == 2**63 - 1


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("ApplePass abc", "abc"),
        ("AndroidPass  abc ", "abc"),
        ("ApplePass " + "t" * 256, "t" * 256),
        ("ApplePass " + "t" * 257, None),
        ("ApplePass " + "t" * 1_000_000, None),
        ("ApplePass ", None),
        ("Bearer abc", None),
        ("", None),
        (None, None),
    ],
)
def test_pass_tokens_are_bounded(header: str | None, token: str | None) -> None:
    assert pass_token(header) == token
