"""The live status page of a ticket, /t/{status_token}, and its server-sent events.

A branch's events reach HQ over the branch link; ingest tells the hub which branches changed
and every open status stream of those branches re-reads its ticket at once. Streams also
re-read every KEEPALIVE_S (another HQ worker process may have ingested the events, and the
"works offline" banner depends on time passing). The page works without JavaScript (a
<noscript> meta refresh); live.js adds the push, a banner and a chime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from hq.core import HQ
from hq.pages import data
from hq.pages.app import LANG, T, PageError, render
from hq.pages.i18n import Translator
from hq.web import HQ_KEY, hq_of

logger = logging.getLogger(__name__)

KEEPALIVE_S = 10.0


class LiveHub:
    """Per process: one asyncio.Event per branch, set (and replaced) when its events arrive."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self.closing = False

    async def close(self, app: web.Application) -> None:
        """on_shutdown: wake every stream so it ends now instead of holding the shutdown."""
        self.closing = True
        self.changed(set(self._events))

    def changed(self, branches: set[str]) -> None:
        for b in branches:
            event = self._events.pop(b, None)
            if event is not None:
                event.set()

    def waiter(self, branch: str) -> asyncio.Event:
        event = self._events.get(branch)
        if event is None:
            event = self._events[branch] = asyncio.Event()
        return event

    async def stream(self, request: web.Request, branch: str, event: bytes,
                     body: Callable[[], Awaitable[bytes | None]]) -> web.StreamResponse:
        """Server-sent events for one page: *body* again each time the branch changes (or every
        KEEPALIVE_S), sent as *event* when it differs from the last one sent, a keep-alive comment
        otherwise. *body* answering None ends the stream (e.g. the visitor was logged out)."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        last = b""
        try:
            while not self.closing:
                waiter = self.waiter(branch)
                data = await body()
                if data is None:
                    break
                if data != last:
                    await response.write(b"event: " + event + b"\ndata: " + data + b"\n\n")
                    last = data
                else:
                    await response.write(b": keep-alive\n\n")
                with contextlib.suppress(TimeoutError):  # not wait_for: see hq/app.py
                    async with asyncio.timeout(KEEPALIVE_S):
                        await waiter.wait()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


HUB = web.AppKey("live_hub", LiveHub)
POLL_S = 0.25
FEED_SLACK = 1000


async def watch_other_workers(hq: HQ, hub: LiveHub) -> None:
    """With several HQ worker processes, the branch link may deliver events to another one:
    notice new rows of the shared events table (one indexed read per POLL_S per process) and
    wake this process's streams of those branches."""
    # SQLite's rowid grows in commit order (one writer). PostgreSQL's identity column is drawn at
    # insert, so a transaction may commit a lower id after a higher one was seen: look back
    # FEED_SLACK ids and skip the ids already seen.
    rid = "rowid" if hq.db.dialect == "sqlite" else "rid"
    slack = 0 if hq.db.dialect == "sqlite" else FEED_SLACK
    last = await hq.db.read(lambda c: c.execute(f"SELECT max({rid}) FROM events").fetchone()[0] or 0)
    seen: set[int] = set()
    while not hub.closing:
        await asyncio.sleep(POLL_S)
        try:
            rows = await hq.db.read(lambda c: c.execute(
                f"SELECT {rid}, branch FROM events WHERE {rid} > ? ORDER BY {rid} LIMIT 5000",
                (last - slack,)).fetchall())
        except Exception:  # a busy database must not end the watcher
            logger.exception("live status: reading new events failed")
            continue
        fresh = [r for r in rows if r[0] not in seen]
        if fresh:
            last = max(last, fresh[-1][0])
            if slack:
                seen.update(r[0] for r in fresh)
                seen = {i for i in seen if i > last - slack}
            hub.changed({r[1] for r in fresh})


WATCH = web.AppKey("live_watch", asyncio.Task)


async def _start_watch(app: web.Application) -> None:
    app[WATCH] = asyncio.create_task(watch_other_workers(app[HQ_KEY], app[HUB]), name="live-status-watch")


async def _stop_watch(app: web.Application) -> None:
    """on_shutdown: before the database closes (cleanup)."""
    task = app[WATCH]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def present(view: dict[str, Any], t: Translator, now: int, near_places: int, silent_after_s: int) -> dict[str, Any]:
    """The page's words for a ticket view, in the visitor's language (the stream sends the same)."""
    status, pos = view["status"], view["position"]
    alert = None
    if status == "called":
        alert = "called"
        headline = t("Called: please go to {counter}", counter=view["counter"] or t("the counter"))
    elif status == "serving":
        headline = t("Being served at {counter}", counter=view["counter"] or t("the counter"))
    elif status == "waiting" and pos is not None and pos <= near_places:
        alert = "near"
        headline = t("Your turn is near: please come to the waiting area")
    elif status == "waiting":
        headline = t("Waiting")
    elif status == "moved" and view.get("moved"):
        headline = t("Moved to {branch}. At its kiosk, enter code {code}: you keep your place.", **view["moved"])
    else:
        headline = {"completed": t("Served. Thank you for your visit."), "no_show": t("Missed: your number was called"
                    " but nobody came. Ask at the reception."), "cancelled": t("This ticket was cancelled.")}.get(status, status)
    heard = view["heard_at"]
    offline = None
    if heard is None or now - heard > silent_after_s:
        offline = (t("The office works offline right now; last heard at {time}. The place shown may be out of date.",
                     time=t.time(heard, view["timezone"])) if heard else
                   t("The office has not reached us yet; the place shown may be out of date."))
    return {"label": view["label"], "service": view["service"], "branch": view["branch"], "status": status,
            "headline": headline, "alert": alert,
            "position": t.number(pos) if pos is not None else "–",
            "ahead": t.number(view["people_ahead"]) if view["people_ahead"] is not None else "–",
            "wait": t.minutes(view["wait_s"]) if status == "waiting" else "–",
            "serving": [{"counter": s["counter"], "label": s["label"]} for s in view["serving"]],
            "offline": offline}


async def _view(request: web.Request, token: str) -> dict[str, Any] | None:
    hq: HQ = hq_of(request)
    now, lang = hq.now(), request[LANG]

    def load(c: Any) -> dict[str, Any] | None:
        found = data.live.ticket_by_token(c, token)
        heard = hq.last_heard.get(found[0]) if found else None
        return data.ticket_view(c, token, now, lang, hq.settings.default_service_s, heard)
    view = await hq.db.read(load)
    if view is None:
        return None
    s = hq.settings
    return present(view, request[T], now, s.turn_near_places, s.branch_silent_after_s)


async def status_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    shown = await _view(request, token)
    if shown is None:
        raise PageError(404, "We do not know this ticket. Check the link, or scan the QR code on your ticket again.")
    return render(request, "status.html", s=shown, token=token)


async def status_events(request: web.Request) -> web.StreamResponse:
    hq: HQ = hq_of(request)
    token = request.match_info["token"]
    found = await hq.db.read(lambda c: data.live.ticket_by_token(c, token))
    if found is None:
        raise PageError(404, "We do not know this ticket. Check the link, or scan the QR code on your ticket again.")

    async def body() -> bytes:
        return orjson.dumps(await _view(request, token))

    return await request.app[HUB].stream(request, found[0], b"status", body)


def add_routes(app: web.Application) -> None:
    hub = app[HUB] = LiveHub()
    app[HQ_KEY].branch_listeners.append(hub.changed)
    app.on_shutdown.append(hub.close)
    if app[HQ_KEY].settings.workers > 1:  # one process hears its own ingests directly
        app.on_startup.append(_start_watch)
        app.on_shutdown.append(_stop_watch)
    app.router.add_get("/t/{token}", status_page)
    app.router.add_get("/t/{token}/events", status_events)
