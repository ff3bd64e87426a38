"""Erlang C (M/M/N queue): the chance to wait, the share served within a target, counters needed.

Traffic A (Erlangs) = arrivals per second x mean service time in seconds. With N counters and
N > A: C(N, A) = N*B / (N - A*(1 - B)), B the Erlang B blocking probability (computed by its
stable recursion B(0) = 1, B(k) = A*B(k-1) / (k + A*B(k-1))); the share of people called within
t seconds is 1 - C * exp(-(N - A) * t / service); the mean wait is C * service / (N - A).
With N <= A the queue grows without bound: C = 1, nobody is sure to be called in time.
"""

from __future__ import annotations

import math


def erlang_b(traffic: float, counters: int) -> float:
    b = 1.0
    for k in range(1, counters + 1):
        b = traffic * b / (k + traffic * b)
    return b


def erlang_c(traffic: float, counters: int) -> float:
    """Probability that an arrival has to wait (all counters busy)."""
    if traffic <= 0:
        return 0.0
    if counters <= traffic:
        return 1.0
    b = erlang_b(traffic, counters)
    return counters * b / (counters - traffic * (1 - b))


def service_level(traffic: float, counters: int, service_s: float, target_s: float) -> float:
    """Share of arrivals called within ``target_s`` seconds."""
    if traffic <= 0:
        return 1.0
    if counters <= traffic:
        return 0.0
    return 1.0 - erlang_c(traffic, counters) * math.exp(-(counters - traffic) * target_s / service_s)


def mean_wait_s(traffic: float, counters: int, service_s: float) -> float | None:
    """Average wait of all arrivals (None: it grows without bound)."""
    if traffic <= 0:
        return 0.0
    if counters <= traffic:
        return None
    return erlang_c(traffic, counters) * service_s / (counters - traffic)


def counters_needed(traffic: float, service_s: float, target_s: float, share: float, limit: int = 500) -> int:
    """The fewest counters that call at least ``share`` of arrivals within ``target_s``."""
    if traffic <= 0:
        return 0
    n = max(1, math.floor(traffic) + 1)
    while n < limit and service_level(traffic, n, service_s, target_s) < share:
        n += 1
    return n
