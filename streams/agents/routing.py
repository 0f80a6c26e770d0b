"""Answer a worker page on the worker that owns an account (faust's table routing).

faust's `table_route` decorator reads the key before the page can check its request (a
missing parameter is a 500); `on_owner` parses the request first (`streams.pages`,
400 naming the parameter), then routes it the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from streams.pages import BadPageRequest

Ask = TypeVar("Ask")


async def on_owner(
    app: faust.App,
    table: Any,
    view: View,
    request: Request,
    parse: Callable[[Iterable[tuple[str, str]]], Ask],
    answer: Callable[[Ask], Awaitable[Response]],
    account: Callable[[Ask], str] = str,
) -> Response:
    """`answer(parse(query))` on the worker that owns its `account` in `table`: here, or
    forwarded there by faust (query included; 503 while no worker holds the partition)."""
    try:
        ask = parse(request.query.items())
    except BadPageRequest as error:
        return view.json(error.document(), status=400)
    try:
        return await app.router.route_req(table.name, account(ask), view.web, request)
    except SameNode:
        return await answer(ask)
