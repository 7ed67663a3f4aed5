#!/usr/bin/env bash
# device.sh: the production-size measurements (issues 23 and 24) as one prepared run for a
# borrowed many-core machine that may be bare (no cargo, no packages, nothing of ours), whose
# lease is short (one command at most 10 minutes, about 15 minutes in all).
#
#   bash bench/device.sh pack     here: build the bundle (../shared/tools/bench-bundle.sh) into
#                                 .benchbundle/, add Kvrocks and kvrocks-controller, pack it all
#                                 into .devicebundle/bundle.tar.gz (a lease carries at most 64
#                                 MiB, the bundle alone is more) and print the device command
#   bash bench/device.sh run      there, from the unpacked bundle's project: run DEVICE_PARTS, each under
#                                 what is left of DEVICE_DEADLINE_S, copying every report to
#                                 $OUT (or DEVICE_OUT) as soon as its part ends
#
# Parts (DEVICE_PARTS, in order; default all five, ~8 minutes on 16 cores):
#   throughput       bench/throughput.sh, -c 50: leasegate's default threads against HAProxy
#                    nbthread 4 and 16 (issue 24), and leasegate-t16 / direct for reference
#   throughput-1000  the same with 1,000 clients
#   verify           bench/verify.sh with BENCH_VERIFY_THREAD_SWEEP (default "1 4 16"), -P 1
#   failover-standalone  bench/failover.sh on standalone Kvrocks, 10,000 SET/s of 2 KB,
#                    DEVICE_FAILOVERS (default 20) failovers, every one timed (issue 23)
#   failover-cluster the same through the real kvrocks-controller (--cluster-timing)
# Env: DEVICE_PARTS, DEVICE_DEADLINE_S (default 560), DEVICE_ROUNDS (default 2: throughput
# rounds), DEVICE_FAILOVERS, DEVICE_SEED (default 20261206), DEVICE_SWEEP, DEVICE_OUT;
# DEVICE_QUICK=1 runs every part as its benchmark's BENCH_QUICK smoke test (to try the script).
# Each part's report is named after the part (at most 8 files come back from a lease); the
# logs of every part are in logs.tar.gz.
set -uo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=.benchbundle
CARRY=.devicebundle

die() { echo "device.sh: $*" >&2; exit 1; }

pack() {
    cd "$REPO_ROOT" || die "no repository root"
    [[ -z "$(git status --porcelain --untracked-files=no)" ]] ||
        echo "device.sh: uncommitted changes are not in the bundle (it packs HEAD)" >&2
    BUNDLE_KVROCKS=0 bash ../shared/tools/bench-bundle.sh "$BUNDLE" || die "bench-bundle.sh failed"
    cp ../shared/kvrocks/kvrocks "$BUNDLE/kvrocks" || die "no Kvrocks at ../shared/kvrocks"
    cp ../shared/kvrocks-controller/kvctl-server "$BUNDLE/kvctl-server" ||
        die "no kvrocks-controller at ../shared/kvrocks-controller"
    # One compressed file: the bundle alone is over what a lease carries.
    mkdir -p "$CARRY"
    grep -qxF "/$CARRY/" .git/info/exclude || echo "/$CARRY/" >>.git/info/exclude
    tar -czf "$CARRY/bundle.tar.gz" "$BUNDLE" || die "packing $BUNDLE"
    local size
    size=$(du -sm "$CARRY" | cut -f1)
    echo "$CARRY/bundle.tar.gz: ${size} MiB (a lease carries 64 MiB with the tree)"
    ((size < 56)) || die "$CARRY is ${size} MiB: too large to carry"
    echo "device command (carry [\"$CARRY\"], timeout_s 600):"
    echo "  tar -xzf $CARRY/bundle.tar.gz -C /tmp && cd /tmp/$BUNDLE/project && bash bench/device.sh run"
}

run_part() {
    local part=$1 left=$2
    case "$part" in
    throughput | throughput-1000)
        local clients=50
        [[ "$part" == throughput-1000 ]] && clients=1000
        BENCH_TARGETS="direct leasegate leasegate-t16 haproxy-t4 haproxy-t16" BENCH_CLIENTS=$clients \
            BENCH_ROUNDS=${DEVICE_ROUNDS:-2} BENCH_OUT="$RESULTS/$part.md" \
            timeout -k 10 "$left" bash bench/throughput.sh
        ;;
    verify)
        BENCH_VERIFY_THREAD_SWEEP=${DEVICE_SWEEP:-"1 4 16"} BENCH_PIPELINES=1 BENCH_ROUNDS=1 \
            BENCH_OUT="$RESULTS/verify.md" timeout -k 10 "$left" bash bench/verify.sh
        ;;
    failover-standalone | failover-cluster)
        local env=(BENCH_NODE=kvrocks-standalone)
        [[ "$part" == failover-cluster ]] && env=(BENCH_NODE=kvrocks BENCH_CONTROLLER=real)
        # The issue's load; a quick try keeps failover.sh's smoke-test sizes.
        [[ -z "${BENCH_QUICK:-}" ]] && env+=(BENCH_RATE=10000 BENCH_FAILOVERS="${DEVICE_FAILOVERS:-20}")
        env "${env[@]}" BENCH_TIMING=on \
            BENCH_SEED="${DEVICE_SEED:-20261206}" BENCH_OUT_DIR="$RESULTS/$part" \
            timeout -k 10 "$left" bash bench/failover.sh
        ;;
    *) die "unknown part $part" ;;
    esac
}

# collect: the reports to $OUT (flat, at most 8 files), the logs packed into one.
collect() {
    [[ -n "$OUT_DIR" ]] || return 0
    mkdir -p "$OUT_DIR"
    local f
    for f in "$RESULTS"/*.md; do [[ -f "$f" ]] && cp "$f" "$OUT_DIR/"; done
    for f in "$RESULTS"/failover-*/failover-*.md; do
        [[ -f "$f" ]] && cp "$f" "$OUT_DIR/$(basename "$(dirname "$f")").md"
    done
    tar -czf "$OUT_DIR/logs.tar.gz" -C "$RESULTS" . 2>/dev/null
}

run() {
    cd "$REPO_ROOT" || die "no project"
    # shellcheck disable=SC1091
    [[ -f ../env.sh ]] && source ../env.sh
    [[ -x ../kvrocks ]] && export LEASEGATE_KVROCKS=$PWD/../kvrocks
    [[ -x ../kvctl-server ]] && export LEASEGATE_KVCTL=$PWD/../kvctl-server
    RESULTS=$(mktemp -d /tmp/device-results.XXXX)
    OUT_DIR=${DEVICE_OUT:-${OUT:-}}
    local deadline=$((SECONDS + ${DEVICE_DEADLINE_S:-560}))
    {
        echo "host: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)), $(uname -r)"
        echo "leasegate: $LEASEGATE_BIN ($("$LEASEGATE_BIN" --version 2>&1))"
        echo "kvrocks: ${LEASEGATE_KVROCKS:-none}; controller: ${LEASEGATE_KVCTL:-none}"
    } | tee "$RESULTS/host.md"
    local part left rc start
    [[ "${DEVICE_QUICK:-0}" == 1 ]] && export BENCH_QUICK=1
    for part in ${DEVICE_PARTS:-throughput throughput-1000 verify failover-standalone failover-cluster}; do
        left=$((deadline - SECONDS))
        if ((left < 30)); then
            echo "== $part: skipped, ${left}s left" | tee -a "$RESULTS/host.md"
            continue
        fi
        echo "== $part ($(date -u +%T), ${left}s left)"
        start=$SECONDS
        run_part "$part" "$left" >"$RESULTS/$part.log" 2>&1
        rc=$?
        echo "== $part: rc $rc after $((SECONDS - start))s" | tee -a "$RESULTS/host.md"
        tail -n 5 "$RESULTS/$part.log"
        collect
    done
}

case "${1:-}" in
pack) pack ;;
run) run ;;
*) die "usage: bench/device.sh pack|run" ;;
esac
