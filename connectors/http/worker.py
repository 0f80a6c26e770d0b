"""How the HTTP edge asks a worker for state (`streams.pages`), and what it answers when
the worker cannot: 503 with Retry-After when no worker answers or the owner is not
available (rebalancing, recovering its tables), 502 when a worker answers with an error.

The edge asks one worker (`settings.worker_base_url`); faust forwards the request to the
worker that owns the account. With several workers, `METERLINE_WORKER_URL` may list them
(comma-separated): a worker that does not take the connection (killed, restarting) is
skipped for the next one. Values go as encoded query parameters (`streams.pages`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson

from connectors.http.edge import ApiError, unavailable
from streams.pages import Params


class Worker:
    """Where a worker answers, how long to wait for it, and (in tests) a stand-in transport."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_urls = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        self.base_url = ", ".join(self.base_urls)
        self.timeout_s = timeout_s
        self.transport = transport
        # made once: httpx builds an SSL context for every client otherwise, loading the CA
        # bundle (~16 ms of the event loop per usage query, even for http:// workers)
        self._tls = httpx.create_ssl_context()

    def client(self) -> httpx.AsyncClient:
        """A client for the requests of one API call (close it: `async with`)."""
        return httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport, verify=self._tls)

    async def get(
        self, client: httpx.AsyncClient, page: str, params: Params, *, subject: str
    ) -> httpx.Response:
        """The worker's 200 or 404 answer to `page?params`; ApiError 503 or 502 otherwise.

        `subject` names what was asked for in the messages (e.g. "account 'acme'").
        """
        answer = await self._first_answer(client, page, params)
        if answer.status_code in (200, 404):
            return answer
        if answer.status_code == 503:
            raise unavailable(f"the worker owning {subject} is not available; retry")
        raise bad_gateway(
            f"the worker answered {answer.status_code} for {subject}: {answer.text[:200]}"
        )

    async def _first_answer(
        self, client: httpx.AsyncClient, page: str, params: Params
    ) -> httpx.Response:
        """The answer of the first worker that takes the connection; 503 if none does, or
        if the one that took it did not answer in time."""
        refused = []
        for base in self.base_urls:
            try:
                return await client.get(f"{base}{page}", params=tuple(params))
            except httpx.TimeoutException:
                raise unavailable(
                    f"no worker answered at {base} within {self.timeout_s} s"
                ) from None
            except httpx.HTTPError as exc:
                refused.append(f"{base}: {exc!r}")
        raise unavailable("no worker answered at " + "; ".join(refused))


def read_document(answer: httpx.Response, shape: Callable[[Any], Any]) -> Any:
    """`shape(JSON of answer)`, or 502 when the worker's answer is not what it should be
    (`shape` raises KeyError, TypeError or ValueError on a document of another shape)."""
    try:
        return shape(orjson.loads(answer.content))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise bad_gateway(f"the worker answered a document the edge cannot read: {exc!r}") from None


def bad_gateway(message: str) -> ApiError:
    return ApiError(502, "bad_gateway", message)
