"""Server-drawn SVG charts for the console's analytics: each has a <title> and <desc> (named by
aria-labelledby / aria-describedby, role="img") and is always shown beside a table of the same
numbers, so the chart adds a picture and takes nothing away without it. No script, no styles
inline (the CSP forbids them): presentation attributes only."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from markupsafe import Markup, escape

_ids = itertools.count(1)
BAR = "#1d70b8"
OVER = "#d4351c"
TARGET = "#0b0c0c"
# Light to dark blue: a sequential scale readable by people with colour-vision deficiencies.
# Width of one character of the 11 px labels under columns (DejaVu Sans digits are 7 px; a
# little more for letters), and the space kept between two labels.
LABEL_CHAR_PX, LABEL_GAP_PX = 7, 8
HEAT = ("#f3f7fb", "#d2e3f3", "#a6c8e8", "#6fa6d6", "#3b7fc0", "#1d5a96")


def _open(title: str, desc: str, width: int, height: int) -> tuple[str, str]:
    n = next(_ids)
    tid, did = f"chart{n}-title", f"chart{n}-desc"
    head = (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}"'
            f' width="100%" preserveAspectRatio="xMinYMin meet" aria-labelledby="{tid}" aria-describedby="{did}">'
            f'<title id="{tid}">{escape(title)}</title><desc id="{did}">{escape(desc)}</desc>')
    return head, "</svg>"


def bars(title: str, desc: str, items: Sequence[tuple[str, float | None, str]], *, target: float | None = None,
         target_text: str = "") -> Markup:
    """Horizontal bars: (label, value, value as text); a vertical rule at ``target``; bars past
    the target in red (and marked in the table beside, not by colour alone)."""
    width, label_w, row_h = 640, 190, 22
    height = max(len(items), 1) * row_h + 30
    top = max([v for _, v, _ in items if v is not None] + [target or 0, 1])
    scale = (width - label_w - 90) / top
    head, tail = _open(title, desc, width, height)
    parts = [head]
    for i, (label, value, text) in enumerate(items):
        y = 10 + i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="13" fill="#0b0c0c">'
                     f'{escape(label[:28])}</text>')
        if value is not None:
            w = max(value * scale, 1)
            fill = OVER if target is not None and value > target else BAR
            parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{fill}">'
                         f'<title>{escape(label)}: {escape(text)}</title></rect>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="12" fill="#0b0c0c">{escape(text)}</text>')
    if target is not None:
        x = label_w + target * scale
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="4" y2="{height - 18}" stroke="{TARGET}" stroke-width="2"'
                     f' stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" font-size="12" fill="#0b0c0c">'
                     f'{escape(target_text)}</text>')
    parts.append(tail)
    return Markup("".join(parts))


def columns(title: str, desc: str, items: Sequence[tuple[str, float, str]]) -> Markup:
    """Vertical bars over time (e.g. tickets per day); labels under every few bars."""
    width, height, base = 640, 220, 180
    n = max(len(items), 1)
    step = (width - 20) / n
    top = max([v for _, v, _ in items] + [1])
    head, tail = _open(title, desc, width, height)
    parts = [head, f'<line x1="10" x2="{width - 10}" y1="{base}" y2="{base}" stroke="#505a5f"/>']
    # Label every few bars, as many as fit side by side without touching (a date is ~60 px).
    widest = max([len(label) for label, _, _ in items] + [1]) * LABEL_CHAR_PX + LABEL_GAP_PX
    every = max(1, math.ceil(widest / step))
    for i, (label, value, text) in enumerate(items):
        h = value / top * (base - 20)
        x = 10 + i * step
        parts.append(f'<rect x="{x + step * 0.1:.1f}" y="{base - h:.1f}" width="{max(step * 0.8, 1):.1f}" height="{h:.1f}"'
                     f' fill="{BAR}"><title>{escape(label)}: {escape(text)}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{base + 16}" text-anchor="middle" font-size="11"'
                         f' fill="#0b0c0c">{escape(label)}</text>')
    parts.append(f'<text x="12" y="14" font-size="12" fill="#0b0c0c">{escape(_fmt(top))}</text>')
    parts.append(tail)
    return Markup("".join(parts))


def heat(title: str, desc: str, rows: Sequence[str], cols: Sequence[str],
         cells: dict[tuple[int, int], tuple[float, str]]) -> Markup:
    """A grid (rows x columns, e.g. weekday x hour), darker where the value is higher; each
    cell's exact value is in its tooltip and in the table beside."""
    label_w, cell_w, cell_h = 110, 34, 26
    width, height = label_w + cell_w * max(len(cols), 1) + 10, 24 + cell_h * len(rows) + 10
    top = max([v for v, _ in cells.values()] + [0])
    head, tail = _open(title, desc, width, height)
    parts = [head]
    for j, col in enumerate(cols):
        parts.append(f'<text x="{label_w + j * cell_w + cell_w / 2}" y="16" text-anchor="middle" font-size="11"'
                     f' fill="#0b0c0c">{escape(col)}</text>')
    for i, row in enumerate(rows):
        y = 24 + i * cell_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 17}" text-anchor="end" font-size="12" fill="#0b0c0c">'
                     f'{escape(row)}</text>')
        for j in range(len(cols)):
            value, text = cells.get((i, j), (0.0, ""))
            level = 0 if top <= 0 or value <= 0 else min(len(HEAT) - 1, 1 + int((len(HEAT) - 1) * value / top * 0.999))
            tip = f"<title>{escape(row)} {escape(cols[j])}: {escape(text)}</title>" if text else ""
            parts.append(f'<rect x="{label_w + j * cell_w}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}"'
                         f' fill="{HEAT[level]}" stroke="#b1b4b6" stroke-width="0.5">{tip}</rect>')
    parts.append(tail)
    return Markup("".join(parts))


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"
