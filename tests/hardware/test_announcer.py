"""Announcements rendered by real espeak-ng into a WAV file, analysed with the wave module."""

from __future__ import annotations

import math
import shutil
import subprocess
import wave
from array import array

import pytest

from hardware.announcer import (
    Announcer,
    SilentSink,
    WavFileSink,
    build_announcer_from_config,
)
from hardware.audio import RATE, generate_chime, normalize, read_wav
from hardware.errors import HardwareConfigError
from hardware.speech import ClipsEngine, EspeakEngine, spoken_call

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed")


def samples_of(path) -> array:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        data = array("h")
        data.frombytes(w.readframes(w.getnframes()))
        return data


def goertzel_power(samples, freq: float, rate: int = RATE) -> float:
    """Relative power of ``freq`` in ``samples`` (single-bin DFT)."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s2 * s2 + s1 * s1 - coeff * s1 * s2) / max(1, len(samples))


def rms(samples) -> float:
    return math.sqrt(sum(x * x for x in samples) / max(1, len(samples)))


@needs_espeak
def test_chime_comes_first_then_both_calls_play_in_full_and_in_order(tmp_path) -> None:
    out = tmp_path / "calls.wav"
    engine = EspeakEngine()
    sink = WavFileSink(out)
    announcer = Announcer(engine, sink, languages=("en", "fr"))
    announcer.start()
    try:
        assert announcer.announce("A042", "3")
        assert announcer.announce("B007", "12")   # queued back to back
        assert announcer.wait_idle(60)
    finally:
        announcer.stop()

    assert [(c.kind, c.text) for c in sink.played] == [
        ("chime", ""), ("speech", "Ticket A 0 4 2, counter 3"),
        ("speech", "Ticket A 0 4 2, guichet 3"),
        ("chime", ""), ("speech", "Ticket B 0 0 7, counter 12"),
        ("speech", "Ticket B 0 0 7, guichet 12"),
    ]
    samples = samples_of(out)
    # every clip is in the file whole, one after the other: nothing overlapped or cut
    expected = array("h")
    for clip in sink.played:
        expected.extend(normalize(clip.wav).samples)
    assert samples == expected
    # and the speech is what espeak-ng says for that call (deterministic synthesis)
    chime_len = len(normalize(generate_chime()).samples)
    first_speech = normalize(engine.synthesize(spoken_call("A042", "3", "en"))).samples
    assert samples[chime_len:chime_len + len(first_speech)] == first_speech

    # the first 0.2 s is the chime: loud, and dominated by 880 Hz rather than speech bands
    head = samples[: int(0.2 * RATE)]
    assert rms(head) > 3000
    p880 = goertzel_power(head, 880)
    assert all(p880 > 20 * goertzel_power(head, f) for f in (220, 440, 660, 1320, 2000))
    # the second tone (660 Hz) follows
    tail = samples[int(0.25 * RATE): int(0.55 * RATE)]
    assert goertzel_power(tail, 660) > 20 * goertzel_power(tail, 880)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_sox_reads_the_chime_as_a_valid_loud_wav(tmp_path) -> None:
    path = tmp_path / "chime.wav"
    path.write_bytes(generate_chime())
    stat = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True,
                          timeout=30).stderr
    fields = {line.split(":")[0].strip(): line.split(":")[1].strip()
              for line in stat.splitlines() if ":" in line}
    assert abs(float(fields["Length (seconds)"]) - 0.60) < 0.01
    assert float(fields["Maximum amplitude"]) > 0.3
    assert 500 < float(fields["Rough   frequency"]) < 1000


@needs_espeak
def test_espeak_phonemes_spell_a_lone_letter_instead_of_the_article() -> None:
    engine = EspeakEngine()
    call = spoken_call("A042", "3", "en")
    assert 'interpret-as="characters">A<' in call.ssml
    spoken = engine.phonemes(call)
    # "eI" is the letter A; "a#" is the weak article espeak-ng uses for plain "Ticket A 0 4 2"
    assert "'eI" in spoken and "a#" not in spoken
    naive = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en", "Ticket A 0 4 2, counter 3"],
                           capture_output=True, text=True, timeout=15).stdout
    assert "a#" in naive  # the bug the rule prevents
    assert "z'i@roU" in spoken and "f'o@" in spoken  # digits one by one: zero four two


@needs_espeak
@pytest.mark.parametrize("language,label,words", [
    ("fr", "A042", ["giS'E", "zer'o", "k'atr"]),
    ("es", "A042", ["b,entan'il^a", "kw'at**o"]),
    ("sw", "A042", ["diR'iSa", "mb'ili"]),
    ("rw", "A042", ["kab'iRi", "k'ane", "z'eRu", "gat'atu"]),   # Swahili voice, Kinyarwanda words
])
def test_each_language_reads_the_call_with_its_own_words(language, label, words) -> None:
    spoken = EspeakEngine().phonemes(spoken_call(label, "3", language))
    for word in words:
        assert word in spoken, (word, spoken)


def test_kinyarwanda_call_text_uses_kinyarwanda_number_words() -> None:
    call = spoken_call("A042", "3", "rw")
    assert call.plain == "Nimero A zeru kane kabiri, idirishya gatatu"
    assert call.tokens == ("ticket", "letter_a", "digit_0", "digit_4", "digit_2", "counter",
                           "digit_3")
    assert spoken_call("C5", "14", "rw").plain.endswith("idirishya rimwe kane")


@needs_espeak
def test_clips_engine_joins_recorded_clips_for_kinyarwanda(tmp_path) -> None:
    # "record" the clips with espeak-ng itself: one file per token
    folder = tmp_path / "clips" / "rw"
    folder.mkdir(parents=True)
    engine = EspeakEngine()
    words = {"ticket": "nimero", "counter": "idirishya", "letter_a": "a",
             **{f"digit_{i}": w for i, w in enumerate(
                 ["zeru", "rimwe", "kabiri", "gatatu", "kane", "gatanu", "gatandatu",
                  "karindwi", "umunani", "icyenda"])}}
    for token, word in words.items():
        subprocess.run(["espeak-ng", "-v", "sw", "-w", str(folder / f"{token}.wav"), word],
                       check=True, timeout=15)
    out = tmp_path / "rw.wav"
    announcer = build_announcer_from_config({
        "engine": "clips", "clips_dir": str(tmp_path / "clips"), "sink": "wav",
        "wav_path": str(out), "languages": ["rw", "en"]})
    assert isinstance(announcer.engine, ClipsEngine)
    announcer.start()
    try:
        announcer.announce("A042", "3")
        assert announcer.wait_idle(60)
    finally:
        announcer.stop()
    assert announcer.status()["last_error"] is None
    clips = [read_wav((folder / f"{t}.wav").read_bytes()).samples for t in
             ("ticket", "letter_a", "digit_0", "digit_4", "digit_2", "counter", "digit_3")]
    rw_len = sum(len(c) for c in clips) + 6 * int(0.08 * RATE)
    en_len = len(normalize(engine.synthesize(spoken_call("A042", "3", "en"))).samples)
    chime_len = len(normalize(generate_chime()).samples)
    assert len(samples_of(out)) == chime_len + rw_len + en_len  # en fell back to espeak-ng


def test_silent_fake_records_what_would_have_been_said() -> None:
    announcer = build_announcer_from_config(
        {"engine": "none", "sink": "silent", "languages": ["sw", "en"]})
    assert isinstance(announcer.sink, SilentSink)
    announcer.start()
    try:
        announcer.announce("A042", "3")
        announcer.announce("B001", "1", languages=["fr", "en", "fr"])  # citizen's first
        assert announcer.wait_idle(10)
    finally:
        announcer.stop()
    assert announcer.sink.texts == [
        "<chime>", "Tiketi A 0 4 2, dirisha 3", "Ticket A 0 4 2, counter 3",
        "<chime>", "Ticket B 0 0 1, guichet 1", "Ticket B 0 0 1, counter 1"]
    assert announcer.status()["calls_played"] == 2


def test_full_announcer_queue_drops_instead_of_blocking() -> None:
    announcer = Announcer(ClipsEngine("/nonexistent"), SilentSink(), queue_size=1)
    assert announcer.announce("A1", "1") is True   # not started: stays queued
    assert announcer.announce("A2", "1") is False


@pytest.mark.parametrize("cfg,message", [
    ({"engine": "festival"}, "engine must be one of"),
    ({"engine": "none", "sink": "wav"}, "sink wav needs wav_path"),
    ({"engine": "none", "sink": "silent", "languages": ["de"]}, "languages not supported: de"),
    ({"engine": "none", "sink": "silent", "languages": "en"}, "languages must be a list"),
    ({"engine": "none", "sink": "silent", "volume": 3}, "unknown key(s): volume"),
])
def test_bad_announcer_config_is_a_clear_error(cfg: dict, message: str) -> None:
    with pytest.raises(HardwareConfigError) as err:
        build_announcer_from_config(cfg)
    assert message in str(err.value)


def test_a_longer_label_is_said_digit_by_digit() -> None:
    call = spoken_call("A1042", "3", "rw")
    assert call.tokens[:call.tokens.index("counter")] == ("ticket", "letter_a", "digit_1", "digit_0", "digit_4",
                                                          "digit_2")
    assert "A rimwe zeru kane kabiri," in call.plain
