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
