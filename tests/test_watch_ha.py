"""`lvs-director watch` on both directors of a pair ([ha]), against two fake hosts: each
watcher checks the real servers itself and sets its own director's table, the master's
and the backup's alike, so that the director taking over already has a down server at
weight 0; a reload on either keeps it there.

The web servers are real (HTTP on 127.0.0.1); LVS_TEST_CHECK_MAP, read by watch.py for
tests only, sends each real server's checks there, as in tests/test_watch.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.health import DOWN, UP
from lvs_scripts.healthstate import load_health
from lvs_scripts.locks import Paths
from tests.fakes.fakehost import FakeHost
from tests.machines import DIRECTOR, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="start refuses to run without root; run as root")

VIP = "192.168.30.254"
RS1, RS2 = "192.168.30.111", "192.168.30.112"
DEADLINE = 30.0  # generous: a loaded 2-core machine; conditions usually hold in ~2 s


def config(weight1: int = 1) -> str:
    return f"""
[director]
interface = "eth0"

[ha]
interface = "eth0"
virtual_router_id = 51
directors = [
  {{ name = "lb1", dip = "192.168.30.105/24", priority = 150 }},
  {{ name = "lb2", dip = "192.168.30.106/24", priority = 100 }},
]

[[service]]
vip = "{VIP}"
port = 80
scheduler = "wrr"
real = [
  {{ address = "{RS1}", weight = {weight1} }},
  {{ address = "{RS2}", weight = 2 }},
]

[service.check]
type = "http"
interval = 0.5
timeout = 0.4
rise = 2
fall = 2
"""


class WebServer:
    """HTTP on 127.0.0.1 answering every GET with `status` (changeable)."""

    def __init__(self) -> None:
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PairMember:
    """One director of the pair: its own fake host, state and lock dirs, started, and
    its watcher. `by_flag`: name it with --host rather than $LVS_HOST."""

    def __init__(self, name: str, root: Path, web: dict[str, WebServer],
                 by_flag: bool = False) -> None:
        self.name = name
        self.host = FakeHost(root / "host")
        self.host.set_ipvs("loaded")
        if name != "lb1":
            with self.host.edit() as st:
                st["vrrp_role"] = "BACKUP"  # the fake keepalived: lb1 wins the election
        self.config = root / "lvs.toml"
        self.config.write_text(config())
        self.paths = Paths("lvs-director", str(root / "run"), str(root / "lock"))
        self.env = {**self.host.env, "LVS_STATE_DIR": self.paths.state_dir,
                    "LVS_LOCK_DIR": self.paths.lock_dir, "LVS_SYSLOG": "0",
                    "LVS_TEST_CHECK_MAP": ",".join(
                        f"{rs}=127.0.0.1:{server.server.server_address[1]}"
                        for rs, server in web.items())}
        self.flags = ["--host", name] if by_flag else []
        if not by_flag:
            self.env["LVS_HOST"] = name
        self.log = root / "watch.log"
        self.process: subprocess.Popen[str] | None = None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DIRECTOR, "-c", str(self.config), *self.flags, *args],
                              env=self.env, capture_output=True, text=True, timeout=120,
                              check=False)

    def watch(self) -> None:
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [DIRECTOR, "-c", str(self.config), *self.flags, "watch"], env=self.env,
                stdout=log, stderr=log, text=True)
        self.wait("the watcher checking", lambda: "watch: checking" in self.log.read_text())

    def weights(self) -> dict[str, int]:
        out = self.host.cmd("ipvsadm", "-S", "-n").stdout
        return {words[4].split(":")[0]: int(words[words.index("-w") + 1])
                for words in (line.split() for line in out.splitlines()) if words[0] == "-a"}

    def health(self) -> dict[str, str]:
        return {key.address: h.state for key, h in load_health(self.paths).health.items()}

    def vip_held(self) -> bool:
        return f"{VIP}/32" in self.host.addresses("eth0")

    def wait(self, what: str, condition: Any) -> None:
        try:
            wait_for(condition, DEADLINE)
        except AssertionError:
            log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{self.name}: timed out waiting for {what}; watch said:\n"
                                 f"{log}") from None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=DEADLINE)
        self.host.stop_daemons()


class Pair:
    """lb1 (master) and lb2 (backup), both started from one config, and the two web
    servers both watchers check."""

    def __init__(self, root: Path, by_flag: bool = False) -> None:
        self.web = {RS1: WebServer(), RS2: WebServer()}
        self.members = [PairMember(name, root / name, self.web, by_flag)
                        for name in ("lb1", "lb2")]
        self.lb1, self.lb2 = self.members
        for member in self.members:
            started = member.run("start")
            assert started.returncode == 0, started.stderr
        self.lb1.wait("lb1 to hold the VIP", self.lb1.vip_held)
        assert not self.lb2.vip_held()

    def watch(self) -> None:
        for member in self.members:
            member.watch()
        for member in self.members:
            member.wait("both real servers up", lambda m=member: m.health() == {RS1: UP, RS2: UP})

    def close(self) -> None:
        for member in self.members:
            member.close()
        for server in self.web.values():
            server.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    made = Pair(tmp_path)
    yield made
    made.close()


def test_each_director_checks_for_itself_and_both_put_a_down_server_at_0(pair: Pair) -> None:
    pair.watch()
    pair.web[RS2].status = 500
    for member in pair.members:
        member.wait("rs2 at weight 0", lambda m=member: m.weights() == {RS1: 1, RS2: 0})
        assert member.health() == {RS1: UP, RS2: DOWN}
        # its own checks said so (the health file is not copied between the directors)
        assert f"{RS2}:80 up -> down: HTTP 500 (2 failure(s))" in member.log.read_text()
    # a reload on either director keeps it out; the backup without the VIP and with
    # rs2 down at weight 0 is running as configured
    for member in pair.members:
        reloaded = member.run("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert member.weights() == {RS1: 1, RS2: 0}
        status = member.run("status")
        assert status.returncode == 0, status.stdout + status.stderr
    pair.web[RS2].status = 200
    for member in pair.members:
        member.wait("rs2 back", lambda m=member: m.weights() == {RS1: 1, RS2: 2})


def test_sighup_keeps_the_director_named_by_host(tmp_path: Path) -> None:
    """A watcher started with --host (no $LVS_HOST) re-reads the config on SIGHUP as the
    same member of the pair: not as whatever the system's host name is, which names no
    director here, and the reload would be refused."""
    pair = Pair(tmp_path, by_flag=True)
    try:
        pair.watch()
        for member in pair.members:
            member.config.write_text(config(weight1=3))
            assert member.process is not None
            member.process.send_signal(signal.SIGHUP)
        for member in pair.members:
            member.wait("the new weight", lambda m=member: m.weights()[RS1] == 3)
            assert "config not reloaded" not in member.log.read_text()
    finally:
        pair.close()
