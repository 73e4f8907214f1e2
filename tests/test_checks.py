"""The check engine against real listeners on loopback only (127.0.0.1, ::1), the config
parser of a check, and the scheduler under an injected clock (counts, not timings)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest
from aiohttp import web

from lvs_scripts.checks import (
    BadResponse,
    Checker,
    CheckResult,
    CheckSpec,
    HttpResponse,
    Target,
    parse_check,
    phase,
    require_check_programs,
    run_check,
)
from lvs_scripts.cli import director_main
from lvs_scripts.config import load_config
from lvs_scripts.errors import ConfigError
from lvs_scripts.health import DOWN, UNKNOWN, UP, Health, TargetId, Transition
from lvs_scripts.plan_realserver import plan_realserver_start
from lvs_scripts.probes import HostObservation
from lvs_scripts.state import State
from lvs_scripts.watch import load_director_config
from tests.counting import count_calls

LOOPBACK = "127.0.0.1"
VIP = "192.0.2.80"  # TEST-NET-1: only ever a Host header / server name here, never dialled


def check(spec: CheckSpec, port: int, address: str = LOOPBACK, vip: str = VIP) -> CheckResult:
    return asyncio.run(run_check(spec, address, port, vip))


# ----------------------------------------------------------------- parse_check

def test_defaults() -> None:
    assert parse_check({}, "service[0].check", "f.toml") == CheckSpec()
    assert CheckSpec() == CheckSpec(type="tcp", port=None, interval=5.0, timeout=3.0, rise=2,
                                    fall=3, path="/", status=(200,), host=None, expect=None,
                                    tls_verify=True, command=(), on_failure="quiesce")


def test_a_full_https_check() -> None:
    spec = parse_check({"type": "https", "port": 8443, "interval": 2, "timeout": 0.5,
                        "rise": 1, "fall": 5, "path": "/health?full=1", "status": [204, 200],
                        "host": "www.example.com", "expect": "^OK", "tls_verify": False,
                        "on_failure": "remove"}, "service[1].check", "f.toml")
    assert spec == CheckSpec("https", 8443, 2.0, 0.5, 1, 5, "/health?full=1", (200, 204),
                             "www.example.com", "^OK", False, (), "remove")


def test_exec_check_and_the_default_timeout_of_a_short_interval() -> None:
    spec = parse_check({"type": "exec", "command": ["/bin/sh", "-c", "true", "{address}"],
                        "interval": 1}, "service[0].check", "f.toml")
    assert spec.command == ("/bin/sh", "-c", "true", "{address}")
    assert spec.timeout == 0.5  # 3 s would not be below the interval


NOT_EXECUTABLE = str(Path(__file__))


@pytest.mark.parametrize(("table", "key", "rule"), [
    ("x", "service[2].check", "must be a table"),
    ({"type": "icmp"}, "service[2].check.type", "must be one of: tcp, http, https, exec"),
    ({"typo": 1}, "service[2].check.typo", "unknown key"),
    ({"path": "/x"}, "service[2].check.path", 'does not apply to type = "tcp" (only to http'),
    ({"type": "http", "tls_verify": False}, "service[2].check.tls_verify", "only to https"),
    ({"type": "http", "command": ["/bin/true"]}, "service[2].check.command", "only to exec"),
    ({"rise": 0}, "service[2].check.rise", "from 1 to 100"),
    ({"fall": 101}, "service[2].check.fall", "from 1 to 100"),
    ({"fall": True}, "service[2].check.fall", "from 1 to 100"),
    ({"interval": 0}, "service[2].check.interval", "positive number of seconds"),
    ({"interval": -5}, "service[2].check.interval", "positive number of seconds"),
    ({"interval": "5"}, "service[2].check.interval", "positive number of seconds"),
    ({"interval": float("inf")}, "service[2].check.interval", "positive number"),
    ({"timeout": 0}, "service[2].check.timeout", "positive number of seconds"),
    ({"timeout": 5, "interval": 5}, "service[2].check.timeout", "less than interval (5 s)"),
    ({"timeout": 9}, "service[2].check.timeout", "less than interval"),
    ({"interval": 2}, "", ""),  # not an error: the default timeout follows the interval
    ({"port": 0}, "service[2].check.port", "from 1 to 65535"),
    ({"type": "http", "status": [200, 600]}, "service[2].check.status", "100-599"),
    ({"type": "http", "status": 99}, "service[2].check.status", "100-599"),
    ({"type": "http", "status": []}, "service[2].check.status", "non-empty list"),
    ({"type": "http", "status": ["200"]}, "service[2].check.status", "100-599"),
    ({"type": "http", "path": "health"}, "service[2].check.path", 'must start with "/"'),
    ({"type": "http", "path": "/a b"}, "service[2].check.path", "without spaces"),
    ({"type": "http", "path": "/\n"}, "service[2].check.path", "printable ASCII"),
    ({"type": "http", "host": "a/b"}, "service[2].check.host", "host name or an IP"),
    ({"type": "http", "expect": "(unclosed"}, "service[2].check.expect",
     "not a valid regular expression: missing ), unterminated subpattern"),
    ({"type": "https", "tls_verify": "no"}, "service[2].check.tls_verify", "true or false"),
    ({"on_failure": "drain"}, "service[2].check.on_failure", "quiesce, remove"),
    ({"type": "exec"}, "service[2].check.command", 'required with type = "exec"'),
    ({"type": "exec", "command": []}, "service[2].check.command", "non-empty list"),
    ({"type": "exec", "command": "/bin/true"}, "service[2].check.command", "non-empty list"),
    ({"type": "exec", "command": ["true"]}, "service[2].check.command[0]",
     "absolute path: checks do not search PATH"),
    ({"type": "exec", "command": ["/bin/true", 5]}, "service[2].check.command[1]",
     "must be a string"),
])
def test_bad_check_tables_name_file_key_and_value(table: object, key: str, rule: str) -> None:
    if not key:
        parse_check(table, "service[2].check", "/etc/lvs/lvs.toml")
        return
    with pytest.raises(ConfigError) as caught:
        parse_check(table, "service[2].check", "/etc/lvs/lvs.toml")
    assert (caught.value.path, caught.value.key) == ("/etc/lvs/lvs.toml", key)
    assert rule in caught.value.rule
    assert str(caught.value).startswith(f"/etc/lvs/lvs.toml: {key}")


SHARED_EXEC = """
[director]
interface = "eth0"
gateway = "192.168.30.1"

[[service]]
vip = "192.168.30.254"
port = 80
real = [ {{ address = "192.168.30.111" }} ]
[service.check]
type = "exec"
command = ["{program}", "{{address}}"]
"""


@pytest.mark.parametrize("program", ["/nonexistent/check-db", NOT_EXECUTABLE, "/bin"])
def test_an_exec_program_must_exist_on_the_director_only(program: str, tmp_path: Path,
                                                         mocker: Any,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """The real servers read the same file and need not have the director's check scripts:
    parsing accepts the program, lvs-realserver plans from the file, and lvs-director (and
    its watcher) refuse it with exit 6 before any program runs."""
    path = tmp_path / "lvs.toml"
    path.write_text(SHARED_EXEC.format(program=program))
    config = load_config(str(path))
    plan_realserver_start(config, HostObservation(), State())
    with pytest.raises(ConfigError) as caught:
        require_check_programs(config)
    assert (caught.value.path, caught.value.key, caught.value.value) == (
        str(path), "service[0].check.command[0]", program)
    assert "not an executable file on this director" in caught.value.rule
    with pytest.raises(ConfigError):
        load_director_config(str(path))
    run = mocker.patch("lvs_scripts.runner.PlumbumRunner.run", autospec=True)
    for dry in ([], ["--dry-run"]):
        argv = [*dry, "-c", str(path), "--state-dir", str(tmp_path / "s"),
                "--lock-dir", str(tmp_path / "l"), "start"]
        assert director_main(argv) == 6
        assert f"{path}: service[0].check.command[0]" in capsys.readouterr().err
    run.assert_not_called()
    path.write_text(SHARED_EXEC.format(program="/bin/true"))
    require_check_programs(load_config(str(path)))


def test_importing_the_spec_loads_neither_asyncio_nor_aiohttp() -> None:
    # config.py imports parse_check on every run of the CLI.
    out = subprocess.run([sys.executable, "-c", "import lvs_scripts.checks, sys; print(' '.join("
                          "m for m in ('asyncio', 'aiohttp', 'ssl') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------- tcp

@contextmanager
def listening(host: str = LOOPBACK, backlog: int = 16) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        sock.listen(backlog)
        yield sock


@contextmanager
def closed_port(host: str = LOOPBACK) -> Iterator[int]:
    """A port bound but not listening, held for the test: connecting is refused (RST), and
    nobody else can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("host", [LOOPBACK, "::1"])
def test_tcp_accepting_listener_is_up(host: str) -> None:
    with listening(host) as sock:
        result = check(CheckSpec(timeout=2, interval=5), sock.getsockname()[1], address=host)
    assert (result.ok, result.reason) == (True, "ok")
    assert 0 <= result.duration < 2


def test_tcp_refused() -> None:
    with closed_port() as port:
        result = check(CheckSpec(), port)
    assert (result.ok, result.reason) == (False, "connection refused")


def test_tcp_check_closes_with_a_reset() -> None:
    """SO_LINGER 0: no TIME_WAIT socket per check on the checker, the server's end freed."""
    with listening() as sock:
        assert check(CheckSpec(), sock.getsockname()[1]).ok
        conn, _peer = sock.accept()
        with conn, pytest.raises(ConnectionResetError):
            conn.settimeout(5)
            conn.recv(1)


def test_tcp_handshake_completed_later_through_the_loop() -> None:
    """A SYN dropped (full backlog) and retransmitted once there is room: the check is
    not over when connect() returns, and ends from the poller."""
    with listening(backlog=0) as sock:
        port = sock.getsockname()[1]
        fillers = fill_backlog(port)
        try:
            async def main() -> CheckResult:
                task = asyncio.get_running_loop().create_task(
                    run_check(CheckSpec(timeout=4, interval=5), LOOPBACK, port, VIP))
                await asyncio.sleep(0)  # the check's connect() has been tried
                assert not task.done()
                for _ in fillers:  # make room: the SYN retransmitted after 1 s gets in
                    sock.accept()[0].close()
                return await task
            result = asyncio.run(main())
        finally:
            for filler in fillers:
                filler.close()
    assert (result.ok, result.reason) == (True, "ok")
    assert 0.5 < result.duration < 4


def test_the_socket_constants_of_start_tcp_are_linux_ones() -> None:
    import errno
    import struct

    from lvs_scripts import checks

    assert checks._SOCK_FLAGS == socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    assert checks._LINGER_RESET == struct.pack("ii", 1, 0)
    assert (checks._EINPROGRESS, checks._EALREADY) == (errno.EINPROGRESS, errno.EALREADY)


def fill_backlog(port: int) -> list[socket.socket]:
    """Connect until a connect no longer completes (1 or 2 on Linux with backlog 0)."""
    fillers = []
    for _ in range(64):
        filler = socket.socket()
        fillers.append(filler)
        filler.settimeout(0.3)
        try:
            filler.connect((LOOPBACK, port))
        except (TimeoutError, socket.timeout):
            return fillers
    for filler in fillers:
        filler.close()
    pytest.fail("the backlog never filled")


def test_tcp_listener_with_a_full_backlog_times_out() -> None:
    """A listener that never accepts and whose queue is full drops SYNs: the connect hangs."""
    with listening(backlog=0) as sock:
        port = sock.getsockname()[1]
        fillers = fill_backlog(port)
        try:
            result = check(CheckSpec(timeout=0.4), port)
        finally:
            for filler in fillers:
                filler.close()
    assert (result.ok, result.reason) == (False, "timeout after 0.4 s")


# ----------------------------------------------------------------- http / https

class HttpServer:
    """An aiohttp server on loopback that records what each request looked like."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.never = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path_qs, "host": request.headers.get("Host"),
                          "peer": request.transport.get_extra_info("peername")
                          if request.transport else None,
                          "connection": request.headers.get("Connection")})
        name = request.match_info["name"]
        if name == "slow":
            await self.never.wait()  # beyond any timeout; cancelled at shutdown
        if name == "trickle":  # headers at once, then a byte now and then, for ever
            response = web.StreamResponse()
            await response.prepare(request)
            while not self.never.is_set():
                await response.write(b"x")
                await asyncio.sleep(0.02)
            return response
        if name == "big":
            return web.Response(text="x" * 200_000 + "OK")
        status = {"ok": 200, "error": 500, "created": 201, "moved": 301}.get(name, 404)
        headers = {"Location": "/ok"} if status == 301 else None
        return web.Response(status=status, text="OK" if name == "ok" else "nope",
                            headers=headers)


@asynccontextmanager
async def http_server(ssl_context: ssl.SSLContext | None = None,
                      host: str = LOOPBACK) -> AsyncIterator[tuple[HttpServer, int]]:
    server = HttpServer()
    await server.runner.setup()
    site = web.TCPSite(server.runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = server.runner.addresses[0][1]
    try:
        yield server, port
    finally:
        server.never.set()  # else cleanup waits for the slow handler (60 s)
        await server.runner.cleanup()


def http_check(spec: CheckSpec, *, tls: ssl.SSLContext | None = None,
               host: str = LOOPBACK) -> tuple[CheckResult, list[dict[str, Any]]]:
    async def main() -> tuple[CheckResult, list[dict[str, Any]]]:
        async with http_server(tls, host) as (server, port):
            return await run_check(spec, host, port, VIP), server.seen
    return asyncio.run(main())


@pytest.mark.parametrize(("spec", "ok", "reason"), [
    (CheckSpec(type="http", path="/ok"), True, "ok"),
    (CheckSpec(type="http", path="/error"), False, "HTTP 500"),
    (CheckSpec(type="http", path="/created"), False, "HTTP 201"),
    (CheckSpec(type="http", path="/created", status=(200, 201)), True, "ok"),
    (CheckSpec(type="http", path="/moved"), False, "HTTP 301"),  # redirects are not followed
    (CheckSpec(type="http", path="/ok", expect="^OK$"), True, "ok"),
    (CheckSpec(type="http", path="/error", expect="OK"), False, "HTTP 500"),
    (CheckSpec(type="http", path="/nope", status=(404,), expect="OK"), False,
     "body does not match 'OK'"),
    (CheckSpec(type="http", path="/big", expect="OK$"), False, "body does not match 'OK$'"),
    (CheckSpec(type="http", path="/big", expect="^x+"), True, "ok"),
    (CheckSpec(type="http", path="/slow", timeout=0.3), False, "timeout after 0.3 s"),
    # The timeout bounds the whole check, not each read (keepalived #1822).
    (CheckSpec(type="http", path="/trickle", timeout=0.3, expect="OK"), False,
     "timeout after 0.3 s"),
])
def test_http(spec: CheckSpec, ok: bool, reason: str) -> None:
    result, seen = http_check(spec)
    assert (result.ok, result.reason) == (ok, reason)
    assert seen[0]["path"] == spec.path
    assert seen[0]["host"] == VIP  # the default Host: the service's VIP, not the real server
    assert seen[0]["connection"] == "close"


def test_http_on_ipv6_with_a_host_name() -> None:
    result, seen = http_check(CheckSpec(type="http", path="/ok", host="www.example.com"),
                              host="::1")
    assert (result.ok, seen[0]["host"]) == (True, "www.example.com")


def test_an_ipv6_vip_as_host_header_is_bracketed() -> None:
    async def main() -> tuple[CheckResult, list[dict[str, Any]]]:
        async with http_server(host="::1") as (server, port):
            result = await run_check(CheckSpec(type="http", path="/ok"), "::1", port,
                                     "2001:db8::80")
            return result, server.seen
    result, seen = asyncio.run(main())
    assert (result.ok, seen[0]["host"]) == (True, "[2001:db8::80]")


def test_an_unexpected_error_fails_that_check_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import lvs_scripts.checks

    async def broken(address: str, port: int, timeout: float) -> tuple[bool, str]:
        raise ValueError("odd answer")
    monkeypatch.setattr(lvs_scripts.checks, "_tcp", broken)
    result = check(CheckSpec(), 80)
    assert (result.ok, result.reason) == (False, "unexpected ValueError: odd answer")


def test_http_refused_and_silent_servers() -> None:
    with closed_port() as port:
        assert check(CheckSpec(type="http"), port).reason == "connection refused"

    async def silent() -> CheckResult:  # accepts, never answers
        server = await asyncio.start_server(lambda r, w: None, LOOPBACK, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await run_check(CheckSpec(type="http", timeout=0.3), LOOPBACK, port, VIP)
    assert asyncio.run(silent()).reason == "timeout after 0.3 s"


def test_every_http_check_opens_a_new_connection() -> None:
    async def main() -> list[Any]:
        from lvs_scripts.checks import new_session

        async with http_server() as (server, port):
            async with new_session() as session:
                for _ in range(3):
                    result = await run_check(CheckSpec(type="http", path="/ok"), LOOPBACK, port,
                                             VIP, session)
                    assert result.ok
            return [seen["peer"] for seen in server.seen]
    peers = asyncio.run(main())
    assert len(peers) == 3 and len(set(peers)) == 3  # three source ports: three connections


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for www.example.com and 127.0.0.1, made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("www.example.com"),
                x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
            .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def server_tls(certificate: tuple[Path, Path], names: list[str | None]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    return context


@pytest.mark.parametrize(("verify", "host", "ok"), [
    (False, "www.example.com", True),
    (False, None, True),
    (True, "www.example.com", False),  # self-signed: not trusted
    (True, None, False),
])
def test_https_with_a_self_signed_certificate(certificate: tuple[Path, Path], verify: bool,
                                              host: str | None, ok: bool) -> None:
    names: list[str | None] = []
    spec = CheckSpec(type="https", path="/ok", host=host, tls_verify=verify, timeout=2.0)
    result, seen = http_check(spec, tls=server_tls(certificate, names))
    assert result.ok is ok
    if ok:
        assert seen[0]["host"] == (host or VIP)
    else:
        assert result.reason.startswith("TLS: certificate verify failed"), result.reason
        assert "self" in result.reason or "issuer" in result.reason
    # SNI carries the host name; an address (the VIP by default) is never sent as SNI.
    assert names == [host]


def test_https_status_and_body_are_checked_too(certificate: tuple[Path, Path]) -> None:
    result, _ = http_check(CheckSpec(type="https", path="/error", tls_verify=False),
                           tls=server_tls(certificate, []))
    assert result.reason == "HTTP 500"


# ----------------------------------------------------------------- our HTTP/1.x reader

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


# (what the server sends, in pieces; the statuses whose body is read) -> (status, body)
# once the stream ends (or before, when enough is there); a string: the BadResponse.
@pytest.mark.parametrize(("pieces", "body_for", "expected"), [
    ([OK_HEAD + b"Content-Length: 2\r\n\r\nOK"], (200,), (200, b"OK")),
    ([OK_HEAD + b"Content-Length: 2\r\n\r\nOK"], (), (200, b"")),  # no expect: no body
    ([b"HTTP/1.1 500 Internal", b" Server Error\r\nContent-Le", b"ngth: 0\r\n\r", b"\n"],
     (200,), (500, b"")),  # another status: its body is not read
    ([OK_HEAD + b"Content-Length: 5\r\n\r\nab", b"cde", b"IGNORED"], (200,), (200, b"abcde")),
    ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;ext=1\r\nOK\r\n", b"3\r\n!!",
      b"!\r\n0\r\n\r\n"], (200,), (200, b"OK!!!")),
    ([OK_HEAD + b"Transfer-Encoding: Chunked\r\n\r\n", b"A\r\n0123456789\r\n0\r\n",
      b"Trailer: x\r\n\r\n"], (200,), (200, b"0123456789")),
    ([b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the close"], (200,), (200, b"until the close")),
    ([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"], (200,),
     (204, b"")),  # an interim response is skipped
    ([b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nOK"], (200,), (200, b"OK")),  # no reason
    # bare LF line ends, as busybox httpd passes a CGI's output on (found in the lab)
    ([b"HTTP/1.1 500 Internal Server Error\nContent-Type: text/plain\n\nbroken\n"], (200,),
     (500, b"")),
    ([b"HTTP/1.1 200 OK\nContent-Type: text/plain\n", b"\nOK\n"], (200,), (200, b"OK\n")),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\n\n2\nOK\n", b"1\r\n!\n0\n\n"],
     (200,), (200, b"OK!")),
    ([OK_HEAD + b"Content-Length: 200000\r\n\r\n" + b"x" * 70_000], (200,),
     (200, b"x" * 65536)),  # bounded: enough to match
    ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n30D40\r\n" + b"y" * 70_000], (200,),
     (200, b"y" * 65536)),
    ([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], (200,), "not an HTTP/1.x status line: b'SSH-2.0-"
     "OpenSSH_9.2'"),
    ([b"HTTP/1.1 2000 OK\r\n\r\n"], (200,), "not an HTTP/1.x status line: b'HTTP/1.1 2000 OK'"),
    ([b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"], (200,),
     "not a header line: b'no colon here'"),
    ([OK_HEAD + b"Content-Length: -1\r\n\r\n"], (200,), "bad Content-Length: b'-1'"),
    ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"], (200,),
     "bad chunk size: b'zz'"),
    ([OK_HEAD + b"X: " + b"a" * 70_000], (200,), "headers longer than 65536 bytes"),
    ([], (200,), "connection closed without a response"),
    ([b"HTTP/1.1 200 OK\r\n"], (200,), "connection closed before the end of the headers"),
    ([OK_HEAD + b"Content-Length: 5\r\n\r\nab"], (200,),
     "connection closed before the end of the body"),
    ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab"], (200,),
     "connection closed before the end of the body"),
])
def test_http_response_reader(pieces: list[bytes], body_for: tuple[int, ...],
                              expected: tuple[int, bytes] | str) -> None:
    response = HttpResponse(body_for)

    def read() -> tuple[int, bytes]:
        for piece in pieces:
            if response.feed(piece):
                return response.status, bytes(response.body)
        assert response.close()
        return response.status, bytes(response.body)

    if isinstance(expected, str):
        with pytest.raises(BadResponse) as error:
            read()
        assert str(error.value) == expected
    else:
        assert read() == expected


@pytest.mark.parametrize(("answer", "reason"), [
    (b"", "HTTP: connection closed without a response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nOK", "HTTP: connection closed before "
     "the end of the body"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", "ok"),  # no Connection: close
])
def test_http_against_a_raw_server(answer: bytes, reason: str) -> None:
    """Our reader on the wire: the server reads the request, sends `answer`, closes."""
    async def main() -> tuple[CheckResult, bytes]:
        requests: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, LOOPBACK, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            result = await run_check(CheckSpec(type="http", path="/h", expect="OK"),
                                     LOOPBACK, port, VIP)
            return result, requests[0]

    result, request = asyncio.run(main())
    assert (result.ok, result.reason) == (reason == "ok", reason)
    assert request == (f"GET /h HTTP/1.1\r\nHost: {VIP}\r\nConnection: close\r\n"
                       "User-Agent: lvs-director-check\r\nAccept: */*\r\n\r\n").encode()


# ----------------------------------------------------------------- exec

def exec_check(*argv: str, timeout: float = 3.0, address: str = LOOPBACK,
               port: int = 8080) -> CheckResult:
    return check(CheckSpec(type="exec", command=argv, timeout=timeout, interval=10), port,
                 address=address)


@pytest.mark.parametrize(("argv", "ok", "reason"), [
    (("/bin/true",), True, "ok"),
    (("/bin/false",), False, "exit 1"),
    (("/bin/sh", "-c", "echo 'db is read-only'; echo more; exit 3"), False,
     "exit 3: db is read-only"),
    (("/bin/sh", "-c", 'test "$0:$1" = "127.0.0.1:8080"', "{address}", "{port}"), True, "ok"),
    (("/bin/sh", "-c", 'test "$0" = "{address.__class__}"', "{address.__class__}"), True, "ok"),
    (("/bin/sh", "-c", "cat; exit 0"), True, "ok"),  # stdin is closed: cat ends at once
    (("/bin/sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; exit 2"), False,
     "exit 2: " + "x" * 120),  # output beyond the capture is read and discarded
    (("/bin/sh", "-c", "kill -TERM $$"), False, "killed by signal 15"),
    (("/nonexistent/check",), False, "no such file or directory"),
])
def test_exec(argv: tuple[str, ...], ok: bool, reason: str) -> None:
    result = exec_check(*argv)
    assert (result.ok, result.reason) == (ok, reason)


def test_exec_past_the_timeout_is_killed_with_its_children_and_reaped(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    result = exec_check("/bin/sh", "-c", f'sleep 60 & echo "$$ $!" > {pids}; wait',
                        timeout=0.5)
    assert (result.ok, result.reason) == (False, "timeout after 0.5 s")
    shell, sleeper = (int(pid) for pid in pids.read_text().split())
    with pytest.raises(ProcessLookupError):  # our child: killed and reaped (no zombie)
        os.kill(shell, 0)
    # Its child: killed with the group (init reaps it). SIGKILL is delivered when the
    # process next runs, which on a loaded machine may be a moment later: wait for it,
    # bounded far below the 60 s it would sleep if it had not been killed.
    deadline = time.monotonic() + 10
    while process_state(sleeper) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_state(sleeper) in (None, "Z")


def process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


# ----------------------------------------------------------------- the scheduler

class FakeTime:
    """A clock that jumps to the next due check, but only once every check under way has
    ended: the number of checks in a virtual span is then exact, whatever the machine's
    load. `at(t, fn)` runs fn when virtual time first reaches t; the run stops at `until`."""

    def __init__(self, until: float) -> None:
        self.now = 0.0
        self.until = until
        self.events: list[tuple[float, Callable[[], None]]] = []
        self.checker: Checker | None = None

    def clock(self) -> float:
        return self.now

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.events.append((when, action))
        self.events.sort(key=lambda event: event[0])

    async def sleep(self, delay: float) -> None:
        assert self.checker is not None
        await self.checker.settled()
        target = self.now + delay
        if self.events and self.events[0][0] <= min(target, self.until):
            self.now, action = self.events.pop(0)
            action()
            return
        if target > self.until:
            self.checker.stop()
            return
        self.now = target



class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[TargetId, bool]] = []
        self.transitions: list[tuple[TargetId, Transition]] = []

    def on_result(self, target: Target, result: CheckResult, health: Health) -> None:
        self.results.append((target.key, result.ok))

    def on_transition(self, target: Target, transition: Transition, health: Health) -> None:
        assert health.state == transition.new
        self.transitions.append((target.key, transition))

    def counts(self) -> Counter[TargetId]:
        return Counter(key for key, _ in self.results)


def make_checker(time: FakeTime, recorder: Recorder, check: Callable[..., Awaitable[CheckResult]]
                 = run_check, max_in_flight: int = 64) -> Checker:
    checker = Checker(recorder.on_transition, on_result=recorder.on_result,
                      max_in_flight=max_in_flight, clock=time.clock, wall=time.clock,
                      sleep=time.sleep, check=check)
    time.checker = checker
    return checker


def key(port: int, address: str = LOOPBACK) -> TargetId:
    return TargetId("tcp", VIP, 80, address, port)


class CloseAtOnce(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def test_500_targets_on_loopback_each_checked_at_its_interval() -> None:
    spec = CheckSpec(interval=1.0, timeout=0.5, rise=2, fall=3)

    async def main() -> tuple[Recorder, dict[TargetId, Health], list[int]]:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(CloseAtOnce, LOOPBACK, 0) for _ in range(450)]
        with contextlib.ExitStack() as stack:
            refused = [stack.enter_context(closed_port()) for _ in range(50)]
            ports = [s.sockets[0].getsockname()[1] for s in servers]
            time, recorder = FakeTime(until=6.0), Recorder()
            checker = make_checker(time, recorder)
            checker.set_targets(Target(key(port), spec) for port in ports + refused)
            await checker.run()
            for server in servers:
                server.close()
            return recorder, checker.health, refused

    recorder, health, refused = asyncio.run(main())
    counts = recorder.counts()
    assert len(counts) == 500
    # Phase p in [0, 1): checks at p, p+1, ... p+5 <= 6: exactly six each.
    assert set(counts.values()) == {6}
    down = {key(port) for port in refused}
    assert {k for k, h in health.items() if h.state == DOWN} == down
    assert {k for k, h in health.items() if h.state == UP} == set(health) - down
    by_target: dict[TargetId, list[str]] = {}
    for target_key, transition in recorder.transitions:
        by_target.setdefault(target_key, []).append(f"{transition.old}>{transition.new}")
    assert all(by_target[k] == ["unknown>down"] for k in down)
    assert all(by_target[k] == ["unknown>up"] for k in set(health) - down)


def test_http_targets_through_the_checker() -> None:
    """The scheduler's own http path (start_http on loop callbacks), not run_check's."""
    good = CheckSpec(type="http", path="/ok", expect="^OK$", interval=1.0, timeout=0.5)
    bad = CheckSpec(type="http", path="/error", interval=1.0, timeout=0.5, fall=2)

    async def main() -> tuple[Recorder, dict[TargetId, Health], int]:
        async with http_server() as (server, port):
            time, recorder = FakeTime(until=3.0), Recorder()
            checker = make_checker(time, recorder)
            checker.set_targets(
                [Target(TargetId("tcp", VIP, vport, LOOPBACK, port), good)
                 for vport in range(1, 21)] +
                [Target(TargetId("tcp", VIP, vport, LOOPBACK, port), bad)
                 for vport in range(21, 26)])
            await checker.run()
            return recorder, checker.health, len(server.seen)

    recorder, health, requests = asyncio.run(main())
    assert set(recorder.counts().values()) == {3} and requests == 25 * 3
    assert {k.vport for k, h in health.items() if h.state == UP} == set(range(1, 21))
    assert {k.vport for k, h in health.items() if h.state == DOWN} == set(range(21, 26))
    assert all(h.reason == "HTTP 500" for k, h in health.items() if k.vport > 20)


def test_phases_spread_10000_targets_over_the_interval() -> None:
    phases = [phase(key(port, f"10.0.{port // 250}.{port % 250 + 1}"), 5.0)
              for port in range(10_000)]
    buckets = Counter(int(p * 10) for p in phases)  # 50 buckets of 0.1 s
    assert len(buckets) == 50
    assert max(buckets.values()) < 2 * 10_000 / 50  # no bucket has twice its share
    assert all(0 <= p < 5.0 for p in phases)


def fake_check(outcomes: dict[int, Callable[[float], bool]], time: FakeTime
               ) -> Callable[..., Awaitable[CheckResult]]:
    async def run(spec: CheckSpec, address: str, port: int, vip: str,
                  session: Any = None) -> CheckResult:
        await asyncio.sleep(0)
        ok = outcomes.get(port, lambda now: True)(time.now)
        return CheckResult(ok, "ok" if ok else "connection refused", 0.0)
    return run


def test_intervals_differ_per_target() -> None:
    async def main() -> Counter[TargetId]:
        time, recorder = FakeTime(until=20.0), Recorder()
        checker = make_checker(time, recorder, fake_check({}, time))
        checker.set_targets([Target(key(1), CheckSpec(interval=1, timeout=0.5)),
                             Target(key(2), CheckSpec(interval=2, timeout=1)),
                             Target(key(3), CheckSpec(interval=5, timeout=1))])
        await checker.run()
        return recorder.counts()
    assert asyncio.run(main()) == {key(1): 20, key(2): 10, key(3): 4}


def test_reload_keeps_the_health_of_targets_that_stay() -> None:
    spec = CheckSpec(interval=1.0, timeout=0.5, rise=2, fall=3)
    slower = CheckSpec(interval=2.0, timeout=0.5, rise=2, fall=3)
    # 1 fails from the start; 2 fails until t=4 then recovers; 3 is fine; 4 is new at the
    # reload, saved as down and fine since.
    outcomes: dict[int, Callable[[float], bool]] = {1: lambda now: False,
                                                    2: lambda now: now >= 4}

    async def main() -> tuple[Checker, Recorder, FakeTime, dict[TargetId, Health]]:
        time, recorder = FakeTime(until=12.0), Recorder()
        checker = make_checker(time, recorder, fake_check(outcomes, time))
        checker.set_targets([Target(key(1), spec), Target(key(2), spec),
                             Target(key(3), spec)])
        before: dict[TargetId, Health] = {}

        def reload() -> None:
            before.update(checker.health)
            checker.set_targets([Target(key(1), spec), Target(key(2), slower),
                                 Target(key(4), spec)],
                                saved={key(4): Health(DOWN, 0, 3, "timeout after 3 s", 1.0),
                                       key(1): Health(UP)})  # ignored: 1 stays, keeps its own
        time.at(3.95, reload)
        await checker.run()
        return checker, recorder, time, before

    checker, recorder, _, before = asyncio.run(main())
    assert before[key(1)].state == DOWN and before[key(2)].state == DOWN
    after = checker.health
    assert set(after) == {key(1), key(2), key(4)}  # 3 is gone
    assert after[key(1)].state == DOWN and after[key(1)].failures == 12  # counting on
    assert after[key(1)].since == before[key(1)].since
    # 2: its check changed (interval 2): state kept, counters restarted, comes back after
    # `rise` successes of the new check, at its new interval.
    assert after[key(2)].state == UP
    assert after[key(4)].state == UP  # saved down: needed 2 successes
    transitions = [(k.port, t.old, t.new) for k, t in recorder.transitions]
    assert transitions.count((2, DOWN, UP)) == 1
    assert (4, DOWN, UP) in transitions and (4, UNKNOWN, UP) not in transitions
    assert (1, UNKNOWN, UP) not in transitions  # saved health is for new targets only
    late = [k for k, _ in recorder.results[len(recorder.results) // 2:]]
    assert key(3) not in late
    counts = recorder.counts()
    assert counts[key(1)] == 12  # same spec: same schedule, not restarted by the reload
    reload_phase = phase(key(2), 2.0)
    assert counts[key(2)] == 4 + len([t for t in range(8) if 3.95 + reload_phase + 2 * t
                                      <= 12.0])


def test_a_result_of_a_target_removed_while_its_check_ran_is_ignored() -> None:
    spec = CheckSpec(interval=1.0, timeout=0.5, rise=1, fall=1)

    async def main() -> tuple[Checker, Recorder]:
        time, recorder = FakeTime(until=3.0), Recorder()
        checker: Checker

        async def check(spec: CheckSpec, address: str, port: int, vip: str,
                        session: Any = None) -> CheckResult:
            if port == 2:  # removed during its own first check, which then fails
                checker.set_targets([Target(key(1), spec)])
                return CheckResult(False, "connection refused", 0.0)
            return CheckResult(True, "ok", 0.0)

        checker = make_checker(time, recorder, check)
        checker.set_targets([Target(key(1), spec), Target(key(2), spec)])
        await checker.run()
        return checker, recorder

    checker, recorder = asyncio.run(main())
    assert set(checker.health) == {key(1)}
    assert [k for k, _ in recorder.transitions] == [key(1)]
    assert key(2) not in recorder.counts()


def test_no_more_checks_in_flight_than_allowed() -> None:
    async def main() -> tuple[int, int]:
        gate = asyncio.Event()
        in_flight = peak = 0
        reached = asyncio.Event()

        async def check(*args: Any) -> CheckResult:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 20:
                reached.set()
            await gate.wait()
            in_flight -= 1
            return CheckResult(True, "ok", 0.0)

        now = [0.0]

        async def sleep(delay: float) -> None:  # time flies: everything is due at once
            now[0] += max(delay, 0.01)
            await asyncio.sleep(0)

        checker = Checker(lambda *a: None, max_in_flight=20, clock=lambda: now[0],
                          wall=lambda: now[0], sleep=sleep, check=check)
        checker.set_targets(Target(key(port), CheckSpec(interval=1, timeout=0.5))
                            for port in range(1, 201))
        runner = asyncio.get_running_loop().create_task(checker.run())
        await asyncio.wait_for(reached.wait(), 10)
        for _ in range(100):  # give the loop every chance to start a 21st check
            await asyncio.sleep(0)
        held = peak
        checker.stop()
        gate.set()
        await asyncio.wait_for(runner, 10)
        return held, peak
    held, peak = asyncio.run(main())
    assert held == 20 and peak == 20


def test_a_callback_error_stops_the_checker_and_is_raised() -> None:
    def explode(target: Target, transition: Transition, health: Health) -> None:
        raise RuntimeError("callback bug")

    async def main() -> None:
        time = FakeTime(until=100.0)
        checker = Checker(explode, clock=time.clock, wall=time.clock, sleep=time.sleep,
                          check=fake_check({}, time))
        time.checker = checker
        checker.set_targets([Target(key(1), CheckSpec())])
        await checker.run()
    with pytest.raises(RuntimeError, match="callback bug"):
        asyncio.run(main())


def test_a_reload_compares_each_service_check_once_not_once_a_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher's SIGHUP gives the checker a new CheckSpec object per service, shared by
    its targets: compared once (a Record's field-by-field compare per target was most of
    set_targets at 10,000). Equal: every target keeps its health; changed: every target
    takes the change (its counters restarted)."""
    checker = Checker(lambda *a: None)
    first = CheckSpec(interval=1.0, timeout=0.5)
    checker.set_targets([Target(key(port), first) for port in range(1, 301)])
    for port in range(1, 301):
        checker._health[key(port)] = Health(UP, 2, 0, "ok", 1.0)
    compared = count_calls(monkeypatch, CheckSpec, "__eq__")
    again = CheckSpec(interval=1.0, timeout=0.5)  # equal, another object (a new config)
    checker.set_targets([Target(key(port), again) for port in range(1, 301)])
    assert len(compared) == 1
    assert all(h == Health(UP, 2, 0, "ok", 1.0) for h in checker.health.values())
    slower = CheckSpec(interval=2.0, timeout=0.5)
    checker.set_targets([Target(key(port), slower) for port in range(1, 301)])
    assert len(compared) == 2
    assert all(h.state == UP and h.successes == 0 for h in checker.health.values())


def test_duplicate_targets_are_refused() -> None:
    checker = Checker(lambda *a: None)
    with pytest.raises(ValueError, match="listed twice"):
        checker.set_targets([Target(key(1), CheckSpec()), Target(key(1), CheckSpec())])


def test_the_real_clock_runs_and_stop_ends_it() -> None:
    """With the real clock and network: every target gets checked, repeatedly (a count
    reached, waited for; no timing asserted), and stop() returns promptly from a long wait."""
    async def main() -> Counter[TargetId]:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(CloseAtOnce, LOOPBACK, 0) for _ in range(20)]
        recorder = Recorder()
        enough = asyncio.Event()

        def on_result(target: Target, result: CheckResult, health: Health) -> None:
            recorder.on_result(target, result, health)
            counts = recorder.counts()
            if len(counts) == 20 and min(counts.values()) >= 3:
                enough.set()

        checker = Checker(recorder.on_transition, on_result=on_result)
        checker.set_targets(Target(key(s.sockets[0].getsockname()[1]),
                                   CheckSpec(interval=0.1, timeout=0.05)) for s in servers)
        runner = loop.create_task(checker.run())
        await asyncio.wait_for(enough.wait(), 30)
        checker.set_targets([Target(key(1), CheckSpec(interval=3600, timeout=1))])
        checker.stop()
        await asyncio.wait_for(runner, 30)
        for server in servers:
            server.close()
        return recorder.counts()
    counts = asyncio.run(main())
    assert len(counts) >= 20 and all(v >= 3 for k, v in counts.items() if k != key(1))


def test_phase_is_stable() -> None:
    # The same target lands at the same point of its interval at every start.
    assert phase(key(80), 5.0) == zlib.crc32(str(key(80)).encode()) / 2**32 * 5.0
    assert str(key(80)) == f"tcp:{VIP}:80->127.0.0.1:80"


def test_a_stop_before_run_starts_is_not_lost() -> None:
    # A signal handler may call stop() before the task running run() got to start.
    async def main() -> None:
        checker = Checker(lambda *a: None)
        checker.set_targets([Target(key(1), CheckSpec(interval=3600, timeout=1))])
        runner = asyncio.get_running_loop().create_task(checker.run())
        checker.stop()
        await asyncio.wait_for(runner, 10)
    asyncio.run(main())


def test_saved_health_is_read_only_for_a_new_target() -> None:
    """The watcher hands set_targets the health file lazily (watch.SavedHealth): a
    reload of the same targets (a weight edited) never reads it; one with a new target
    does, once, and the new target takes its saved health."""
    from lvs_scripts.watch import SavedHealth

    spec = CheckSpec(interval=1.0, timeout=0.5)
    reads: list[int] = []

    def read() -> dict[Any, Health]:
        reads.append(1)
        return {key(3): Health(DOWN, 0, 3, "refused", 1.0)}

    time = FakeTime(until=1.0)
    checker = make_checker(time, Recorder(), fake_check({}, time))
    checker.set_targets([Target(key(1), spec), Target(key(2), spec)], SavedHealth(read))
    assert reads == [1]  # new targets: read
    checker.set_targets([Target(key(1), spec), Target(key(2), spec)], SavedHealth(read))
    assert reads == [1]  # the same targets: not read
    checker.set_targets([Target(key(1), spec), Target(key(3), spec)], SavedHealth(read))
    assert reads == [1, 1]
    assert checker.health[key(3)].state == DOWN
