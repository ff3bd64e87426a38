"""iCalendar (RFC 5545) for one booking, written by hand: the format is small and a dependency
would be heavier than the 40 lines it needs. CRLF line ends, lines folded at 75 octets without
splitting a UTF-8 sequence, TEXT values escaped, times in UTC (``...Z``).
"""

from __future__ import annotations

from datetime import datetime, timezone


def escape_text(value: str) -> str:
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def fold(line: str) -> str:
    """Fold one content line to at most 75 octets per physical line (RFC 5545 §3.1)."""
    out, cur, size = [], "", 0
    for ch in line:
        n = len(ch.encode("utf-8"))
        limit = 75 if not out else 74  # continuation lines start with one space
        if size + n > limit:
            out.append(cur)
            cur, size = "", 0
        cur += ch
        size += n
    out.append(cur)
    return "\r\n ".join(out)


def utc_stamp(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def booking_ics(*, code: str, start: int, end: int, summary: str, location: str, description: str,
                now: int, status: str = "booked", sequence: int = 0) -> bytes:
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//SmartQ//HQ booking//EN", "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH" if status == "booked" else "METHOD:CANCEL",
        "BEGIN:VEVENT",
        f"UID:{code}@smartq",
        f"DTSTAMP:{utc_stamp(now)}",
        f"DTSTART:{utc_stamp(start)}",
        f"DTEND:{utc_stamp(end)}",
        f"SEQUENCE:{sequence}",
        f"STATUS:{'CONFIRMED' if status == 'booked' else 'CANCELLED'}",
        f"SUMMARY:{escape_text(summary)}",
        f"LOCATION:{escape_text(location)}",
        f"DESCRIPTION:{escape_text(description)}",
        "END:VEVENT", "END:VCALENDAR",
    ]
    return ("\r\n".join(fold(line) for line in lines) + "\r\n").encode("utf-8")
