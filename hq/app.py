"""The HQ application factory: ``create_app(settings) -> web.Application``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from hq import outbox
from hq.auth import hash_password
from hq.core import HQ, Clock, WallClock
from hq.db import open_database
from hq.link import add_link_routes
from hq.gateways import Gateway, HttpSmsGateway, LogGateway, SmtpGateway
from hq.metrics import setup_metrics
from hq.notify import Dispatcher
from hq.console.views import setup_console
from hq.pages.app import setup_pages
from hq.ratelimit import RateLimiter
from hq.routes import add_routes
from hq.scheduler import start_scheduler
from hq.settings import Settings
from hq.signing import load_or_create_key
from hq.web import BOOKING_LIMITER, HQ_KEY, LOGIN_LIMITER, error_middleware

logger = logging.getLogger(__name__)

DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)


def open_hq(settings: Settings, *, clock: Clock | None = None, rng: random.Random | None = None) -> HQ:
    """Open the database (migrated), load or create the HQ key, bootstrap the first admin."""
    db = open_database(settings.database_url, data_dir=settings.data_dir, readers=settings.read_connections,
                       pool_size=settings.pool_size)
    db.write_sync(lambda c: None)  # SQLite: creates the file and WAL before readers open it
    db.migrate()
    key = load_or_create_key(settings.key_path)
    if db.dialect == "postgresql":  # booking events are chained after their commit (hq/outbox.py)
        db.chain = lambda c: outbox.sequence(c, key) >= outbox.SEQUENCE_BATCH  # True: more may wait
        db.write_sync(db.chain)  # what a process that died before chaining left queued
    hq = HQ(settings=settings, db=db, key=key, clock=clock or WallClock())
    if rng is not None:
        hq.rng = rng
    if settings.bootstrap_admin_email and settings.bootstrap_admin_password:
        def bootstrap(c):  # type: ignore[no-untyped-def]
            if c.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0:
                encoded = hash_password(settings.bootstrap_admin_password, memory_kib=settings.argon2_memory_kib,
                                        iterations=settings.argon2_iterations, lanes=settings.argon2_lanes)
                c.execute("INSERT INTO users (email, name, password_hash, role, created_at) VALUES (?, ?, ?, 'super_admin', ?)",
                          (settings.bootstrap_admin_email.lower(), "bootstrap admin", encoded, hq.now()))
                logger.info("created bootstrap super admin %s", settings.bootstrap_admin_email)
        db.write_sync(bootstrap)
    return hq


def create_app(settings: Settings, *, clock: Clock | None = None, rng: random.Random | None = None,
               gateways: dict[str, Gateway] | None = None) -> web.Application:
    hq = open_hq(settings, clock=clock, rng=rng)
    app = web.Application(middlewares=[error_middleware], client_max_size=256 * 1024)
    app[HQ_KEY] = hq
    wall = hq.clock.now
    app[BOOKING_LIMITER] = RateLimiter("booking", settings.booking_rate_per_minute, settings.booking_rate_burst, wall,
                                       hq.db)
    app[LOGIN_LIMITER] = RateLimiter("login", settings.login_rate_per_minute, 5, wall, hq.db)
    app[DISPATCHER_KEY] = Dispatcher(hq, dict(gateways or {}))
    setup_metrics(app, hq)  # GET /metrics, request and database figures (hq/metrics.py)
    add_routes(app)
    add_link_routes(app, hq)
    setup_pages(app)  # the citizens' web pages (hq/pages, docs/web.md)
    setup_console(app)  # the staff console (hq/console, docs/console.md)
    app.cleanup_ctx.append(_background(gateways is None))
    return app


def _background(build_gateways: bool):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        hq, dispatcher = app[HQ_KEY], app[DISPATCHER_KEY]
        s = hq.settings
        hq.notify_wakeup = asyncio.Event()
        session = aiohttp.ClientSession()
        if build_gateways:
            dispatcher.gateways["email"] = SmtpGateway(s) if s.email_gateway == "smtp" else LogGateway()
            dispatcher.gateways["sms"] = HttpSmsGateway(s, session) if s.sms_gateway == "http" else LogGateway()
        tasks: set[asyncio.Task[None]] = set()
        scheduler = None
        if s.scheduler_enabled:
            await dispatcher.recover()
            task = asyncio.create_task(_dispatch_loop(hq, dispatcher), name="hq-notify")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            scheduler = start_scheduler(hq)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            for task in list(tasks):
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await session.close()
            hq.db.close()
    return ctx


async def _dispatch_loop(hq: HQ, dispatcher: Dispatcher) -> None:
    assert hq.notify_wakeup is not None
    while True:
        try:
            await dispatcher.run_once()
        except Exception:
            logger.exception("notification dispatch failed")
        # Not asyncio.wait_for: on 3.11 it swallows a cancel that comes as the wake-up does,
        # and the loop would outlive shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(hq.settings.notify_poll_s):
                await hq.notify_wakeup.wait()
        hq.notify_wakeup.clear()
