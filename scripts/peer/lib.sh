# Shell helpers the peer benchmarks share (sourced by scripts/bench-peer.sh and
# scripts/bench-peer-2g.sh).

# A free TCP port on loopback.
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Waits (up to 30 s) until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on port $1" >&2
  return 1
}

# Installs the peer (automerge-repo and its Node client and server) in scripts/peer.
# Not `npm ci`: cbor-x's optional prebuilt natives are not all on the registry, so the lock file
# cannot list them and `npm ci` refuses it; `npm install --no-save` follows the lock file and
# changes nothing.
install_peer() {
  echo "== installing the peer (npm install from the committed package-lock.json, in scripts/peer)" >&2
  (cd "$1" && npm install --no-save --no-audit --no-fund --loglevel=error >&2)
}
