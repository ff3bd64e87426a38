"""The branch's link to headquarters: the node service named "hq" (`[hq]` in the device config).

Whenever HQ answers, the link
1. says hello and takes HQ's version vector for this branch,
2. pushes every event HQ lacks (events_since(HQ's vv), in batches; any device's events, so a
   relay works when the device that made them is down),
3. pulls what HQ has and this node lacks (HQ's config, roster and bookings, origin
   "hq:<branch>", and other devices' events) and ingests them in one writer transaction.
It repeats every `interval_s`, sooner when this node commits something; when HQ is
unreachable it waits with exponential backoff and jitter. Network waits are async and the
database work runs on the node's writer/reader threads, so the loop is never blocked.

Requests are signed with the device key; answers must be signed by "hq:<branch>" with the
`[hq] public_key` (sync.protocol). The nightly job (appliance.nightly) rides on this link.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sync.log import events_since, version_vector
from sync.protocol import PREFIX, AuthError, PeerClient, PeerError, Verifier, pinned_connector

from appliance.config import Config, ConfigError
from appliance.nightly import NightlyJob
from appliance.node import Node

logger = logging.getLogger(__name__)

TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")

# (name, default, help): every [hq] key; docs/operations.md lists each one.
SETTINGS: list[tuple[str, Any, str]] = [
    ("url", None, "HQ base URL, e.g. https://hq.example.org (the /sync/v1 endpoints live under it)."),
    ("public_key", None, "HQ's Ed25519 public key, base64url (GET /api/v1/public/hq-key, public_key_b64)."),
    ("public_url", "", "HQ's public web address; tickets get status_url = public_url/t/<status_token>"
     " (checked by appliance.config)."),
    ("interval_s", 5.0, "Seconds between syncs while HQ answers (a local commit syncs sooner)."),
    ("min_gap_s", 0.5, "Shortest pause between two syncs (coalesces bursts of commits)."),
    ("backoff_min_s", 2.0, "First retry delay after HQ did not answer; doubles per failure."),
    ("backoff_max_s", 300.0, "Longest retry delay."),
    ("timeout_s", 15.0, "Timeout of one request to HQ."),
    ("batch", 500, "Events per push or pull request."),
    ("nightly_at", "02:30", "Branch-local time (HH:MM) of the nightly reconcile, day close and compaction."),
    ("nightly", True, "Run the nightly job on this device."),
    ("reconcile_days", 7, "How many recent (UTC) days the nightly job compares with HQ by digest."),
    ("retention_days", 30, "Events older than this many days, acknowledged by HQ, are compacted away locally."),
    ("health_interval_s", 60.0, "Seconds between this device's health reports to HQ (printer, peers, pending events,"
     " version, clock; the console's fleet page); 0 turns them off."),
]
_DEFAULTS = {name: default for name, default, _ in SETTINGS}


@dataclass(frozen=True)
class UplinkSettings:
    url: str
    public_key: str
    public_url: str = ""
    interval_s: float = 5.0
    min_gap_s: float = 0.5
    backoff_min_s: float = 2.0
    backoff_max_s: float = 300.0
    timeout_s: float = 15.0
    batch: int = 500
    nightly_at: str = "02:30"
    nightly: bool = True
    reconcile_days: int = 7
    retention_days: int = 30
    health_interval_s: float = 60.0

    @property
    def nightly_time(self) -> tuple[int, int]:
        m = TIME_RE.match(self.nightly_at)
        assert m is not None
        return int(m[1]), int(m[2])


def parse_settings(raw: Any) -> UplinkSettings:
    """`[hq]` as a table -> UplinkSettings; ConfigError names the key and what is wrong."""
    if not isinstance(raw, dict):
        raise ConfigError("[hq] must be a table")
    unknown = set(raw) - set(_DEFAULTS)
    if unknown:
        raise ConfigError(f"hq: unknown settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, default, _ in SETTINGS:
        if name not in raw:
            if default is None:
                raise ConfigError(f"hq: missing '{name}'")
            continue
        value = raw[name]
        kind: type | tuple[type, ...] = type(default) if default is not None else str
        if kind is float:
            kind = (int, float)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise ConfigError(f"hq.{name}: expected {'a number' if kind == (int, float) else kind.__name__}")
        values[name] = value
    s = UplinkSettings(**values)
    if not s.url.startswith(("http://", "https://")):
        raise ConfigError("hq.url: expected an http:// or https:// URL")
    if not TIME_RE.match(s.nightly_at):
        raise ConfigError("hq.nightly_at: expected HH:MM")
    if min(s.interval_s, s.backoff_min_s, s.timeout_s) <= 0 or s.backoff_max_s < s.backoff_min_s or s.health_interval_s < 0:
        raise ConfigError("hq: intervals must be positive and backoff_max_s >= backoff_min_s")
    if not 1 <= s.batch <= 2000 or s.reconcile_days < 1 or s.retention_days < 2:
        raise ConfigError("hq: batch 1-2000, reconcile_days >= 1, retention_days >= 2")
    return s


def from_config(config: Config) -> UplinkService | None:
    """The "hq" service when the device config has an `[hq]` section (appliance.services)."""
    raw = config.raw.get("hq")
    if raw is None:
        return None
    if isinstance(raw, dict) and "url" not in raw and set(raw) <= {"public_url", "public_key"}:
        return None  # no link: only the status-page address and/or the booking-token key
    return UplinkService(parse_settings(raw))


def iso_ms(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


@dataclass
class SyncReport:
    pushed: int = 0
    pulled: int = 0
    rejected: int = 0
    hq_vv: dict[str, int] = field(default_factory=dict)


class UplinkService:
    """NodeService "hq": keeps this node and HQ in step (see the module docstring)."""

    name = "hq"

    def __init__(self, settings: UplinkSettings, *, rng: random.Random | None = None, session: Any = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._session = session
        self._own_session = session is None
        self.node: Node | None = None
        self.client: PeerClient | None = None
        self.status = "offline"
        self.last_ok_ms: int | None = None
        self.last_error: str | None = None
        self.pending = 0
        self.hq_vv: dict[str, int] = {}
        self.refused: set[str] = set()  # origins HQ does not know (not registered there)
        self.nightly: NightlyJob | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._unsubscribe: Any = None
        self._stopping = False
        self._health_due = 0.0  # monotonic time of the next health report

    # -- NodeService --------------------------------------------------------------------------
    async def start(self, node: Node) -> None:
        import aiohttp

        if node.hq_key is None:
            raise ConfigError("hq.public_key is needed to trust HQ's answers and events")
        self.node = node
        branch = node.config.branch_id
        sni = None
        if self._session is None:
            if self.settings.url.startswith("https://") and node.tls is not None:
                # Mutual TLS pinned to the org CA: HQ's link certificate must be of our
                # organization's CA (SNI <org>.link.smartq picks it at HQ), ours goes with it.
                tls = node.tls
                sni = f"{tls.org}.link.smartq"

                def check(der: bytes | None) -> None:
                    if tls.check_peer(der, None).role != "hq":
                        raise AuthError(403, "the link's certificate is not HQ's")
                connector = pinned_connector(tls.client, check)
                self._session = aiohttp.ClientSession(connector=connector)
            else:
                self._session = aiohttp.ClientSession()
        # Request signatures carry the wall clock (sync.protocol signs with it), so check with it too.
        verifier = Verifier(node.keyring, lambda b: b == branch)
        self.client = PeerClient(self._session, self.settings.url, device=node.config.device_id, branch=branch,
                                 key=node.key, verifier=verifier, peer_device=f"hq:{branch}",
                                 timeout_s=self.settings.timeout_s, server_hostname=sni)
        self._unsubscribe = node.on_events(self._on_events)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hq uplink")
        if self.settings.nightly:
            self.nightly = NightlyJob(self)
            self.nightly.start()

    async def stop(self) -> None:
        if self.nightly is not None:
            self.nightly.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "url": self.settings.url, "last_ok": iso_ms(self.last_ok_ms),
                               "last_error": self.last_error, "pending": self.pending}
        if self.refused:
            out["refused_origins"] = sorted(self.refused)
        if self.nightly is not None:
            out["nightly"] = self.nightly.view()
        return out

    # -- the loop -----------------------------------------------------------------------------
    def _on_events(self, events: list[Any]) -> None:
        # Counted at once, so the view is right while HQ is away; recounted on each sync.
        self.pending += sum(1 for e in events if not e.origin.startswith("hq:") and e.seq > self.hq_vv.get(e.origin, 0))
        # Our own commits (not what we just pulled from HQ) make the link sync early.
        if self.node is not None and any(e.origin == self.node.config.device_id for e in events):
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self.sync_once()
                failures = 0
                delay = self.settings.interval_s
            except PeerError as err:
                failures += 1
                delay = min(self.settings.backoff_max_s, self.settings.backoff_min_s * 2 ** (failures - 1))
                delay *= self._rng.uniform(0.8, 1.2)
                if self.status != "offline" or str(err) != self.last_error:
                    logger.warning("HQ link failed (%s); retrying in %.1f s", err, delay)
                self._offline(str(err))
            except Exception as err:  # a bug must not end the link for good
                logger.exception("HQ sync failed")
                failures += 1
                delay = self.settings.backoff_max_s
                self._offline(f"internal error: {err!r}")
            self._wake.clear()
            await asyncio.sleep(self.settings.min_gap_s)
            if failures:
                await asyncio.sleep(delay)  # backoff is not cut short by local commits
            else:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
                # races with the wake-up, and stop() would then wait forever.
                try:
                    async with asyncio.timeout(max(0.0, delay - self.settings.min_gap_s)):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _offline(self, message: str) -> None:
        self.status = "offline"
        self.last_error = message

    async def sync_once(self) -> SyncReport:
        """One hello, push, pull round (serialized with the nightly job); raises PeerError."""
        assert self.node is not None and self.client is not None
        async with self._lock:
            report = SyncReport()
            hello = await self.client.hello()
            self.hq_vv = _vv(hello.get("vv"))
            self.node.set_pd_key(hello.get("pd_key"))
            await self._push(report)
            await self._pull(report)
            report.hq_vv = dict(self.hq_vv)
            await self._renew_certificate()
            self.pending = await self.node.read(lambda c: pending_for(c, self.hq_vv))
            await self._report_health()
            self.status = "online"
            self.last_ok_ms = self.node.clock.wall_ms()
            self.last_error = None
            return report

    def health(self) -> dict[str, Any]:
        """This device's health report for HQ's fleet page: what only the device knows."""
        assert self.node is not None
        node = self.node
        printer = (node.hardware_view() or {}).get("printer")
        peers = [{"device": str(p.get("id"))[:64], "status": str(p.get("status"))[:20],
                  "last_seen_ms": int(p["last_seen"] * 1000) if isinstance(p.get("last_seen"), (int, float)) else None}
                 for p in node.peers_view()[:MAX_HEALTH_PEERS]]
        return {"app_version": app_version(), "role": node.config.role, "clock_ms": node.clock.wall_ms(),
                "pending": self.pending, "printer": printer.get("state") if isinstance(printer, dict) else None,
                "printer_message": str(printer.get("message") or "")[:200] if isinstance(printer, dict) else "",
                "peers": peers}

    async def _report_health(self) -> None:
        """POST /sync/v1/health every health_interval_s (signed like every link request; HQ
        stores it for this device only). An HQ without the endpoint does not stop the sync."""
        loop = asyncio.get_running_loop()
        if self.client is None or not self.settings.health_interval_s or loop.time() < self._health_due:
            return
        self._health_due = loop.time() + self.settings.health_interval_s
        try:
            await self.client.request("POST", f"{PREFIX}/health", self.health())
        except PeerError as err:
            logger.info("HQ did not take the health report: %s", err)

    async def _renew_certificate(self) -> None:
        """Past half its life, ask HQ for a fresh certificate of our key (short-lived certificates)."""
        tls = self.node.tls if self.node is not None else None
        if tls is None or self.client is None or not tls.due_for_renewal():
            return
        answer = await self.client.request("POST", f"{PREFIX}/certificate", {})
        try:
            tls.install_certificate(str(answer.get("cert", "")), str(answer.get("crl", "")))
        except ConfigError as err:
            logger.warning("HQ's renewed certificate was not usable: %s", err)

    async def _push(self, report: SyncReport) -> None:
        assert self.node is not None and self.client is not None
        batch = self.settings.batch
        while True:
            vv = {**self.hq_vv, **{o: 1 << 62 for o in self.refused}}
            events = await self.node.read(lambda c: events_since(c, vv, batch))
            events = [e for e in events if not e.origin.startswith("hq:")]
            if not events:
                return
            answer = await self.client.push([e.to_dict() for e in events])
            self.hq_vv = _vv(answer.get("vv"))
            report.pushed += int(answer.get("accepted", 0))
            report.rejected += int(answer.get("rejected", 0))
            stuck = {e.origin for e in events if e.seq > self.hq_vv.get(e.origin, 0)}
            # Too far ahead of HQ's clock (HQ's quarantine): offered again in a later round.
            ahead = {r.get("origin") for r in answer.get("reasons") or [] if isinstance(r, dict) and r.get("reason") == "future"}
            if stuck and ahead and not answer.get("accepted"):
                logger.warning("HQ holds back events of %s: more than 5 minutes ahead of its clock", sorted(ahead))
                return
            if stuck and not answer.get("accepted"):
                # HQ took nothing: those origins are not registered there (or their events are
                # refused). Stop offering them until the next start; the view says which.
                logger.warning("HQ refused events of %s: %s", sorted(stuck), answer.get("reasons"))
                self.refused |= stuck
            if len(events) < batch and not stuck:
                return

    async def _pull(self, report: SyncReport) -> None:
        assert self.node is not None and self.client is not None
        node = self.node
        while True:
            vv = await node.read(version_vector)
            answer = await self.client.pull(vv, self.settings.batch)
            events = answer.get("events")
            if not isinstance(events, list) or not events:
                return
            result = await node.write(lambda c: node.log.ingest(c, events))
            report.pulled += len(result.accepted)
            if result.rejected:
                logger.warning("rejected %d events from HQ: %s", len(result.rejected), result.rejected[:5])
            if not answer.get("more") or not result.accepted:
                return


MAX_HEALTH_PEERS = 50


def app_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("smartq")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _vv(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise PeerError("HQ answered without a version vector")
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int)}


def pending_for(conn: Any, hq_vv: dict[str, int]) -> int:
    """How many of this node's events (any device's, not HQ's) HQ does not have yet."""
    return sum(max(0, seq - hq_vv.get(origin, 0)) for origin, seq in version_vector(conn).items()
               if not origin.startswith("hq:"))
