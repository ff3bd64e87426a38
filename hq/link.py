"""The branch link at HQ: /sync/v1/hello|push|pull plus the nightly reconcile's digests.

Same wire format as branch peers (sync.protocol): every request is signed by a device
registered at HQ; the branch comes from the signed X-SmartQ-Branch header and must be the
device's branch. Answers are signed by the HQ key as device "hq:<branch>", which is how the
branch's keyring knows HQ (its `[hq] public_key`).

- hello -> {protocol, device, role: "hq", branch, fingerprint, vv}; vv holds, per origin of the
  branch, the highest contiguous seq HQ stored, and HQ's own chain "hq:<branch>".
- push {events} -> ingest exactly once per (origin, seq) (hq.ingest);
- pull {vv, limit} -> every event of the branch HQ holds and `vv` does not cover: HQ's own
  (config, roster, bookings) and the branch devices' (so a new or wiped device can catch up
  from HQ, and devices cut off from each other on the LAN still meet through HQ);
- digests {from, to} / inventory {day}: per-UTC-day digests and the (origin, seq, hash) list
  of a day, for the nightly reconcile (appliance.nightly computes the same);
- health {...}: the signing device's health report (hq/fleet.py), stored for it alone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.nightly import day_bounds_hlc, days_between, digests
from hq import outbox
from hq.core import HQ
from hq.errors import ApiError, check_date
from hq.ingest import ingest_branch_events
from hq.signing import KeyError_, parse_public_key
from sync.certs import CertError, identity_der, peer_der
from sync.keys import fingerprint
from sync.replication import error_response, signed_response
from sync.protocol import (H_BRANCH, H_DEVICE, H_NONCE, H_TIME, MAX_SKEW_MS, PREFIX, PROTOCOL_VERSION, PUSH_REFUSED, AuthError,
                           Signed, Verifier, check_vv, decode)

logger = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
MAX_PUSH = 5000
MAX_PULL = 2000
MAX_DIGEST_DAYS = 400


class BranchLink:
    """Authenticates link requests and answers them; one per HQ app (it holds the nonce cache)."""

    def __init__(self, hq: HQ) -> None:
        self.hq = hq
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._device_branch: dict[str, str] = {}
        # The wall clock, as sync.protocol signs with it (hq.clock is business time, faked in tests).
        self.verifier = Verifier(self._keys.get, lambda branch: True)

    async def authenticate(self, request: web.Request, body: bytes) -> Signed:
        device, claimed = request.headers.get(H_DEVICE, ""), request.headers.get(H_BRANCH, "")
        # Device ids are unique per organization: look the device up in the branch it claims
        # (signed, checked below), so another organization's `kiosk` never answers for it.
        row = await self.hq.db.read(lambda c: c.execute(
            "SELECT branch_id, public_key, revoked_at FROM devices WHERE id = ? AND branch_id = ?",
            (device, claimed)).fetchone()) if device else None
        if row is not None and row["revoked_at"] is not None:
            raise AuthError(403, f"device {device!r} is revoked")
        # Refreshed on every request, so a device removed at HQ is refused at once.
        self._keys.pop(device, None)
        if row is not None:
            try:
                self._keys[device] = parse_public_key(row["public_key"])
                self._device_branch[device] = row["branch_id"]
            except KeyError_:
                logger.warning("device %s has an unusable public key at HQ", device)
        # Addressed to HQ's identity for the branch: a request captured on the LAN on its way to
        # a peer (X-SmartQ-To: that device) is refused here, not replayed.
        signed = self.verifier.verify(request.method, request.path, request.headers, body, audience=outbox.hq_origin)
        if self._device_branch.get(signed.device) != signed.branch:
            raise AuthError(403, f"device {signed.device!r} is not registered for branch {signed.branch!r}")
        await self._check_certificate(request, signed)
        await self._claim_nonce(request.headers[H_NONCE], int(request.headers[H_TIME]))
        return signed

    async def _check_certificate(self, request: web.Request, signed: Signed) -> None:
        """On the mutual-TLS listener: the client certificate must be the signing device's, of
        its branch and organization, and not revoked (the CA and CRL were checked in the handshake)."""
        der = peer_der(request.transport)
        if der is None:
            return  # the plain listener (behind a TLS-terminating proxy): signatures only
        try:
            peer = identity_der(der)
        except CertError as err:
            raise AuthError(403, str(err)) from err

        def look(c: sqlite3.Connection) -> tuple[str | None, bool]:
            org = c.execute("SELECT org_id FROM branches WHERE id = ?", (signed.branch,)).fetchone()
            gone = c.execute("SELECT revoked_at FROM certificates WHERE serial = ?", (str(peer.serial),)).fetchone()
            return (org[0] if org else None), bool(gone and gone[0] is not None)
        org, revoked = await self.hq.db.read(look)
        if (peer.org, peer.branch, peer.device) != (org, signed.branch, signed.device):
            raise AuthError(403, f"certificate of {peer.device!r} ({peer.org}/{peer.branch}) does not match the request")
        if revoked:
            raise AuthError(403, "certificate is revoked")

    async def _claim_nonce(self, nonce: str, time_ms: int) -> None:
        """Record the nonce in the database so a replay is refused by every HQ worker process
        (and after a restart), not only by the process whose memory saw it first."""
        horizon = time_ms - 2 * MAX_SKEW_MS

        def claim(c: sqlite3.Connection) -> bool:
            c.execute("DELETE FROM link_nonces WHERE time_ms < ?", (horizon,))
            return c.execute("INSERT INTO link_nonces (nonce, time_ms) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING",
                             (nonce, time_ms)).rowcount == 1
        if not await self.hq.db.write(claim):
            raise AuthError(401, "replayed request (nonce already used)")

    def answer(self, request: web.Request, signed: Signed, message: Any, status: int = 200) -> web.Response:
        return signed_response(self.hq.key, request, message, device=outbox.hq_origin(signed.branch),
                               branch=signed.branch, to=signed.device, status=status)


LINK_KEY = web.AppKey("branch_link", BranchLink)


# -- reads (any connection) ---------------------------------------------------------------------
def branch_vv(conn: sqlite3.Connection, branch: str) -> dict[str, int]:
    vv = {r[0]: r[1] for r in conn.execute("SELECT origin, seq FROM sync_heads WHERE branch = ?", (branch,))}
    top = conn.execute("SELECT max(seq) FROM outbox WHERE branch_id = ?", (branch,)).fetchone()[0]
    if top:
        vv[outbox.hq_origin(branch)] = top
    return vv


def events_for(conn: sqlite3.Connection, branch: str, vv: dict[str, int], limit: int) -> list[dict[str, Any]]:
    """Events of `branch` not covered by `vv`, in seq order per origin, at most `limit`;
    device events only up to HQ's contiguous head (never a hole)."""
    out: list[dict[str, Any]] = []
    hq_origin = outbox.hq_origin(branch)
    out += outbox.pending(conn, branch, int(vv.get(hq_origin, 0)), limit)
    for origin, head in conn.execute("SELECT origin, seq FROM sync_heads WHERE branch = ? ORDER BY origin", (branch,)).fetchall():
        if len(out) >= limit:
            break
        have = int(vv.get(origin, 0))
        if head <= have:
            continue
        rows = conn.execute("SELECT envelope FROM events WHERE branch = ? AND origin = ? AND seq > ? AND seq <= ?"
                            " ORDER BY seq LIMIT ?",
                            (branch, origin, have, head, limit - len(out))).fetchall()
        out += [decode(r[0].encode("utf-8")) for r in rows]
    return out


def day_rows(conn: sqlite3.Connection, branch: str, first: str, last: str) -> list[tuple[str, int, str, int]]:
    lo, _ = day_bounds_hlc(first)
    _, hi = day_bounds_hlc(last)
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT origin, seq, hash, hlc FROM events WHERE branch = ? AND hlc >= ? AND hlc < ?", (branch, lo, hi))]


# -- handlers -----------------------------------------------------------------------------------
Handler = Callable[[web.Request, BranchLink, Signed, Any], Awaitable[Any]]


def _endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        link = request.app[LINK_KEY]
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _error(413, "too_large", "request body too large")
        try:
            signed = await link.authenticate(request, raw)
            await heard_from(link.hq, signed.branch)
            message = decode(raw)
            answer = await handler(request, link, signed, message)
            status = PUSH_REFUSED if isinstance(answer, dict) and answer.get("error", {}).get("code") == "refused" else 200
            return link.answer(request, signed, answer, status)
        except AuthError as err:
            code = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 409: "protocol"}.get(err.status, "error")
            return _error(err.status, code, err.message)
    return wrapped


CONTACT_WRITE_S = 15


async def heard_from(hq: HQ, branch: str) -> None:
    """Remember that `branch` reached HQ now: in this process at once, in the database (for the
    other workers' status pages) at most every CONTACT_WRITE_S."""
    now = hq.now()
    before = hq.last_heard.get(branch)
    hq.last_heard[branch] = now
    if before is None or now - before >= CONTACT_WRITE_S or now < before:
        await hq.db.write(lambda c: c.execute(
            "INSERT INTO branch_contact (branch_id, heard_at) VALUES (?, ?) ON CONFLICT (branch_id)"
            " DO UPDATE SET heard_at = GREATEST(branch_contact.heard_at, excluded.heard_at)", (branch, now)))


_error = error_response


def _obj(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise AuthError(400, "body must be a JSON object")
    return message


_vv = check_vv


def _day(value: Any, name: str) -> str:
    try:
        day = check_date(value, name).isoformat()
    except ApiError as err:
        raise AuthError(400, err.message) from err
    if day_bounds_hlc(day)[1] >= 2**63:  # HLCs are signed 64-bit: no event can lie beyond (year 6429)
        raise AuthError(400, f"{name} is beyond the range of event clocks")
    return day


async def hello(request: web.Request, link: BranchLink, signed: Signed, message: Any) -> Any:
    from hq import personal
    vv = await link.hq.db.read(lambda c: branch_vv(c, signed.branch))
    now = link.hq.now()
    pd_key = await link.hq.db.write(lambda c: personal.current_key(c, now))
    return {"protocol": PROTOCOL_VERSION, "device": outbox.hq_origin(signed.branch), "role": "hq",
            "branch": signed.branch, "fingerprint": fingerprint(link.hq.key.public_key()), "vv": vv,
            "pd_key": pd_key}


async def push(request: web.Request, link: BranchLink, signed: Signed, message: Any) -> Any:
    events = _obj(message).get("events")
    if not isinstance(events, list) or len(events) > MAX_PUSH:
        raise AuthError(400, f"events must be a list of at most {MAX_PUSH} envelopes")
    result = await ingest_branch_events(link.hq, events, branch=signed.branch)
    vv = await link.hq.db.read(lambda c: branch_vv(c, signed.branch))
    answer = {"accepted": result.accepted, "duplicates": result.duplicates, "held": result.held, "quarantined": 0,
              "rejected": len(result.rejected), "reasons": result.rejected[:50], "vv": vv}
    if result.rejected:
        # 422 with a reason per refused event; the good events of the batch are kept (and counted).
        first = result.rejected[0]
        answer["error"] = {"code": "refused", "message": f"{len(result.rejected)} event(s) refused, first"
                                                         f" {first.get('origin')}/{first.get('seq')}: {first['message']}"}
    return answer


async def pull(request: web.Request, link: BranchLink, signed: Signed, message: Any) -> Any:
    body = _obj(message)
    vv = _vv(body.get("vv"))
    limit = body.get("limit", 1000)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PULL:
        raise AuthError(400, f"limit must be an integer from 1 to {MAX_PULL}")
    branch = signed.branch

    def read(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], dict[str, int], bool]:
        return events_for(c, branch, vv, limit), branch_vv(c, branch), chain is not None and outbox.queued_for(c, branch)
    # PostgreSQL: a booking is answered once committed; its event is chained by the next pass
    chain = getattr(link.hq.db, "chain", None)
    events, have, queued = await link.hq.db.read(read)
    if queued:  # that pass has not run yet (or failed): the branch gets them in this pull
        await link.hq.db.chain_now()
        events, have, _ = await link.hq.db.read(read)
    acked = vv.get(outbox.hq_origin(branch), 0)
    if acked:  # the branch says it holds HQ's chain up to here
        now = link.hq.now()
        await link.hq.db.write(lambda c: outbox.mark_shipped(c, branch, acked, now))
    return {"events": events, "more": len(events) >= limit, "vv": have}


async def day_digests(request: web.Request, link: BranchLink, signed: Signed, message: Any) -> Any:
    body = _obj(message)
    first, last = _day(body.get("from"), "from"), _day(body.get("to"), "to")
    if last < first or len(days_between(first, last)) > MAX_DIGEST_DAYS:
        raise AuthError(400, f"from..to must be a range of at most {MAX_DIGEST_DAYS} days")
    rows = await link.hq.db.read(lambda c: day_rows(c, signed.branch, first, last))
    return {"from": first, "to": last, "days": digests(rows)}


async def inventory(request: web.Request, link: BranchLink, signed: Signed, message: Any) -> Any:
    day = _day(_obj(message).get("day"), "day")
    rows = await link.hq.db.read(lambda c: day_rows(c, signed.branch, day, day))
    return {"day": day, "events": sorted([o, s, h] for o, s, h, _ in rows if not o.startswith("hq:"))}


async def certificate(request: web.Request, link: BranchLink, signed: Signed, message: Any) -> Any:
    """Renewal: a fresh certificate for the asking device's registered key."""
    from hq import trust
    hq = link.hq
    return await hq.db.write(lambda c: trust.renew(c, hq.settings.data_dir, branch=signed.branch, device=signed.device,
                                                   cert_days=float(hq.settings.cert_days), now=hq.now()))


async def health(request: web.Request, link: BranchLink, signed: Signed, message: Any) -> Any:
    """A device's health report (hq/fleet.py), stored for the device that signed the request."""
    from hq import fleet
    try:
        report = fleet.parse_report(message)
    except fleet.BadReport as err:
        raise AuthError(400, str(err)) from err
    # The device's clock against HQ's real clock (not hq.clock, which is business time).
    received_ms = int(time.time() * 1000)
    now = link.hq.now()
    await link.hq.db.write(lambda c: fleet.store(c, signed.branch, signed.device, report, received_ms, now))
    return {"stored": True}


def add_link_routes(app: web.Application, hq: HQ) -> None:
    app[LINK_KEY] = BranchLink(hq)
    app.router.add_get(f"{PREFIX}/hello", _endpoint(hello))
    app.router.add_post(f"{PREFIX}/push", _endpoint(push))
    app.router.add_post(f"{PREFIX}/pull", _endpoint(pull))
    app.router.add_post(f"{PREFIX}/digests", _endpoint(day_digests))
    app.router.add_post(f"{PREFIX}/inventory", _endpoint(inventory))
    app.router.add_post(f"{PREFIX}/certificate", _endpoint(certificate))
    app.router.add_post(f"{PREFIX}/health", _endpoint(health))
