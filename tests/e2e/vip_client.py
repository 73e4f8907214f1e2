"""The health-check tests' client (tests/e2e/test_lab_watch.py), run on the lab's client:
a request through the VIP every 100 ms, each on a new connection (`GET /` HTTP/1.0), for as
long as it runs. Standard library only. Each attempt is printed at once as a JSON line:
{"sent": T, "done": T, "ok": bool, "status": CODE, "who": PAGE, "error": ...}; ok is a 200
with a page. T is time.monotonic() (CLOCK_MONOTONIC: the same clock in every namespace,
so the test can compare it with its own). First line: {"hello": true}. Ends on "quit" (or
EOF) on stdin.

One thread, fixed rate: a request is sent every EVERY seconds from the start, whatever
the last one took (a slow one does not shift the rest), and never two at once.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

VIP = "192.168.30.254"
EVERY = 0.1
TIMEOUT = 2.0  # a refused or reset connection fails at once; this is for a lost SYN
done = threading.Event()


def request() -> tuple[int, str]:
    with socket.create_connection((VIP, 80), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {VIP}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    words = head.split(" ", 2)
    status = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
    return status, body.strip()


def attempt() -> None:
    sent = time.monotonic()
    try:
        status, who = request()
        error = None if status == 200 and who else f"HTTP {status}"
    except OSError as err:  # socket.timeout is an OSError too
        status, who, error = 0, "", f"{type(err).__name__}: {err}"
    print(json.dumps({"sent": sent, "done": time.monotonic(), "ok": error is None,
                      "status": status, "who": who, "error": error}), flush=True)


def loop() -> None:
    due = time.monotonic()
    while not done.is_set():
        attempt()
        due += EVERY
        late = time.monotonic() - due
        if late > 0:  # behind (a slow request): skip the missed slots, keep the rate
            due += (int(late / EVERY) + 1) * EVERY
        done.wait(max(due - time.monotonic(), 0.0))


def main() -> int:
    print(json.dumps({"hello": True}), flush=True)
    thread = threading.Thread(target=loop)
    thread.start()
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    done.set()
    thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
