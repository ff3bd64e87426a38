#!/usr/bin/env bash
# Fills DIR with the wheels a device needs: the project (built here) and every dependency of
# smartq[lan,hardware,ui] as cp311 wheels for ARCH (bookworm's Python is 3.11, like the host's).
#
#   images/wheelhouse.sh ARCH DIR
#
# Dependencies are pinned to what the project's own .venv runs (its tests passed with those),
# downloaded once into $SMARTQ_IMAGE_CACHE/wheels/ARCH and reused offline afterwards.
set -euo pipefail
ARCH=$1 DIR=$2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${SMARTQ_IMAGE_CACHE:-/var/cache/smartq-images}/wheels/$ARCH
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$DIR" "$CACHE"
case $ARCH in
    amd64) PLAT=x86_64 ;;
    arm64) PLAT=aarch64 ;;
    *) echo "wheelhouse.sh: unknown ARCH $ARCH" >&2; exit 2 ;;
esac

# The project's own wheel (pure Python), built from this checkout.
rm -f "$DIR"/smartq-*.whl
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIR" "$REPO" 2>/dev/null \
    || "$PYTHON" -m pip wheel --quiet --no-deps -w "$DIR" "$REPO"
# setuptools leaves build/ and *.egg-info behind in the checkout: not ours to keep.
rm -rf "$REPO/build"

# Its requirements for a device (no hq, no dev extras), pinned to the .venv's versions.
REQS=$DIR/.requirements.txt
"$PYTHON" - "$REPO/setup.cfg" > "$REQS" <<'EOF'
import configparser, sys
c = configparser.ConfigParser()
c.read(sys.argv[1])
lines = c["options"]["install_requires"].splitlines()
for extra in ("lan", "hardware", "ui"):
    lines += c["options.extras_require"][extra].splitlines()
print("\n".join(x.strip() for x in lines if x.strip() and not x.strip().startswith("#")))
EOF
PINS=$DIR/.constraints.txt
"$PYTHON" -m pip freeze --exclude-editable 2>/dev/null | grep -v '^-e ' > "$PINS" || true

PLATFORM_ARGS=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
               --platform "manylinux2014_$PLAT" --platform "manylinux_2_17_$PLAT" --platform "manylinux_2_28_$PLAT"
               --platform "manylinux_2_27_$PLAT" --platform "manylinux1_$PLAT" --platform "manylinux_2_5_$PLAT"
               --platform "linux_$PLAT" --platform any)
# Offline from the cache first; only what is missing comes from the package index.
if ! "$PYTHON" -m pip download --quiet --no-index --find-links "$CACHE" -d "$CACHE" \
        "${PLATFORM_ARGS[@]}" -r "$REQS" -c "$PINS" >/dev/null 2>&1; then
    "$PYTHON" -m pip download --quiet -d "$CACHE" "${PLATFORM_ARGS[@]}" -r "$REQS" -c "$PINS"
fi
# Copy exactly the resolved set (pip download -d DIR links what it resolved).
"$PYTHON" -m pip download --quiet --no-index --find-links "$CACHE" -d "$DIR" "${PLATFORM_ARGS[@]}" -r "$REQS" -c "$PINS"
echo "wheelhouse.sh: $(ls "$DIR"/*.whl | wc -l) wheels for $ARCH in $DIR" >&2
