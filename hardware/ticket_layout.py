"""What a printed ticket says and how it is laid out in ESC/POS bytes.

:func:`render_ticket` is pure: a :class:`TicketPrint` in, the exact bytes for the printer out
(built with python-escpos's ``Dummy`` printer), so the layout is tested byte for byte and the
spooler only moves bytes. Text is encoded in one explicitly selected code page (``ESC t n``,
CP858 by default: Latin-1 letters plus the euro sign); characters outside it are
transliterated (``œ`` -> ``oe``) instead of being printed as garbage.
"""

from __future__ import annotations

import logging
import textwrap
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from escpos.printer import Dummy

logger = logging.getLogger(__name__)

LANGUAGES = ("en", "fr", "rw", "sw", "es")

# ESC t n values of the Epson-compatible code pages we offer (python-escpos "default" profile).
CODEPAGES = {"CP858": 19, "CP1252": 16, "CP850": 2, "CP437": 0}

# Ticket texts per language. rw/sw wording should be reviewed by native speakers (docs/hardware.md).
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "your_number": "Your number",
        "people_ahead": "People ahead of you: {n}",
        "wait": "Estimated wait: about {m} min",
        "wait_short": "Estimated wait: less than 1 min",
        "scan": "Scan to follow your turn",
        "copy": "COPY",
    },
    "fr": {
        "your_number": "Votre numéro",
        "people_ahead": "Personnes avant vous : {n}",
        "wait": "Attente estimée : environ {m} min",
        "wait_short": "Attente estimée : moins d'une minute",
        "scan": "Scannez pour suivre votre tour",
        "copy": "DUPLICATA",
    },
    "es": {
        "your_number": "Su número",
        "people_ahead": "Personas delante de usted: {n}",
        "wait": "Espera estimada: unos {m} min",
        "wait_short": "Espera estimada: menos de 1 min",
        "scan": "Escanee para seguir su turno",
        "copy": "COPIA",
    },
    "sw": {
        "your_number": "Namba yako",
        "people_ahead": "Watu walio mbele yako: {n}",
        "wait": "Muda wa kusubiri: takriban dakika {m}",
        "wait_short": "Muda wa kusubiri: chini ya dakika 1",
        "scan": "Changanua ili kufuatilia zamu yako",
        "copy": "NAKALA",
    },
    "rw": {
        "your_number": "Nimero yawe",
        "people_ahead": "Abantu bakuri imbere: {n}",
        "wait": "Igihe cyo gutegereza: nk'iminota {m}",
        "wait_short": "Igihe cyo gutegereza: munsi y'umunota 1",
        "scan": "Sikana kugira ngo ukurikirane",
        "copy": "KOPI",
    },
}

# Characters that commonly appear in names but are missing from the Latin OEM code pages.
_TRANSLIT = {
    "œ": "oe", "Œ": "OE", "’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-",
    "…": "...", "\u00a0": " ", "\u202f": " ", "ß": "ss",
}


@dataclass(frozen=True)
class TicketPrint:
    """Everything printed on one ticket; ``issued_at`` is already in the branch's local time."""

    branch_name: str
    label: str
    service_name: str
    issued_at: datetime
    people_ahead: int | None = None
    estimated_wait_s: int | None = None
    qr_payload: str | None = None
    language: str = "en"
    footer: str = ""
    logo_path: str | None = None
    ticket_id: str = ""
    copy: bool = False  # True on a reprint: the ticket says "COPY" in the citizen's language


@dataclass(frozen=True)
class LayoutOptions:
    """Printer-dependent layout choices (from the printer config)."""

    codepage: str = "CP858"
    width_chars: int = 42          # font A columns: 32 on 58 mm paper, 42 or 48 on 80 mm
    label_scale: int = 4           # label glyphs are label_scale x label_scale times normal
    qr_mode: str = "native"        # "native" (GS ( k) or "image" (raster, for printers without QR)
    qr_size: int = 6               # module size in dots, 1..16
    cut: bool = True
    profile: str = "default"


def label_scale(label: str, opts: LayoutOptions) -> int:
    """The label's glyph scale: `opts.label_scale`, smaller when a long label (A10042,
    AB1042) would not fit the paper's width on one line."""
    return max(1, min(opts.label_scale, opts.width_chars // max(1, len(label))))


def texts_for(language: str) -> dict[str, str]:
    """The ticket texts for ``language``, falling back to English for an unknown language."""
    base = language.split("-")[0].split("_")[0].lower()
    if base not in TEXTS:
        logger.warning("no ticket texts for language %r; using English", language)
        return TEXTS["en"]
    return TEXTS[base]


def to_codepage(text: str, codepage: str) -> str:
    """Replace characters that ``codepage`` cannot encode by a close ASCII spelling."""
    encoding = codepage.lower()
    out = []
    for ch in text:
        try:
            ch.encode(encoding)
            out.append(ch)
            continue
        except UnicodeEncodeError:
            pass
        if ch in _TRANSLIT:
            out.append(_TRANSLIT[ch])
            continue
        stripped = "".join(c for c in unicodedata.normalize("NFKD", ch)
                           if not unicodedata.combining(c))
        try:
            stripped.encode(encoding)
            out.append(stripped)
        except UnicodeEncodeError:
            out.append("?")
    return "".join(out)


def format_wait(seconds: int | None, texts: dict[str, str]) -> str | None:
    """'about N min' rounded up to the minute; None when no estimate is known."""
    if seconds is None:
        return None
    if seconds < 60:
        return texts["wait_short"]
    return texts["wait"].format(m=(int(seconds) + 59) // 60)


def render_ticket(ticket: TicketPrint, options: LayoutOptions | None = None) -> bytes:
    """Render ``ticket`` to the exact ESC/POS bytes a printer receives."""
    opts = options or LayoutOptions()
    if opts.codepage not in CODEPAGES:
        raise ValueError(f"unsupported code page {opts.codepage!r}; use one of {sorted(CODEPAGES)}")
    texts = texts_for(ticket.language)
    p = Dummy(profile=opts.profile)
    p.hw("INIT")
    p.charcode(opts.codepage)

    def line(text: str = "") -> None:
        wrapped = textwrap.wrap(to_codepage(text, opts.codepage), opts.width_chars) or [""]
        for part in wrapped:
            p.textln(part)

    p.set(align="center")
    if ticket.logo_path:
        try:
            p.image(ticket.logo_path, center=False)
        except Exception as err:  # a bad logo must never stop the ticket
            logger.warning("logo %s not printed: %s", ticket.logo_path, err)
    p.set(align="center", bold=True, double_height=True)
    line(ticket.branch_name)
    p.set(normal_textsize=True, bold=False)
    if ticket.copy:
        p.set(invert=True)
        p.textln(to_codepage(f" {texts['copy']} ", opts.codepage))
        p.set(invert=False)
    line(texts["your_number"])
    scale = label_scale(ticket.label, opts)
    p.set(custom_size=True, width=scale, height=scale, bold=True)
    line(ticket.label)
    p.set(normal_textsize=True, bold=True)
    line(ticket.service_name)
    p.set(bold=False)
    line(ticket.issued_at.strftime("%d/%m/%Y %H:%M"))
    if ticket.people_ahead is not None:
        line(texts["people_ahead"].format(n=ticket.people_ahead))
    wait = format_wait(ticket.estimated_wait_s, texts)
    if wait:
        line(wait)
    if ticket.qr_payload:
        p.ln()
        if opts.qr_mode == "native":
            p.qr(ticket.qr_payload, size=opts.qr_size, native=True)
            p.ln()
        else:
            p.qr(ticket.qr_payload, size=opts.qr_size, native=False, center=False)
        line(texts["scan"])
    if ticket.footer:
        p.ln()
        line(ticket.footer)
    if opts.cut:
        p.cut()
    else:
        p.ln(4)
    return p.output
