"""A line server for the failover test, on a real server of the lab: answers every line
on a connection with the host's name, for as long as the connection stays open (busybox
httpd closes after each answer). Prints "ready" once it listens. Standard library only."""

from __future__ import annotations

import socketserver
import sys

NAME = sys.argv[1]


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            for _line in self.rfile:
                self.wfile.write(f"{NAME}\n".encode())
        except ConnectionError:
            pass  # the client went away (the test ended, or a director change reset it)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    with Server(("0.0.0.0", 8080), Handler) as server:  # noqa: S104 - the VIP and the RIP
        print("ready", flush=True)
        server.serve_forever()
