"""Run a node: open the store, serve the local API, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from appliance.api import create_app
from appliance.config import Config
from appliance.node import Node
from appliance.services import build_services

logger = logging.getLogger(__name__)


async def serve(config: Config, *, on_ready: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    node = Node(config)
    await asyncio.to_thread(node.open)
    await node.start(build_services(config))
    app = create_app(node)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        await node.stop()
        raise SystemExit(f"cannot listen on {config.listen_host}:{config.listen_port}: {err.strerror}") from err
    sockets = runner.addresses
    host, port = sockets[0][:2] if sockets else (config.listen_host, config.listen_port)
    url = f"http://{host}:{port}"
    logger.info("node %s (%s, branch %s) serving %s", config.device_id, config.role, config.branch_id, url)
    if on_ready is not None:
        on_ready(url)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        await stop.wait()
    finally:
        logger.info("stopping node %s", config.device_id)
        await runner.cleanup()
        await node.stop()
