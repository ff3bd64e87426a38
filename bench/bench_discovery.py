"""Benchmark: how fast devices find each other by mDNS, in network namespaces (needs root).

Two figures, written to bench/results/discovery.json:
- cold start: 3 devices start together on one LAN; time from each `Discovery.start()` call
  until its table holds the other two.
- link-up: 2 devices run; a third starts while unplugged, then is plugged in; time from the
  link coming up until all three tables are complete (the device-plugged-in-after-boot case).

Run: sudo .venv/bin/python -m bench.bench_discovery [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from branch.netns import Host, Network, Proc, unavailable_reason  # noqa: E402

HELPER = REPO / "tests" / "branch" / "discovery_peer.py"
ENV = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


REFRESH = 1.0  # Discovery's default refresh interval; --refresh overrides


def spawn(net: Network, host: Host, tag: str) -> Proc:
    argv = [sys.executable, str(HELPER), "--branch", "bench", "--id", f"dev-{host.name}", "--refresh", str(REFRESH)]
    return net.spawn(host, argv, env=ENV, name=f"{tag}-{host.name}")


def first_time_complete(proc: Proc, others: set[str], timeout: float = 30) -> float:
    """Wall time (the process's own clock) at which its table first held exactly `others`."""

    def check(lines: list[dict[str, Any]]) -> float | None:
        for line in lines:
            if line.get("event") in ("peers", "started"):
                if {p["device_id"] for p in line["peers"]} >= others:
                    return float(line["t"])
        return None

    return proc.wait_for(check, timeout, f"table {sorted(others)}")


def event_time(proc: Proc, event: str) -> float:
    return proc.wait_for(
        lambda lines: next((float(l["t"]) for l in lines if l.get("event") == event), None), 30, event
    )


def stats(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 4),
        "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
        "max_s": round(ordered[-1], 4),
        "samples_s": [round(s, 4) for s in ordered],
    }


def cold_start(workdir: Path, rounds: int) -> list[float]:
    samples: list[float] = []
    for r in range(rounds):
        with Network.create(workdir / f"cold{r}") as net:
            hosts = [net.add_host(n) for n in ("a", "b", "c")]
            procs = {h.name: spawn(net, h, "cold") for h in hosts}
            for name, proc in procs.items():
                others = {f"dev-{h.name}" for h in hosts if h.name != name}
                samples.append(first_time_complete(proc, others) - event_time(proc, "starting"))
    return samples


def link_up(workdir: Path, rounds: int) -> list[float]:
    samples: list[float] = []
    with Network.create(workdir / "linkup") as net:
        a, b, c = (net.add_host(n) for n in ("a", "b", "c"))
        pa, pb = spawn(net, a, "up"), spawn(net, b, "up")
        first_time_complete(pa, {"dev-b"})
        for r in range(rounds):
            net.cut(c)
            pc = spawn(net, c, f"up{r}")
            event_time(pc, "started")
            time.sleep(0.5)
            t0 = time.time()
            net.reconnect(c)
            done = max(
                first_time_complete(pa, {"dev-b", "dev-c"}) if r == 0 else _next_added(pa, "dev-c", t0),
                first_time_complete(pb, {"dev-a", "dev-c"}) if r == 0 else _next_added(pb, "dev-c", t0),
                first_time_complete(pc, {"dev-a", "dev-b"}),
            )
            samples.append(done - t0)
            pc.stop()  # says goodbye: a and b drop c before the next round
    return samples


def _next_added(proc: Proc, device: str, after: float) -> float:
    return proc.wait_for(
        lambda lines: next(
            (float(l["t"]) for l in lines
             if l.get("event") == "peers" and l.get("kind") == "added" and l.get("device") == device
             and float(l["t"]) >= after),
            None,
        ),
        30, f"{device} added after link-up",
    )


def main(argv: list[str] | None = None) -> int:
    global REFRESH
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--refresh", type=float, default=REFRESH, help="Discovery refresh interval (s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "discovery.json")
    args = parser.parse_args(argv)
    REFRESH = args.refresh
    reason = unavailable_reason()
    if reason is not None:
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="sq-bench-discovery-") as tmp:
        workdir = Path(tmp)
        cold = cold_start(workdir, max(1, args.rounds // 3))
        up = link_up(workdir, args.rounds)
    result = {
        "benchmark": "discovery",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "kernel": platform.release(), "cpus": _cpus()},
        "cold_start_to_full_table": stats(cold),
        "link_up_to_all_tables_complete": stats(up),
        "refresh_interval_s": REFRESH,
        "notes": "3 devices in network namespaces on one bridge; link-up detection polls every refresh interval",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.endswith("complete") or k.startswith("cold")}, indent=2))
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
