"""What a call sounds like in each language, and the engines that say it.

A call "A042 to counter 3" becomes a :class:`SpokenCall`: SSML for espeak-ng, a plain text
for logs and the silent fake, and a token list for the pre-recorded clips engine. Letters are
spelled as letters (``<say-as interpret-as="characters">``: a lone "A" must not become the
English article) and digits are read one by one ("zero four two").

Kinyarwanda has no espeak-ng voice. Default fallback: the Swahili voice (a related Bantu
language with the same vowels and close phonotactics) reading Kinyarwanda words, digits
written out as Kinyarwanda number words. For an office that wants a native voice,
:class:`ClipsEngine` plays recorded clips (``<dir>/rw/ticket.wav``, ``digit_0.wav``, ...).
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from xml.sax.saxutils import escape

from .errors import AnnouncerError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanguageRule:
    """How one language announces a call."""

    voice: str                       # espeak-ng voice
    ticket_word: str
    counter_word: str
    digit_words: tuple[str, ...] | None = None   # None: let the voice read the digits
    number_words: Mapping[int, str] = field(default_factory=dict)  # whole counter numbers


RW_DIGITS = ("zeru", "rimwe", "kabiri", "gatatu", "kane", "gatanu", "gatandatu", "karindwi",
             "umunani", "icyenda")

RULES: dict[str, LanguageRule] = {
    "en": LanguageRule("en", "Ticket", "counter"),
    "fr": LanguageRule("fr", "Ticket", "guichet"),
    "es": LanguageRule("es", "Turno", "ventanilla"),
    "sw": LanguageRule("sw", "Tiketi", "dirisha"),
    # Kinyarwanda: no espeak-ng voice; the Swahili voice reads Kinyarwanda words.
    "rw": LanguageRule("sw", "Nimero", "idirishya", digit_words=RW_DIGITS,
                       number_words={i: w for i, w in enumerate(RW_DIGITS)} | {10: "icumi"}),
}


@dataclass(frozen=True)
class SpokenCall:
    """One call in one language, in the three forms the engines and the fake need."""

    language: str
    ssml: str
    plain: str
    tokens: tuple[str, ...]


def rule_for(language: str) -> tuple[str, LanguageRule]:
    base = language.split("-")[0].split("_")[0].lower()
    if base not in RULES:
        logger.warning("no announcement rule for language %r; using English", language)
        base = "en"
    return base, RULES[base]


def spoken_call(label: str, counter: str, language: str) -> SpokenCall:
    """Build the words for "ticket <label>, counter <counter>" in ``language``."""
    lang, rule = rule_for(language)
    ssml_parts = [escape(rule.ticket_word)]
    plain_parts = [rule.ticket_word]
    tokens = ["ticket"]
    for ch in label:
        if ch.isalpha():
            ssml_parts.append(f'<say-as interpret-as="characters">{escape(ch)}</say-as>')
            plain_parts.append(ch.upper())
            tokens.append(f"letter_{ch.lower()}")
        elif ch.isdigit():
            word = rule.digit_words[int(ch)] if rule.digit_words else ch
            ssml_parts.append(escape(word))
            plain_parts.append(word)
            tokens.append(f"digit_{ch}")
    ssml_parts[-1] += ","
    plain_parts[-1] += ","
    ssml_parts.append(escape(rule.counter_word))
    plain_parts.append(rule.counter_word)
    tokens.append("counter")
    if counter.isdigit() and int(counter) in rule.number_words:
        word = rule.number_words[int(counter)]
        ssml_parts.append(escape(word))
        plain_parts.append(word)
    elif counter.isdigit() and rule.digit_words:
        words = [rule.digit_words[int(d)] for d in counter]
        ssml_parts.extend(escape(w) for w in words)
        plain_parts.extend(words)
    else:
        ssml_parts.append(escape(counter))
        plain_parts.append(counter)
    tokens.extend(f"digit_{d}" if d.isdigit() else f"letter_{d.lower()}"
                  for d in counter if d.isalnum())
    return SpokenCall(lang, "<speak>" + " ".join(ssml_parts) + "</speak>",
                      " ".join(plain_parts), tuple(tokens))


def spoken_text(text: str, language: str) -> SpokenCall:
    """Any sentence (the kiosk's audio guidance) in ``language``, for the same engines as a
    call: the language's voice reads ``text`` as written (Kinyarwanda: the Swahili voice)."""
    lang, _ = rule_for(language)
    return SpokenCall(lang, "<speak>" + escape(text) + "</speak>", text, ())


class SpeechEngine(Protocol):
    """Turns a call into WAV bytes (blocking; runs on the announcer thread)."""

    def synthesize(self, call: SpokenCall) -> bytes: ...


class EspeakEngine:
    """espeak-ng, run as a subprocess per utterance (``-m`` SSML, ``--stdout`` WAV)."""

    def __init__(self, executable: str = "espeak-ng", *, voices: Mapping[str, str] | None = None,
                 rate: int = 140, timeout: float = 15.0) -> None:
        found = shutil.which(executable)
        if found is None:
            raise AnnouncerError(f"{executable} not found; install espeak-ng or use engine none")
        self.executable = found
        self.voices = {lang: rule.voice for lang, rule in RULES.items()} | dict(voices or {})
        self.rate = rate
        self.timeout = timeout

    def _run(self, args: list[str], ssml: str) -> bytes:
        try:
            result = subprocess.run([self.executable, *args, ssml], capture_output=True,
                                    timeout=self.timeout, check=True)
        except subprocess.TimeoutExpired as err:
            raise AnnouncerError(f"espeak-ng took longer than {self.timeout:g} s") from err
        except subprocess.CalledProcessError as err:
            raise AnnouncerError(f"espeak-ng failed: {err.stderr.decode(errors='replace')}") from err
        except OSError as err:
            raise AnnouncerError(f"cannot run espeak-ng: {err}") from err
        return result.stdout

    def synthesize(self, call: SpokenCall) -> bytes:
        voice = self.voices.get(call.language, "en")
        return self._run(["-m", "-v", voice, "-s", str(self.rate), "--stdout"], call.ssml)

    def synthesize_traced(self, call: SpokenCall) -> tuple[bytes, str]:
        """The WAV and, from the same espeak-ng run (``-x -w``), the phonemes it spoke."""
        import tempfile

        voice = self.voices.get(call.language, "en")
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            phonemes = self._run(["-m", "-x", "-v", voice, "-s", str(self.rate), "-w", f.name], call.ssml)
            return Path(f.name).read_bytes(), phonemes.decode("utf-8", "replace").strip()

    def phonemes(self, call: SpokenCall) -> str:
        """The phonemes espeak-ng actually speaks (``-x``), for tests and for tuning."""
        voice = self.voices.get(call.language, "en")
        return self._run(["-m", "-q", "-x", "-v", voice], call.ssml).decode("utf-8", "replace")


class ClipsEngine:
    """Pre-recorded clips: ``<directory>/<lang>/<token>.wav`` joined in token order.

    Tokens: ``ticket``, ``counter``, ``letter_a`` .. ``letter_z``, ``digit_0`` .. ``digit_9``.
    Languages without a clips folder are passed to ``fallback`` (usually espeak-ng).
    """

    def __init__(self, directory: str | Path, fallback: SpeechEngine | None = None) -> None:
        self.directory = Path(directory)
        self.fallback = fallback

    def has_language(self, language: str) -> bool:
        return (self.directory / language).is_dir()

    def synthesize(self, call: SpokenCall) -> bytes:
        folder = self.directory / call.language
        if not folder.is_dir():
            if self.fallback is None:
                raise AnnouncerError(f"no clips for language {call.language!r} in {self.directory}")
            return self.fallback.synthesize(call)
        missing = [t for t in call.tokens if not (folder / f"{t}.wav").is_file()]
        if missing:
            raise AnnouncerError(f"missing clips in {folder}: {', '.join(missing)}")
        from .audio import concat_wavs  # local: audio imports nothing from here

        return concat_wavs([(folder / f"{t}.wav").read_bytes() for t in call.tokens],
                           gap_s=0.08)


class SilentEngine:
    """No synthesis at all (the silent fake): returns an empty WAV."""

    def synthesize(self, call: SpokenCall) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(22050)
        return buf.getvalue()
