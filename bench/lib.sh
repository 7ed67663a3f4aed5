# shellcheck shell=bash
# Helpers for leasegate benchmarks. Sourced by bench/*.sh (which set -euo pipefail).
#
# State shared with the caller:
#   REPO_ROOT      repository root (set by the caller before sourcing, or derived here)
#   BENCH_TMP      temp dir holding configs and logs (removed on exit)
#   REDIS_PORT     port of the backing redis-server (after start_redis)
#   TARGET_PORT    assoc array: target name -> loopback port clients connect to
#   TARGET_PID     assoc array: target name -> pid of the process serving it
#   BENCH_PIDS     every pid we started; killed by bench_cleanup

: "${REPO_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
BENCH_TMP=""
REDIS_PORT=""
declare -gA TARGET_PORT=()
declare -gA TARGET_PID=()
# Targets that speak TLS (1): redis-benchmark and redis-cli use tls_client_args.
declare -gA TARGET_TLS=()
declare -ga BENCH_PIDS=()
declare -ga BENCH_USED_PORTS=()

# Make /usr/sbin visible (nutcracker and haproxy live there).
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- setup / teardown

bench_init() {
    BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/leasegate-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    for pid in "${BENCH_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "pid $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" ]]; then
        if [[ "${BENCH_KEEP_TMP:-0}" == 1 || ($rc -ne 0 && "${BENCH_KEEP_TMP_ON_FAIL:-0}" == 1) ]]; then
            warn "keeping $BENCH_TMP for inspection"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    exit "$rc"
}

# ensure_packages: install the Debian packages providing missing binaries.
ensure_packages() {
    local -a missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-benchmark >/dev/null || missing+=(redis-tools)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v nutcracker >/dev/null || missing+=(nutcracker)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v python3 >/dev/null || missing+=(python3)
    ((${#missing[@]})) || return 0
    # de-duplicate
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing missing packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    hash -r
}

# free_port VAR: store in VAR a currently free loopback TCP port not handed out before in this
# run. (Sets a variable instead of printing so the used-port list survives: no subshell.)
free_port() {
    local p i
    for ((i = 0; i < 20; i++)); do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
        if [[ " ${BENCH_USED_PORTS[*]} " != *" $p "* ]]; then
            BENCH_USED_PORTS+=("$p")
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "could not find a free port"
}

# spawn NAME CMD...: start CMD in the background, logs to $BENCH_TMP/NAME.log; sets SPAWNED_PID.
# (not run in a subshell by callers, so BENCH_PIDS is updated in the main shell)
spawn() {
    local name=$1
    shift
    "$@" >"$BENCH_TMP/$name.log" 2>&1 </dev/null &
    SPAWNED_PID=$!
    BENCH_PIDS+=("$SPAWNED_PID")
}

# wait_ping NAME PORT PID: wait (bounded) until PING on PORT returns PONG.
wait_ping() { # NAME PORT PID [redis-cli args, e.g. TLS]
    local name=$1 port=$2 pid=$3 i out
    local -a args
    read -r -a args <<<"${4:-}"
    for ((i = 0; i < ${BENCH_PING_RETRIES:-100}; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            warn "$name (pid $pid) exited; its log:"
            sed 's/^/    /' "$BENCH_TMP/$name.log" >&2 || true
            die "$name failed to start"
        fi
        out=$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" "${args[@]}" PING 2>/dev/null || true)
        if [[ "$out" == PONG ]]; then
            log "$name is up on 127.0.0.1:$port (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    warn "$name log:"
    sed 's/^/    /' "$BENCH_TMP/$name.log" >&2 || true
    die "$name on port $port did not answer PING with PONG (last reply: '${out:-<none>}')"
}

# register_target NAME PORT PID
register_target() {
    TARGET_PORT[$1]=$2
    TARGET_PID[$1]=$3
}

# ---------------------------------------------------------------- servers

start_redis() {
    free_port REDIS_PORT
    local tls=()
    if [[ "${BENCH_REDIS_TLS:-0}" == 1 ]]; then
        # A TLS port too (for the direct-tls target); no client certificates asked.
        make_bench_certs
        free_port REDIS_TLS_PORT
        tls=(--tls-port "$REDIS_TLS_PORT" --tls-cert-file "$BENCH_TLS_DIR/server.crt"
            --tls-key-file "$BENCH_TLS_DIR/server.key" --tls-ca-cert-file "$BENCH_TLS_DIR/ca.crt"
            --tls-auth-clients no)
    fi
    spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize no --dir "$BENCH_TMP" --protected-mode no "${tls[@]}"
    wait_ping redis "$REDIS_PORT" "$SPAWNED_PID"
    REDIS_PID=$SPAWNED_PID
}

# make_bench_certs: a CA and a server certificate for 127.0.0.1 (ECDSA P-256, as
# a current deployment would use) in $BENCH_TLS_DIR: ca.crt, server.crt,
# server.key, and server.pem (certificate and key, for HAProxy). Once per run.
make_bench_certs() {
    BENCH_TLS_DIR="$BENCH_TMP/tls"
    [[ -f "$BENCH_TLS_DIR/server.pem" ]] && return 0
    mkdir -p "$BENCH_TLS_DIR"
    (
        cd "$BENCH_TLS_DIR"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=leasegate bench CA" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
            -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile san.ext -out server.crt 2>/dev/null
        cat server.crt server.key >server.pem
    ) || die "openssl could not make the benchmark's certificates"
}

# What redis-benchmark and redis-cli need to speak TLS to a target marked TLS.
tls_client_args() { # NAME -> args (none for a plaintext target)
    if [[ "${TARGET_TLS[$1]:-0}" == 1 ]]; then
        echo "--tls --cacert $BENCH_TLS_DIR/ca.crt"
    fi
}

# start_direct_tls NAME: clients talk TLS to redis itself (BENCH_REDIS_TLS=1).
start_direct_tls() {
    [[ -n "${REDIS_TLS_PORT:-}" ]] || die "direct-tls needs BENCH_REDIS_TLS=1 (set by the script when asked)"
    register_target "$1" "$REDIS_TLS_PORT" "$REDIS_PID"
    TARGET_TLS[$1]=1
}

# start_leasegate_tls NAME [EXTRA]: a leasegate whose TLS listener is the target.
start_leasegate_tls() {
    local name=$1 tls_port
    make_bench_certs
    free_port tls_port
    start_leasegate "$name" "tls:
  listen: 127.0.0.1:$tls_port
  cert_file: $BENCH_TLS_DIR/server.crt
  key_file: $BENCH_TLS_DIR/server.key
  peer_ca_file: $BENCH_TLS_DIR/ca.crt${2:+
$2}"
    register_target "$name" "$tls_port" "${TARGET_PID[$name]}"
    TARGET_TLS[$name]=1
    # shellcheck disable=SC2046
    redis-cli -p "$tls_port" $(tls_client_args "$name") PING | grep -q PONG ||
        die "$name: no PONG over TLS"
}

# start_direct [NAME]: clients talk to redis itself (the baseline).
start_direct() {
    register_target "${1:-direct}" "$REDIS_PORT" "$REDIS_PID"
}

# LEASEGATE_BIN may be set to benchmark a prebuilt binary (then nothing is built).
LEASEGATE_BIN_DEFAULT="$REPO_ROOT/target/release/leasegate"
LEASEGATE_BIN=${LEASEGATE_BIN:-$LEASEGATE_BIN_DEFAULT}

build_leasegate() {
    if [[ "$LEASEGATE_BIN" != "$LEASEGATE_BIN_DEFAULT" ]]; then
        [[ -x "$LEASEGATE_BIN" ]] || die "LEASEGATE_BIN=$LEASEGATE_BIN is not executable"
        log "using prebuilt $LEASEGATE_BIN (not building)"
        return 0
    fi
    log "cargo build --release (in $REPO_ROOT)"
    (cd "$REPO_ROOT" && cargo build --release) || die "cargo build --release failed"
    [[ -x "$LEASEGATE_BIN" ]] || die "$LEASEGATE_BIN not found after build"
}

# build_example NAME VAR: `cargo build --release --example NAME` (a benchmark tool from bench/, see
# Cargo.toml's [[example]] sections) and store the binary's path in VAR.
build_example() {
    local name=$1 var=$2 bin="$REPO_ROOT/target/release/examples/$1"
    log "cargo build --release --example $name"
    (cd "$REPO_ROOT" && cargo build --release --example "$name") || die "building the $name example failed"
    [[ -x "$bin" ]] || die "$bin not found after build"
    printf -v "$var" '%s' "$bin"
}

# start_leasegate NAME [EXTRA_YAML] [PORT]
#   Starts a leasegate instance in front of the shared redis. EXTRA_YAML is appended to the
#   generated config verbatim (top-level keys). If it defines a top-level `backend:` or `log:`
#   section, the corresponding default section is omitted (so a variant can replace it; use
#   $REDIS_PORT in the string to point at the shared redis). PORT: the client port (from
#   free_port; default: a free one), for a caller that must name it before the start.
start_leasegate() {
    local name=$1 extra=${2:-} port=${3:-} cfg
    [[ -n "$port" ]] || free_port port
    cfg="$BENCH_TMP/$name.yaml"
    {
        echo "listen: 127.0.0.1:$port"
        if ! grep -q '^backend:' <<<"$extra"; then
            printf 'backend:\n  addr: 127.0.0.1:%s\n' "$REDIS_PORT"
        fi
        if ! grep -q '^log:' <<<"$extra"; then
            printf 'log:\n  level: %s\n' "${BENCH_LEASEGATE_LOG:-warn}"
        fi
        if ! grep -q '^admin:' <<<"$extra"; then
            local admin_port
            free_port admin_port
            printf 'admin:\n  listen: 127.0.0.1:%s\n' "$admin_port"
        fi
        [[ -z "$extra" ]] || printf '%s\n' "$extra"
    } >"$cfg"
    spawn "$name" "$LEASEGATE_BIN" run -c "$cfg"
    wait_ping "$name" "$port" "$SPAWNED_PID"
    register_target "$name" "$port" "$SPAWNED_PID"
}

# session_threads PID: how many session threads a running leasegate started (its
# leasegate-worker-N threads; the kernel keeps 15 characters of a thread's name).
session_threads() {
    grep -l '^leasegate-worke' /proc/"$1"/task/*/comm 2>/dev/null | wc -l
}

HAPROXY_NBTHREAD=${HAPROXY_NBTHREAD:-2}
HAPROXY_MAXCONN=10000

# start_haproxy [NAME] [BACKEND_PORT]: plain TCP pass-through (L4), nbthread $HAPROXY_NBTHREAD, to
# 127.0.0.1:BACKEND_PORT (default: redis).
start_haproxy() {
    local name=${1:-haproxy} backend=${2:-$REDIS_PORT} port cfg hard ssl=""
    if [[ "${HAPROXY_TLS:-0}" == 1 ]]; then
        # Terminates TLS (OpenSSL), plain TCP to the backend.
        make_bench_certs
        ssl=" ssl crt $BENCH_TLS_DIR/server.pem"
        TARGET_TLS[$name]=1
    fi
    free_port port
    # global maxconn 10000 needs ~20017 fds; cap it below a lower hard fd limit (we use 50 clients)
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard < 2 * HAPROXY_MAXCONN + 100)); then
        HAPROXY_MAXCONN=$(((hard - 100) / 2))
        log "haproxy: hard fd limit $hard, using global maxconn $HAPROXY_MAXCONN"
    fi
    cfg="$BENCH_TMP/$name.cfg"
    cat >"$cfg" <<EOF
global
    nbthread $HAPROXY_NBTHREAD
    maxconn $HAPROXY_MAXCONN
    log stderr format short local0 warning

defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    maxconn $HAPROXY_MAXCONN

frontend fe_redis
    bind 127.0.0.1:$port$ssl
    default_backend be_redis

backend be_redis
    server redis 127.0.0.1:$backend
EOF
    haproxy -c -q -f "$cfg" || die "haproxy config check failed ($cfg)"
    spawn "$name" haproxy -f "$cfg" -db
    wait_ping "$name" "$port" "$SPAWNED_PID" "$(tls_client_args "$name")"
    register_target "$name" "$port" "$SPAWNED_PID"
}

# start_twemproxy [NAME]: nutcracker pool with a single redis server, 1 server connection.
start_twemproxy() {
    local name=${1:-twemproxy} port stats cfg
    free_port port
    free_port stats
    cfg="$BENCH_TMP/$name.yml"
    cat >"$cfg" <<EOF
bench:
  listen: 127.0.0.1:$port
  redis: true
  hash: fnv1a_64
  distribution: ketama
  timeout: 5000
  backlog: 1024
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  servers:
    - 127.0.0.1:$REDIS_PORT:1
EOF
    nutcracker -t -c "$cfg" >/dev/null 2>&1 || die "nutcracker config check failed ($cfg)"
    spawn "$name" nutcracker -c "$cfg" -s "$stats" -a 127.0.0.1 -o "$BENCH_TMP/$name.nutcracker.log" \
        -p "$BENCH_TMP/$name.pid"
    wait_ping "$name" "$port" "$SPAWNED_PID"
    register_target "$name" "$port" "$SPAWNED_PID"
}

# ---------------------------------------------------------------- measuring

# run_redis_benchmark PORT DEPTH N TESTS: prints "TEST RPS" lines (TEST upper-case, e.g. SET).
# redis-benchmark 7.0.15 `-q --csv` prints:
#   "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
#   "SET","145985.41",...
run_redis_benchmark() { # PORT DEPTH N TESTS [EXTRA redis-benchmark args, e.g. TLS, -k 0]
    local port=$1 depth=$2 n=$3 tests=$4 out err rc=0
    local -a extra
    read -r -a extra <<<"${5:-}"
    err="$BENCH_TMP/redis-benchmark.err"
    out=$(timeout --foreground "${BENCH_RUN_TIMEOUT:-600}" redis-benchmark -h 127.0.0.1 -p "$port" -t "$tests" \
        -c "${BENCH_CLIENTS:-50}" -n "$n" -P "$depth" -q --csv "${extra[@]}" 2>"$err") || rc=$?
    if ((rc != 0)); then
        warn "redis-benchmark exited with $rc on port $port (-P $depth)"
        sed 's/^/    /' "$err" >&2 || true
    fi
    awk -F, '
        NR == 1 && $1 != "\"test\"" { print "unexpected header: " $0 > "/dev/stderr" }
        NR > 1 { t = $1; r = $2; gsub(/"/, "", t); gsub(/"/, "", r); if (r + 0 > 0) print t, r }
    ' <<<"$out"
}

# median of the numbers given as arguments (mean of the two middle ones for an even count)
median() {
    median_fmt '%.2f' "$@"
}

# median_fmt FORMAT NUMBERS...: the median printed with the awk printf FORMAT.
median_fmt() {
    local fmt=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v fmt="$fmt\n" '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) printf fmt, v[(NR + 1) / 2]
        else printf fmt, (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# proc_cpu_ticks PID: the process's CPU time so far, utime + stime over all its threads, in clock
# ticks (fields 14 and 15 of /proc/PID/stat; counted after the ")" closing the command name,
# which may contain spaces).
proc_cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat") || die "cannot read /proc/$1/stat"
    stat=${stat##*) }
    # after "comm)": field 3 (state) is word 1, so utime (14) is word 12 and stime (15) word 13
    awk '{ print $12 + $13 }' <<<"$stat"
}

CLK_TCK=$(getconf CLK_TCK)

# host_cpu_ticks: "BUSY TOTAL" clock ticks of all CPUs so far (/proc/stat; idle and iowait are
# not busy).
host_cpu_ticks() {
    awk '$1 == "cpu" { total = 0; for (i = 2; i <= NF; i++) total += $i; print total - $5 - $6, total; exit }' /proc/stat
}

# host_busy_percent "BUSY TOTAL" "BUSY TOTAL": how busy all CPUs were between two host_cpu_ticks.
host_busy_percent() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%.0f\n", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

# cpu_us_per_request TICKS_BEFORE TICKS_AFTER REQUESTS: CPU microseconds per request.
cpu_us_per_request() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f\n", (b - a) * 1e6 / hz / n }'
}

# cpu_affinity PID: "pid N: threads=T affinity=LIST" (all threads' allowed CPUs, deduplicated)
cpu_affinity() {
    local pid=$1 threads aff
    threads=$(ls "/proc/$pid/task" 2>/dev/null | wc -l)
    aff=$(for t in /proc/"$pid"/task/*; do grep -h '^Cpus_allowed_list' "$t/status" 2>/dev/null; done |
        awk '{ print $2 }' | sort -u | paste -sd' ')
    echo "threads=$threads cpus_allowed=${aff:-?}"
}

# run_redis_benchmark_stats PORT DEPTH N TESTS: like run_redis_benchmark, but prints
# "TEST RPS P50_MS P99_MS ERRORS" lines. ERRORS counts "Error from server" lines: redis-benchmark
# 7.0 stops at the first error reply (and ignores -e), printing that line on stderr, so a run that
# met an error usually yields no row at all; the lines are kept in $BENCH_TMP/redis-benchmark.errors.
run_redis_benchmark_stats() {
    local port=$1 depth=$2 n=$3 tests=$4 out err errors rc=0
    err="$BENCH_TMP/redis-benchmark.err"
    out=$(timeout --foreground "${BENCH_RUN_TIMEOUT:-600}" redis-benchmark -h 127.0.0.1 -p "$port" -t "$tests" \
        -c "${BENCH_CLIENTS:-50}" -n "$n" -P "$depth" -q --csv 2>"$err") || rc=$?
    grep -h '^Error from server' "$err" - <<<"$out" | head -5 >"$BENCH_TMP/redis-benchmark.errors" || true
    errors=$(cat "$err" - <<<"$out" | awk '/^Error from server/ { n++ } END { print n + 0 }')
    if ((rc != 0)); then
        warn "redis-benchmark exited with $rc on port $port (-P $depth)"
        sed 's/^/    /' "$err" >&2 || true
    fi
    awk -F, -v errors="$errors" '
        /^"test"/ { header = 1; next }
        /^"/ {
            if (!header) print "unexpected csv (no header): " $0 > "/dev/stderr"
            for (i = 1; i <= NF; i++) gsub(/"/, "", $i)
            if ($2 + 0 > 0) print $1, $2, $5, $7, errors
        }
    ' <<<"$out"
}

# metrics_scrape ADMIN_PORT: the Prometheus/OpenMetrics text of a leasegate's admin API.
metrics_scrape() {
    curl -sSf --max-time 5 "http://127.0.0.1:$1/metrics" ||
        die "cannot read http://127.0.0.1:$1/metrics"
}

# metric_value NAME <<<TEXT: the value of the unlabelled sample NAME in metrics TEXT (stdin);
# prints 0 when the sample is absent.
metric_value() {
    awk -v name="$1" '$1 == name { v = $2; found = 1 } END { print (found ? v : 0) }'
}

# wait_http NAME URL PID: wait (bounded) until URL answers 2xx.
wait_http() {
    local name=$1 url=$2 pid=$3 i
    for ((i = 0; i < ${BENCH_PING_RETRIES:-100}; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            warn "$name (pid $pid) exited; its log:"
            sed 's/^/    /' "$BENCH_TMP/$name.log" >&2 || true
            die "$name failed to start"
        fi
        if curl -sf --max-time 2 -o /dev/null "$url"; then
            log "$name is up at $url (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    warn "$name log:"
    sed 's/^/    /' "$BENCH_TMP/$name.log" >&2 || true
    die "$name did not answer $url"
}

# ---------------------------------------------------------------- failover benchmark helpers

# ensure_redis_packages: like ensure_packages, for benchmarks that only need redis, curl, python3.
ensure_redis_packages() {
    local -a missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v python3 >/dev/null || missing+=(python3)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]})) || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing missing packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    hash -r
}

# start_redis_node NAME PORT_VAR [REDIS_ARGS...]: a redis-server on a free port (stored in
# PORT_VAR; its pid in SPAWNED_PID), with its own dir, no persistence, extra args appended.
start_redis_node() {
    local name=$1 var=$2 port dir
    shift 2
    free_port port
    dir="$BENCH_TMP/$name"
    mkdir -p "$dir"
    spawn "$name" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --daemonize no --dir "$dir" --protected-mode no "$@"
    wait_ping "$name" "$port" "$SPAWNED_PID"
    printf -v "$var" '%s' "$port"
}

# wait_replication_up NAME PORT: wait (bounded) until the redis on PORT reports master_link_status:up.
wait_replication_up() {
    local name=$1 port=$2 i
    for ((i = 0; i < ${BENCH_PING_RETRIES:-100}; i++)); do
        if redis-cli -h 127.0.0.1 -p "$port" INFO replication 2>/dev/null | tr -d '\r' |
            grep -q '^master_link_status:up$'; then
            log "$name: replication link up"
            return 0
        fi
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$port" INFO replication >&2 || true
    die "$name (port $port): the replication link did not come up"
}
