"""The stores' MongoDB client: a stalled server fails an operation after a bounded time
rather than holding its caller for ever, and an operator's URI can say otherwise."""

from __future__ import annotations

from pymongo.client_options import ClientOptions

from services.platform.mongo import SOCKET_TIMEOUT_MS, mongo_client


async def test_replies_are_awaited_for_a_bounded_time_by_default() -> None:
    client = mongo_client("mongodb://127.0.0.1:1/", "tests")
    try:
        options: ClientOptions = client.delegate.options
        assert options.pool_options.socket_timeout == SOCKET_TIMEOUT_MS / 1000
        assert options.pool_options.connect_timeout == 5.0
        assert options.server_selection_timeout == 5.0
    finally:
        client.close()


async def test_a_uri_naming_its_own_socket_timeout_keeps_it() -> None:
    client = mongo_client("mongodb://127.0.0.1:1/?socketTimeoutMS=7000", "tests")
    try:
        options: ClientOptions = client.delegate.options
        assert options.pool_options.socket_timeout == 7.0
    finally:
        client.close()
