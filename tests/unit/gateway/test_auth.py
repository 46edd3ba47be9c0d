"""The gateway's credentials: Basic write key, Bearer API key, constant-time comparison."""

from __future__ import annotations

import base64

import pytest
from starlette.datastructures import Headers

from gateway.auth import bearer_token_from, same_secret, write_key_from


def authorization(value: str) -> Headers:
    return Headers({"Authorization": value})


def basic(credentials: bytes) -> Headers:
    return authorization("Basic " + base64.b64encode(credentials).decode())


def test_write_key_is_the_basic_username_with_empty_password() -> None:
    assert write_key_from(basic(b"wk_live_123:")) == "wk_live_123"


def test_write_key_ignores_a_password() -> None:
    assert write_key_from(basic(b"wk_live_123:secret")) == "wk_live_123"


def test_write_key_without_colon_is_the_whole_credential() -> None:
    assert write_key_from(basic(b"wk_live_123")) == "wk_live_123"


def test_basic_scheme_is_case_insensitive() -> None:
    encoded = base64.b64encode(b"wk:").decode()
    assert write_key_from(authorization(f"basic {encoded}")) == "wk"
    assert write_key_from(authorization(f"BASIC {encoded}")) == "wk"


@pytest.mark.parametrize(
    "value",
    [
        "Basic !!!not-base64!!!",
        "Basic abc",  # truncated base64
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b":password").decode(),  # empty username
        "Basic ",
        "Basic",
        "Bearer " + base64.b64encode(b"wk:").decode(),
        "",
    ],
)
def test_unusable_basic_credentials_give_none(value: str) -> None:
    assert write_key_from(authorization(value)) is None


def test_no_authorization_header_gives_none() -> None:
    assert write_key_from(Headers({})) is None
    assert bearer_token_from(Headers({})) is None


def test_bearer_token() -> None:
    assert bearer_token_from(authorization("Bearer ak_123")) == "ak_123"
    assert bearer_token_from(authorization("bearer ak_123 ")) == "ak_123"


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    ", "Basic ak_123", "ak_123"])
def test_missing_bearer_token_gives_none(value: str) -> None:
    assert bearer_token_from(authorization(value)) is None


def test_same_secret() -> None:
    assert same_secret("wk_live_123", "wk_live_123")
    assert not same_secret("wk_live_124", "wk_live_123")
    assert not same_secret("wk_live_12", "wk_live_123")
    assert not same_secret("", "wk_live_123")
    assert not same_secret(None, "wk_live_123")


def test_same_secret_handles_non_ascii() -> None:
    assert same_secret("clé-secrète", "clé-secrète")
    assert not same_secret("cle-secrete", "clé-secrète")
