"""The printed ticket, byte for byte, in several languages; the QR code decoded independently."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime

import pytest
from PIL import Image

from hardware.ticket_layout import LayoutOptions, TicketPrint, render_ticket, to_codepage

# ESC/POS building blocks, spelled out so the golden tickets read as a layout.
INIT = b"\x1b@"
CP858 = b"\x1bt\x13"                       # ESC t 19
CENTER = b"\x1ba\x01"
NORMAL = b"\x1b!\x00"
DOUBLE_HEIGHT = b"\x1b!\x10"
BOLD, NOT_BOLD = b"\x1bE\x01", b"\x1bE\x00"
SIZE_4X4 = b"\x1d!3"                         # GS ! 0x33: 4x wide, 4x high
CUT = b"\x1bd\x06\x1dV\x00"                 # feed 6 lines, full cut


def native_qr(payload: bytes, size: int = 6) -> bytes:
    store_len = len(payload) + 3
    return (b"\x1d(k\x04\x001A2\x00"          # model 2
            + b"\x1d(k\x03\x001C" + bytes([size])
            + b"\x1d(k\x03\x001E0"            # error correction L
            + b"\x1d(k" + bytes([store_len & 0xFF, store_len >> 8]) + b"1P0" + payload
            + b"\x1d(k\x03\x001Q0")            # print the stored symbol


def header(branch: bytes, your_number: bytes, label: bytes, service: bytes) -> bytes:
    return (INIT + CP858 + CENTER + NORMAL + NORMAL + DOUBLE_HEIGHT + BOLD + CENTER
            + branch + b"\n" + NORMAL * 3 + NOT_BOLD + your_number + b"\n"
            + SIZE_4X4 + BOLD + label + b"\n" + NORMAL * 3 + BOLD + service + b"\n" + NOT_BOLD)


def ticket(language: str, branch: str, service: str, **kw: object) -> TicketPrint:
    fields: dict = dict(branch_name=branch, label="B007", service_name=service,
                        issued_at=datetime(2026, 3, 1, 14, 30), people_ahead=0,
                        estimated_wait_s=45, qr_payload="BK-7Q2X", language=language)
    fields.update(kw)
    return TicketPrint(**fields)


def test_spanish_ticket_exact_bytes_with_enye_and_accents_in_cp858() -> None:
    out = render_ticket(ticket("es", "Oficina Peña", "Atención al público"))
    assert out == (
        header(b"Oficina Pe\xa4a", b"Su n\xa3mero", b"B007", b"Atenci\xa2n al p\xa3blico")
        + b"01/03/2026 14:30\nPersonas delante de usted: 0\nEspera estimada: menos de 1 min\n"
        + b"\n" + native_qr(b"BK-7Q2X") + b"\nEscanee para seguir su turno\n" + CUT)


def test_french_ticket_exact_bytes_with_e_acute_c_cedilla_and_transliterated_oe() -> None:
    out = render_ticket(ticket(
        "fr", "Mairie – Garçon", "État civil", label="A042", people_ahead=3,
        estimated_wait_s=600, qr_payload="https://q.example/t/20261122-A042",
        issued_at=datetime(2026, 11, 22, 9, 5), footer="Merci, bonne journée. Œuvre"))
    assert out == (
        header(b"Mairie - Gar\x87on", b"Votre num\x82ro", b"A042", b"\x90tat civil")
        + b"22/11/2026 09:05\nPersonnes avant vous : 3\nAttente estim\x82e : environ 10 min\n"
        + b"\n" + native_qr(b"https://q.example/t/20261122-A042")
        + b"\nScannez pour suivre votre tour\n"
        + b"\nMerci, bonne journ\x82e. OEuvre\n" + CUT)


def test_the_learned_range_prints_as_about_low_to_high_minutes() -> None:
    out = render_ticket(ticket(
        "fr", "Mairie", "État civil", label="A042", people_ahead=3, estimated_wait_s=690,
        estimated_wait_range_s=(610, 890), qr_payload=None, issued_at=datetime(2026, 11, 22, 9, 5)))
    assert b"Attente estim\x82e : environ 10 \x85 15 min\n" in out
    english = render_ticket(ticket("en", "Branch", "General", label="A001", people_ahead=0, estimated_wait_s=20,
                                   estimated_wait_range_s=(0, 50), qr_payload=None,
                                   issued_at=datetime(2026, 11, 22, 9, 5)))
    assert b"Estimated wait: less than 1 min\n" in english


@pytest.mark.parametrize("language,your_number,ahead,wait,scan", [
    ("rw", b"Nimero yawe", b"Abantu bakuri imbere: 0",
     b"Igihe cyo gutegereza: munsi y'umunota 1", b"Sikana kugira ngo ukurikirane"),
    ("sw", b"Namba yako", b"Watu walio mbele yako: 0",
     b"Muda wa kusubiri: chini ya dakika 1", b"Changanua ili kufuatilia zamu yako"),
    ("en", b"Your number", b"People ahead of you: 0",
     b"Estimated wait: less than 1 min", b"Scan to follow your turn"),
])
def test_ticket_exact_bytes_in_kinyarwanda_swahili_english(
        language: str, your_number: bytes, ahead: bytes, wait: bytes, scan: bytes) -> None:
    out = render_ticket(ticket(language, "Irembo Kigali", "Indangamuntu"))
    assert out == (header(b"Irembo Kigali", your_number, b"B007", b"Indangamuntu")
                   + b"01/03/2026 14:30\n" + ahead + b"\n" + wait + b"\n\n"
                   + native_qr(b"BK-7Q2X") + b"\n" + scan + b"\n" + CUT)


def test_unknown_language_falls_back_to_english_texts() -> None:
    out = render_ticket(ticket("de", "X", "Y"))
    assert b"Your number" in out


def test_reprint_is_marked_copy_in_the_citizens_language() -> None:
    out = render_ticket(ticket("fr", "X", "Y", copy=True))
    assert b"\x1dB\x01 DUPLICATA \n\x1dB\x00" in out


def test_accented_letters_map_to_cp858_code_points() -> None:
    text = "é è ê à ç ñ ü ö É Ç Ñ €"
    encoded = to_codepage(text, "CP858").encode("cp858")
    assert encoded == bytes([0x82, 32, 0x8A, 32, 0x88, 32, 0x85, 32, 0x87, 32, 0xA4, 32, 0x81,
                             32, 0x94, 32, 0x90, 32, 0x80, 32, 0xA5, 32, 0xD5])


def test_cp1252_code_page_is_selected_with_esc_t_16() -> None:
    out = render_ticket(ticket("es", "Peña", "Y"), LayoutOptions(codepage="CP1252"))
    assert out.startswith(INIT + b"\x1bt\x10") and b"Pe\xf1a" in out


def _parse_gs_k(out: bytes) -> list[tuple[bytes, bytes]]:
    """Every GS ( k command as (cn+fn, parameter bytes), checking each declared length."""
    found = []
    i = out.find(b"\x1d(k")
    while i >= 0:
        length = out[i + 3] | (out[i + 4] << 8)
        body = out[i + 5:i + 5 + length]
        assert len(body) == length
        found.append((body[:2], body[2:]))
        i = out.find(b"\x1d(k", i + 5 + length)
    return found


def test_native_qr_commands_carry_the_exact_payload_then_print() -> None:
    payload = "https://q.example/b/BK-7Q2X?lang=fr&t=é"
    out = render_ticket(ticket("fr", "X", "Y", qr_payload=payload))
    cmds = _parse_gs_k(out)
    assert [c for c, _ in cmds] == [b"1A", b"1C", b"1E", b"1P", b"1Q"]
    assert cmds[3][1] == b"0" + payload.encode("utf-8")


def _raster_images(out: bytes) -> list[Image.Image]:
    """Decode GS v 0 raster bit images back into pictures."""
    images = []
    i = out.find(b"\x1dv0")
    while i >= 0:
        xbytes = out[i + 4] | (out[i + 5] << 8)
        height = out[i + 6] | (out[i + 7] << 8)
        data = out[i + 8:i + 8 + xbytes * height]
        img = Image.new("1", (xbytes * 8, height), 1)
        px = img.load()
        for y in range(height):
            for xb in range(xbytes):
                byte = data[y * xbytes + xb]
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        px[xb * 8 + bit, y] = 0
        images.append(img)
        i = out.find(b"\x1dv0", i + 8 + xbytes * height)
    return images


@pytest.mark.skipif(shutil.which("zbarimg") is None, reason="zbar-tools not installed")
def test_image_mode_qr_is_decoded_by_zbarimg_to_the_payload(tmp_path) -> None:
    payload = "https://q.example/t/20261122-A042"
    out = render_ticket(ticket("en", "X", "Y", qr_payload=payload),
                        LayoutOptions(qr_mode="image", qr_size=4))
    images = _raster_images(out)
    assert len(images) == 1
    png = tmp_path / "qr.png"
    # a quiet zone and upscale, as on paper
    img = images[0]
    canvas = Image.new("1", (img.width + 80, img.height + 80), 1)
    canvas.paste(img, (40, 40))
    canvas.resize((canvas.width * 3, canvas.height * 3)).save(png)
    result = subprocess.run(["zbarimg", "--quiet", "--raw", str(png)], capture_output=True,
                            text=True, timeout=30)
    assert result.stdout.strip() == payload


def test_longer_labels_print_whole_on_one_line_at_the_largest_scale_that_fits() -> None:
    # 80 mm paper (42 columns): a 4- or 5-digit label keeps the 4x glyphs
    for label in (b"A0042", b"A10042"):
        out = render_ticket(ticket("en", "Branch", "Payments", label=label.decode()), LayoutOptions())
        assert SIZE_4X4 + BOLD + label + b"\n" in out
    # 58 mm paper (32 columns): "AB100042" (8 characters) still fits at 4x; 9 characters drop to 3x
    narrow = LayoutOptions(width_chars=32)
    assert SIZE_4X4 + BOLD + b"AB100042\n" in render_ticket(ticket("en", "B", "P", label="AB100042"), narrow)
    assert b"\x1d!\x22" + BOLD + b"AB1000042\n" in render_ticket(ticket("en", "B", "P", label="AB1000042"), narrow)
