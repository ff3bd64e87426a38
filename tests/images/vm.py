"""A SmartQ image booted headless in QEMU, for the image tests.

The guest has QEMU user networking with restrict=on (DHCP works, it reaches nothing outside)
and nothing forwarded: its node listens on 127.0.0.1 as on a real device. The test build adds
one test-only unit, a command agent (guest_agent.py) on a virtio-serial port, which runs the
test's commands and asks the node's local API; the kernel console goes to a log file (ttyS0).
Production images have neither (images/build.sh adds --extra files to test builds only).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

OVMF = next((p for p in ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd") if os.path.exists(p)), None)


class GuestAgent:
    """Runs commands in the guest through the test agent (tests/images/guest_agent.py) on a
    virtio-serial port, and returns (exit status, output)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.lines: list[dict] = []
        self.cond = threading.Condition()
        self.count = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                try:
                    answer = json.loads(line)
                except ValueError:
                    continue
                with self.cond:
                    self.lines.append(answer)
                    self.cond.notify_all()

    def _ask(self, command: str, timeout: float, http: dict | None = None) -> dict | None:
        self.count += 1
        ident = self.count
        ask = {"id": ident, "http": http} if http else {"id": ident, "cmd": command, "timeout": timeout}
        self.sock.sendall((json.dumps(ask) + "\n").encode())
        deadline = time.monotonic() + timeout + 5
        with self.cond:
            while True:
                for answer in self.lines:
                    if answer.get("id") == ident:
                        self.lines.remove(answer)
                        return answer
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ask("true", 5) is not None:
                return
        raise TimeoutError("the guest's test agent never answered")

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        answer = self._ask(command, timeout)
        if answer is None:
            raise TimeoutError(f"guest: no answer to {command!r} within {timeout} s")
        return int(answer["rc"]), str(answer["out"]).strip()

    def check(self, command: str, timeout: float = 60) -> str:
        rc, out = self.run(command, timeout)
        if rc != 0:
            raise AssertionError(f"guest: {command!r} exited {rc}: {out}")
        return out

    def http(self, method: str, path: str, body: dict | None, timeout: float) -> dict:
        answer = self._ask("", timeout, http={"method": method, "path": path, "body": body, "timeout": timeout})
        if answer is None:
            raise TimeoutError(f"guest: no answer to {method} {path} within {timeout} s")
        return answer

    def close(self) -> None:
        self.sock.close()


class Machine:
    """One QEMU guest booted from a raw disk image."""

    def __init__(self, disk: Path, workdir: Path) -> None:
        self.disk = disk
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.shell: GuestAgent | None = None
        self.boots = 0

    @property
    def kvm(self) -> bool:
        """KVM when it can run a stock kernel: not under kvm-pvm (a nested KVM that runs only
        PVM-aware guest kernels; Debian's hang at boot). SMARTQ_IMAGE_ACCEL=kvm|tcg decides."""
        wanted = os.environ.get("SMARTQ_IMAGE_ACCEL")
        if wanted:
            return wanted == "kvm"
        return os.access("/dev/kvm", os.R_OK | os.W_OK) and not os.path.exists("/sys/module/kvm_pvm")

    def start(self) -> None:
        self.boots += 1
        self.console = self.workdir / f"console-{self.boots}.log"
        self.shell_sock = self.workdir / "agent.sock"
        self.monitor_sock = self.workdir / "monitor.sock"
        for p in (self.shell_sock, self.monitor_sock):
            p.unlink(missing_ok=True)
        # arch-capabilities off: nested KVM (CI machines) refuses that MSR.
        accel = ["-accel", "kvm", "-cpu", "host,-arch-capabilities"] if self.kvm else ["-accel", "tcg,thread=multi", "-cpu", "max"]
        cmd = [
            "qemu-system-x86_64", "-machine", "q35", *accel, "-smp", "2", "-m", "1536",
            "-bios", str(OVMF), "-nodefaults", "-display", "none", "-vga", "std",
            "-drive", f"file={self.disk},format=raw,if=virtio,cache=writeback",
            "-netdev", "user,id=n0,restrict=on",
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "i6300esb", "-device", "qemu-xhci,id=xhci",
            "-serial", f"file:{self.console}",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=agent,path={self.shell_sock},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=smartq.test",
            "-monitor", f"unix:{self.monitor_sock},server=on,wait=off",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / f"qemu-{self.boots}.log", "wb"))
        deadline = time.monotonic() + 30
        while not self.shell_sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qemu did not start: {(self.workdir / f'qemu-{self.boots}.log').read_text()}")
            time.sleep(0.1)
        self.shell = GuestAgent(self.shell_sock)
        try:
            self.shell.ready(timeout=300 if self.kvm else 900)
        except BaseException:
            self.power_off()  # a fixture that fails in setup gets no teardown: leave no QEMU behind
            raise

    def monitor(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.monitor_sock))
            s.settimeout(10)
            s.sendall(command.encode() + b"\n")
            time.sleep(0.5)
            try:
                return s.recv(65536).decode("utf-8", "replace")
            except (TimeoutError, OSError):
                return ""

    def power_off(self) -> None:
        """Pull the plug: QEMU quits at once, the guest gets no shutdown."""
        if self.shell:
            self.shell.close()
            self.shell = None
        if self.proc and self.proc.poll() is None:
            try:
                self.monitor("quit")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # --- the node's local API on the guest's 127.0.0.1:8401, through the agent ---------------
    def http(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
        assert self.shell
        answer = self.shell.http(method, path, body, timeout)
        if not answer["status"]:
            raise ConnectionError(f"guest: {method} {path}: {answer.get('error')}")
        return int(answer["status"]), answer["body"]

    def wait_healthy(self, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                status, body = self.http("GET", "/healthz", timeout=5)
                if status == 200:
                    return body
                last = (status, body)
            except (OSError, ValueError) as err:
                last = err
            time.sleep(1)
        raise TimeoutError(f"/healthz never answered 200 (last: {last})")

    def wait_for(self, command: str, timeout: float = 120) -> str:
        """Repeat a guest command until it exits 0; returns its output."""
        assert self.shell
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            rc, out = self.shell.run(command)
            if rc == 0:
                return out
            time.sleep(1)
        raise TimeoutError(f"guest: {command!r} never succeeded; last output: {out}")
