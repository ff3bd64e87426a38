"""Two HQ processes on two "hosts" (network namespaces) sharing one real PostgreSQL in a third.

The test builds the network itself (tests/branch/netns.py): namespaces ``db``, ``a``, ``b`` and
``cli`` on one bridge, 10.77.<k>.<i>/24 each. PostgreSQL listens on ``db``'s address; each HQ is
its own ``python -m hq`` process in ``a`` or ``b`` with its own data dir (a copy of the HQ key, as
a second host would have) and ``database = "postgresql://postgres@<db>:<port>/..."``; the test's
client runs in ``cli`` (a thread that joined that namespace), so every byte crosses the bridge.
- a storm of bookings on one slot, spread over both, leaves exactly its capacity;
- a branch device pushing the same signed events to both at once has each stored once;
- every confirmation is sent once although both processes run a dispatcher;
- SIGKILL of one HQ mid-storm: every acknowledged booking is stored, the other keeps serving.
Every namespace and process (PostgreSQL included) is removed also when the test fails.
"""

from __future__ import annotations

import asyncio
import ctypes
import email
import email.policy
from collections import Counter
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest

import pgserver
from hq.signing import event_hash, public_key_hex, sign_envelope
from hqtest import api, connect_db
from hq.settings import Settings
from sync.keys import load_or_create_key
from sync.protocol import encode, sign_headers
from appliance.config import load_config
from hq.enroll import hq_section, register_branch
from tests.branch.netns import Host, Network, Proc, sweep_stale, unavailable_reason
from tests.branch.replicated import drive, make_branch, start_nodes, wait_converged

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Europe/Zurich")
PASSWORD = "correct horse battery"
PORT = 8080  # every HQ has its own namespace, hence its own port space
SMTP_PORT = 2525
METRICS_TOKEN = "cluster-test-metrics-token"
LINK_FAST = {"interval_s": 0.3, "min_gap_s": 0.05, "backoff_min_s": 0.2, "backoff_max_s": 1.0, "timeout_s": 5.0}

pytestmark = [pytest.mark.slow, pytest.mark.netns]
T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def in_namespace(ns: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` on its own event loop in a thread that joined namespace ``ns``.

    setns(2) with CLONE_NEWNET moves only the calling thread, so every socket that loop opens
    lives in ``ns`` while pytest stays where it was.
    """
    out: dict[str, Any] = {}

    def thread() -> None:
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({ns}) failed")
            finally:
                os.close(fd)
            out["value"] = asyncio.run(work())
        except BaseException as err:  # handed to the test's thread
            out["error"] = err

    t = threading.Thread(target=thread, name=f"in-{ns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class Hq:
    """One HQ process (`python -m hq --config`) in its own namespace, listening on its address."""

    def __init__(self, net: Network, host: Host, folder: Path, database: str, smtp: str) -> None:
        self.net, self.host, self.folder = net, host, folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hq.toml").write_text(
            f'host = "{host.ip}"\nport = {PORT}\ndata_dir = "{folder}"\ndatabase = "{database}"\n'
            'log_level = "WARNING"\nbooking_rate_per_minute = 0\nnotify_poll_s = 1\n'
            f'bootstrap_admin_email = "root@hq.test"\nbootstrap_admin_password = "{PASSWORD}"\n'
            'argon2_memory_kib = 64\nargon2_iterations = 1\nargon2_lanes = 1\npool_size = 8\n'
            f'email_gateway = "smtp"\nsmtp_host = "{smtp}"\nsmtp_port = {SMTP_PORT}\n'
            f'metrics_token = "{METRICS_TOKEN}"\n')
        self.database = database
        self.url = f"http://{host.ip}:{PORT}"
        self.proc: Proc | None = None

    def spawn(self) -> None:
        env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = self.net.spawn(self.host, [sys.executable, "-m", "hq", "--config", str(self.folder / "hq.toml")],
                                   env=env, name=f"hq-{self.host.name}", cwd=ROOT)

    async def ready(self, s: aiohttp.ClientSession) -> None:
        assert self.proc is not None
        for _ in range(600):
            if not self.proc.alive():
                raise AssertionError(f"HQ {self.host.name} exited: {self.proc.stderr()[-2000:]}")
            try:
                async with s.get(f"{self.url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"HQ {self.host.name} did not start")


async def _book(s: aiohttp.ClientSession, url: str, service: str, start: str, i: int) -> tuple[int, str | None]:
    try:
        async with s.post(f"{url}/api/v1/public/bookings", json={"branch": "b", "service": service, "start": start,
                                                                 "email": f"p{i}@x.test"}) as r:
            body = await r.json(content_type=None)
            return r.status, (body or {}).get("code") if r.status == 201 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return -1, None  # the connection died (the killed HQ): not acknowledged


def _slot(days: int, hhmm: str) -> str:
    day = datetime.now(TZ).date() + timedelta(days=days)
    return datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time(), tzinfo=TZ).isoformat()


@pytest.fixture
def cluster_net(tmp_path: Path):
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    sweep_stale()
    net = Network.create(tmp_path / "net")
    try:
        yield net
    finally:
        net.close()  # ends every process we started there, then removes every namespace


def test_two_hq_hosts_on_one_postgresql_keep_every_invariant(tmp_path, hq_backend, cluster_net):
    if hq_backend != "postgresql":
        pytest.skip("several HQ hosts share a server database (SQLite: see test_workers)")
    net = cluster_net
    db_host, host_a, host_b, cli = (net.add_host(n) for n in ("db", "a", "b", "cli"))
    pg = pgserver.PgServer(host=db_host.ip, netns=db_host.ns)
    try:
        pg.start()
        database = pg.create_database()  # postgresql://postgres@10.77.k.1:port/...: over the bridge
        a = Hq(net, host_a, tmp_path / "a", database, smtp=cli.ip)
        b = Hq(net, host_b, tmp_path / "b", database, smtp=cli.ip)
        a.spawn()
        in_namespace(cli.ns, lambda: _scenario(tmp_path, net, cli, a, b, Settings(database=database)))
    finally:
        for proc in net.procs:  # the HQs first, while their database is still up
            proc.stop()
        pg.stop()


class Mailbox:
    """An aiosmtpd handler: every message a real SMTP server in ``cli`` accepted."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body = message.get_body(("plain", "html"))
        self.messages.append(f"{message['Subject']}\n{body.get_content() if body is not None else ''}")
        return "250 OK"


async def _scenario(tmp_path: Path, net: Network, cli: Host, a: Hq, b: Hq, settings: Settings) -> None:
    from aiosmtpd.smtp import SMTP

    mailbox = Mailbox()
    smtp_server = await asyncio.get_running_loop().create_server(lambda: SMTP(mailbox), cli.ip, SMTP_PORT)
    try:
        await _storms(tmp_path, net, a, b, settings, mailbox)
    finally:
        smtp_server.close()


async def _real_branch(tmp_path: Path, net: Network, s: aiohttp.ClientSession, a: Hq, b: Hq, token: str) -> None:
    configs = make_branch(tmp_path / "branch")  # branch b1, devices find each other by mDNS
    hq_key = (await register_branch(s, a.url, token, "o", load_config(configs["kiosk"]), hours=("00:00", "23:45"),
                                    weekdays=range(7)))["public_key_b64"]
    for device, hq in (("kiosk", a), ("counter-1", b)):
        with open(configs[device], "a") as f:
            f.write("\n" + hq_section(hq.url, hq_key, **LINK_FAST))
    env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    py = sys.executable
    nodes = await asyncio.to_thread(start_nodes, net, configs, ["kiosk", "counter-1"], python=py, env=env)
    issued = await asyncio.gather(
        asyncio.to_thread(drive, net, nodes["kiosk"], "issue", {"n": 30, "services": ["general", "payments"]},
                          python=py, env=env),
        asyncio.to_thread(drive, net, nodes["counter-1"], "issue", {"n": 10, "services": ["general"]},
                          python=py, env=env))
    assert sum(len(x["issued"]) for x in issued) == 40
    digest = await asyncio.to_thread(wait_converged, net, nodes.values(), python=py, env=env)
    h = {"Authorization": f"Bearer {token}"}
    seen: dict[str, object] = {}
    for _ in range(300):  # both links push (intervals of 0.3 s): HQ's fold reaches the nodes' hash
        seen = {hq.host.name: (await api(s, "GET", f"{hq.url}/api/v1/branches/b1/link", 200, headers=h))["state_hash"]
                for hq in (a, b)}
        if set(seen.values()) == {digest}:
            break
        await asyncio.sleep(0.2)
    assert set(seen.values()) == {digest}, (seen, digest)
    ingested = {hq.host.name: await _ingested(s, hq) for hq in (a, b)}
    assert all(sum(x.values()) > 0 for x in ingested.values()), ingested  # both hosts got the pushes
    with connect_db(Settings(database=a.database)) as c:
        per_origin = c.execute("SELECT origin, COUNT(*), MIN(seq), MAX(seq) FROM events WHERE branch = 'b1'"
                               " GROUP BY origin").fetchall()
    stored = sum(r[1] for r in per_origin)
    assert all(r[1] == r[3] and r[2] == 1 for r in per_origin), per_origin  # each chain whole, no hole, no twin
    assert sum(x.get("accepted", 0) for x in ingested.values()) == stored, (ingested, stored)  # each stored once
    for node in nodes.values():
        node.proc.stop()


async def _ingested(s: aiohttp.ClientSession, hq: Hq) -> dict[str, float]:
    """This process's smartq_hq_events_ingested_total of branch b1, by result."""
    async with s.get(f"{hq.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith('smartq_hq_events_ingested_total{') and 'branch="b1"' in line:
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def _storms(tmp_path: Path, net: Network, a: Hq, b: Hq, settings: Settings, mailbox: Mailbox) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await a.ready(s)
        shutil.copy(a.folder / "hq_ed25519.pem", b.folder / "hq_ed25519.pem")  # the second host's copy
        b.spawn()
        await b.ready(s)
        token = (await api(s, "POST", f"{a.url}/api/v1/auth/tokens", 201,
                           json={"email": "root@hq.test", "password": PASSWORD}))["token"]
        h = {"Authorization": f"Bearer {token}"}
        await api(s, "POST", f"{a.url}/api/v1/orgs", 201, json={"id": "o", "name": "O"}, headers=h)
        await api(s, "POST", f"{b.url}/api/v1/orgs/o/branches", 201, headers=h,  # a session works on both
                  json={"id": "b", "name": "B", "timezone": "Europe/Zurich"})
        for service, capacity in (("hot", 5), ("wide", 10000)):
            await api(s, "PUT", f"{a.url}/api/v1/branches/b/services/{service}", 200, headers=h,
                      json={"letter": service[0].upper(), "names": {"en": service}, "slot_minutes": 60,
                            "capacity": capacity})
        await api(s, "PUT", f"{b.url}/api/v1/branches/b/hours", 200, headers=h,
                  json={"weekdays": {str(d): {"opens": "08:00", "closes": "18:00"} for d in range(7)}})

        # 1. a storm on one slot of capacity 5, half to each process
        hot = _slot(2, "10:00")
        storm = await asyncio.gather(*(_book(s, (a, b)[i % 2].url, "hot", hot, i) for i in range(300)))
        statuses = [st for st, _ in storm]
        assert statuses.count(201) == 5 and statuses.count(409) == 295, sorted(set(statuses))

        # 2. one branch device pushes the same events to both processes at once
        key = load_or_create_key(tmp_path / "kiosk")
        await api(s, "POST", f"{a.url}/api/v1/branches/b/devices", 201, headers=h,
                  json={"id": "kiosk-1", "role": "kiosk", "public_key": public_key_hex(key.public_key())})
        events, prev, now_ms = [], "", int(time.time() * 1000)
        day = datetime.now(TZ).strftime("%Y%m%d")
        for n in range(1, 41):
            e = sign_envelope(key, {"origin": "kiosk-1", "seq": n, "hlc": (now_ms + n) << 16, "type": "ticket.issued",
                                    "schema": 1, "branch": "b", "prev": prev,
                                    "payload": {"ticket": f"{day}-K{n:03d}", "service": "wide", "number": n,
                                                "label": f"K{n:03d}", "day": day, "priority": 0}})
            prev = event_hash(e)
            events.append(e)
        body = encode({"events": events})

        async def push(url: str) -> dict:
            headers = sign_headers(key, device="kiosk-1", branch="b", method="POST", path="/sync/v1/push",
                                   body=body, to="hq:b")
            async with s.post(f"{url}/sync/v1/push", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                return await r.json(content_type=None)
        answers = await asyncio.gather(*(push(u) for u in (a.url, b.url, a.url, b.url)))
        assert sum(x["accepted"] for x in answers) == 40
        assert sum(x["duplicates"] for x in answers) == 3 * 40

        # 2b. a real branch: two `smartq node`s in their own namespaces replicating over the bridge,
        # the kiosk linked to HQ a and counter-1 to HQ b (as a load balancer would split them):
        # both push the branch's events, each is stored once, and both HQ hosts compute the
        # nodes' state hash
        await _real_branch(tmp_path, net, s, a, b, token)

        # 3. SIGKILL one process mid-storm: no acknowledged booking lost, the other serves on
        wide = _slot(3, "11:00")
        assert b.proc is not None and b.proc.alive()

        results: list[tuple[int, str | None]] = []
        stop = asyncio.Event()

        async def client(i: int) -> None:
            """Books again and again until told to stop, so at the kill every client of b has a
            request in flight or about to start, however fast the servers answer."""
            hq, n = (a, b)[i % 2], 0
            while not stop.is_set():
                n += 1
                out = await _book(s, hq.url, "wide", wide, 100_000 * n + i)
                results.append(out)
                if out[0] == -1:  # its host is gone
                    return

        async def killer() -> None:
            while [st for st, _ in results].count(201) < 100:  # mid-storm: some acknowledged already
                await asyncio.sleep(0.01)
            os.kill(b.proc.pid, signal.SIGKILL)  # the host dies: no shutdown at all
            await asyncio.sleep(1.0)  # a's clients go on meanwhile
            stop.set()
        await asyncio.wait_for(asyncio.gather(killer(), *(client(i) for i in range(100))), 120)
        acked = [code for st, code in results if st == 201]
        assert -1 in [st for st, _ in results]  # requests to the killed HQ failed: the kill was mid-storm
        after = await asyncio.gather(*(_book(s, a.url, "wide", wide, 5000 + i) for i in range(20)))
        assert [st for st, _ in after] == [201] * 20  # the survivor keeps serving
        assert b.proc.popen.wait(10) == -signal.SIGKILL

        # 4. every confirmation is sent once, though both processes (until the kill) dispatched
        with connect_db(settings) as c:
            for _ in range(120):
                # rows the killed host had claimed stay 'sending' until their lease ends
                left = c.execute("SELECT COUNT(*) FROM notifications WHERE status = 'pending'").fetchone()[0]
                if left == 0:
                    break
                await asyncio.sleep(0.5)
            stored = {r[0] for r in c.execute("SELECT code FROM bookings WHERE service_id = 'wide'")}
            booked_hot = c.execute("SELECT COUNT(*) FROM bookings WHERE service_id = 'hot' AND status = 'booked'"
                                   ).fetchone()[0]
            n_events = c.execute("SELECT COUNT(*) FROM events WHERE origin = 'kiosk-1'").fetchone()[0]
            claims = c.execute("SELECT status, attempts, COUNT(*) FROM notifications GROUP BY status, attempts"
                               ).fetchall()
            all_codes = c.execute("SELECT code FROM bookings").fetchall()
            sent_codes = {r[0] for r in c.execute(
                "SELECT b.code FROM notifications n JOIN bookings b ON b.id = n.booking_id WHERE n.status = 'sent'")}
        assert booked_hot == 5
        assert n_events == 40
        assert acked and set(acked) <= stored, len(set(acked) - stored)
        # rows the killed process had claimed come back on the survivor's recover only at its
        # restart; every other confirmation was claimed and sent exactly once
        by = {(r[0], r[1]): r[2] for r in claims}
        assert set(by) <= {("sent", 1), ("sending", 1)}, by
        assert by.get(("sent", 1), 0) >= len(acked) + 5 + 20 - by.get(("sending", 1), 0)
        # and the mail server saw each of them exactly once (a claimed row the kill interrupted: at most once)
        booked = {r[0] for r in all_codes}  # also those committed just before the kill, never acknowledged
        received = Counter(code for m in mailbox.messages for code in booked if code in m)
        assert sent_codes <= set(received) and max(received.values()) == 1, received.most_common(3)
