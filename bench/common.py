"""Shared helpers for the benchmarks: percentiles, machine facts, writing results."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3), "max_ms": round(max(ms), 3),
            "mean_ms": round(statistics.fmean(ms), 3)}


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "system": platform.platform(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def write(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"bench": name, "machine": machine(), **figures}, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")
    return path


def drop_tables(config: Path, prefix: str) -> None:
    """Remove the TOML tables whose header starts with `prefix` (e.g. "[hardware")."""
    kept, skipping = [], False
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            skipping = line.startswith(prefix)
        if not skipping:
            kept.append(line)
    config.write_text("\n".join(kept) + "\n", encoding="utf-8")


# A MutationObserver on the element with id ``root`` that resolves with the page's clock once
# the label is in its text (or in the text of ``within``, a selector inside it): the moment the
# pushed change is in the DOM. No eval: the pages' CSP forbids it.
_OBSERVE = """([root, within, label]) => new Promise(resolve => {
    const el = document.getElementById(root);
    const seen = () => { const t = within ? el.querySelector(within) : el; return !!t && t.textContent.includes(label); };
    const o = new MutationObserver(() => { if (seen()) { o.disconnect(); resolve(Date.now()); } });
    o.observe(el, {childList: true, subtree: true, characterData: true});
})"""


async def call_to_dom(page: Any, node: Any, tickets: list[dict[str, Any]], auth: dict[str, str],
                      root: str, within: str | None = None) -> tuple[list[float], int]:
    """For each ticket: counter c1 calls it at the node, and the time until the open page's element
    ``root`` (or ``within`` it) shows its label. Returns the seconds of each call seen and how many
    the page did not show within 30 s (counted, not hidden)."""
    samples: list[float] = []
    missed = 0
    for t in tickets:
        shown = asyncio.ensure_future(page.evaluate(_OBSERVE, [root, within, t["label"]]))
        await asyncio.sleep(0.05)  # the observer is in place
        t0 = time.time()
        await asyncio.to_thread(node.request, "POST", f"/api/v1/counters/c1/tickets/{t['id']}/call", headers=auth)
        try:
            at_ms = await asyncio.wait_for(shown, 30)
        except asyncio.TimeoutError:
            missed += 1
            continue
        samples.append(at_ms / 1000 - t0)
        await asyncio.sleep(0.1)
    return samples, missed
