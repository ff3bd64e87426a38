#!/usr/bin/env bash
# Turns a built root directory into a raw disk image, without loop devices or mounts:
#   MBR | 1: SQBOOT FAT32 (boot loader, kernel, smartq/ drop folder) | 2: SQROOT ext4 (read-only)
#       | 3: SQDATA ext4 (data; grown to the end of the card at first boot)
#
#   images/assemble.sh ROOTDIR ARCH OUT
set -euo pipefail
ROOT=$1 ARCH=$2 OUT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smartq-assemble.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BOOT_MB=256 DATA_MB=128
CMDLINE="root=LABEL=SQROOT ro overlayroot=tmpfs:recurse=0 rootwait quiet loglevel=3 vt.global_cursor_default=0 consoleblank=0"

# --- boot partition content ----------------------------------------------------------------------
BOOT=$WORK/boot
mkdir -p "$BOOT/smartq"
if [ "$ARCH" = amd64 ]; then
    cp -L "$ROOT/vmlinuz" "$BOOT/vmlinuz"
    cp -L "$ROOT/initrd.img" "$BOOT/initrd.img"
    # GRUB's config on the FAT partition (editable like a Pi's cmdline.txt); the EFI binary
    # only finds the partition by its label and reads it.
    cat > "$BOOT/grub.cfg" <<EOF
set timeout=0
linux /vmlinuz $CMDLINE console=tty1 console=ttyS0,115200
initrd /initrd.img
boot
EOF
    cat > "$WORK/embedded.cfg" <<'EOF'
search --no-floppy --label SQBOOT --set=root
set prefix=($root)/
configfile ($root)/grub.cfg
EOF
    mkdir -p "$BOOT/EFI/BOOT"
    grub-mkstandalone -O x86_64-efi -o "$BOOT/EFI/BOOT/BOOTX64.EFI" \
        --modules="part_msdos fat ext2 normal linux search search_label configfile echo" \
        --locales= --fonts= --themes= "boot/grub/grub.cfg=$WORK/embedded.cfg"
else
    # Debian's raspi-firmware put the firmware, kernel, initrd, DTBs, config.txt and
    # cmdline.txt (from /etc/default/raspi-*) into /boot/firmware.
    cp -a "$ROOT/boot/firmware/." "$BOOT/"
fi
cat > "$BOOT/smartq/README.txt" <<'EOF'
SmartQ boot partition (docs/images.md in the SmartQ repository).
Put here, before the first boot:
  wifi.txt      Wi-Fi:  ssid=Office-WiFi / psk=secret / country=RW  (one per line)
  device.toml   optional: this device's configuration from your branch (else the device
                starts unenrolled and shows its key fingerprint on the screen)
EOF
# The kernel and the boot loader live on FAT; the root keeps /boot/firmware only as a mount point.
find "$ROOT/boot/firmware" -mindepth 1 -delete

# --- file systems ----------------------------------------------------------------------------------
ROOT_MB=$(( $(du -sm "$ROOT" | cut -f1) * 115 / 100 + 128 ))
mkfs.vfat -n SQBOOT -F 32 -C "$WORK/boot.img" $((BOOT_MB * 1024)) >/dev/null
mcopy -s -i "$WORK/boot.img" "$BOOT"/* ::/
mkfs.ext4 -q -L SQROOT -d "$ROOT" -E lazy_itable_init=0 "$WORK/root.img" "${ROOT_MB}M"
mkfs.ext4 -q -L SQDATA -d "$ROOT/usr/share/smartq/data-skel" -E lazy_itable_init=0 -O ^orphan_file \
    "$WORK/data.img" "${DATA_MB}M" 2>/dev/null \
    || mkfs.ext4 -q -L SQDATA -d "$ROOT/usr/share/smartq/data-skel" "$WORK/data.img" "${DATA_MB}M"

# --- the disk --------------------------------------------------------------------------------------
BOOT_TYPE=0c
[ "$ARCH" = amd64 ] && BOOT_TYPE=ef
S1=2048
S2=$((S1 + BOOT_MB * 2048))
S3=$((S2 + ROOT_MB * 2048))
END=$((S3 + DATA_MB * 2048))
rm -f "$OUT"
truncate -s $((END * 512)) "$OUT"
sfdisk --quiet "$OUT" <<EOF
label: dos
start=$S1, size=$((BOOT_MB * 2048)), type=$BOOT_TYPE, bootable
start=$S2, size=$((ROOT_MB * 2048)), type=83
start=$S3, size=$((DATA_MB * 2048)), type=83
EOF
dd if="$WORK/boot.img" of="$OUT" bs=1M seek=$((S1 / 2048)) conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$OUT" bs=1M seek=$((S2 / 2048)) conv=notrunc,sparse status=none
dd if="$WORK/data.img" of="$OUT" bs=1M seek=$((S3 / 2048)) conv=notrunc,sparse status=none
echo "assemble.sh: $OUT: boot ${BOOT_MB} MiB, root ${ROOT_MB} MiB, data ${DATA_MB} MiB (grows at first boot)" >&2
