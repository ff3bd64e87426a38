"""The Raspberry Pi (arm64) image builds with the same recipe as the amd64 one: its root file
system, under qemu-user-static (opt-in, not in CI: SMARTQ_IMAGE_ARM64=1, since emulating arm64 package
scripts and pip on 2 cores takes long on a cold cache). Its size is printed and written to
the tmp dir's arm64.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.images.conftest import ARM64_TOOLS, REPO, need_image_host

pytestmark = [pytest.mark.slow, pytest.mark.image, pytest.mark.timeout(5400)]


@pytest.mark.skipif(os.environ.get("SMARTQ_IMAGE_ARM64") != "1", reason="opt-in: SMARTQ_IMAGE_ARM64=1")
def test_arm64_root_file_system_builds_for_the_raspberry_pi(tmp_path: Path) -> None:
    need_image_host(ARM64_TOOLS)
    out = tmp_path / "display-arm64.img"
    started = time.monotonic()
    subprocess.run(["bash", str(REPO / "images/build.sh"), "display", "arm64", str(out), "--rootfs-only"],
                   check=True, env={**os.environ, "PYTHON": sys.executable})
    root = Path(f"{out}.rootfs")
    size = int(subprocess.run(["du", "-sm", "--apparent-size", str(root)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    report = {"rootfs_mib": size, "build_s": round(time.monotonic() - started, 1)}
    (tmp_path / "arm64.json").write_text(json.dumps(report))
    print(f"\narm64 root file system: {json.dumps(report)}")
    # The Pi's boot files from Debian's raspi-firmware, with our root and overlay settings.
    cmdline = (root / "boot/firmware/cmdline.txt").read_text()
    assert "root=LABEL=SQROOT" in cmdline and "overlayroot=tmpfs" in cmdline
    assert (root / "boot/firmware/config.txt").exists()
    assert list((root / "boot/firmware").glob("bcm2711-rpi-4-b.dtb"))
    # The venv holds arm64 builds of the compiled dependencies.
    venvs = root / "usr/lib/smartq/venvs"
    venv = venvs / (venvs / "BUILTIN").read_text().strip()
    assert venv.is_dir()
    kivy_so = list((venv / "lib/python3.11/site-packages/kivy").rglob("*.so"))
    assert kivy_so and "aarch64" in subprocess.run(["file", str(kivy_so[0])], capture_output=True, text=True).stdout
    subprocess.run(["rm", "-rf", str(root)], check=True)
