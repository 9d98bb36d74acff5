"""A TCP link with latency: every byte arrives `--delay-ms` after it was sent, in each direction.

    python -m bench.delay_proxy --to 127.0.0.1:5432 --port 6543 --delay-ms 0.5

The benchmark's PostgreSQL runs on the same host as the relay, where a round trip costs tens of
microseconds; in production the database is another host, a round trip 0.2-1 ms away, and a
write transaction's round trips add up. This kernel has no netem to delay loopback traffic, so
`bench.ab --pg-delay-ms` puts this proxy between the relays and the cluster instead.

Per connection and direction, one thread reads and stamps each chunk with the time it is due,
another sleeps until then and writes it: order is kept, a chunk is never held longer than the
delay (plus the scheduler's wake-up), and throughput is not limited by it. Loopback only; not a
server for anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import threading
import time

BUFFER_BYTES = 256 * 1024


def serve(listening: socket.socket, to: tuple[str, int], delay_seconds: float) -> None:
    while True:
        client, _ = listening.accept()
        server = socket.create_connection(to)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _link(client, server, delay_seconds)
        _link(server, client, delay_seconds)


def _link(source: socket.socket, sink: socket.socket, delay_seconds: float) -> None:
    due: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def read() -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(BUFFER_BYTES):
                due.put((time.monotonic() + delay_seconds, chunk))
        due.put((0.0, b""))

    def write() -> None:
        try:
            while True:
                when, chunk = due.get()
                if not chunk:
                    break
                wait = when - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                sink.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=write, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, help="host:port to forward to")
    parser.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay in each direction")
    args = parser.parse_args()
    host, port = args.to.rsplit(":", 1)
    listening = socket.create_server(("127.0.0.1", args.port))
    serve(listening, (host, int(port)), args.delay_ms / 1000)


if __name__ == "__main__":
    main()
