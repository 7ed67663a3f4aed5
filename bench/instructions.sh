#!/usr/bin/env bash
# leasegate's own (user-space) instructions per request, counted by valgrind's callgrind: the
# same binary, workload and batching give the same count whatever else the machine is doing, so
# a change to the hot path can be measured on a noisy shared box where CPU seconds cannot.
# Kernel time (the sockets, ~80% of leasegate's CPU at -P 16) is not counted: see
# bench/throughput.sh for CPU per request, side by side with HAProxy.
#
# For each binary and test: start it under callgrind in front of one redis-server, warm up with
# redis-benchmark, zero the counters, run `redis-benchmark -t TEST -c CLIENTS -P DEPTH -n N`,
# dump, and divide the instructions by N.
#
# Usage: bench/instructions.sh
# Env:
#   LEASEGATE_BIN        the binary to measure (default: `cargo build --release`)
#   LEASEGATE_BASE_BIN   also measure this one (e.g. a build from before a change) and print ratios
#   BENCH_TESTS          redis-benchmark tests (default "set get")
#   BENCH_PIPELINES      depths (default "16 1")
#   BENCH_CLIENTS        -c (default 50)
#   BENCH_REQUESTS       -n per run (default 160000 at -P > 1, 20000 at -P 1)
#   BENCH_OUT            markdown output (default: bench/out/instructions.md)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

read -r -a TESTS <<<"${BENCH_TESTS:-set get}"
read -r -a DEPTHS <<<"${BENCH_PIPELINES:-16 1}"
CLIENTS=${BENCH_CLIENTS:-50}
OUT_MD=${BENCH_OUT:-$REPO_ROOT/bench/out/instructions.md}

requests_for_depth() {
    if [[ -n "${BENCH_REQUESTS:-}" ]]; then
        echo "$BENCH_REQUESTS"
    elif (($1 <= 1)); then
        echo 20000
    else
        echo 160000
    fi
}

ensure_callgrind() {
    command -v valgrind >/dev/null && command -v callgrind_control >/dev/null && return 0
    log "installing valgrind"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
}

# count BIN NAME TEST DEPTH N -> instructions per request on stdout
count() {
    local bin=$1 name=$2 test=$3 depth=$4 n=$5 port admin cfg out pid i total
    free_port port
    free_port admin
    cfg="$BENCH_TMP/$name.yaml"
    out="$BENCH_TMP/$name-$test-$depth.callgrind"
    printf 'listen: 127.0.0.1:%s\nbackend:\n  addr: 127.0.0.1:%s\nadmin:\n  listen: 127.0.0.1:%s\nlog:\n  level: warn\n' \
        "$port" "$REDIS_PORT" "$admin" >"$cfg"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run -c "$cfg" \
        >"$BENCH_TMP/$name-$test-$depth.log" 2>&1 &
    pid=$!
    BENCH_PIDS+=("$pid")
    for ((i = 0; i < 300; i++)); do
        redis-cli -p "$port" PING >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || die "$name died under valgrind (see $BENCH_TMP/$name-$test-$depth.log)"
        sleep 0.2
    done
    redis-benchmark -p "$port" -t "$test" -c "$CLIENTS" -P "$depth" -n $((n / 10)) -q >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null
    redis-benchmark -p "$port" -t "$test" -c "$CLIENTS" -P "$depth" -n "$n" -q >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    # The dump after zeroing is "<out>.1"; its summary line counts everything since.
    total=$(awk '/^summary:/ { print $2 }' "$out.1")
    [[ -n "$total" ]] || die "no callgrind summary in $out.1"
    awk -v t="$total" -v n="$n" 'BEGIN { printf "%.0f", t / n }'
}

ensure_packages
ensure_callgrind
bench_init
build_leasegate
start_redis

declare -A IPR=()
BINS=(leasegate)
[[ -z "${LEASEGATE_BASE_BIN:-}" ]] || BINS+=(leasegate-base)
for depth in "${DEPTHS[@]}"; do
    n=$(requests_for_depth "$depth")
    for test in "${TESTS[@]}"; do
        for name in "${BINS[@]}"; do
            bin=$LEASEGATE_BIN
            [[ $name == leasegate ]] || bin=$LEASEGATE_BASE_BIN
            IPR["$name|$test|$depth"]=$(count "$bin" "$name" "$test" "$depth" "$n")
            log "$name $test -P $depth: ${IPR["$name|$test|$depth"]} instructions/request"
        done
    done
done

mkdir -p "$(dirname "$OUT_MD")"
{
    echo "## leasegate: user-space instructions per request ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    echo "valgrind $(valgrind --version) callgrind, instructions of the whole leasegate process" \
        "(all threads) over \`redis-benchmark -c $CLIENTS -P <depth> -n <n>\` after a warm-up," \
        "divided by n; redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')" \
        "behind it. leasegate: $LEASEGATE_BIN${LEASEGATE_BASE_BIN:+; leasegate-base: $LEASEGATE_BASE_BIN}."
    echo
    if [[ -n "${LEASEGATE_BASE_BIN:-}" ]]; then
        echo "| test | -P | leasegate | leasegate-base | leasegate/base |"
        echo "|---|---:|---:|---:|---:|"
    else
        echo "| test | -P | leasegate |"
        echo "|---|---:|---:|"
    fi
    for depth in "${DEPTHS[@]}"; do
        for test in "${TESTS[@]}"; do
            now=${IPR["leasegate|$test|$depth"]}
            if [[ -n "${LEASEGATE_BASE_BIN:-}" ]]; then
                base=${IPR["leasegate-base|$test|$depth"]}
                echo "| ${test^^} | $depth | $now | $base | $(awk -v a="$now" -v b="$base" 'BEGIN { printf "%.3f", a / b }') |"
            else
                echo "| ${test^^} | $depth | $now |"
            fi
        done
    done
} >"$OUT_MD"
echo
cat "$OUT_MD"
log "written $OUT_MD"
