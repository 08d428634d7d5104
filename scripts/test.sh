#!/usr/bin/env bash
# The test command (README, and what CI's .ci/run runs): installs what the tests need on a
# fresh Debian machine, then runs every test of the workspace.
#   - Chromium and its driver from Debian's packages, for the browser tests (tests/tests/web.rs,
#     tests/app/ through Playwright from npm).
#   - For the officer's app's WebAssembly module (scripts/build-app.sh): the wasm32 target,
#     clang and llvm from Debian's packages, wasm-bindgen-cli from crates.io.
#   - PostgreSQL from Debian's packages: a throw-away cluster, on loopback only, in a temporary
#     directory, owned by a normal user, stopped and deleted when the tests end. The tests find
#     it in GESYNC_TEST_PG (an administrator's URL; each test makes a database of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
missing=()
command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || missing+=(postgresql)
command -v mvn >/dev/null && command -v javac >/dev/null || missing+=(maven default-jdk-headless)
command -v npm >/dev/null && command -v node >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (Debian packages) for the tests" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The throw-away cluster. initdb refuses to run as root: as root, it runs as `nobody`.
bin="$(pg_bin)"
pg_dir="$(mktemp -d /tmp/gesync-pg.XXXXXX)"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody "$pg_dir"
  as_user=(runuser -u nobody --)
fi
password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
port="${GESYNC_TEST_PG_PORT:-55432}"
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
stop_pg() {
  "${as_user[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap stop_pg EXIT
echo "$password" > "$pg_dir/pw"
chmod 600 "$pg_dir/pw"
[ ${#as_user[@]} -eq 0 ] || chown nobody "$pg_dir/pw"
"${as_user[@]}" "$bin/initdb" -D "$pg_dir/data" -U gesync --pwfile="$pg_dir/pw" --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
# fsync stays on: the figures in the README are measured the same way. The cluster runs with a
# DBA's common setting, REPEATABLE READ by default: the server pins the level it needs on every
# transaction it begins, and the whole suite shows it (restarts by the tests keep it too).
echo "default_transaction_isolation = 'repeatable read'" >> "$pg_dir/data/postgresql.conf"
"${as_user[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c max_connections=300 -c fsync=on" start >/dev/null \
  || { echo "error: PostgreSQL did not start on 127.0.0.1:$port; its log:" >&2; cat "$pg_dir/log" >&2; exit 1; }
export GESYNC_TEST_PG="postgres://gesync:$password@127.0.0.1:$port/postgres"
# The PostgreSQL binaries, for the test that restarts the database during syncs.
export GESYNC_TEST_PG_CTL="${as_user[*]} $bin/pg_ctl -D $pg_dir/data -l $pg_dir/log -w -o '-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c max_connections=300'"
echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (throw-away, $pg_dir)" >&2

# The officer's app: rebuild its WebAssembly module from source and check it is the one
# committed (the demo serves the committed one with nothing else installed).
bash scripts/build-app.sh
if ! git diff --quiet -- app/pkg; then
  echo "error: app/pkg differs from what scripts/build-app.sh builds from the sources: run it and commit app/pkg" >&2
  git diff --stat -- app/pkg >&2
  exit 1
fi

cargo test --workspace

# The officer's app in Debian's Chromium (Playwright from npm, pointed at /usr/bin/chromium;
# it downloads no browser), against the real server binary.
cargo build --quiet -p gesync-server --bin gesync-server -p tests --bin seed-phone
(cd tests/app && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1)

# The native apps' bindings of the phone core (client-ffi): generated from the built library
# (Kotlin and Swift; Swift is not compiled here), then the Kotlin ones compiled and tested on the
# JVM by Maven (Debian's maven and JDK; Kotlin, JNA and JUnit from Maven Central; the Kotlin
# compiler without its daemon) against the real server binary built above.
bash scripts/build-kotlin.sh
(cd bindings/kotlin && mvn -B --no-transfer-progress test)
