"""Start real `smartq node` processes in the namespaces of a `Network`, and talk HTTP to them.

A namespace address cannot be reached from the test process (that is the point of the
isolation), so requests run as a short Python client *inside* the target namespace.

    configs = init_branch(tmp_path / "branch", branch_id="b1")        # smartq init
    node = spawn_node(lan, host, configs["kiosk"], python=python, env=python_env)
    status, body = http_json(lan, host, node.url + "/api/v1/state", python=python)
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .netns import Host, Network, Proc

_CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, raw = response.status, response.read()
except urllib.error.HTTPError as err:
    status, raw = err.code, err.read()
print(json.dumps({"status": status, "body": raw.decode("utf-8", "replace")}))
"""


@dataclass
class NodeProc:
    """A `smartq node` running in a namespace; `url` is its local API base (inside that namespace)."""

    proc: Proc
    host: Host
    url: str


def init_branch(directory: Path, *, branch_id: str = "b1") -> dict[str, Path]:
    """`smartq init DIR`: one TOML per device; returns {device file stem: path}."""
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "init", str(directory), "--branch-id", branch_id],
        capture_output=True, text=True, check=True, timeout=60,
    )
    paths = [Path(line) for line in result.stdout.split() if line.endswith(".toml")]
    return {path.stem: path for path in paths}


def spawn_node(
    lan: Network, host: Host, config: Path, *, python: str, env: dict[str, str],
    listen: str | None = None, role: str | None = None, timeout: float = 30,
) -> NodeProc:
    """Start `smartq node --config CONFIG` in `host` and wait for its SMARTQ_LISTENING line."""
    argv = [python, "-m", "appliance.cli", "node", "--config", str(config)]
    if listen:
        argv += ["--listen", listen]
    if role:
        argv += ["--role", role]
    proc = lan.spawn(host, argv, env=env, name=f"node-{host.name}", cwd=config.parent)

    def listening(_: list[Any]) -> str | None:
        for line in proc.stdout().splitlines():
            if line.startswith("SMARTQ_LISTENING "):
                return line.split(" ", 1)[1].strip().rstrip("/")
        return None

    url = proc.wait_for(listening, timeout, "SMARTQ_LISTENING")
    return NodeProc(proc, host, url)


def http_json(
    lan: Network, host: Host, url: str, *, python: str, method: str = "GET", body: Any = None,
) -> tuple[int, Any]:
    """One HTTP request from inside `host`'s namespace; returns (status, parsed JSON or text)."""
    payload = "" if body is None else json.dumps(body)
    result = lan.run(host, [python, "-c", _CLIENT, method, url, payload], timeout=30)
    reply = json.loads(result.stdout)
    try:
        return reply["status"], json.loads(reply["body"])
    except ValueError:
        return reply["status"], reply["body"]
