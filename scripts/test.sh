#!/usr/bin/env bash
# The whole test suite on a machine without a GPU: set up, check formatting and lints, run every
# test (unit, integration against OpenCV/NumPy references, end to end through the CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets "$@"
