"""Enrollment of a fresh device: a one-time code on its screen, no key copied by hand.

    smartq enroll --hq https://hq.example.org --data-dir /var/lib/smartq --config-out /etc/smartq/device.toml

1. The device makes its Ed25519 key (data dir, 0600) and draws an 8-character code
   (Crockford base32, `7KQ2-M9XD`); it registers `{code, public_key}` at HQ.
2. It shows the code: `enroll-code.json` in the data dir is the hook a UI reads
   (`pending_code`, with the QR text), a kiosk prints it (`--printer` names a TOML file with
   its `[hardware.printer]`), and the log and standard output always have it.
3. An admin enters the code at HQ (`smartq-hq enroll --code ... --branch --role --id`).
4. The device polls with a signature of its key and receives the bundle HQ signed: its
   certificate from the org CA, the CA, the CRL, its configuration (with the HQ-signed
   roster and the `[hq]` link) and HQ's public key. It writes them and exits; the node starts.

Offline (no WAN): `--request-out FILE` writes the request to a USB stick; HQ answers with a
bundle file (`smartq-hq enroll --request FILE --out BUNDLE ...`), imported with `--bundle`.
The bundle is checked either way: HQ's signature (against `--hq-key` when the image pins it),
the certificate issued by the bundle's CA, for this device's key, branch, role and id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import tomllib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.certs import CertError, load_cert, load_crl, verify_issued, write_file
from sync.envelope import canonical_json
from sync.keys import KeyFileError, load_or_create_key, parse_public_key, public_key_text, verify

logger = logging.getLogger(__name__)

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_FILE = "enroll-code.json"
COUNTER_KEY_FILE = "counter.key"  # the branch's counter key: opens HQ's sealed config.staff
BOX_KEY_FILE = "enroll-box.key"  # X25519: HQ seals the counter key in the bundle to it


class EnrollError(Exception):
    """Enrollment cannot go on; the message says why."""


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def qr_text(code: str) -> str:
    return f"smartq-enroll:{code}"


def open_staff(data_dir: Path, payload: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A counter's reading of HQ's sealed `config.staff` (None without the branch's counter key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from sync.sealed import SealedError, open_sealed
    try:
        key = serialization.load_pem_private_key((data_dir / COUNTER_KEY_FILE).read_bytes(), password=None)
        assert isinstance(key, X25519PrivateKey)
        return json.loads(open_sealed(key, payload["sealed"]))["staff"]
    except (OSError, ValueError, KeyError, TypeError, AssertionError, SealedError):
        return None


def pending_code(data_dir: Path) -> dict[str, str] | None:
    """The code this device is showing while it waits for an admin (the UIs' hook), or None."""
    try:
        return json.loads((data_dir / CODE_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _box_key(data_dir: Path) -> Any:
    """The device's X25519 enrollment key (0600): secrets in its bundle are sealed to it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from sync.certs import write_private
    path = data_dir / BOX_KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, X25519PrivateKey)
        return key
    key = X25519PrivateKey.generate()
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return key


def request(data_dir: Path) -> tuple[Ed25519PrivateKey, dict[str, str]]:
    """The device key (created if new) and a fresh enrollment request `{code, public_key, box_key}`."""
    from sync.sealed import public_key_text as box_text
    key = load_or_create_key(data_dir)
    return key, {"code": new_code(), "public_key": public_key_text(key.public_key()),
                 "box_key": box_text(_box_key(data_dir).public_key())}


def show_code(data_dir: Path, code: str, printer: dict[str, Any] | None = None) -> None:
    """Where a device shows its code: the file its UI reads (`pending_code`), the log, and its
    printer when it has one (`printer`: a `[hardware.printer]` table)."""
    write_file(data_dir / CODE_FILE, json.dumps({"code": code, "qr": qr_text(code)}).encode("utf-8"))
    logger.warning("enrollment code %s: enter it at HQ (smartq-hq enroll --code %s ...)", code, code)
    if printer is not None:
        try:
            print_code(printer, code)
        except Exception:  # the screen and the log have the code: a printer problem is not fatal
            logger.exception("could not print the enrollment code")


def print_code(printer: dict[str, Any], code: str) -> None:
    """The code (large) and its QR on the device's ESC/POS printer."""
    from escpos.printer import Dummy

    from hardware.printer import make_connection_factory, parse_printer_config

    slip = Dummy()
    slip.set(align="center", double_height=True, double_width=True)
    slip.text(f"{code}\n")
    slip.set(align="center")
    slip.text("SmartQ: enter this code at HQ\n")
    slip.qr(qr_text(code), native=True, size=6)  # the printer draws it: the text travels as is
    slip.cut()
    connection = make_connection_factory(parse_printer_config(printer))()
    connection.open()
    try:
        connection.write(slip.output)
    finally:
        connection.close()


def install(bundle: Any, data_dir: Path, config_out: Path, *, key: Ed25519PrivateKey, hq_key: str | None = None,
            now: float | None = None) -> dict[str, Any]:
    """Check a bundle and write the certificate, CA, CRL and config; returns what it installed."""
    if not isinstance(bundle, dict) or bundle.get("version") != 1:
        raise EnrollError("not a SmartQ enrollment bundle (version 1)")
    try:
        body = {k: v for k, v in bundle.items() if k != "sig"}
        signer = parse_public_key(bundle["hq_public_key"])
        if hq_key is not None and public_key_text(parse_public_key(hq_key)) != public_key_text(signer):
            raise EnrollError("the bundle is signed by another HQ key than the one this device trusts")
        if not verify(signer, bytes.fromhex(bundle["sig"]), canonical_json(body)):
            raise EnrollError("the bundle's HQ signature does not verify")
        ca, cert = load_cert(bundle["ca"]), load_cert(bundle["cert"])
        load_crl(bundle["crl"])
        me = verify_issued(ca, cert, now=time.time() if now is None else now)
    except (KeyError, ValueError, TypeError, KeyFileError, CertError) as err:
        raise EnrollError(f"bad bundle: {err}") from err
    if public_key_text(cert.public_key()) != public_key_text(key.public_key()):  # type: ignore[arg-type]
        raise EnrollError("the bundle's certificate is for another device's key")
    if (me.branch, me.role, me.device) != (bundle.get("branch"), bundle.get("role"), bundle.get("device")):
        raise EnrollError("the bundle's certificate does not match its branch, role and device")
    config = str(bundle.get("config", ""))
    config = config.replace('data_dir = "data"', f"data_dir = {json.dumps(str(data_dir.resolve()))}", 1)
    try:
        parsed = tomllib.loads(config)
    except tomllib.TOMLDecodeError as err:
        raise EnrollError(f"the bundle's configuration is not TOML: {err}") from err
    if parsed.get("device", {}).get("id") != me.device:
        raise EnrollError("the bundle's configuration is for another device")
    write_file(data_dir / "device.crt", bundle["cert"].encode("ascii"))
    write_file(data_dir / "ca.pem", bundle["ca"].encode("ascii"))
    write_file(data_dir / "crl.pem", bundle["crl"].encode("ascii"))
    if isinstance(bundle.get("counter_key_sealed"), str):  # a counter: it may read the sealed staff list
        from sync.certs import write_private
        from sync.sealed import SealedError, open_sealed
        try:
            counter_pem = open_sealed(_box_key(data_dir), bundle["counter_key_sealed"])
        except SealedError as err:
            raise EnrollError("the bundle's counter key is not sealed to this device") from err
        write_private(data_dir / COUNTER_KEY_FILE, counter_pem.encode("ascii"))
    write_file(config_out, config.encode("utf-8"))
    (data_dir / CODE_FILE).unlink(missing_ok=True)
    logger.info("enrolled as %s (%s) of %s/%s; config in %s", me.device, me.role, me.org, me.branch, config_out)
    return {"org": me.org, "branch": me.branch, "role": me.role, "device": me.device, "config": str(config_out)}


async def enroll_online(hq_url: str, data_dir: Path, config_out: Path, *, hq_key: str | None = None,
                        poll_s: float = 2.0, timeout_s: float = 24 * 3600, on_code: Any = None,
                        printer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register a code at HQ, show it, wait for the admin, install the bundle."""
    import aiohttp

    base = hq_url.rstrip("/") + "/api/v1/enroll"
    key, req = request(data_dir)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        for _ in range(5):
            async with session.post(base, json=req) as resp:
                if resp.status == 201:
                    break
                if resp.status != 409:
                    raise EnrollError(f"HQ refused the enrollment request: {resp.status} {await resp.text()}")
            req["code"] = new_code()  # taken: draw another
        else:
            raise EnrollError("HQ refused five codes in a row")
        code = req["code"]
        show_code(data_dir, code, printer)
        if on_code is not None:
            on_code(code)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time_ms = int(time.time() * 1000)
            sig = key.sign(f"smartq-enroll-claim\n{code}\n{time_ms}".encode("ascii")).hex()
            try:
                async with session.post(f"{base}/{code}/claim", json={"time_ms": time_ms, "sig": sig}) as resp:
                    if resp.status == 200:
                        return install(await resp.json(), data_dir, config_out, key=key, hq_key=hq_key)
                    if resp.status != 202:
                        raise EnrollError(f"HQ answered {resp.status}: {await resp.text()}")
            except (aiohttp.ClientError, TimeoutError) as err:
                logger.warning("HQ not reachable (%s); trying again", err)
            await asyncio.sleep(poll_s)
    raise EnrollError("no admin entered the code in time")
