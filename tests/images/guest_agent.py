"""TEST BUILD ONLY: runs the image test's commands inside the guest.

Copied into test images (never production ones) as /usr/lib/smartq-test/agent.py and started
by smartq-test-agent.service. It reads one JSON request per line from a virtio-serial port,
``{"id": N, "cmd": "...", "timeout": S}``, runs ``cmd`` with bash as root and answers
``{"id": N, "rc": exit status, "out": stdout and stderr}``. A virtio port rather than a shell
on a serial tty: no echo, prompts, line discipline or baud quirks between the test and bash.
``{"id": N, "http": {"method", "path", "body"}}`` asks the node's local API on 127.0.0.1:8401
(where a real device's node listens; no port is forwarded to the host) and answers
``{"id": N, "status": HTTP status or 0, "body": JSON or null, "error": text}``.
Standard library only: it runs on the image's system Python.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request


def http(request: dict) -> dict:
    body = request.get("body")
    req = urllib.request.Request(f"http://127.0.0.1:8401{request['path']}", method=request.get("method", "GET"),
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=float(request.get("timeout", 10))) as resp:
            return {"status": resp.status, "body": json.loads(resp.read() or b"null")}
    except urllib.error.HTTPError as err:
        try:
            return {"status": err.code, "body": json.loads(err.read() or b"null")}
        except ValueError:
            return {"status": err.code, "body": None}
    except (OSError, ValueError) as err:
        return {"status": 0, "body": None, "error": str(err)}


def serve(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.5)
    fd = os.open(path, os.O_RDWR)
    pending = b""
    while True:
        data = os.read(fd, 65536)
        if not data:  # the host side is not connected (yet, or between boots' test fixtures)
            time.sleep(0.2)
            continue
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                request = json.loads(line)
                ident = request["id"]
                command = request.get("cmd")
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if isinstance(request.get("http"), dict):
                answer = (json.dumps({"id": ident, **http(request["http"])}) + "\n").encode()
                try:
                    os.write(fd, answer)
                except OSError:
                    pass
                continue
            if not isinstance(command, str):
                continue
            try:
                done = subprocess.run(["/bin/bash", "-c", command], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      timeout=float(request.get("timeout", 60)))
                rc, out = done.returncode, done.stdout.decode("utf-8", "replace")
            except subprocess.TimeoutExpired:
                rc, out = 124, f"timed out: {command}"
            answer = (json.dumps({"id": ident, "rc": rc, "out": out}) + "\n").encode()
            try:
                os.write(fd, answer)
            except OSError:
                pass  # the host went away; it will ask again


if __name__ == "__main__":
    serve(sys.argv[1])
