"""avahi-daemon confined to one test namespace, with its own private D-Bus.

Nothing touches the machine's avahi or system bus: a private dbus-daemon listens on a socket in
the test's tmp dir; avahi-daemon runs in a host namespace (so it only sees that namespace's
``eth0``) inside its own mount namespace, where ``/run`` (pid file, legacy socket) and
``/etc/avahi/services`` are bind-mounted from the tmp dir. avahi clients (`avahi-browse`,
`avahi-publish`) reach it through ``DBUS_SYSTEM_BUS_ADDRESS``.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .netns import Host, Network, Proc

DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONFIG = """[server]
host-name={host_name}
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
disallow-other-stacks=no
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
disable-publishing=no
publish-addresses=yes
publish-hinfo=no
publish-workstation=no
publish-domain=no

[reflector]
enable-reflector=no
"""


def avahi_missing() -> str | None:
    for tool in ("avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@dataclass
class Avahi:
    """A running confined avahi-daemon and how to reach it."""

    lan: Network
    host: Host
    bus_address: str
    dbus: Proc
    daemon: Proc

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}

    def browse(self, service_type: str, timeout: float = 10) -> list[list[str]]:
        """`avahi-browse -rtp TYPE`: resolved entries ('=' lines) split into fields."""
        result = self.lan.run(
            self.host, ["avahi-browse", "-rtp", service_type], env=self.env, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"avahi-browse failed ({result.returncode}): {result.stderr}")
        return [parse_browse_line(line) for line in result.stdout.splitlines() if line.startswith("=")]

    def publish(self, name: str, service_type: str, port: int, txt: dict[str, str]) -> Proc:
        """`avahi-publish -s NAME TYPE PORT k=v...`, running until the network is closed."""
        argv = ["avahi-publish", "-s", name, service_type, str(port), *(f"{k}={v}" for k, v in txt.items())]
        return self.lan.spawn(self.host, argv, env=self.env, name=f"avahi-publish-{self.host.name}-{_label(name)}")


def _label(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)[:40]


def parse_browse_line(line: str) -> list[str]:
    """Split an avahi-browse -p line on ';' (it escapes ';' inside fields as \\059)."""
    return line.split(";")


def parse_txt_field(field: str) -> dict[str, str]:
    """'"pv=1" "id=x"' -> {"pv": "1", "id": "x"} (avahi-browse -p TXT field)."""
    out = {}
    for item in shlex.split(field):
        key, _, value = item.partition("=")
        out[key] = value
    return out


def start_avahi(lan: Network, host: Host, workdir: Path, timeout: float = 15) -> Avahi:
    """Start a private dbus-daemon and a confined avahi-daemon in `host`; wait until both serve."""
    workdir.mkdir(parents=True, exist_ok=True)
    socket = workdir / "bus.sock"
    (workdir / "dbus.conf").write_text(DBUS_CONFIG.format(socket=socket))
    (workdir / "avahi-daemon.conf").write_text(
        AVAHI_CONFIG.format(host_name=f"sqavahi-{host.name}", interface=host.ifname)
    )
    (workdir / "run").mkdir(exist_ok=True)
    (workdir / "services").mkdir(exist_ok=True)
    dbus = lan.spawn(
        host, ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={workdir / 'dbus.conf'}", "--print-address"],
        name=f"dbus-{host.name}",
    )
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if not dbus.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"private dbus-daemon did not start: {dbus.stderr()}")
        time.sleep(0.05)
    bus_address = f"unix:path={socket}"
    inner = (
        f"mount --bind {shlex.quote(str(workdir / 'run'))} /run && "
        f"mount --bind {shlex.quote(str(workdir / 'services'))} /etc/avahi/services && "
        f"exec avahi-daemon --no-drop-root --no-chroot --no-rlimits --no-proc-title --debug "
        f"-f {shlex.quote(str(workdir / 'avahi-daemon.conf'))}"
    )
    daemon = lan.spawn(
        host, ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
        env={"DBUS_SYSTEM_BUS_ADDRESS": bus_address}, name=f"avahi-daemon-{host.name}",
    )
    avahi = Avahi(lan, host, bus_address, dbus, daemon)
    while "Server startup complete" not in daemon.stderr():
        if not daemon.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"avahi-daemon did not start:\n{daemon.stderr()[-4000:]}")
        time.sleep(0.1)
    return avahi
