"""Property-based hostile input against the PassKit web service (Apple's protocol) of the
running platform: odd path parameters, tokens, query values, headers and bodies.

Oracle: never a 5xx (a 400/413 says what is wrong); afterwards no process died and no log
holds a traceback or an ERROR.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from infra.local.stack import Stack
from tests.security.hostile import FUZZ, ODD_STRINGS, dumps, json_values, raw_bodies, strings
from tests.security.oracle import Baseline, passkit_problem

pytestmark = pytest.mark.e2e

# Path segments as they travel: percent-encoded text, and raw bytes that are not UTF-8.
RAW_SEGMENTS = ["%ED%A0%80", "%FF%FE", "%00", "%2F..%2F", "a" * 5000, "%25%25", "."]
UPDATED_SINCE = ["²", "9" * 5000, str(2**63), str(-1), "-5", "1e9", " 1", "0x10", "", "١٢٣"]


segments = st.one_of(
    st.sampled_from(RAW_SEGMENTS),
    strings.map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
    st.sampled_from(["pass.com.example.lodestar", "device-1", "serial-1"]),
)
tokens = st.one_of(
    st.sampled_from([*ODD_STRINGS, "x" * 100_000, "\r\nX-Injected: 1"]),
    st.text(max_size=40),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """``(method, path, headers, body)`` of one PassKit call with hostile parts."""
    route = draw(st.sampled_from(["register", "unregister", "serials", "pass", "log"]))
    device, pass_type, serial = draw(segments), draw(segments), draw(segments)
    headers = {"Content-Type": "application/json"}
    if draw(st.booleans()):
        token = draw(tokens)
        # Header values must be latin-1 on the wire; what cannot be is sent as its escapes
        # (and without the surrounding blanks HTTP does not allow).
        escaped = token.encode("unicode_escape").decode("ascii")
        headers["Authorization"] = f"ApplePass {escaped}".strip()
    if draw(st.booleans()):
        body = draw(raw_bodies())
    else:
        body = dumps(draw(st.fixed_dictionaries({"pushToken": json_values}) | json_values))
    if route in ("register", "unregister"):
        method = "POST" if route == "register" else "DELETE"
        return method, f"/v1/devices/{device}/registrations/{pass_type}/{serial}", headers, body
    if route == "serials":
        since = draw(st.sampled_from(UPDATED_SINCE) | strings)
        query = quote(since.encode("utf-8", "surrogatepass"), safe="")
        path = f"/v1/devices/{device}/registrations/{pass_type}?passesUpdatedSince={query}"
        return "GET", path, headers, b""
    if route == "pass":
        if draw(st.booleans()):
            headers["If-Modified-Since"] = draw(st.sampled_from(["x", "0", "Thu, 01 Jan 9999"]))
        return "GET", f"/v1/passes/{pass_type}/{serial}", headers, b""
    logs = draw(st.one_of(json_values, st.lists(strings, max_size=5)))
    return "POST", "/v1/log", headers, draw(st.just(dumps({"logs": logs})) | raw_bodies())


def test_hostile_passkit_calls(stack: Stack, client: httpx.Client) -> None:
    baseline = asyncio.run(Baseline.take(stack))
    codes: dict[int, int] = {}

    @FUZZ
    @given(request=requests())
    def one(request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = request
        # httpx itself refuses a URL past 64 KiB; the servers' 431 for heads past 16 KiB is
        # checked in test_probe_cases.
        assume(len(stack.passkit_url) + len(path) < 65_536)
        response = client.request(
            method, f"{stack.passkit_url}{path}", headers=headers, content=body or None
        )
        codes[response.status_code] = codes.get(response.status_code, 0) + 1
        problem = passkit_problem(response)
        assert problem is None, f"{method} {path[:200]} {body[:200]!r}: {problem}"

    one()
    # Still serving after the run.
    assert client.get(f"{stack.passkit_url}/healthz").status_code == 200
    problems = asyncio.run(baseline.problems())
    assert problems == [], problems
    assert any(400 <= code < 500 for code in codes), codes


def test_a_30_mb_log_body_is_refused_without_reading_it(stack: Stack) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        chunk = b"x" * 65_536
        for _ in range(480):  # 30 MiB
            sent += len(chunk)
            yield chunk

    with httpx.Client(timeout=30) as http:
        try:
            response = http.post(f"{stack.passkit_url}/v1/log", content=body())
        except httpx.TransportError:
            response = None  # the server closed the connection mid-upload: also a refusal
    if response is not None:
        assert response.status_code == 413, response.text
    assert sent < 30 * 1024 * 1024, "the whole body was read before the refusal"
