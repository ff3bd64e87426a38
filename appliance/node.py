"""The device runtime: store, writer thread, log, projection, stream hub and background jobs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.checkpoint import ROWS as CHECKPOINT_ROWS
from sync.db import connect, migrate
from sync.envelope import Event
from sync.hlc import HybridLogicalClock, wall_ms
from sync.keys import fingerprint, load_or_create_key, parse_public_key, public_key_text
from sync.log import MIGRATIONS as LOG_MIGRATIONS
from sync.log import EventLog, verify_chains
from sync.writer import Writer

from appliance import events as ev
from appliance import waits, waits_train
from appliance.branch import Branch
from appliance.config import Config, ConfigError
from appliance.metrics import Metrics
from appliance.model import config_events
from appliance.projection import MIGRATIONS as PROJECTION_MIGRATIONS
from appliance.projection import Projection, state_hash, subject_of
from appliance.queue import business_day
from appliance.staff import StaffSessions

logger = logging.getLogger(__name__)
T = TypeVar("T")
DB_FILE = "smartq.db"
REVOKED = ev.TRUST_REVOKED  # an HQ-signed revocation (hq/trust.py): {device, serials, crl, after_seq}
EventsListener = Callable[[list[Event]], Any]


class NodeService(Protocol):
    """Something a node runs beside its store: LAN replication, hardware, the HQ uplink.

    `name` is its key in GET /api/v1/state ("peers", "hardware", "hq"), `view()` its value
    there. Optional hooks, looked up by name: `on_ticket_issued(ticket) -> dict` (what
    happened to the printout) and `reprint(ticket) -> dict`.
    """

    name: str

    async def start(self, node: Node) -> None: ...
    async def stop(self) -> None: ...
    def view(self) -> Any: ...


class Readers:
    """A small pool of threads, each with its own read-only connection."""

    def __init__(self, path: Path, workers: int = 2) -> None:
        self._path = path
        self._local = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sqlite-reader")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, readonly=True)
            self._local.conn = conn
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._conn()))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Hub:
    """Fans committed events out to stream subscribers, in commit order."""

    def __init__(self, render: Callable[[list[Event]], Awaitable[list[tuple[Event, str]]]],
                 queue_size: int = 1000) -> None:
        self._render = render
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[tuple[Event, str] | None]] = set()
        self._batches: asyncio.Queue[list[Event]] = asyncio.Queue()

    def subscribe(self) -> tuple[asyncio.Queue[tuple[Event, str] | None], Callable[[], None]]:
        q: asyncio.Queue[tuple[Event, str] | None] = asyncio.Queue(self._queue_size)
        self._subscribers.add(q)
        return q, lambda: self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close_all(self) -> None:
        """Tell every subscriber to finish (server shutdown)."""
        for q in list(self._subscribers):
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)
        self._subscribers.clear()

    def publish(self, events: list[Event]) -> None:
        """Called on the event loop (from the writer through call_soon_threadsafe)."""
        self._batches.put_nowait(events)

    async def run(self) -> None:
        while True:
            events = await self._batches.get()
            if not self._subscribers:
                continue  # nobody listens: rendering (reads) would be wasted work
            try:
                messages = await self._render(events)
            except Exception:
                logger.exception("could not render %d events for the stream", len(events))
                continue
            for q in list(self._subscribers):
                for message in messages:
                    try:
                        q.put_nowait(message)
                    except asyncio.QueueFull:
                        # A subscriber that cannot keep up is dropped, told by a None.
                        logger.warning("stream subscriber too slow; disconnecting it")
                        self._subscribers.discard(q)
                        while not q.empty():
                            q.get_nowait()
                        q.put_nowait(None)
                        break


class Node:
    def __init__(self, config: Config, *, clock: Callable[[], int] = wall_ms,
                 checkpoint_rows: int | None = CHECKPOINT_ROWS) -> None:
        """`checkpoint_rows`: see sync.writer.Writer (None: SQLite checkpoints inside commits)."""
        self.config = config
        self.data_dir = config.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.key = load_or_create_key(self.data_dir)
        own = public_key_text(self.key.public_key())
        entry = config.roster_entry(config.device_id)
        if entry is not None and entry.public_key != own:
            raise ConfigError(
                f"roster entry for {config.device_id} has another public key than {self.data_dir}/device.key "
                f"({own}); fix the roster or the data dir"
            )
        self.fingerprint = fingerprint(self.key.public_key())
        self.db_path = self.data_dir / DB_FILE
        conn = connect(self.db_path)
        try:
            migrate(conn, "sync", LOG_MIGRATIONS)
            migrate(conn, "appliance", PROJECTION_MIGRATIONS)
            migrate(conn, "waits", waits.MIGRATIONS)
        finally:
            conn.close()
        self.clock = HybridLogicalClock(clock=clock)
        self.projection = Projection()
        self._keys: dict[str, Ed25519PublicKey] = {}
        for r in config.roster:
            try:
                self._keys[r.id] = parse_public_key(r.public_key)
            except ValueError as err:
                raise ConfigError(f"roster entry {r.id}: {err}") from err
        self._keys.setdefault(config.device_id, self.key.public_key())
        hq_key = config.raw.get("hq", {}).get("public_key") if isinstance(config.raw.get("hq"), dict) else None
        self.hq_key: Ed25519PublicKey | None = None
        if hq_key:
            try:
                self.hq_key = parse_public_key(hq_key)
            except ValueError as err:
                raise ConfigError(f"hq.public_key: {err}") from err
            # HQ signs the events it sends this branch as origin "hq:<branch>".
            self._keys[f"hq:{config.branch_id}"] = self.hq_key
        from appliance.tls import NodeTLS, has_certificate

        # Mutual TLS (appliance.tls): present once the device is enrolled (or `smartq init`).
        self.tls: NodeTLS | None = (NodeTLS(self.data_dir, config=config, key=self.key, keyring=self.keyring)
                                    if has_certificate(self.data_dir) else None)
        self.log = EventLog(
            device_id=config.device_id, branch=config.branch_id, private_key=self.key, clock=self.clock,
            keyring=self._keys.get, apply=self._apply, subject=subject_of,
        )
        self.branch = Branch(config, self.log, self.projection)
        self.branch.hq_key = self.hq_key
        self._pd_key: tuple[str, Any] | None = None
        self._load_pd_key()
        self.branch.wait_model = waits.load_model(self.data_dir)
        self._waits_trained_for = self.branch.wait_model.pooled.meta.get("trained_for") if self.branch.wait_model else None
        self.writer = Writer(self.db_path, checkpoint_rows=checkpoint_rows)
        self.writer.add_listener(self.log)
        self.writer.add_listener(self.branch)
        self.readers = Readers(self.db_path)
        self.staff = StaffSessions(config.staff, config.security, self.clock.wall_ms)
        self.metrics = Metrics()
        self.hub: Hub | None = None
        self.services: list[NodeService] = []
        self._event_listeners: list[EventsListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def keyring(self, origin: str) -> Ed25519PublicKey | None:
        return self._keys.get(origin)

    # -- personal data: sealed to HQ's current key (sync.sealed, hq/personal.py) -------------
    PD_KEY_FILE = "pd_key.json"

    def _load_pd_key(self) -> None:
        try:
            known = json.loads((self.data_dir / self.PD_KEY_FILE).read_text("utf-8"))
            self._use_pd_key(str(known["id"]), str(known["public_key"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def _use_pd_key(self, key_id: str, public_key: str) -> None:
        from sync.sealed import parse_public_key as parse_x25519
        from sync.sealed import seal

        key = parse_x25519(public_key)
        self._pd_key = (key_id, key)
        self.branch.seal_phone = lambda phone: seal(key, phone, key_id=key_id)

    def set_pd_key(self, value: Any) -> None:
        """HQ's current personal-data key, from the link's hello; kept for when HQ is away."""
        from sync.sealed import SealedError
        if not isinstance(value, dict) or (self._pd_key is not None and self._pd_key[0] == value.get("id")):
            return
        try:
            self._use_pd_key(str(value["id"]), str(value["public_key"]))
        except (KeyError, SealedError) as err:
            logger.warning("HQ sent an unusable personal-data key: %s", err)
            return
        from sync.certs import write_file
        write_file(self.data_dir / self.PD_KEY_FILE, json.dumps(value).encode("utf-8"))

    def _apply(self, conn: sqlite3.Connection, event: Event) -> None:
        """Writer thread: fold the event; HQ's revocations take effect before the next event."""
        if event.origin == f"hq:{self.config.branch_id}":
            if event.type == REVOKED:
                self._revoke(event.payload)
            elif event.type == "config.roster":
                self._learn_roster(event.payload)
            elif event.type == "config.staff":
                self._learn_staff(event.payload)
        self.projection.apply(conn, event)

    def _learn_roster(self, payload: dict[str, Any]) -> None:
        """HQ's signed roster: the devices whose events and TLS certificates this node trusts,
        beside those of its config file (a device enrolled later is known from here)."""
        devices = payload.get("devices")
        for device in devices if isinstance(devices, list) else []:
            try:
                key = parse_public_key(str(device["public_key"]))
            except (KeyError, TypeError, ValueError):
                continue
            if device.get("id") and device["id"] not in self._keys and device["id"] != self.config.device_id:
                logger.info("HQ's roster adds device %s", device["id"])
                self._keys[str(device["id"])] = key

    def _revoke(self, payload: dict[str, Any]) -> None:
        device, after = payload.get("device"), payload.get("after_seq")
        if not isinstance(device, str) or not isinstance(after, int):
            logger.warning("ignoring a malformed revocation: %r", payload)
            return
        if device not in self.log.revoked:
            logger.warning("device %s is revoked: its events after seq %d are refused", device, after)
        self.log.revoked[device] = after
        if self.tls is not None and isinstance(payload.get("crl"), str):
            self.tls.apply_crl(payload["crl"])

    def _learn_staff(self, payload: dict[str, Any]) -> None:
        """A counter opens HQ's sealed staff list with the branch's counter key (its bundle
        brought it) and takes its members and PIN hashes beside those of its config file."""
        if self.staff is None:
            return
        from appliance.enroll import open_staff
        members = open_staff(self.data_dir, payload)
        if members is None:
            return  # not a counter (no key): the list stays sealed here
        from appliance.config import StaffConfig
        from_hq = tuple(StaffConfig(str(m["id"]), str(m["name"]), str(m["pin_hash"]))
                        for m in members if isinstance(m, dict) and m.get("pin_hash"))
        own = tuple(s for s in self.config.staff if s.id not in {m.id for m in from_hq})
        self.staff.replace_staff(own + from_hq)
        logger.info("staff from HQ: %s", ", ".join(m.id for m in from_hq) or "none")

    def _load_revocations(self, conn: sqlite3.Connection) -> None:
        """At start: HQ's rosters and revocations already in the log."""
        learn = {REVOKED: self._revoke, ev.CONFIG_ROSTER: self._learn_roster, ev.CONFIG_STAFF: self._learn_staff}
        for origin, type_, payload in conn.execute(
                "SELECT origin, type, payload FROM events WHERE type IN (?, 'config.roster', 'config.staff') ORDER BY hlc",
                (REVOKED,)):
            if origin == f"hq:{self.config.branch_id}":
                learn[type_](json.loads(payload))

    # -- life cycle --------------------------------------------------------------------
    def open(self) -> None:
        """Start the writer, seed the clock and bring the configuration into the log."""
        self.writer.start()
        self.writer.call(self.log.seed_clock)
        self.writer.call(self._load_revocations)
        appended = self.writer.call(lambda conn: self.branch.sync_config(conn, config_events(self.config)))
        if appended:
            logger.info("configuration changed: %d config events appended", appended)

    async def start(self, services: list[NodeService] | None = None) -> None:
        """Attach to the running loop: stream hub, periodic jobs, then each service."""
        self._loop = asyncio.get_running_loop()
        self.hub = Hub(self._render)
        self.log.on_commit(self._on_commit)
        self._spawn(self.hub.run(), "stream hub")
        self._spawn(self._periodic(5.0, self._housekeeping), "housekeeping")
        for service in services or []:
            await service.start(self)
            self.services.append(service)
            logger.info("started %s service", service.name)

    async def stop(self) -> None:
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                logger.exception("stopping the %s service failed", service.name)
        self.services.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.close)

    def on_events(self, listener: EventsListener) -> Callable[[], None]:
        """Call `listener(events)` on the event loop after each commit (local or ingested
        events, in commit order); it may return a coroutine, which runs as a task.
        Returns the unsubscribe function."""
        self._event_listeners.append(listener)
        return lambda: self._event_listeners.remove(listener)

    def service(self, name: str) -> NodeService | None:
        return next((s for s in self.services if s.name == name), None)

    def close(self) -> None:
        self.writer.stop()
        self.readers.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reads and writes ----------------------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.run(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.readers.run(fn)

    def _on_commit(self, events: list[Event]) -> None:
        """Writer thread, right after COMMIT."""
        self.metrics.events_committed(events, self.config.device_id)
        if self._loop is not None and self.hub is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[Event]) -> None:
        """Event loop: fan a commit out to the stream and the services."""
        assert self.hub is not None
        self.hub.publish(events)
        for listener in list(self._event_listeners):
            try:
                result = listener(events)
                if asyncio.iscoroutine(result):
                    self._spawn(result, f"events listener {listener!r}")
            except Exception:
                logger.exception("events listener failed")

    async def _render(self, events: list[Event]) -> list[tuple[Event, str]]:
        from appliance.stream import render_events

        return await self.read(lambda conn: render_events(self.branch, conn, events))

    # -- background jobs -----------------------------------------------------------------
    async def _periodic(self, every_s: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await job()
            except Exception:
                logger.exception("periodic job %s failed", getattr(job, "__name__", job))

    async def _housekeeping(self) -> None:
        await self.write(self.branch.expire_calls)
        await self.write(self.log.release_quarantine)
        await self.retrain_waits()

    async def retrain_waits(self) -> None:
        """Nightly, at the first housekeeping of a new branch day: retrain the learned wait
        estimator on the history so far, in a process of its own (appliance/waits_train.py:
        the node's memory stays within budget), and use the data_dir/wait_model.json it writes."""
        m = await self.read(self.branch.model)
        today = business_day(self.clock.wall_ms(), m.tz)
        if self._waits_trained_for == today:
            return
        self._waits_trained_for = today
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance.waits_train", str(Path(self.config.path).resolve()),
            str(self.db_path), today, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode == waits_train.NOT_ENOUGH_HISTORY:
            return
        if proc.returncode != 0:
            logger.warning("training the wait estimator failed (%s): %s", proc.returncode,
                           err.decode(errors="replace").strip()[-500:])
            return
        model = await asyncio.to_thread(waits.load_model, self.data_dir)
        if model is not None:
            self.branch.wait_model = model
            logger.info("wait estimator retrained on %s tickets", model.pooled.meta.get("rows"))

    # -- what the other layers add (peers, HQ link, hardware) -----------------------------
    def _view(self, name: str, default: Any) -> Any:
        service = self.service(name)
        return service.view() if service is not None else default

    def peers_view(self) -> list[dict[str, Any]]:
        return self._view("peers", [])

    def hq_view(self) -> dict[str, Any]:
        return self._view("hq", {"status": "not_configured"})

    def hardware_view(self) -> dict[str, Any]:
        return self._view("hardware", {})

    async def after_issue(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Hand a new ticket to the printer, never blocking the reply; says how that went.

        `print.status` is "queued" when a printer took the job, "no_printer" when this
        device has none, "failed" (with `message`) when it could not be queued."""
        return {**ticket, "print": await self._print_hook("on_ticket_issued", ticket)}

    async def reprint(self, ticket: dict[str, Any]) -> dict[str, Any]:
        return {"ticket": ticket["id"], "print": await self._print_hook("reprint", ticket)}

    async def _print_hook(self, name: str, ticket: dict[str, Any]) -> dict[str, Any]:
        for service in self.services:
            hook = getattr(service, name, None)
            if hook is None:
                continue
            try:
                return await hook(ticket)
            except Exception as err:  # the ticket is committed already: report, never 500
                logger.exception("printing ticket %s failed", ticket.get("id"))
                return {"status": "failed", "message": f"printer error: {err}"}
        return {"status": "no_printer"}

    # -- tools -----------------------------------------------------------------------------
    async def state_hash(self) -> str:
        return await self.read(state_hash)

    def verify(self) -> list[str]:
        conn = connect(self.db_path, readonly=True)
        try:
            floors = {}
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'hq_compaction'").fetchone():
                floors = {o: (seq, h) for o, seq, h in
                          conn.execute("SELECT origin, through_seq, through_hash FROM hq_compaction")}
            return verify_chains(conn, self.keyring, floors)
        finally:
            conn.close()
