"""The README's "Running a device" block, run as written (bash, from the clone, on loopback):
a ticket issued at the kiosk's node reaches counter-1's node by replication, the three
screens come up on Xvfb, and HQ starts from the hq.toml the block writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.ui.test_ui_windows import xvfb  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- readme-device-section -->"


def device_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    after = text[text.index(MARKER) + len(MARKER):]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "no ```sh block after the marker"
    return match.group(1)


def json_objects(text: str) -> list[dict]:
    """Every JSON object printed on stdout (curl prints them without newlines)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        i = end
    return out


def test_the_readme_device_section_runs_as_written(xvfb: str, tmp_path: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "KIVY_HOME", "KIVY_NO_CONFIG")}
    env.update(HOME=str(home), DISPLAY=xvfb)
    script = "set -e\n" + device_block() + "\nsleep 2\n"  # the windows live a moment longer
    log, printed = tmp_path / "block.log", tmp_path / "block.out"
    # Its own session: the block's background jobs share its process group, stopped below.
    # Files, not pipes: the background jobs keep their stdout open after bash has finished.
    with log.open("wb") as err, printed.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=out, stderr=err,
                                start_new_session=True)
    try:
        proc.wait(timeout=240)
        text = printed.read_text(encoding="utf-8", errors="replace")
        assert proc.returncode == 0, log.read_text()[-3000:]
        objects = json_objects(text)
        issued = next(o for o in objects if o.get("label") and o.get("status") == "waiting")
        state = next(o for o in objects if "waiting" in o and "device" in o)
        assert state["device"]["id"] == "counter-1"
        # The kiosk's ticket reached the counter's node, waiting for counter 1 to call it.
        assert issued["id"] in [t["id"] for t in state["waiting"]], text[-2000:]
        assert any(c["id"] == "c1" and "general" in c["services"] for c in state["counters"])
        # Every background program of the block is still running (nothing died on start).
        rows = subprocess.run(["ps", "-ww", "-eo", "pgid=,args="], capture_output=True, text=True).stdout
        alive = "\n".join(row for row in rows.splitlines() if row.split(None, 1)[0] == str(proc.pid))
        for program in ("kiosk.toml", "display.toml", "counter-1.toml", "counter-2.toml",
                        "kiosk_ui", "display_ui", "counter_ui", "smartq-hq"):
            assert program in alive, (program, alive, log.read_text()[-3000:])
        assert (home / "smartq-branch" / "hq-data").is_dir()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        time.sleep(1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
