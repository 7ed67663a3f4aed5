#!/usr/bin/env bash
# Failover benchmark: a master and its replica, a leasegate beside each, an open-loop load
# generator writing through the master's leasegate (proxy A), and a graceful failover A→B, then
# back B→A, ... BENCH_FAILOVERS times. Reports per failover the longest write stall any client
# saw, p99.9, client errors and lost writes (every acknowledged key is read back from the final
# master's node, bypassing the proxies), and plots latency around the switch. The load generator
# is the cargo example failover_bench (bench/failover_bench/).
#
# The nodes (BENCH_NODE):
#   redis    (default) two redis-server, B a replica of A; failovers with POST /v1/failover on
#            the current master's leasegate (it promotes B with REPLICAOF NO ONE).
#   kvrocks-standalone
#            two real standalone Kvrocks ($LEASEGATE_KVROCKS, else ../shared/kvrocks/kvrocks beside
#            the repository), B started with `slaveof 127.0.0.1 <A's node port>` (the node's own
#            address, as an operator would; leasegate re-attaches it to itself when it times a
#            promotion), a leasegate beside each as for redis (lease by one long CLUSTERX
#            HEARTBEAT); failovers with POST /v1/failover on the current master's leasegate
#            (SLAVEOF NO ONE promotes at the next tick of the replica's 100 ms replication timer).
#            NAME failover-kvrocks-standalone.
#   kvrocks  two real Kvrocks in cluster mode ($LEASEGATE_KVROCKS, else ../shared/kvrocks/kvrocks
#            beside the repository), run by the fake controller (bench/fake_controller.rs, the
#            tests' controller): it registers the nodes by their leasegates' addresses (ids A/B),
#            pushes the topology (CLUSTERX SETNODEID/SETNODES) and grants leases by heartbeat
#            (CLUSTERX HEARTBEAT, TTL BENCH_LEASE_MS, every third of it). Who runs a failover
#            (BENCH_FLOW):
#              leasegate   (default) POST /v1/failover on the current master's leasegate; in
#                          cluster mode it pauses, waits for the replica and switches through
#                          the controller's shard failover.
#              controller  the controller's shard failover with wait_for_sync (the
#                          kvrocks-controller PR #389 flow): CLIENT PAUSE <ms> WRITE to the
#                          master's leasegate, INFO replication polled until the replica caught
#                          up, topology pushed, new master heartbeated, CLIENT UNPAUSE.
#            The controller times its push to the new master (the node's own promotion); the
#            report shows it beside each failover's stall.
#            BENCH_CONTROLLER=real runs the real Apache kvrocks-controller instead
#            ($LEASEGATE_KVCTL, else ../shared/kvrocks-controller/kvctl-server; 1.2.0: no
#            heartbeats, no pause): the Kvrocks run with requirepass/masterauth BENCH_PASSWORD,
#            each leasegate has it as backend.password and control.password and takes its lease
#            by polling the controller's cluster (poll_interval_ms BENCH_POLL_MS, ttl_ms
#            BENCH_LEASE_MS, failure_detection_ms BENCH_FAILURE_DETECTION_MS); the cluster is
#            created at the controller with the leasegates' addresses and the password; the load
#            generator AUTHs with it. Failovers: BENCH_FLOW=leasegate only, POST /v1/failover on
#            the current master's leasegate (the request `leasegate failover --from <admin>
#            --to <admin>` sends, with its default lease_ttl_ms 10000).
#
# When the failovers start (BENCH_SCHEDULE): fixed waits exactly BENCH_INTERVAL_MS after each
# failover's reply (every failover then lands at the same phase of a Kvrocks replica's 100 ms
# replication tick); random (default) adds a uniform random 0..BENCH_PHASE_JITTER_MS to each wait
# (and to the warm-up before the first), from a PRNG seeded with BENCH_SEED (default: from the
# clock; the seed is printed at the start and in the report, so a run can be repeated).
# Each leasegate-run failover asks for promotion timing or not (BENCH_TIMING; `promotion_timing`
# of the request): alternate (default) runs failover 1 with, 2 without, 3 with, ..., and the
# report puts the two modes side by side. With BENCH_FLOW=controller the same modes set the
# leasegates' pause.promotion_timing (the controller's CLIENT PAUSE timed or not) in their config
# files and reload them before each failover.
#
# Usage: bench/failover.sh
# Env:
#   BENCH_NODE             redis (default) | kvrocks-standalone | kvrocks
#   BENCH_FLOW             leasegate (default) | controller (kvrocks only) | upgrade (no failover:
#                          each event is an in-place upgrade of A's leasegate, SIGUSR2)
#   BENCH_SCHEDULE         random (default) | fixed: the waits between failovers (see above)
#   BENCH_PHASE_JITTER_MS  random: the random part of each wait, uniform 0..this ms (default 1000)
#   BENCH_SEED             random: the PRNG seed (a u64; default from the clock)
#   BENCH_TIMING           alternate (default) | on | off: promotion_timing of each failover
#   BENCH_LEASEGATE_THREADS  the leasegates' `threads:` setting (default: not set, one session
#                          thread per CPU)
#   BENCH_CONTROLLER       fake (default) | real (kvrocks, BENCH_FLOW=leasegate): the controller;
#                          real: NAME failover-kvrocks-real
#   BENCH_PASSWORD         real: the nodes' and leasegates' password (default bench-failover-pw)
#   BENCH_POLL_MS          real: controller.poll_interval_ms (default 100)
#   BENCH_FAILURE_DETECTION_MS  real: controller.failure_detection_ms (default 3000: the
#                          controller's ping_interval_seconds 1 x max_ping_count 3)
#   BENCH_INTERVAL_JITTER_MS  the old name of BENCH_PHASE_JITTER_MS, used when that is unset;
#                          BENCH_INTERVAL_JITTER_MS=0 with BENCH_SCHEDULE unset selects the fixed
#                          schedule (as before, when 0 meant no jitter)
#   BENCH_QUICK=1          smoke test: 2 failovers, 1 s warm-up, 2000 SET/s
#   BENCH_FAILOVERS        failovers (default 20; quick: 2)
#   BENCH_RATE             SET requests/s (default 10000; quick: 2000)
#   BENCH_CLIENTS          connections (default 50)
#   BENCH_VALUE_SIZE       value bytes (default 2048)
#   BENCH_INTERVAL_MS      steady load between failovers (default 1000)
#   BENCH_SYNC_TIMEOUT_MS  failover sync_timeout_ms (default 100)
#   BENCH_PAUSE_TIMEOUT_MS failover pause_timeout_ms (default 500)
#   BENCH_LEASE_MS         kvrocks: the controller's lease TTL (default 3000; real: controller.ttl_ms,
#                          default 1500)
#   BENCH_GEN_THREADS      load generator runtime threads (default 1)
#   BENCH_OUT_DIR          output dir (default bench/out): NAME.md, NAME.svg, NAME-timeline.svg, NAME
#                          failover (redis), failover-kvrocks-standalone, failover-kvrocks-leasegate
#                          or failover-kvrocks-controller
#   BENCH_FOLLOW_MASTER=1  after each failover's measuring window, clients reconnect to the new
#                          master's proxy (default: they stay on proxy A; hand-over only);
#                          NAME gets -follow (redis: failover-follow)
#   BENCH_EXTRA_ARGS       more arguments for failover_bench (see --help)
#   LEASEGATE_BIN          use this prebuilt leasegate binary instead of `cargo build --release`
#   LEASEGATE_KVROCKS      the Kvrocks server binary (BENCH_NODE=kvrocks, kvrocks-standalone)
#   LEASEGATE_KVCTL        the kvrocks-controller server binary (BENCH_CONTROLLER=real)
#   BENCH_KEEP_TMP_ON_FAIL=1  keep the temp dir (configs, logs) if the run fails
#   BENCH_KEEP_TMP=1       keep it always
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
NODE=${BENCH_NODE:-redis}
FLOW=${BENCH_FLOW:-leasegate}
CONTROLLER=${BENCH_CONTROLLER:-fake}
if [[ $CONTROLLER == real ]]; then
    LEASE_MS=${BENCH_LEASE_MS:-1500}
else
    LEASE_MS=${BENCH_LEASE_MS:-3000}
fi
# BENCH_INTERVAL_JITTER_MS: the old name of the phase jitter; 0 there meant the fixed schedule.
if [[ -z "${BENCH_SCHEDULE:-}" && "${BENCH_INTERVAL_JITTER_MS:-}" == 0 ]]; then
    SCHEDULE=fixed
else
    SCHEDULE=${BENCH_SCHEDULE:-random}
fi
JITTER_MS=${BENCH_PHASE_JITTER_MS:-${BENCH_INTERVAL_JITTER_MS:-1000}}
SEED=${BENCH_SEED:-}
TIMING=${BENCH_TIMING:-alternate}
LG_THREADS=${BENCH_LEASEGATE_THREADS:-}
PASSWORD=${BENCH_PASSWORD:-bench-failover-pw}
POLL_MS=${BENCH_POLL_MS:-100}
FAILURE_DETECTION_MS=${BENCH_FAILURE_DETECTION_MS:-3000}
TOKEN=bench-failover-token
A_ID=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
B_ID=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb

case $NODE in
redis | kvrocks | kvrocks-standalone) ;;
*) die "BENCH_NODE must be redis, kvrocks-standalone or kvrocks (got '$NODE')" ;;
esac
case $FLOW in
leasegate | controller | upgrade) ;;
*) die "BENCH_FLOW must be leasegate, controller or upgrade (got '$FLOW')" ;;
esac
[[ $FLOW != upgrade || $NODE != kvrocks ]] ||
    die "BENCH_FLOW=upgrade runs with BENCH_NODE=redis or kvrocks-standalone"
[[ $NODE == kvrocks || $FLOW != controller ]] ||
    die "BENCH_FLOW=controller needs BENCH_NODE=kvrocks (the controller's shard failover runs a Kvrocks cluster)"
case $CONTROLLER in
fake | real) ;;
*) die "BENCH_CONTROLLER must be fake or real (got '$CONTROLLER')" ;;
esac
[[ $CONTROLLER == fake || ($NODE == kvrocks && $FLOW == leasegate) ]] ||
    die "BENCH_CONTROLLER=real needs BENCH_NODE=kvrocks and BENCH_FLOW=leasegate (kvrocks-controller 1.2.0 has no wait_for_sync)"
[[ "$LEASE_MS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_LEASE_MS must be a positive integer"
[[ "$JITTER_MS" =~ ^[0-9]+$ ]] || die "BENCH_PHASE_JITTER_MS (BENCH_INTERVAL_JITTER_MS) must be a non-negative integer"
case $SCHEDULE in
fixed | random) ;;
*) die "BENCH_SCHEDULE must be fixed or random (got '$SCHEDULE')" ;;
esac
[[ -z "$SEED" || "$SEED" =~ ^[0-9]+$ ]] || die "BENCH_SEED must be a non-negative integer (a u64)"
case $TIMING in
on | off | alternate) ;;
*) die "BENCH_TIMING must be on, off or alternate (got '$TIMING')" ;;
esac
[[ -z "$LG_THREADS" || "$LG_THREADS" =~ ^[0-9]+$ ]] || die "BENCH_LEASEGATE_THREADS must be a non-negative integer"
# The leasegates' config line for it (appended to each leasegate's config).
LG_THREADS_YAML=${LG_THREADS:+threads: $LG_THREADS}

if [[ $NODE == redis ]]; then
    NAME=failover
elif [[ $NODE == kvrocks-standalone ]]; then
    NAME=failover-kvrocks-standalone
    KVROCKS_BIN=${LEASEGATE_KVROCKS:-$REPO_ROOT/../shared/kvrocks/kvrocks}
    [[ -f "$KVROCKS_BIN" && -x "$KVROCKS_BIN" ]] ||
        die "BENCH_NODE=kvrocks-standalone: no Kvrocks server binary at $KVROCKS_BIN (set LEASEGATE_KVROCKS to one)"
else
    NAME=failover-kvrocks-$FLOW
    KVROCKS_BIN=${LEASEGATE_KVROCKS:-$REPO_ROOT/../shared/kvrocks/kvrocks}
    [[ -f "$KVROCKS_BIN" && -x "$KVROCKS_BIN" ]] ||
        die "BENCH_NODE=kvrocks: no Kvrocks server binary at $KVROCKS_BIN (set LEASEGATE_KVROCKS to one)"
    if [[ $CONTROLLER == real ]]; then
        NAME=failover-kvrocks-real
        KVCTL_BIN=${LEASEGATE_KVCTL:-$REPO_ROOT/../shared/kvrocks-controller/kvctl-server}
        [[ -f "$KVCTL_BIN" && -x "$KVCTL_BIN" ]] ||
            die "BENCH_CONTROLLER=real: no kvrocks-controller binary at $KVCTL_BIN (set LEASEGATE_KVCTL to one)"
        # Every redis-cli here (nodes and proxies) authenticates with it.
        export REDISCLI_AUTH=$PASSWORD
    fi
fi
FOLLOW=()
if [[ "${BENCH_FOLLOW_MASTER:-0}" == 1 ]]; then
    NAME=$NAME-follow
    FOLLOW=(--follow-master)
fi

ensure_redis_packages
bench_init

build_leasegate
build_example failover_bench EXAMPLE_BIN
[[ $NODE != kvrocks || $CONTROLLER == real ]] || build_example fake_controller FAKE_CONTROLLER_BIN

# Processes whose death during the run is reported: name -> pid.
declare -A WATCH=()

# leasegate_yaml NODE_PORT NODE_ID ADMIN_PORT MORE_YAML: a leasegate beside a node, with an admin
# API (token); loopback is the controller. (BENCH_LEASEGATE_THREADS: its threads: line.)
leasegate_yaml() {
    cat <<EOF
backend:
  addr: 127.0.0.1:$1
node_id: $2
admin:
  listen: 127.0.0.1:$3
  token: $TOKEN
control:
  allow_from: [127.0.0.1]
$LG_THREADS_YAML
$4
EOF
}

# redis: master A, replica B (REPLICAOF); A holds the lease at epoch 1 by one long heartbeat.
setup_redis() {
    start_redis_node redis-a NODE_A --repl-diskless-sync-delay 0
    WATCH[redis-a]=$SPAWNED_PID
    start_redis_node redis-b NODE_B --repl-diskless-sync-delay 0 --replicaof 127.0.0.1 "$NODE_A"
    WATCH[redis-b]=$SPAWNED_PID
    wait_replication_up redis-b "$NODE_B"
    start_lease_pair
    NODES_NOTE=$(redis-server --version | sed -n 's/.*\(v=[^ ]*\).*/redis-server \1/p')
    NODE_KIND="redis-server (B a replica of A)"
    HOSTED="2 redis-server, 2 leasegate, load generator"
    BENCH_ARGS=()
}

# start_lease_pair: a leasegate beside each node (NODE_A, NODE_B; ports PROXY_A/B, admin ADMIN_A/B),
# roles probed every 100 ms, writes blocked without a lease; A is given the lease at epoch 1 by
# one long heartbeat (no controller renews it here).
start_lease_pair() {
    local lease="lease:
  mode: block-write
  probe_interval_ms: 100"
    free_port ADMIN_A
    free_port ADMIN_B
    start_leasegate lg-a "$(leasegate_yaml "$NODE_A" "$A_ID" "$ADMIN_A" "$lease")"
    start_leasegate lg-b "$(leasegate_yaml "$NODE_B" "$B_ID" "$ADMIN_B" "$lease")"
    PROXY_A=${TARGET_PORT[lg-a]}
    PROXY_B=${TARGET_PORT[lg-b]}
    wait_http lg-a "http://127.0.0.1:$ADMIN_A/healthz" "${TARGET_PID[lg-a]}"
    wait_http lg-b "http://127.0.0.1:$ADMIN_B/healthz" "${TARGET_PID[lg-b]}"

    # The lease: A is master at epoch 1 (long TTL: no controller renews it here); B learns the epoch.
    local port out
    for port in "$PROXY_A" "$PROXY_B"; do
        out=$(redis-cli -p "$port" CLUSTERX HEARTBEAT "$A_ID" 600000 1 2>&1)
        [[ "$out" != *ERR* && "$out" != *NOPERM* ]] || die "heartbeat to port $port refused: $out"
    done
}

# start_kvrocks NAME PORT_VAR [KVROCKS_ARGS...]: a standalone Kvrocks on a free port (stored in
# PORT_VAR), with its own dir, extra args appended.
start_kvrocks() {
    local name=$1 var=$2 port dir
    shift 2
    free_port port
    dir="$BENCH_TMP/$name"
    mkdir -p "$dir"
    spawn "$name" "$KVROCKS_BIN" --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize no "$@"
    WATCH[$name]=$SPAWNED_PID
    wait_ping "$name" "$port" "$SPAWNED_PID"
    printf -v "$var" '%s' "$port"
}

# start_kvrocks_node NAME PORT_VAR [KVROCKS_ARGS...]: a Kvrocks in cluster mode on a free port
# (stored in PORT_VAR), with its own dir, extra args appended.
start_kvrocks_node() {
    start_kvrocks "$1" "$2" --cluster-enabled yes "${@:3}"
}

# kvrocks-standalone: two standalone Kvrocks, B started as a replica of A's node (its own address,
# as an operator would start it), a leasegate beside each, A holding the lease.
setup_kvrocks_standalone() {
    start_kvrocks kvrocks-a NODE_A
    start_kvrocks kvrocks-b NODE_B --slaveof "127.0.0.1 $NODE_A"
    wait_replication_up kvrocks-b "$NODE_B"
    start_lease_pair
    NODES_NOTE="$("$KVROCKS_BIN" --version 2>/dev/null | head -1), standalone"
    NODE_KIND="standalone Kvrocks (B started with \`slaveof 127.0.0.1 <A's node port>\`)"
    HOSTED="2 Kvrocks, 2 leasegate, load generator"
    BENCH_ARGS=()
}

# kvrocks: two Kvrocks in cluster mode and the fake controller, which registers them by their
# leasegates' addresses (A master, B its replica), pushes the topology and heartbeats.
setup_kvrocks() {
    start_kvrocks_node kvrocks-a NODE_A
    start_kvrocks_node kvrocks-b NODE_B
    free_port PROXY_A
    free_port PROXY_B
    free_port ADMIN_A
    free_port ADMIN_B
    free_port CONTROLLER_PORT
    local url=http://127.0.0.1:$CONTROLLER_PORT
    # The controller first (the leasegates poll it from their start); it pushes the topology
    # once both leasegates accept it, then heartbeats.
    spawn controller "$FAKE_CONTROLLER_BIN" --port "$CONTROLLER_PORT" --delay-ms 0 \
        --namespace bench --cluster bench \
        --node "$A_ID=127.0.0.1:$PROXY_A" --node "$B_ID=127.0.0.1:$PROXY_B" \
        --push --lease-heartbeat-ms "$LEASE_MS"
    WATCH[controller]=$SPAWNED_PID
    wait_http controller "$url/count" "$SPAWNED_PID"

    # Roles come from the topology (no probe); leases from the controller's heartbeats, and from
    # its topology (polled every second, and at once when a topology promotes the node).
    local more="lease:
  mode: block-write
  probe_interval_ms: 0
controller:
  url: $url
  namespace: bench
  cluster: bench
  poll_interval_ms: 1000
  ttl_ms: $LEASE_MS
  timeout_ms: 2000"
    start_leasegate lg-a "$(leasegate_yaml "$NODE_A" "$A_ID" "$ADMIN_A" "$more")" "$PROXY_A"
    start_leasegate lg-b "$(leasegate_yaml "$NODE_B" "$B_ID" "$ADMIN_B" "$more")" "$PROXY_B"
    wait_http lg-a "http://127.0.0.1:$ADMIN_A/healthz" "${TARGET_PID[lg-a]}"
    wait_http lg-b "http://127.0.0.1:$ADMIN_B/healthz" "${TARGET_PID[lg-b]}"

    local i ready='fake controller: ready'
    for ((i = 0; i < 300; i++)); do
        grep -q "$ready" "$BENCH_TMP/controller.log" && break
        kill -0 "${WATCH[controller]}" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "$ready" "$BENCH_TMP/controller.log"; then
        warn "controller log:"
        sed 's/^/    /' "$BENCH_TMP/controller.log" >&2 || true
        die "the fake controller did not push the topology and heartbeat the master"
    fi
    log "controller: topology pushed, A heartbeated (lease TTL $LEASE_MS ms)"
    wait_replication_up kvrocks-b "$NODE_B"

    NODES_NOTE="$("$KVROCKS_BIN" --version 2>/dev/null | head -1) in cluster mode"
    NODE_KIND="Kvrocks in cluster mode (B a replica of A), registered by their leasegates' addresses \
with a fake kvrocks-controller (bench/fake_controller.rs) that pushes the topology and grants \
$LEASE_MS ms leases by heartbeat"
    HOSTED="2 Kvrocks, 2 leasegate, the fake controller, load generator"
    BENCH_ARGS=(--controller-url "$url" --namespace bench --cluster bench --shard 0 --flow "$FLOW")
}

# kvctl_api METHOD PATH [BODY]: one call to the real controller's HTTP API; prints the body and
# then the HTTP status on a line of its own.
kvctl_api() {
    local args=(-sS --max-time 5 -X "$1" -w '\n%{http_code}\n')
    [[ -z "${3:-}" ]] || args+=(-H 'Content-Type: application/json' -d "$3")
    curl "${args[@]}" "$KVCTL_URL$2" || printf '\n000\n'
}

# polls_of ADMIN_PORT OUTCOME: leasegate_controller_polls_total{outcome=OUTCOME} of a leasegate.
polls_of() {
    metrics_scrape "$1" | awk -v s="leasegate_controller_polls_total{outcome=\"$2\"}" \
        '$1 == s { v = $2 } END { print v + 0 }'
}

# kvrocks with the real Apache kvrocks-controller: two passworded Kvrocks in cluster mode, each
# behind a leasegate that polls the controller for its lease; the cluster is created at the
# controller with the leasegates' addresses and the password (the controller assigns the ids,
# AUTHs and pushes CLUSTERX SETNODEID/SETNODES through the leasegates).
setup_kvrocks_real() {
    start_kvrocks_node kvrocks-a NODE_A --requirepass "$PASSWORD" --masterauth "$PASSWORD"
    start_kvrocks_node kvrocks-b NODE_B --requirepass "$PASSWORD" --masterauth "$PASSWORD"
    free_port PROXY_A
    free_port PROXY_B
    free_port ADMIN_A
    free_port ADMIN_B
    free_port CONTROLLER_PORT
    free_port RAFT_PORT
    KVCTL_URL=http://127.0.0.1:$CONTROLLER_PORT
    # heartbeat 1 s / election 2 s: the fastest election (else 20-40 s); probes every second,
    # 3 failed ones before an automatic failover (failure detection 3 s).
    mkdir -p "$BENCH_TMP/kvctl"
    printf '%s\n' "addr: \"127.0.0.1:$CONTROLLER_PORT\"" "storage_type: raft" "raft:" "  id: 1" \
        "  data_dir: \"$BENCH_TMP/kvctl/raft\"" "  cluster_state: \"new\"" "  peers:" \
        "    - \"http://127.0.0.1:$RAFT_PORT\"" "  heartbeat_seconds: 1" "  election_seconds: 2" \
        "controller:" "  failover:" "    ping_interval_seconds: 1" "    max_ping_count: 3" \
        >"$BENCH_TMP/kvctl.yaml"
    spawn controller "$KVCTL_BIN" -c "$BENCH_TMP/kvctl.yaml"
    WATCH[controller]=$SPAWNED_PID
    # Ready once raft has a leader (the API may answer before that and refuse writes).
    local i out leader=0
    for ((i = 0; i < 300; i++)); do
        kill -0 "${WATCH[controller]}" 2>/dev/null || break
        out=$(curl -sS --max-time 2 "$KVCTL_URL/api/v1/raft/peers" 2>/dev/null || true)
        leader=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["leader"])' "$out" 2>/dev/null || echo 0)
        [[ "$leader" == 0 ]] || break
        sleep 0.1
    done
    if [[ "$leader" == 0 ]]; then
        sed 's/^/    /' "$BENCH_TMP/controller.log" >&2 || true
        die "kvctl-server elected no leader (last: ${out:-<none>})"
    fi
    log "controller: kvctl-server at $KVCTL_URL, raft leader $leader"

    local ctl_yaml="control:
  password: $PASSWORD
lease:
  mode: block-write
  probe_interval_ms: 200
  safety_margin_ms: 100
controller:
  url: $KVCTL_URL
  namespace: bench
  cluster: bench
  poll_interval_ms: $POLL_MS
  ttl_ms: $LEASE_MS
  timeout_ms: 500
  failure_detection_ms: $FAILURE_DETECTION_MS
$LG_THREADS_YAML"
    local name node admin proxy
    for name in a b; do
        if [[ $name == a ]]; then
            node=$NODE_A admin=$ADMIN_A proxy=$PROXY_A
        else
            node=$NODE_B admin=$ADMIN_B proxy=$PROXY_B
        fi
        start_leasegate "lg-$name" "backend:
  addr: 127.0.0.1:$node
  password: $PASSWORD
admin:
  listen: 127.0.0.1:$admin
  token: $TOKEN
$ctl_yaml" "$proxy"
        wait_http "lg-$name" "http://127.0.0.1:$admin/healthz" "${TARGET_PID[lg-$name]}"
    done

    # The namespace, then the cluster (raft applies a write after answering it: "not found"
    # for a moment), one shard: A master, B its replica.
    out=$(kvctl_api POST /api/v1/namespaces '{"namespace":"bench"}')
    [[ $(tail -1 <<<"$out") == 2* ]] || die "create namespace: $out"
    local cluster
    cluster=$(printf '{"name":"bench","nodes":["127.0.0.1:%s","127.0.0.1:%s"],"replicas":2,"password":"%s"}' \
        "$PROXY_A" "$PROXY_B" "$PASSWORD")
    for ((i = 0; i < 100; i++)); do
        out=$(kvctl_api POST /api/v1/namespaces/bench/clusters "$cluster")
        [[ $(tail -1 <<<"$out") == 2* || "$out" != *"not found"* ]] && break
        sleep 0.05
    done
    [[ $(tail -1 <<<"$out") == 2* ]] || die "create cluster: $out"
    for ((i = 0; i < 100; i++)); do
        out=$(kvctl_api GET /api/v1/namespaces/bench/clusters/bench)
        [[ $(tail -1 <<<"$out") == 2* ]] && break
        sleep 0.05
    done
    local ids
    ids=$(python3 -c '
import json, sys
c = json.loads(sys.argv[1])["data"]["cluster"]
nodes = {n["addr"]: n for n in c["shards"][0]["nodes"]}
a, b = nodes[sys.argv[2]], nodes[sys.argv[3]]
assert a["role"] == "master", c
print(a["id"], b["id"])' "$(head -n -1 <<<"$out")" "127.0.0.1:$PROXY_A" "127.0.0.1:$PROXY_B") ||
        die "unexpected cluster: $out"
    read -r A_ID B_ID <<<"$ids"
    log "controller: cluster bench created (A $A_ID master, B $B_ID replica)"

    # A writable (its lease from polling the cluster), B linked, and B's poller settled (it has
    # twice seen a cluster that makes it a replica).
    for ((i = 0; i < 300; i++)); do
        out=$(redis-cli -p "$PROXY_A" SET fo:ready 1 2>&1 || true)
        [[ "$out" != OK ]] || break
        sleep 0.1
    done
    [[ "$out" == OK ]] || die "A never became writable through its leasegate (last: $out)"
    log "A writable through its leasegate"
    wait_replication_up kvrocks-b "$NODE_B"
    for ((i = 0; i < 300; i++)); do
        (($(polls_of "$ADMIN_B" revoked) >= 2)) && break
        sleep 0.1
    done
    redis-cli -p "$NODE_A" DEL fo:ready >/dev/null

    NODES_NOTE="$("$KVROCKS_BIN" --version 2>/dev/null | head -1) in cluster mode, Apache kvrocks-controller 1.2.0"
    NODE_KIND="Kvrocks in cluster mode with requirepass/masterauth (B a replica of A), registered by their \
leasegates' addresses with the real Apache kvrocks-controller 1.2.0 (kvctl-server, raft store, probes every \
1 s, 3 failed before an automatic failover); leases by polling it (poll_interval_ms $POLL_MS, ttl_ms \
$LEASE_MS, failure_detection_ms $FAILURE_DETECTION_MS); the clients AUTH with the password"
    HOSTED="2 Kvrocks, 2 leasegate, kvctl-server, load generator"
    # The request `leasegate failover --from <admin> --to <admin>` sends (its default lease_ttl_ms).
    BENCH_ARGS=(--flow leasegate --password "$PASSWORD" --lease-ttl-ms 10000)
}

if [[ $CONTROLLER == real ]]; then
    setup_kvrocks_real
else
    "setup_${NODE//-/_}"
fi
if [[ $FLOW == controller ]]; then
    # pause.promotion_timing is set per failover (BENCH_TIMING) and reloaded.
    BENCH_ARGS+=(--config-a "$BENCH_TMP/lg-a.yaml" --config-b "$BENCH_TMP/lg-b.yaml")
fi
if [[ $FLOW == upgrade ]]; then
    # Each event upgrades A's leasegate in place: its pid changes.
    BENCH_ARGS+=(--flow upgrade)
    NAME=upgrade${NAME#failover}
else
    WATCH[lg-a]=${TARGET_PID[lg-a]}
fi
WATCH[lg-b]=${TARGET_PID[lg-b]}

curl -sSf "http://127.0.0.1:$ADMIN_A/v1/status" | grep -q '"valid":true' ||
    die "proxy A holds no valid lease: $(curl -sS "http://127.0.0.1:$ADMIN_A/v1/status")"
[[ $(redis-cli -p "$PROXY_A" SET fo:probe 1) == OK ]] || die "a write through proxy A failed"
redis-cli -p "$NODE_A" DEL fo:probe >/dev/null

if [[ "$LEASEGATE_BIN" == "$LEASEGATE_BIN_DEFAULT" ]]; then
    LEASEGATE_NOTE="leasegate $(cd "$REPO_ROOT" && git describe --always --dirty 2>/dev/null || echo '?') (release build)"
else
    LEASEGATE_NOTE="leasegate $LEASEGATE_BIN (prebuilt)"
fi
NOTE="Host: $(nproc) CPUs, $NODES_NOTE, $LEASEGATE_NOTE; everything ($HOSTED) on this host, nothing pinned."
SCHEDULE_ARGS=(--schedule "$SCHEDULE" --phase-jitter-ms "$JITTER_MS" --timing "$TIMING"
    --leasegate-threads "${LG_THREADS:-default}")
[[ -z "$SEED" ]] || SCHEDULE_ARGS+=(--seed "$SEED")

mkdir -p "$OUT_DIR"
log "running failover_bench ($NODE, $CONTROLLER controller, $FLOW-run failovers): $FAILOVERS failovers, $RATE SET/s, $CLIENTS connections, $VALUE_SIZE B values, schedule $SCHEDULE (seed ${SEED:-from the clock}), timing $TIMING"
rc=0
# shellcheck disable=SC2086
"$EXAMPLE_BIN" \
    --proxy-a "127.0.0.1:$PROXY_A" --proxy-b "127.0.0.1:$PROXY_B" \
    --admin-a "127.0.0.1:$ADMIN_A" --admin-b "127.0.0.1:$ADMIN_B" \
    --redis-a "127.0.0.1:$NODE_A" --redis-b "127.0.0.1:$NODE_B" \
    --token "$TOKEN" --node-a "$A_ID" --node-b "$B_ID" --node-kind "$NODE_KIND" \
    --failovers "$FAILOVERS" --rate "$RATE" --connections "$CLIENTS" --value-size "$VALUE_SIZE" \
    --warmup-ms "$WARMUP_MS" --interval-ms "$INTERVAL_MS" "${SCHEDULE_ARGS[@]}" \
    --sync-timeout-ms "${BENCH_SYNC_TIMEOUT_MS:-100}" --pause-timeout-ms "${BENCH_PAUSE_TIMEOUT_MS:-500}" \
    --threads "${BENCH_GEN_THREADS:-1}" --out-dir "$OUT_DIR" --name "$NAME" --note "$NOTE" \
    "${BENCH_ARGS[@]}" "${FOLLOW[@]}" ${BENCH_EXTRA_ARGS:-} || rc=$?

if [[ $FLOW == upgrade ]]; then
    # The last successor is not one of ours: stopped with the rest.
    last=$(curl -sS "http://127.0.0.1:$ADMIN_A/v1/status" | grep -oE '"pid":[0-9]+' | cut -d: -f2 || true)
    [[ -z "$last" ]] || BENCH_PIDS+=("$last")
fi
for name in "${!WATCH[@]}"; do
    kill -0 "${WATCH[$name]}" 2>/dev/null || warn "$name (pid ${WATCH[$name]}) died during the benchmark"
done
# Leasegate (and controller) warnings during the run (hand-over failures, failover errors,
# refused heartbeats) help explain results.
for name in lg-a lg-b controller; do
    [[ -f "$BENCH_TMP/$name.log" ]] || continue
    if grep -qiE 'warn|error|heartbeat:' "$BENCH_TMP/$name.log"; then
        warn "$name log (warnings/errors, last 20):"
        grep -iE 'warn|error|heartbeat:' "$BENCH_TMP/$name.log" | tail -20 | sed 's/^/    /' >&2
    fi
done
clients_of() { redis-cli -p "$1" INFO clients | tr -d '\r' | grep connected_clients; }
log "sessions: A $(clients_of "$NODE_A"), B $(clients_of "$NODE_B")"
((rc == 0)) || die "failover_bench reported failures (exit $rc): see $OUT_DIR/$NAME.md"
log "done: $OUT_DIR/$NAME.md, $OUT_DIR/$NAME.svg, $OUT_DIR/$NAME-timeline.svg"
