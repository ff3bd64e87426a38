"""``smartq-hq copy-database``: a SQLite HQ with data moves into a new database (PostgreSQL in the
``[postgresql]`` run, a new SQLite file in the ``[sqlite]`` run), and an HQ on the copy goes on
where the original stopped: same rows, logins, bookings, the branch's event chain continued."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hqtest
from hq.signing import event_hash, public_key_hex, sign_envelope
from hqtest import PASSWORD, T0, api, connect_db, make_settings, seed, start_server
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sync.protocol import encode, sign_headers

ROOT = Path(__file__).resolve().parents[2]
B = "/api/v1/public"
PHONE = "+41 44 668 18 00"


def _copy(config: Path, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hq", "--config", str(config), "copy-database", "--to", target],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


async def _fill(srv, session) -> list[str]:
    """Bookings (one cancelled), a device and five of its events pushed over the link."""
    codes = []
    for start in ("2030-01-08T09:00:00+01:00", "2030-01-08T09:00:00+01:00", "2030-01-09T10:15:00+01:00"):
        booked = await api(session, "POST", f"{srv.url}{B}/bookings", 201,
                           json={"branch": "acme-main", "service": "general", "start": start, "phone": PHONE})
        codes.append(booked["code"])
    await api(session, "POST", f"{srv.url}{B}/bookings/{codes[2]}/cancel", 200, json={"contact": PHONE})
    key = Ed25519PrivateKey.generate()
    await api(session, "POST", f"{srv.url}/api/v1/branches/acme-main/devices", 201, headers=srv.h("acme-admin"),
              json={"id": "kiosk-1", "role": "kiosk", "public_key": public_key_hex(key.public_key())})
    events, prev = [], ""
    for n in range(1, 6):
        e = sign_envelope(key, {"origin": "kiosk-1", "seq": n, "hlc": (T0 * 1000 + n) << 16, "type": "ticket.issued",
                                "schema": 1, "branch": "acme-main", "prev": prev,
                                "payload": {"ticket": f"20300107-A{n:03d}", "service": "general", "number": n,
                                            "label": f"A{n:03d}", "day": "20300107", "priority": 0}})
        prev = event_hash(e)
        events.append(e)
    body = encode({"events": events})
    headers = sign_headers(key, device="kiosk-1", branch="acme-main", method="POST", path="/sync/v1/push",
                           body=body, to="hq:acme-main")
    async with session.post(f"{srv.url}/sync/v1/push", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert (await r.json(content_type=None))["accepted"] == 5
    return codes


def _tables(c) -> list[str]:
    return [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                    " AND name NOT LIKE 'sqlite_%' AND name <> 'migrations'")]


async def test_a_sqlite_hq_moves_into_a_new_database_and_goes_on(tmp_path, clock, session, hq_backend):
    source = make_settings(tmp_path / "src", database=f"sqlite:///{tmp_path / 'src.sqlite3'}")
    runner, srv = await start_server(source, clock)
    try:
        await seed(srv, session, source)
        codes = await _fill(srv, session)
    finally:
        await runner.cleanup()

    if hq_backend == "postgresql":
        target_url = hqtest.BACKEND["pg"].create_database()
        hqtest.CREATED.append(target_url)
    else:
        target_url = f"sqlite:///{tmp_path / 'target.sqlite3'}"
    config = tmp_path / "hq.toml"
    config.write_text(f'data_dir = "{source.data_dir}"\ndatabase = "{source.database}"\n')
    done = _copy(config, target_url)
    assert done.returncode == 0, done.stderr
    assert "copied" in done.stdout

    with connect_db(source) as src, connect_db(make_settings(tmp_path / "t", database=target_url)) as dst:
        tables = _tables(src)
        assert {"bookings", "events", "outbox", "users", "slot_counts", "notifications"} <= set(tables)
        for table in tables:
            assert (dst.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
                    == src.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]), table
        order = "rid" if dst.dialect == "postgresql" else "rowid"  # the identity numbers the rows in order
        assert ([tuple(r) for r in dst.execute(f"SELECT origin, seq FROM events ORDER BY {order}")]
                == [tuple(r) for r in src.execute("SELECT origin, seq FROM events ORDER BY rowid")])
        chain_before = src.execute("SELECT COUNT(*) FROM outbox WHERE branch_id = 'acme-main'").fetchone()[0]

    # An HQ on the copy (same key, as a new host gets) goes on where the first one stopped.
    target = make_settings(tmp_path / "t", database=target_url)
    Path(target.data_dir).mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(source.data_dir) / "hq_ed25519.pem", Path(target.data_dir) / "hq_ed25519.pem")
    runner, srv = await start_server(target, clock)
    try:
        srv.tokens["super"] = (await api(session, "POST", f"{srv.url}/api/v1/auth/tokens", 201, json={
            "email": "root@hq.test", "password": PASSWORD}))["token"]  # users and password hashes came along
        found = await api(session, "POST", f"{srv.url}{B}/bookings/{codes[0]}/lookup", 200, json={"contact": PHONE})
        assert found["status"] == "booked"
        # the slot's counter came along: two booked of capacity 3, so one more fits and then none
        await api(session, "POST", f"{srv.url}{B}/bookings", 201, json={
            "branch": "acme-main", "service": "general", "start": "2030-01-08T09:00:00+01:00", "email": "x@y.test"})
        full = await api(session, "POST", f"{srv.url}{B}/bookings", 409, json={
            "branch": "acme-main", "service": "general", "start": "2030-01-08T09:00:00+01:00", "email": "z@y.test"})
        assert full["error"]["code"] == "slot_full"
        # the new booking's event continued the chain (read as the branch link reads it: on
        # PostgreSQL the answer to a booking does not wait for its event to be chained)
        chain = (await api(session, "GET", f"{srv.url}/api/v1/branches/acme-main/outbox", 200,
                           params={"limit": 1000}, headers=srv.h("super")))["events"]
        assert [e["seq"] for e in chain] == list(range(1, chain_before + 2))
        assert chain[-1]["type"] == "booking.created"
        with connect_db(target) as dst:
            ids = [r[0] for r in dst.execute("SELECT id FROM bookings ORDER BY id")]
        assert len(ids) == len(set(ids)) == 4  # new ids continue after the copied ones
    finally:
        await runner.cleanup()

    again = _copy(config, target_url)  # never merged into a database in use
    assert again.returncode == 1 and "already holds HQ data" in again.stderr, again.stderr


def test_copy_database_says_what_is_wrong_in_one_line(tmp_path):
    config = tmp_path / "hq.toml"
    config.write_text(f'data_dir = "{tmp_path}"\ndatabase = "sqlite:///nothing-here.sqlite3"\n')
    done = _copy(config, f"sqlite:///{tmp_path / 'target.sqlite3'}")
    assert done.returncode == 2 and done.stderr.startswith("smartq-hq: no SQLite database at")
    assert "Traceback" not in done.stderr
