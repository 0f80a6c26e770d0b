"""The console's pages: each handler asks the edge's JSON API (in-process, with the
user's API key) and renders a template. `/console/...`, outside the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from connectors.console.chart import Series, colour_of, line_chart
from connectors.console.export import to_csv
from connectors.console.session import COOKIE, PATH, Sessions
from streams.settings import Settings

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATUSES = ("PENDING", "APPROVED", "LOCKED")
TEMPLATES = Jinja2Templates(directory=HERE / "templates")


class LoginNeeded(Exception):
    """No valid session (or the key was refused): back to the login page."""


class ApiFailure(Exception):
    """The JSON API answered an error: shown on the page with its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConsoleRoute(APIRoute):
    """A page: no session sends to the login page; every answer gets security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginNeeded:
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                response = RedirectResponse(f"{PATH}/login?next={target}", 303)
            response.headers.update(SECURITY_HEADERS)
            return response

        return handle


class Api:
    """The edge's JSON API, called in-process with the user's key."""

    def __init__(self, app: FastAPI, org_id: str) -> None:
        self.transport = httpx.ASGITransport(app=app)
        self.base = f"/organizations/{org_id}"

    async def call(
        self, key: str, method: str, path: str, *, login: bool = False, **options: Any
    ) -> Any:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=self.transport, base_url="http://edge", headers=headers, timeout=30
        ) as client:
            answer = await client.request(method, self.base + path, **options)
        if answer.status_code == 401 and not login:
            raise LoginNeeded()
        if answer.status_code >= 400:
            try:
                message = str(answer.json().get("message"))
            except ValueError:
                message = answer.text[:300]
            raise ApiFailure(answer.status_code, message)
        return answer.json()


def console_router(settings: Settings, app: FastAPI, sessions: Sessions) -> APIRouter:
    router = APIRouter(prefix=PATH, route_class=ConsoleRoute, include_in_schema=False)
    api = Api(app, settings.org_id)

    def key_of(request: Request) -> str:
        key = sessions.key_of(request.cookies.get(COOKIE))
        if key is None:
            raise LoginNeeded()
        return key

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        cookie = request.cookies.get(COOKIE) or ""
        context |= {
            "csrf": sessions.csrf_token(cookie),
            "org": settings.org_id,
            "path": request.url.path,
        }
        return TEMPLATES.TemplateResponse(request, name, context, status_code=status)

    @router.get("")
    async def home() -> Response:
        return RedirectResponse(f"{PATH}/accounts", 303)

    @router.get("/login")
    async def login_form(request: Request, next: str = f"{PATH}/accounts") -> Response:
        return page(request, "login.html", next=next)

    @router.post("/login")
    async def login(request: Request, key: str = Form(""), next: str = Form("")) -> Response:
        try:
            await api.call(key, "GET", "/accounts", params={"limit": 1}, login=True)
        except ApiFailure as failure:
            return page(request, "login.html", 401, next=next, error=str(failure))
        target = next if next.startswith(PATH + "/") else f"{PATH}/accounts"
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE, sessions.cookie_for(key), path=PATH, httponly=True, samesite="strict"
        )
        return response

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse(f"{PATH}/login", 303)
        response.delete_cookie(COOKIE, path=PATH)
        return response

    @router.get("/accounts")
    async def accounts(request: Request, q: str = "") -> Response:
        found = await api.call(key_of(request), "GET", "/accounts", params={"search": q})
        return page(request, "accounts.html", q=q, accounts=found["data"])

    @router.get("/usage")
    async def usage(request: Request) -> Response:
        key = key_of(request)
        form = UsageForm.of(request)
        codes = (await api.call(key, "GET", "/aggregations"))["data"]
        context: dict[str, Any] = {"form": form, "codes": codes}
        if form.ready:
            try:
                context |= await usage_view(api, key, form)
            except ApiFailure as failure:
                context["error"] = str(failure)
        return page(request, "usage.html", **context)

    @router.get("/usage.csv")
    async def usage_csv(request: Request) -> Response:
        form = UsageForm.of(request)
        if not form.ready:
            return Response("give account(s) and aggregation(s)\n", 400, media_type="text/plain")
        rows = (await api.call(key_of(request), "POST", "/usage/query", json=form.query(True)))[
            "data"
        ]
        header = ("timestamp", "account", "aggregation", "function", "value", "count")
        body = to_csv(
            header, ([r.get(h if h != "account" else "accountId") for h in header] for r in rows)
        )
        disposition = 'attachment; filename="usage.csv"'
        return Response(body, media_type="text/csv", headers={"Content-Disposition": disposition})

    @router.get("/bills")
    async def bills(
        request: Request, status: str = "", period: str = "", account: str = ""
    ) -> Response:
        params = {"account": account} if account else {}
        found = (await api.call(key_of(request), "GET", "/bills", params=params))["data"]
        shown = [b for b in found if (not status or b["status"] == status) and in_period(b, period)]
        shown.sort(key=lambda b: (b["startDate"], b["accountCode"]), reverse=True)
        filters = {"status": status, "period": period, "account": account}
        return page(request, "bills.html", bills=shown, statuses=STATUSES, filters=filters)

    @router.get("/bills/{bill_id}")
    async def bill(request: Request, bill_id: str, done: str = "") -> Response:
        return page(
            request, "bill.html", done=done, **await bill_view(api, key_of(request), bill_id)
        )

    @router.post("/bills/{bill_id}/status")
    async def change_status(
        request: Request, bill_id: str, status: str = Form(...), csrf: str = Form("")
    ) -> Response:
        key = key_of(request)
        if not sessions.csrf_ok(request.cookies.get(COOKIE), csrf):
            raise LoginNeeded()
        path = f"/bills/{quote(bill_id, safe='')}"
        try:
            if status == "LOCKED":
                await api.call(key, "PUT", f"{path}/lock")
            else:
                await api.call(key, "PUT", f"{path}/status", json={"status": status})
        except ApiFailure as failure:
            context = await bill_view(api, key, bill_id)
            return page(request, "bill.html", failure.status, error=str(failure), **context)
        return RedirectResponse(f"{PATH}/bills/{quote(bill_id, safe='')}?done={status}", 303)

    @router.get("/deadletters")
    async def dead_letters(request: Request, topic: str = "") -> Response:
        found = await api.call(key_of(request), "GET", "/deadletters")
        letters = [d for d in found["data"] if not topic or d["topic"] == topic]
        context = {"topics": found["topics"], "unreadable": found["unreadable"], "topic": topic}
        return page(request, "deadletters.html", letters=letters, **context)

    @router.get("/health")
    async def health(request: Request, live: bool = False) -> Response:
        found = await api.call(key_of(request), "GET", "/health")
        name = "health_live.html" if live else "health.html"
        return page(request, name, health=found, at=datetime.now(UTC).strftime("%H:%M:%S UTC"))

    return router


# --- what the pages compute -------------------------------------------------------------


class UsageForm:
    """The usage explorer's inputs, from the query string."""

    def __init__(
        self, accounts: list[str], codes: list[str], start: str, end: str, group: str
    ) -> None:
        self.accounts, self.codes, self.start, self.end, self.group = (
            accounts,
            codes,
            start,
            end,
            group,
        )

    @classmethod
    def of(cls, request: Request) -> UsageForm:
        query = request.query_params
        accounts = [a.strip() for a in query.get("accounts", "").split(",") if a.strip()]
        today = date.today()
        start = query.get("start") or (today - timedelta(days=30)).isoformat()
        end = query.get("end") or (today + timedelta(days=1)).isoformat()
        group = query.get("group") if query.get("group") in ("HOUR", "DAY") else "DAY"
        return cls(accounts, query.getlist("aggregation"), start, end, group or "DAY")

    @property
    def ready(self) -> bool:
        return bool(self.accounts and self.codes)

    def query(self, grouped: bool) -> dict[str, Any]:
        return {
            "startDate": f"{self.start}T00:00:00Z",
            "endDate": f"{self.end}T00:00:00Z",
            "accountIds": self.accounts,
            "aggregations": self.codes,
            "timeGroup": self.group if grouped else None,
        }

    def export_url(self) -> str:
        pairs = [("accounts", ",".join(self.accounts)), ("start", self.start), ("end", self.end)]
        pairs += [("group", self.group), *(("aggregation", c) for c in self.codes)]
        return f"{PATH}/usage.csv?{urlencode(pairs)}"


async def usage_view(api: Api, key: str, form: UsageForm) -> dict[str, Any]:
    """The chart (one series per account and aggregation), its rows and exact totals."""
    rows = (await api.call(key, "POST", "/usage/query", json=form.query(True)))["data"]
    totals = (await api.call(key, "POST", "/usage/query", json=form.query(False)))["data"]
    series: dict[tuple[str, str], Series] = {}
    for row in rows:
        label = (row["accountId"], row["aggregation"])
        one = series.setdefault(label, Series(f"{label[1]} of {label[0]}", []))
        one.points.append((row["timestamp"], Decimal(row["value"] or 0)))
    legend = [
        {
            "label": f"{t['aggregation']} of {t['accountId']}",
            "total": t["value"],
            "colour": colour_of(i),
        }
        for i, t in enumerate(sorted(totals, key=lambda t: (t["accountId"], t["aggregation"])))
    ]
    ordered = [series[k] for k in sorted(series)]
    title = f"{', '.join(form.codes)} per {form.group.lower()} of {', '.join(form.accounts)}"
    return {
        "chart": line_chart(ordered, title),
        "rows": rows,
        "legend": legend,
        "export": form.export_url(),
    }


async def bill_view(api: Api, key: str, bill_id: str) -> dict[str, Any]:
    """A bill, its versions, and the sink's and Stripe's view of it, line by line."""
    path = f"/bills/{quote(bill_id, safe='')}"
    bill = await api.call(key, "GET", path)
    versions = (await api.call(key, "GET", f"{path}/versions"))["data"]
    stripe = await api.call(key, "GET", f"{path}/stripe")
    return {
        "bill": bill,
        "versions": versions,
        "stripe": stripe,
        "lines": stripe_lines(bill, stripe),
    }


def stripe_lines(bill: dict[str, Any], stripe: dict[str, Any]) -> list[dict[str, Any]]:
    """Each bill line beside the amount Stripe holds for it and whether they agree."""
    from streams.money import to_stripe_amount

    items = {item["lineId"]: item for item in stripe["stripe"]["items"] or []}
    out = []
    for line in bill["lines"]:
        wanted = to_stripe_amount(Decimal(line["subtotal"]), bill["currency"])
        item = items.get(line["id"])
        out.append(
            {
                "line": line["id"],
                "expected": wanted,
                "item": item,
                "agrees": item is not None and item["amount"] == wanted,
            }
        )
    return out


def in_period(bill: dict[str, Any], period: str) -> bool:
    """Whether the bill's period contains the day `period` (YYYY-MM-DD; empty: any)."""
    if not period:
        return True
    try:
        day = datetime.fromisoformat(period).replace(tzinfo=UTC)
    except ValueError:
        return True
    start = datetime.fromisoformat(bill["startDate"])
    return start < day + timedelta(days=1) and day < datetime.fromisoformat(bill["endDate"])
