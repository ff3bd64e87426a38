"""Erlang C (M/M/N queue) and Erlang A (M/M/N+M, people give up): the chance to wait, the share
served within a target, counters needed.

Traffic A (Erlangs) = arrivals per second x mean service time in seconds. With N counters and
N > A: C(N, A) = N*B / (N - A*(1 - B)), B the Erlang B blocking probability (computed by its
stable recursion B(0) = 1, B(k) = A*B(k-1) / (k + A*B(k-1))); the share of people called within
t seconds is 1 - C * exp(-(N - A) * t / service); the mean wait is C * service / (N - A).
With N <= A the queue grows without bound: C = 1, nobody is sure to be called in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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


# -- Erlang A (Palm's M/M/N+M queue: people give up after an exponential patience) --------------
@dataclass(frozen=True, slots=True)
class Palm:
    """What Erlang A predicts for one hour: shares of all arrivals."""

    wait_probability: float  # finds every counter busy
    service_level: float  # called within the target (those who give up first are not)
    abandon_probability: float  # gives up before being called
    mean_wait_s: float  # mean time in the queue, until called or until giving up


def erlang_a(arrivals_per_s: float, service_s: float, patience_s: float, counters: int, target_s: float) -> Palm:
    """Erlang A by its birth-death chain (state k = people present; births at rate lambda,
    deaths at min(k, N) mu + max(k - N, 0) theta, theta = 1 / mean patience), summed in closed form.

    Below N: pi_k proportional to A^k / k!, so their mass is pi_N (1/B - 1), B the Erlang B
    blocking probability; above: pi_{N+j} = pi_N prod_{m=1..j} lambda / (N mu + m theta), summed
    until the terms are negligible. Abandonment = theta E[queue] / lambda; mean wait = E[queue] /
    lambda (Little). An arrival finding j people waiting is called when j + 1 places have freed
    (rates N mu + m theta, m = j..0) before its own patience runs out: the chance that happens
    within t is N mu / (N mu + (j + 1) theta) * I_{1 - e^(-theta t)}(j + 1, N mu / theta + 1), a
    regularized incomplete beta function with an integer first parameter, i.e. a finite sum
    (derived from the hypoexponential density; docs/console.md). With N = 0 nobody is called.
    """
    lam, mu, theta, n = arrivals_per_s, 1.0 / service_s, 1.0 / patience_s, counters
    if lam <= 0:
        return Palm(0.0, 1.0, 0.0, 0.0)
    if n <= 0:
        return Palm(1.0, 0.0, 1.0, patience_s)
    a = lam / mu
    inv_b = 1.0  # 1 / B(k, A) by the stable recursion 1/B(k) = 1 + (k / A) / B(k - 1)
    for k in range(1, n + 1):
        inv_b = 1.0 + inv_b * k / a
    if not math.isfinite(inv_b) or inv_b > 1e280:
        return Palm(0.0, 1.0, 0.0, 0.0)  # so few arrivals for so many counters that nobody waits
    n_mu = n * mu
    logs = [0.0]  # log(pi_{N+j} / pi_N), j = 0, 1, ...
    top = 0.0
    m = 0
    while m < 200_000:
        m += 1
        logs.append(logs[-1] + math.log(lam / (n_mu + m * theta)))
        top = max(top, logs[-1])
        if n_mu + m * theta > lam and logs[-1] < top - 45:  # decreasing, and below e^-45 of the peak
            break
    w = [math.exp(x - top) for x in logs]  # pi_{N+j}, scaled by e^-top
    below = math.exp(math.log(inv_b - 1.0) - top) if inv_b > 1.0 else 0.0  # pi_k for k < N, same scale
    z = below + math.fsum(w)
    queue = math.fsum(j * x for j, x in enumerate(w)) / z
    level = below / z
    if target_s > 0:
        # T_k = y^b (b)_k / k! (1 - y)^k with y = e^(-theta t), b = N mu / theta + 1; I_y(b, j+1) = sum_{k<=j} T_k
        b = n_mu / theta + 1.0
        log_t = -target_s * (n_mu + theta)
        log_1my = math.log(-math.expm1(-theta * target_s))
        cum = 0.0
        for j, x in enumerate(w):
            cum += math.exp(log_t)
            level += x / z * n_mu / (n_mu + (j + 1) * theta) * max(0.0, 1.0 - cum)
            log_t += math.log((b + j) / (j + 1)) + log_1my
    return Palm(wait_probability=math.fsum(w) / z, service_level=min(1.0, level),
                abandon_probability=min(1.0, theta * queue / lam), mean_wait_s=queue / lam)


def counters_needed_a(arrivals_per_s: float, service_s: float, patience_s: float, target_s: float, share: float,
                      limit: int = 500) -> int:
    """The fewest counters whose Erlang A share called within ``target_s`` reaches ``share``."""
    if arrivals_per_s <= 0:
        return 0
    n = 1
    while n < limit and erlang_a(arrivals_per_s, service_s, patience_s, n, target_s).service_level < share:
        n += 1
    return n
