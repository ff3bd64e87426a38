"""Every device CLI command as a real subprocess on a real store: a fresh one (just made by
`smartq init`), a used one (a node ran and served tickets), and bad input, which ends with
one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .procs import NodeProcess


def smartq(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--log-level", "warning", *args],
                          capture_output=True, text=True, input=stdin if stdin is not None else "", timeout=60,
                          env={**os.environ, "SMARTQ_LOG_LEVEL": "warning"})


def fails_in_one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cli") / "branch"
    result = smartq("init", str(base))
    assert result.returncode == 0, result.stderr
    written = {Path(line).name for line in result.stdout.split()}
    assert {"kiosk.toml", "display.toml", "counter-1.toml", "counter-2.toml"} <= written
    return base


def test_verify_on_a_store_just_made_by_init_says_there_is_nothing_yet(fresh):
    result = smartq("verify", "--config", str(fresh / "kiosk.toml"))
    assert result.returncode == 0, result.stderr
    assert "device kiosk (kiosk) of branch kigali-main" in result.stdout
    assert "no store yet" in result.stdout
    assert not (fresh / "data" / "kiosk" / "smartq.db").exists()  # verify changes nothing


def test_refold_then_verify_on_a_fresh_store(fresh):
    refold = smartq("refold", "--config", str(fresh / "display.toml"))
    assert refold.returncode == 0, refold.stderr
    assert refold.stdout.startswith("re-folded 0 events into 0 tickets; state hash ")
    verify = smartq("verify", "--config", str(fresh / "display.toml"))
    assert verify.returncode == 0, verify.stderr
    out = verify.stdout
    assert "SQLite file: quick_check ok" in out
    assert "log: 0 events from 0 devices, every hash chain and signature verifies" in out
    assert "projection: equal to a whole re-fold of the log" in out
    assert out.rstrip().endswith("verified: no problems")


def test_node_verify_and_refold_on_a_used_store(fresh, tmp_path):
    config = fresh / "counter-1.toml"
    node = NodeProcess(config, log_path=tmp_path / "node.log")
    try:
        for _ in range(3):
            status, _ = node.request("POST", "/api/v1/tickets", {"service": "general"})
            assert status == 201
        status, login = node.request("POST", "/api/v1/staff/login", {"counter": "c1", "pin": "1234"})
        assert status == 200, login
        staff = {"Authorization": f"Bearer {login['token']}"}
        assert node.request("POST", "/api/v1/counters/c1/open", headers=staff)[0] == 200
        status, called = node.request("POST", "/api/v1/counters/c1/call-next", headers=staff)
        assert status == 200
        for action in ("start", "complete"):
            assert node.request("POST", f"/api/v1/counters/c1/tickets/{called['id']}/{action}", headers=staff)[0] == 200
        # verify reads beside a running node
        running = smartq("verify", "--config", str(config))
        assert running.returncode == 0, running.stdout + running.stderr
    finally:
        node.stop()
    verify = smartq("verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    events = int(verify.stdout.split("log: ")[1].split()[0])
    assert events >= 3 + 4  # config events, three issues, open, call, start, complete
    assert "every hash chain and signature verifies" in verify.stdout
    assert "projection: equal to a whole re-fold" in verify.stdout
    refold = smartq("refold", "--config", str(config))
    assert refold.returncode == 0, refold.stderr
    assert refold.stdout.startswith(f"re-folded {events} events into 3 tickets; state hash ")
    # the re-fold left the same state the incremental fold had
    stated = verify.stdout.split("state hash ")[1][:16]
    assert refold.stdout.strip().endswith(stated)


def test_verify_finds_a_tampered_event_and_a_projection_out_of_step(fresh, tmp_path):
    config = fresh / "counter-2.toml"
    node = NodeProcess(config, log_path=tmp_path / "node.log")
    try:
        assert node.request("POST", "/api/v1/tickets", {"service": "payments"})[0] == 201
    finally:
        node.stop()
    db = fresh / "data" / "counter-2" / "smartq.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE tickets SET status = 'completed'")
    conn.close()
    result = smartq("verify", "--config", str(config))
    assert result.returncode == 1
    assert "problem: projection differs from a whole re-fold" in result.stdout
    assert smartq("refold", "--config", str(config)).returncode == 0
    assert smartq("verify", "--config", str(config)).returncode == 0
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE events SET payload = replace(payload, 'payments', 'general')"
                     " WHERE type = 'ticket.issued'")
    conn.close()
    result = smartq("verify", "--config", str(config))
    assert result.returncode == 1
    assert "stored hash does not match the content" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_hash_pin_prints_a_hash_the_staff_check_accepts():
    from appliance.staff import check_pin

    result = smartq("hash-pin", "4821")
    assert result.returncode == 0, result.stderr
    assert check_pin("4821", result.stdout.strip())
    assert not check_pin("4822", result.stdout.strip())
    from_stdin = smartq("hash-pin", stdin="4821\n")
    assert from_stdin.returncode == 0 and check_pin("4821", from_stdin.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["verify", "refold", "node"])
def test_a_missing_config_is_one_line(command, tmp_path):
    fails_in_one_line(smartq(command, "--config", str(tmp_path / "nowhere.toml")), "no such file")


@pytest.mark.parametrize("command", ["verify", "refold", "node"])
def test_a_directory_given_as_config_is_one_line(command, tmp_path):
    fails_in_one_line(smartq(command, "--config", str(tmp_path)), "cannot read it")


def test_a_config_that_is_not_toml_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\nid = ")
    fails_in_one_line(smartq("verify", "--config", str(bad)), "not valid TOML")


@pytest.mark.parametrize("command", ["verify", "refold", "node"])
def test_a_corrupt_store_is_one_line(command, fresh, tmp_path):
    import shutil

    copy = tmp_path / "branch"
    shutil.copytree(fresh, copy)
    db = copy / "data" / "kiosk" / "smartq.db"
    db.write_bytes(b"this is not a database, a power cut wrote garbage here" * 100)
    line = fails_in_one_line(smartq(command, "--config", str(copy / "kiosk.toml")), "file is not a database")
    assert str(db) in line


def test_verify_in_a_data_dir_without_a_device_key_is_one_line_and_creates_nothing(fresh, tmp_path):
    config = tmp_path / "kiosk.toml"
    config.write_text((fresh / "kiosk.toml").read_text().replace('data_dir = "data/kiosk"',
                                                                  f'data_dir = "{tmp_path / "elsewhere"}"'))
    fails_in_one_line(smartq("verify", "--config", str(config)), "no device key")
    assert not (tmp_path / "elsewhere" / "device.key").exists()


def test_bad_hash_pin_and_init_input_is_one_line(fresh, tmp_path):
    fails_in_one_line(smartq("hash-pin", "12ab"), "digits only")
    fails_in_one_line(smartq("hash-pin"), "no PIN given")
    fails_in_one_line(smartq("init", str(fresh)), "exists")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails_in_one_line(smartq("init", str(blocker / "branch")), "cannot write")


def test_bad_enroll_input_is_one_line(tmp_path):
    data = tmp_path / "device"
    out = tmp_path / "device.toml"
    fails_in_one_line(smartq("enroll", "--data-dir", str(data), "--config-out", str(out),
                             "--bundle", str(tmp_path / "nowhere.json")), "No such file")
    garbage = tmp_path / "bundle.json"
    garbage.write_text("a power cut wrote this")
    fails_in_one_line(smartq("enroll", "--data-dir", str(data), "--config-out", str(out), "--bundle", str(garbage)))
    garbage.write_text('{"version": 1}')
    fails_in_one_line(smartq("enroll", "--data-dir", str(data), "--config-out", str(out), "--bundle", str(garbage)))
    fails_in_one_line(smartq("enroll", "--data-dir", str(data)), "--config-out")
    fails_in_one_line(smartq("enroll", "--data-dir", str(data), "--config-out", str(out)), "--hq URL")
    assert not out.exists()


def test_verify_after_a_nightly_compaction_checks_the_days_kept(sample_template, tmp_path):
    """Compaction deletes old days' events (HQ keeps them) but keeps their projection rows: a
    re-fold can only rebuild the days kept, so verify compares those and says so."""
    from appliance import nightly
    from appliance.config import load_config
    from sync.log import version_vector

    from .conftest import Device, ManualClock, copy_branch

    paths = copy_branch(sample_template, tmp_path / "branch")
    clock = ManualClock()
    kiosk = Device(load_config(paths["kiosk"]), clock)
    try:
        old_day = nightly.utc_day(kiosk.do(lambda c: c.execute("SELECT max(hlc) FROM events").fetchone()[0]))
        kiosk.do(lambda c: kiosk.node.branch.set_counter(c, "c1", "open", None))
        for _ in range(3):
            kiosk.do(lambda c: kiosk.node.branch.issue(c, {"service": "general"}))
        clock.ms += 3 * 24 * 3600 * 1000
        kept = kiosk.do(lambda c: kiosk.node.branch.issue(c, {"service": "general"}))
        deleted = kiosk.do(lambda c: nightly.compact(c, cutoff_day=nightly.utc_day(clock.ms << 16), good_days={old_day},
                                                     hq_vv=version_vector(c), now_ms=clock.ms))
        assert deleted
    finally:
        kiosk.close()
    result = smartq("verify", "--config", str(paths["kiosk"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "projection: the tickets of the days kept (1) equal a re-fold of the log" in result.stdout
    db = paths["kiosk"].parent / "data" / "kiosk" / "smartq.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE tickets SET status = 'cancelled' WHERE id = ?", (kept["id"],))
    conn.close()
    result = smartq("verify", "--config", str(paths["kiosk"]))
    assert result.returncode == 1 and "projection differs from a whole re-fold" in result.stdout
