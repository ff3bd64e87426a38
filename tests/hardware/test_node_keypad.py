"""A real counter node driven only by a serial keypad on a socat pty pair, with an LED sign on another.

The whole staff cycle (login, open, call, start, done, no-show, requeue, transfer, pause,
logout) goes through keypad lines and is checked through the node's HTTP API; the sign's
frames are read from its pty. Garbage is skipped, and a keypad whose pty disappears and comes
back (socat restarted) works again without restarting the node.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.sample import write_sample
from hardware.led_sign import LedFrame, decode_frames

from .ptys import RawPort, SocatPair, read_available
from .test_node_config import hardware, sample_device, start_node, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def ptys(tmp_path: Path):
    keypad = SocatPair(tmp_path, "keypad", "keypad-node")
    led = SocatPair(tmp_path, "sign", "sign-node")
    try:
        yield keypad.start(), led.start()
    finally:
        keypad.stop()
        led.stop()


class Keypad:
    """The keypad end of the pty: send a line, read the reply meant for it."""

    def __init__(self, pair: SocatPair) -> None:
        self.port = pair.open_device()
        self.buf = b""

    def send(self, line: bytes) -> None:
        self.port.write(line + b"\r\n")

    def reply(self, prefix: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\r\n" in self.buf:
                raw, self.buf = self.buf.split(b"\r\n", 1)
                if raw.decode("ascii").startswith(prefix):
                    return raw.decode("ascii")
            self.buf += read_available(self.port)
        raise AssertionError(f"no reply starting {prefix!r}")

    def press(self, line: str) -> str:
        """`c1:NEXT` -> the text after `c1:` (e.g. `OK A600`)."""
        self.send(line.encode())
        counter = line.split(":", 1)[0]
        return self.reply(f"{counter}:").split(":", 1)[1]

    def close(self) -> None:
        self.port.close()


class Sign:
    """The LED sign end: every frame the node sent."""

    def __init__(self, pair: SocatPair) -> None:
        self.port: RawPort = pair.open_device_raw()
        self.frames: list[LedFrame] = []
        self.tail = b""

    def read(self) -> list[LedFrame]:
        frames, self.tail = decode_frames(self.tail + self.port.read(4096))
        self.frames += frames
        return self.frames

    def wait(self, frame: LedFrame, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while frame not in self.read():
            if time.monotonic() > deadline:
                raise AssertionError(f"{frame} not shown; got {self.frames}")


def api(node, method: str, path: str, body: Any = None) -> Any:
    status, reply = node.request(method, path, body)
    assert status < 300, (status, reply)
    return reply


def test_whole_counter_cycle_driven_only_by_keypad_lines(tmp_path: Path, ptys) -> None:
    keypad_pty, sign_pty = ptys
    write_sample(tmp_path / "branch")
    config = sample_device(tmp_path / "branch", "counter-1", f"""
[hardware.keypad]
backend = "serial"
url = "{keypad_pty.host_path}"
backoff_max = 0.5

[hardware.led]
backend = "serial"
url = "{sign_pty.host_path}"
backoff_max = 0.5
""")
    node = start_node(config, tmp_path, "counter-1")
    keypad = sign = None
    try:
        wait_for(lambda: hardware(node)["keypad"]["connected"] and hardware(node)["led"]["connected"],
                 what="keypad and sign open")
        keypad, sign = Keypad(keypad_pty), Sign(sign_pty)
        tickets = [api(node, "POST", "/api/v1/tickets", {"service": s}) for s in ("general", "general", "payments")]

        # staff must log in first; PINs are checked with the node's staff list
        assert keypad.press("c1:NEXT") == "ERR login first"
        assert keypad.press("c1:LOGIN 9999") == "ERR wrong PIN"
        assert keypad.press("c1:LOGIN 1234") == "OK Amina Uwase"
        assert hardware(node)["keypad"]["logged_in"] == {"c1": "amina"}
        assert keypad.press("c1:NEXT") == "ERR counter not open"
        assert keypad.press("c1:OPEN") == "OK"
        counter = api(node, "GET", "/api/v1/counters/c1")
        assert counter["status"] == "open" and counter["staff"] == "amina"

        # call, start, done
        first = tickets[0]
        assert keypad.press("c1:NEXT") == f"OK {first['label']}"
        assert api(node, "GET", f"/api/v1/tickets/{first['id']}")["status"] == "called"
        sign.wait(LedFrame("c1", first["label"], "B"))
        assert keypad.press("c1:RECALL") == f"OK {first['label']}"
        assert api(node, "GET", f"/api/v1/tickets/{first['id']}")["recalls"] == 1
        assert keypad.press("c1:DONE").startswith("ERR ticket")  # not started yet
        assert keypad.press("c1:START") == f"OK {first['label']}"
        assert api(node, "GET", f"/api/v1/tickets/{first['id']}")["status"] == "serving"
        assert keypad.press("c1:DONE") == f"OK {first['label']}"
        assert api(node, "GET", f"/api/v1/tickets/{first['id']}")["status"] == "completed"
        sign.wait(LedFrame("c1", "", "C"))
        assert keypad.press("c1:START") == "ERR no current ticket"

        # no-show, then the citizen turns up: requeue
        second = tickets[1]
        assert keypad.press("c1:NEXT") == f"OK {second['label']}"
        assert keypad.press("c1:NOSHOW") == f"OK {second['label']}"
        assert api(node, "GET", f"/api/v1/tickets/{second['id']}")["status"] == "no_show"
        assert keypad.press("c1:REQUEUE") == f"OK {second['label']}"
        assert api(node, "GET", f"/api/v1/tickets/{second['id']}")["status"] == "waiting"

        # transfer to a service this counter does not serve (by letter, as a keypad can)
        reply = keypad.press("c1:NEXT")
        moved = next(t for t in tickets if reply == f"OK {t['label']}")
        assert keypad.press("c1:TRANSFER Z") == "ERR unknown service"
        assert keypad.press("c1:TRANSFER C") == f"OK {moved['label']}"
        after = api(node, "GET", f"/api/v1/tickets/{moved['id']}")
        assert after["service"] == "documents" and after["status"] == "waiting"

        # another device's counter is refused; the queue runs dry
        assert keypad.press("c2:NEXT") == "ERR not this counter"
        called = []
        while (reply := keypad.press("c1:NEXT")) != "OK EMPTY":
            called.append(reply.removeprefix("OK "))
            assert len(called) < 5, called
        waiting_here = {t["label"] for t in tickets} - {first["label"], moved["label"]}
        assert set(called) == waiting_here
        # calling next with nobody waiting ended the last call (no-show): the sign is cleared
        sign.wait(LedFrame("c1", called[-1], "B"))
        wait_for(lambda: sign.read() and sign.frames[-1] == LedFrame("c1", "", "C"), what="sign cleared")
        assert api(node, "GET", "/api/v1/counters/c1")["current"] is None

        assert keypad.press("c1:PAUSE") == "OK"
        assert api(node, "GET", "/api/v1/counters/c1")["status"] == "paused"
        assert keypad.press("c1:LOGOUT") == "OK"
        assert keypad.press("c1:OPEN") == "ERR login first"
        assert hardware(node)["keypad"]["logged_in"] == {}
    finally:
        for port in (keypad, sign):
            if port is not None:
                port.port.close()
        node.stop()


def test_keypad_garbage_is_skipped_and_a_replugged_pty_recovers_without_restart(tmp_path: Path, ptys) -> None:
    keypad_pty, _ = ptys
    write_sample(tmp_path / "branch")
    config = sample_device(tmp_path / "branch", "counter-2", f"""
[hardware.keypad]
backend = "serial"
url = "{keypad_pty.host_path}"
backoff_max = 0.5
""")
    node = start_node(config, tmp_path, "counter-2")
    keypad = None
    try:
        wait_for(lambda: hardware(node)["keypad"]["connected"], what="keypad open")
        keypad = Keypad(keypad_pty)
        keypad.send(b"\xff\xfe\x00\x01noise")       # not UTF-8: skipped without a reply
        keypad.send(b"hello there")                # readable but not a command
        assert keypad.reply("ERR") == "ERR bad line"
        assert keypad.press("c3:FLY") == "ERR unknown key FLY"
        assert keypad.press("c3:LOGIN 3456") == "OK Lucia Gomez"   # accents stripped for the keypad
        assert keypad.press("c3:OPEN") == "OK"
        status = hardware(node)["keypad"]
        assert status["lines_rejected"] >= 3
        log = (tmp_path / "counter-2.log").read_text()
        assert "keypad: skipped" in log and "keypad: rejected" in log

        keypad.close()
        keypad = None
        keypad_pty.stop()                           # unplugged: the pty vanishes
        wait_for(lambda: not hardware(node)["keypad"]["connected"], what="keypad gone")
        keypad_pty.start()                          # plugged back in: a new pty
        wait_for(lambda: hardware(node)["keypad"]["connected"], what="keypad back")
        keypad = Keypad(keypad_pty)
        ticket = api(node, "POST", "/api/v1/tickets", {"service": "documents"})
        assert keypad.press("c3:NEXT") == f"OK {ticket['label']}"    # the session survived the replug
        assert api(node, "GET", f"/api/v1/tickets/{ticket['id']}")["counter"] == "c3"
        assert hardware(node)["keypad"]["opens"] >= 2
    finally:
        if keypad is not None:
            keypad.close()
        node.stop()
