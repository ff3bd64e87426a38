"""Erlang C against a published worked example and against the textbook sum formula; Erlang A
against independent computations: the birth-death chain solved by its balance equations, the
tagged caller's chain solved by uniformization, a seeded simulation, and Erlang C as patience
grows without end."""

from __future__ import annotations

import math

import pytest

import heapq
import random

from hq.console.erlang import counters_needed, counters_needed_a, erlang_a, erlang_c, mean_wait_s, service_level


def textbook_erlang_c(a: float, n: int) -> float:
    """C(N, A) = (A^N/N! * N/(N-A)) / (sum_{k<N} A^k/k! + A^N/N! * N/(N-A))."""
    top = a ** n / math.factorial(n) * n / (n - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(n)) + top)


# Call Centre Helper, "Erlang C formula – made simple with an easy worked example": 100 calls in
# 30 minutes, 3 minutes average handling time (A = 10 Erlangs), a 20 s target.
PUBLISHED_PW = {11: 0.6821, 12: 0.4494, 13: 0.2853, 14: 0.1741}


@pytest.mark.parametrize("n", sorted(PUBLISHED_PW))
def test_probability_of_waiting_equals_the_published_worked_example(n):
    assert round(erlang_c(10.0, n), 4) == PUBLISHED_PW[n]


def test_worked_example_wait_service_level_and_agents():
    assert round(mean_wait_s(10.0, 11, 180), 1) == 122.8  # the example's average speed of answer
    # service level 1 - C * e^{-(N-A) t / AHT}, as the example computes it
    assert service_level(10.0, 11, 180, 20) == pytest.approx(1 - 0.6821 * math.exp(-1 * 20 / 180), abs=1e-4)
    assert counters_needed(10.0, 180, 20, 0.80) == 14  # 13 call 79.6 % in 20 s, 14 call 88.8 %
    assert service_level(10.0, 13, 180, 20) < 0.80 <= service_level(10.0, 14, 180, 20)


@pytest.mark.parametrize("a,n", [(0.5, 1), (2.0, 3), (7.3, 9), (25.0, 30), (80.0, 85)])
def test_recursion_equals_the_textbook_sum(a, n):
    assert erlang_c(a, n) == pytest.approx(textbook_erlang_c(a, n), rel=1e-9)


def test_overloaded_and_idle():
    assert erlang_c(5.0, 5) == 1.0 and service_level(5.0, 4, 300, 600) == 0.0 and mean_wait_s(5.0, 5, 300) is None
    assert erlang_c(0.0, 1) == 0.0 and counters_needed(0.0, 300, 600, 0.8) == 0


# -- Erlang A ------------------------------------------------------------------------------------
def chain(lam: float, mu: float, theta: float, n: int, size: int = 3000) -> list[float]:
    """Stationary distribution of the truncated birth-death chain from its balance equations
    pi_{k+1} * death(k+1) = pi_k * lam, normalized (no Erlang B, no closed form)."""
    pi = [1.0]
    for k in range(1, size):
        pi.append(pi[-1] * lam / (min(k, n) * mu + max(k - n, 0) * theta))
    z = sum(pi)
    return [x / z for x in pi]


def uniformized_level(lam: float, mu: float, theta: float, n: int, t: float) -> float:
    """Share called within t by uniformization of the tagged arrival's own chain: with i people
    ahead it moves up at rate n mu + i theta (i = 0: it is called), and gives up at rate theta."""
    pi = chain(lam, mu, theta, n, size=n + 300)  # short: the uniformization rate grows with the size
    assert pi[-1] < 1e-30
    size = len(pi) - n
    start = [pi[n + i] for i in range(size)]  # arrivals finding n + i present wait behind i people
    rates = [n * mu + i * theta for i in range(size)]
    big = max(rates) + theta
    p, called, weight, k = start[:], 0.0, math.exp(-big * t), 0
    assert weight > 0
    total = 0.0  # called by t = sum_k Poisson(k; big t) * (called after k uniformized steps)
    while True:
        total += weight * called
        nxt = [0.0] * size
        called += p[0] * rates[0] / big
        for i in range(size):
            stay = 1.0 - (rates[i] + theta) / big
            nxt[i] += p[i] * stay
            if i:
                nxt[i - 1] += p[i] * rates[i] / big
        p, k = nxt, k + 1
        weight *= big * t / k
        if k > big * t + 12 * math.sqrt(big * t) + 30:
            break
    return sum(pi[:n]) + total


def simulate(lam: float, service_s: float, patience_s: float, n: int, t: float, arrivals: int, seed: int) -> tuple[float, float]:
    """(share called within t, share who gave up) of a seeded first-come-first-served simulation."""
    rng = random.Random(seed)
    free_at = [0.0] * n  # when each counter frees (heap)
    clock, called_in_time, gave_up = 0.0, 0, 0
    for _ in range(arrivals):
        clock += rng.expovariate(lam)
        patience = rng.expovariate(1.0 / patience_s)
        start = max(clock, free_at[0])
        if start - clock > patience:
            gave_up += 1  # FCFS: the next free counter goes to whoever is still there
            continue
        heapq.heapreplace(free_at, start + rng.expovariate(1.0 / service_s))
        called_in_time += start - clock <= t
    return called_in_time / arrivals, gave_up / arrivals


CASES = [(100 / 1800, 180, 300, 10, 20), (100 / 1800, 180, 300, 8, 20), (40 / 3600, 300, 600, 3, 900),
         (90 / 3600, 240, 900, 4, 600), (10 / 3600, 600, 1200, 1, 300)]


@pytest.mark.parametrize("lam,service_s,patience_s,n,t", CASES)
def test_erlang_a_equals_the_birth_death_chain_and_the_uniformized_caller(lam, service_s, patience_s, n, t):
    palm = erlang_a(lam, service_s, patience_s, n, t)
    mu, theta = 1 / service_s, 1 / patience_s
    pi = chain(lam, mu, theta, n)
    queue = sum(max(k - n, 0) * p for k, p in enumerate(pi))
    assert palm.wait_probability == pytest.approx(sum(pi[n:]), rel=1e-9)
    assert palm.abandon_probability == pytest.approx(theta * queue / lam, rel=1e-9)
    assert palm.mean_wait_s == pytest.approx(queue / lam, rel=1e-9)
    assert palm.service_level == pytest.approx(uniformized_level(lam, mu, theta, n, t), abs=1e-9)


@pytest.mark.parametrize("lam,service_s,patience_s,n,t", CASES[:3])
def test_erlang_a_equals_a_seeded_simulation(lam, service_s, patience_s, n, t):
    palm = erlang_a(lam, service_s, patience_s, n, t)
    level, gave_up = simulate(lam, service_s, patience_s, n, t, 200_000, seed=n)
    assert palm.service_level == pytest.approx(level, abs=0.01)
    assert palm.abandon_probability == pytest.approx(gave_up, abs=0.006)


@pytest.mark.parametrize("n", sorted(PUBLISHED_PW))
def test_erlang_a_tends_to_erlang_c_as_patience_grows(n):
    a, service_s, t = 10.0, 180, 20
    previous = None
    for patience_s in (600, 6_000, 60_000, 1e7):
        palm = erlang_a(a / service_s, service_s, patience_s, n, t)
        gap = abs(palm.service_level - service_level(a, n, service_s, t))
        assert previous is None or gap < previous  # closer with every step
        previous = gap
    assert gap < 1e-4 and round(palm.wait_probability, 4) == PUBLISHED_PW[n] and palm.abandon_probability < 1e-4
    assert palm.mean_wait_s == pytest.approx(mean_wait_s(a, n, service_s), rel=1e-3)


def test_erlang_a_needs_fewer_counters_when_people_give_up_and_copes_with_overload():
    # Those who give up shorten the queue, so Erlang A asks for no more counters than Erlang C.
    assert counters_needed_a(10 / 180, 180, 120, 20, 0.8) <= counters_needed(10.0, 180, 20, 0.8) == 14
    assert counters_needed_a(10 / 180, 180, 1e8, 20, 0.8) == 14
    over = erlang_a(10 / 180, 180, 300, 5, 20)  # A = 10 on 5 counters: stable, half give up
    assert 0.4 < over.abandon_probability < 0.6 and over.wait_probability > 0.9
    assert erlang_a(0.0, 180, 300, 3, 20).service_level == 1.0
    assert erlang_a(0.01, 180, 300, 0, 20).abandon_probability == 1.0
    assert erlang_a(0.001, 180, 300, 400, 20).wait_probability < 1e-12
