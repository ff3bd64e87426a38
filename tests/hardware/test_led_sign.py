"""LED counter signs over a real socat pty pair, including unplug and replug."""

from __future__ import annotations

import time

import pytest

from hardware.errors import HardwareConfigError
from hardware.led_sign import (
    FakeLedSign,
    LedFrame,
    SerialLedSign,
    build_led_sign_from_config,
    decode_frames,
    encode_frame,
)

from .ptys import SocatPair, read_available


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def read_frames(port, count: int, timeout: float = 10.0) -> list[LedFrame]:
    frames: list[LedFrame] = []
    buf = b""
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        got, buf = decode_frames(buf + read_available(port))
        frames.extend(got)
    assert len(frames) >= count, frames
    return frames


def test_frame_bytes_are_as_documented() -> None:
    assert encode_frame(LedFrame("3", "A042", "B")) == b"\x023|A042|B\x03" + b"%02X" % (
        0x33 ^ 0x7C ^ 0x41 ^ 0x30 ^ 0x34 ^ 0x32 ^ 0x7C ^ 0x42)
    frames, tail = decode_frames(b"noise\x06" + encode_frame(LedFrame("12", "B7", "S"))
                                 + b"\x021|X|S\x0300" + b"\x022|")
    assert frames == [LedFrame("12", "B7", "S")] and tail == b"\x022|"
    with pytest.raises(ValueError):
        encode_frame(LedFrame("3|4", "A", "B"))


@pytest.fixture
def socat_pair(tmp_path):
    pair = SocatPair(tmp_path, "sign", "node").start()
    try:
        yield pair
    finally:
        pair.stop()


def test_sign_shows_calls_and_restores_them_after_replug(socat_pair: SocatPair) -> None:
    sign = SerialLedSign(str(socat_pair.host_path), backoff_max=0.5)
    sign.start()
    try:
        assert wait_until(lambda: sign.status()["connected"])
        with socat_pair.open_device() as device:
            sign.show("3", "A042")
            sign.show("4", "Bé7", blink=False)
            sign.clear("4")
            assert read_frames(device, 3) == [LedFrame("3", "A042", "B"),
                                              LedFrame("4", "Be7", "S"),
                                              LedFrame("4", "", "C")]
        socat_pair.stop()                  # sign unplugged
        assert wait_until(lambda: not sign.status()["connected"])
        sign.show("3", "A043")             # called while the sign is away: not lost
        socat_pair.start()
        assert wait_until(lambda: sign.status()["connected"])
        with socat_pair.open_device_raw() as device:
            frames = read_frames(device, 2)
        # current state re-sent steady, then the call made while away replayed (blinking)
        assert frames == [LedFrame("3", "A043", "S"), LedFrame("3", "A043", "B")]
        assert sign.current() == {"3": "A043"}
    finally:
        sign.stop()


def test_fake_sign_records_what_it_showed() -> None:
    sign = build_led_sign_from_config({"backend": "fake"})
    assert isinstance(sign, FakeLedSign)
    sign.show("1", "A001")
    sign.show("2", "C010", blink=False)
    sign.clear("1")
    assert sign.shown == [LedFrame("1", "A001", "B"), LedFrame("2", "C010", "S"),
                          LedFrame("1", "", "C")]
    assert sign.status()["showing"] == {"2": "C010"}


@pytest.mark.parametrize("cfg,message", [
    ({}, "missing required key 'url'"),
    ({"backend": "serial", "url": ""}, "url must not be empty"),
    ({"backend": "fake", "url": "/dev/x"}, "unknown key(s): url"),
])
def test_bad_led_config_is_a_clear_error(cfg: dict, message: str) -> None:
    with pytest.raises(HardwareConfigError) as err:
        build_led_sign_from_config(cfg)
    assert message in str(err.value)


def test_four_and_five_digit_labels_reach_the_sign_whole() -> None:
    for label in ("A0042", "A10042", "AB10042"):
        frame = decode_frames(encode_frame(LedFrame("3", label, "B")))[0][0]
        assert frame.text == label
