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
from collections.abc import Sequence
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
        "wait_range": "Estimated wait: about {lo}-{hi} min",
        "wait_short": "Estimated wait: less than 1 min",
        "scan": "Scan to follow your turn",
        "copy": "COPY",
    },
    "fr": {
        "your_number": "Votre numéro",
        "people_ahead": "Personnes avant vous : {n}",
        "wait": "Attente estimée : environ {m} min",
        "wait_range": "Attente estimée : environ {lo} à {hi} min",
        "wait_short": "Attente estimée : moins d'une minute",
        "scan": "Scannez pour suivre votre tour",
        "copy": "DUPLICATA",
    },
    "es": {
        "your_number": "Su número",
        "people_ahead": "Personas delante de usted: {n}",
        "wait": "Espera estimada: unos {m} min",
        "wait_range": "Espera estimada: unos {lo}-{hi} min",
        "wait_short": "Espera estimada: menos de 1 min",
        "scan": "Escanee para seguir su turno",
        "copy": "COPIA",
    },
    "sw": {
        "your_number": "Namba yako",
        "people_ahead": "Watu walio mbele yako: {n}",
        "wait": "Muda wa kusubiri: takriban dakika {m}",
        "wait_range": "Muda wa kusubiri: takriban dakika {lo}-{hi}",
        "wait_short": "Muda wa kusubiri: chini ya dakika 1",
        "scan": "Changanua ili kufuatilia zamu yako",
        "copy": "NAKALA",
    },
    "rw": {
        "your_number": "Nimero yawe",
        "people_ahead": "Abantu bakuri imbere: {n}",
        "wait": "Igihe cyo gutegereza: nk'iminota {m}",
        "wait_range": "Igihe cyo gutegereza: nk'iminota {lo}-{hi}",
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
    estimated_wait_range_s: tuple[int, int] | None = None  # [p10, p90] of the learned estimate
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


def wait_minutes(seconds: int | None, span: Sequence[int] | None = None) -> tuple[int, int] | None:
    """An estimate as whole minutes (low, high): the range [p10, p90] when there is one (low
    rounded down, high up), else the point rounded up twice; None when nothing is known."""
    if span is not None and len(span) == 2:
        low, high = int(span[0]) // 60, (int(span[1]) + 59) // 60
        return low, max(high, low + 1)
    if seconds is None:
        return None
    m = (int(seconds) + 59) // 60
    return m, m


def format_wait(seconds: int | None, texts: dict[str, str], span: Sequence[int] | None = None) -> str | None:
    """'about 10-15 min' from the range, 'about N min' from a point; None when no estimate is known."""
    minutes = wait_minutes(seconds, span)
    if minutes is None:
        return None
    low, high = minutes
    if high <= 1:
        return texts["wait_short"]
    if low == high:
        return texts["wait"].format(m=high)
    return texts["wait_range"].format(lo=low, hi=high)


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
    wait = format_wait(ticket.estimated_wait_s, texts, ticket.estimated_wait_range_s)
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
