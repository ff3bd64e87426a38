"""Nightly training of the learned wait estimator from the branch's own history.

Pure Python (no numpy in the node): the features are few and mostly sparse, so a ridge
least-squares fit refined towards the median (iteratively reweighted least squares, since
the error that matters is absolute) takes well under a second for weeks of history. The
range comes from the residuals: per bin of the linear prediction, their 10th, 50th and 90th
percentiles, so the p10-p90 band widens where waits are long and is calibrated on data.
"""

from __future__ import annotations

import json
import logging
import math
from bisect import bisect_right
import sqlite3
from collections.abc import Sequence
from typing import Any

from appliance.model import Model
from appliance.waits import ANY, FEATURE_NAMES, FEATURE_SETS, BranchModel, WaitModel, features, regime

logger = logging.getLogger(__name__)

MIN_ROWS = 60
PER_SERVICE_ROWS = 400
IRLS_ROUNDS = 4
FOLD_ROUNDS = 2
FOLD_BLOCKS = 10  # the history cut in this many blocks of time, alternately left out
FOLD_MIN_ROWS = 120
RIDGE = 1e-2
PRIOR_FEATURE = 1  # draws_p50_s: the median of the virtual schedule's plays


def history(conn: sqlite3.Connection, *, before_day: str | None = None,
            since_day: str | None = None) -> list[tuple[str, dict[str, float], float]]:
    """(service, signals at issue, actual wait s) of every recorded ticket that has been served."""
    sql = ("SELECT f.service, f.signals, t.called_ms - t.issued_ms FROM wait_features f JOIN tickets t ON t.id = f.ticket"
           " WHERE t.status = 'completed' AND t.called_ms IS NOT NULL")
    args: list[Any] = []
    if before_day is not None:
        sql += " AND f.day < ?"
        args.append(before_day)
    if since_day is not None:
        sql += " AND f.day >= ?"
        args.append(since_day)
    return [(svc, json.loads(s), w / 1000) for svc, s, w in conn.execute(sql + " ORDER BY f.issued_ms", args)]


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (a is symmetric positive definite here)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[piv] = m[piv], m[col]
        p = m[col][col]
        if abs(p) < 1e-12:
            continue
        for r in range(col + 1, n):
            f = m[r][col] / p
            if f:
                mr, mc = m[r], m[col]
                for c in range(col, n + 1):
                    mr[c] -= f * mc[c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        if abs(m[r][r]) < 1e-12:
            continue
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def _weighted_fit(rows: Sequence[list[tuple[int, float]]], y: Sequence[float], w: Sequence[float], d: int,
                  scale: Sequence[float]) -> list[float]:
    a = [[0.0] * d for _ in range(d)]
    b = [0.0] * d
    for xs, yi, wi in zip(rows, y, w):
        for i, xi in xs:
            wx = wi * xi
            b[i] += wx * yi
            ai = a[i]
            for j, xj in xs:
                if j >= i:
                    ai[j] += wx * xj
    total = sum(w)
    for i in range(d):
        for j in range(i):
            a[i][j] = a[j][i]
        if i:  # the intercept is not shrunk
            a[i][i] += RIDGE * total + 1e-9
    beta = _solve(a, b)
    return [beta[i] / scale[i] for i in range(d)]


def _quantile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


COVERAGE = 0.8


def _upper_for_coverage(rows: Sequence[tuple[float, float]], low: float, mid: float, coverage: float) -> float:
    """The smallest upper residual offset whose ranges, built exactly as WaitModel.predict
    builds them, hold `coverage` of this bin's waits. Waits pile up at zero (nobody ahead),
    where the clipped ends cover them all: plain 10th/90th residual percentiles would then
    cover ~90%, not 80%."""
    if not rows:
        return mid
    always, need = 0, []
    for d, p in rows:
        y = d + p
        p50 = max(p + mid, 0.0)
        p10 = min(max(p + low, 0.0), p50)
        if y < round(p10):
            continue  # below the range, whatever its upper end
        if y <= round(p50):
            always += 1  # inside [p10, p50]
        else:
            need.append(d)
    k = int(round(coverage * len(rows))) - always
    if k <= 0 or not need:
        return mid
    need.sort()
    return need[min(k, len(need)) - 1]


def _irls(rows: Sequence[list[tuple[int, float]]], y: Sequence[float], d: int, scale: Sequence[float],
          delta: float, rounds: int, offset: Sequence[float], prior: Sequence[float]) -> list[float]:
    """Least absolute deviations by iteratively reweighted ridge least squares, around `prior`
    (y - offset is fitted, so the ridge pulls towards the prior's prediction)."""
    weights = [1.0] * len(y)
    target = [yi - oi for yi, oi in zip(y, offset)]
    coef = list(prior)
    for r in range(rounds + 1):
        coef = [c + p for c, p in zip(_weighted_fit(rows, target, weights, d, scale), prior)]
        if r < rounds:
            pred = [sum(coef[i] * v * scale[i] for i, v in xs) for xs in rows]
            weights = [1.0 / max(abs(yi - pi), delta) for yi, pi in zip(y, pred)]
    return coef


def fit(data: Sequence[tuple[dict[str, float], float]], meta: dict[str, Any] | None = None) -> WaitModel | None:
    """A model from (signals, actual wait s) pairs; None when there is too little history."""
    if len(data) < MIN_ROWS:
        return None
    d = len(FEATURE_NAMES)
    raw = [features(sig) for sig, _ in data]
    y = [wait for _, wait in data]
    scale = [1.0] + [math.sqrt(sum(x[i] * x[i] for x in raw) / len(raw)) or 1.0 for i in range(1, d)]
    delta = max(_quantile(sorted(y), 0.5) * 0.05, 15.0)
    # The schedule is the physics; the model learns corrections to it, and the ridge shrinks
    # those corrections (not the whole prediction) towards zero.
    prior = [0.0] * d
    prior[PRIOR_FEATURE] = 1.0
    offset = [x[PRIOR_FEATURE] for x in raw]
    # Out of fold: blocks of about a day, alternately left out, predicted by a fit on the rest.
    block = max(len(y) // FOLD_BLOCKS, 1)
    folds = [(i // block) % 2 for i in range(len(y))]

    def out_of_fold(rows: list[list[tuple[int, float]]]) -> list[float] | None:
        if len(y) < FOLD_MIN_ROWS:
            return None
        oof = [0.0] * len(y)
        for k in (0, 1):
            keep = [i for i, f in enumerate(folds) if f != k]
            c = _irls([rows[i] for i in keep], [y[i] for i in keep], d, scale, delta, FOLD_ROUNDS,
                      [offset[i] for i in keep], prior)
            for i, f in enumerate(folds):
                if f == k:
                    oof[i] = sum(a * v for a, v in zip(c, raw[i]))
        return oof

    # The feature set (FEATURE_SETS) that predicts best out of fold; the smallest without folds.
    best: tuple[float, int, list[list[tuple[int, float]]], list[float] | None] | None = None
    if len(y) >= FOLD_MIN_ROWS:  # the schedule alone, as it is: nothing fitted
        best = (sum(abs(a - b) for a, b in zip(y, offset)) / len(y), -1, [], list(offset))
    for n, chosen in enumerate(FEATURE_SETS):
        keep_cols = set(chosen)
        rows = [[(i, v / scale[i]) for i, v in enumerate(x) if v and i in keep_cols] for x in raw]
        oof = out_of_fold(rows)
        if oof is None:
            best = (0.0, n, rows, None)
            break
        mae = sum(abs(a - b) for a, b in zip(y, oof)) / len(y)
        if best is None or mae < best[0]:
            best = (mae, n, rows, oof)
    assert best is not None
    _, chosen_set, rows, found_oof = best
    coef = list(prior) if chosen_set < 0 else _irls(rows, y, d, scale, delta, IRLS_ROUNDS, offset, prior)
    pred = [sum(c * v for c, v in zip(coef, x)) for x in raw]
    # The range is calibrated on out-of-fold predictions, so it is as wide as tomorrow's
    # errors, not as narrow as the fit's own.
    oof = found_oof if found_oof is not None else list(pred)
    bins = max(1, min(6, len(y) // 150))
    edges = tuple(_quantile(sorted(pred), k / bins) for k in range(1, bins))
    residuals: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    centre: list[list[float]] = [[] for _ in range(bins)]
    for yi, pi, oi in zip(y, pred, oof):
        residuals[bisect_right(edges, oi)].append((yi - oi, oi))
        centre[bisect_right(edges, pi)].append(yi - pi)
    # A bin's median residual shifts its points only if such shifts, learnt on one half of the
    # history, also help on the other (errors within a day are shared: a few days' noise
    # looks like a pattern otherwise).
    shift = found_oof is not None and _shifts_hold(y, oof, folds, edges)
    qs: dict[float, list[float]] = {0.1: [], 0.5: [], 0.9: []}
    for b, rows_in_bin in enumerate(residuals):
        mid = _quantile(sorted(centre[b]), 0.5) if (shift or found_oof is None) and centre[b] else 0.0
        low = _quantile(sorted(d for d, _ in rows_in_bin), 0.1) if rows_in_bin else mid
        qs[0.1].append(low)
        qs[0.5].append(mid)
        qs[0.9].append(_upper_for_coverage(rows_in_bin, low, mid, COVERAGE))
    info = {"rows": len(y), "feature_set": chosen_set, **(meta or {})}
    model = WaitModel(tuple(coef), edges, tuple(qs[0.1]), tuple(qs[0.5]), tuple(qs[0.9]), info)
    return model


def _shifts_hold(y: Sequence[float], oof: Sequence[float], folds: Sequence[int], edges: Sequence[float]) -> bool:
    bins = len(edges) + 1
    moved = list(oof)
    for k in (0, 1):
        per_bin: list[list[float]] = [[] for _ in range(bins)]
        for yi, oi, f in zip(y, oof, folds):
            if f != k:
                per_bin[bisect_right(edges, oi)].append(yi - oi)
        mids = [_quantile(sorted(v), 0.5) for v in per_bin]
        for i, (oi, f) in enumerate(zip(oof, folds)):
            if f == k:
                moved[i] = max(oi + mids[bisect_right(edges, oi)], 0.0)
    before = sum(abs(a - max(b, 0.0)) for a, b in zip(y, oof))
    after = sum(abs(a - b) for a, b in zip(y, moved))
    return after < before


REGIME_ROWS = 200


def fit_branch(data: Sequence[tuple[str, dict[str, float], float]], meta: dict[str, Any] | None = None,
               ) -> BranchModel | None:
    """A model per regime (waits.regime), pooled and per service that has PER_SERVICE_ROWS;
    a pooled and per-service model over every regime for the rest."""
    # Tickets issued before the node had any history to read today from (DayContext) were
    # estimated without usual hours, speeds or people leaving: not like today's; left out
    # once there are enough others.
    later = [row for row in data if row[1].get("context_days", 0) > 0]
    if len(later) >= MIN_ROWS:
        data = later
    pooled = fit([(sig, w) for _, sig, w in data], meta)
    if pooled is None:
        return None

    def group(indexes: list[int], extra: dict[str, Any], rows_needed: int) -> WaitModel | None:
        if len(indexes) < rows_needed:
            return None
        return fit([(data[i][1], data[i][2]) for i in indexes], {**(meta or {}), **extra})

    by_service: dict[str, list[int]] = {}
    by_regime: dict[str, dict[str, list[int]]] = {}
    for i, (service, sig, _) in enumerate(data):
        by_service.setdefault(service, []).append(i)
        by_regime.setdefault(regime(sig), {}).setdefault(service, []).append(i)
    services = {}
    for service, idx in by_service.items():
        model = group(idx, {"service": service}, PER_SERVICE_ROWS)
        if model is not None:
            services[service] = model
    regimes: dict[str, dict[str, WaitModel]] = {}
    for name, per in by_regime.items():
        models: dict[str, WaitModel] = {}
        everyone = sorted(i for idx in per.values() for i in idx)
        model = group(everyone, {"regime": name}, REGIME_ROWS)
        if model is not None:
            models[ANY] = model
        for service, idx in per.items():
            model = group(idx, {"regime": name, "service": service}, PER_SERVICE_ROWS)
            if model is not None:
                models[service] = model
        if models:
            regimes[name] = models
    return BranchModel(pooled, services, regimes)


def train(conn: sqlite3.Connection, m: Model, *, before_day: str | None = None, since_day: str | None = None,
          meta: dict[str, Any] | None = None) -> BranchModel | None:
    """The nightly job's step: fit on every served ticket recorded before `before_day`."""
    return fit_branch(history(conn, before_day=before_day, since_day=since_day), meta)


NOT_ENOUGH_HISTORY = 3


def main(argv: list[str] | None = None) -> int:
    """`python -m appliance.waits_train CONFIG DB DAY`: the node's nightly training in a process
    of its own (the fit's lists would stay in the node's heap and push it past its memory
    budget); reads the store read-only and writes data_dir/wait_model.json."""
    import sys

    from sync.db import connect

    from appliance.config import load_config
    from appliance.model import load_model
    from appliance.waits import save_model

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m appliance.waits_train CONFIG DB DAY", file=sys.stderr)
        return 2
    config = load_config(args[0])
    conn = connect(args[1], readonly=True)
    try:
        model = train(conn, load_model(conn, config), before_day=args[2], meta={"trained_for": args[2]})
    finally:
        conn.close()
    if model is None:
        return NOT_ENOUGH_HISTORY
    save_model(config.data_dir, model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
