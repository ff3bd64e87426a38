"""Run HQ: ``serve(settings)`` inside a loop, ``run(config_path)`` as a blocking entry point.

With ``workers`` > 1, ``run`` starts that many server processes on one port: each listening
socket sets SO_REUSEPORT (Linux spreads new connections over them) and each process has its
own writer thread on the same SQLite file. Capacity stays safe because a booking's count and
insert run inside one ``BEGIN IMMEDIATE`` transaction, which SQLite serializes across processes.
Worker 0 (the parent) migrates the database, creates the key and the bootstrap admin before the
others start, and is the only one running the scheduler and the notification dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
from pathlib import Path

from aiohttp import web

from hq.app import create_app, open_hq
from hq.settings import Settings, load_settings

logger = logging.getLogger(__name__)


async def serve(settings: Settings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, reuse_port: bool | None = None) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); ``ready`` is set once listening.

    ``reuse_port`` (default: ``settings.workers > 1``) lets several processes listen on one port.
    """
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    share = settings.workers > 1 if reuse_port is None else reuse_port
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=share or None)
    await site.start()
    if settings.link_tls_port:
        from hq.linktls import LinkTLS
        from hq.web import HQ_KEY
        hq = app[HQ_KEY]
        tls = LinkTLS(settings.data_dir, hq.key, settings.key_path).server_context()
        await web.TCPSite(runner, settings.host, settings.link_tls_port, ssl_context=tls,
                          reuse_port=share or None).start()
    logger.info("HQ listening on %s", ", ".join(str(a) for a in runner.addresses))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _shared_port(host: str) -> int:
    """A free port for ``port = 0`` with several workers (they must all bind the same one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _worker(config_path: str, index: int, port: int) -> None:
    """Entry point of worker ``index`` >= 1 (a spawned process): serve only, no background jobs."""
    settings = load_settings(config_path).replace(port=port, scheduler_enabled=False)
    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s %(levelname)s hq-worker-{index} %(name)s: %(message)s")
    asyncio.run(serve(settings, reuse_port=True))


def run(config_path: str | Path) -> None:
    settings = load_settings(config_path)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers <= 1:
        asyncio.run(serve(settings))
        return
    if settings.port == 0:
        settings = settings.replace(port=_shared_port(settings.host))
    open_hq(settings).db.close()  # migrations, key, bootstrap admin: once, before any worker opens the file
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=_worker, args=(str(config_path), i, settings.port), name=f"hq-worker-{i}")
                for i in range(1, settings.workers)]
    for child in children:
        child.start()
    logger.info("HQ workers: parent %d and %s on port %d", multiprocessing.current_process().pid,
                ", ".join(str(c.pid) for c in children), settings.port)
    try:
        asyncio.run(serve(settings, reuse_port=True))
    finally:
        for child in children:  # by PID, each one we started
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join(5)
