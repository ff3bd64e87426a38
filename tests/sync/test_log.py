from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.envelope import Event, canonical_json
from sync.hlc import pack
from sync.log import events_since, verify_chains, version_vector


def test_appended_events_form_a_signed_hash_chain(make_log, keys):
    a = make_log("a")
    e1, e2, e3 = (a.append("t", {"n": i}) for i in range(3))
    assert [e.seq for e in (e1, e2, e3)] == [1, 2, 3]
    assert e1.prev == "" and e2.prev == e1.hash and e3.prev == e2.hash
    assert e1.hlc < e2.hlc < e3.hlc
    assert all(e.signature_valid(keys["a"].public_key()) for e in (e1, e2, e3))
    assert verify_chains(a.conn, lambda o: keys[o].public_key()) == []
    assert version_vector(a.conn) == {"a": 3}


def test_canonical_encoding_is_sorted_compact_utf8():
    e = Event("dev", 1, 5, "t", 1, {"b": "é", "a": [1, None, True]}, "br", "")
    assert e.canonical() == '{"branch":"br","hlc":5,"origin":"dev","payload":{"a":[1,null,true],"b":"é"},"prev":"","schema":1,"seq":1,"type":"t"}'.encode()
    assert canonical_json({"x": 1}) == b'{"x":1}'


def test_ingest_is_idempotent_and_folds_each_event_once(make_log):
    a, b = make_log("a"), make_log("b")
    events = [a.append("t", {"n": i}) for i in range(5)]
    first = b.ingest(events)
    again = b.ingest(events + events)
    assert len(first.accepted) == 5 and first.rejected == []
    assert again.accepted == [] and again.duplicates == 10
    assert [e.seq for e in b.applied] == [1, 2, 3, 4, 5]


def test_gaps_are_held_until_filled_then_folded_in_chain_order(make_log):
    a, b = make_log("a"), make_log("b")
    e = [a.append() for _ in range(4)]
    r1 = b.ingest([e[2], e[3]])
    assert r1.held == 2 and r1.accepted == [] and version_vector(b.conn) == {}
    r2 = b.ingest([e[0]])
    assert [x.seq for x in r2.accepted] == [1]
    r3 = b.ingest([e[1]])
    assert [x.seq for x in r3.accepted] == [2, 3, 4]
    assert version_vector(b.conn) == {"a": 4}
    assert b.conn.execute("SELECT count(*) FROM held").fetchone()[0] == 0


def test_bad_signature_is_rejected_with_a_logged_reason(make_log, caplog):
    a, b = make_log("a"), make_log("b")
    e = a.append("t", {"amount": 1})
    forged = e.replace(payload={"amount": 1000})
    r = b.ingest([forged])
    assert r.accepted == [] and r.rejected == [("a", 1, "bad signature")]
    assert "bad signature" in caplog.text
    assert b.conn.execute("SELECT reason FROM rejected").fetchone()[0] == "bad signature"
    assert b.applied == []


def test_unknown_origin_and_other_branch_are_rejected(make_log):
    b = make_log("b")
    stranger = Ed25519PrivateKey.generate()
    e = Event("z", 1, pack(1_700_000_000_000), "t", 1, {}, "b1", "").signed(stranger)
    other_branch = Event("c", 1, pack(1_700_000_000_000), "t", 1, {}, "elsewhere", "")
    r = b.ingest([e, other_branch])
    reasons = sorted(reason for _, _, reason in r.rejected)
    assert reasons == ["belongs to branch 'elsewhere'", "origin is not on the roster"]


def test_broken_chain_is_rejected(make_log, keys):
    a, b = make_log("a"), make_log("b")
    e1 = a.append()
    # A validly signed second event that does not point at e1.
    bogus = Event("a", 2, e1.hlc + 1, "t", 1, {}, "b1", "0" * 64).signed(keys["a"])
    r = b.ingest([e1, bogus])
    assert [x.seq for x in r.accepted] == [1]
    assert r.rejected == [("a", 2, "broken hash chain (prev does not match)")]


def test_equivocation_two_events_for_one_place_is_rejected(make_log, keys):
    a, b = make_log("a"), make_log("b")
    e1 = a.append("t", {"v": 1})
    twin = Event("a", 1, e1.hlc, "t", 1, {"v": 2}, "b1", "").signed(keys["a"])
    b.ingest([e1])
    r = b.ingest([twin])
    assert r.rejected and "conflicting" in r.rejected[0][2]


def test_events_from_the_future_are_quarantined_then_released(make_log, keys, clock):
    b = make_log("b")
    future = Event("a", 1, pack(clock.ms + 10 * 60_000), "t", 1, {}, "b1", "").signed(keys["a"])
    r = b.ingest([future])
    assert r.quarantined == 1 and b.applied == [] and version_vector(b.conn) == {}
    assert b.txn(b.log.release_quarantine).accepted == []  # still too early
    clock.ms += 6 * 60_000
    released = b.txn(b.log.release_quarantine)
    assert [e.seq for e in released.accepted] == [1]
    assert version_vector(b.conn) == {"a": 1}


def test_an_operator_can_accept_a_quarantined_event(make_log, keys, clock):
    b = make_log("b")
    future = Event("a", 1, pack(clock.ms + 60 * 60_000), "t", 1, {}, "b1", "").signed(keys["a"])
    b.ingest([future])
    released = b.txn(lambda c: b.log.release_quarantine(c, accept=("a", 1)))
    assert [e.seq for e in released.accepted] == [1]


def test_malformed_envelopes_are_rejected_not_raised(make_log):
    b = make_log("b")
    r = b.ingest([{"origin": "a"}, {"origin": "a", "seq": "x"}, "nonsense"])
    assert len(r.rejected) == 3 and all(reason.startswith("malformed") for _, _, reason in r.rejected)


def test_integers_a_store_cannot_hold_are_malformed_not_a_crash(make_log, keys, clock):
    """seq, hlc and schema are stored as signed 64-bit integers: 2^63 is refused with a reason,
    and the good event of the same batch is kept."""
    b = make_log("b")
    good = Event("a", 1, pack(clock.ms), "t", 1, {}, "b1", "").signed(keys["a"])
    huge = [dict(good.to_dict(), **{name: 1 << 63}) for name in ("seq", "hlc", "schema")]
    r = b.ingest([*huge, good.to_dict()])
    assert [e.seq for e in r.accepted] == [1]
    assert len(r.rejected) == 3 and all("must be from" in reason for _, _, reason in r.rejected)


def test_events_since_a_vector_come_in_batches(make_log):
    a, b = make_log("a"), make_log("b")
    for _ in range(7):
        a.append()
    for _ in range(3):
        b.append()
    b.ingest(events_since(a.conn, {}, limit=1000))
    batch = events_since(b.conn, {"a": 2}, limit=4)
    assert [(e.origin, e.seq) for e in batch] == [("a", 3), ("a", 4), ("a", 5), ("a", 6)]
    rest = events_since(b.conn, {"a": 6}, limit=100)
    assert [(e.origin, e.seq) for e in rest] == [("a", 7), ("b", 1), ("b", 2), ("b", 3)]
    assert events_since(b.conn, version_vector(b.conn)) == []


def test_clock_follows_ingested_events(make_log, keys, clock):
    b = make_log("b")
    ahead = Event("a", 1, pack(clock.ms + 60_000), "t", 1, {}, "b1", "").signed(keys["a"])
    b.ingest([ahead])
    assert b.append().hlc > ahead.hlc


def test_verify_chains_finds_tampering(make_log, keys):
    a = make_log("a")
    for i in range(3):
        a.append("t", {"i": i})
    a.conn.execute("UPDATE events SET payload = '{\"i\":99}' WHERE seq = 2")
    problems = verify_chains(a.conn, lambda o: keys[o].public_key())
    assert any("a/2" in p for p in problems)


# -- one signature check per chain run (ingest speed) ---------------------------------------

def _count_verifies(monkeypatch):
    import sync.envelope as envelope

    calls = []
    real = envelope.verify

    def counting(key, sig, message):
        calls.append(message)
        return real(key, sig, message)

    monkeypatch.setattr(envelope, "verify", counting)
    return calls


def test_a_contiguous_run_is_authenticated_by_its_last_signature(make_log, monkeypatch):
    a, b = make_log("a"), make_log("b")
    events = [a.append("t", {"n": i}) for i in range(50)]
    calls = _count_verifies(monkeypatch)
    r = b.ingest(events)
    assert len(r.accepted) == 50 and r.rejected == []
    assert len(calls) == 1  # the last event's signature covers the other 49 through the chain
    assert verify_chains(b.conn) == []


def test_a_forged_middle_event_is_rejected_and_its_genuine_predecessors_kept(make_log, keys):
    a, b = make_log("a"), make_log("b")
    events = [a.append("t", {"n": i}) for i in range(6)]
    forged = events[3].replace(payload={"n": 999})  # content changed, old signature kept
    r = b.ingest(events[:3] + [forged] + events[4:])
    assert [e.seq for e in r.accepted] == [1, 2, 3]
    assert ("a", 4, "bad signature") in r.rejected
    assert r.held == 2  # 5 and 6 wait for the genuine 4
    assert all(e.payload["n"] != 999 for e in b.applied)
    r2 = b.ingest([events[3]])
    assert [e.seq for e in r2.accepted] == [4, 5, 6]


def test_a_forged_middle_event_with_a_relinked_chain_is_rejected(make_log, keys):
    """A forger who also rewrites every later `prev` to keep the chain cannot re-sign the end."""
    a, b = make_log("a"), make_log("b")
    events = [a.append("t", {"n": i}) for i in range(5)]
    forged = [*events[:2], events[2].replace(payload={"n": 999})]
    for e in events[3:]:
        forged.append(e.replace(prev=forged[-1].hash))
    r = b.ingest(forged)
    assert [e.seq for e in r.accepted] == [1, 2]
    assert {(o, s, why) for o, s, why in r.rejected} == {("a", 3, "bad signature"), ("a", 4, "bad signature"),
                                                         ("a", 5, "bad signature")}
    assert version_vector(b.conn) == {"a": 2}


def test_a_run_signed_by_another_key_is_rejected(make_log, keys):
    a, b = make_log("a"), make_log("b")
    rogue = Ed25519PrivateKey.generate()
    events = [a.append("t", {"n": i}) for i in range(3)]
    chain, prev = [], ""
    for e in events:
        x = e.replace(prev=prev, sig="").signed(rogue)
        chain.append(x)
        prev = x.hash
    r = b.ingest(chain)
    assert r.accepted == [] and len(r.rejected) == 3
    assert b.applied == []


def test_verify_chains_starts_after_a_compacted_prefix(make_log, keys):
    a = make_log("a")
    events = [a.append("t", {"i": i}) for i in range(4)]
    a.conn.execute("DELETE FROM events WHERE origin = 'a' AND seq <= 2")
    keyring = lambda o: keys[o].public_key()  # noqa: E731
    assert verify_chains(a.conn, keyring) != []  # without the floor, seq 1 looks missing
    assert verify_chains(a.conn, keyring, {"a": (2, events[1].hash)}) == []
    assert verify_chains(a.conn, keyring, {"a": (2, "0" * 64)}) != []  # a wrong floor is caught


def test_a_restarted_clock_starts_after_its_own_compacted_events(make_log, keys, clock, tmp_path):
    # The HLC is persisted by the heads: after compaction deleted every event and with the
    # wall clock set back (a Pi without a real-time clock), a restart still never reuses a timestamp.
    from sync.hlc import HybridLogicalClock

    a = make_log("a")
    last = [a.append("t", {"i": i}) for i in range(3)][-1]
    a.conn.execute("DELETE FROM events")
    clock.ms -= 3_600_000
    a.log.clock = HybridLogicalClock(clock=clock)
    a.log.seed_clock(a.conn)
    assert a.append().hlc > last.hlc
