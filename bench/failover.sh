#!/usr/bin/env bash
# Failover benchmark: a master and its replica (redis-server), a leasegate beside each, an
# open-loop load generator writing through the master's leasegate (proxy A), and a graceful
# failover (POST /v1/failover) A→B, then back B→A, ... BENCH_FAILOVERS times. Reports per
# failover the longest write stall any client saw, p99.9, client errors and lost writes
# (every acknowledged key is read back from the final master), and plots latency around
# the switch. The load generator is the cargo example failover_bench (bench/failover_bench/).
#
# Usage: bench/failover.sh
# Env:
#   BENCH_QUICK=1          smoke test: 2 failovers, 1 s warm-up, 2000 SET/s
#   BENCH_FAILOVERS        failovers (default 20; quick: 2)
#   BENCH_RATE             SET requests/s (default 10000; quick: 2000)
#   BENCH_CLIENTS          connections (default 50)
#   BENCH_VALUE_SIZE       value bytes (default 2048)
#   BENCH_INTERVAL_MS      steady load between failovers (default 1000)
#   BENCH_SYNC_TIMEOUT_MS  failover sync_timeout_ms (default 100)
#   BENCH_PAUSE_TIMEOUT_MS failover pause_timeout_ms (default 500)
#   BENCH_GEN_THREADS      load generator runtime threads (default 1)
#   BENCH_OUT_DIR          output dir (default bench/out): failover.md, failover.svg, failover-timeline.svg
#   BENCH_FOLLOW_MASTER=1  after each failover's measuring window, clients reconnect to the new
#                          master's proxy (default: they stay on proxy A; hand-over only);
#                          results go to failover-follow.* instead of failover.*
#   BENCH_EXTRA_ARGS       more arguments for failover_bench (see --help)
#   LEASEGATE_BIN          use this prebuilt leasegate binary instead of `cargo build --release`
#   BENCH_KEEP_TMP_ON_FAIL=1  keep the temp dir (configs, logs) if the run fails
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
    FAILOVERS=${BENCH_FAILOVERS:-2}
    RATE=${BENCH_RATE:-2000}
    WARMUP_MS=1000
else
    FAILOVERS=${BENCH_FAILOVERS:-20}
    RATE=${BENCH_RATE:-10000}
    WARMUP_MS=2000
fi
CLIENTS=${BENCH_CLIENTS:-50}
VALUE_SIZE=${BENCH_VALUE_SIZE:-2048}
INTERVAL_MS=${BENCH_INTERVAL_MS:-1000}
OUT_DIR=${BENCH_OUT_DIR:-$REPO_ROOT/bench/out}
TOKEN=bench-failover-token
A_ID=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
B_ID=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
NAME=failover
FOLLOW=()
if [[ "${BENCH_FOLLOW_MASTER:-0}" == 1 ]]; then
    NAME=failover-follow
    FOLLOW=(--follow-master)
fi

ensure_redis_packages
bench_init

build_leasegate
build_example failover_bench EXAMPLE_BIN

# The nodes: master A, replica B.
start_redis_node redis-a REDIS_A --repl-diskless-sync-delay 0
REDIS_A_PID=$SPAWNED_PID
start_redis_node redis-b REDIS_B --repl-diskless-sync-delay 0 --replicaof 127.0.0.1 "$REDIS_A"
REDIS_B_PID=$SPAWNED_PID
wait_replication_up redis-b "$REDIS_B"

# A leasegate beside each node, with an admin API (token) and the lease in block-write mode.
leasegate_yaml() { # NODE_PORT NODE_ID ADMIN_PORT
    cat <<EOF
backend:
  addr: 127.0.0.1:$1
node_id: $2
admin:
  listen: 127.0.0.1:$3
  token: $TOKEN
control:
  allow_from: [127.0.0.1]
lease:
  mode: block-write
  probe_interval_ms: 100
EOF
}
free_port ADMIN_A
free_port ADMIN_B
start_leasegate lg-a "$(leasegate_yaml "$REDIS_A" "$A_ID" "$ADMIN_A")"
start_leasegate lg-b "$(leasegate_yaml "$REDIS_B" "$B_ID" "$ADMIN_B")"
PROXY_A=${TARGET_PORT[lg-a]}
PROXY_B=${TARGET_PORT[lg-b]}
wait_http lg-a "http://127.0.0.1:$ADMIN_A/healthz" "${TARGET_PID[lg-a]}"
wait_http lg-b "http://127.0.0.1:$ADMIN_B/healthz" "${TARGET_PID[lg-b]}"

# The lease: A is master at epoch 1 (long TTL: no controller renews it here); B learns the epoch.
for port in "$PROXY_A" "$PROXY_B"; do
    out=$(redis-cli -p "$port" CLUSTERX HEARTBEAT "$A_ID" 600000 1 2>&1)
    [[ "$out" != *ERR* && "$out" != *NOPERM* ]] || die "heartbeat to port $port refused: $out"
done
curl -sSf "http://127.0.0.1:$ADMIN_A/v1/status" | grep -q '"valid":true' ||
    die "proxy A holds no valid lease: $(curl -sS "http://127.0.0.1:$ADMIN_A/v1/status")"
[[ $(redis-cli -p "$PROXY_A" SET fo:probe 1) == OK ]] || die "a write through proxy A failed"
redis-cli -p "$REDIS_A" DEL fo:probe >/dev/null

NOTE="Host: $(nproc) CPUs, $(redis-server --version | sed -n 's/.*\(v=[^ ]*\).*/redis-server \1/p'), leasegate $(
    cd "$REPO_ROOT" && git describe --always --dirty 2>/dev/null || echo '?'
) (release build); everything (2 redis-server, 2 leasegate, load generator) on this host, nothing pinned."

mkdir -p "$OUT_DIR"
log "running failover_bench: $FAILOVERS failovers, $RATE SET/s, $CLIENTS connections, $VALUE_SIZE B values"
rc=0
# shellcheck disable=SC2086
"$EXAMPLE_BIN" \
    --proxy-a "127.0.0.1:$PROXY_A" --proxy-b "127.0.0.1:$PROXY_B" \
    --admin-a "127.0.0.1:$ADMIN_A" --admin-b "127.0.0.1:$ADMIN_B" \
    --redis-a "127.0.0.1:$REDIS_A" --redis-b "127.0.0.1:$REDIS_B" \
    --token "$TOKEN" --node-a "$A_ID" --node-b "$B_ID" \
    --failovers "$FAILOVERS" --rate "$RATE" --connections "$CLIENTS" --value-size "$VALUE_SIZE" \
    --warmup-ms "$WARMUP_MS" --interval-ms "$INTERVAL_MS" \
    --sync-timeout-ms "${BENCH_SYNC_TIMEOUT_MS:-100}" --pause-timeout-ms "${BENCH_PAUSE_TIMEOUT_MS:-500}" \
    --threads "${BENCH_GEN_THREADS:-1}" --out-dir "$OUT_DIR" --name "$NAME" --note "$NOTE" "${FOLLOW[@]}" \
    ${BENCH_EXTRA_ARGS:-} || rc=$?

for name in redis-a redis-b lg-a lg-b; do
    case $name in
    redis-a) pid=$REDIS_A_PID ;;
    redis-b) pid=$REDIS_B_PID ;;
    *) pid=${TARGET_PID[$name]} ;;
    esac
    kill -0 "$pid" 2>/dev/null || warn "$name (pid $pid) died during the benchmark"
done
# Leasegate warnings during the run (hand-over failures, failover errors) help explain results.
for name in lg-a lg-b; do
    if grep -qiE 'warn|error' "$BENCH_TMP/$name.log"; then
        warn "$name log (warnings/errors, last 20):"
        grep -iE 'warn|error' "$BENCH_TMP/$name.log" | tail -20 | sed 's/^/    /' >&2
    fi
done
log "sessions: A $(redis-cli -p "$REDIS_A" INFO clients | tr -d '\r' | grep connected_clients), B $(redis-cli -p "$REDIS_B" INFO clients | tr -d '\r' | grep connected_clients)"
((rc == 0)) || die "failover_bench reported failures (exit $rc): see $OUT_DIR/$NAME.md"
log "done: $OUT_DIR/$NAME.md, $OUT_DIR/$NAME.svg, $OUT_DIR/$NAME-timeline.svg"
