"""The rules every store applies to a foreign event before it keeps it: one implementation for
branch devices (sync.log) and HQ (hq.ingest), so neither can accept what the other refuses.

Each rule is a pure function of the event and what the caller looked up in its own tables
(the origin's key and revocation, the stored hash at the same place, the predecessor's hash);
it answers None or a `Refusal` with a stable `code` (what HQ reports on the wire) and a
`message` (what the device log records). The order the callers apply them in:

    shape (Event.from_dict)  -> branch -> roster -> revocation -> signature
    -> equivocation (same (origin, seq), another hash) -> future (quarantine, not a refusal)
    -> gap (hold) -> chain (prev is the predecessor's hash)
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.envelope import Event
from sync.hlc import physical_ms

MAX_FUTURE_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def malformed(detail: str) -> Refusal:
    return Refusal("malformed", f"malformed: {detail}")


EQUIVOCATION = Refusal("equivocation", "conflicting event for an existing (origin, seq)")
BROKEN_CHAIN = Refusal("broken_chain", "broken hash chain (prev does not match)")
UNKNOWN_ORIGIN = Refusal("unknown_device", "origin is not on the roster")
REVOKED = Refusal("revoked_device", "origin is revoked")
BAD_SIGNATURE = Refusal("bad_signature", "bad signature")
FUTURE = Refusal("future", "more than 5 minutes in the future")


def authentic(event: Event, *, branch: str, key: Ed25519PublicKey | None, revoked_after: int | None,
              verified: bool = False) -> Refusal | None:
    """Branch, roster, revocation and signature. `verified` says the batch already proved
    the signature (sync.log's chain runs); what a revoked device did before its revocation stays."""
    if event.branch != branch:
        return Refusal("wrong_branch", f"belongs to branch {event.branch!r}")
    if key is None:
        return UNKNOWN_ORIGIN
    if revoked_after is not None and event.seq > revoked_after:
        return REVOKED
    if not verified and not event.signature_valid(key):
        return BAD_SIGNATURE
    return None


def equivocates(event: Event, stored_hash: str | None) -> bool:
    """A different event already stored at the same (origin, seq): the origin signed two."""
    return stored_hash is not None and stored_hash != event.hash


def too_far_ahead(event: Event, now_ms: int, max_future_ms: int = MAX_FUTURE_MS) -> bool:
    """Quarantined (kept aside, not folded) until the receiver's clock catches up."""
    return physical_ms(event.hlc) > now_ms + max_future_ms


def chained(event: Event, predecessor_hash: str) -> bool:
    """The event names its origin's previous event (the genesis value for seq 1)."""
    return event.prev == predecessor_hash


__all__ = ["BAD_SIGNATURE", "BROKEN_CHAIN", "EQUIVOCATION", "FUTURE", "MAX_FUTURE_MS", "REVOKED", "Refusal",
           "UNKNOWN_ORIGIN", "authentic", "chained", "equivocates", "malformed", "too_far_ahead"]
