#!/usr/bin/env bash
# Throughput benchmark: redis-benchmark SET/GET through leasegate vs. direct redis, haproxy (L4)
# and twemproxy, all in front of the same redis-server, run side by side in one invocation.
# On a shared/noisy box compare the ratios, not the absolute numbers.
# Besides requests/s it reports each target's CPU per request: the process's utime+stime (all
# threads, /proc/PID/stat) around each redis-benchmark run, divided by the requests.
#
# Usage: bench/throughput.sh
# Env:
#   BENCH_TARGETS      targets, in column order (default: "direct leasegate haproxy twemproxy");
#                      TLS targets: direct-tls (redis-server's tls-port), leasegate-tls (the
#                      tls.listen listener), haproxy-tls (HAProxy terminating TLS with OpenSSL),
#                      e.g. BENCH_TARGETS="direct-tls leasegate-tls haproxy-tls"; each gets the
#                      handshake table too (new connections/s: PING over a fresh connection each)
#   BENCH_HANDSHAKES   new connections per TLS handshake run (default 1000)
#   BENCH_ROUNDS       rounds; target order is rotated each round, median is reported (default 3)
#   BENCH_REQUESTS     -n for every depth (default: 300000 for -P 1, 2000000 for -P >1)
#   BENCH_PIPELINES    pipeline depths (default: "1 16")
#   BENCH_CLIENTS      -c (default 50)
#   BENCH_TESTS        -t (default "set,get")
#   BENCH_QUICK=1      smoke test: tiny -n, 1 round
#   HAPROXY_NBTHREAD   haproxy nbthread (default 2)
#   LEASEGATE_BIN      use this prebuilt leasegate binary instead of `cargo build --release`
#   LEASEGATE_BASE_BIN the binary of the "leasegate-base" target (e.g. a build from before a change)
#   BENCH_OUT          markdown output (default: bench/out/throughput.md)
#   BENCH_KEEP_TMP_ON_FAIL=1  keep the temp dir (configs, logs) if the run fails
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

# ---------------------------------------------------------------- parameters

read -r -a TARGETS <<<"${BENCH_TARGETS:-direct leasegate leasegate-lease haproxy twemproxy}"
read -r -a DEPTHS <<<"${BENCH_PIPELINES:-1 16}"
TESTS=${BENCH_TESTS:-set,get}
CLIENTS=${BENCH_CLIENTS:-50}
export BENCH_CLIENTS=$CLIENTS
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
    ROUNDS=${BENCH_ROUNDS:-1}
    N_P1=2000
    N_PIPE=20000
else
    ROUNDS=${BENCH_ROUNDS:-3}
    # sized so that every redis-benchmark run takes a few seconds on a 2-core box
    N_P1=300000
    N_PIPE=2000000
fi
OUT_MD=${BENCH_OUT:-$REPO_ROOT/bench/out/throughput.md}
OUT_RAW=${OUT_MD%.md}-raw.csv

requests_for_depth() {
    if [[ -n "${BENCH_REQUESTS:-}" ]]; then
        echo "$BENCH_REQUESTS"
    elif (($1 <= 1)); then
        echo "$N_P1"
    else
        echo "$N_PIPE"
    fi
}

((${#TARGETS[@]} > 0)) || die "BENCH_TARGETS is empty"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"

# ---------------------------------------------------------------- targets
# To add a target: add a case here (usually one start_* call) and put its name in
# BENCH_TARGETS / the default list above. Example leasegate variant:
#   leasegate-foo) start_leasegate leasegate-foo $'some_section:\n  key: value' ;;
# Targets whose name starts with "leasegate" get ratio columns against the other targets.

start_target() {
    case "$1" in
    direct) start_direct direct ;;
    leasegate) start_leasegate leasegate "" ;;
    leasegate-t[1-9]*) start_leasegate "$1" "threads: ${1#leasegate-t}" ;; # e.g. leasegate-t16
    leasegate-lease) start_leasegate_with_lease leasegate-lease ;;
    # Reads need the lease too (lease.fence_reads): the cost of lease reads.
    leasegate-fence-reads) start_leasegate_with_lease leasegate-fence-reads "  fence_reads: true" ;;
    leasegate-base)
        [[ -x "${LEASEGATE_BASE_BIN:-}" ]] || die "leasegate-base needs LEASEGATE_BASE_BIN (an executable)"
        LEASEGATE_BIN=$LEASEGATE_BASE_BIN start_leasegate leasegate-base ""
        ;;
    haproxy) start_haproxy haproxy ;;
    direct-tls) start_direct_tls direct-tls ;;
    leasegate-tls) start_leasegate_tls leasegate-tls ;;
    haproxy-tls) HAPROXY_TLS=1 start_haproxy haproxy-tls ;;
    haproxy-t[1-9]*) HAPROXY_NBTHREAD=${1#haproxy-t} start_haproxy "$1" ;; # e.g. haproxy-t16
    twemproxy) start_twemproxy twemproxy ;;
    *) die "unknown target '$1' (see start_target in $0)" ;;
    esac
}

# A leasegate in block-write mode holding a valid lease: every write pays the
# lease check (compare with plain "leasegate", whose lease is disabled).
BENCH_NODE_ID=0123456789abcdef0123456789abcdef01234567
start_leasegate_with_lease() { # NAME [EXTRA lease: keys]
    start_leasegate "$1" "node_id: $BENCH_NODE_ID
control:
  allow_from: [127.0.0.1]
lease:
  mode: block-write${2:+
$2}"
    redis-cli -p "${TARGET_PORT[$1]}" CLUSTERX HEARTBEAT "$BENCH_NODE_ID" 3600000 1 | grep -q '^role:master' ||
        die "$1: the lease heartbeat was not accepted"
}

is_leasegate() { [[ $1 == leasegate* ]]; }

# ---------------------------------------------------------------- main

ensure_packages
bench_init

for t in "${TARGETS[@]}"; do
    if is_leasegate "$t"; then
        build_leasegate
        break
    fi
done

for t in "${TARGETS[@]}"; do
    [[ $t != direct-tls ]] || export BENCH_REDIS_TLS=1
done
start_redis
for t in "${TARGETS[@]}"; do
    start_target "$t"
done

declare -A RESULTS=() # "target|TEST|depth" -> space-separated rps per round
declare -A CPU=()     # "target|TEST|depth" -> space-separated CPU µs per request per round
FAILED=0
mkdir -p "$(dirname "$OUT_MD")"
echo "round,target,test,pipeline,requests,rps,cpu_us_per_req" >"$OUT_RAW"
# One redis-benchmark run per test, so that each test's CPU time can be read on its own.
IFS=, read -r -a TEST_LIST <<<"$TESTS"

ntargets=${#TARGETS[@]}
for ((round = 0; round < ROUNDS; round++)); do
    # rotate target order each round so no target always runs first/last
    order=()
    for ((i = 0; i < ntargets; i++)); do
        order+=("${TARGETS[$(((i + round) % ntargets))]}")
    done
    log "round $((round + 1))/$ROUNDS: order ${order[*]}"
    for depth in "${DEPTHS[@]}"; do
        n=$(requests_for_depth "$depth")
        for t in "${order[@]}"; do
            port=${TARGET_PORT[$t]}
            pid=${TARGET_PID[$t]}
            got=0
            for one in "${TEST_LIST[@]}"; do
                # the target process's CPU time (all threads) around the run
                cpu0=$(proc_cpu_ticks "$pid")
                out=$(run_redis_benchmark "$port" "$depth" "$n" "$one" "$(tls_client_args "$t")")
                cpu1=$(proc_cpu_ticks "$pid")
                while read -r test rps; do
                    [[ -n "$test" ]] || continue
                    us=$(cpu_us_per_request "$cpu0" "$cpu1" "$n")
                    RESULTS["$t|$test|$depth"]+=" $rps"
                    CPU["$t|$test|$depth"]+=" $us"
                    echo "$((round + 1)),$t,$test,$depth,$n,$rps,$us" >>"$OUT_RAW"
                    log "  $t -P $depth $test: $rps rps, $us CPU µs/request"
                    got=$((got + 1))
                done <<<"$out"
            done
            if ((got == 0)); then
                warn "no results for $t -P $depth"
                FAILED=1
            fi
            kill -0 "${TARGET_PID[$t]}" 2>/dev/null || die "$t (pid ${TARGET_PID[$t]}) died during the benchmark"
        done
    done
done

# New TLS connections per second: redis-benchmark -k 0 opens a connection (a full
# handshake, no resumption) for every PING.
declare -A HANDSHAKES=() HANDSHAKE_CPU=()
HANDSHAKE_N=${BENCH_HANDSHAKES:-1000}
for ((round = 0; round < ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do
        [[ "${TARGET_TLS[$t]:-0}" == 1 ]] || continue
        cpu0=$(proc_cpu_ticks "${TARGET_PID[$t]}")
        out=$(run_redis_benchmark "${TARGET_PORT[$t]}" 1 "$HANDSHAKE_N" ping_mbulk "$(tls_client_args "$t") -k 0")
        cpu1=$(proc_cpu_ticks "${TARGET_PID[$t]}")
        while read -r test rps; do
            [[ -n "$test" ]] || continue
            HANDSHAKES[$t]+=" $rps"
            HANDSHAKE_CPU[$t]+=" $(cpu_us_per_request "$cpu0" "$cpu1" "$HANDSHAKE_N")"
            log "  $t: $rps new TLS connections/s"
        done <<<"$out"
    done
done

# ---------------------------------------------------------------- report

IFS=, read -r -a TEST_NAMES <<<"${TESTS^^}"

ratio_pairs=()
for l in "${TARGETS[@]}"; do
    is_leasegate "$l" || continue
    for b in "${TARGETS[@]}"; do
        [[ $b != "$l" ]] || continue
        # compare variants against the plain "leasegate" target, and every leasegate against non-leasegate targets
        # TLS targets are compared with TLS targets only.
        [[ "${TARGET_TLS[$l]:-0}" == "${TARGET_TLS[$b]:-0}" ]] || continue
        if ! is_leasegate "$b" || [[ $b == leasegate && $l != leasegate ]]; then
            ratio_pairs+=("$l/$b")
        fi
    done
done

med() { # target test depth -> median or empty
    local vals=${RESULTS["$1|$2|$3"]:-}
    [[ -n "$vals" ]] || return 0
    # shellcheck disable=SC2086
    median $vals
}

med_cpu() { # target test depth -> median CPU µs per request, or empty
    local vals=${CPU["$1|$2|$3"]:-}
    [[ -n "$vals" ]] || return 0
    # shellcheck disable=SC2086
    median_fmt '%.3f' $vals
}

# ratio_table MEDIAN_FN FORMAT: a markdown table, one row per test and depth, a column per target
# (MEDIAN_FN target test depth, printed with FORMAT) and per ratio pair.
ratio_table() {
    local medfn=$1 fmt=$2 header="| test | -P |" sep="|---|---:|" t p test depth row a b
    for t in "${TARGETS[@]}"; do
        header+=" $t |"
        sep+="---:|"
    done
    for p in "${ratio_pairs[@]}"; do
        header+=" $p |"
        sep+="---:|"
    done
    echo "$header"
    echo "$sep"
    for test in "${TEST_NAMES[@]}"; do
        for depth in "${DEPTHS[@]}"; do
            row="| $test | $depth |"
            local -A m=()
            for t in "${TARGETS[@]}"; do
                m[$t]=$("$medfn" "$t" "$test" "$depth")
                if [[ -n "${m[$t]}" ]]; then
                    # shellcheck disable=SC2059 # the format is the caller's
                    row+=" $(printf "$fmt" "${m[$t]}") |"
                else
                    row+=" fail |"
                fi
            done
            for p in "${ratio_pairs[@]}"; do
                a=${m[${p%/*}]} b=${m[${p#*/}]}
                if [[ -n "$a" && -n "$b" ]]; then
                    row+=" $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') |"
                else
                    row+=" - |"
                fi
            done
            unset m
            echo "$row"
        done
    done
}

# paired ARRAY a b test depth -> "median (min–max)" over rounds of the ratio of a's and b's
# values in the same round (ARRAY: RESULTS or CPU), or empty. The two ran back to back in each
# round, so a drift of the host's load between rounds cancels out of each ratio.
paired() {
    local -n values=$1
    local va=${values["$2|$4|$5"]:-} vb=${values["$3|$4|$5"]:-}
    [[ -n "$va" && -n "$vb" ]] || return 0
    awk -v a="$va" -v b="$vb" 'BEGIN {
        n = split(a, x, " "); m = split(b, y, " "); if (m < n) n = m
        for (i = 1; i <= n; i++) if (y[i] > 0) r[++k] = x[i] / y[i]
        if (k == 0) exit
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        med = (k % 2) ? r[(k + 1) / 2] : (r[k / 2] + r[k / 2 + 1]) / 2
        printf "%.2f (%.2f–%.2f)", med, r[1], r[k] }'
}

# column_table FN COLUMN...: a markdown table, one row per test and depth, a column per COLUMN,
# each cell `FN COLUMN TEST DEPTH`.
column_table() {
    local fn=$1 c test depth row
    shift
    echo "| test | -P |$(printf ' %s |' "$@")"
    echo "|---|---:|$(printf -- '---:|%.0s' "$@")"
    for test in "${TEST_NAMES[@]}"; do
        for depth in "${DEPTHS[@]}"; do
            row="| $test | $depth |"
            for c in "$@"; do
                row+=" $("$fn" "$c" "$test" "$depth") |"
            done
            echo "$row"
        done
    done
}

paired_cpu() { paired CPU "${1%/*}" "${1#*/}" "$2" "$3"; }     # pair test depth
paired_rps() { paired RESULTS "${1%/*}" "${1#*/}" "$2" "$3"; } # pair test depth

spread() { # target test depth -> (max-min)/median in percent, or empty
    local vals=${RESULTS["$1|$2|$3"]:-}
    [[ -n "$vals" ]] || return 0
    # shellcheck disable=SC2086
    printf '%s\n' $vals | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        if (m > 0) printf "%.0f%%\n", 100 * (v[NR] - v[1]) / m }'
}

# Each target's thread setting, as it runs.
thread_settings=()
for t in "${TARGETS[@]}"; do
    case "$t" in
    leasegate*) thread_settings+=("$t $(session_threads "${TARGET_PID[$t]}") session threads") ;;
    haproxy-tls) thread_settings+=("$t nbthread $HAPROXY_NBTHREAD") ;;
    haproxy-t*) thread_settings+=("$t nbthread ${t#haproxy-t}") ;;
    haproxy) thread_settings+=("$t nbthread $HAPROXY_NBTHREAD") ;;
    twemproxy) thread_settings+=("$t 1 (single-threaded)") ;;
    direct | direct-tls) thread_settings+=("$t: redis-server's io-threads 1 (the default)") ;;
    esac
done

affinity_lines=()
for t in redis "${TARGETS[@]}"; do
    [[ $t != direct && $t != direct-tls ]] || continue
    if [[ $t == redis ]]; then pid=$REDIS_PID; else pid=${TARGET_PID[$t]}; fi
    affinity_lines+=("- $t: pid $pid, $(cpu_affinity "$pid")")
done

{
    echo "## leasegate throughput ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    echo "redis-benchmark $(redis-benchmark --version | awk '{print $2}') \`-t $TESTS -c $CLIENTS -q --csv\`," \
        "-n $(for d in "${DEPTHS[@]}"; do printf '%s (-P %s) ' "$(requests_for_depth "$d")" "$d"; done| sed 's/ $//');" \
        "median of $ROUNDS round(s), target order rotated per round."
    echo "Host: $(nproc) CPUs, load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)." \
        "Targets: direct = redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p');" \
        "haproxy $(haproxy -v | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p') mode tcp, nbthread $HAPROXY_NBTHREAD, maxconn $HAPROXY_MAXCONN;" \
        "twemproxy $(nutcracker -V 2>&1 | sed -n '1s/.*nutcracker-//p') (single-threaded), server_connections 1."
    echo "Threads: $(printf '%s; ' "${thread_settings[@]}" | sed 's/; $//')."
    echo "Values are requests/s; ratios > 1 mean leasegate is faster."
    echo
    ratio_table med '%.0f'
    echo
    echo "CPU per request (µs): the target process's CPU time (user + system, all threads, from" \
        "/proc/PID/stat) over the run divided by the requests; for direct it is redis-server's own cost." \
        "Ratios < 1 mean leasegate uses less CPU per request."
    echo
    ratio_table med_cpu '%.3f'
    if ((ROUNDS > 1 && ${#ratio_pairs[@]} > 0)); then
        echo
        echo "Paired by round: each round's ratio of the two targets' runs (back to back, in" \
            "rotated order), median over rounds (min–max). A change of the host's load between" \
            "rounds cancels out of each ratio, which the ratios of medians above keep."
        echo
        echo "CPU per request:"
        echo
        column_table paired_cpu "${ratio_pairs[@]}"
        echo
        echo "Requests/s:"
        echo
        column_table paired_rps "${ratio_pairs[@]}"
    fi
    if ((${#HANDSHAKES[@]} > 0)); then
        echo
        echo "New TLS connections/s ($HANDSHAKE_N connections per run, \`redis-benchmark -k 0 -t ping_mbulk\`:" \
            "a full handshake per PING, no session resumption; ECDSA P-256 certificate), median of $ROUNDS;" \
            "and the target's CPU per connection (µs):"
        echo
        echo "| target | connections/s | CPU µs per connection |"
        echo "|---|---:|---:|"
        for t in "${TARGETS[@]}"; do
            [[ -n "${HANDSHAKES[$t]:-}" ]] || continue
            # shellcheck disable=SC2086
            echo "| $t | $(median ${HANDSHAKES[$t]}) | $(median_fmt '%.1f' ${HANDSHAKE_CPU[$t]}) |"
        done
    fi
    if ((ROUNDS > 1)); then
        echo
        echo "Spread across rounds, (max-min)/median:"
        echo
        column_table spread "${TARGETS[@]}"
    fi
    echo
    echo "CPU placement (no process is pinned unless cpus_allowed is narrower than the host):"
    echo
    printf '%s\n' "${affinity_lines[@]}"
} >"$OUT_MD"

echo
cat "$OUT_MD"
echo
log "written $OUT_MD (raw per-round data: $OUT_RAW)"
((FAILED == 0)) || die "some benchmark runs produced no results (see warnings above)"
