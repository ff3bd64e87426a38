"""The kiosk's audio guidance really speaks: espeak-ng (the display announcer's engine) turns
each option into sound in a WAV file, and the phonemes espeak-ng printed for that very sound
(``-x``, same run) spell the option, in English and in French."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from appliance.client import NodeClient
from hardware.announcer import WavFileSink
from hardware.audio import read_wav
from hardware.guidance import Guide
from hardware.speech import EspeakEngine
from kiosk_ui.viewmodels import KioskViewModel
from tests.appliance.procs import NodeProcess

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

#: What espeak-ng 1.51 says for each option (``espeak-ng -x``), one stressed word of each.
EXPECTED = {
    "en": {"Choose a service": ["tS'u:z", "s'3:vIs"], "I have a booking": ["b'UkIN"]},
    "fr": {"Choisissez un service": ["Swazis'ez", "sErv'is"], "J'ai un rendez-vous": ["rA~d'ev'u"]},
}


def rms(samples: list[int] | object) -> float:
    values = list(samples)  # type: ignore[call-overload]
    return math.sqrt(sum(v * v for v in values) / max(1, len(values)))


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_guidance_on_the_service_screen_is_heard_and_spells_each_option(
    shared_node: NodeProcess, tmp_path: Path, language: str
) -> None:
    wav = tmp_path / f"guide-{language}.wav"
    guide = Guide(EspeakEngine(), WavFileSink(wav)).start()
    client = NodeClient(shared_node.url)
    try:
        vm = KioskViewModel(client, clock=lambda: 0.0, speaker=guide, language=language)
        vm.apply_state(await client.state())
        vm.audio = True
        vm.choose_language(language)  # to the service screen, which it reads out
        assert guide.wait_idle(120)
    finally:
        guide.stop()
        await client.close()
    said = {text: phonemes for text, lang, phonemes in guide.spoken if lang == language}
    # Every option of the screen was said, the services by name, in the citizen's language.
    assert list(said) == [t for t in vm.speech_for_screen() if t]
    for option, parts in EXPECTED[language].items():
        assert option in said, (option, list(said))
        for part in parts:
            assert part in said[option], (option, said[option])
    # And sound came out: seconds of speech, far from silence.
    pcm = read_wav(wav.read_bytes())
    assert pcm.seconds > 0.6 * len(said)
    assert rms(pcm.samples) > 500
