"""The target wait of each service (issue 10, docs/console.md "Target wait").

A service's target is set in the organization's catalogue and may be overridden per branch; both
are written through to the branch's service row (``services.target_wait_minutes``), the one
place the live page, the analytics and the staffing advice read. NULL there means the HQ setting
``target_wait_s``, so an HQ whose services never had one keeps its single target.

The analytics keep each row's waits as a histogram (hq/aggregates.py), so the share within the
target is computed when a page is read, each (branch, service) row against its own service's
target: a target changed today re-reads every past day against the new target, exactly as if
it had always been so (nothing was counted against a fixed target at ingest).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hq import aggregates as ag


@dataclass(frozen=True)
class Targets:
    """Target waits in seconds of the services in a page's scope."""
    default_s: int  # the HQ setting: services without their own target, and unknown services
    own: dict[tuple[str, str], int] = field(default_factory=dict)  # (branch, service) -> seconds
    in_scope: frozenset[tuple[str, str]] = frozenset()  # the services the page shows

    def of(self, branch: str, service: str) -> int:
        return self.own.get((branch, service), self.default_s)

    def values(self) -> list[int]:
        """The distinct targets of the services in scope, smallest first (the default when none)."""
        return sorted({self.of(b, s) for b, s in self.in_scope} or {self.default_s})

    def single(self) -> int | None:
        """The one target every service in scope shares, or None when they differ."""
        values = self.values()
        return values[0] if len(values) == 1 else None

    def exact(self) -> bool:
        """Whether every share within the target is exact (each target is a bucket edge)."""
        return all(ag.exact_target(v) for v in self.values())

    def inside_sql(self) -> tuple[str, list[Any]]:
        """A SQL expression over one analytics row (its branch_id, service and wait buckets): how
        many of its waits are within its service's target, with its arguments (portable SQL)."""
        groups: dict[int, dict[str, list[str]]] = {}
        for (branch, service), target in sorted(self.own.items()):
            if target != self.default_s:
                groups.setdefault(target, {}).setdefault(branch, []).append(service)
        if not groups:
            return within_sql(self.default_s), []
        parts, args = [], []
        for target, branches in sorted(groups.items()):
            conds = []
            for branch, services in branches.items():
                conds.append(f"(branch_id = ? AND service IN ({', '.join('?' * len(services))}))")
                args += [branch, *services]
            parts.append(f"WHEN {' OR '.join(conds)} THEN {within_sql(target)}")
        return f"CASE {' '.join(parts)} ELSE {within_sql(self.default_s)} END", args


def within_sql(target_s: int) -> str:
    """SQL counting one row's waits <= ``target_s`` from its buckets (the cut bucket interpolated,
    as hq.aggregates.within does)."""
    inside, cut, share = ag.within_columns(target_s)
    if cut is None:
        return f"({inside})"
    text = repr(float(share))
    if "e" in text:
        text = f"{share:.17f}"
    return f"({inside} + {cut} * {text})"


def load(c: sqlite3.Connection, branches: Iterable[str], default_s: int, service: str = "") -> Targets:
    """The targets of the services of ``branches`` (only ``service`` when given)."""
    ids = list(branches)
    if not ids:
        return Targets(default_s)
    sql = (f"SELECT branch_id, id, target_wait_minutes FROM services"
           f" WHERE branch_id IN ({', '.join('?' * len(ids))})")
    args: list[Any] = list(ids)
    own, scope = {}, set()
    for r in c.execute(sql, args):
        if r[2] is not None:
            own[(r[0], r[1])] = int(r[2]) * 60
        if not service or r[1] == service:
            scope.add((r[0], r[1]))
    return Targets(default_s, own, frozenset(scope))
