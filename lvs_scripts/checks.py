"""Health checks of real servers: what a check is (CheckSpec, parse_check) and the engine
that runs them (run_check, Checker).

The spec half is imported by config.py on every run, so this module imports neither
asyncio nor aiohttp at import time (together some 200 ms); the engine imports them when
it first runs.

The engine is one asyncio event loop, no threads:

- `run_check(spec, address, port, vip)` runs one check and says why it failed
  ("connection refused", "timeout after 3 s", "HTTP 500", "exit 3"...);
- `Checker` runs the checks of many targets, each every `interval` seconds at its own
  phase (so 10,000 targets do not fire together), at most `max_in_flight` at once, feeds
  each result to health.observe and reports transitions through a callback. Its targets
  can be replaced at run time (a reload) without losing the health of those that stay.
  It wakes once for all the checks due by then (a heap of due times); a tcp or http
  check runs on loop callbacks (start_tcp, start_http: no task, no future), the others
  as a task each.

Every check opens its own connection (HTTP without keep-alive): a check that reuses a
connection says nothing about whether the server still accepts new ones.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sys
import time
import zlib
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from .errors import ConfigError
from .health import MAX_REASON, Health, TargetId, Transition, after_check_change, observe
from .record import Record

if TYPE_CHECKING:
    import asyncio

    import aiohttp

    from .model import Config

TYPES = ("tcp", "http", "https", "exec")
ON_FAILURE = ("quiesce", "remove")
COMMON_KEYS = ("type", "port", "interval", "timeout", "rise", "fall", "on_failure")
TYPE_KEYS = {
    "tcp": (),
    "http": ("path", "status", "host", "expect"),
    "https": ("path", "status", "host", "expect", "tls_verify"),
    "exec": ("command",),
}
MIN_INTERVAL = 0.1  # below this a check is load, not monitoring
MAX_INTERVAL = 86400.0  # a day; timeouts too
MAX_RISE_FALL = 100
MAX_BODY = 64 * 1024  # bytes of an HTTP body read to match `expect`; the rest is not read
MAX_OUTPUT = 256  # bytes of an exec check's output kept for the reason; the rest is discarded
# For start_tcp, without importing socket at import time (values of Linux, the only
# system this runs on; test_checks compares them with the socket and errno modules).
_SOCK_FLAGS = 1 | 0o4000  # SOCK_STREAM | SOCK_NONBLOCK
_LINGER_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {1, 0}: close = RST
_EINPROGRESS = 115
_EALREADY = 114


class CheckSpec(Record):
    type: str = "tcp"
    port: int | None = None  # None: the real server's port
    interval: float = 5.0
    timeout: float = 3.0  # < interval, so a target never has two checks in flight
    rise: int = 2
    fall: int = 3
    path: str = "/"
    status: tuple[int, ...] = (200,)
    host: str | None = None  # Host header and TLS server name; None: the VIP
    expect: str | None = None  # a regular expression the body must match (re.search)
    tls_verify: bool = True
    command: tuple[str, ...] = ()  # exec: argv; {address} and {port} are substituted
    on_failure: str = "quiesce"  # quiesce: weight 0 | remove: delete the real server


class CheckResult(Record):
    ok: bool
    reason: str  # "ok", or why not
    duration: float  # seconds


# ---------------------------------------------------------------- parsing the config

def parse_check(data: object, where: str, path: str) -> CheckSpec:
    """Validate a `[service.check]` table (already parsed TOML). `where` is the table's own
    key, e.g. "service[0].check"; errors are ConfigError(path, "service[0].check.KEY", ...)."""
    if not isinstance(data, dict):
        raise ConfigError(path, where, data, "must be a table")
    kind = data.get("type", "tcp")
    if kind not in TYPES or not isinstance(kind, str):
        raise ConfigError(path, f"{where}.type", kind, f"must be one of: {', '.join(TYPES)}")
    allowed = COMMON_KEYS + TYPE_KEYS[kind]
    for name in data:
        if name not in allowed:
            other = [t for t in TYPES if name in TYPE_KEYS[t]]
            rule = (f"does not apply to type = \"{kind}\" (only to {', '.join(other)})" if other
                    else f"unknown key (allowed here: {', '.join(allowed)})")
            raise ConfigError(path, f"{where}.{name}", data[name], rule)
    p = _Fields(data, where, path)
    interval = p.seconds("interval", 5.0, MIN_INTERVAL)
    # The default timeout is 3 s, or half the interval where 3 s would not be below it.
    timeout = p.seconds("timeout", 3.0 if interval > 3.0 else interval / 2, 0.0)
    if timeout >= interval:
        raise ConfigError(path, f"{where}.timeout", data.get("timeout", timeout),
                          f"must be less than interval ({interval:g} s): a check must end "
                          "before the next one starts")
    return CheckSpec(
        type=kind,
        port=p.integer("port", 0, 1, 65535) if "port" in data else None,
        interval=interval,
        timeout=timeout,
        rise=p.integer("rise", 2, 1, MAX_RISE_FALL),
        fall=p.integer("fall", 3, 1, MAX_RISE_FALL),
        path=p.url_path(),
        status=p.status(),
        host=p.host(),
        expect=p.regex("expect"),
        tls_verify=p.boolean("tls_verify", True),
        command=p.command() if kind == "exec" else (),
        on_failure=p.choice("on_failure", ON_FAILURE, "quiesce"),
    )


class _Fields:
    """Typed reads of one check table; each error names the key and its value."""

    def __init__(self, data: Mapping[str, Any], where: str, path: str) -> None:
        self.data = data
        self.where = where
        self.path = path

    def fail(self, name: str, rule: str) -> ConfigError:
        return ConfigError(self.path, f"{self.where}.{name}", self.data.get(name), rule)

    def seconds(self, name: str, default: float, low: float) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0 or not low <= value <= MAX_INTERVAL:
            raise self.fail(name, f"must be a positive number of seconds, from {low:g} to "
                                  f"{MAX_INTERVAL:g}" if low else
                            f"must be a positive number of seconds (at most {MAX_INTERVAL:g})")
        return float(value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(name, f"must be an integer from {low} to {high}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.data.get(name, default)
        if value not in choices or not isinstance(value, str):
            raise self.fail(name, f"must be one of: {', '.join(choices)}")
        return value

    def text(self, name: str) -> str | None:
        """A string that goes on the wire: printable ASCII without spaces."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value or not value.isascii() \
                or not value.isprintable() or " " in value:
            raise self.fail(name, "must be a non-empty string of printable ASCII without spaces")
        return value

    def url_path(self) -> str:
        value = self.text("path")
        if value is None:
            return "/"
        if not value.startswith("/"):
            raise self.fail("path", "must start with \"/\"")
        return value

    def host(self) -> str | None:
        value = self.text("host")
        if value is not None and (len(value) > 253 or "/" in value or "@" in value):
            raise self.fail("host", "must be a host name or an IP address")
        return value

    def status(self) -> tuple[int, ...]:
        value = self.data.get("status", [200])
        codes = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(codes, list) or not codes or any(
                isinstance(c, bool) or not isinstance(c, int) or not 100 <= c <= 599
                for c in codes):
            raise self.fail("status", "must be an HTTP status code (100-599) or a non-empty "
                                      "list of them")
        return tuple(sorted(set(codes)))

    def regex(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(name, "must be a non-empty string (a regular expression)")
        try:
            re.compile(value)
        except re.error as err:
            raise self.fail(name, f"is not a valid regular expression: {err}") from None
        return value

    def command(self) -> tuple[str, ...]:
        value = self.data.get("command")
        if value is None:
            raise ConfigError(self.path, f"{self.where}.command", None,
                              "is required with type = \"exec\" (a list: program and "
                              "arguments, no shell)")
        if not isinstance(value, list) or not value:
            raise self.fail("command", "must be a non-empty list of strings (program and "
                                       "arguments; it runs without a shell)")
        for index, item in enumerate(value):
            if not isinstance(item, str) or "\0" in item:
                raise ConfigError(self.path, f"{self.where}.command[{index}]", item,
                                  "must be a string (without NUL)")
        program = value[0]
        if not os.path.isabs(program):
            raise ConfigError(self.path, f"{self.where}.command[0]", program,
                              "must be an absolute path: checks do not search PATH")
        return tuple(value)


def require_check_programs(config: Config) -> None:
    """An exec check's program must be an executable file on the director, the only host
    that runs checks. Not part of parsing: the real servers read the same file and need
    not have the director's check scripts."""
    for index, service in enumerate(config.services):
        check = service.check
        if check is None or check.type != "exec":
            continue
        program = check.command[0]
        if not os.path.isfile(program) or not os.access(program, os.X_OK):
            raise ConfigError(config.path, f"service[{index}].check.command[0]", program,
                              "is not an executable file on this director")


# ---------------------------------------------------------------- one check

async def run_check(spec: CheckSpec, address: str, port: int, vip: str,
                    session: aiohttp.ClientSession | None = None) -> CheckResult:
    """Run one check of the real server address:port (port: the server's; spec.port wins).
    https uses `session` (one per scheduler) or a session of their own; http does not
    need one (start_http)."""
    import asyncio

    port = spec.port or port
    started = time.monotonic()
    try:
        if spec.type == "tcp":  # its own timer: see start_tcp
            ok, reason = await _tcp(address, port, spec.timeout)
        elif spec.type == "http":  # likewise
            ok, reason = await _plain_http(spec, address, port, vip)
        else:
            coro = _http(spec, address, port, vip, session) \
                if spec.type == "https" else _exec(spec, address, port)
            ok, reason = await _within(coro, spec.timeout)
    except asyncio.TimeoutError:
        ok, reason = False, f"timeout after {spec.timeout:g} s"
    except OSError as err:
        ok, reason = False, _os_reason(err)
    except Exception as err:
        # Whatever a server's answer made a library raise, it fails this check of this
        # server, with the exception in the reason; it must not stop the checks of all.
        ok, reason = False, f"unexpected {type(err).__name__}: {err}"[:MAX_REASON]
    return CheckResult(ok, reason, time.monotonic() - started)


def _os_reason(err: OSError) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    return (err.strerror or str(err) or type(err).__name__).lower()


async def _within(coro: Awaitable[tuple[bool, str]], timeout: float) -> tuple[bool, str]:
    """Await coro for at most timeout seconds. asyncio.timeout (3.11) where there is one:
    wait_for runs the coroutine in a task of its own, a second task for every check."""
    import asyncio

    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await coro
    return await asyncio.wait_for(coro, timeout)  # pragma: no cover - Python < 3.11


async def _tcp(address: str, port: int, timeout: float) -> tuple[bool, str]:
    """One tcp check as a coroutine (run_check); the Checker drives start_tcp directly."""
    import asyncio

    return await _probe(lambda done: start_tcp(asyncio.get_running_loop(), address, port,
                                               timeout, done))


async def _plain_http(spec: CheckSpec, address: str, port: int, vip: str) -> tuple[bool, str]:
    """One http check as a coroutine (run_check); the Checker drives start_http directly."""
    import asyncio

    return await _probe(lambda done: start_http(asyncio.get_running_loop(), spec, address,
                                                port, vip, done))


async def _probe(start: Callable[[Callable[[bool, str], None]], _Probe | None]
                 ) -> tuple[bool, str]:
    import asyncio

    outcome: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
    def done(ok: bool, reason: str) -> None:
        if not outcome.done():  # not when cancelled just before
            outcome.set_result((ok, reason))

    probe = start(done)
    try:
        return await outcome
    finally:
        if probe is not None:  # cancelled from outside: no socket nor timer left behind
            probe.cancel()


def start_tcp(loop: asyncio.AbstractEventLoop, address: str, port: int, timeout: float,
              done: Callable[[bool, str], None]) -> _Probe | None:
    """Connect to address:port and close at once; `done(ok, reason)` is called once, maybe
    before this returns (it returns None then), else from the loop (it returns the probe
    in flight, which `cancel()` ends without calling `done`).

    This is the check run thousands of times a second, so it is the cheapest correct one
    asyncio allows: the C socket without socket.socket's Python layer, no task, future or
    coroutine, a call_later handle as the timeout. A second connect() right after the
    first costs one system call and finds the handshake over where the server is near
    (always on loopback, often on a LAN): no poller round trip then. The close sends a
    reset (SO_LINGER 0), so that no TIME_WAIT socket per check piles up on the checker,
    and the server's end is freed at once too."""
    try:
        sock, code = _connect(address, port)
    except Exception as err:
        done(False, _exception_reason(err))
        return None
    if code == _EALREADY:
        probe = _Probe(loop, sock, timeout, done)
        loop.add_writer(probe.fd, probe.connected)
        return probe
    sock.close()
    if code:
        done(False, _errno_reason(code))
    else:
        done(True, "ok")
    return None


def _connect(address: str, port: int) -> tuple[Any, int]:
    """A non-blocking socket connecting to address:port, and 0 (connected), _EALREADY (in
    progress) or the errno of the failure."""
    import _socket  # the C socket: socket.socket's Python layer is not needed here

    sock = _socket.socket(_socket.AF_INET6 if ":" in address else _socket.AF_INET,
                          _SOCK_FLAGS)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_RESET)
        code: int = sock.connect_ex((address, port))
        if code == _EINPROGRESS:
            code = sock.connect_ex((address, port))
    except BaseException:
        sock.close()
        raise
    return sock, code


def _errno_reason(code: int) -> str:
    return _os_reason(OSError(code, os.strerror(code)))  # OSError picks the subclass


def _exception_reason(err: Exception) -> str:
    if isinstance(err, OSError):
        return _os_reason(err)
    # As in run_check: whatever it was fails this check, not the checker.
    return f"unexpected {type(err).__name__}: {err}"[:MAX_REASON]


class _Probe:
    """A check in flight on loop callbacks: its socket, its timer, and how it ends. As
    is, a tcp check waiting for its handshake; _HttpProbe goes on from there."""

    __slots__ = ("done", "fd", "loop", "sock", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: Any, timeout: float,
                 done: Callable[[bool, str], None] | None) -> None:
        self.loop = loop
        self.sock = sock
        self.done = done
        self.fd: int = sock.fileno()
        self.timer = loop.call_later(timeout, self.end, False, f"timeout after {timeout:g} s")

    def connected(self) -> None:
        """The socket is writable: the handshake is over, one way or the other."""
        import _socket

        self.loop.remove_writer(self.fd)
        code = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if code:
            self.end(False, _errno_reason(code))
        else:
            self.established()

    def established(self) -> None:
        self.end(True, "ok")

    def cancel(self) -> None:
        self.done = None
        self.end(False, "cancelled")

    def end(self, ok: bool, reason: str) -> None:
        if self.sock is None:
            return
        self.loop.remove_writer(self.fd)
        self.loop.remove_reader(self.fd)
        self.timer.cancel()
        self.sock.close()
        self.sock = None
        done, self.done = self.done, None
        if done is not None:
            done(ok, reason)


# ---------------------------------------------------------------- http (not https)

def start_http(loop: asyncio.AbstractEventLoop, spec: CheckSpec, address: str, port: int,
               vip: str, done: Callable[[bool, str], None]) -> _Probe | None:
    """An http check on loop callbacks, as start_tcp (same connect, timeout and reset):
    send one GET with `Connection: close`, read the status line and headers (and the body
    up to MAX_BODY when `expect` has to match it: Content-Length, chunked, or up to the
    close), judge. aiohttp cost four times as much CPU per check (README, benchmarks),
    and https stays on it: TLS is where a library is worth its cost."""
    try:
        sock, code = _connect(address, port)
    except Exception as err:
        done(False, _exception_reason(err))
        return None
    if code not in (0, _EALREADY):
        sock.close()
        done(False, _errno_reason(code))
        return None
    probe = _HttpProbe(loop, sock, spec, _request_bytes(spec.path, spec.host or vip), done)
    if code == _EALREADY:
        loop.add_writer(probe.fd, probe.connected)
    else:
        probe.established()
    return probe


@functools.lru_cache(maxsize=1024)
def _request_bytes(path: str, host: str) -> bytes:
    """The request (path and host are printable ASCII without spaces: parse_check)."""
    name = f"[{host}]" if ":" in host else host
    return (f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n"
            f"User-Agent: lvs-director-check\r\nAccept: */*\r\n\r\n").encode("ascii")


class _HttpProbe(_Probe):
    __slots__ = ("request", "response", "spec")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: Any, spec: CheckSpec,
                 request: bytes, done: Callable[[bool, str], None]) -> None:
        super().__init__(loop, sock, spec.timeout, done)
        self.spec = spec
        self.request = request
        self.response = HttpResponse(spec.status if spec.expect is not None else ())

    def established(self) -> None:
        self.send()

    def send(self) -> None:
        try:
            sent = self.sock.send(self.request)
        except BlockingIOError:
            sent = 0
        except OSError as err:
            self.end(False, _os_reason(err))
            return
        self.request = self.request[sent:]
        if self.request:  # a full send buffer on a new connection: rare, but possible
            self.loop.add_writer(self.fd, self.send)
            return
        self.loop.remove_writer(self.fd)
        self.loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as err:
            self.end(False, _os_reason(err))
            return
        try:
            complete = self.response.feed(data) if data else self.response.close()
        except BadResponse as err:
            self.end(False, f"HTTP: {err}")
            return
        if complete:
            self.end(*_judge(self.spec, self.response.status, bytes(self.response.body)))


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")


class BadResponse(Exception):
    """What a server sent is not an HTTP/1.x response this checker can judge."""


class HttpResponse:
    """An HTTP/1.x response read incrementally: the status line and headers, then (for a
    status in `body_for`, the ones whose body `expect` must match) the body up to
    MAX_BODY. `feed(data)` and, at the end of the stream, `close()` return True once
    there is enough to judge; BadResponse says what was wrong. Interim 1xx responses are
    skipped; the body is as sent (no decompression: nothing asks for it)."""

    MAX_HEAD = 64 * 1024

    def __init__(self, body_for: tuple[int, ...] = ()) -> None:
        self.body_for = body_for
        self.buffer = bytearray()
        self.status = 0
        self.body = bytearray()
        self.framing = ""  # after the head: "length", "chunked" or "close"
        self.length = 0
        self.done = False

    def feed(self, data: bytes) -> bool:
        if self.done:
            return True
        self.buffer += data
        while not self.framing:
            # A bare LF ends a line too (RFC 9112 2.2): busybox httpd passes a CGI's
            # headers on as the script wrote them, and aiohttp took them.
            end = _HEAD_END.search(self.buffer)
            if end is None:
                if len(self.buffer) > self.MAX_HEAD:
                    raise BadResponse(f"headers longer than {self.MAX_HEAD} bytes")
                return False
            head = bytes(self.buffer[:end.start()])
            del self.buffer[:end.end()]
            if self._head(head):
                self.done = True
                return True
        return self._body(eof=False)

    def close(self) -> bool:
        """The server closed the connection."""
        if self.done:
            return True
        if not self.framing:
            raise BadResponse("connection closed before the end of the headers"
                              if self.buffer or self.status else
                              "connection closed without a response")
        if self._body(eof=True):
            return True
        raise BadResponse("connection closed before the end of the body")

    def _head(self, head: bytes) -> bool:
        """Read a status line and headers; True when the response can be judged now."""
        lines = _LINE_END.split(head)
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") \
                or len(parts[1]) != 3 or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        self.status = int(parts[1])
        if self.status < 100:
            raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise BadResponse(f"not a header line: {line[:60]!r}")
            headers[name.lower()] = value.strip()
        if 100 <= self.status < 200 and self.status != 101:
            return False  # an interim response: the real one follows
        if self.status not in self.body_for:
            return True
        return self._framing(headers)

    def _framing(self, headers: dict[bytes, bytes]) -> bool:
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self.framing = "chunked"
        elif b"content-length" in headers:
            value = headers[b"content-length"]
            if not value.isdigit():
                raise BadResponse(f"bad Content-Length: {value[:30]!r}")
            self.framing, self.length = "length", int(value)
        else:
            self.framing = "close"
        return self._body(eof=False)

    def _body(self, eof: bool) -> bool:
        if self.framing == "chunked":
            self._chunks()
        else:
            self.body += self.buffer
            del self.buffer[:]
        if len(self.body) >= MAX_BODY:
            del self.body[MAX_BODY:]  # enough to match: the rest is not read
            self.done = True
        elif self.framing == "length" and len(self.body) >= self.length:
            del self.body[self.length:]
            self.done = True
        elif self.framing == "close" and eof:
            self.done = True
        return self.done

    def _chunks(self) -> None:
        """Move the complete chunks from the buffer into the body."""
        while not self.done:
            newline = self.buffer.find(b"\n")
            if newline < 0:
                if len(self.buffer) > 1024:
                    raise BadResponse("a chunk size line longer than 1024 bytes")
                return
            size_text = bytes(self.buffer[:newline]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size: {size_text[:30]!r}") from None
            if size == 0:  # the last chunk (trailers, if any, are not needed)
                self.done = True
                return
            data = newline + 1
            after = data + size  # the chunk's own line end: CRLF, or a bare LF
            if len(self.buffer) < after + 2 and not (
                    len(self.buffer) == after + 1 and self.buffer[after:] == b"\n"):
                if len(self.body) + len(self.buffer) - data >= MAX_BODY:
                    # enough of this chunk for the bound: take it, read no more
                    self.body += self.buffer[data:after]
                    del self.buffer[:]
                return
            self.body += self.buffer[data:after]
            del self.buffer[:after + (1 if self.buffer[after:after + 1] == b"\n" else 2)]


async def _http(spec: CheckSpec, address: str, port: int, vip: str,
                session: aiohttp.ClientSession | None) -> tuple[bool, str]:
    import aiohttp

    if session is None:
        async with new_session() as own:
            return await _http(spec, address, port, vip, own)
    url, headers, options = _request(spec, address, port, vip)
    try:
        async with session.get(url, headers=headers, allow_redirects=False,
                               **options) as response:
            status = response.status
            wanted = spec.expect is not None and status in spec.status
            body = await _read_bounded(response, MAX_BODY) if wanted else b""
    except aiohttp.ClientSSLError as err:
        return False, f"TLS: {_ssl_reason(err)}"
    except aiohttp.ClientConnectorError as err:
        return False, _os_reason(err.os_error)
    except aiohttp.ClientError as err:
        return False, f"HTTP: {err.__class__.__name__}: {err}"[:200]
    return _judge(spec, status, body)


def _request(spec: CheckSpec, address: str, port: int,
             vip: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """URL (to the real server's address), headers (Host: the service's name) and TLS
    options (the server name sent and verified is `host` too, unless it is an address)."""
    host = spec.host or vip
    literal = f"[{address}]" if ":" in address else address
    url = f"{spec.type}://{literal}:{port}{spec.path}"
    headers = {"Host": f"[{host}]" if ":" in host else host, "Connection": "close",
               "User-Agent": "lvs-director-check"}
    options: dict[str, Any] = {}
    if spec.type == "https":
        options["ssl"] = _ssl_context(spec.tls_verify)
        if not _is_ip(host) and _aiohttp_has_server_hostname():
            options["server_hostname"] = host
    return url, headers, options


def _judge(spec: CheckSpec, status: int, body: bytes) -> tuple[bool, str]:
    if status not in spec.status:
        return False, f"HTTP {status}"
    if spec.expect is not None and re.search(spec.expect,
                                             body.decode("utf-8", "replace")) is None:
        return False, f"body does not match {spec.expect!r}"
    return True, "ok"


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _ssl_reason(err: Exception) -> str:
    text = str(getattr(err, "os_error", None) or err)
    match = re.search(r"certificate verify failed: ([^(]*)", text)
    return f"certificate verify failed: {match.group(1).strip()}" if match else text[:160]


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_SSL_CONTEXTS: dict[bool, Any] = {}


def _ssl_context(verify: bool) -> Any:
    """One context per setting for the process: building one loads the CA store (ms)."""
    import ssl

    if verify not in _SSL_CONTEXTS:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        _SSL_CONTEXTS[verify] = context
    return _SSL_CONTEXTS[verify]


@functools.cache
def _aiohttp_has_server_hostname() -> bool:
    """aiohttp < 3.9 cannot send a TLS server name other than the URL's (an address)."""
    import inspect

    import aiohttp

    return "server_hostname" in inspect.signature(aiohttp.ClientSession._request).parameters


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """The session a Checker shares between its http(s) checks: no keep-alive (each check
    opens and closes its own connection), no cookies kept between checks, no proxy from the
    environment, no DNS (targets are addresses)."""
    import aiohttp

    connector = aiohttp.TCPConnector(force_close=True, limit=limit, use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 trust_env=False, auto_decompress=False)


async def _exec(spec: CheckSpec, address: str, port: int) -> tuple[bool, str]:
    """Run the command, no shell, stdin closed, in a session of its own so that the whole
    process group is killed at the timeout, and reaped."""
    import asyncio
    import signal

    argv = [_substitute(word, address, port) for word in spec.command]
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        output = await _drain(process.stdout, MAX_OUTPUT)
        code = await process.wait()
    except BaseException:  # the timeout (CancelledError) or anything else: no orphan left
        with contextlib.suppress(ProcessLookupError):  # it ended as the timeout struck
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.shield(process.wait())
        raise
    if code == 0:
        return True, "ok"
    said = output.decode("utf-8", "replace").strip().splitlines()
    detail = f": {said[0][:120]}" if said else ""
    if code < 0:
        return False, f"killed by signal {-code}{detail}"
    return False, f"exit {code}{detail}"


def _substitute(word: str, address: str, port: int) -> str:
    # str.replace, not str.format: a config string must not reach attributes ({0.__class__}).
    return word.replace("{address}", address).replace("{port}", str(port))


async def _drain(stream: asyncio.StreamReader | None, keep: int) -> bytes:
    """Read to EOF, keeping the first `keep` bytes: a chatty check must not block on a
    full pipe, nor fill our memory."""
    kept = b""
    if stream is None:
        return kept
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return kept
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]


# ---------------------------------------------------------------- many checks

class Target(NamedTuple):
    """One real server to check, as the watcher derives it from the config. `host_vip`:
    the VIP an http check names by default when the key has none (a fwmark service's
    first match VIP). A NamedTuple, not a Record: the watcher makes one per real server
    at each reload, and a Record's __init__ (Python) was a third of targets_of at 10,000
    (0.5 s of the lab VM's time between a SIGHUP and the kernel)."""

    key: TargetId
    spec: CheckSpec
    host_vip: str | None = None

    @property
    def address(self) -> str:
        return self.key.address

    @property
    def port(self) -> int:
        return self.key.port

    @property
    def vip(self) -> str:
        return self.host_vip or self.key.vip


TransitionCallback = Callable[[Target, Transition, Health], None]
ResultCallback = Callable[[Target, CheckResult, Health], None]
CheckRunner = Callable[..., Awaitable[CheckResult]]


class _Slot:
    """A scheduled target: the generation makes results of a replaced target void."""

    __slots__ = ("busy", "due", "generation", "target")

    def __init__(self, target: Target, due: float, generation: int) -> None:
        self.target = target
        self.due = due
        self.generation = generation
        self.busy = False


def phase(key: TargetId, interval: float) -> float:
    """Where in its interval a target's checks fall: spread evenly by a hash of its
    identity, the same at every start, so the load is flat and a test can predict it."""
    return zlib.crc32(str(key).encode()) / 2**32 * interval


class Checker:
    """Runs the checks of many targets on the running event loop.

        checker = Checker(on_transition)
        checker.set_targets(targets, saved_health)    # again at each reload
        await checker.run()                           # until checker.stop()

    `clock` (monotonic, schedules) and `wall` (time.time, Health.since) and `sleep` can be
    replaced by a test; `sleep(delay)` must return after `delay` of `clock`'s time, and
    may return early. `run_check` too (a test can count checks without the network)."""

    def __init__(self, on_transition: TransitionCallback, *,
                 on_result: ResultCallback | None = None, max_in_flight: int = 512,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] | None = None,
                 check: CheckRunner = run_check) -> None:
        self.on_transition = on_transition
        self.on_result = on_result
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.wall = wall
        self.check = check
        self._sleep = sleep
        self._slots: dict[TargetId, _Slot] = {}
        self._health: dict[TargetId, Health] = {}
        self._heap: list[tuple[float, int, TargetId, int]] = []
        self._sequence = 0  # heap tie-breaker and generation source
        self._waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self._error: BaseException | None = None
        self._active = 0  # checks started and not yet recorded
        self._ended: asyncio.Future[None] | None = None  # resolved as the next one ends
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- what is checked

    @property
    def health(self) -> dict[TargetId, Health]:
        """A copy: the health of every current target, to be saved."""
        return dict(self._health)

    @property
    def targets(self) -> dict[TargetId, Target]:
        return {key: slot.target for key, slot in self._slots.items()}

    def set_targets(self, targets: Iterable[Target],
                    saved: Mapping[TargetId, Health] | None = None) -> None:
        """Check these targets from now on. Targets that stay keep their health and their
        schedule (a changed check keeps the state, restarts the counters and takes its new
        interval); new ones take their saved health, else unknown; gone ones are dropped,
        and a check of theirs still running is ignored when it ends."""
        saved = {} if saved is None else saved  # not its truth: it may read a file
        now = self.clock()
        wanted: dict[TargetId, Target] = {}
        for target in targets:
            if target.key in wanted:
                raise ValueError(f"target {target.key} is listed twice")
            wanted[target.key] = target
        for key in [key for key in self._slots if key not in wanted]:
            del self._slots[key]
            del self._health[key]
        # Each service's targets share its CheckSpec: compared once a pair of them, not
        # once a target (a Record compares field by field in Python: most of a reload's
        # set_targets at 10,000). By id: both objects live through this loop.
        same: dict[tuple[int, int], bool] = {}
        for key, target in wanted.items():
            slot = self._slots.get(key)
            if slot is not None:
                if slot.target is target:  # the watcher's TargetCache: the same target
                    continue
                pair = (id(slot.target.spec), id(target.spec))
                unchanged = same.get(pair)
                if unchanged is None:
                    unchanged = same[pair] = slot.target.spec == target.spec
                if unchanged:
                    continue
            if slot is not None:
                self._health[key] = after_check_change(self._health[key])
            else:
                self._health[key] = saved.get(key) or Health(since=self.wall())
            self._schedule(target, now + phase(key, target.spec.interval))
        if len(self._heap) > 4 * len(self._slots) + 64:
            self._compact()
        self._wake()

    def _schedule(self, target: Target, due: float) -> None:
        import heapq

        self._sequence += 1
        self._slots[target.key] = _Slot(target, due, self._sequence)
        heapq.heappush(self._heap, (due, self._sequence, target.key, self._sequence))

    def _compact(self) -> None:
        """Drop heap entries of replaced or removed targets (after many reloads)."""
        import heapq

        self._heap = [entry for entry in self._heap if self._current(entry) is not None]
        heapq.heapify(self._heap)

    def _current(self, entry: tuple[float, int, TargetId, int]) -> _Slot | None:
        slot = self._slots.get(entry[2])
        return slot if slot is not None and slot.generation == entry[3] else None

    # -- running

    @property
    def in_flight(self) -> int:
        """Checks started and not yet recorded."""
        return self._active

    async def settled(self) -> None:
        """Return once no check is under way (a test's clock waits for this)."""
        while self._active:
            await self._one_ended()

    async def _one_ended(self) -> None:
        import asyncio

        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        await self._ended

    def stop(self) -> None:
        """End run() (for good: a stop that comes before run() starts is not lost)."""
        self._stopping = True
        self._wake()

    async def run(self) -> None:
        """Check until stop(); then wait for the checks under way. A callback's exception
        stops the checker and is raised here."""
        try:
            await self._loop()
        finally:
            await self.settled()
            if self._session is not None:
                await self._session.close()
                self._session = None
        if self._error is not None:
            raise self._error

    def _session_for(self, spec: CheckSpec) -> aiohttp.ClientSession | None:
        """The shared HTTP session, made at the first https check: a director without
        https checks never loads aiohttp."""
        if spec.type != "https":
            return None
        if self._session is None:
            self._session = new_session()
        return self._session

    async def _loop(self) -> None:
        import heapq

        while not self._stopping and self._error is None:
            now = self.clock()
            # One wake-up for every check due by now, however many.
            while self._heap and self._heap[0][0] <= now and not self._stopping \
                    and self._error is None:
                entry = heapq.heappop(self._heap)
                slot = self._current(entry)
                if slot is None:
                    continue
                # Fixed rate from the phase: the next check is due one interval after
                # this one was, however late this one starts (no drift, no bunching).
                slot.due = entry[0] + slot.target.spec.interval
                if slot.due <= now:  # fell behind (a stall): skip missed rounds, keep phase
                    behind = math.floor((now - entry[0]) / slot.target.spec.interval)
                    slot.due = entry[0] + (behind + 1) * slot.target.spec.interval
                heapq.heappush(self._heap, (slot.due, entry[1], entry[2], entry[3]))
                if slot.busy:
                    continue  # still running (only when in-flight slots ran short)
                while self._active >= self.max_in_flight:
                    await self._one_ended()
                self._start(slot)
            if self._stopping or self._error is not None:
                break
            delay = self._heap[0][0] - self.clock() if self._heap else 3600.0
            await self._wait(max(delay, 0.0))

    def _start(self, slot: _Slot) -> None:
        """A tcp or http check of the built-in kind runs on loop callbacks (start_tcp,
        start_http); any other check, or one a test put in, as a task."""
        import asyncio

        slot.busy = True
        self._active += 1
        loop = asyncio.get_running_loop()
        target = slot.target
        spec = target.spec
        if spec.type in ("tcp", "http") and self.check is run_check:
            done = functools.partial(self._probe_done, slot, time.monotonic())
            if spec.type == "tcp":
                start_tcp(loop, target.address, spec.port or target.port, spec.timeout, done)
            else:
                start_http(loop, spec, target.address, spec.port or target.port, target.vip,
                           done)
            return
        task = loop.create_task(self._one(slot))
        self._tasks.add(task)  # a reference, so that the task is not collected
        task.add_done_callback(self._tasks.discard)

    def _probe_done(self, slot: _Slot, started: float, ok: bool, reason: str) -> None:
        try:
            self._record(slot, CheckResult(ok, reason, time.monotonic() - started))
        except Exception as err:  # a callback's bug stops the checker, loudly
            self._error = err
            self._wake()
        finally:
            self._release(slot)

    async def _one(self, slot: _Slot) -> None:
        target = slot.target
        try:
            result = await self.check(target.spec, target.address, target.port, target.vip,
                                      self._session_for(target.spec))
            self._record(slot, result)
        except Exception as err:  # a bug (ours or a callback's) stops the checker, loudly
            self._error = err
            self._wake()
        finally:
            self._release(slot)

    def _release(self, slot: _Slot) -> None:
        slot.busy = False
        self._active -= 1
        if self._ended is not None:
            _resolve(self._ended)
            self._ended = None

    def _record(self, slot: _Slot, result: CheckResult) -> None:
        key = slot.target.key
        current = self._slots.get(key)
        if current is None or current.generation != slot.generation:
            return  # the target went away or changed while its check ran
        health, transition = observe(self._health[key], result, slot.target.spec, self.wall())
        self._health[key] = health
        if self.on_result is not None:
            self.on_result(slot.target, result, health)
        if transition is not None:
            self.on_transition(slot.target, transition, health)

    async def _wait(self, delay: float) -> None:
        if self._sleep is not None:
            await self._sleep(delay)
            return
        import asyncio

        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(delay, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

