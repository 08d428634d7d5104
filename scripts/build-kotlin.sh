#!/usr/bin/env bash
# Generates the native apps' bindings of the phone core (crate client-ffi, UniFFI): builds the
# host library (target/debug/libgesync_ffi.so) and, from it (UniFFI's library mode, the crate's
# own `uniffi-bindgen` binary), writes
#   bindings/kotlin/generated/kotlin/vn/gesync/core/gesync_ffi.kt   (package vn.gesync.core)
#   bindings/swift/generated/GesyncCore.swift, GesyncCoreFFI.h, GesyncCoreFFI.modulemap
# Generated files are not committed (bindings/.gitignore). The Kotlin ones are compiled and
# tested on the JVM by `mvn -B test` in bindings/kotlin (the test command runs both); the Swift
# ones are generated only: no Swift toolchain is used here, so they are not compiled.
# An Android build cross-compiles the same crate per ABI with cargo-ndk instead (docs/mobile.md);
# the generated Kotlin is the same.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p gesync-ffi --features bindgen --lib --bin uniffi-bindgen
debug="${CARGO_TARGET_DIR:-target}/debug"
lib="$debug/libgesync_ffi.so"
case "$(uname -s)" in Darwin) lib="$debug/libgesync_ffi.dylib" ;; esac
rm -rf bindings/kotlin/generated bindings/swift/generated
"$debug/uniffi-bindgen" generate --no-format --library "$lib" --language kotlin --out-dir bindings/kotlin/generated/kotlin
"$debug/uniffi-bindgen" generate --no-format --library "$lib" --language swift --out-dir bindings/swift/generated
echo "== bindings generated from $lib: bindings/kotlin/generated, bindings/swift/generated (Swift: not compiled here)" >&2
