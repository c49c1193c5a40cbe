#!/usr/bin/env bash
# One-shot, idempotent set-up for psixlstm on Debian 12 (bookworm):
#   ngspice >= 44 with OSDI (bookworm-backports), a .venv with torch (CPU) and psixlstm[dev], then `psi-xlstm doctor`.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

ngspice_ok() {
    command -v ngspice >/dev/null 2>&1 || return 1
    local v
    v=$(ngspice -v 2>/dev/null | grep -oE 'ngspice-[0-9]+' | head -1 | cut -d- -f2)
    [ -n "$v" ] && [ "$v" -ge 44 ]
}

if ngspice_ok; then
    echo "setup: ngspice $(ngspice -v | grep -oE 'ngspice-[0-9]+' | head -1) already installed"
elif [ -r /etc/os-release ] && grep -q 'VERSION_CODENAME=bookworm' /etc/os-release; then
    # Reuse the Debian mirror URI this machine is already configured with.
    uri=$(grep -hE '^URIs:.*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^deb .*debian/? bookworm' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
    fi
    uri=${uri:-http://deb.debian.org/debian}
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup: adding bookworm-backports from $uri"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$uri" | $SUDO tee /etc/apt/sources.list.d/psixlstm-backports.sources >/dev/null
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports ngspice libngspice0
    ngspice_ok || { echo "setup: ngspice >= 44 still missing after apt" >&2; exit 1; }
else
    echo "setup: please install ngspice >= 44 built with OSDI support (e.g. your distribution's ngspice 44+," >&2
    echo "       or build from source with --enable-osdi), then rerun this script." >&2
    exit 1
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# torch first, pinned to the CPU wheel, so nothing later can pull a CUDA build.
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev,xlstm,sweep]'
.venv/bin/psi-xlstm doctor
