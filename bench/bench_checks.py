"""Benchmark of the health-check engine: checks per second, CPU seconds per 1,000 checks
and peak RSS, for tcp and http checks against many listeners on loopback.

    python bench/bench_checks.py                     # tcp then http, 10,000 targets each
    python bench/bench_checks.py --targets 2000 --seconds 5 --kind tcp

The listeners run in a child process (so its CPU is not counted as the checker's) with
one listening socket per target on 127.0.0.1, each answering and closing at once; the
checker is lvs_scripts.checks.Checker with the real clock and the real run_check. The
rate asked for is targets / interval; the run is bounded in time (--seconds after one
interval of warm-up) and stops by itself, and so does the listener process. Nothing
here asserts a figure. Loopback only: no other address is ever dialled.

Goals (issue 10): 5,000 tcp checks/s on under half a core, 2,000 http checks/s, under
150 MB resident at 10,000 targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvs_scripts import checks  # noqa: E402
from lvs_scripts.checks import Checker, CheckResult, CheckSpec, Target  # noqa: E402
from lvs_scripts.health import Health, TargetId, Transition  # noqa: E402

LOOPBACK = "127.0.0.1"
MAX_LISTENER_SECONDS = 600  # the listener process ends by itself after this, whatever happens
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nOK")


# ----------------------------------------------------------------- the listener process

def serve(kind: str, count: int) -> None:
    """tcp: accept and close at once. http: answer the first request with 200 and close
    (no parsing: this measures the checker, not a web server). A bare epoll loop, not
    asyncio: cheaper, and it closes each connection as it accepts it (an asyncio server
    starved by a loaded machine held thousands of accepted sockets at once: EMFILE)."""
    import select
    import socket

    listeners = {}
    for _ in range(count):
        sock = socket.socket()
        sock.bind((LOOPBACK, 0))
        sock.listen(1024)
        sock.setblocking(False)
        listeners[sock.fileno()] = sock
    poller = select.epoll()
    for fd in listeners:
        poller.register(fd, select.EPOLLIN)
    print(json.dumps([sock.getsockname()[1] for sock in listeners.values()]), flush=True)
    poller.register(sys.stdin.fileno(), select.EPOLLIN)  # closed by the parent: the end
    pending: dict[int, socket.socket] = {}
    deadline = time.monotonic() + MAX_LISTENER_SECONDS
    while time.monotonic() < deadline:
        for fd, _event in poller.poll(1.0):
            if fd == sys.stdin.fileno():
                deadline = 0.0
            elif fd in listeners:
                accept_all(listeners[fd], kind, poller, pending)
            else:
                answer(pending.pop(fd), poller)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime}), flush=True)


def accept_all(listener: Any, kind: str, poller: Any, pending: dict[int, Any]) -> None:
    import select

    while True:
        try:
            conn, _peer = listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        if kind == "tcp":
            conn.close()
        else:
            conn.setblocking(False)
            pending[conn.fileno()] = conn
            poller.register(conn.fileno(), select.EPOLLIN)


def answer(conn: Any, poller: Any) -> None:
    poller.unregister(conn.fileno())
    try:
        if b"\r\n\r\n" in conn.recv(4096):  # a check's request comes in one segment
            conn.send(RESPONSE)
    except OSError:
        pass  # reset by the checker (its timeout): nothing to answer
    conn.close()


# ----------------------------------------------------------------- the checker

def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


SESSIONS: dict[str, Any] = {}


async def aiohttp_check(spec: CheckSpec, address: str, port: int, vip: str,
                        session: object = None) -> CheckResult:
    """The http check as it was done through aiohttp (the https path; one shared session
    as the Checker keeps), for comparison with our own reader."""
    if "http" not in SESSIONS:
        SESSIONS["http"] = checks.new_session()
    started = time.monotonic()
    try:
        ok, reason = await checks._within(
            checks._http(spec, address, port, vip, SESSIONS["http"]), spec.timeout)
    except asyncio.TimeoutError:
        ok, reason = False, f"timeout after {spec.timeout:g} s"
    return CheckResult(ok, reason, time.monotonic() - started)


async def measure(kind: str, ports: list[int], interval: float, seconds: float,
                  max_in_flight: int, client: str) -> tuple[dict[str, float], dict[str, int]]:
    spec = CheckSpec(type=kind, interval=interval, timeout=min(2.0, interval / 2), rise=2,
                     fall=3, path="/health")
    targets = [Target(TargetId("tcp", "192.0.2.1", 80, LOOPBACK, port), spec) for port in ports]
    counts = {"ok": 0, "failed": 0}
    reasons: dict[str, int] = {}
    window = {"on": False}

    def on_result(target: Target, result: CheckResult, health: Health) -> None:
        if window["on"]:
            counts["ok" if result.ok else "failed"] += 1
            if not result.ok:
                reasons[result.reason] = reasons.get(result.reason, 0) + 1

    def on_transition(target: Target, transition: Transition, health: Health) -> None:
        return None

    checker = Checker(on_transition, on_result=on_result, max_in_flight=max_in_flight,
                      **({"check": aiohttp_check} if client == "aiohttp" else {}))
    checker.set_targets(targets)
    runner = asyncio.get_running_loop().create_task(checker.run())
    await asyncio.sleep(interval)  # warm-up: every target has had its first check
    window["on"] = True
    usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    await asyncio.sleep(seconds)
    usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall0
    user, system = usage.ru_utime - usage0.ru_utime, usage.ru_stime - usage0.ru_stime
    cpu = user + system
    window["on"] = False
    checker.stop()
    await runner
    if "http" in SESSIONS:
        await SESSIONS.pop("http").close()
    checks = counts["ok"] + counts["failed"]
    return {"asked": len(targets) / interval, "rate": checks / wall, "checks": checks,
            "failed": counts["failed"], "cpu_per_1000": cpu / max(checks, 1) * 1000,
            "cores": cpu / wall, "wall": wall, "user_share": user / max(cpu, 1e-9)}, reasons


def run_kind(kind: str, targets: int, interval: float, seconds: float,
             max_in_flight: int, loop: str, client: str) -> None:
    raise_fd_limit(targets + max_in_flight + 256)
    listener = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--targets",
                                 str(targets)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    try:
        out, into = listener.stdout, listener.stdin
        if out is None or into is None:
            raise RuntimeError("no pipes to the listener process")
        ports = json.loads(out.readline())
        rss_before = _rss_mb()
        coro = measure(kind, ports, interval, seconds, max_in_flight, client)
        if loop == "uvloop":  # not a dependency: only to see what another loop would give
            import uvloop  # type: ignore[import-not-found,unused-ignore]

            figures, reasons = uvloop.run(coro)
        else:
            figures, reasons = asyncio.run(coro)
        into.close()
        server_cpu = json.loads(out.readline())["cpu"]
    finally:
        listener.wait(30)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    label = f"{kind}, {client} client" if kind == "http" else kind
    print(f"{label} ({loop} loop): {targets} targets every {interval:g} s "
          f"(asked {figures['asked']:.0f} checks/s), measured over {figures['wall']:.1f} s")
    print(f"  checks/s            {figures['rate']:10.0f}   ({figures['checks']:.0f} checks, "
          f"{figures['failed']:.0f} failed)")
    print(f"  CPU s / 1000 checks {figures['cpu_per_1000']:10.3f}   "
          f"(= {figures['cores']:.2f} of one core; {figures['user_share']:.0%} user, "
          f"the rest kernel)")
    print(f"  peak RSS            {peak:10.1f} MB (before the checker: {rss_before:.1f} MB)")
    print(f"  listener process    {server_cpu:10.1f} CPU s in all")
    print(f"  load average        {os.getloadavg()[0]:10.2f}   on {os.cpu_count()} CPUs "
          "(other work on the machine inflates CPU figures)")
    if reasons:
        print(f"  failures: {reasons}")


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("tcp", "http", "both"), default="both")
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--tcp-interval", type=float, default=2.0,
                        help="10,000 targets every 2 s = 5,000 checks/s")
    parser.add_argument("--http-interval", type=float, default=5.0,
                        help="10,000 targets every 5 s = 2,000 checks/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=512)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="uvloop: if installed (it is not a dependency)")
    parser.add_argument("--http-client", choices=("own", "aiohttp"), default="own",
                        help="aiohttp: the library path (as for https), to compare")
    parser.add_argument("--serve", choices=("tcp", "http"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.targets <= 20_000 or not 0 < args.seconds <= 120:
        parser.error("--targets 1-20000, --seconds up to 120: this benchmark stays bounded")
    if args.serve:
        # As many as allowed: a listener the loaded machine starves accepts up to its
        # backlog of connections at once when it runs again (EMFILE otherwise).
        raise_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        serve(args.serve, args.targets)
        return 0
    kinds = ("tcp", "http") if args.kind == "both" else (args.kind,)
    for kind in kinds:
        interval = args.tcp_interval if kind == "tcp" else args.http_interval
        if len(kinds) > 1:
            # Each kind in its own process: peak RSS is per run, not the larger of the two.
            subprocess.run([sys.executable, __file__, "--kind", kind, "--targets",
                            str(args.targets), "--seconds", str(args.seconds),
                            f"--{kind}-interval", str(interval), "--max-in-flight",
                            str(args.max_in_flight), "--loop", args.loop,
                            "--http-client", args.http_client], check=True)
        else:
            run_kind(kind, args.targets, interval, args.seconds, args.max_in_flight, args.loop,
                     args.http_client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
