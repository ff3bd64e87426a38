# SmartQ — one Makefile for set-up, tests, the demo and the benchmarks.
#   make test    set everything up (apt packages when root on Debian, the virtualenv) and run the suite
#   make demo    set everything up and run a whole branch plus HQ on this machine
#   make bench   run the benchmarks; figures land in bench/results/*.json
#   make image   build a device image: make image ROLE=kiosk ARCH=amd64 [OUT=file.img] (root; docs/images.md)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

# Debian packages the suite and the demo use (real ptys, speech, namespaces, Xvfb, mDNS peers;
# the last line: building the amd64 appliance image and booting it in QEMU, tests/images).
APT_PACKAGES := python3-venv python3-dev xvfb xauth socat espeak-ng sox iproute2 curl \
                avahi-daemon avahi-utils dbus libnss-mdns zbar-tools tcpdump \
                libgl1 libgl1-mesa-dri libegl1 libmtdev1 libsdl2-2.0-0 xclip \
                chromium fonts-dejavu-core nginx postgresql \
                git mmdebstrap qemu-system-x86 ovmf grub-efi-amd64-bin mtools dosfstools fdisk e2fsprogs

.PHONY: test test-fast demo bench system-deps venv clean image

$(VENV)/.stamp: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lan,hardware,ui,hq]'
	touch $@

venv: $(VENV)/.stamp

# Installs only what is missing, and never lets a package start a service on the host
# (avahi-daemon runs only inside test namespaces, with its own dbus).
system-deps:
	@bash scripts/system-deps.sh $(APT_PACKAGES)

test: system-deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: system-deps venv
	$(PY) -m appliance.demo

bench: system-deps venv
	$(PY) -m bench

# A bootable appliance image from Debian's packages (images/build.sh; needs root and the tools
# listed in docs/images.md). ARCH=arm64 is for the Raspberry Pi 4/5.
ROLE ?= kiosk
ARCH ?= amd64
OUT  ?= smartq-$(ROLE)-$(ARCH).img
image: venv
	bash scripts/system-deps.sh mmdebstrap grub-efi-amd64-bin mtools dosfstools fdisk e2fsprogs \
	    $(if $(filter arm64,$(ARCH)),qemu-user-static binfmt-support arch-test)
	PYTHON=$(PY) bash images/build.sh $(ROLE) $(ARCH) $(OUT)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis bench/results
