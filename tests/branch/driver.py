"""Drive one node's local API from inside its namespace: many requests, one process.

    python driver.py URL OP JSON-ARGS      -> prints one JSON line with the result

Ops:
  issue     {"n", "services": [..], "phone"?}       issue n tickets (round robin over services)
  serve     {"counter", "idle_s", "max"}            open the counter, then call-next/start/complete
                                                    until call-next answered 204 for idle_s seconds
  call      {"counter", "ticket"}                   call one ticket at a counter
  act       {"counter", "ticket", "action", "body"?} start/complete/transfer... (status and body back)
  seq       {"requests": [[method, path, body]..]} several requests in order, [[status, body]..] back
  snapshot  {"ids": [..]}                           GET each ticket and /api/v1/state: {"tickets", "state"}
  random    {"counter", "n", "seed", "services"}    n random counter actions (call-next, start, complete,
                                                    no-show, recall, requeue, transfer, serve); returns
                                                    every answer and the acknowledged completions
  open      {"counter"}
  tickets   {"ids": [..]}                           GET each ticket
  state     {}                                      GET /api/v1/state
  calls     {"counter", "n"}                        n call-nexts, each with its send time
  toggle    {"counter", "n", "concurrency"}         n counter status events (pause/open)
  stream    {"seconds"}                             read /api/v1/stream, one JSON line per event
                                                    (with the monotonic receive time) until killed
                                                    or `seconds` passed
(A namespace address is not reachable from the test process; this runs inside.)
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import aiohttp


async def request(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


async def issue(session: aiohttp.ClientSession, base: str, n: int, services: list[str],
                phone: str | None = None) -> dict[str, Any]:
    issued, errors = [], []
    for i in range(n):
        body_in: dict[str, Any] = {"service": services[i % len(services)]}
        if phone:
            body_in["phone"] = phone
        status, body = await request(session, "POST", f"{base}/api/v1/tickets", body_in)
        if status == 201:
            issued.append({"id": body["id"], "label": body["label"]})
        else:
            errors.append([status, body])
    return {"issued": issued, "errors": errors}


async def serve(session: aiohttp.ClientSession, base: str, counter: str, idle_s: float, limit: int) -> dict[str, Any]:
    await request(session, "POST", f"{base}/api/v1/counters/{counter}/open")
    served, lost, errors = [], [], []
    idle_since = None
    while len(served) < limit:
        status, body = await request(session, "POST", f"{base}/api/v1/counters/{counter}/call-next")
        if status == 204:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > idle_s:
                break
            await asyncio.sleep(0.05)
            continue
        idle_since = None
        if status != 200:
            errors.append([status, body])
            await asyncio.sleep(0.05)
            continue
        ticket = body["id"]
        ok = True
        for action in ("start", "complete"):
            status, body = await request(session, "POST", f"{base}/api/v1/counters/{counter}/tickets/{ticket}/{action}")
            if status != 200:
                ok = False
                # 409: another counter took it before the news arrived (a race the fold resolves)
                (lost if status == 409 else errors).append([ticket, action, status, body])
                break
        if ok:
            served.append(ticket)
    return {"served": served, "lost": lost, "errors": errors}


async def random_actions(session: aiohttp.ClientSession, base: str, counter: str, n: int, seed: int,
                         services: list[str]) -> dict[str, Any]:
    """What a busy counter does, at random (seeded): acts on the ticket it holds, or calls."""
    rnd = random.Random(seed)
    await request(session, "POST", f"{base}/api/v1/counters/{counter}/open")
    answers, completed = [], []
    for _ in range(n):
        status, view = await request(session, "GET", f"{base}/api/v1/counters/{counter}")
        current = view.get("current") if status == 200 else None
        if current is None or rnd.random() < 0.15:
            op = rnd.choice(["call-next", "call-next", "serve"])
        else:
            op = rnd.choices(["start", "complete", "no-show", "recall", "requeue", "transfer"], [4, 4, 1, 1, 1, 1])[0]
        if op in ("call-next", "serve"):
            status, body = await request(session, "POST", f"{base}/api/v1/counters/{counter}/call-next")
            answers.append([op, None, status])
            if op == "serve" and status == 200:
                for action in ("start", "complete"):
                    status, done = await request(
                        session, "POST", f"{base}/api/v1/counters/{counter}/tickets/{body['id']}/{action}")
                    answers.append([action, body["id"], status])
                    if status != 200:
                        break
                    if action == "complete" and done["status"] == "completed":
                        completed.append(body["id"])
            continue
        ticket = current["id"]
        payload = {"to_service": rnd.choice(services)} if op == "transfer" else None
        status, body = await request(session, "POST", f"{base}/api/v1/counters/{counter}/tickets/{ticket}/{op}", payload)
        answers.append([op, ticket, status])
        if op == "complete" and status == 200 and body["status"] == "completed":
            completed.append(ticket)
    return {"answers": answers, "completed": completed}


async def calls(session: aiohttp.ClientSession, base: str, counter: str, n: int) -> dict[str, Any]:
    """n sequential call-nexts; each with the monotonic time it was sent (CLOCK_MONOTONIC is
    shared by every network namespace, so the display's stream times compare directly)."""
    await request(session, "POST", f"{base}/api/v1/counters/{counter}/open")
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        status, body = await request(session, "POST", f"{base}/api/v1/counters/{counter}/call-next")
        if status != 200:
            break
        out.append([body["id"], t0, time.monotonic()])
        await asyncio.sleep(0.005)
    return {"calls": out}


async def toggle(session: aiohttp.ClientSession, base: str, counter: str, n: int, concurrency: int) -> dict[str, Any]:
    """n counter status events (pause/open alternating), `concurrency` requests in flight."""
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        for i in range(k, n, concurrency):
            action = "pause" if i % 2 == 0 else "open"
            status, _ = await request(session, "POST", f"{base}/api/v1/counters/{counter}/{action}")
            done += status == 200

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    await request(session, "POST", f"{base}/api/v1/counters/{counter}/open")
    return {"events": done + 1}


async def stream(session: aiohttp.ClientSession, base: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with session.get(f"{base}/api/v1/stream", timeout=aiohttp.ClientTimeout(total=None)) as resp:
        event = None
        while time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(resp.content.readline(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if not line:
                break
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: "):
                print(json.dumps({"t": time.monotonic(), "event": event, "data": json.loads(text[6:])}), flush=True)


async def main(base: str, op: str, args: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        if op == "issue":
            return await issue(session, base, args["n"], args["services"], args.get("phone"))
        if op == "serve":
            return await serve(session, base, args["counter"], args.get("idle_s", 3.0), args.get("max", 10**6))
        if op == "calls":
            return await calls(session, base, args["counter"], args["n"])
        if op == "toggle":
            return await toggle(session, base, args["counter"], args["n"], args.get("concurrency", 4))
        if op == "open":
            return await request(session, "POST", f"{base}/api/v1/counters/{args['counter']}/open")
        if op == "call":
            return await request(session, "POST", f"{base}/api/v1/counters/{args['counter']}/tickets/{args['ticket']}/call")
        if op == "act":
            return await request(session, "POST",
                                 f"{base}/api/v1/counters/{args['counter']}/tickets/{args['ticket']}/{args['action']}",
                                 args.get("body"))
        if op == "seq":
            return [await request(session, method, f"{base}{path}", body) for method, path, body in args["requests"]]
        if op == "snapshot":
            tickets = {t: await request(session, "GET", f"{base}/api/v1/tickets/{t}") for t in args["ids"]}
            return {"tickets": tickets, "state": await request(session, "GET", f"{base}/api/v1/state")}
        if op == "random":
            return await random_actions(session, base, args["counter"], args["n"], args["seed"], args["services"])
        if op == "tickets":
            out = {}
            for ticket in args["ids"]:
                out[ticket] = await request(session, "GET", f"{base}/api/v1/tickets/{ticket}")
            return out
        if op == "state":
            return await request(session, "GET", f"{base}/api/v1/state")
        if op == "stream":
            await stream(session, base, args.get("seconds", 600))
            return {"done": True}
        raise SystemExit(f"unknown op {op}")


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1].rstrip("/"), sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
    print(json.dumps({"result": result}), flush=True)
