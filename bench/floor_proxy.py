"""The least any proxy does: pass bytes between the client and the upstream, and nothing else.

    python -m bench.floor_proxy --upstream 127.0.0.1:8081 --port 8090 [--splice]

Each client connection gets a connection to the upstream and two threads: one moves what the
client sends to the upstream, the other moves the answers back, until either side closes. No
parsing, no headers of its own, no event loop, so keep-alive requests pass as they come:

- by default with 1 MiB `recv_into` and `sendall`, the copy a proxy makes through user space;
- with --splice, answers by splice(2) through a pipe, which never brings them into user space.

bench/streaming.py times downloads through it in the same rounds as the relay's, so the report
shows what share of the direct rate a proxy can keep at all on this machine: the relay's ceiling
for copied downloads. bench/run.py times creates and retrieves through the copying one at
concurrency 1 beside the relay's: what one more hop through a process costs on this machine.
Loopback only; not a server for anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import threading

BUFFER_BYTES = 1024 * 1024
# Requests are heads and small JSON bodies.
REQUEST_BUFFER_BYTES = 64 * 1024
# fcntl's F_SETPIPE_SZ (Linux): a pipe as large as a copy buffer, so a splice moves as much.
F_SETPIPE_SZ = 1031


def serve(listening: socket.socket, upstream: tuple[str, int], *, splice: bool) -> None:
    while True:
        client, _ = listening.accept()
        threading.Thread(target=_pass, args=(client, upstream, splice), daemon=True).start()


def _pass(client: socket.socket, upstream: tuple[str, int], splice: bool) -> None:
    with client, socket.create_connection(upstream) as origin:
        origin.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_requests, args=(client, origin), daemon=True).start()
        with contextlib.suppress(OSError):  # either side hung up: close both
            (_splice if splice else _copy)(origin, client)
        # The other thread may still be in recv on the client: wake it before both close.
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)


def _requests(client: socket.socket, origin: socket.socket) -> None:
    with contextlib.suppress(OSError):
        _copy(client, origin, REQUEST_BUFFER_BYTES)
        # The client has sent all it will: the upstream may answer and close.
        origin.shutdown(socket.SHUT_WR)


def _copy(source: socket.socket, sink: socket.socket, size: int = BUFFER_BYTES) -> None:
    buffer = memoryview(bytearray(size))
    while received := source.recv_into(buffer):
        sink.sendall(buffer[:received])


def _splice(origin: socket.socket, client: socket.socket) -> None:
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, BUFFER_BYTES)
        while moved := os.splice(origin.fileno(), write_end, BUFFER_BYTES):
            while moved:
                moved -= os.splice(read_end, client.fileno(), moved)
    finally:
        os.close(read_end)
        os.close(write_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="host:port of the server behind it")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--splice", action="store_true", help="splice(2) through a pipe instead of copying")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    listening = socket.create_server(("127.0.0.1", args.port), backlog=64)
    serve(listening, (host, int(port)), splice=args.splice)


if __name__ == "__main__":
    main()
