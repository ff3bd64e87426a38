"""The browser harness of HQ's pages (citizens' pages here, the console's in issue 10): Debian's
chromium driven by Playwright (never a downloaded browser), axe-core from axe-playwright-python
(bundled, nothing fetched), overflow checks at 320 px and 200% zoom, screenshots as artifacts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
WCAG_21_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
              "resultTypes": ["violations"]}
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "web"
_AXE = Axe()


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def axe_violations(page: Any) -> list[str]:
    """WCAG 2.1 A and AA rules that fail on the page, as 'rule: target' lines (empty = none)."""
    results = _AXE.run(page, options=WCAG_21_AA)
    out = []
    for v in results.response["violations"]:
        for node in v["nodes"]:
            out.append(f"{v['id']}: {node['target']} {node.get('failureSummary', '')[:200]}")
    return out


def overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no horizontal scrolling)."""
    return page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
                         " - document.documentElement.clientWidth")


def reflow_problems(page: Any) -> dict[str, int]:
    """Horizontal overflow at 320 px wide and at 200% zoom of a 1280x800 window (640 CSS px)."""
    out = {}
    for name, size in (("320px", {"width": 320, "height": 640}), ("zoom200", {"width": 640, "height": 400})):
        page.set_viewport_size(size)
        extra = overflow(page)
        if extra > 0:
            out[name] = extra
    return out


def screenshots(page: Any, name: str) -> list[Path]:
    """The page at 390x844 (a phone) and 1280x800 (a laptop) under artifacts/web/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    paths = []
    for w, h in ((390, 844), (1280, 800)):
        page.set_viewport_size({"width": w, "height": h})
        path = ARTIFACTS / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}-{w}x{h}.png"
        page.screenshot(path=str(path), full_page=True)
        paths.append(path)
    return paths


def decode_qr(png: Path) -> str:
    """The text of the one QR code in a PNG, by zbarimg."""
    out = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"zbarimg found no QR code in {png}: {out.stderr}"
    return out.stdout.strip()


def tab_to(page: Any, selector: str, limit: int = 60) -> None:
    """Press Tab until the element matching `selector` has the focus (keyboard-only use)."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} cannot be reached with the Tab key")
