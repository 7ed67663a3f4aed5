#!/usr/bin/env bash
# Cost of `verify.mode: every-write`: every write is confirmed by the controller (batched
# confirmations, each requested after the writes it covers arrived). Compares, in front of the
# same redis-server, in one run:
#   direct          redis itself (reference)
#   leasegate       verification off (plain config)
#   verify-request  verify.hold request: the write waits for its confirmation, then goes to the
#                   node (controller round trip + node time)
#   verify-ack      verify.hold acknowledgement: the write goes to the node at once, only its
#                   reply waits for the confirmation (max(controller round trip, node time))
#   delay-node      the closed loop alone (bench/delay_node.rs): no proxy, no Redis, no
#                   controller, just a server that answers every write after the controller's
#                   delay, built like the fake controller: what share of the bound a system that
#                   waits one round trip per write and does nothing else reaches on this host
#   haproxy-delay-node  HAProxy (tcp mode) in front of delay-node: the same with one proxy hop,
#                   i.e. the fewest hops a proxy whose every write waits a round trip can take
# against bench/fake_controller.rs (the tests' controller, tests/support/controller.rs, as a
# process), which answers the kvrocks-controller cluster query after an artificial delay,
# with `redis-benchmark -t set`. leasegate's /metrics is read around each verified run to report
# the confirmation round trip and how many writes shared one round.
#
# The closed-loop bound at -c C -P P is C*P / max(node latency, controller round trip), with the
# node latency taken as leasegate-off's mean (C*P / its rps) and the round trip as the mean of
# leasegate_verify_round_duration_seconds over the run. Goals (issue 12), verify-ack at -P 1:
# rps >= 0.9x that bound, added p50 <= 1.1x the round trip. delay-node's bound is clients * depth /
# its own mean hold (the delay plus the sleep's lateness, from its DELAYSTATS).
#
# Usage: bench/verify.sh
# Env:
#   BENCH_ROUNDS         rounds; target order is rotated each round, median is reported (default 3)
#   BENCH_REQUESTS       -n for every depth (default: 150000 for -P 1, 500000 for -P >1)
#   BENCH_PIPELINES      pipeline depths (default: "1 16")
#   BENCH_CLIENTS        -c (default 50)
#   BENCH_CONTROLLER_DELAY_MS  the fake controller's delay per answer (default 1)
#   BENCH_CONTROLLER_EXTRA_SHARDS  shards of three nodes nothing runs, added to the topology the
#                        controller answers with, as a larger cluster's answer (default 0)
#   BENCH_VERIFY_MAX_IN_FLIGHT  verify.max_in_flight of both verified targets (default 4)
#   BENCH_VERIFY_THREADS        `threads` (session threads, each with a verification driver) of
#                        the verified targets (default 0: leasegate's default; leasegate-off keeps
#                        the default)
#   BENCH_VERIFY_THREAD_SWEEP   thread counts, e.g. "1 2 4 8 16": adds, for each N, side by side,
#                        verify-ack-t<N> (verify.hold acknowledgement, `threads: N`), its
#                        pass-through leasegate-t<N> (`threads: N`, verification off: its node
#                        latency is verify-ack-t<N>'s) and haproxy-delay-node-t<N> (`nbthread N`:
#                        the ceiling for a proxy with as many threads), and a table of the sweep
#   BENCH_QUICK=1        smoke test: tiny -n, 1 round
#   LEASEGATE_BIN        use this prebuilt leasegate binary instead of `cargo build --release`
#   LEASEGATE_BASE_BIN   also run "verify-ack-base": verify-ack with this binary (e.g. a build
#                        from before a change), side by side in the same run
#   BENCH_OUT            markdown output (default: bench/out/verify.md)
#   BENCH_KEEP_TMP_ON_FAIL=1  keep the temp dir (configs, logs) if the run fails
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

# ---------------------------------------------------------------- parameters

VERIFIED=(verify-request verify-ack)
read -r -a SWEEP <<<"${BENCH_VERIFY_THREAD_SWEEP:-}"
for t in "${SWEEP[@]}"; do
    [[ "$t" =~ ^[1-9][0-9]*$ ]] || die "BENCH_VERIFY_THREAD_SWEEP must list positive integers"
    VERIFIED+=("verify-ack-t$t")
done
if [[ -n "${LEASEGATE_BASE_BIN:-}" ]]; then
    [[ -x "$LEASEGATE_BASE_BIN" ]] || die "LEASEGATE_BASE_BIN=$LEASEGATE_BASE_BIN is not executable"
    VERIFIED+=(verify-ack-base)
fi
DELAYED=(delay-node haproxy-delay-node) # answered by bench/delay_node.rs
PASS_THROUGH=(leasegate)                 # verification off
for t in "${SWEEP[@]}"; do
    DELAYED+=("haproxy-delay-node-t$t")
    PASS_THROUGH+=("leasegate-t$t")
done
TARGETS=(direct "${DELAYED[@]}" "${PASS_THROUGH[@]}" "${VERIFIED[@]}")
read -r -a DEPTHS <<<"${BENCH_PIPELINES:-1 16}"
TEST=set
CLIENTS=${BENCH_CLIENTS:-50}
export BENCH_CLIENTS=$CLIENTS
DELAY_MS=${BENCH_CONTROLLER_DELAY_MS:-1}
EXTRA_SHARDS=${BENCH_CONTROLLER_EXTRA_SHARDS:-0}
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
MAX_IN_FLIGHT=${BENCH_VERIFY_MAX_IN_FLIGHT:-4}
VERIFY_THREADS=${BENCH_VERIFY_THREADS:-0}
declare -A ADMIN_PORT=()

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
[[ "$EXTRA_SHARDS" =~ ^[0-9]+$ ]] || die "BENCH_CONTROLLER_EXTRA_SHARDS must be a whole number"

# ---------------------------------------------------------------- servers

start_fake_controller() {
    free_port CONTROLLER_PORT
    spawn controller "$FAKE_CONTROLLER_BIN" --port "$CONTROLLER_PORT" \
        --node-id "$NODE_ID" --delay-ms "$DELAY_MS" --extra-shards "$EXTRA_SHARDS"
    CONTROLLER_PID=$SPAWNED_PID
    wait_http controller "http://127.0.0.1:$CONTROLLER_PORT/count" "$CONTROLLER_PID"
}

start_delay_node() {
    local port
    free_port port
    spawn delay-node "$DELAY_NODE_BIN" --port "$port" --delay-ms "$DELAY_MS"
    wait_ping delay-node "$port" "$SPAWNED_PID"
    register_target delay-node "$port" "$SPAWNED_PID"
}

delay_node_stats() { # -> "<batches held> <ns held>"
    local out
    out=$(timeout 5 redis-cli -h 127.0.0.1 -p "${TARGET_PORT[delay-node]}" DELAYSTATS) ||
        die "cannot read the delay node's DELAYSTATS"
    [[ "$out" =~ ^[0-9]+\ [0-9]+$ ]] || die "the delay node's DELAYSTATS answered '$out'"
    echo "$out"
}

controller_answer_bytes() {
    curl -sf --max-time 5 "http://127.0.0.1:$CONTROLLER_PORT/api/v1/namespaces/bench/clusters/bench" | wc -c
}

controller_count() {
    curl -sf --max-time 5 "http://127.0.0.1:$CONTROLLER_PORT/count" || die "cannot read the controller's /count"
}

show_log_and_die() { # NAME MESSAGE
    warn "$1 log ($BENCH_TMP/$1.log):"
    sed 's/^/    /' "$BENCH_TMP/$1.log" >&2 || true
    die "$2"
}

start_leasegate_verify() { # NAME HOLD [THREADS]
    local name=$1 hold=$2 threads=${3:-$VERIFY_THREADS} admin
    free_port admin
    ADMIN_PORT[$name]=$admin
    start_leasegate "$name" "node_id: $NODE_ID
threads: $threads
verify:
  mode: every-write
  hold: $hold
  timeout_ms: 500
  max_in_flight: $MAX_IN_FLIGHT
controller:
  url: http://127.0.0.1:$CONTROLLER_PORT
  namespace: bench
  cluster: bench
  poll_interval_ms: 3600000
  ttl_ms: 3600000
  timeout_ms: 500
admin:
  listen: 127.0.0.1:$admin"
    # A write must be confirmed by the controller and then succeed.
    local before after reply
    before=$(controller_count)
    reply=$(timeout 5 redis-cli -h 127.0.0.1 -p "${TARGET_PORT[$name]}" SET leasegate:bench:verify probe 2>&1 || true)
    [[ "$reply" == OK ]] ||
        show_log_and_die "$name" "$name rejected a write: SET answered '${reply:-<nothing>}'"
    after=$(controller_count)
    ((after > before)) ||
        show_log_and_die "$name" "$name accepted a write without asking the controller (count $before -> $after)"
    local metrics
    metrics=$(metrics_scrape "$admin")
    grep -q '^leasegate_verify_writes_total ' <<<"$metrics" ||
        show_log_and_die "$name" "$name's /metrics has no leasegate_verify_writes_total"
    log "$name (hold $hold): a write was confirmed by the controller ($before -> $after requests)"
}

is_verified() { [[ " ${VERIFIED[*]} " == *" $1 "* ]]; }
is_delayed() { [[ " ${DELAYED[*]} " == *" $1 "* ]]; }
# off_of TARGET: the pass-through leasegate a target is compared with (same session threads).
off_of() {
    case $1 in
    verify-ack-t*) echo "leasegate-t${1#verify-ack-t}" ;;
    *) echo leasegate ;;
    esac
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
build_example delay_node DELAY_NODE_BIN

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
start_redis
start_fake_controller
start_direct direct
start_delay_node
start_haproxy haproxy-delay-node "${TARGET_PORT[delay-node]}"
start_leasegate leasegate ""
start_leasegate_verify verify-request request
start_leasegate_verify verify-ack acknowledgement
for t in "${SWEEP[@]}"; do
    start_leasegate_verify "verify-ack-t$t" acknowledgement "$t"
    start_leasegate "leasegate-t$t" "threads: $t"
    HAPROXY_NBTHREAD=$t start_haproxy "haproxy-delay-node-t$t" "${TARGET_PORT[delay-node]}"
done
if [[ -n "${LEASEGATE_BASE_BIN:-}" ]]; then
    LEASEGATE_BIN=$LEASEGATE_BASE_BIN start_leasegate_verify verify-ack-base acknowledgement
fi

declare -A RPS=() P50=() P99=() CPU=() CCPU=() BUSY=() # "target|depth" -> space-separated values per round
declare -A VWRITES=() VROUNDS=() VFAILED=() VRSUM=() VCTRL=() # "target|depth" -> summed deltas
declare -A DBATCHES=() DHELD=()                                 # delayed targets: summed deltas
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
            if is_verified "$t"; then
                m0=$(metrics_scrape "${ADMIN_PORT[$t]}")
                c0=$(controller_count)
            elif is_delayed "$t"; then
                read -r db0 dh0 < <(delay_node_stats)
            fi
            got=0 dw="" dr="" df="" rps="" p50="" p99="" errs=""
            tpid=${TARGET_PID[$t]}
            cpu0=$(proc_cpu_ticks "$tpid")
            ccpu0=$(proc_cpu_ticks "$CONTROLLER_PID")
            host0=$(host_cpu_ticks)
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
            BUSY["$t|$depth"]+=" $(host_busy_percent "$host0" "$(host_cpu_ticks)")"
            CPU["$t|$depth"]+=" $(cpu_us_per_request "$cpu0" "$(proc_cpu_ticks "$tpid")" "$n")"
            CCPU["$t|$depth"]+=" $(cpu_us_per_request "$ccpu0" "$(proc_cpu_ticks "$CONTROLLER_PID")" "$n")"
            if is_verified "$t"; then
                m1=$(metrics_scrape "${ADMIN_PORT[$t]}")
                c1=$(controller_count)
                mv() { metric_value "$1" <<<"$2"; }
                dw=$(($(mv leasegate_verify_writes_total "$m1") - $(mv leasegate_verify_writes_total "$m0")))
                dr=$(($(mv leasegate_verify_rounds_total "$m1") - $(mv leasegate_verify_rounds_total "$m0")))
                df=$(($(mv leasegate_verify_rounds_failed_total "$m1") - $(mv leasegate_verify_rounds_failed_total "$m0")))
                dsum=$(awk -v a="$(mv leasegate_verify_round_duration_seconds_sum "$m0")" \
                    -v b="$(mv leasegate_verify_round_duration_seconds_sum "$m1")" 'BEGIN { printf "%.9g", b - a }')
                add VWRITES "$t|$depth" "$dw"
                add VROUNDS "$t|$depth" "$dr"
                add VFAILED "$t|$depth" "$df"
                add VRSUM "$t|$depth" "$dsum"
                add VCTRL "$t|$depth" "$((c1 - c0))"
                if ((df > 0)); then
                    warn "$t -P $depth: $df confirmation round(s) failed (writes were refused)"
                    FAILED=1
                fi
                ((dw >= n)) || warn "$t -P $depth: only $dw verified writes for $n requests"
            elif is_delayed "$t"; then
                read -r db1 dh1 < <(delay_node_stats)
                add DBATCHES "$t|$depth" "$((db1 - db0))"
                add DHELD "$t|$depth" "$((dh1 - dh0))"
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
[[ -z "${LEASEGATE_BASE_BIN:-}" ]] || BIN_DESC+="; verify-ack-base: prebuilt $LEASEGATE_BASE_BIN"

{
    echo "## leasegate: cost of verify.mode every-write ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    echo "Controller: bench/fake_controller.rs (tests/support/controller.rs as a process: a thread per" \
        "connection, HTTP/1.1 keep-alive, TCP_NODELAY) sleeping" \
        "**$DELAY_MS ms** before each cluster answer, a topology of $((EXTRA_SHARDS + 1)) shard(s)" \
        "($(controller_answer_bytes) bytes an answer). Both verified targets: verify.max_in_flight" \
        "**$MAX_IN_FLIGHT**, threads **$VERIFY_THREADS** (0: leasegate's default, $(session_threads "${TARGET_PID[verify-ack]}") session threads here; verify-ack-t<N>: N), timeout_ms 500, controller poll_interval_ms/ttl_ms 3600000 (so only" \
        "verification rounds reach the controller during the runs); verify-request has" \
        "verify.hold request, verify-ack verify.hold acknowledgement."
    echo "Host: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p;T;q' /proc/cpuinfo))," \
        "load avg at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)." \
        "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')," \
        "leasegate: $BIN_DESC; all on loopback, nothing pinned."
    echo "redis-benchmark $(redis-benchmark --version | awk '{print $2}') \`-t $TEST -c $CLIENTS -q --csv\`," \
        "-n $(for d in "${DEPTHS[@]}"; do printf '%s (-P %s) ' "$(requests_for_depth "$d")" "$d"; done | sed 's/ $//');" \
        "median of $ROUNDS round(s), target order rotated per round. Latencies in ms as" \
        "redis-benchmark reports them (with -P > 1 it records, for every request of a pipelined" \
        "batch, the time to the batch's first reply)."
    echo
    echo "- **round trip** = mean of leasegate_verify_round_duration_seconds over that target's runs" \
        "(the controller's delay plus HTTP, as leasegate sees it);"
    echo "- **node latency** = leasegate-off's closed-loop mean, clients × depth / rps (for" \
        "verify-ack-t<N>: leasegate-t<N>'s, the pass-through with as many session threads);"
    echo "- **bound** = clients × depth / max(node latency, round trip): what a client that waits" \
        "only for the slower of the two could reach;"
    echo "- **added p50** = the target's p50 − leasegate-off's p50 (for verify-ack-t<N>: leasegate-t<N>'s);"
    echo "- **delay-node** = the closed loop alone: redis-benchmark against bench/delay_node.rs, which" \
        "answers every read's batch after the same $DELAY_MS ms (a thread per connection, like the" \
        "controller) and does nothing else; its round trip is its mean hold (delay + the sleep's" \
        "lateness), its bound clients × depth / that. Its share of its bound is what this host's loop" \
        "(the load generator's turn, loopback, waking a sleeping process) leaves of *any* bound;"
    echo "- **haproxy-delay-node** = the same behind HAProxy (tcp mode): a proxy whose every write waits" \
        "one round trip, with the fewest hops such a proxy can take (client → proxy → wait → proxy →" \
        "client, as verify-ack's reply path: client → leasegate → controller → leasegate → client);" \
        "its bound likewise from the delay node's hold. Its share of its bound is the ceiling for a proxy;"
    echo "- **CPU µs/request** = the target process's utime + stime over the run / requests (for direct:" \
        "redis-server's); controller CPU likewise for the fake controller (0 when nothing asks it);"
    echo "- **host busy** = how busy all $(nproc) CPUs were during the run (/proc/stat), whatever ran" \
        "them: the closer to 100 %, the more every hop of the loop waits for a CPU."
    echo
    echo "| -P | target | rps | vs off | vs bound | p50 | p99 | added p50 | added p50 / round trip | writes per confirmation | round trip ms | CPU µs/request | controller CPU µs/request | host busy % |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    declare -A SHARE=() ADDED_RTT=() # "target|depth" -> share of its bound; added p50 / round trip
    for depth in "${DEPTHS[@]}"; do
        for t in "${TARGETS[@]}"; do
            off=$(off_of "$t")
            ro=$(med RPS "$off|$depth") p5o=$(med P50 "$off|$depth")
            r=$(med RPS "$t|$depth") p5=$(med P50 "$t|$depth") p9=$(med P99 "$t|$depth")
            row="| $depth | $t | $(fmt %.0f "$r") | $(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "$r" "$ro")"
            if is_verified "$t"; then
                wr=${VWRITES["$t|$depth"]:-0} rn=${VROUNDS["$t|$depth"]:-0}
                rtt=$(calc 'if (b > 0) printf "%.4f", 1000 * a / b; else printf ""' "${VRSUM["$t|$depth"]:-0}" "$rn")
                node=$(calc 'if (b > 0) printf "%.4f", a / b; else printf ""' "$((CLIENTS * depth * 1000))" "$ro")
                bound=""
                if [[ -n "$rtt" && -n "$node" && "$rtt" != - && "$node" != - ]]; then
                    bound=$(awk -v c="$((CLIENTS * depth))" -v n="$node" -v r="$rtt" \
                        'BEGIN { m = (n > r ? n : r); printf "%.1f", 1000 * c / m }')
                fi
                added=$(calc 'printf "%.3f", a - b' "$p5" "$p5o")
                SHARE["$t|$depth"]=$(calc 'printf "%.4f", (b > 0 ? a / b : 0)' "$r" "$bound")
                ADDED_RTT["$t|$depth"]=$(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "$added" "$rtt")
                row+=" | $(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "$r" "$bound")"
                row+=" | $(fmt %.3f "$p5") | $(fmt %.3f "$p9") | $(calc 'printf "%+.3f", a - b' "$p5" "$p5o")"
                row+=" | $(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "$added" "$rtt")"
                row+=" | $(calc 'if (b > 0) printf "%.1f", a / b; else printf "-"' "$wr" "$rn")"
                row+=" | $(fmt %.3f "$rtt") | $(fmt %.2f "$(med CPU "$t|$depth")") | $(fmt %.2f "$(med CCPU "$t|$depth")")"
            elif is_delayed "$t"; then
                rtt=$(calc 'if (a > 0) printf "%.4f", b / a / 1e6; else printf ""' "${DBATCHES["$t|$depth"]:-0}" "${DHELD["$t|$depth"]:-0}")
                bound=$(calc 'if (b > 0) printf "%.1f", 1000 * a / b; else printf ""' "$((CLIENTS * depth))" "$rtt")
                SHARE["$t|$depth"]=$(calc 'printf "%.4f", (b > 0 ? a / b : 0)' "$r" "$bound")
                row+=" | $(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "$r" "$bound")"
                row+=" | $(fmt %.3f "$p5") | $(fmt %.3f "$p9") | | | | $(fmt %.3f "$rtt") | $(fmt %.2f "$(med CPU "$t|$depth")") |"
            else
                row+=" | | $(fmt %.3f "$p5") | $(fmt %.3f "$p9") | | | | | $(fmt %.2f "$(med CPU "$t|$depth")") |"
            fi
            row+=" | $(fmt %.0f "$(med BUSY "$t|$depth")") |"
            echo "$row"
        done
    done
    echo
    echo "Goals at -P 1 (issue 12): verify-ack vs bound ≥ 0.90, added p50 / round trip ≤ 1.10."
    echo "delay-node and haproxy-delay-node vs bound are this host's ceilings for that ratio, without and" \
        "with a proxy hop: verify-ack's ratio ÷ haproxy-delay-node's is how close the verification comes to" \
        "what the loop leaves a proxy."
    if ((${#SWEEP[@]} > 0)); then
        echo
        echo "### Session threads side by side"
        echo
        echo "verify-ack-t<N>'s share of its bound (node latency from leasegate-t<N>) divided by a" \
            "ceiling: HAProxy in front of the delay node with **nbthread N** (what this host leaves a" \
            "proxy with as many threads whose every write waits a round trip), and with nbthread" \
            "$HAPROXY_NBTHREAD (haproxy-delay-node). Goal (issue 24): ≥ 0.9 of the ceiling, added p50 ≤" \
            "1.1 round trips, at every thread count. Host: $(nproc) CPUs."
        echo
        echo "| -P | threads | verify-ack vs bound | haproxy-delay-node-t<N> vs bound | **vs ceiling, nbthread N** | vs ceiling, nbthread $HAPROXY_NBTHREAD | added p50 / round trip | writes per confirmation | CPU µs/write | leasegate-t<N> rps |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for depth in "${DEPTHS[@]}"; do
            for n in "${SWEEP[@]}"; do
                v="verify-ack-t$n" h="haproxy-delay-node-t$n"
                wr=${VWRITES["$v|$depth"]:-0} rn=${VROUNDS["$v|$depth"]:-0}
                echo "| $depth | $n | $(fmt %.2f "${SHARE["$v|$depth"]:-}") | $(fmt %.2f "${SHARE["$h|$depth"]:-}")" \
                    "| **$(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "${SHARE["$v|$depth"]:-}" "${SHARE["$h|$depth"]:-}")**" \
                    "| $(calc 'printf "%.2f", (b > 0 ? a / b : 0)' "${SHARE["$v|$depth"]:-}" "${SHARE["haproxy-delay-node|$depth"]:-}")" \
                    "| $(fmt %s "${ADDED_RTT["$v|$depth"]:-}") | $(calc 'if (b > 0) printf "%.1f", a / b; else printf "-"' "$wr" "$rn")" \
                    "| $(fmt %.2f "$(med CPU "$v|$depth")") | $(fmt %.0f "$(med RPS "leasegate-t$n|$depth")") |"
            done
        done
    fi
    echo
    echo "Checks per target and depth (sums over rounds): verified writes, confirmation rounds," \
        "failed rounds, requests the controller served during those runs (should equal the rounds):"
    echo
    for depth in "${DEPTHS[@]}"; do
        for t in "${VERIFIED[@]}"; do
            echo "- -P $depth $t: writes ${VWRITES["$t|$depth"]:-0}, rounds ${VROUNDS["$t|$depth"]:-0}," \
                "failed ${VFAILED["$t|$depth"]:-0}, controller requests ${VCTRL["$t|$depth"]:-0}"
        done
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
    for t in leasegate "${VERIFIED[@]}"; do
        echo "- $t: pid ${TARGET_PID[$t]}, $(cpu_affinity "${TARGET_PID[$t]}")"
    done
} >"$OUT_MD"

echo
cat "$OUT_MD"
echo
log "written $OUT_MD (raw per-round data: $OUT_RAW)"
((FAILED == 0)) || die "some runs failed or saw rejected writes (see warnings above)"
