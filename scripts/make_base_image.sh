#!/usr/bin/env bash
# Build a local stand-in for python:3.12-slim when no image registry is reachable:
# a Debian bookworm root filesystem made with debootstrap (from the Debian mirror apt
# uses here), this machine's CPython 3.12 copied into /usr/local, and this machine's CA
# certificates; then `docker import` it as mlops-base-python:3.12 (or $BASE_TAG).
#
#   sudo scripts/make_base_image.sh                 # as root (debootstrap and chroot)
#   BASE_IMAGE=mlops-base-python:3.12 MINIKUBE=0 ./build_docker_images.sh
#
# Settings (environment): BASE_TAG (default mlops-base-python:3.12), PYTHON_PREFIX (the
# CPython 3.12 installation to copy; default: the one `python3.12` on the PATH belongs
# to), DEBIAN_MIRROR (default: the first bookworm URI in /etc/apt/sources.list*),
# DOCKER (default docker), WORK_DIR (default a temporary folder, removed at the end).
#
# The image is for this machine only: it carries this machine's CA bundle (so pip inside
# `docker build` trusts the same TLS proxies the host does) and sets PIP_CERT and
# SSL_CERT_FILE to it. Like python:3.12-slim it has python, python3, pip and pip3 in
# /usr/local/bin, LANG=C.UTF-8 and no Python packages besides pip.
set -euo pipefail

BASE_TAG="${BASE_TAG:-mlops-base-python:3.12}"
DOCKER="${DOCKER:-docker}"
SUITE=bookworm

die() {
    echo "make_base_image.sh: $*" >&2
    exit 1
}

[[ "$(id -u)" == 0 ]] || die "run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
command -v "$DOCKER" >/dev/null || die "$DOCKER is missing: apt-get install -y docker.io"

if [[ -z "${PYTHON_PREFIX:-}" ]]; then
    python312="$(command -v python3.12)" || die "no python3.12 on the PATH; set PYTHON_PREFIX"
    PYTHON_PREFIX="$("$python312" -c 'import sys; print(sys.base_prefix)')"
fi
[[ -x "$PYTHON_PREFIX/bin/python3.12" ]] || die "no $PYTHON_PREFIX/bin/python3.12"

if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
    # deb822 (URIs: ...) or one-line (deb URI suite ...) sources; the first for bookworm.
    DEBIAN_MIRROR="$(
        awk '/^URIs:/ { uri = $2 } /^Suites:/ && / bookworm( |$)/ && uri { print uri; exit }
             /^deb / && $3 == "bookworm" { print $2; exit }' \
            /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true
    )"
    DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi

# The Debian packages holding the shared libraries this Python and its extension
# modules link against (libssl3, libffi8, libsqlite3-0, ...), found with ldd and dpkg -S.
libs_of() {
    ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
}
# (Not _tkinter's Tk and X11: like python:3.12-slim, the image has no tkinter.)
mapfile -t modules < <(
    find "$PYTHON_PREFIX/lib/python3.12/lib-dynload" -name '*.so' ! -name '_tkinter*'
)
mapfile -t libs < <(
    libs_of "$PYTHON_PREFIX/bin/python3.12" "${modules[@]}" | grep -v "^$PYTHON_PREFIX/" | sort -u
)
packages=(ca-certificates netbase tzdata)
for lib in "${libs[@]}"; do
    real="$(readlink -f "$lib")"
    owner="$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)"
    [[ -n "$owner" ]] || die "no Debian package owns $lib (needed by $PYTHON_PREFIX)"
    packages+=("${owner%%:*}")
done
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
include="$(IFS=,; echo "${packages[*]}")"

WORK_DIR="${WORK_DIR:-}"
cleanup_work=0
if [[ -z "$WORK_DIR" ]]; then
    WORK_DIR="$(mktemp -d /var/tmp/mlops-base.XXXXXX)"
    cleanup_work=1
fi
rootfs="$WORK_DIR/rootfs"
cleanup() {
    if ((cleanup_work)); then
        rm -rf "$WORK_DIR"
    fi
}
trap cleanup EXIT

echo "==> debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR (+ $include)"
debootstrap --variant=minbase --include="$include" "$SUITE" "$rootfs" "$DEBIAN_MIRROR" \
    > "$WORK_DIR/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK_DIR/debootstrap.log" >&2; die "debootstrap failed"; }

echo "==> Python from $PYTHON_PREFIX into /usr/local"
# Everything but third-party packages (pip comes back from ensurepip below) and caches.
tar -C "$PYTHON_PREFIX" \
    --exclude='./lib/python3.12/site-packages/*' --exclude='__pycache__' \
    --exclude='./lib/python3.12/test' --exclude='./lib/python3.12/idlelib' \
    --exclude='./lib/python3.12/tkinter' --exclude='./lib/python3.12/turtledemo' \
    --exclude='./lib/python3.12/lib-dynload/_tkinter*' \
    -cf - . | tar -C "$rootfs/usr/local" -xf -
cp "$PYTHON_PREFIX/lib/python3.12/site-packages/README.txt" \
    "$rootfs/usr/local/lib/python3.12/site-packages/" 2>/dev/null || true
# Point the build configuration (sysconfig, python3-config) at the new prefix.
grep -rlI --null -F "$PYTHON_PREFIX" "$rootfs/usr/local/bin" "$rootfs/usr/local/lib" \
    | xargs -0 -r sed -i "s|$PYTHON_PREFIX|/usr/local|g"

echo "==> CA certificates of this machine"
mkdir -p "$rootfs/usr/local/share/ca-certificates"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi

# In the chroot: the loader cache (libpython in /usr/local/lib), the CA bundle, pip,
# the python/pip names python:3.12-slim has, and no apt caches.
cat > "$rootfs/tmp/setup.sh" <<'EOF'
set -eu
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
ldconfig
update-ca-certificates > /dev/null
python3.12 -m ensurepip --default-pip > /dev/null
cd /usr/local/bin
ln -sf python3.12 python3
ln -sf python3 python
[ -e pip ] || ln -s pip3 pip
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
    /usr/share/doc/* /usr/share/man/* /usr/share/info/* /var/log/*.log
find /usr/local/lib/python3.12 -name __pycache__ -prune -exec rm -rf {} +
python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, decimal, readline; print("python", __import__("sys").version.split()[0], "ok")'
EOF
chroot "$rootfs" /bin/sh /tmp/setup.sh
rm -f "$rootfs/tmp/setup.sh"

echo "==> docker import as $BASE_TAG"
ca=/etc/ssl/certs/ca-certificates.crt
tar -C "$rootfs" --numeric-owner -cf - . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PIP_CERT=$ca" \
    --change "ENV SSL_CERT_FILE=$ca" \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE minbase + CPython from $PYTHON_PREFIX" \
    - "$BASE_TAG" > /dev/null

"$DOCKER" run --rm --network none --user 10001:10001 "$BASE_TAG" \
    python -c 'import sys, ssl; print(sys.version.split()[0], ssl.OPENSSL_VERSION)'
"$DOCKER" image ls "$BASE_TAG"
