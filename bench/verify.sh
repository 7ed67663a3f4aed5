#!/usr/bin/env bash
# Cost of `verify.mode: every-write`: every write waits for a (batched) mastership confirmation
# from the controller. Compares, in front of the same redis-server:
#   direct            redis itself (reference)
#   leasegate         verification off (plain config)
#   leasegate-verify  verify.mode every-write against bench/fake_controller.rs (the tests'
#                     controller, tests/support/controller.rs, as a process), which answers
#                     the kvrocks-controller cluster query after an artificial delay
# with `redis-benchmark -t set`, and reads leasegate-verify's /metrics around each of its runs to
# report how many writes shared one confirmation round.
#
# Usage: bench/verify.sh
# Env:
#   BENCH_ROUNDS         rounds; target order is rotated each round, median is reported (default 3)
#   BENCH_REQUESTS       -n for every depth (default: 150000 for -P 1, 500000 for -P >1)
#   BENCH_PIPELINES      pipeline depths (default: "1 16")
#   BENCH_CLIENTS        -c (default 50)
#   BENCH_CONTROLLER_DELAY_MS  the fake controller's delay per answer (default 1)
#   BENCH_VERIFY_MAX_IN_FLIGHT  verify.max_in_flight of leasegate-verify (default 1)
#   BENCH_QUICK=1        smoke test: tiny -n, 1 round
#   LEASEGATE_BIN        use this prebuilt leasegate binary instead of `cargo build --release`
#   BENCH_OUT            markdown output (default: bench/out/verify.md)
#   BENCH_KEEP_TMP_ON_FAIL=1  keep the temp dir (configs, logs) if the run fails
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

# ---------------------------------------------------------------- parameters

TARGETS=(direct leasegate leasegate-verify)
read -r -a DEPTHS <<<"${BENCH_PIPELINES:-1 16}"
TEST=set
CLIENTS=${BENCH_CLIENTS:-50}
export BENCH_CLIENTS=$CLIENTS
DELAY_MS=${BENCH_CONTROLLER_DELAY_MS:-1}
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
    ROUNDS=${BENCH_ROUNDS:-1}
    N_P1=2000
    N_PIPE=20000
else
    ROUNDS=${BENCH_ROUNDS:-3}
    # sized so that the whole run (3 rounds x 2 depths x 3 targets) stays under ~3 minutes on a
    # 2-core box; the leasegate-verify runs dominate (each write waits at least one controller
    # round trip, so -P 1 is bound by 50 connections / RTT)
    N_P1=150000
    N_PIPE=500000
fi
OUT_MD=${BENCH_OUT:-$REPO_ROOT/bench/out/verify.md}
OUT_RAW=${OUT_MD%.md}-raw.csv
NODE_ID=0123456789abcdef0123456789abcdef01234567
VERIFY=leasegate-verify

requests_for_depth() {
    if [[ -n "${BENCH_REQUESTS:-}" ]]; then
        echo "$BENCH_REQUESTS"
    elif (($1 <= 1)); then
        echo "$N_P1"
    else
        echo "$N_PIPE"
    fi
}

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ "$DELAY_MS" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BENCH_CONTROLLER_DELAY_MS must be a number"

# ---------------------------------------------------------------- servers

start_fake_controller() {
    free_port CONTROLLER_PORT
    spawn controller "$FAKE_CONTROLLER_BIN" --port "$CONTROLLER_PORT" \
        --node-id "$NODE_ID" --delay-ms "$DELAY_MS"
    CONTROLLER_PID=$SPAWNED_PID
    wait_http controller "http://127.0.0.1:$CONTROLLER_PORT/count" "$CONTROLLER_PID"
}

controller_count() {
    curl -sf --max-time 5 "http://127.0.0.1:$CONTROLLER_PORT/count" || die "cannot read the controller's /count"
}

show_log_and_die() { # NAME MESSAGE
    warn "$1 log ($BENCH_TMP/$1.log):"
    sed 's/^/    /' "$BENCH_TMP/$1.log" >&2 || true
    die "$2"
}

start_leasegate_verify() {
    free_port VERIFY_ADMIN_PORT
    start_leasegate "$VERIFY" "node_id: $NODE_ID
verify:
  mode: every-write
  timeout_ms: 500
  max_in_flight: ${BENCH_VERIFY_MAX_IN_FLIGHT:-1}
controller:
  url: http://127.0.0.1:$CONTROLLER_PORT
  namespace: bench
  cluster: bench
  poll_interval_ms: 3600000
  ttl_ms: 3600000
  timeout_ms: 500
admin:
  listen: 127.0.0.1:$VERIFY_ADMIN_PORT"
    # A write must be confirmed by the controller and then succeed.
    local before after reply
    before=$(controller_count)
    reply=$(timeout 5 redis-cli -h 127.0.0.1 -p "${TARGET_PORT[$VERIFY]}" SET leasegate:bench:verify probe 2>&1 || true)
    [[ "$reply" == OK ]] ||
        show_log_and_die "$VERIFY" "$VERIFY rejected a write: SET answered '${reply:-<nothing>}'"
    after=$(controller_count)
    ((after > before)) ||
        show_log_and_die "$VERIFY" "$VERIFY accepted a write without asking the controller (count $before -> $after)"
    local metrics
    metrics=$(metrics_scrape "$VERIFY_ADMIN_PORT")
    grep -q '^leasegate_verify_writes_total ' <<<"$metrics" ||
        show_log_and_die "$VERIFY" "$VERIFY's /metrics has no leasegate_verify_writes_total"
    log "$VERIFY: a write was confirmed by the controller ($before -> $after requests)"
}

# ---------------------------------------------------------------- main

ensure_packages
command -v curl >/dev/null || {
    log "installing curl"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq curl >/dev/null
}
bench_init
build_leasegate
build_example fake_controller FAKE_CONTROLLER_BIN

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
start_redis
start_fake_controller
start_direct direct
start_leasegate leasegate ""
start_leasegate_verify

declare -A RPS=() P50=() P99=()   # "target|depth" -> space-separated values per round
declare -A VWRITES=() VROUNDS=() VFAILED=() VRSUM=() VCTRL=() # "depth" -> summed deltas
FAILED=0
mkdir -p "$(dirname "$OUT_MD")"
echo "round,target,pipeline,requests,rps,p50_ms,p99_ms,error_lines,verify_writes,verify_rounds,verify_rounds_failed" >"$OUT_RAW"

add() { # assoc-name key value: assoc[key] += value (floating point)
    local -n arr=$1
    arr[$2]=$(awk -v a="${arr[$2]:-0}" -v b="$3" 'BEGIN { printf "%.9g", a + b }')
}

ntargets=${#TARGETS[@]}
for ((round = 0; round < ROUNDS; round++)); do
    order=()
    for ((i = 0; i < ntargets; i++)); do
        order+=("${TARGETS[$(((i + round) % ntargets))]}")
    done
    log "round $((round + 1))/$ROUNDS: order ${order[*]}"
    for depth in "${DEPTHS[@]}"; do
        n=$(requests_for_depth "$depth")
        for t in "${order[@]}"; do
            port=${TARGET_PORT[$t]}
            if [[ $t == "$VERIFY" ]]; then
                m0=$(metrics_scrape "$VERIFY_ADMIN_PORT")
                c0=$(controller_count)
            fi
            got=0 dw="" dr="" df="" rps="" p50="" p99="" errs=""
            while read -r test r_rps r_p50 r_p99 r_errs; do
                [[ -n "$test" ]] || continue
                got=1 rps=$r_rps p50=$r_p50 p99=$r_p99 errs=$r_errs
                if ((errs > 0)); then
                    warn "$t -P $depth: redis-benchmark saw error replies, e.g.:"
                    sed 's/^/    /' "$BENCH_TMP/redis-benchmark.errors" >&2
                    FAILED=1
                fi
                RPS["$t|$depth"]+=" $rps"
                P50["$t|$depth"]+=" $p50"
                P99["$t|$depth"]+=" $p99"
            done < <(run_redis_benchmark_stats "$port" "$depth" "$n" "$TEST")
            if [[ $t == "$VERIFY" ]]; then
                m1=$(metrics_scrape "$VERIFY_ADMIN_PORT")
                c1=$(controller_count)
                mv() { metric_value "$1" <<<"$2"; }
                dw=$(($(mv leasegate_verify_writes_total "$m1") - $(mv leasegate_verify_writes_total "$m0")))
                dr=$(($(mv leasegate_verify_rounds_total "$m1") - $(mv leasegate_verify_rounds_total "$m0")))
                df=$(($(mv leasegate_verify_rounds_failed_total "$m1") - $(mv leasegate_verify_rounds_failed_total "$m0")))
                dsum=$(awk -v a="$(mv leasegate_verify_round_duration_seconds_sum "$m0")" \
                    -v b="$(mv leasegate_verify_round_duration_seconds_sum "$m1")" 'BEGIN { printf "%.9g", b - a }')
                add VWRITES "$depth" "$dw"
                add VROUNDS "$depth" "$dr"
                add VFAILED "$depth" "$df"
                add VRSUM "$depth" "$dsum"
                add VCTRL "$depth" "$((c1 - c0))"
                if ((df > 0)); then
                    warn "$t -P $depth: $df confirmation round(s) failed (writes were rejected with -TRYAGAIN)"
                    FAILED=1
                fi
                ((dw >= n)) || warn "$t -P $depth: only $dw verified writes for $n requests"
            fi
            if ((got == 0)); then
                warn "no results for $t -P $depth"
                FAILED=1
            else
                echo "$((round + 1)),$t,$depth,$n,$rps,$p50,$p99,$errs,$dw,$dr,$df" >>"$OUT_RAW"
                log "  $t -P $depth: $rps rps, p50 $p50 ms, p99 $p99 ms${dr:+, $dw writes / $dr rounds}"
            fi
            kill -0 "${TARGET_PID[$t]}" 2>/dev/null ||
                show_log_and_die "$t" "$t (pid ${TARGET_PID[$t]}) died during the benchmark"
        done
    done
done

# ---------------------------------------------------------------- report

med() { # assoc-name key -> median or empty
    local -n arr=$1
    local vals=${arr[$2]:-}
    [[ -n "$vals" ]] || return 0
    # shellcheck disable=SC2086
    median $vals
}
fmt() { # printf-format value-or-empty
    if [[ -n "$2" ]]; then printf "$1" "$2"; else printf 'fail'; fi
}
calc() { # awk-expression using a, b -> value, or "-" when an input is empty
    if [[ -z "$2" || -z "$3" ]]; then
        printf -- '-'
        return
    fi
    awk -v a="$2" -v b="$3" "BEGIN { $1 }"
}

if [[ "$LEASEGATE_BIN" == "$LEASEGATE_BIN_DEFAULT" ]]; then
    BIN_DESC="release build of the working tree at $(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo '?')"
else
    BIN_DESC="prebuilt $LEASEGATE_BIN"
fi

{
    echo "## leasegate: cost of verify.mode every-write ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    echo "Controller: bench/fake_controller.rs (tests/support/controller.rs as a process: a thread per" \
        "connection, HTTP/1.1 keep-alive, TCP_NODELAY) sleeping" \
        "**$DELAY_MS ms** before each cluster answer; leasegate-verify: verify.timeout_ms 500, controller" \
        "poll_interval_ms/ttl_ms 3600000 (so only verification rounds reach the controller during the runs)."
    echo "Host: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p;T;q' /proc/cpuinfo))," \
        "load avg at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)." \
        "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')," \
        "leasegate: $BIN_DESC; all on loopback, nothing pinned."
    echo "redis-benchmark $(redis-benchmark --version | awk '{print $2}') \`-t $TEST -c $CLIENTS -q --csv\`," \
        "-n $(for d in "${DEPTHS[@]}"; do printf '%s (-P %s) ' "$(requests_for_depth "$d")" "$d"; done | sed 's/ $//');" \
        "median of $ROUNDS round(s), target order rotated per round." \
        "off = leasegate without verification; verify = leasegate-verify; latencies in ms as redis-benchmark" \
        "reports them (with -P > 1 it records, for every request of a pipelined batch, the time to the" \
        "batch's first reply)." \
        "Writes per confirmation = Δleasegate_verify_writes_total / Δleasegate_verify_rounds_total over all" \
        "verify runs of that depth; round ms = mean of leasegate_verify_round_duration_seconds over them."
    echo
    echo "| -P | rps direct | rps off | rps verify | verify/off | p50 direct / off / verify | p99 direct / off / verify | added p50 | added p99 | writes per confirmation | round ms |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for depth in "${DEPTHS[@]}"; do
        rd=$(med RPS "direct|$depth") ro=$(med RPS "leasegate|$depth") rv=$(med RPS "$VERIFY|$depth")
        p5d=$(med P50 "direct|$depth") p5o=$(med P50 "leasegate|$depth") p5v=$(med P50 "$VERIFY|$depth")
        p9d=$(med P99 "direct|$depth") p9o=$(med P99 "leasegate|$depth") p9v=$(med P99 "$VERIFY|$depth")
        wr=${VWRITES[$depth]:-0} rn=${VROUNDS[$depth]:-0}
        row="| $depth | $(fmt %.0f "$rd") | $(fmt %.0f "$ro") | $(fmt %.0f "$rv")"
        row+=" | $(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "$rv" "$ro")"
        row+=" | $(fmt %.3f "$p5d") / $(fmt %.3f "$p5o") / $(fmt %.3f "$p5v")"
        row+=" | $(fmt %.3f "$p9d") / $(fmt %.3f "$p9o") / $(fmt %.3f "$p9v")"
        row+=" | $(calc 'printf "%+.3f", a - b' "$p5v" "$p5o")"
        row+=" | $(calc 'printf "%+.3f", a - b' "$p9v" "$p9o")"
        row+=" | $(calc 'if (b > 0) printf "%.1f", a / b; else printf "-"' "$wr" "$rn")"
        row+=" | $(calc 'if (b > 0) printf "%.2f", 1000 * a / b; else printf "-"' "${VRSUM[$depth]:-0}" "$rn") |"
        echo "$row"
    done
    echo
    echo "Goal: verify/off ≥ 0.70 at -P 1."
    echo
    echo "Checks per depth (sums over rounds): verified writes, confirmation rounds, failed rounds," \
        "requests the controller served during the verify runs (should equal the rounds):"
    echo
    for depth in "${DEPTHS[@]}"; do
        echo "- -P $depth: writes ${VWRITES[$depth]:-0}, rounds ${VROUNDS[$depth]:-0}," \
            "failed ${VFAILED[$depth]:-0}, controller requests ${VCTRL[$depth]:-0}"
    done
    if ((ROUNDS > 1)); then
        echo
        echo "Per-round rps (rounds in order) — see $(basename "$OUT_RAW") for p50/p99 and metric deltas:"
        echo
        for depth in "${DEPTHS[@]}"; do
            for t in "${TARGETS[@]}"; do
                echo "- -P $depth $t:${RPS["$t|$depth"]:-}"
            done
        done
    fi
    echo
    echo "CPU placement:"
    echo
    echo "- redis: pid $REDIS_PID, $(cpu_affinity "$REDIS_PID")"
    echo "- controller: pid $CONTROLLER_PID, $(cpu_affinity "$CONTROLLER_PID")"
    for t in leasegate "$VERIFY"; do
        echo "- $t: pid ${TARGET_PID[$t]}, $(cpu_affinity "${TARGET_PID[$t]}")"
    done
} >"$OUT_MD"

echo
cat "$OUT_MD"
echo
log "written $OUT_MD (raw per-round data: $OUT_RAW)"
((FAILED == 0)) || die "some runs failed or saw rejected writes (see warnings above)"
