#!/usr/bin/env bash
# gesync against the system an engineer would pick instead: an automerge-repo sync server
# (WebSocket network adapter, Node file-system storage — the reference sync server's setup),
# on loopback, on the same workloads, in one run. Each system's server sits behind the same
# byte-counting TCP proxy (`bench-peer-client proxy`); each client is a fresh process per
# measured sync (an app starting with its records on disk and reconnecting).
#
#   bash scripts/bench-peer.sh              # REPEATS=3 full runs, medians
#   REPEATS=1 HOLD=2000 bash scripts/bench-peer.sh   # quicker
#
# Workloads (same gbv_case record content on both sides, ≈25 fields, 2 service entries):
#   1. a client with 1,000 new records (made offline) syncs them up
#   2. a client holding 10,000 synced records reconnects with nothing new (3 samples a run)
#   3. 1,000 one-field edits (status of 1,000 records, made offline) synced up;
#      3a: the peer's client loads only the 1,000 edited documents (its best case),
#      3b: it loads all it holds (it cannot know which changed without its own bookkeeping).
# See scripts/peer/client.mjs and tests/src/bin/bench_peer_client.rs for exactly what is timed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
REPEATS="${REPEATS:-3}"
NEW="${NEW:-1000}"
HOLD="${HOLD:-10000}"
EDITS="${EDITS:-1000}"
PEER="$ROOT/scripts/peer"

. "$ROOT/scripts/peer/lib.sh" # free_port, wait_port, install_peer
install_peer "$PEER"
echo "== building gesync (cargo build --release -p tests --bins)" >&2
cargo build --release -p tests --bins >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
CLIENT="$BIN/bench-peer-client"
SERVER="$BIN/gesync-server-under-test"

WORK="$(mktemp -d -t gesync-bench-peer.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts the proxy in front of 127.0.0.1:$1; sets PROXY_PID, PROXY_LISTEN, PROXY_CONTROL.
start_proxy() {
  local out="$WORK/proxy.$RANDOM.json"
  "$CLIENT" proxy --target "127.0.0.1:$1" >"$out" &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  for _ in $(seq 1 200); do [ -s "$out" ] && break; sleep 0.05; done
  PROXY_LISTEN=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).listen)' "$out")
  PROXY_CONTROL=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).control)' "$out")
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
RESULTS="$WORK/results.jsonl"
record() { # workload rep command…: runs the command, keeps its JSON line
  local w="$1" rep="$2" out
  shift 2
  out="$("$@")"
  echo "{\"workload\":\"$w\",\"rep\":$rep,\"r\":$out}" >>"$RESULTS"
  echo "   $w: $out" >&2
}

echo "== making the records (the documents our SDK builds, as JSON for the peer)" >&2
"$CLIENT" records --count "$HOLD" >"$WORK/records.json"
PASSWORD="bench-password-123"

for rep in $(seq 1 "$REPEATS"); do
  R="$WORK/run$rep"
  mkdir -p "$R"

  # ---------------- ours: gesync-server (sled) + client SDK ----------------
  echo "== run $rep/$REPEATS: gesync" >&2
  D="$R/gesync-server"
  "$SERVER" admin add-org-unit --data-dir "$D" --code 04 --name "Tỉnh Cao Bằng" --level province >/dev/null
  "$SERVER" admin add-org-unit --data-dir "$D" --code 047 --name "Huyện Trùng Khánh" --parent 04 --level district >/dev/null
  "$SERVER" admin add-org-unit --data-dir "$D" --code 04701 --name "Thị trấn Trùng Khánh" --parent 047 --level commune >/dev/null
  echo "$PASSWORD" | "$SERVER" admin create-user --data-dir "$D" --username officer1 --role commune_officer --org-unit 04701 --password-stdin >/dev/null
  PORT=$(free_port)
  GESYNC_LOG=warn GESYNC_METRICS_TOKEN=harness-metrics-token "$SERVER" serve --data-dir "$D" --listen "127.0.0.1:$PORT" --plain-http >/dev/null &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  wait_port "$PORT"
  start_proxy "$PORT"
  C=(--store "$R/phone" --keys "$R/phone-keys")
  S=("${C[@]}" --control "$PROXY_CONTROL" --server "127.0.0.1:$PORT")
  echo "$PASSWORD" | "$CLIENT" login "${C[@]}" --url "http://$PROXY_LISTEN" --username officer1 >/dev/null
  "$CLIENT" create "${C[@]}" --from 0 --to "$NEW" >/dev/null
  record w1 "$rep" "$CLIENT" sync "${S[@]}"
  "$CLIENT" create "${C[@]}" --from "$NEW" --to "$HOLD" >/dev/null
  "$CLIENT" sync "${S[@]}" >/dev/null # setup: the rest of the held records, untimed
  for _ in 1 2 3; do record w2 "$rep" "$CLIENT" sync "${S[@]}"; done
  "$CLIENT" edit "${C[@]}" --count "$EDITS" --value closed >/dev/null
  record w3a "$rep" "$CLIENT" sync "${S[@]}"
  "$CLIENT" edit "${C[@]}" --count "$EDITS" --value open >/dev/null
  record w3b "$rep" "$CLIENT" sync "${S[@]}"
  stop "$PROXY_PID"
  stop "$SRV_PID"

  # ---------------- the peer: automerge-repo sync server (NodeFS) + Repo client ----------------
  echo "== run $rep/$REPEATS: automerge-repo" >&2
  PORT=$(free_port)
  CPORT=$(free_port)
  node "$PEER/server.mjs" --port "$PORT" --dir "$R/peer-server" --control-port "$CPORT" >/dev/null &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  wait_port "$CPORT"
  wait_port "$PORT"
  start_proxy "$PORT"
  C=(--dir "$R/peer-client" --index "$R/peer-client.urls")
  S=("${C[@]}" --url "ws://$PROXY_LISTEN" --control "$PROXY_CONTROL" --server-control "http://127.0.0.1:$CPORT")
  node "$PEER/client.mjs" create "${C[@]}" --records "$WORK/records.json" --from 0 --to "$NEW" >/dev/null
  record w1 "$rep" node "$PEER/client.mjs" sync "${S[@]}" --flush --verify
  node "$PEER/client.mjs" create "${C[@]}" --records "$WORK/records.json" --from "$NEW" --to "$HOLD" >/dev/null
  # Setup, untimed, in slices of $NEW documents: one client announcing 9,000 new documents at
  # once made the peer's server die here (an unhandled "withTimeout: timed out after 60000ms"
  # from DocHandle.whenReady), so the peer is given the gentler path.
  for ((s = NEW; s < HOLD; s += NEW)); do
    node "$PEER/client.mjs" sync "${S[@]}" --skip "$s" --only "$NEW" --flush >/dev/null
  done
  for _ in 1 2 3; do record w2 "$rep" node "$PEER/client.mjs" sync "${S[@]}"; done
  node "$PEER/client.mjs" edit "${C[@]}" --count "$EDITS" --value closed >/dev/null
  record w3a "$rep" node "$PEER/client.mjs" sync "${S[@]}" --only "$EDITS" --flush --verify
  node "$PEER/client.mjs" edit "${C[@]}" --count "$EDITS" --value open >/dev/null
  record w3b "$rep" node "$PEER/client.mjs" sync "${S[@]}" --flush
  stop "$PROXY_PID"
  stop "$SRV_PID"
  rm -rf "$R"
done

node "$PEER/report.mjs" "$RESULTS" "$NEW" "$HOLD" "$EDITS"
