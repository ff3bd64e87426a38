"""The console's SVG charts: labels under columns never run into each other."""

from __future__ import annotations

import re

import pytest

from hq.console import charts


@pytest.mark.parametrize("n", [1, 5, 8, 11, 28, 90, 365])
def test_column_labels_never_touch(n: int):
    items = [(f"2030-10-{i % 28 + 1:02d}", float(i % 7 + 1), str(i % 7 + 1)) for i in range(n)]
    svg = str(charts.columns("Tickets per day", "Tickets each day", items))
    xs = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="196" text-anchor="middle"', svg)]
    assert xs and xs[0] < 640 / max(n, 1) + 10  # the first day is labelled
    width = len("2030-10-01") * charts.LABEL_CHAR_PX
    assert all(b - a >= width for a, b in zip(xs, xs[1:])), xs
    gaps = [b - a for a, b in zip(xs, xs[1:])]
    assert not gaps or max(gaps) - min(gaps) < 0.2  # every few bars, evenly
