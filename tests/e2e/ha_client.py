"""The failover tests' client (tests/e2e/test_lab_ha.py, test_lab_bgp.py), run on the
lab's client: one TCP connection to VIP:8080 held open, a line sent on it every 200 ms,
and beside it a new connection every 200 ms (arguments: [VIP [PORT [SECONDS]]]).
Standard library only. Each attempt is printed at once as a JSON line:
{"kind": "held"|"new", "sent": T, "done": T, "ok": bool, "who": NAME, "error": ...},
T from time.monotonic() (CLOCK_MONOTONIC: the same clock in every namespace, so the
test can compare it with its own). First line: {"kind": "hello", "port": the held
connection's local port}. Ends on "quit" (or EOF) on stdin.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

VIP = sys.argv[1] if len(sys.argv) > 1 else "192.168.30.254"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
EVERY = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
lock = threading.Lock()
done = threading.Event()


def emit(record: dict[str, object]) -> None:
    with lock:
        print(json.dumps(record), flush=True)


def ask(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    sock.sendall(b"ping\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data.decode().strip()


def attempt(kind: str, call) -> None:  # type: ignore[no-untyped-def]
    sent = time.monotonic()
    try:
        who, error = call(), None
    except OSError as err:
        who, error = None, f"{type(err).__name__}: {err}"
    emit({"kind": kind, "sent": sent, "done": time.monotonic(), "ok": error is None,
          "who": who, "error": error})


def held(sock: socket.socket) -> None:
    while not done.wait(EVERY):
        attempt("held", lambda: ask(sock, 10.0))


def fresh() -> None:
    def once() -> str:
        # 3 s: a SYN lost while the VIP moves is sent again after 1 s (the initial RTO);
        # that is a slower request, not a lost one.
        with socket.create_connection((VIP, PORT), timeout=3.0) as sock:
            return ask(sock, 3.0)

    while not done.wait(EVERY):
        attempt("new", once)


def main() -> int:
    sock = socket.create_connection((VIP, PORT), timeout=5)
    emit({"kind": "hello", "port": sock.getsockname()[1]})
    threads = [threading.Thread(target=held, args=(sock,)), threading.Thread(target=fresh)]
    for thread in threads:
        thread.start()
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    done.set()
    for thread in threads:
        thread.join()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
