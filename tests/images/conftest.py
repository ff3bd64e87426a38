from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the image tests need on the host, installed by the tests themselves (not by `make
# system-deps`): building an image is this package's business only.
IMAGE_TOOLS = ["mmdebstrap", "qemu-system-x86", "ovmf", "grub-efi-amd64-bin", "mtools", "dosfstools",
               "fdisk", "e2fsprogs"]
ARM64_TOOLS = ["qemu-user-static", "binfmt-support", "arch-test"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds an appliance image and boots it in QEMU "
                            "(root, Debian; opt-in: SMARTQ_IMAGE_TESTS=1, SMARTQ_IMAGE_ARM64=1 adds arm64)")


def need_image_host(extra: list[str] | None = None) -> None:
    """Skip unless this host can build images; install the Debian tools the build needs."""
    # Opt-in for now: on this project's machines KVM cannot boot Debian (kvm-pvm), so the boot
    # test runs under TCG, and with the build it takes longer than CI's suite budget allows.
    if os.environ.get("SMARTQ_IMAGE_TESTS") != "1":
        pytest.skip("opt-in: SMARTQ_IMAGE_TESTS=1 (builds and boots an image; root, Debian)")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("building an image needs root on Debian (mmdebstrap --mode=root)")
    subprocess.run(["bash", str(REPO / "scripts/system-deps.sh"), *IMAGE_TOOLS, *(extra or [])], check=True)
    missing = [t for t in ("mmdebstrap", "qemu-system-x86_64", "mcopy", "grub-mkstandalone") if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing tools: {missing}")
