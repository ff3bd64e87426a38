"""The [hardware] section: how a node builds its devices, and clear errors for bad config.

Also the helpers the other test_node_* files share: a sample branch whose device config gets
a [hardware] section of the test's choosing, and polling a node's state.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ConfigError, load_config
from appliance.devices import HardwareService, counter_number, from_config
from appliance.sample import write_sample
from tests.appliance.procs import NodeProcess
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def sample_device(directory: Path, device: str, hardware: str | None = None, *,
                  roster_numbers: dict[str, str] | None = None) -> Path:
    """`smartq init` into `directory`, then replace `device`'s [hardware] section (None: keep the sample's).

    `roster_numbers` rewrites ticket ranges in this device's roster (e.g. to let a display issue)."""
    if not (directory / f"{device}.toml").exists():
        write_sample(directory)
    path = directory / f"{device}.toml"
    text = path.read_text()
    if hardware is not None:
        start = text.find("\n[hardware")
        end = text.index("\n[[services]]")
        text = (text[:start] if start >= 0 else text[:end]) + "\n" + hardware.strip() + "\n" + text[end:]
    for dev, numbers in (roster_numbers or {}).items():
        text, n = re.subn(rf'(\[\[roster\]\]\nid = "{dev}"\nrole = "\w+"\npublic_key = "[^"]+"\n)(numbers = "[^"]+"\n)?',
                          lambda m: m[1] + f'numbers = "{numbers}"\n', text)
        assert n == 1, dev
    path.write_text(text)
    return path


def start_node(config: Path, tmp_path: Path, name: str) -> NodeProcess:
    return NodeProcess(config, log_path=tmp_path / f"{name}.log")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def hardware(node: NodeProcess) -> dict[str, Any]:
    status, state = node.request("GET", "/api/v1/state")
    assert status == 200, state
    return state["hardware"]


# -- tests ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample")
    write_sample(path)
    return path


def test_sample_configs_give_every_role_its_fake_devices(sample_dir: Path) -> None:
    kiosk = from_config(load_config(sample_dir / "kiosk.toml"))
    display = from_config(load_config(sample_dir / "display.toml"))
    counter = from_config(load_config(sample_dir / "counter-2.toml"))
    assert isinstance(kiosk, HardwareService) and kiosk.spooler is not None and kiosk.spooler.dummy is not None
    assert kiosk.keypad is None and kiosk.sign is None and kiosk.announcer is None
    assert display is not None and display.announcer is not None and display.spooler is None
    assert counter is not None and counter.keypad is not None and counter.sign is not None


@pytest.mark.parametrize("hardware, message", [
    ('[hardware.printer]\nbackend = "laser"', "backend must be one of"),
    ('[hardware.printer]\nbackend = "network"', "missing required key 'host'"),
    ('[hardware.printer]\nbackend = "dummy"\nstatus_url = "https://q/t/{id}"', "set [hq] public_url"),
    ('[hardware.printer]\nbackend = "dummy"\nfooter = 3', "hardware.printer.footer"),
    ('[hardware.printer]\nbackend = "dummy"\npaper = "A4"', "unknown key(s): paper"),
    ('[hardware.keypad]\nbackend = "fake"', "hardware.keypad: this device serves no counters"),
    ('[hardware.announcer]\nsink = "silent"\nengine = "none"\nlanguages = ["xx"]', "languages not supported: xx"),
    ('[hardware.announcer]\nsink = "silent"\nengine = "none"\nstale_after_s = 0', "stale_after_s"),
    ('[hardware.scanner]\nbackend = "usb"', "hardware: unknown section(s) ['scanner']"),
    ('[hardware]\nprinter = "yes"', "hardware.printer: expected a table"),
])
def test_bad_hardware_config_is_a_config_error_naming_the_key(tmp_path: Path, sample_dir: Path, hardware: str,
                                                             message: str) -> None:
    import shutil

    shutil.copytree(sample_dir, tmp_path / "b")
    config = load_config(sample_device(tmp_path / "b", "kiosk", hardware))
    with pytest.raises(ConfigError) as err:
        from_config(config)
    assert message in str(err.value)


def test_a_node_with_bad_hardware_config_refuses_to_start_and_says_why(tmp_path: Path, sample_dir: Path) -> None:
    import shutil

    shutil.copytree(sample_dir, tmp_path / "b")
    path = sample_device(tmp_path / "b", "kiosk", '[hardware.printer]\nbackend = "network"\nhost = "p"\nport = "x"')
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "node", "--config", str(path), "--listen",
                           "127.0.0.1:0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "configuration error" in proc.stderr and "port must be an integer" in proc.stderr


def test_no_hardware_section_means_no_service(sample_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(sample_dir, tmp_path / "b")
    text = (tmp_path / "b" / "kiosk.toml").read_text()
    start, end = text.find("\n[hardware"), text.index("\n[[services]]")
    (tmp_path / "b" / "kiosk.toml").write_text(text[:start] + text[end:])
    assert from_config(load_config(tmp_path / "b" / "kiosk.toml")) is None


def test_the_announced_counter_is_the_number_in_its_name() -> None:
    assert counter_number("Counter 3") == "3"
    assert counter_number("Guichet 12") == "12"
    assert counter_number("Cashier") == "Cashier"
