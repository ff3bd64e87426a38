"""Keypads over a real socat pty pair: a whole counter cycle, noise, and a replugged device."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.errors import HardwareConfigError, KeypadError
from hardware.keypad import (
    FakeKeypad,
    KeypadCommand,
    KeypadReader,
    build_keypad_from_config,
    parse_line,
)

from .ptys import SocatPair, read_available, read_lines_until


class MiniBranch:
    """Just enough queue to answer keypad commands the way the node will."""

    def __init__(self) -> None:
        self.waiting = {"A": ["A041", "A042", "A043"], "B": []}
        self.counters: dict[str, dict] = {}
        self.log: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, cmd: KeypadCommand) -> str:
        with self.lock:
            self.log.append(str(cmd))
            c = self.counters.setdefault(cmd.counter, {"open": False, "staff": None,
                                                       "ticket": None, "serving": False})
            if cmd.key == "LOGIN":
                if cmd.arg != "4821":
                    return "ERR wrong pin"
                c["staff"] = "amina"
                return "OK amina"
            if c["staff"] is None:
                return "ERR login first"
            if cmd.key == "OPEN":
                c["open"] = True
                return "OK open"
            if cmd.key == "NEXT":
                if not c["open"]:
                    return "ERR counter closed"
                queue = self.waiting["A"] or self.waiting["B"]
                if not queue:
                    return "ERR no ticket waiting"
                c["ticket"], c["serving"] = queue.pop(0), False
                return f"OK {c['ticket']}"
            if cmd.key in ("START", "DONE", "NOSHOW", "RECALL", "TRANSFER") and not c["ticket"]:
                return "ERR no current ticket"
            if cmd.key == "RECALL":
                return f"OK {c['ticket']}"
            if cmd.key == "START":
                c["serving"] = True
                return f"OK {c['ticket']}"
            if cmd.key == "DONE":
                if not c["serving"]:
                    return "ERR not serving"
                done, c["ticket"] = c["ticket"], None
                return f"OK {done} done"
            if cmd.key == "NOSHOW":
                gone, c["ticket"] = c["ticket"], None
                return f"OK {gone} no-show"
            if cmd.key == "TRANSFER":
                if cmd.arg not in self.waiting:
                    return "ERR unknown service"
                self.waiting[cmd.arg].append(c["ticket"])
                moved, c["ticket"] = c["ticket"], None
                return f"OK {moved} to {cmd.arg}"
            if cmd.key == "LOGOUT":
                c["staff"] = None
                return "OK bye"
            return "OK"


@pytest.fixture
def socat_pair(tmp_path):
    pair = SocatPair(tmp_path, "keypad", "node").start()
    try:
        yield pair
    finally:
        pair.stop()


def exchange(port, line: str) -> str:
    port.write(line.encode() + b"\r\n")
    counter = line.split(":")[0]
    lines = read_lines_until_prefix(port, f"{counter}:")
    return lines


def read_lines_until_prefix(port, prefix: str, timeout: float = 10.0) -> str:
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf += read_available(port)
        while b"\r\n" in buf:
            raw, buf = buf.split(b"\r\n", 1)
            if raw.decode().startswith(prefix):
                return raw.decode()
    raise AssertionError(f"no reply with {prefix!r}")


def test_whole_counter_cycle_driven_only_by_keypad_lines(socat_pair: SocatPair) -> None:
    branch = MiniBranch()
    reader = KeypadReader(str(socat_pair.host_path), branch)
    start_and_wait(reader)
    try:
        with socat_pair.open_device() as keypad:
            script = [
                ("3:NEXT", "3:ERR login first"),
                ("3:LOGIN 1111", "3:ERR wrong pin"),
                ("3:LOGIN 4821", "3:OK amina"),
                ("3:NEXT", "3:ERR counter closed"),
                ("3:OPEN", "3:OK open"),
                ("3:next", "3:OK A041"),          # keys are case-insensitive
                ("3:RECALL", "3:OK A041"),
                ("3:START", "3:OK A041"),
                ("3:DONE", "3:OK A041 done"),
                ("3:NEXT", "3:OK A042"),
                ("3:NOSHOW", "3:OK A042 no-show"),
                ("3:NEXT", "3:OK A043"),
                ("3:TRANSFER Z", "3:ERR unknown service"),
                ("3:TRANSFER B", "3:OK A043 to B"),
                ("3:NEXT", "3:OK A043"),          # served again from service B
                ("3:DONE", "3:ERR not serving"),
                ("3:START", "3:OK A043"),
                ("3:DONE", "3:OK A043 done"),
                ("3:NEXT", "3:ERR no ticket waiting"),
                ("3:PAUSE", "3:OK"),
                ("3:CLOSE", "3:OK"),
                ("3:LOGOUT", "3:OK bye"),
                ("3:PING", "3:OK PONG"),
                ("3:FLY", "3:ERR unknown key FLY"),
                ("3:LOGIN", "3:ERR LOGIN needs a valid pin"),
                ("3:DONE now", "3:ERR DONE takes no argument"),
            ]
            for line, want in script:
                assert exchange(keypad, line) == want, line
        assert "3:LOGIN ****" in branch.log  # PINs never logged
        assert reader.status()["connected"] is True
    finally:
        reader.stop()


def test_two_keypads_sharing_a_line_get_their_own_replies(socat_pair: SocatPair) -> None:
    reader = KeypadReader(str(socat_pair.host_path), lambda cmd: f"OK c{cmd.counter}")
    start_and_wait(reader)
    try:
        with socat_pair.open_device() as line:
            line.write(b"1:NEXT\r\n2:NEXT\n")
            assert read_lines_until(line, "2:OK c2") == ["1:OK c1", "2:OK c2"]
    finally:
        reader.stop()


@pytest.fixture(scope="module")
def noisy_line(tmp_path_factory):
    pair = SocatPair(tmp_path_factory.mktemp("noise"), "keypad", "node").start()
    reader = KeypadReader(str(pair.host_path), lambda cmd: "OK")
    start_and_wait(reader)
    port = pair.open_device(timeout=0.05)
    try:
        yield reader, port
    finally:
        port.close()
        reader.stop()
        pair.stop()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.binary(min_size=1, max_size=300))
def test_random_bytes_never_crash_the_reader(noisy_line, noise: bytes) -> None:
    reader, port = noisy_line
    port.write(noise + b"\r\n")
    port.write(b"9:PING\r\n")
    read_lines_until(port, "9:OK PONG")
    assert reader._thread is not None and reader._thread.is_alive()


def test_overlong_and_invalid_utf8_lines_are_skipped(socat_pair: SocatPair) -> None:
    reader = KeypadReader(str(socat_pair.host_path), lambda cmd: "OK")
    start_and_wait(reader)
    try:
        with socat_pair.open_device() as line:
            line.write(b"1:" + b"X" * 500 + b"\r\n")
            line.write(b"\xff\xfe1:NEXT\r\n")
            line.write(b"1:NEXT\r\n")
            lines = read_lines_until(line, "1:OK")
            assert lines == ["ERR line too long", "1:OK"]
        assert reader.status()["lines_rejected"] == 2
    finally:
        reader.stop()


def test_reader_recovers_when_the_pty_is_closed_and_reopened(socat_pair: SocatPair) -> None:
    reader = KeypadReader(str(socat_pair.host_path), lambda cmd: f"OK {cmd.key}",
                          backoff_max=0.5)
    start_and_wait(reader)
    try:
        with socat_pair.open_device() as line:
            line.write(b"5:NEXT\r\n")
            read_lines_until(line, "5:OK NEXT")
        socat_pair.stop()                      # unplugged: the pty and its link vanish
        assert wait_until(lambda: not reader.status()["connected"])
        assert reader.status()["last_error"]
        socat_pair.start()                     # plugged back in (a new /dev/pts/N)
        assert wait_until(lambda: reader.status()["connected"])
        with socat_pair.open_device() as line:
            line.write(b"5:RECALL\r\n")
            read_lines_until(line, "5:OK RECALL")
        assert reader.status()["opens"] >= 2
    finally:
        reader.stop()


def start_and_wait(reader: KeypadReader) -> None:
    """Start and wait for the port to be open (pyserial flushes input on open)."""
    reader.start()
    assert wait_until(lambda: reader.status()["connected"])


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stop_is_prompt_even_while_the_device_is_missing(tmp_path) -> None:
    reader = KeypadReader(str(tmp_path / "nothing"), lambda cmd: "OK", backoff_max=60)
    reader.start()
    assert wait_until(lambda: reader.status()["last_error"] is not None)
    reader.stop(timeout=5)
    assert reader._thread is None


def test_parse_line_gives_immutable_commands() -> None:
    cmd = parse_line("12:transfer B")
    assert cmd == KeypadCommand("12", "TRANSFER", "B")
    with pytest.raises(AttributeError):
        cmd.key = "NEXT"  # type: ignore[misc]
    for bad in ("", ":NEXT", "3NEXT", "3:NEXT B", "3:LOGIN 12", "3:TRANSFER", "a b:NEXT"):
        with pytest.raises(KeypadError):
            parse_line(bad)


def test_fake_keypad_and_handler_errors() -> None:
    def handler(cmd: KeypadCommand) -> str:
        if cmd.key == "DONE":
            raise RuntimeError("boom")
        return "Numéro A042"   # accents stripped, OK added

    pad = build_keypad_from_config({"backend": "fake"}, handler)
    assert isinstance(pad, FakeKeypad)
    assert pad.press("4:NEXT") == "4:OK Numero A042"
    assert pad.press("4:DONE") == "4:ERR internal error"
    assert pad.press("garbage") == "ERR bad line"


@pytest.mark.parametrize("cfg,message", [
    ({"backend": "serial"}, "missing required key 'url'"),
    ({"backend": "usb"}, "backend must be one of"),
    ({"url": "/dev/ttyUSB0", "baud": 9600}, "unknown key(s): baud"),
    ({"url": "/dev/ttyUSB0", "baudrate": "fast"}, "baudrate must be an integer"),
])
def test_bad_keypad_config_is_a_clear_error(cfg: dict, message: str) -> None:
    with pytest.raises(HardwareConfigError) as err:
        build_keypad_from_config(cfg, lambda cmd: "OK")
    assert message in str(err.value)


async def test_asyncio_handler_runs_the_node_coroutine_on_its_loop(socat_pair) -> None:
    import asyncio

    from hardware.keypad import asyncio_handler

    loop = asyncio.get_running_loop()
    seen: list[tuple[str, bool]] = []

    async def on_key(cmd: KeypadCommand) -> str:
        seen.append((cmd.key, asyncio.get_running_loop() is loop))
        await asyncio.sleep(0)
        return "OK A042"

    reader = KeypadReader(str(socat_pair.host_path), asyncio_handler(loop, on_key))
    await asyncio.to_thread(start_and_wait, reader)
    try:
        with socat_pair.open_device() as line:
            line.write(b"7:NEXT\r\n")
            reply = await asyncio.to_thread(read_lines_until, line, "7:OK A042")
        assert reply == ["7:OK A042"] and seen == [("NEXT", True)]
    finally:
        await asyncio.to_thread(reader.stop)


def test_echoed_replies_are_ignored_so_a_loopback_line_does_not_ping_pong() -> None:
    # pyserial's loop:// sends every reply straight back, like an RS-485 echo
    calls: list[KeypadCommand] = []
    reader = build_keypad_from_config({"url": "loop://"},
                                      lambda cmd: calls.append(cmd) or "OK A042")
    assert isinstance(reader, KeypadReader)
    reader.start()
    try:
        assert wait_until(lambda: reader.status()["connected"])
        reader.link.write(b"3:NEXT\r\n")
        assert wait_until(lambda: reader.status()["lines_ok"] == 1)
        time.sleep(0.3)  # let an echo loop show itself if there were one
        assert calls == [KeypadCommand("3", "NEXT")]
        assert reader.status()["lines_ok"] == 1 and reader.status()["lines_rejected"] == 0
    finally:
        reader.stop()
