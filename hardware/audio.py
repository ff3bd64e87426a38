"""Small pure-Python audio helpers: the generated chime, WAV reading, format conversion.

No binary audio is committed: the chime is synthesised at run time. Everything is converted
to one format (22,050 Hz, mono, 16-bit: what espeak-ng produces) so clips can be joined.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import wave
from array import array
from dataclasses import dataclass

RATE = 22050
CHIME_TONES = ((880.0, 0.22), (660.0, 0.38))  # A5 then E5: the classic "ding-dong"


@dataclass(frozen=True)
class Pcm:
    """16-bit signed mono samples at ``rate``."""

    samples: array
    rate: int = RATE

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def generate_chime(rate: int = RATE, tones: tuple[tuple[float, float], ...] = CHIME_TONES,
                   amplitude: float = 0.45) -> bytes:
    """A two-tone sine chime as WAV bytes, with short fades so it does not click."""
    samples = array("h")
    fade = int(0.01 * rate)
    for freq, seconds in tones:
        n = int(seconds * rate)
        for i in range(n):
            env = min(1.0, i / fade, (n - 1 - i) / fade) if fade else 1.0
            decay = math.exp(-2.5 * i / n)  # bell-like decay
            samples.append(int(32767 * amplitude * env * decay
                               * math.sin(2 * math.pi * freq * i / rate)))
    return to_wav(Pcm(samples, rate))


def read_wav(data: bytes) -> Pcm:
    """Decode WAV bytes (8/16/32-bit PCM, any rate or channel count) to 16-bit mono PCM.

    Tolerates streamed headers with bogus sizes (espeak-ng ``--stdout``).
    """
    with wave.open(io.BytesIO(data), "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        frames = w.readframes(1 << 30)
    if width == 1:
        mono_src = array("h", ((b - 128) << 8 for b in frames))
    elif width == 2:
        mono_src = array("h")
        mono_src.frombytes(frames[: len(frames) // 2 * 2])
        if sys.byteorder == "big":
            mono_src.byteswap()
    elif width == 4:
        wide = array("i")
        wide.frombytes(frames[: len(frames) // 4 * 4])
        if sys.byteorder == "big":
            wide.byteswap()
        mono_src = array("h", (v >> 16 for v in wide))
    else:
        raise ValueError(f"unsupported sample width {width}")
    if channels > 1:
        mono_src = array("h", (sum(mono_src[i:i + channels]) // channels
                               for i in range(0, len(mono_src) - channels + 1, channels)))
    return Pcm(mono_src, rate)


def resample(pcm: Pcm, rate: int = RATE) -> Pcm:
    """Linear-interpolation resampling (good enough for speech prompts)."""
    if pcm.rate == rate or not pcm.samples:
        return Pcm(pcm.samples, rate)
    src = pcm.samples
    n = int(len(src) * rate / pcm.rate)
    step = pcm.rate / rate
    out = array("h")
    for i in range(n):
        pos = i * step
        j = int(pos)
        frac = pos - j
        a = src[j]
        b = src[j + 1] if j + 1 < len(src) else a
        out.append(int(a + (b - a) * frac))
    return Pcm(out, rate)


def to_wav(pcm: Pcm) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(pcm.rate)
        samples = pcm.samples
        if sys.byteorder == "big":
            samples = array("h", samples)
            samples.byteswap()
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def normalize(data: bytes, rate: int = RATE) -> Pcm:
    """Any WAV bytes -> 16-bit mono PCM at ``rate``."""
    return resample(read_wav(data), rate)


def concat_wavs(wavs: list[bytes], gap_s: float = 0.0, rate: int = RATE) -> bytes:
    """Join WAV clips (converted to one format) with ``gap_s`` of silence between them."""
    out = array("h")
    gap = array("h", bytes(2 * int(gap_s * rate)))
    for i, data in enumerate(wavs):
        if i and gap:
            out.extend(gap)
        out.extend(normalize(data, rate).samples)
    return to_wav(Pcm(out, rate))


def append_to_wav_file(path: str, pcm: Pcm) -> None:
    """Append samples to a 16-bit mono WAV file, creating it, and fix its header sizes."""
    import os

    data = pcm.samples
    if sys.byteorder == "big":
        data = array("h", data)
        data.byteswap()
    raw = data.tobytes()
    if not os.path.exists(path) or os.path.getsize(path) < 44:
        with open(path, "wb") as f:
            f.write(to_wav(Pcm(array("h"), pcm.rate)))
    with open(path, "r+b") as f:
        header = f.read(44)
        if header[36:40] != b"data":
            raise ValueError(f"{path} is not a plain 44-byte-header WAV file")
        (existing_rate,) = struct.unpack("<I", header[24:28])
        if existing_rate != pcm.rate:
            raise ValueError(f"{path} has rate {existing_rate}, not {pcm.rate}")
        f.seek(0, 2)
        f.write(raw)
        size = f.tell()
        f.seek(4)
        f.write(struct.pack("<I", size - 8))
        f.seek(40)
        f.write(struct.pack("<I", size - 44))
