"""`lvs-director watch` as a process against the fake host, with real HTTP servers on
127.0.0.1 as the real servers' web servers.

The config refuses loopback real servers, so the real servers keep their LAN addresses
(the fake ipvsadm does not care) and LVS_TEST_CHECK_MAP, read by watch.py for tests
only, sends each one's checks to its listener on 127.0.0.1. Every wait is for a
condition, with a deadline.

.138 and .194 are the real servers because their check phases (checks.phase, a hash of
the identity) are 0.2 ms apart at interval 0.5 s: they fail in the same round, so their
transitions fall in the same batching window, deterministically.
"""

from __future__ import annotations

import json
import os
import re
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
from lvs_scripts.watch import BATCH_SECONDS, BatchWindow
from tests.fakes.fakehost import FakeHost
from tests.machines import DirectorMachine, wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="real runs exit 4 without root; run as root (make test)")

VIP = "192.168.30.254"
RS1, RS2 = "192.168.30.138", "192.168.30.194"
RS3 = "192.168.30.150"  # in no config at first: what a reload adds
DEADLINE = 30.0  # generous: a loaded 2-core machine; conditions usually hold in ~2 s


def config(weight1: int = 1, extra: str = "",
           reals: list[tuple[str, int]] | None = None) -> str:
    """reals: (address, weight) of each real server, instead of RS1 (weight1) and RS2."""
    listed = "".join(f'  {{ address = "{address}", weight = {weight} }},\n'
                     for address, weight in (reals or [(RS1, weight1), (RS2, 2)]))
    return f"""
[director]
interface = "eth0"
arping_count = 0

[[service]]
vip = "{VIP}"
port = 80
scheduler = "wrr"
real = [
{listed}]

[service.check]
type = "http"
path = "/healthz"
interval = 0.5
timeout = 0.4
rise = 2
fall = 2
{extra}"""


class WebServer:
    """An HTTP server on 127.0.0.1 answering /healthz with `status` (changeable)."""

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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Watched(DirectorMachine):
    """A started fake director, its two web servers, and `watch` processes."""

    def __init__(self, host: FakeHost, root: Path, text: str | None = None) -> None:
        super().__init__(host, root, config() if text is None else text)
        self.web = {RS1: WebServer(), RS2: WebServer(), RS3: WebServer()}
        self.env["LVS_TEST_CHECK_MAP"] = ",".join(
            f"{rs}=127.0.0.1:{web.port}" for rs, web in self.web.items())
        self.log = root / "watch.log"
        self.process: subprocess.Popen[str] | None = None
        ran = self.run("start")
        assert ran.returncode == 0, ran.stderr

    def watch(self) -> subprocess.Popen[str]:
        self.log.write_text("")
        with self.log.open("a") as log:
            self.process = subprocess.Popen(self.argv("watch"), env=self.env,
                                            stdout=log, stderr=log, text=True)
        wait_for(lambda: "watch: checking" in self.log.read_text(), DEADLINE)
        return self.process

    def weights(self) -> dict[str, int]:
        out = self.host.cmd("ipvsadm", "-S", "-n").stdout
        return {words[4].split(":")[0]: int(words[words.index("-w") + 1])
                for words in (line.split() for line in out.splitlines()) if words[0] == "-a"}

    @property
    def paths(self) -> Paths:
        return Paths("lvs-director", str(self.state_dir), str(self.lock_dir))

    def health(self) -> dict[str, str]:
        view = load_health(Paths("lvs-director", str(self.state_dir), str(self.lock_dir)))
        return {key.address: h.state for key, h in view.health.items()}

    def wait(self, what: str, condition: Any) -> None:
        try:
            wait_for(condition, DEADLINE)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; watch said:\n"
                                 f"{self.log.read_text()}") from None

    def changes(self) -> list[dict[str, Any]]:
        return [c for c in self.host.calls("ipvsadm") if c["argv"][1] not in ("-S", "-L")]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=DEADLINE)
        for web in self.web.values():
            web.close()


@pytest.fixture
def watched(fakehost: FakeHost, tmp_path: Path) -> Iterator[Watched]:
    machine = Watched(fakehost, tmp_path)
    yield machine
    machine.stop()


def both_up(machine: Watched) -> bool:
    return machine.health() == {RS1: UP, RS2: UP}


@needs_root
def test_fall_is_one_batch_rise_puts_the_weights_back(watched: Watched) -> None:
    watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    watched.host.clear_calls()
    for web in watched.web.values():
        web.status = 500
    watched.wait("weight 0", lambda: watched.weights() == {RS1: 0, RS2: 0})
    changes = watched.changes()
    assert [c["argv"] for c in changes] == [["ipvsadm", "-R"]], changes
    assert sorted(changes[0]["stdin"].splitlines()) == [
        f"-e -t {VIP}:80 -r {RS1}:80 -g -w 0", f"-e -t {VIP}:80 -r {RS2}:80 -g -w 0"]
    assert watched.health() == {RS1: DOWN, RS2: DOWN}
    log = watched.log.read_text()
    assert log.count(" up -> down: HTTP 500 (2 failure(s))") == 2, log
    # down at weight 0 is as configured for status
    status = watched.run("status")
    assert status.returncode == 0, status.stdout
    assert "down (HTTP 500, since " in status.stdout
    watched.web[RS2].status = 200
    watched.wait("rs2 back", lambda: watched.weights() == {RS1: 0, RS2: 2})
    assert " down -> up: ok (2 success(es))" in watched.log.read_text()
    assert watched.process is not None
    watched.process.send_signal(signal.SIGTERM)
    assert watched.process.wait(timeout=DEADLINE) == 0
    assert watched.weights() == {RS1: 0, RS2: 2}  # left as they were


@needs_root
def test_a_down_server_stays_out_across_kill_9_until_it_rises(watched: Watched) -> None:
    process = watched.watch()
    watched.web[RS2].status = 500
    watched.wait("rs2 down", lambda: watched.weights() == {RS1: 1, RS2: 0})
    process.kill()
    process.wait(timeout=DEADLINE)
    watched.host.clear_calls()
    watched.web[RS2].status = 200
    watched.watch()
    watched.wait("rs2 back", lambda: watched.weights() == {RS1: 1, RS2: 2})
    log = watched.log.read_text()
    # it came back by passing `rise` checks as a down server, not as a new unknown one
    assert f"{RS2}:80 down -> up: ok (2 success(es))" in log, log
    assert [c["stdin"] or c["argv"] for c in watched.changes()] == [
        ["ipvsadm", "-e", "-t", f"{VIP}:80", "-r", f"{RS2}:80", "-g", "-w", "2"]]
    # a reload meanwhile would not have put it back either: see test_plan_health


FWMARK_CONFIG = f"""
[director]
interface = "eth0"
arping_count = 0

[[service]]
fwmark = 1
match = [ {{ vip = "{VIP}", port = 80 }}, {{ vip = "{VIP}", port = 443 }} ]
scheduler = "wrr"
persistence = 300
sorry_server = "192.168.30.200"
real = [
  {{ address = "{RS1}", weight = 1 }},
  {{ address = "{RS2}", weight = 2 }},
]

[service.check]
type = "http"
port = 80
path = "/healthz"
interval = 0.5
timeout = 0.4
rise = 2
fall = 2
"""


@needs_root
def test_a_fwmark_service_is_checked_and_its_weights_applied(fakehost: FakeHost,
                                                            tmp_path: Path) -> None:
    """The classic http+https service: each real server checked on port 80, its weight
    in the `-f` service (both ports) following the checks, the sorry server in while
    none is up, and the health file keyed by the mark."""
    machine = Watched(fakehost, tmp_path, FWMARK_CONFIG)
    try:
        machine.watch()
        machine.wait("both up", lambda: both_up(machine))
        machine.web[RS2].status = 500
        machine.wait("rs2 at 0", lambda: machine.weights() == {RS1: 1, RS2: 0})
        assert f"fwmark 1->{RS2}:80 up -> down: HTTP 500" in machine.log.read_text()
        machine.web[RS1].status = 500
        machine.wait("the sorry server in", lambda: machine.weights() == {
            RS1: 0, RS2: 0, "192.168.30.200": 1})
        status = machine.run("status")
        assert status.returncode == 0, status.stdout
        machine.web[RS1].status = 200
        machine.wait("rs1 back, sorry out", lambda: machine.weights() == {RS1: 1, RS2: 0})
    finally:
        machine.stop()


@needs_root
def test_sighup_good_and_bad(watched: Watched) -> None:
    process = watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    watched.config.write_text(config(weight1=3))
    process.send_signal(signal.SIGHUP)
    watched.wait("reloaded", lambda: "config " in watched.log.read_text()
                 and "reloaded" in watched.log.read_text())
    watched.wait("new weight", lambda: watched.weights()[RS1] == 3)
    watched.config.write_text(config(extra="rise = 0\n").replace("rise = 2\n", ""))
    process.send_signal(signal.SIGHUP)
    watched.wait("refused", lambda: "config not reloaded" in watched.log.read_text())
    line = next(x for x in watched.log.read_text().splitlines() if "config not reloaded" in x)
    assert str(watched.config) in line and "service[0].check.rise" in line and "0" in line
    assert process.poll() is None
    watched.web[RS1].status = 500  # the old (good) config goes on working
    watched.wait("rs1 down", lambda: watched.weights() == {RS1: 0, RS2: 2})


@needs_root
def test_disable_and_enable_while_watching(watched: Watched) -> None:
    watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    assert watched.run("disable", RS1).returncode == 0
    assert watched.weights() == {RS1: 0, RS2: 2}
    watched.web[RS2].status = 500  # a transition: the watcher applies, RS1 stays disabled
    watched.wait("rs2 down", lambda: watched.weights() == {RS1: 0, RS2: 0})
    watched.web[RS2].status = 200
    watched.wait("rs2 up", lambda: watched.weights() == {RS1: 0, RS2: 2})
    status = json.loads(watched.run("status", "--json").stdout)
    assert [r["health"]["state"] for r in status["services"][0]["real"]] == ["disabled", "up"]
    assert watched.run("enable", RS1).returncode == 0
    assert watched.weights() == {RS1: 1, RS2: 2}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@needs_root
def test_metrics_and_systemd_notifications(watched: Watched, tmp_path: Path) -> None:
    import socket
    import urllib.request

    port = free_port()
    text = config().replace('arping_count = 0\n', f'arping_count = 0\nmetrics = '
                            f'"127.0.0.1:{port}"\n')
    watched.config.write_text(text)
    # systemd's side of Type=notify: a datagram socket; WatchdogSec=0.4 s
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(DEADLINE)
    watched.env.update(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="400000")
    watched.watch()
    said = [notify.recv(100).decode() for _ in range(3)]
    assert said[0] == "READY=1" and said[1:] == ["WATCHDOG=1", "WATCHDOG=1"], said
    watched.web[RS1].status = 500
    watched.wait("rs1 down", lambda: watched.weights()[RS1] == 0)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            return str(page.read().decode())

    from prometheus_client.parser import text_string_to_metric_families

    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(scrape())
               for sample in family.samples}
    real = (("real", f"{RS1}:80"), ("service", f"tcp {VIP}:80"))

    def value(name: str, **more: str) -> float:
        return samples[(name, tuple(sorted((*real, *more.items()))))]

    assert value("lvs_real_server_health") == 0
    assert value("lvs_real_server_weight", kind="configured") == 1
    assert value("lvs_real_server_weight", kind="actual") == 0
    assert value("lvs_real_server_connections", state="active") == 0
    assert value("lvs_health_transitions_total", to="down") == 1
    assert 0 < value("lvs_check_duration_seconds") < 0.4
    assert samples[("lvs_service_connections_total", (("service", f"tcp {VIP}:80"),))] == 0
    notify.close()


def watch_until_ready(tmp_path: Path, seen: list[str], prepare: bool = True) -> None:
    """`watch` in process until READY=1, checks stubbed (no network at all), against a
    runner that answers every program with nothing. seen: each program run, `prepare`
    (the runner's imports) and each notification, in order, with " gc" appended where
    the cyclic garbage collector was on."""
    import asyncio
    import gc

    from lvs_scripts.checks import CheckResult
    from lvs_scripts.config import parse_config
    from lvs_scripts.director import Director
    from lvs_scripts.runner import Result
    from lvs_scripts.watch import Watcher

    def saw(what: str) -> None:
        seen.append(what + (" gc" if gc.isenabled() else ""))

    class Runner:
        def run(self, argv: Any, *, stdin: str | None = None, check: bool = True) -> Result:
            saw(" ".join(argv))
            return Result(tuple(argv), 0, "", "")

    class Preparing(Runner):
        def prepare(self) -> None:
            saw("prepare")

    async def check(*_args: Any) -> CheckResult:
        return CheckResult(True, "ok", 0.0)

    runner = Preparing() if prepare else Runner()
    director = Director(parse_config(config()), runner=runner,  # type: ignore[arg-type]
                        paths=Paths("lvs-director", str(tmp_path / "s"), str(tmp_path / "l")))
    watcher = Watcher(director, "lvs.toml", check=check)

    def notify(message: str) -> None:
        saw(message)
        if message == "READY=1":
            watcher.stop()

    watcher.notify = notify
    assert asyncio.run(watcher.run()) == 0


@needs_root
def test_the_runner_is_prepared_before_ready(tmp_path: Path) -> None:
    """The lab measured 1.4-2.2 s from a transition to its one `ipvsadm -e`: the first
    program the watcher ran imported plumbum then. The runner's imports are done before
    READY, so no failure pays for them."""
    seen: list[str] = []
    watch_until_ready(tmp_path, seen)
    events = [event.removesuffix(" gc") for event in seen]
    assert events.index("prepare") < events.index("READY=1"), events


@needs_root
def test_the_watcher_applies_without_the_cyclic_collector(tmp_path: Path) -> None:
    """An apply (and a reload) reads and plans tens of thousands of objects that form no
    cycles: the collector is off while it runs, and on again for the checks."""
    import gc

    seen: list[str] = []
    watch_until_ready(tmp_path, seen, prepare=False)
    ready = seen.index("READY=1 gc")
    applied = seen[:ready]
    assert applied and not any(event.endswith(" gc") for event in applied), seen
    assert gc.isenabled()


# ------------------------------------------------- SIGHUP: `lvs-director reload`, in the watcher

def state_of(machine: DirectorMachine) -> dict[str, Any]:
    return dict(json.loads((machine.state_dir / "lvs-director.json").read_text()))


@needs_root
def test_reload_via_watcher_adds_a_server_like_the_cli(watched: Watched,
                                                       tmp_path: Path) -> None:
    """A new real server (not only a weight: plan_health alone cannot add one), through
    `reload --via-watcher`, which returns once the watcher's reload is in the kernel; the
    state file is what the CLI's reload writes on a twin host."""
    process = watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    new = config(reals=[(RS1, 3), (RS2, 2), (RS3, 4)])
    watched.config.write_text(new)
    ran = watched.run("reload", "--via-watcher", "--json")
    assert ran.returncode == 0, ran.stderr
    said = json.loads(ran.stdout)
    assert said["via_watcher"] and said["changed"], said
    assert watched.weights() == {RS1: 3, RS2: 2, RS3: 4}  # already when the CLI returns
    assert re.search(r"watch: reload: \d+ change\(s\) applied; done, with its check, "
                     r"[0-9.]+ s after", watched.log.read_text())
    assert process.poll() is None
    (tmp_path / "twin").mkdir()
    twin = DirectorMachine(FakeHost(tmp_path / "twin-host"), tmp_path / "twin", config())
    assert twin.run("start").returncode == 0
    twin.config.write_text(new)
    assert twin.run("reload").returncode == 0
    assert state_of(watched) == state_of(twin)
    assert watched.host.ipvs_save() == twin.host.ipvs_save()
    again = watched.run("reload")  # a plain reload goes through the watcher too
    assert (again.returncode, again.stdout) == (
        0, "lvs-director reload: nothing to do (the watcher reloaded)\n")
    watched.web[RS3].status = 500  # and the new one is checked
    watched.wait("rs3 down", lambda: watched.weights()[RS3] == 0)


@needs_root
def test_a_sighup_keeps_the_new_config_in_the_cache_after_its_reload(watched: Watched) -> None:
    """The watcher keeps a config it read on SIGHUP in the config cache (config_cache.py:
    for the CLI's next status) once the reload is done, not before it."""
    from lvs_scripts.config_cache import ConfigCache

    process = watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    padding = "# " + "x" * 78 + "\n"  # over CACHE_MIN_BYTES: a config the cache takes
    watched.config.write_text(config(weight1=3) + padding * 60)
    raw = watched.config.read_bytes()

    def cached() -> bool:
        return ConfigCache(watched.paths.config_cache, str(watched.config), raw).load() \
            is not None

    assert not cached()
    process.send_signal(signal.SIGHUP)
    watched.wait("reloaded", lambda: "watch: reload: " in watched.log.read_text())
    assert watched.weights()[RS1] == 3
    watched.wait("kept in the cache", cached)


@needs_root
def test_sighup_removing_a_server_drains_it_as_reload_does(watched: Watched) -> None:
    process = watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    watched.host.clear_calls()
    watched.config.write_text(config(reals=[(RS1, 1)]))
    process.send_signal(signal.SIGHUP)
    watched.wait("rs2 gone", lambda: watched.weights() == {RS1: 1})
    changes = [c["stdin"] or c["argv"] for c in watched.changes()]
    # weight 0 first (connections finish), then (idle: at once) the delete
    assert changes == [["ipvsadm", "-e", "-t", f"{VIP}:80", "-r", f"{RS2}:80", "-g", "-w", "0"],
                       ["ipvsadm", "-d", "-t", f"{VIP}:80", "-r", f"{RS2}:80"]], changes
    watched.wait("rs2 unchecked", lambda: watched.health() == {RS1: UP})


@needs_root
def test_a_sighup_during_an_apply_is_a_reload_after_it(watched: Watched) -> None:
    process = watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    watched.host.delay(["ipvsadm", "-e"], 2.0, nth=1)  # the health apply taking rs1 out
    watched.web[RS1].status = 500
    watched.wait("the apply under way", lambda: watched.host.delays()[0]["fired"] == 1)
    watched.config.write_text(config(reals=[(RS1, 1), (RS2, 5), (RS3, 1)]))
    ran = watched.run("reload", "--via-watcher")
    assert ran.returncode == 0, ran.stderr
    # the result waited for is the reload's, begun after the SIGHUP: not the apply's
    assert watched.weights() == {RS1: 0, RS2: 5, RS3: 1}
    log = watched.log.read_text()
    assert log.index(f"-r {RS1}:80 -g -w 0") < log.index("SIGHUP: config"), log
    assert process.poll() is None


@needs_root
def test_an_invalid_config_is_refused_and_the_result_says_so(watched: Watched) -> None:
    from lvs_scripts.watch import read_result

    process = watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    watched.config.write_text(config().replace("rise = 2", "rise = 0"))
    ran = watched.run("reload", "--via-watcher")  # the CLI refuses it before signalling
    assert ran.returncode == 6 and "service[0].check.rise" in ran.stderr, ran.stderr
    assert read_result(watched.paths) is None
    process.send_signal(signal.SIGHUP)
    watched.wait("refused", lambda: read_result(watched.paths) is not None)
    result = read_result(watched.paths)
    assert result is not None and result["code"] == 6, result
    assert str(watched.config) in result["error"] and "rise" in result["error"]
    assert process.poll() is None and watched.weights() == {RS1: 1, RS2: 2}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE) == 0
    assert not (watched.state_dir / "lvs-director.watch.pid").exists()
    assert not (watched.state_dir / "lvs-director.watch-config").exists()


@needs_root
@pytest.mark.parametrize("action", ["reload", "start"])
def test_a_plain_reload_goes_through_the_watcher_of_its_config(watched: Watched,
                                                               tmp_path: Path,
                                                               action: str) -> None:
    """Else the watcher's next health apply would put back the weights of the config it
    read last; `start` is the same reconciliation. A watcher of another file, or one that
    names no config file (an older version), is not asked."""
    watched.watch()
    watched.wait("both up", lambda: both_up(watched))
    watched.config.write_text(config(reals=[(RS1, 1), (RS2, 7)]))
    ran = watched.run(action)
    assert ran.returncode == 0, ran.stderr
    assert f"{action}: 1 change(s) applied by the watcher" in ran.stdout, ran.stdout
    assert watched.weights() == {RS1: 1, RS2: 7}
    watched.web[RS1].status = 500  # a health apply after the reload keeps the new weight
    watched.wait("rs1 out", lambda: watched.weights()[RS1] == 0)
    assert watched.weights()[RS2] == 7
    other = tmp_path / "other.toml"
    other.write_text(config(reals=[(RS1, 1), (RS2, 3)]))
    ran = subprocess.run([watched.argv()[0], "-c", str(other), "reload"], env=watched.env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr
    assert "by the watcher" not in ran.stdout and f"runs with {watched.config}" in ran.stderr
    assert watched.weights()[RS2] == 3
    (watched.state_dir / "lvs-director.watch-config").unlink()  # as an older version
    watched.config.write_text(config(reals=[(RS1, 1), (RS2, 4)]))
    ran = watched.run("reload")
    assert ran.returncode == 0 and "by the watcher" not in ran.stdout, ran.stdout
    assert "another config" in ran.stderr and watched.weights()[RS2] == 4


@needs_root
def test_reload_via_watcher_without_a_watcher(watched: Watched) -> None:
    ran = watched.run("reload", "--via-watcher")
    assert ran.returncode == 7, ran.stderr
    assert "no watcher is running" in ran.stderr and "watch.pid" in ran.stderr
    (watched.state_dir / "lvs-director.watch.pid").write_text("999999999\n")
    ran = watched.run("reload", "--via-watcher")
    assert ran.returncode == 7 and "has exited" in ran.stderr, ran.stderr
    ran = watched.run("start", "--via-watcher")
    assert ran.returncode == 2 and "--via-watcher is for reload" in ran.stderr


# ---------------------------------------------------------------- the batching window

# (seconds, cap) of each request to apply, in order; when the window closes (None: not
# yet) once the last of them came. Quiet time 0.2 s; a transition asks for its check's
# interval + 0.2 (here interval 2: cap 2.2), a reload or a retry for 0.2.
@pytest.mark.parametrize(("requests", "closes"), [
    ([], None),
    ([(10.0, 2.2)], 10.2),  # a lone failure goes out after the quiet time, as before
    ([(10.0, 2.2), (10.1, 2.2)], 10.3),  # each one pushes the end on
    ([(10.0, 0.2)], 10.2),  # a reload
    # a burst spread over the interval (checks at their own phases), one every 10 ms:
    # one apply, at the cap, not one per quiet time
    ([(10.0 + i * 0.01, 2.2) for i in range(300)], 12.2),
    ([(10.0, 2.2), (10.5, 1.2)], 10.7),  # quiet after the last
    ([(10.0 + i * 0.1, 5.2) for i in range(10)] + [(11.0, 1.2)], 11.2),  # smallest cap
    ([(10.0, 0.05)], 10.2),  # never earlier than the quiet time
])
def test_batch_window(requests: list[tuple[float, float]], closes: float | None) -> None:
    window = BatchWindow(BATCH_SECONDS)
    for now, cap in requests:
        window.add(now, cap)
    assert window.closes_at() == (pytest.approx(closes) if closes is not None else None)


def test_a_closed_window_opens_again_at_the_next_request() -> None:
    window = BatchWindow(0.2)
    for i in range(100):
        window.add(i * 0.01, 2.2)
    window.close()
    assert window.closes_at() is None
    window.add(50.0, 2.2)
    assert window.closes_at() == pytest.approx(50.2)
    for i in range(1, 400):
        window.add(50.0 + i * 0.01, 2.2)
    assert window.closes_at() == pytest.approx(52.2)  # cap from 50.0, not from the first
