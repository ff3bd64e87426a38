#!/bin/sh
# mmdebstrap customize hook: turns the Debian root into a SmartQ appliance of one role.
#   customize.sh ROOT ROLE ARCH VERSION WHEELHOUSE UPDATE_PUBKEY EXTRA_DIR|none
set -eu
ROOT=$1 ROLE=$2 ARCH=$3 VERSION=$4 WHEELS=$5 UPDATE_PUBKEY=$6 EXTRA=$7
HERE=$(cd "$(dirname "$0")/.." && pwd)
VENV=/usr/lib/smartq/venvs/$VERSION
# A clean environment inside: nothing of the build host's (PIP_*, PYTHON*) leaks into the image.
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# The image's own files (units, scripts, configuration) over Debian's.
cp -a "$HERE/rootfs/." "$ROOT/"
install -m 0644 "$HERE/systemd/smartq-node.service" "$HERE/systemd/smartq-ui@.service" "$ROOT/etc/systemd/system/"
install -D -m 0644 "$UPDATE_PUBKEY" "$ROOT/usr/share/smartq/update-key.pub"
install -m 0755 "$HERE/update.py" "$ROOT/usr/lib/smartq/update.py"
chmod 0755 "$ROOT"/usr/lib/smartq/bin/*

# The service account; its home is the data dir on the data partition.
GROUPS_WANTED=""
for g in dialout lp video render input audio; do
    in_root getent group "$g" >/dev/null && GROUPS_WANTED="$GROUPS_WANTED,$g"
done
in_root useradd --system --home-dir /var/lib/smartq --no-create-home --shell /usr/sbin/nologin \
    --groups "${GROUPS_WANTED#,}" smartq

# The project and every dependency, offline from the wheelhouse, into a versioned venv.
mkdir -p "$ROOT/tmp/wheels"
cp "$WHEELS"/*.whl "$ROOT/tmp/wheels/"
in_root python3 -m venv "$VENV"
in_root "$VENV/bin/pip" install --quiet --no-index --no-cache-dir --find-links /tmp/wheels 'smartq[lan,hardware,ui]'
rm -rf "$ROOT/tmp/wheels"
# The root is read-only on the device: byte-code must be compiled now, not at first import.
in_root "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" >/dev/null || true
echo "$VERSION" > "$ROOT/usr/lib/smartq/venvs/BUILTIN"
cat > "$ROOT/etc/smartq-image" <<EOF
ROLE=$ROLE
ARCH=$ARCH
VERSION=$VERSION
BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

# The data partition's first content (assemble.sh writes it into the data file system):
# /opt/smartq -> /data/app, whose 'current' is the active venv (the update swaps it).
SKEL=$ROOT/usr/share/smartq/data-skel
SMARTQ_UID=$(in_root id -u smartq) SMARTQ_GID=$(in_root id -g smartq)
mkdir -p "$SKEL/log/journal" "$SKEL/smartq" "$SKEL/etc" "$SKEL/app/versions" "$SKEL/updates/incoming"
ln -sfn "$VENV" "$SKEL/app/current"
chown "$SMARTQ_UID:$SMARTQ_GID" "$SKEL/smartq"
chmod 0700 "$SKEL/smartq"
chown "0:$SMARTQ_GID" "$SKEL/etc"
chmod 0750 "$SKEL/etc"
chmod 2755 "$SKEL/log/journal"
chown 0:"$(in_root getent group systemd-journal | cut -d: -f3)" "$SKEL/log/journal"
ln -sfn /data/app "$ROOT/opt/smartq"
mkdir -p "$ROOT/data" "$ROOT/var/lib/smartq" "$ROOT/etc/smartq"

# Units: the role's node and screen, first boot, updates, screen hours, the network.
in_root systemctl enable smartq-node.service "smartq-ui@$ROLE.service" smartq-firstboot.service smartq-enroll.service \
    smartq-screen.timer smartq-update.path systemd-networkd.service systemd-resolved.service chrony.service
# Nothing for a passer-by on the screen's VT: no login prompt, no other VTs.
in_root systemctl mask getty@tty1.service
echo "$ROLE" > "$ROOT/etc/smartq/role"

# A fresh machine-id per device (made at boot, kept on the data partition by the initramfs hook).
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
echo smartq > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tsmartq\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
ln -sfn /run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"

# Test builds only: extra files (and units named in .smartq-enable) over everything else.
if [ "$EXTRA" != none ]; then
    cp -a "$EXTRA/." "$ROOT/"
    if [ -f "$ROOT/.smartq-enable" ]; then
        # shellcheck disable=SC2046
        in_root systemctl enable $(cat "$ROOT/.smartq-enable")
        rm -f "$ROOT/.smartq-enable"
    fi
fi

# The initramfs: overlayroot plus our machine-id hook.
in_root update-initramfs -u -k all
