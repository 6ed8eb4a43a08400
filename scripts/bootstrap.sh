#!/usr/bin/env bash
# Set up everything mcuforge needs on a fresh Debian-based machine: the Arm toolchain and QEMU,
# Node/npm, the Python environment (.venv) and the MicroPython WebAssembly package.
# Idempotent and non-interactive: a second run only checks and returns quickly.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[bootstrap] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
        log "need root (or passwordless sudo) to run: $*"; exit 1; fi
}

# --- system packages ----------------------------------------------------------------------
APT_PACKAGES=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)
command -v node >/dev/null || APT_PACKAGES+=(nodejs)
command -v npm >/dev/null || APT_PACKAGES+=(npm)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python environment -------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the pinned dependencies changed.
stamp=.venv/.mcuforge-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import mcuforge.host_tools" 2>/dev/null; then
    log "installing mcuforge and its pinned dependencies into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
    echo "$want" > "$stamp"
fi

# --- MicroPython (WebAssembly port) from npm ------------------------------------------------
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.mcuforge-lock ] || [ "$(cat node_modules/.mcuforge-lock)" != "$lock_sum" ]; then
    log "installing npm packages (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    echo "$lock_sum" > node_modules/.mcuforge-lock
fi

log "ready: $("$ROOT/.venv/bin/mcuforge" --version 2>/dev/null || echo mcuforge), $(arm-none-eabi-gcc --version | head -1), $(qemu-system-arm --version | head -1)"
