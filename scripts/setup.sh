#!/usr/bin/env bash
# Idempotent set-up on Debian 12: GStreamer 1.22 and its plugins, Rust (if absent), the Python
# environment (.venv: onnxruntime, whose libonnxruntime.so the program loads, plus the test
# references), the tiny random-weight test models under engines/models/, and the Triton test
# server's own environment (.venv-triton).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(
  build-essential pkg-config curl ca-certificates python3 python3-venv
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
  libgstrtspserver-1.0-dev gstreamer1.0-rtsp
  # test peers: an MQTT broker and a headless browser
  mosquitto chromium
  # the Triton test server's Python backend stub loads the system libpython (.venv-triton below)
  libpython3.11
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

if [ ! -x .venv/bin/pip ]; then
  echo "setup: creating the Python environment in .venv"
  python3 -m venv .venv
fi
# Pinned versions: a no-op (no download) once they are installed. On a GPU machine whose .venv
# has onnxruntime-gpu (same package folder), the CPU onnxruntime must not be put back over it.
requirements=scripts/requirements.txt
if .venv/bin/pip show -q onnxruntime-gpu >/dev/null 2>&1; then
  requirements=$(mktemp)
  grep -v '^onnxruntime==' scripts/requirements.txt >"$requirements"
fi
.venv/bin/pip install -q --disable-pip-version-check -r "$requirements"

.venv/bin/python engines/generate_models.py --out engines/models --arch tiny
.venv/bin/python engines/generate_models.py --out engines/models --family sapiens2 --arch tiny

# The Triton test server (tests/reference/triton_server.py) in its own environment: made with
# Debian's python3, since the Python backend stub that nvidia-pytriton ships loads the system
# libpython of the interpreter's version (a pyenv interpreter fails inside it), and pytriton
# needs numpy < 2. Pinned, so a no-op once installed.
if [ ! -x .venv-triton/bin/pip ]; then
  echo "setup: creating the Triton test environment in .venv-triton"
  /usr/bin/python3 -m venv .venv-triton
fi
.venv-triton/bin/pip install -q --disable-pip-version-check -r scripts/requirements-triton.txt
