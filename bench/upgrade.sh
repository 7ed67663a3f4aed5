#!/usr/bin/env bash
# Upgrading leasegate in place under load: redis-benchmark SETs of 2 KB over
# 50 connections (clients that never reconnect) through a leasegate holding
# a master lease (block-write), while leasegate is upgraded
# BENCH_UPGRADES times (SIGUSR2) at seeded random moments.
#
# Prints, per upgrade: how long the predecessor held requests until the
# successor served (held_us) and until the last session moved (moved_us,
# the longest a request can have waited for the upgrade), the sessions
# moved, and the serving process's descriptors and resident memory after
# it (a leak shows as growth). Then redis-benchmark's own figures: errors,
# requests/s and the maximum latency, beside the same run without upgrades.
#
# BENCH_TLS=1: the clients speak TLS 1.3 to leasegate's TLS listener
# (redis-benchmark --tls, OpenSSL), and their sessions move with their keys:
# after the first upgrade they are served by the successor's own record
# layer (src/proxy/tls/resumed.rs), the baseline by rustls.
#
#   bench/upgrade.sh                     # 20 upgrades
#   BENCH_UPGRADES=5 BENCH_SEED=7 bench/upgrade.sh
#   BENCH_TLS=1 bench/upgrade.sh
#
# BENCH_STEADY_S=N: instead, one upgrade N s into the load, and the same
# connections' steady rate and leasegate's CPU per request in the N s
# before it (the predecessor; over TLS: rustls) and after it (the
# successor; over TLS: the moved sessions' record layer), side by side.
#
#   BENCH_TLS=1 BENCH_STEADY_S=12 bench/upgrade.sh
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

UPGRADES=${BENCH_UPGRADES:-20}
SEED=${BENCH_SEED:-$RANDOM}
REQUESTS=${BENCH_REQUESTS:-2000000}
ME=0123456789012345678901234567890123456789

bench_init
ensure_packages redis-server redis-tools
build_leasegate
start_redis
log "host: $(nproc) CPUs; leasegate threads: default (one per CPU, at most 3)"
log "seed $SEED: $UPGRADES upgrades, each 0.2-1.0 s after the last one finished"

lease_yaml="node_id: $ME
control:
  password: ctl
lease:
  mode: block-write
log:
  level: info
  format: json"
if [[ "${BENCH_TLS:-0}" == 1 ]]; then
    start_leasegate_tls lg "$lease_yaml"
else
    start_leasegate lg "$lease_yaml"
fi
port=${TARGET_PORT[lg]}
# shellcheck disable=SC2207
tls=($(tls_client_args lg))
pid=${TARGET_PID[lg]}
cfg="$BENCH_TMP/lg.yaml"
grant() {
    redis-cli -p "$port" "${tls[@]}" --no-auth-warning -a ctl CLUSTERX HEARTBEAT "$ME" 3600000 1 >/dev/null
}
grant

successor_of() { # the running `--take-over` process other than $1
    pgrep -f -- "$cfg --take-over" | grep -vx "$1" | tail -1 || true
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The mean of redis-benchmark's live rps samples (every 250 ms) from
# second $2 to second $3 of its output $1.
window_rps() {
    tr '\r' '\n' <"$1" | grep -oE '^SET: rps=[0-9.]+' | cut -d= -f2 |
        awk -v a="$2" -v b="$3" 'NR > a * 4 && NR <= b * 4 { s += $1; n++ } END { if (n) printf "%.0f", s / n }'
}

if [[ -n "${BENCH_STEADY_S:-}" ]]; then
    n=$BENCH_STEADY_S
    hz=$(getconf CLK_TCK)
    redis-benchmark -h 127.0.0.1 -p "$port" "${tls[@]}" -c 50 -d 2048 -t set -n 100000000 \
        >"$BENCH_TMP/load.out" 2>&1 &
    load=$!
    BENCH_PIDS+=("$load")
    sleep 1
    t0=$(cpu_ticks "$pid")
    sleep "$((n - 2))"
    t1=$(cpu_ticks "$pid")
    sleep 1
    kill -USR2 "$pid"
    for ((w = 0; w < 500; w++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    new=$(successor_of "$pid")
    [[ -n "$new" ]] || die "no successor"
    BENCH_PIDS+=("$new")
    sleep 1
    t2=$(cpu_ticks "$new")
    sleep "$((n - 2))"
    t3=$(cpu_ticks "$new")
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
    before=$(window_rps "$BENCH_TMP/load.out" 1 "$((n - 1))")
    after=$(window_rps "$BENCH_TMP/load.out" "$((n + 1))" "$((2 * n - 1))")
    errors=$(tr '\r' '\n' <"$BENCH_TMP/load.out" | grep -ciE 'error|reset|refused' || true)
    cpu_us() { awk -v t="$1" -v hz="$hz" -v r="$2" -v s="$3" 'BEGIN { printf "%.1f", t / hz * 1e6 / (r * s) }'; }
    us_before=$(cpu_us "$((t1 - t0))" "$before" "$((n - 2))")
    us_after=$(cpu_us "$((t3 - t2))" "$after" "$((n - 2))")
    printf '\nredis-benchmark -c 50 -d 2048 -t set%s, one upgrade %d s in (%s CPUs; leasegate threads: default):\n' \
        "${tls:+ --tls}" "$n" "$(nproc)"
    printf '| window | served by | requests/s | leasegate CPU µs/request |\n|---|---|---:|---:|\n'
    printf '| %d s before | the predecessor%s | %s | %s |\n' "$((n - 2))" "${tls:+ (rustls)}" "$before" "$us_before"
    printf '| %d s after | the successor%s | %s | %s |\n' "$((n - 2))" "${tls:+ (moved: its record layer)}" "$after" "$us_after"
    awk -v a="$after" -v b="$before" -v ua="$us_after" -v ub="$us_before" \
        'BEGIN { printf "after / before: requests/s %.2f, CPU per request %.2f\n", a / b, ua / ub }'
    printf 'error lines: %s\n' "$errors"
    exit 0
fi

# The baseline: the same load, no upgrade.
base=$(redis-benchmark -h 127.0.0.1 -p "$port" "${tls[@]}" -c 50 -d 2048 -t set -n "$((REQUESTS / 4))" 2>&1 | tr '\r' '\n')
base_rps=$(grep -oE 'throughput summary: [0-9.]+' <<<"$base" | awk '{print $3}')
base_max=$(grep -A2 'latency summary' <<<"$base" | tail -1 | awk '{print $NF}')

redis-benchmark -h 127.0.0.1 -p "$port" "${tls[@]}" -c 50 -d 2048 -t set -n "$REQUESTS" \
    >"$BENCH_TMP/load.out" 2>&1 &
load=$!
BENCH_PIDS+=("$load")
sleep 1

RANDOM=$SEED
printf '\n| # | held_us | moved_us | sessions | fds after | RSS KiB after |\n|---|---:|---:|---:|---:|---:|\n'
for ((i = 1; i <= UPGRADES; i++)); do
    sleep "0.$((2 + RANDOM % 9))"
    kill -0 "$load" 2>/dev/null || { warn "the load ended before upgrade $i"; break; }
    old=$pid
    kill -USR2 "$old"
    for ((w = 0; w < 500; w++)); do
        kill -0 "$old" 2>/dev/null || break
        sleep 0.01
    done
    kill -0 "$old" 2>/dev/null && die "leasegate $old did not hand over within 5 s"
    pid=$(successor_of "$old")
    [[ -n "$pid" ]] || die "no successor after upgrade $i"
    BENCH_PIDS+=("$pid")
    sleep 0.1
    field() { grep -a "$1" "$BENCH_TMP/lg.log" | tail -1 | grep -oE "\"$2\":[0-9]+" | cut -d: -f2; }
    held=$(field 'the successor serves' held_us)
    moved=$(field 'every session moved' since_hold_us)
    sessions=$(field 'every session moved' moved)
    fds=$(ls /proc/"$pid"/fd | wc -l)
    rss=$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)
    printf '| %d | %s | %s | %s | %s | %s |\n' "$i" "$held" "$moved" "$sessions" "$fds" "$rss"
done
wait "$load" || true
out=$(tr '\r' '\n' <"$BENCH_TMP/load.out")
errors=$(grep -ciE 'error|reset|refused' <<<"$out" || true)
rps=$(grep -oE 'throughput summary: [0-9.]+' <<<"$out" | awk '{print $3}')
max=$(grep -A2 'latency summary' <<<"$out" | tail -1 | awk '{print $NF}')
printf '\nredis-benchmark -c 50 -d 2048 -t set%s (%s CPUs):\n' "${tls:+ --tls}" "$(nproc)"
printf '| run | requests/s | max latency ms | error lines |\n|---|---:|---:|---:|\n'
printf '| no upgrade | %s | %s | - |\n' "$base_rps" "$base_max"
printf '| %d upgrades | %s | %s | %s |\n' "$UPGRADES" "$rps" "$max" "$errors"
