"""Hold TCP connections to the VIP open, from the lab's client, and use them on request.

Run on the client (`ip netns exec client python3 tests/e2e/holder.py`); standard library
only, so that it starts as fast as Python can. Commands on stdin, one a line; one JSON
object a line on stdout for each:

    open NAME            connect to VIP:80; -> {"name", "port"} (the local port)
    send NAME SECONDS    send `GET / HTTP/1.0` on it and read until the server closes;
                         -> {"name", "ok", "status", "body", "error", "seconds"}
    quit

A busybox httpd accepts a connection and waits (up to a minute) for the request: a
connection opened and not yet used stays ESTABLISHED, which is what a drain test needs.
"""

from __future__ import annotations

import json
import socket
import sys
import time

VIP = "192.168.30.254"


def send(sock: socket.socket, seconds: float) -> dict[str, object]:
    started = time.monotonic()
    data = b""
    try:
        sock.settimeout(seconds)
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {VIP}\r\n\r\n".encode())
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        error = None
    except OSError as err:  # socket.timeout is an OSError too
        error = f"{type(err).__name__}: {err}"
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    status = head.split("\r\n", 1)[0]
    return {"ok": error is None and " 200 " in f"{status} " and bool(body.strip()),
            "status": status, "body": body.strip(), "error": error,
            "seconds": round(time.monotonic() - started, 2)}


def main() -> int:
    sockets: dict[str, socket.socket] = {}
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        name = words[1]
        if words[0] == "open":
            sock = socket.create_connection((VIP, 80), timeout=5)
            sockets[name] = sock
            answer: dict[str, object] = {"port": sock.getsockname()[1]}
        elif words[0] == "send":
            answer = send(sockets[name], float(words[2]))
            sockets.pop(name).close()
        else:
            answer = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps({"name": name, **answer}), flush=True)
    for sock in sockets.values():
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
