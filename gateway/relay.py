"""Relay connections (``edges { cursor node }`` and ``pageInfo``) whose cursors are the
services' own page tokens: a page is always one service page, never a slice of a bigger list."""

from __future__ import annotations

from typing import Generic, TypeVar

import strawberry

from gateway.errors import BAD_USER_INPUT, client_error

NodeT = TypeVar("NodeT")


@strawberry.type(description="Where a page sits: pass endCursor as after for the next page.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool = strawberry.field(
        description="True when the page was asked for after a cursor."
    )
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="One node of a connection and the cursor right after it.")
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


@strawberry.type(description="A page of a list, Relay style.")
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    page_info: PageInfo


def connection(
    edges: list[Edge[NodeT]], next_page_token: str, after: str | None
) -> Connection[NodeT]:
    """A page of ``edges``; another page follows when the service gave a next page token."""
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=bool(next_page_token),
            has_previous_page=bool(after),
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=(edges[-1].cursor if edges else None) or next_page_token or None,
        ),
    )


def check_first(first: int, most: int) -> int:
    """``first`` of a connection, refused with a clear error outside 1..``most``."""
    if not 1 <= first <= most:
        raise client_error(f"first must be between 1 and {most}", BAD_USER_INPUT)
    return first
