#!/usr/bin/env bash
# leasegate demo: real redis-servers (standing in for Kvrocks) with a leasegate
# beside each, on free loopback ports. Shows transparent traffic, the deny list,
# write fencing when the controller's heartbeats stop, and a failover to the
# replica in which the old master acknowledges nothing. Installs redis-server
# when missing; cleans up on exit.
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
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
now_ms() { date +%s%3N; }

A_NODE=$(free_port); B_NODE=$(free_port); A=$(free_port); B=$(free_port); A_ADMIN=$(free_port); B_ADMIN=$(free_port)
A_ID=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
B_ID=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
TTL=1500

redis-server --port "$A_NODE" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" --repl-diskless-sync-delay 0 >"$WORK/a.log" 2>&1 & PIDS+=($!)
redis-server --port "$B_NODE" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" --replicaof 127.0.0.1 "$A_NODE" >"$WORK/b.log" 2>&1 & PIDS+=($!)
wait_port "$A_NODE"; wait_port "$B_NODE"

start_proxy() { # name port node node_id admin_port
  cat >"$WORK/$1.yaml" <<YAML
listen: 127.0.0.1:$2
backend:
  addr: 127.0.0.1:$3
node_id: $4
admin:
  listen: 127.0.0.1:$5
  token: demo-token
control:
  password: controller-secret
lease:
  mode: block-write
  safety_margin_ms: 100
  probe_interval_ms: 200
commands:
  deny: [FLUSHALL, KEYS]
log:
  level: warn
YAML
  "$BIN" run -c "$WORK/$1.yaml" 2>"$WORK/$1.log" & PIDS+=($!)
  wait_port "$2"
}
start_proxy proxy-a "$A" "$A_NODE" "$A_ID" "$A_ADMIN"
start_proxy proxy-b "$B" "$B_NODE" "$B_ID" "$B_ADMIN"

app() { local port=$1; shift; echo "\$ redis-cli -p $port $*"; redis-cli -p "$port" "$@"; }
# The controller authenticates with control.password; leasegate checks it and never forwards it.
ctl() { local port=$1; shift; redis-cli -p "$port" --no-auth-warning -a controller-secret "$@"; }

say "node A :$A_NODE (master) with leasegate :$A, node B :$B_NODE (replica) with leasegate :$B"
say "fail closed: before any heartbeat, writes are fenced and reads pass"
app "$A" SET greeting hello
app "$A" GET greeting

say "the controller heartbeats A (CLUSTERX HEARTBEAT <master> <lease_ms> <epoch>); the reply is the lease report"
ctl "$A" CLUSTERX HEARTBEAT "$A_ID" "$TTL" 1
ctl "$B" CLUSTERX HEARTBEAT "$A_ID" "$TTL" 1 | grep -E 'role|lease_owner'
app "$A" SET greeting "hello through leasegate"
say "an ordinary client cannot move the lease"
app "$A" CLUSTERX HEARTBEAT "$A_ID" 60000 1 || true
say "deny list and pipelines: the denied command is answered in its place, nothing reaches the node"
printf 'SET a 1\r\nFLUSHALL\r\nINCR a\r\n' | redis-cli -p "$A"

say "heartbeats every 300 ms keep writes open"
( while :; do ctl "$A" CLUSTERX HEARTBEAT "$A_ID" "$TTL" 1 >/dev/null; ctl "$B" CLUSTERX HEARTBEAT "$A_ID" "$TTL" 1 >/dev/null; sleep 0.3; done ) & BEAT=$!; PIDS+=($BEAT)
for i in 1 2 3; do redis-cli -p "$A" SET "order:$i" paid; sleep 0.3; done

say "graceful failover A -> B while a client writes through A (redis-benchmark stops at the first error)"
redis-benchmark -p "$A" -t set -n 30000 -c 20 -r 1000000 -q >"$WORK/bench.log" 2>&1 & LOAD=$!
sleep 0.5
"$BIN" failover --from "127.0.0.1:$A_ADMIN" --to "127.0.0.1:$B_ADMIN" --token demo-token --lease-ttl-ms "$TTL"
wait "$LOAD" && echo "the client's 30000 writes all succeeded: $(tr '\r' '\n' < "$WORK/bench.log" | grep 'requests per second' | tail -1)"
kill "$BEAT"; wait "$BEAT" 2>/dev/null || true
app "$A" SET after-failover "written through A, stored on B"
echo "\$ redis-cli -p $B_NODE GET after-failover   (direct to node B, the new master)"; redis-cli -p "$B_NODE" GET after-failover
redis-cli -p "$A_NODE" ROLE | head -1 | sed 's/^/node A is now: /'

say "partition: the controller no longer reaches B; B fences itself within the lease ($TTL ms)"
ctl "$B" CLUSTERX HEARTBEAT "$B_ID" "$TTL" 2 >/dev/null
last_beat=$(now_ms)
i=0
while :; do
  i=$((i+1))
  out=$(redis-cli -p "$B" SET "late:$i" x)
  if [[ $out != OK ]]; then
    echo "$(( $(now_ms) - last_beat )) ms after the last heartbeat: $out"
    break
  fi
  sleep 0.05
done
echo "$i writes were accepted inside the lease, then fencing began"
app "$B" GET after-failover

say "failover by the controller: it waits out B's lease, promotes A and heartbeats it at epoch 3"
ctl "$A" REPLICAOF NO ONE
ctl "$A" CLUSTERX HEARTBEAT "$A_ID" 60000 3 | grep -E 'role|lease_epoch|lease_owner'
app "$A" SET greeting "written on the new master"
say "B, still isolated, keeps refusing writes: nothing it could lose is acknowledged"
app "$B" SET greeting "split brain?"
say "when B is reachable again, the controller tells it who the master is; a stale epoch is refused"
ctl "$B" CLUSTERX HEARTBEAT "$A_ID" 60000 3 | grep -E 'lease_owner|lease_remaining'
ctl "$B" CLUSTERX HEARTBEAT "$B_ID" 60000 2 || true
echo
echo "demo finished"
