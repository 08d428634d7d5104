#!/usr/bin/env bash
# Builds the officer's app from source: the WebAssembly module (crate client-wasm: client-core
# and sync-protocol) and its JavaScript glue into app/pkg/, which gesync-server embeds with the
# rest of app/. The built files are committed, so that `cargo run --bin gesync-server -- demo`
# serves the app with nothing else installed; the test command runs this script and fails if
# what it builds differs from what is committed (scripts/test.sh).
#
# Needs: the wasm32-unknown-unknown target (rustup adds it), clang and llvm-ar (zstd's C
# library, from Debian's clang and llvm packages), and wasm-bindgen-cli at the version of the
# wasm-bindgen crate (installed from crates.io if missing). Paths are remapped so that the
# module is the same whichever directory it is built in.
set -euo pipefail
cd "$(dirname "$0")/.."
WASM_BINDGEN_VERSION=0.2.130
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown >&2
fi
if ! command -v clang >/dev/null || ! command -v llvm-ar >/dev/null; then
  echo "== installing clang, llvm (Debian packages) for the WebAssembly build" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq clang llvm lld >/dev/null
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  echo "== installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (crates.io)" >&2
  cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" >&2
fi
export CC_wasm32_unknown_unknown=clang AR_wasm32_unknown_unknown=llvm-ar
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--remap-path-prefix=$PWD=/gesync --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
cargo build --quiet -p client-wasm --target wasm32-unknown-unknown --profile wasm
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section --out-dir app/pkg target/wasm32-unknown-unknown/wasm/client_wasm.wasm
echo "== app/pkg: $(du -b app/pkg/client_wasm_bg.wasm | cut -f1) bytes of WebAssembly, $(gzip -9 -c app/pkg/client_wasm_bg.wasm | wc -c) gzipped" >&2
