"""Audible calls: a chime, then "Ticket A 0 4 2, counter 3" in each configured language.

:meth:`Announcer.announce` returns at once; one worker thread synthesises and plays calls
strictly one after another, so two calls never overlap or cut each other off. The sound goes
to a sink: a WAV file (tests: everything played, concatenated), a player (aplay/paplay), or
the silent fake that only records what would have been said.
"""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from .audio import RATE, append_to_wav_file, generate_chime, normalize
from .config import ConfigReader
from .errors import AnnouncerError, HardwareConfigError
from .speech import (
    RULES,
    ClipsEngine,
    EspeakEngine,
    SilentEngine,
    SpeechEngine,
    SpokenCall,
    spoken_call,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    """One piece of sound handed to a sink."""

    kind: str          # "chime" | "speech"
    text: str          # what is said ("" for the chime)
    language: str
    wav: bytes


class AudioSink(Protocol):
    def play(self, clip: Clip) -> None:
        """Play ``clip`` completely (blocking; called on the announcer thread)."""


class WavFileSink:
    """Appends everything played to one WAV file (22,050 Hz mono 16-bit)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.played: list[Clip] = []

    def play(self, clip: Clip) -> None:
        append_to_wav_file(self.path, normalize(clip.wav, RATE))
        self.played.append(clip)


class PlayerSink:
    """Plays through ``aplay`` (ALSA) or ``paplay`` (PulseAudio/PipeWire), whichever exists."""

    def __init__(self, command: list[str] | None = None, timeout: float = 30.0) -> None:
        if command is None:
            for candidate in (["aplay", "-q"], ["paplay"]):
                if shutil.which(candidate[0]):
                    command = candidate
                    break
            else:
                raise AnnouncerError("no audio player found (install alsa-utils or "
                                     "pulseaudio-utils), or use sink silent/wav")
        self.command = command
        self.timeout = timeout

    def play(self, clip: Clip) -> None:
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            f.write(clip.wav)
            f.flush()
            try:
                subprocess.run([*self.command, f.name], check=True, timeout=self.timeout,
                               capture_output=True)
            except (subprocess.SubprocessError, OSError) as err:
                raise AnnouncerError(f"{self.command[0]} failed: {err}") from err


class SilentSink:
    """The fake speaker: records what would have been played, plays nothing."""

    def __init__(self) -> None:
        self.played: list[Clip] = []
        self._lock = threading.Lock()

    def play(self, clip: Clip) -> None:
        with self._lock:
            self.played.append(clip)

    @property
    def texts(self) -> list[str]:
        with self._lock:
            return [c.text if c.kind == "speech" else "<chime>" for c in self.played]


@dataclass(frozen=True)
class _Call:
    label: str
    counter: str
    languages: tuple[str, ...]


class Announcer:
    """Queues calls and plays them one at a time on its own thread."""

    def __init__(self, engine: SpeechEngine, sink: AudioSink, *,
                 languages: tuple[str, ...] = ("en",), chime: bool = True,
                 queue_size: int = 32,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if not languages:
            raise HardwareConfigError("[hardware.announcer] languages must not be empty")
        self.engine, self.sink = engine, sink
        self.languages = tuple(languages)
        self.chime_wav = generate_chime() if chime else None
        self._now = now
        self._queue: queue.Queue[_Call | None] = queue.Queue(maxsize=queue_size)
        self._idle = threading.Condition()
        self._pending = 0  # calls queued or playing
        self._thread: threading.Thread | None = None
        self.calls_played = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="announcer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the call being played, drop the rest, stop the thread."""
        if self._thread is None:
            return
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    self._done()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def announce(self, label: str, counter: str, languages: list[str] | None = None) -> bool:
        """Queue "ticket <label>, counter <counter>"; False if the queue is full (dropped).

        ``languages`` overrides the configured ones for this call (e.g. the citizen's first).
        """
        langs = tuple(dict.fromkeys(languages or self.languages))
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(_Call(label, str(counter), langs))
        except queue.Full:
            self._done()
            logger.warning("announcer queue full; call %s -> %s dropped", label, counter)
            return False
        return True

    def _done(self) -> None:
        with self._idle:
            self._pending = max(0, self._pending - 1)
            if self._pending == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until everything queued has been played (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                break
            try:
                self._play(call)
            except Exception as err:
                logger.exception("announcement %s -> %s failed", call.label, call.counter)
                self.last_error, self.last_error_at = str(err), self._now()
            finally:
                self._done()
        with self._idle:
            self._pending = 0
            self._idle.notify_all()

    def _play(self, call: _Call) -> None:
        if self.chime_wav is not None:
            self.sink.play(Clip("chime", "", "", self.chime_wav))
        for language in call.languages:
            spoken: SpokenCall = spoken_call(call.label, call.counter, language)
            try:
                wav = self.engine.synthesize(spoken)
            except AnnouncerError as err:
                logger.warning("speech for %s in %s failed: %s", call.label, language, err)
                self.last_error, self.last_error_at = str(err), self._now()
                continue
            self.sink.play(Clip("speech", spoken.plain, spoken.language, wav))
        self.calls_played += 1

    def status(self) -> dict[str, Any]:
        return {
            "engine": type(self.engine).__name__,
            "sink": type(self.sink).__name__,
            "languages": list(self.languages),
            "queue_depth": self._queue.qsize(),
            "calls_played": self.calls_played,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }


def build_announcer_from_config(data: Mapping[str, Any]) -> Announcer:
    """Build an (unstarted) announcer from a ``[hardware.announcer]`` dict; see docs."""
    r = ConfigReader("hardware.announcer", data)
    engine_name = r.choice("engine", ("espeak-ng", "clips", "none"), "espeak-ng")
    sink_name = r.choice("sink", ("player", "auto", "wav", "silent"), "player")
    languages = r.str_list("languages", ["en"])
    unknown = [lang for lang in languages if lang.split("-")[0] not in RULES]
    if unknown:
        raise HardwareConfigError(f"[hardware.announcer] languages not supported: "
                                  f"{', '.join(unknown)} (supported: {', '.join(RULES)})")
    voices = r.str_map("voices", {})
    rate = r.int("rate", 140, min=60, max=450)
    chime = r.bool("chime", True)
    queue_size = r.int("queue_size", 32, min=1, max=1000)
    clips_dir = r.str("clips_dir", None)
    wav_path = r.str("wav_path", None)
    player = r.str_list("player_command", []) or None
    r.finish()

    engine: SpeechEngine
    if engine_name == "none":
        engine = SilentEngine()
    else:
        espeak = EspeakEngine(voices=voices, rate=rate)
        if engine_name == "clips":
            if not clips_dir:
                raise HardwareConfigError("[hardware.announcer] engine clips needs clips_dir")
            if not Path(clips_dir).is_dir():
                raise HardwareConfigError(f"[hardware.announcer] clips_dir {clips_dir} "
                                          "is not a directory")
            engine = ClipsEngine(clips_dir, fallback=espeak)
        else:
            engine = espeak

    sink: AudioSink
    if sink_name == "wav":
        if not wav_path:
            raise HardwareConfigError("[hardware.announcer] sink wav needs wav_path")
        sink = WavFileSink(wav_path)
    elif sink_name == "silent":
        sink = SilentSink()
    elif sink_name == "auto":
        # The sample's choice: the speakers when this machine has a player, else silent (a
        # test machine or a container), said once in the log.
        try:
            sink = PlayerSink(player)
        except AnnouncerError as err:
            logger.warning("announcer: %s; calls stay silent", err)
            sink = SilentSink()
    else:
        sink = PlayerSink(player)
    return Announcer(engine, sink, languages=tuple(languages), chime=chime,
                     queue_size=queue_size)
