#!/usr/bin/env bash
# The test command (README, and what CI's .ci/run runs): installs what the tests need on a
# fresh Debian machine, then runs every test of the workspace.
#   - Chromium and its driver from Debian's packages, for the browser tests (tests/tests/web.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
if ! command -v chromedriver >/dev/null; then
  echo "== installing Chromium and chromedriver (Debian packages) for the browser tests" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi
cargo test --workspace
