#!/usr/bin/env bash
# Trains the records dictionary of the sync wire (sync_protocol::wire::FLAG_RECORDS_DICT) on
# synthetic records with no free text (tests/src/bin/dict_samples.rs), and writes it to
# sync-protocol/src/records.zdict.
#
# The dictionary is part of the protocol: phones and servers must hold the same bytes. Do not
# retrain it in place. A new dictionary needs a new accept flag and a new dictionary id, and
# the old one stays for the phones that still use it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-sync-protocol/src/records.zdict}"
# zstd's dictionary id: 0x67730001 ("gs", dictionary 1); below 32768 is reserved by zstd.
dict_id=1735589889
samples="$(mktemp -d)"
trap 'rm -rf "$samples"' EXIT
cargo build --release --quiet -p tests --bin dict-samples
target/release/dict-samples "$samples" 3000
zstd -q -f --train "$samples"/* --maxdict=32768 --dictID="$dict_id" -o "$out"
echo "wrote $out ($(stat -c %s "$out") bytes, id $dict_id)"
