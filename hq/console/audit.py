"""The audit log: who changed what, when. Written in the same transaction as the change."""

from __future__ import annotations

import sqlite3
from typing import Any

from hq.auth import Principal


def record(c: sqlite3.Connection, actor: Principal | None, org_id: str | None, action: str, target: str,
           detail: str, now: int, actor_email: str = "") -> None:
    """``action`` is a stable code (docs/console.md lists them); ``detail`` plain words, no secrets."""
    c.execute("INSERT INTO audit (at, actor_id, actor_email, org_id, action, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
              (now, actor.user_id if actor else None, actor.email if actor else actor_email, org_id, action, target,
               detail[:500]))


def entries(c: sqlite3.Connection, org_id: str | None, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Newest first; ``org_id`` None means every organization (a super admin's view)."""
    sql, args = "SELECT * FROM audit WHERE 1 = 1", []
    if org_id is not None:
        sql += " AND org_id = ?"
        args.append(org_id)
    if before is not None:
        sql += " AND id < ?"
        args.append(before)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [dict(r) for r in c.execute(sql, args)]
