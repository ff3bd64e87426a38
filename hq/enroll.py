"""Register a branch and its devices at HQ from the branch's device configs (admin API).

    python -m hq.enroll --hq https://hq.example.org --token TOKEN --org acme \\
        [--hours 08:00-17:00] [--days 0-4] kiosk.toml display.toml counter-1.toml ...

Creates (or updates) the organization's branch, its services, counters and opening hours, and
registers every roster device with its public key and ticket-number range, so that the config
events HQ sends the branch are exactly what the branch's files say (no flip-flop at restart)
and the devices may use the branch link. Prints the `[hq]` section to add to each device config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from appliance.config import Config, ConfigError, load_config


class EnrollError(Exception):
    """HQ refused a step; the message says which and why."""


async def _call(session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None,
                ok: tuple[int, ...] = (200, 201)) -> Any:
    async with session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        data = await resp.json(content_type=None)
        if resp.status not in ok:
            raise EnrollError(f"{method} {url} -> {resp.status}: {data}")
        return data


def _notices(config: Config) -> list[str] | dict[str, list[str]]:
    """The file's notices as HQ takes them: per language when the file gives them so."""
    if config.notices_by_language:
        return {lang: list(lines) for lang, lines in config.notices_by_language.items()}
    return list(config.notices)


async def register_branch(session: aiohttp.ClientSession, hq_url: str, token: str, org: str, config: Config, *,
                          hours: tuple[str, str] = ("08:00", "17:00"), weekdays: range = range(0, 5),
                          slot_minutes: int = 15, capacity: int = 2) -> dict[str, Any]:
    """Mirror one branch config (any of its devices' files) into HQ; idempotent. Returns
    {"public_key_b64": HQ's key for `[hq] public_key`}."""
    v1 = f"{hq_url.rstrip('/')}/api/v1"
    branch = config.branch_id
    body = {"id": branch, "name": config.branch_name, "timezone": config.timezone,
            "languages": list(config.languages), "notices": _notices(config),
            "queue": dict(config.queue.__dict__)}
    exists = await _call(session, "GET", f"{v1}/branches/{branch}", token, ok=(200, 404))
    if "error" in exists:
        await _call(session, "POST", f"{v1}/orgs/{org}/branches", token, body)
    else:
        await _call(session, "PATCH", f"{v1}/branches/{branch}", token,
                    {k: body[k] for k in ("name", "timezone", "languages", "notices", "queue")})
    for order, s in enumerate(config.services):
        if len(s.letter) != 1:
            raise EnrollError(f"service {s.id}: HQ takes one-letter services, not {s.letter!r}")
        await _call(session, "PUT", f"{v1}/branches/{branch}/services/{s.id}", token,
                    {"letter": s.letter, "names": dict(s.names), "rules": dict(s.rules), "order": order,
                     "slot_minutes": slot_minutes, "capacity": capacity})
    for order, c in enumerate(config.counters):
        await _call(session, "PUT", f"{v1}/branches/{branch}/counters/{c.id}", token,
                    {"name": c.name, "names": dict(c.names), "services": list(c.services), "order": order})
    await _call(session, "PUT", f"{v1}/branches/{branch}/hours", token,
                {"weekdays": {str(d): {"opens": hours[0], "closes": hours[1]} for d in weekdays}})
    known = {d["id"] for d in (await _call(session, "GET", f"{v1}/branches/{branch}/devices", token))["devices"]}
    for r in config.roster:
        if r.id in known:
            continue
        device: dict[str, Any] = {"id": r.id, "role": r.role, "public_key": r.public_key, "name": r.id}
        if r.numbers:
            device["numbers"] = f"{r.numbers[0]}-{r.numbers[1]}"
        await _call(session, "POST", f"{v1}/branches/{branch}/devices", token, device, ok=(201,))
    key = await _call(session, "GET", f"{v1}/public/hq-key", token)
    return {"public_key_b64": key["public_key_b64"]}


def hq_section(hq_url: str, public_key_b64: str, **extra: Any) -> str:
    """The `[hq]` TOML section a device config needs."""
    lines = ["[hq]", f'url = "{hq_url}"', f'public_key = "{public_key_b64}"']
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")  # JSON scalars are TOML scalars
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hq.enroll", description=__doc__.split("\n")[0])
    p.add_argument("--hq", required=True, help="HQ base URL")
    p.add_argument("--token", required=True, help="bearer token of an org admin (POST /api/v1/auth/tokens)")
    p.add_argument("--org", required=True, help="organization id the branch belongs to")
    p.add_argument("--hours", default="08:00-17:00", help="opening hours HH:MM-HH:MM")
    p.add_argument("--days", default="0-4", help="open weekdays, 0 = Monday, e.g. 0-4 or 0-5")
    p.add_argument("configs", nargs="+", type=Path, help="the branch's device configs (TOML)")
    args = p.parse_args(argv)
    try:
        configs = [load_config(c) for c in args.configs]
        opens, closes = args.hours.split("-")
        lo, hi = (int(x) for x in args.days.split("-"))
    except (ConfigError, ValueError) as err:
        print(f"hq.enroll: {err}", file=sys.stderr)
        return 2

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            return await register_branch(session, args.hq, args.token, args.org, configs[0],
                                         hours=(opens, closes), weekdays=range(lo, hi + 1))
    try:
        out = asyncio.run(run())
    except (EnrollError, aiohttp.ClientError, OSError) as err:
        print(f"hq.enroll: {err}", file=sys.stderr)
        return 1
    print(hq_section(args.hq, out["public_key_b64"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
