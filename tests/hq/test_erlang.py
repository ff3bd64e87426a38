"""Erlang C against a published worked example and against the textbook sum formula."""

from __future__ import annotations

import math

import pytest

from hq.console.erlang import counters_needed, erlang_c, mean_wait_s, service_level


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
