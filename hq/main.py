"""Run HQ: ``serve(settings)`` inside a loop, ``run(config_path)`` as a blocking entry point.

With ``workers`` > 1, ``run`` is a supervisor: it migrates the database, creates the key and
the bootstrap admin, then starts that many server processes on one port and restarts any that
dies (:class:`Supervisor`). Each listening socket sets SO_REUSEPORT (Linux spreads new
connections over them) and each process has its own writer on the same database. Capacity stays
safe because a booking's count and insert run inside one write transaction, which the database
serializes across processes. Worker 0 alone runs the scheduler and the notification dispatcher.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

from aiohttp import web

from appliance.metrics import MULTIPROC_ENV
from hq.app import create_app, open_hq
from hq.settings import Settings, SettingsError, load_settings

logger = logging.getLogger(__name__)

PARENT_CHECK_S = 1.0  # how often a worker checks that its supervisor is alive
RESTART_MIN_S = 0.5  # delay before replacing a worker that had run a while
RESTART_RESET_S = 30.0  # a worker that lived longer than this resets its restart delay
RESTART_MAX_S = 30.0  # longest delay between restarts of a worker that keeps dying at start
GC_YOUNG_THRESHOLD = 20_000  # allocations between young-generation collections (CPython: 700)

# Connections the kernel holds for accept() per listening socket (aiohttp's default is 128; Linux
# caps it at net.core.somaxconn, 4096 by default). When many clients connect at once (a load
# balancer's pool opening, 1,000 citizens at 09:00) a full queue drops their SYNs, and each
# waits a whole second for its retransmission (TcpExtListenOverflows in nstat).
LISTEN_BACKLOG = 2048


def tune_gc() -> None:
    """For a serving process, once its app is set up: the objects made so far (modules, the
    app, its routes, translations) move to the permanent generation, so the cyclic collector
    stops walking them, and young collections run every 20,000 allocations instead of 700.
    Under a booking storm the collector took about 6% of HQ's CPU (perf: gc_collect_main,
    visit_decref, visit_reachable), most of it re-walking what lives as long as the process.
    Cycles are still collected; only less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


async def serve(settings: Settings, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, reuse_port: bool | None = None, own_process: bool = False) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); ``ready`` is set once listening.

    ``reuse_port`` (default: ``settings.workers > 1``) lets several processes listen on one port.
    ``own_process``: the process does nothing else (``python -m hq``): :func:`tune_gc`.
    """
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    share = settings.workers > 1 if reuse_port is None else reuse_port
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=share or None, backlog=LISTEN_BACKLOG)
    await site.start()
    if settings.link_tls_port:
        from hq.linktls import LinkTLS
        from hq.web import HQ_KEY
        hq = app[HQ_KEY]
        tls = LinkTLS(settings.data_dir, hq.key, settings.key_path).server_context()
        await web.TCPSite(runner, settings.host, settings.link_tls_port, ssl_context=tls,
                          reuse_port=share or None, backlog=LISTEN_BACKLOG).start()
    loop = "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    logger.info("HQ listening on %s (event loop: %s)", ", ".join(str(a) for a in runner.addresses), loop)
    if own_process:
        tune_gc()
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


def _worker(config_path: str, index: int, port: int, parent: int) -> None:
    """Entry point of worker ``index`` (a spawned process). Worker 0 also runs the scheduler and
    the notification dispatcher (when the settings enable them); the others only serve."""
    settings = load_settings(config_path).replace(port=port)
    if index > 0:
        settings = settings.replace(scheduler_enabled=False)
    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s %(levelname)s hq-worker-{index} %(name)s: %(message)s")
    run_loop(settings, lambda: _serve_while_parent(settings, parent))


async def _serve_while_parent(settings: Settings, parent: int) -> None:
    """Serve until SIGTERM/SIGINT or until the supervisor is gone (a worker never outlives it)."""
    stop = asyncio.Event()

    async def watch() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_S)
        logger.warning("supervisor %d is gone: stopping", parent)
        stop.set()
    watcher = asyncio.create_task(watch())
    try:
        await serve(settings, stop=stop, reuse_port=True, own_process=True)
    finally:
        watcher.cancel()


class Supervisor:
    """Starts ``workers`` server processes on one port and restarts any that dies.

    The supervisor itself serves nothing, so a crash of a worker (or its SIGKILL by the OOM
    killer) takes away one process among several while the others keep answering; it is replaced
    after a short delay, longer when it keeps dying soon after start (no tight crash loop).
    systemd (Restart=on-failure, docs/hq.md) restarts the supervisor itself.
    """

    def __init__(self, config_path: str, settings: Settings) -> None:
        self.config_path, self.settings = config_path, settings
        self.spawn = multiprocessing.get_context("spawn")
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.delay: dict[int, float] = {}
        self.due: dict[int, float] = {}
        self.restarts = 0
        self.stopping = False

    def _start(self, index: int) -> None:
        child = self.spawn.Process(target=_worker, args=(self.config_path, index, self.settings.port, os.getpid()),
                                   name=f"hq-worker-{index}")
        child.start()
        self.children[index], self.started[index] = child, time.monotonic()
        self.due.pop(index, None)

    def _reap(self, index: int, child: multiprocessing.process.BaseProcess) -> None:
        """A worker ended on its own: forget its live gauges and schedule its replacement."""
        assert child.pid is not None
        metrics_dir = os.environ.get(MULTIPROC_ENV)
        if metrics_dir:
            from prometheus_client import multiprocess
            multiprocess.mark_process_dead(child.pid, metrics_dir)
        lived = time.monotonic() - self.started[index]
        delay = RESTART_MIN_S if lived > RESTART_RESET_S else min(RESTART_MAX_S, self.delay.get(index, 0.25) * 2)
        self.delay[index] = delay
        self.due[index] = time.monotonic() + delay
        del self.children[index]
        logger.error("worker %d (pid %d) ended with exit code %s after %.1f s; restarting it in %.1f s",
                     index, child.pid, child.exitcode, lived, delay)

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        for index in range(self.settings.workers):
            self._start(index)
        logger.info("HQ supervisor %d: workers %s on port %d", os.getpid(),
                    ", ".join(str(c.pid) for c in self.children.values()), self.settings.port)
        try:
            while not self.stopping:
                sentinels = [c.sentinel for c in self.children.values()]
                timeout = min([max(0.0, t - time.monotonic()) for t in self.due.values()] + [1.0])
                multiprocessing.connection.wait(sentinels, timeout=timeout)
                for index, child in list(self.children.items()):
                    if not child.is_alive() and not self.stopping:
                        self._reap(index, child)
                for index, due in list(self.due.items()):
                    if due <= time.monotonic() and not self.stopping:
                        self.restarts += 1
                        self._start(index)
        finally:
            self._stop_children()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _stop_children(self) -> None:
        children = list(self.children.values())
        for child in children:  # by PID, each one we started
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join(5)


def _metrics_dir(settings: Settings) -> Path:
    """A fresh directory for the workers' shared metric files (stale files of a previous run
    would add their counts to this one's)."""
    path = Path(settings.data_dir) / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    return path


def run_loop(settings: Settings, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` to completion on HQ's event loop: uvloop's (libuv, written in C) when it is
    installed (the ``hq`` extra) unless ``event_loop = "asyncio"``; the standard one otherwise.
    A serving process spends most of its time in the loop and aiohttp: uvloop took about a tenth
    off HQ's CPU per booking (bench/README.md)."""
    if settings.event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if settings.event_loop == "uvloop":
                raise SettingsError("event_loop = \"uvloop\" but uvloop is not installed (pip install 'smartq[hq]')")
        else:
            uvloop.run(main())
            return
    asyncio.run(main())


def run(config_path: str | Path) -> None:
    settings = load_settings(config_path)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers <= 1:
        run_loop(settings, lambda: serve(settings, own_process=True))
        return
    if settings.port == 0:
        settings = settings.replace(port=_shared_port(settings.host))
    open_hq(settings).db.close()  # migrations, key, bootstrap admin: once, before any worker opens the file
    # The workers are spawned (fresh interpreters): they read this before prometheus_client loads.
    os.environ[MULTIPROC_ENV] = str(_metrics_dir(settings))
    Supervisor(str(config_path), settings).run()
