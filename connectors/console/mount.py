"""Adds the console to the HTTP edge: its JSON read routes, its pages and its assets."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from connectors.bill_view import BillView
from connectors.console.api import Sources, console_api
from connectors.console.kafka_reads import TopicMirror
from connectors.console.pages import console_router
from connectors.console.session import PATH, Sessions
from connectors.http.auth import OrgAccess
from streams.settings import Settings


def mount_console(
    app: FastAPI, settings: Settings, bills: BillView, access: OrgAccess
) -> TopicMirror:
    """Route `/console` and the console's API on `app`; the returned mirror is started
    and stopped with the app (its lifespan)."""
    mirror = TopicMirror(settings.kafka, Sources.of(settings).mirrored())
    app.include_router(console_api(settings, mirror, bills, access))
    app.include_router(console_router(settings, app, Sessions()))
    static = StaticFiles(directory=Path(__file__).parent / "static")
    app.mount(f"{PATH}/static", static, name="console-static")
    return mirror
