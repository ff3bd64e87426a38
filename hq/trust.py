"""Device trust at HQ: each organization's CA, enrollment by one-time code, renewal, revocation.

- **CA**: one per organization, in `data_dir/ca/<org>/` (`ca.key` mode 0600, `ca.pem`,
  `crl.pem`), created on first use (sync.certs). Device certificates bind the device's own
  Ed25519 key to org, branch, role and device id, live `cert_days` days, and are renewed over
  the link (`/sync/v1/certificate`).
- **Enrollment**: a fresh device posts `{code, public_key}` (`POST /api/v1/enroll`) and shows
  the code; an admin enters it at HQ (`python -m hq enroll ...`) choosing branch, role and
  device id; HQ registers the device (an HQ-signed `config.roster` event), issues its
  certificate and leaves a bundle signed by the HQ key, which the device fetches by proving it
  holds the key (`POST /api/v1/enroll/{code}/claim`). Offline: the same request and bundle as
  files (a USB stick).
- **Revocation**: the certificate's serial on the org's CRL, the device marked revoked, and an
  HQ-signed `trust.revoked` event `{device, serial, crl, after_seq}` in the branch's log: every
  node loads the CRL (its TLS refuses the device) and rejects the device's events after
  `after_seq` (what HQ already held stays).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import events as ev
from hq import outbox
from hq.branchkeys import counter_key
from hq.errors import bad_request, conflict, not_found
from hq.signing import KeyError_, canonical_public_key, parse_public_key, public_key_b64
from hq.tenants import Writer as TenantWriter
from sync.certs import CertAuthority, CertError, cert_pem, crl_pem, load_crl, write_file
from sync.envelope import canonical_json as canonical
from sync.sealed import SealedError, seal
from sync.sealed import parse_public_key as parse_box_key

logger = logging.getLogger(__name__)

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
CODE_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
REVOKED = ev.TRUST_REVOKED
_ca_lock = threading.Lock()


def normalize_code(text: Any) -> str:
    if not isinstance(text, str):
        raise bad_request("code must be a text like 7KQ2-M9XD")
    raw = text.strip().upper().replace("-", "").replace(" ", "").replace("O", "0").replace("I", "1").replace("L", "1")
    code = f"{raw[:4]}-{raw[4:]}"
    if len(raw) != 8 or not CODE_RE.match(code):
        raise bad_request("code must be 8 characters like 7KQ2-M9XD")
    return code


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


# -- the organization's CA ------------------------------------------------------------------
def ca_dir(data_dir: Path | str, org: str) -> Path:
    return Path(data_dir) / "ca" / org


def org_ca(data_dir: Path | str, org: str) -> CertAuthority:
    """The org's CA, created (with an empty CRL) on first use."""
    directory = ca_dir(data_dir, org)
    with _ca_lock:
        if (directory / "ca.key").exists():
            return CertAuthority.load(directory)
        ca = CertAuthority.create(org, now=time.time())
        ca.save(directory)
        write_file(directory / "crl.pem", crl_pem(ca.crl([], now=time.time())).encode("ascii"))
        logger.info("created the CA of organization %s in %s", org, directory)
        return ca


def org_crl_pem(data_dir: Path | str, org: str) -> str:
    org_ca(data_dir, org)
    return (ca_dir(data_dir, org) / "crl.pem").read_text("ascii")


def org_of_branch(conn: sqlite3.Connection, branch_id: str) -> str:
    row = conn.execute("SELECT org_id FROM branches WHERE id = ?", (branch_id,)).fetchone()
    if row is None:
        raise not_found("branch")
    return str(row[0])


def issue(conn: sqlite3.Connection, data_dir: Path | str, *, branch: str, device: str, role: str, public_key: str,
          cert_days: float, now: float) -> str:
    """Issue a device certificate (PEM) and record it."""
    org = org_of_branch(conn, branch)
    ca = org_ca(data_dir, org)
    try:
        cert = ca.issue_device(parse_public_key(public_key), branch=branch, role=role, device=device, now=now,
                               valid_s=cert_days * 86400)
    except CertError as err:
        raise bad_request(str(err)) from err
    conn.execute("INSERT INTO certificates (serial, org_id, branch_id, device_id, role, public_key, not_after, issued_at)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (str(cert.serial_number), org, branch, device, role, public_key,
                  int(cert.not_valid_after_utc.timestamp()), int(now)))
    return cert_pem(cert)


# -- enrollment -----------------------------------------------------------------------------
def request_enrollment(conn: sqlite3.Connection, body: Any, *, now: int, ttl_s: int) -> dict[str, Any]:
    """A device asks to be enrolled: {code, public_key}."""
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object {code, public_key}")
    code = normalize_code(body.get("code"))
    try:
        public_key = canonical_public_key(body.get("public_key") if isinstance(body.get("public_key"), str) else "")
    except KeyError_ as err:
        raise bad_request(str(err)) from err
    box_key = body.get("box_key")
    if box_key is not None:
        try:
            parse_box_key(box_key if isinstance(box_key, str) else "")
        except SealedError as err:
            raise bad_request("box_key must be an X25519 public key (base64url)") from err
    conn.execute("DELETE FROM enrollments WHERE expires_at < ? AND status = 'pending'", (now,))
    try:
        conn.execute("INSERT INTO enrollments (code, public_key, created_at, expires_at, box_key) VALUES (?, ?, ?, ?, ?)",
                     (code, public_key, now, now + ttl_s, box_key))
    except sqlite3.IntegrityError as err:
        raise conflict("this code is taken; draw another", "code_taken") from err
    return {"code": code, "expires_at": now + ttl_s}


def claim_message(code: str, time_ms: int) -> bytes:
    return f"smartq-enroll-claim\n{code}\n{time_ms}".encode("ascii")


def claim(conn: sqlite3.Connection, code: str, body: Any, *, now: int) -> dict[str, Any] | None:
    """The bundle of an approved enrollment, for the device holding its key; None while pending."""
    code = normalize_code(code)
    if not isinstance(body, dict) or not isinstance(body.get("time_ms"), int) or not isinstance(body.get("sig"), str):
        raise bad_request("body must be {time_ms, sig}")
    row = conn.execute("SELECT * FROM enrollments WHERE code = ?", (code,)).fetchone()
    if row is None:
        raise not_found("enrollment")
    if abs(body["time_ms"] - now * 1000) > 3600_000:
        raise bad_request("time_ms is more than an hour off HQ's clock")
    try:
        ok = _verify(row["public_key"], bytes.fromhex(body["sig"]), claim_message(code, body["time_ms"]))
    except ValueError:
        ok = False
    if not ok:
        raise not_found("enrollment")  # the same answer as an unknown code: nothing to learn
    if row["status"] != "approved":
        if row["expires_at"] < now:
            raise not_found("enrollment")
        return None
    return json.loads(row["bundle"])


def _verify(public_key: str, signature: bytes, message: bytes) -> bool:
    from sync.keys import verify
    return verify(parse_public_key(public_key), signature, message)


def sign_bundle(key: Ed25519PrivateKey, bundle: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in bundle.items() if k != "sig"}
    return {**body, "sig": key.sign(canonical(body)).hex()}


def approve(conn: sqlite3.Connection, *, key: Ed25519PrivateKey, data_dir: Path | str, code: str, branch: str,
            role: str, device: str, numbers: str | None, counters: list[str], link_url: str, cert_days: float,
            now_ms: int) -> dict[str, Any]:
    """An admin's approval of a code: register the device, certify it, leave its signed bundle."""
    code = normalize_code(code)
    row = conn.execute("SELECT * FROM enrollments WHERE code = ?", (code,)).fetchone()
    now = now_ms // 1000
    if row is None or row["expires_at"] < now:
        raise not_found("enrollment code (expired, or never shown by a device)")
    if row["status"] != "pending":
        raise conflict(f"code {code} was used already", "code_used")
    org = org_of_branch(conn, branch)
    TenantWriter(conn, key, now_ms).add_device(branch, {"id": device, "role": role, "public_key": row["public_key"],
                                                        "numbers": numbers, "name": device})
    cert = issue(conn, data_dir, branch=branch, device=device, role=role, public_key=row["public_key"],
                 cert_days=cert_days, now=now)
    bundle = sign_bundle(key, {
        "version": 1, "org": org, "branch": branch, "device": device, "role": role, "cert": cert,
        "ca": org_ca(data_dir, org).pem, "crl": org_crl_pem(data_dir, org),
        "config": device_config(conn, branch=branch, device=device, role=role, counters=counters, link_url=link_url,
                                hq_public_key=public_key_b64(key.public_key())),
        "hq_public_key": public_key_b64(key.public_key()), "issued_at": now,
        # Only a counter verifies staff PINs: only it can open the sealed config.staff. The key
        # itself travels sealed to the device's own enrollment box key.
        **({"counter_key_sealed": seal(parse_box_key(row["box_key"]), counter_key(conn, branch)[0],
                                       key_id="enroll")} if role == "counter" and row["box_key"] else {}),
    })
    conn.execute("UPDATE enrollments SET status = 'approved', branch_id = ?, device_id = ?, bundle = ? WHERE code = ?",
                 (branch, device, json.dumps(bundle), code))
    return bundle


def _toml(value: Any) -> str:
    """JSON strings, numbers and arrays are TOML; an object becomes an inline table."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)


def device_config(conn: sqlite3.Connection, *, branch: str, device: str, role: str, counters: list[str],
                  link_url: str, hq_public_key: str) -> str:
    """The enrolled device's TOML config, from what HQ holds for its branch."""
    b = conn.execute("SELECT * FROM branches WHERE id = ?", (branch,)).fetchone()
    lines = ["# SmartQ device configuration, written by HQ at enrollment (docs/configuration.md).",
             "[branch]", f"id = {_toml(b['id'])}", f"name = {_toml(b['name'])}", f"timezone = {_toml(b['timezone'])}",
             f"languages = {_toml(json.loads(b['languages']))}", f"notices = {_toml(json.loads(b['notices']))}", "",
             "[device]", f"id = {_toml(device)}", f"role = {_toml(role)}", 'data_dir = "data"',
             'listen = "127.0.0.1:8401"', f"counters = {_toml(counters)}", ""]
    queue = json.loads(b["queue"])
    if queue:
        lines += ["[queue]"] + [f"{k} = {_toml(v)}" for k, v in queue.items()] + [""]
    lines += ["[lan]", 'listen = "0.0.0.0:8441"', "mdns = true", "",
              "[hq]", f"url = {_toml(link_url)}", f"public_key = {_toml(hq_public_key)}", ""]
    for s in conn.execute("SELECT * FROM services WHERE branch_id = ? AND enabled = 1 ORDER BY position, id", (branch,)):
        lines += ["[[services]]", f"id = {_toml(s['id'])}", f"letter = {_toml(s['letter'])}",
                  f"names = {_toml(json.loads(s['names']))}"]
        lines += [f"{k} = {_toml(v)}" for k, v in json.loads(s["rules"]).items()] + [""]
    for c in conn.execute("SELECT * FROM counters WHERE branch_id = ? ORDER BY position, id", (branch,)):
        names = json.loads(c["names"])
        lines += ["[[counters]]", f"id = {_toml(c['id'])}", f"name = {_toml(c['name'])}",
                  *([f"names = {_toml(names)}"] if names else []), f"services = {_toml(json.loads(c['services']))}", ""]
    for d in conn.execute("SELECT * FROM devices WHERE branch_id = ? ORDER BY id", (branch,)):
        lines += ["[[roster]]", f"id = {_toml(d['id'])}", f"role = {_toml(d['role'])}",
                  f"public_key = {_toml(d['public_key'])}"]
        lines += [f"numbers = {_toml(d['numbers'])}"] if d["numbers"] else []
        lines.append("")
    return "\n".join(lines)


def bundle_from_request(conn: sqlite3.Connection, request: Any, *, now: int, ttl_s: int, **approval: Any) -> dict[str, Any]:
    """Offline enrollment: a request file from the device's USB stick -> its bundle."""
    request_enrollment(conn, request, now=now, ttl_s=ttl_s)
    return approve(conn, code=request["code"], **approval)


# -- renewal and revocation -------------------------------------------------------------------
def renew(conn: sqlite3.Connection, data_dir: Path | str, *, branch: str, device: str, cert_days: float,
          now: float) -> dict[str, Any]:
    """A fresh certificate for a registered, unrevoked device's key (asked over the link)."""
    row = conn.execute("SELECT role, public_key, revoked_at FROM devices WHERE branch_id = ? AND id = ?",
                       (branch, device)).fetchone()
    if row is None or row["revoked_at"] is not None:
        raise not_found("device")
    cert = issue(conn, data_dir, branch=branch, device=device, role=row["role"], public_key=row["public_key"],
                 cert_days=cert_days, now=now)
    return {"cert": cert, "crl": org_crl_pem(data_dir, org_of_branch(conn, branch))}


def revoke(conn: sqlite3.Connection, *, key: Ed25519PrivateKey, data_dir: Path | str, branch: str, device: str,
           now_ms: int) -> dict[str, Any]:
    """Revoke every certificate of the device, publish the CRL and the HQ-signed revocation event."""
    row = conn.execute("SELECT revoked_at FROM devices WHERE branch_id = ? AND id = ?", (branch, device)).fetchone()
    if row is None:
        raise not_found("device")
    now = now_ms / 1000
    org = org_of_branch(conn, branch)
    head = conn.execute("SELECT seq FROM sync_heads WHERE origin = ? AND branch = ?", (device, branch)).fetchone()
    after_seq = int(head[0]) if head else 0
    conn.execute("UPDATE devices SET revoked_at = ?, revoked_after_seq = ? WHERE branch_id = ? AND id = ?",
                 (int(now), after_seq, branch, device))
    conn.execute("UPDATE certificates SET revoked_at = ? WHERE branch_id = ? AND device_id = ? AND revoked_at IS NULL",
                 (int(now), branch, device))
    revoked = [(int(serial), float(at)) for serial, at in conn.execute(
        "SELECT serial, revoked_at FROM certificates WHERE org_id = ? AND revoked_at IS NOT NULL", (org,))]
    ca = org_ca(data_dir, org)
    directory = ca_dir(data_dir, org)
    with _ca_lock:
        previous = load_crl((directory / "crl.pem").read_bytes())
        crl = crl_pem(ca.crl(revoked, now=now, previous=previous))
        write_file(directory / "crl.pem", crl.encode("ascii"))
    serials = [str(s) for (s,) in conn.execute(
        "SELECT serial FROM certificates WHERE branch_id = ? AND device_id = ?", (branch, device))]
    payload = {"device": device, "serials": serials, "crl": crl, "after_seq": after_seq}
    outbox.emit(conn, key, branch, REVOKED, payload, now_ms)
    return {"device": device, "branch": branch, "after_seq": payload["after_seq"], "serials": serials}


def revoked_serials(conn: sqlite3.Connection, org: str) -> set[int]:
    return {int(s) for (s,) in conn.execute(
        "SELECT serial FROM certificates WHERE org_id = ? AND revoked_at IS NOT NULL", (org,))}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
