"""Benchmark: print spooler submit() -> last ticket byte received by a printer on 127.0.0.1:9100.

The printer is hardware.fake_network_printer (a raw TCP listener answering DLE EOT like a real
printer) in its own process, so the figure is the software path: queue hand-off, render,
connect, status query, write. Latency = submit() call -> the child process sees the ticket's
final cut command (both clocks are CLOCK_MONOTONIC). Sequential tickets give the latency distribution; a burst gives throughput.
Budget (DESIGN §9): kiosk POST /tickets -> printer bytes p99 <= 150 ms; this is the printer
half of that path.

Writes bench/results/printer.json. Run: .venv/bin/python -m bench.bench_printer [--tickets 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hardware.fake_network_printer import FakeNetworkPrinter  # noqa: E402
from hardware.printer import build_printer_from_config  # noqa: E402
from hardware.ticket_layout import TicketPrint  # noqa: E402


def ticket(i: int) -> TicketPrint:
    return TicketPrint(branch_name="Kigali – Irembo", label=f"A{i % 1000:03d}",
                       service_name="Indangamuntu", issued_at=datetime(2026, 11, 22, 9, 5),
                       people_ahead=i % 17, estimated_wait_s=60 * (i % 30),
                       qr_payload=f"https://q.example/t/20261122-A{i:04d}", language="rw")


CUT = b"\x1bd\x06\x1dV\x00"  # every ticket ends with feed + cut


def serve(port: int) -> None:
    """Child process: the printer. Prints "<monotonic ns>" for each ticket end it receives."""
    out = sys.stdout
    tails: dict[int, bytes] = {}
    lock = threading.Lock()

    def on_chunk(conn: int, chunk: bytes) -> None:
        now = time.perf_counter_ns()  # CLOCK_MONOTONIC: comparable across processes
        with lock:
            data = tails.get(conn, b"") + chunk
            for _ in range(data.count(CUT)):
                out.write(f"{now}\n")
            out.flush()
            tails[conn] = data[-(len(CUT) - 1):]

    printer = FakeNetworkPrinter(port=port)
    printer.on_chunk = on_chunk
    printer.start()
    out.write(f"port {printer.port} {int(printer.used_fallback)}\n")
    out.flush()
    sys.stdin.read()  # until the parent closes our stdin
    printer.stop()


class PrinterProcess:
    """The fake printer in its own process, so it does not share the spooler's GIL."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.bench_printer", "--serve"],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        _, port, fallback = self.proc.stdout.readline().split()
        self.port, self.used_fallback = int(port), bool(int(fallback))

    def next_arrival(self) -> float:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("printer process ended")
        return int(line) / 1e9

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run(n: int, status_query: bool) -> dict[str, Any]:
    printer = PrinterProcess()
    try:
        spooler = build_printer_from_config({
            "backend": "network", "host": "127.0.0.1", "port": printer.port,
            "status_query": status_query, "poll_interval": 0, "queue_size": n})
        spooler.start()
        try:
            latencies = []
            tickets = [ticket(i) for i in range(n)]
            for t in tickets:
                t0 = time.perf_counter()
                spooler.submit(t)
                latencies.append((printer.next_arrival() - t0) * 1000)
            # burst: n tickets submitted at once
            t0 = time.perf_counter()
            for t in tickets:
                spooler.submit(t)
            last = 0.0
            for _ in tickets:
                last = printer.next_arrival()
            burst_s = last - t0
            failed = spooler.status()["jobs_failed"]
        finally:
            spooler.stop()
    finally:
        printer.close()
    return {
        "printer": "127.0.0.1:9100" if not printer.used_fallback
        else f"127.0.0.1:{printer.port} (9100 was busy)",
        "status_query": status_query,
        "tickets": n,
        "jobs_failed": failed,
        "latency_ms": {
            "p50": round(pct(latencies, 50), 3),
            "p90": round(pct(latencies, 90), 3),
            "p99": round(pct(latencies, 99), 3),
            "max": round(max(latencies), 3),
            "mean": round(statistics.fmean(latencies), 3),
        },
        "burst_tickets_per_s": round(n / burst_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "printer.json"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    results = {
        "benchmark": "printer spooler submit -> last byte received (raw TCP, loopback)",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "budget_p99_ms": 150,
        "runs": [run(args.tickets, True), run(args.tickets, False)],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
