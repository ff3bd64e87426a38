#!/bin/sh
# mmdebstrap setup hook: files that must be in place before Debian's packages install.
#   setup.sh ROOT ROLE ARCH
set -eu
ROOT=$1 ARCH=$3
mkdir -p "$ROOT/etc/default" "$ROOT/boot/firmware"
if [ "$ARCH" = arm64 ]; then
    # raspi-firmware writes /boot/firmware/cmdline.txt from these when the kernel installs.
    cat > "$ROOT/etc/default/raspi-firmware" <<'CONF'
# SmartQ: root by label, read-only under an overlay (docs/images.md)
ROOTPART=LABEL=SQROOT
CONSOLES="ttyS1,115200 tty1"
CONF
    echo "ro overlayroot=tmpfs:recurse=0 rootwait quiet loglevel=3 vt.global_cursor_default=0 consoleblank=0" \
        > "$ROOT/etc/default/raspi-extra-cmdline"
    printf '# SmartQ: the hardware watchdog\ndtparam=watchdog=on\n' > "$ROOT/etc/default/raspi-firmware-custom"
fi
