#!/usr/bin/env bash
# Builds a SmartQ appliance image from Debian's packages (bookworm) with mmdebstrap.
#
#   images/build.sh ROLE ARCH OUT [options]
#     ROLE   kiosk | display | counter
#     ARCH   amd64 (UEFI PCs, QEMU) | arm64 (Raspberry Pi 4/5, through qemu-user-static)
#     OUT    the disk image to write (raw; flash it with dd or bmaptool), e.g. smartq-kiosk-amd64.img
#   options:
#     --rootfs-only          stop after the root file system (OUT becomes OUT.rootfs/, no disk image)
#     --extra DIR            copy DIR's files over the root file system (test builds only)
#     --extra-packages "P Q" more Debian packages (test builds only, e.g. xvfb)
#     --update-key FILE      the update public key (base64url Ed25519, images/update.py keygen);
#                            default $SMARTQ_UPDATE_PUBKEY; a build without one gets a dev key
#
# Needs root, mmdebstrap, mkfs.ext4 (-d), mkfs.vfat + mtools, sfdisk, grub-efi-amd64-bin (amd64),
# qemu-user-static + binfmt-support (arm64 on an x86 host). No loop devices, no mounts of the image.
# Downloads are cached in $SMARTQ_IMAGE_CACHE (default /var/cache/smartq-images): Debian packages
# under apt/ARCH, Python wheels under wheels/ARCH. A warm cache needs no network for Python and
# only the package index for Debian.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
ROLE=$1 ARCH=$2 OUT=$3; shift 3
ROOTFS_ONLY=0 EXTRA_DIR="" EXTRA_PACKAGES="" UPDATE_PUBKEY=${SMARTQ_UPDATE_PUBKEY:-}
while [ $# -gt 0 ]; do
    case $1 in
        --rootfs-only) ROOTFS_ONLY=1 ;;
        --extra) EXTRA_DIR=$(realpath "$2"); shift ;;
        --extra-packages) EXTRA_PACKAGES=$2; shift ;;
        --update-key) UPDATE_PUBKEY=$2; shift ;;
        *) echo "build.sh: unknown option $1" >&2; usage ;;
    esac
    shift
done
case $ROLE in kiosk|display|counter) ;; *) echo "build.sh: ROLE must be kiosk, display or counter" >&2; exit 2 ;; esac
case $ARCH in amd64|arm64) ;; *) echo "build.sh: ARCH must be amd64 or arm64" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (mmdebstrap --mode=root, device files in the image)" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${SMARTQ_IMAGE_CACHE:-/var/cache/smartq-images}
MIRROR=${SMARTQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
VERSION=$("$PYTHON" -c 'import configparser,sys; c=configparser.ConfigParser(); c.read(sys.argv[1]); print(c["metadata"]["version"])' "$REPO/setup.cfg")
# The image's version: the project's version plus the commit, so two builds can be told apart.
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)

OUT=$(realpath -m "$OUT")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smartq-image.XXXXXX")
ROOT=$WORK/root
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$CACHE/apt/$ARCH" "$CACHE/wheels/$ARCH"
step() { printf '[build.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- the update key baked into the image (its private half signs update bundles) ---------------
if [ -z "$UPDATE_PUBKEY" ]; then
    UPDATE_PUBKEY=$CACHE/dev-update-key.pub
    if [ ! -s "$UPDATE_PUBKEY" ]; then
        "$PYTHON" "$HERE/update.py" keygen "$CACHE/dev-update-key.pem" > "$UPDATE_PUBKEY"
    fi
    step "WARNING: no --update-key: using the development update key $UPDATE_PUBKEY (not for production)"
fi

# --- 1. the wheelhouse: the project and every dependency, cp311 wheels for ARCH -----------------
step "wheelhouse for $ARCH"
"$HERE/wheelhouse.sh" "$ARCH" "$WORK/wheels"

# --- 2. the root file system ---------------------------------------------------------------------
step "root file system ($ROLE, $ARCH, $SUITE)"
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e '/^\s*$/d' "$HERE/packages/common" "$HERE/packages/$ARCH" "$HERE/packages/$ROLE")
# shellcheck disable=SC2206
PACKAGES+=($EXTRA_PACKAGES)
COMPONENTS=main
[ "$ARCH" = arm64 ] && COMPONENTS="main,non-free-firmware"   # raspi-firmware
if [ "$ARCH" != "$(dpkg --print-architecture)" ] && ! arch-test "$ARCH" >/dev/null 2>&1; then
    # binfmt_misc is not mounted or qemu's handler is not enabled (e.g. no systemd in a container).
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    arch-test "$ARCH" >/dev/null 2>&1 || { echo "build.sh: cannot run $ARCH binaries: install qemu-user-static and binfmt-support" >&2; exit 2; }
fi

mmdebstrap --mode=root --variant=minbase --architectures="$ARCH" --components="$COMPONENTS" \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --dpkgopt='force-confold' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --aptopt='Acquire::Retries "3"' \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives/partial" "$1/boot/firmware"' \
    --setup-hook="cp -a $CACHE/apt/$ARCH/. \"\$1/var/cache/apt/archives/\" 2>/dev/null || true" \
    --setup-hook="$HERE/hooks/setup.sh \"\$1\" $ROLE $ARCH" \
    --skip=download/empty \
    --customize-hook="cp -a \"\$1/var/cache/apt/archives/.\" $CACHE/apt/$ARCH/ && rm -f $CACHE/apt/$ARCH/lock && rm -rf $CACHE/apt/$ARCH/partial" \
    --customize-hook="$HERE/hooks/customize.sh \"\$1\" $ROLE $ARCH $VERSION+$REV $WORK/wheels $UPDATE_PUBKEY ${EXTRA_DIR:-none}" \
    --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*_Packages' \
    "$SUITE" "$ROOT" "$MIRROR"

# Old debs pile up across Debian point releases: keep the cache to what this build used.
find "$CACHE/apt/$ARCH" -name '*.deb' -atime +30 -delete 2>/dev/null || true

if [ "$ROOTFS_ONLY" = 1 ]; then
    rm -rf "$OUT.rootfs"
    mv "$ROOT" "$OUT.rootfs"
    du -sh --apparent-size "$OUT.rootfs" | awk '{print "build.sh: root file system " $1}' >&2
    exit 0
fi

# --- 3. the disk image: boot (FAT) | root (ext4, mounted read-only) | data (ext4, grown at first boot)
step "disk image"
"$HERE/assemble.sh" "$ROOT" "$ARCH" "$OUT"
step "done: $OUT ($(du -h --apparent-size "$OUT" | cut -f1) raw, $(du -h "$OUT" | cut -f1) allocated)"
