"""The least any proxy does: pass a download from the upstream to the client, and nothing else.

    python -m bench.floor_proxy --upstream 127.0.0.1:8081 --port 8090 [--splice]

A thread per connection reads the client's request head, writes it to the upstream unchanged,
then moves the answer's bytes to the client until the upstream closes (bench/streaming.py's
client asks for `Connection: close`). No parsing, no headers of its own, no event loop:

- by default with 1 MiB `recv_into` and `sendall`, the copy a proxy makes through user space;
- with --splice, by splice(2) through a pipe, which never brings the bytes into user space.

bench/streaming.py times downloads through it in the same rounds as the relay's, so the report
shows what share of the direct rate a proxy can keep at all on this machine: the relay's ceiling
for copied downloads. Loopback only; not a server for anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import threading

BUFFER_BYTES = 1024 * 1024
# fcntl's F_SETPIPE_SZ (Linux): a pipe as large as a copy buffer, so a splice moves as much.
F_SETPIPE_SZ = 1031
HEAD_LIMIT = 64 * 1024


def serve(listening: socket.socket, upstream: tuple[str, int], *, splice: bool) -> None:
    while True:
        client, _ = listening.accept()
        threading.Thread(target=_pass, args=(client, upstream, splice), daemon=True).start()


def _pass(client: socket.socket, upstream: tuple[str, int], splice: bool) -> None:
    with client:
        head = _request_head(client)
        if head is None:
            return
        with socket.create_connection(upstream) as origin:
            origin.sendall(head)
            with contextlib.suppress(OSError):  # the client hung up: close both
                (_splice if splice else _copy)(origin, client)


def _request_head(client: socket.socket) -> bytes | None:
    head = b""
    while b"\r\n\r\n" not in head:
        received = client.recv(HEAD_LIMIT)
        if not received or len(head) > HEAD_LIMIT:
            return None
        head += received
    return head


def _copy(origin: socket.socket, client: socket.socket) -> None:
    buffer = memoryview(bytearray(BUFFER_BYTES))
    while received := origin.recv_into(buffer):
        client.sendall(buffer[:received])


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
