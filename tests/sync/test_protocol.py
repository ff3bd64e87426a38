from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.protocol import AuthError, Verifier, encode, sign_headers

NOW = 1_795_000_000_000


@pytest.fixture
def setup():
    keys = {"kiosk": Ed25519PrivateKey.generate()}
    verifier = Verifier(lambda d: keys[d].public_key() if d in keys else None, lambda b: b == "b1",
                        clock_ms=lambda: NOW)
    return keys, verifier


def signed(key, body=b"", *, device="kiosk", branch="b1", path="/sync/v1/pull", now=NOW, nonce=None):
    return sign_headers(key, device=device, branch=branch, method="POST", path=path, body=body, now_ms=now, nonce=nonce)


def test_a_signed_request_from_a_roster_device_verifies(setup):
    keys, verifier = setup
    body = encode({"vv": {}})
    who = verifier.verify("POST", "/sync/v1/pull", signed(keys["kiosk"], body), body)
    assert (who.device, who.branch) == ("kiosk", "b1")


@pytest.mark.parametrize("mutate, status, text", [
    (lambda h, b: (h, b + b" "), 401, "bad request signature"),                  # body changed
    (lambda h, b: ({**h, "X-SmartQ-Device": "rogue"}, b), 403, "not on the roster"),
    (lambda h, b: ({**h, "X-SmartQ-Branch": "b2"}, b), 403, "not served"),
    (lambda h, b: ({**h, "X-SmartQ-Protocol": "2"}, b), 409, "protocol version"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "X-SmartQ-Signature"}, b), 401, "missing"),
])
def test_tampered_or_foreign_requests_are_refused(setup, mutate, status, text):
    keys, verifier = setup
    body = encode({"events": []})
    headers, body = mutate(signed(keys["kiosk"], body), body)
    with pytest.raises(AuthError) as err:
        verifier.verify("POST", "/sync/v1/pull", headers, body)
    assert err.value.status == status and text in err.value.message


def test_a_rogue_key_claiming_a_roster_id_is_refused(setup):
    _, verifier = setup
    with pytest.raises(AuthError, match="bad request signature"):
        verifier.verify("POST", "/sync/v1/pull", signed(Ed25519PrivateKey.generate()), b"")


def test_replayed_and_stale_requests_are_refused(setup):
    keys, verifier = setup
    headers = signed(keys["kiosk"])
    verifier.verify("POST", "/sync/v1/pull", headers, b"")
    with pytest.raises(AuthError, match="replayed"):
        verifier.verify("POST", "/sync/v1/pull", headers, b"")
    with pytest.raises(AuthError, match="off this device's clock"):
        verifier.verify("POST", "/sync/v1/pull", signed(keys["kiosk"], now=NOW - 2 * 3600_000), b"")


def test_a_signature_is_bound_to_its_path(setup):
    keys, verifier = setup
    with pytest.raises(AuthError, match="bad request signature"):
        verifier.verify("POST", "/sync/v1/push", signed(keys["kiosk"], path="/sync/v1/pull"), b"")


def test_a_request_addressed_to_another_device_is_refused(setup):
    keys, _ = setup
    verifier = Verifier(lambda d: keys[d].public_key() if d in keys else None, lambda b: b == "b1",
                        clock_ms=lambda: NOW, audience="display")
    body = encode({"vv": {}})
    to_display = sign_headers(keys["kiosk"], device="kiosk", branch="b1", method="POST", path="/sync/v1/pull",
                              body=body, now_ms=NOW, to="display")
    assert verifier.verify("POST", "/sync/v1/pull", to_display, body).device == "kiosk"
    to_counter = sign_headers(keys["kiosk"], device="kiosk", branch="b1", method="POST", path="/sync/v1/pull",
                              body=body, now_ms=NOW, to="counter-1")
    with pytest.raises(AuthError, match="not to 'display'"):
        verifier.verify("POST", "/sync/v1/pull", to_counter, body)
    # Re-addressing a captured request breaks its signature.
    with pytest.raises(AuthError, match="bad request signature"):
        verifier.verify("POST", "/sync/v1/pull", {**to_counter, "X-SmartQ-To": "display"}, body)
