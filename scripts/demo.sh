#!/usr/bin/env bash
# leasegate demo: starts a real redis-server (standing in for Kvrocks) and
# leasegate in front of it on free loopback ports, then shows traffic through
# the proxy. Installs redis-server when missing. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server and redis-tools"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null
fi

echo "== building leasegate (release)"
cargo build --release --quiet
BIN=target/release/leasegate

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

wait_port() { for _ in $(seq 200); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "port $1 did not answer" >&2; exit 1; }

NODE=$(free_port); PROXY=$(free_port)
start_node() { redis-server --port "$NODE" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 & NODE_PID=$!; PIDS+=("$NODE_PID"); wait_port "$NODE"; }
start_node
cat >"$WORK/leasegate.yaml" <<YAML
listen: 127.0.0.1:$PROXY
backend:
  addr: 127.0.0.1:$NODE
commands:
  deny: [FLUSHALL, KEYS]
log:
  level: warn
YAML
"$BIN" run -c "$WORK/leasegate.yaml" 2>"$WORK/leasegate.log" & PIDS+=($!)
wait_port "$PROXY"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
via() { echo "\$ redis-cli -p $PROXY $*"; redis-cli -p "$PROXY" "$@"; }

say "node on :$NODE, leasegate on :$PROXY (config: deny FLUSHALL, KEYS)"
via SET greeting "hello through leasegate"
via GET greeting
say "a pipeline: replies come back in order, the denied command answered in its place"
printf 'SET a 1\r\nFLUSHALL\r\nINCR a\r\nGET a\r\n' | redis-cli -p "$PROXY"
say "the node never saw FLUSHALL: its data is intact"
echo "\$ redis-cli -p $NODE GET greeting   (direct to the node)"; redis-cli -p "$NODE" GET greeting
say "transactions and sessions work as on the node"
printf 'MULTI\r\nINCR counter\r\nINCR counter\r\nEXEC\r\n' | redis-cli -p "$PROXY"
say "throughput through the proxy (redis-benchmark, 50 clients, pipeline 16)"
redis-benchmark -p "$PROXY" -t set,get -c 50 -n 200000 -P 16 -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second' || true
say "the node goes down: new clients are told why"
kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
via PING || true
say "the node comes back: leasegate serves again without a restart"
start_node
via PING
echo
echo "demo finished"
