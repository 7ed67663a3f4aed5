#!/usr/bin/env python3
"""A test controller for bench/verify.sh: the kvrocks-controller HTTP API shape, slowed down.

Serves, with HTTP/1.1 keep-alive:
  GET /api/v1/namespaces/bench/clusters/bench
      -> a one-shard cluster (version 1) whose only node is --node-id, role master,
         after sleeping --delay-ms milliseconds (the artificial controller round trip);
  GET /count
      -> the number of cluster (topology) requests served so far, as plain text.
Anything else gets 404 with the controller's error shape {"error":{"message":...}}.

Usage: fake_controller.py --port P --node-id ID [--delay-ms 1] [--host 127.0.0.1]
Python 3 standard library only.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLUSTER_PATH = "/api/v1/namespaces/bench/clusters/bench"


def cluster_body(node_id: str) -> bytes:
    answer = {
        "data": {
            "cluster": {
                "version": 1,
                "name": "bench",
                "shards": [
                    {
                        "nodes": [
                            {
                                "id": node_id,
                                "addr": "127.0.0.1:1",
                                "role": "master",
                                "password": "",
                                "created_at": 0,
                            }
                        ],
                        "slot_ranges": ["0-16383"],
                        "target_shard_index": -1,
                        "migrating_slot": None,
                    }
                ],
            }
        }
    }
    return json.dumps(answer, separators=(",", ":")).encode()


def make_handler(body: bytes, delay_s: float):
    lock = threading.Lock()
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection for many requests
        disable_nagle_algorithm = True  # TCP_NODELAY on accepted sockets
        wbufsize = 64 * 1024  # headers + body leave in one write (flushed per request)

        def _send(self, status: int, payload: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            path = self.path.split("?", 1)[0]
            if path == CLUSTER_PATH:
                if delay_s > 0:
                    time.sleep(delay_s)
                with lock:
                    served[0] += 1
                self._send(200, body, "application/json")
            elif path == "/count":
                with lock:
                    n = served[0]
                self._send(200, f"{n}\n".encode(), "text/plain")
            else:
                msg = json.dumps({"error": {"message": f"no such path: {path}"}}).encode()
                self._send(404, msg, "application/json")

        def log_message(self, format, *args):  # noqa: A002 - silence per-request logging
            pass

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--delay-ms", type=float, default=1.0)
    args = ap.parse_args()

    server = ThreadingHTTPServer(
        (args.host, args.port), make_handler(cluster_body(args.node_id), args.delay_ms / 1000.0)
    )
    server.daemon_threads = True
    print(
        f"fake controller on http://{args.host}:{args.port}, node {args.node_id}, "
        f"delay {args.delay_ms:g} ms",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
