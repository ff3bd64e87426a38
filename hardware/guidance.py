"""Spoken guidance for the kiosk: any sentence, through the announcer's speech engine and sink.

:class:`Guide` is the kiosk's ``Speaker`` (``say(text, language)``): it returns at once, and one
worker thread synthesises each sentence with the same engine the display's announcer uses
(espeak-ng by default; :func:`~hardware.speech.spoken_text` picks the language's voice) and
plays it through the same sinks (speakers via aplay/paplay, or a WAV file). ``hush()`` drops
what is still queued when the citizen moves on to another screen.
"""

from __future__ import annotations

import logging
import queue
import threading

from .announcer import AudioSink, Clip, PlayerSink, SilentSink, WavFileSink
from .errors import AnnouncerError
from .speech import EspeakEngine, SilentEngine, SpeechEngine, spoken_text

logger = logging.getLogger(__name__)


class Guide:
    """Says sentences one after another on its own thread."""

    def __init__(self, engine: SpeechEngine, sink: AudioSink, *, queue_size: int = 32) -> None:
        self.engine, self.sink = engine, sink
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=queue_size)
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        #: (text, language, phonemes) of each sentence played, oldest first; the phonemes are
        #: espeak-ng's own (``-x``) from the run that made the sound ("" for other engines).
        self.spoken: list[tuple[str, str, str]] = []
        self.last_error: str | None = None

    def start(self) -> Guide:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="guide", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self.hush()
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def say(self, text: str, language: str) -> None:
        """Queue ``text``; dropped (with a log line) when the queue is full."""
        if self._thread is None:
            self.start()
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait((text, language))
        except queue.Full:
            self._done()
            logger.warning("guidance queue full; dropped %r", text)

    def hush(self) -> None:
        """Forget what is queued (the sentence being played finishes)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._queue.put(None)
                return
            self._done()

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _done(self) -> None:
        with self._idle:
            self._pending = max(0, self._pending - 1)
            if self._pending == 0:
                self._idle.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            text, language = item
            try:
                spoken = spoken_text(text, language)
                if isinstance(self.engine, EspeakEngine):
                    wav, phonemes = self.engine.synthesize_traced(spoken)
                else:
                    wav, phonemes = self.engine.synthesize(spoken), ""
                self.sink.play(Clip("speech", text, spoken.language, wav))
                self.spoken.append((text, language, phonemes))
            except Exception as err:  # guidance must never take the kiosk down
                logger.warning("guidance %r in %s failed: %s", text, language, err)
                self.last_error = str(err)
            finally:
                self._done()


def build_guide(engine: str = "espeak-ng", sink: str = "player", wav_path: str | None = None,
                *, rate: int = 150) -> Guide:
    """A started guide from command-line choices: engine ``espeak-ng`` or ``none``; sink
    ``player`` (the speakers), ``wav`` (append to ``wav_path``) or ``silent``.
    Raises AnnouncerError when espeak-ng or an audio player is missing."""
    chosen: SpeechEngine = EspeakEngine(rate=rate) if engine == "espeak-ng" else SilentEngine()
    out: AudioSink
    if sink == "wav":
        if not wav_path:
            raise AnnouncerError("the wav sink needs a file (--audio-wav PATH)")
        out = WavFileSink(wav_path)
    elif sink == "silent":
        out = SilentSink()
    else:
        out = PlayerSink()
    return Guide(chosen, out).start()
