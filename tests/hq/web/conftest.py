from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[2] / "uplink"))  # linktest: HQ process, enrolled sample branch
sys.path.insert(2, str(Path(__file__).parents[2] / "appliance"))  # procs.NodeProcess


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright, one per test module (the browser harness's launch)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from browser import launch

    with sync_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()
