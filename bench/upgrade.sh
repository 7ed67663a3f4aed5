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
#   bench/upgrade.sh                     # 20 upgrades
#   BENCH_UPGRADES=5 BENCH_SEED=7 bench/upgrade.sh
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
start_leasegate lg "$lease_yaml"
port=${TARGET_PORT[lg]}
pid=${TARGET_PID[lg]}
cfg="$BENCH_TMP/lg.yaml"
grant() {
    redis-cli -p "$port" --no-auth-warning -a ctl CLUSTERX HEARTBEAT "$ME" 3600000 1 >/dev/null
}
grant

# The baseline: the same load, no upgrade.
base=$(redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -d 2048 -t set -n "$((REQUESTS / 4))" 2>&1 | tr '\r' '\n')
base_rps=$(grep -oE 'throughput summary: [0-9.]+' <<<"$base" | awk '{print $3}')
base_max=$(grep -A2 'latency summary' <<<"$base" | tail -1 | awk '{print $NF}')

redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -d 2048 -t set -n "$REQUESTS" \
    >"$BENCH_TMP/load.out" 2>&1 &
load=$!
BENCH_PIDS+=("$load")
sleep 1

RANDOM=$SEED
successor_of() { # the running `--take-over` process other than $1
    pgrep -f -- "$cfg --take-over" | grep -vx "$1" | tail -1 || true
}
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
printf '\nredis-benchmark -c 50 -d 2048 -t set (%s CPUs):\n' "$(nproc)"
printf '| run | requests/s | max latency ms | error lines |\n|---|---:|---:|---:|\n'
printf '| no upgrade | %s | %s | - |\n' "$base_rps" "$base_max"
printf '| %d upgrades | %s | %s | %s |\n' "$UPGRADES" "$rps" "$max" "$errors"
