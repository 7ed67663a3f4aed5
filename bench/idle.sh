#!/usr/bin/env bash
# Idle connections: memory a proxy holds for N connected-but-quiet clients (one PING each,
# then nothing), leasegate beside HAProxy (tcp mode) and the node itself, in one run.
# Reports RSS growth per connection right after the PINGs and after BENCH_IDLE_WAIT seconds
# of quiet (leasegate gives an idle session's buffers back after 1-2 s), and the projection
# to 10,000 connections (the goal: <= 64 MB for leasegate).
#
# Usage: bench/idle.sh
# Env:
#   BENCH_IDLE_CONNS   connections (default 9000: leasegate holds 2 fds per client, and the
#                      usual fd limit here is 20000; the figures are projected to 10,000)
#   BENCH_IDLE_WAIT    seconds of quiet before the second reading (default 6)
#   LEASEGATE_BIN      use this prebuilt leasegate binary instead of `cargo build --release`
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

CONNS=${BENCH_IDLE_CONNS:-9000}
WAIT=${BENCH_IDLE_WAIT:-6}

ensure_packages
bench_init
build_leasegate
start_redis
start_leasegate leasegate "limits:
  max_clients: $((CONNS + 100))"
start_haproxy haproxy

measure() { # NAME PORT PID
    python3 - "$1" "$2" "$3" "$CONNS" "$WAIT" <<'PY'
import socket, sys, time
name, port, pid, n, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
base = rss()
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    socks.append(s)
for s in socks:
    s.recv(64)
time.sleep(0.5)
busy = rss()
time.sleep(wait)
idle = rss()
per = lambda v: (v - base) / n
print(f"| {name} | {n} | {base/1024:.1f} | {per(busy):.2f} | {per(idle):.2f} | {(base + per(idle) * 10000) / 1024:.1f} |")
for s in socks:
    s.close()
PY
}

echo "| target | connections | RSS before (MiB) | KiB/conn after PING | KiB/conn after ${WAIT} s idle | projected RSS for 10k idle (MiB) |"
echo "|---|---:|---:|---:|---:|---:|"
measure leasegate "${TARGET_PORT[leasegate]}" "${TARGET_PID[leasegate]}"
measure haproxy "${TARGET_PORT[haproxy]}" "${TARGET_PID[haproxy]}"
measure redis-server "$REDIS_PORT" "$REDIS_PID"
