"""lvs-director watch on the real kernel: issue 10's lab scenarios 1 to 7.

One director and one watcher for the module (a CLI call costs 6-15 s under emulation):
the director started through init.d/lvs-director, the watcher through
init.d/lvs-director-watch, from one config with two services on rs1..rs3:

- VIP:80, an http check (interval 2, timeout 1, rise 2, fall 2), rs4 as its sorry server;
- VIP2:80, a tcp check with the same numbers: the same servers, checked by connecting only.

Before each test (`watched`) the real servers' web servers are put back as lab/topology.sh
made them, the config back to the good one, and the test waits until the watcher has every
real server up and the kernel at the configured weights: each test starts from that state,
whatever the one before did. A client (tests/e2e/vip_client.py) sends a request through
the VIP every 100 ms all along; each test looks at the requests sent in its own windows.

How times are measured, so that they are honest and cheap (each program start in the
guest costs tenths of a second, and the bound has little slack under emulation):
- the start is when the web server is really gone (its process ended), not when the
  signal was sent;
- the end is when the kernel shows the weight, read from the director's /proc/PID/net/
  ip_vs by this process (no program started) at most every 50 ms, and at once whenever
  the watcher logs a line;
- the watcher's log (syslog: this module listens on /dev/log) says when it judged the
  server down and when its `ipvsadm` returned, to split the time into detection and apply.
The measured times are printed (`-s`) for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.labhosts import (
    CHECKOUT,
    LAB_ONLY,
    REALS,
    RUN_ROOT,
    VENV_BIN,
    VIP,
    WEIGHTS,
    in_ns,
    initd,
    ipvs_save,
    lvs_env,
    quit_helper,
    realservers_by_hand,
    reset,
    run_on,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

INTERVAL, TIMEOUT, RISE, FALL = 2, 1, 2, 2
BOUND = INTERVAL * FALL + TIMEOUT + 1  # issue 10: failure to weight 0, at most
BACK_BOUND = INTERVAL * RISE + TIMEOUT + 1  # started again -> back at its weight, at most
VIP2 = "192.168.30.253"  # the tcp-checked service on the same real servers
CHECKED = ("rs1", "rs2", "rs3")
SORRY = "rs4"
WATCH_INITD = CHECKOUT / "init.d" / "lvs-director-watch"
CLIENT = Path(__file__).with_name("vip_client.py")
WWW = "/run/lab-www"
HEALTH_FILE = RUN_ROOT / "director" / "state" / "lvs-director.health.json"
PIDFILE = RUN_ROOT / "director" / "watch.pid"
DEV_LOG = "/dev/log"
POLL = 0.05  # seconds between two reads of the table while waiting


def lab_config(path: Path) -> Path:
    """examples/lab-dr.toml's service on rs1..rs3 with an http check and rs4 as its sorry
    server, and the same real servers behind VIP2 with a tcp check."""
    check = (f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\nrise = {RISE}\nfall = {FALL}\n")
    text = write_config(path, reals=CHECKED).read_text()
    service = text[text.index("[[service]]"):]
    text = text.replace("real = [", f'sorry_server = "{REALS[SORRY]}:80"\nreal = [', 1)
    text += f'\n[service.check]\ntype = "http"\n{check}'
    text += "\n" + service.replace(f'vip = "{VIP}"', f'vip = "{VIP2}"')
    text += f'\n[service.check]\ntype = "tcp"\n{check}'
    path.write_text(text)
    return path


# --- the watcher's log: this process is the syslog daemon --------------------------------------

class Syslog:
    """/dev/log, bound by the test (the VM runs no syslog daemon): each datagram the CLI and
    the watcher send, with the monotonic time it arrived."""

    def __init__(self) -> None:
        if os.path.exists(DEV_LOG):
            os.unlink(DEV_LOG)  # a socket left by an earlier run in this VM
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(DEV_LOG)
        self.lines: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return  # closed
            text = re.sub(r"^<\d+>", "", data.decode(errors="replace")).rstrip("\0\n")
            with self.changed:
                self.lines.append((time.monotonic(), text))
                self.changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Until the next line, or timeout."""
        with self.changed:
            self.changed.wait(timeout)

    def find(self, pattern: str, since: float) -> tuple[float, str] | None:
        with self.changed:
            return next(((t, line) for t, line in self.lines
                         if t >= since and re.search(pattern, line)), None)

    def expect(self, pattern: str, since: float, timeout: float = 60) -> tuple[float, str]:
        found = wait_for(lambda: self.find(pattern, since), timeout, interval=0.1,
                         what=f"a log line matching {pattern!r}")
        return found  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()
        if os.path.exists(DEV_LOG):
            os.unlink(DEV_LOG)
        results = os.environ.get("LAB_RESULTS")
        if results:  # for the post-mortem of a failed run: lab-results/<command>/ on the host
            with open(Path(results) / "watch-syslog.txt", "a") as out:
                out.writelines(f"{t:.3f} {line}\n" for t, line in self.lines)


# --- the client: a request every 100 ms ----------------------------------------------------------

class Client:
    """vip_client.py on the client namespace, its records collected as they come."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(in_ns("client", [sys.executable, str(CLIENT)]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.records: list[dict[str, object]] = []
        self.lock = threading.Lock()
        assert self.proc.stdout is not None
        assert json.loads(self.proc.stdout.readline()) == {"hello": True}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.records.append(json.loads(line))

    def sent(self, since: float, until: float = float("inf")) -> list[dict[str, object]]:
        with self.lock:
            return [r for r in self.records if since <= float(str(r["sent"])) < until]

    def wait_sent(self, since: float, count: int) -> list[dict[str, object]]:
        """Until COUNT requests sent after `since` have their answer (or error)."""
        found = wait_for(lambda: len(self.sent(since)) >= count and self.sent(since), 60,
                         interval=0.2, what=f"{count} requests through the VIP")
        return found  # type: ignore[no-any-return]

    def close(self) -> None:
        quit_helper(self.proc)


def failed(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in records if not r["ok"]]


def answered_by(records: list[dict[str, object]]) -> set[str]:
    return {str(r["who"]) for r in records if r["ok"]}


# --- the real servers' web servers ---------------------------------------------------------------

def httpd_pid(name: str) -> int | None:
    """The pid of rs NAME's busybox httpd (the listener lab/topology.sh started, not a child
    it forked for a request: those have the same command line, and the listener's parent)."""
    wanted = ["busybox", "httpd", "-p", "80", "-h", f"{WWW}/{name}"]
    found: dict[int, int] = {}  # pid -> parent pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode().split("\0")[:-1]
                if argv == wanted:
                    stat = (entry / "stat").read_text()
                    found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended while we looked
    listeners = [pid for pid, parent in found.items() if parent not in found]
    return listeners[0] if listeners else None


def start_httpd(name: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, "busybox", "httpd", "-p", "80", "-h",
                    f"{WWW}/{name}"], check=True, timeout=60)


def gone(pid: int) -> bool:
    """Ended (a zombie counts: whoever reaps it in the VM is no concern of the test)."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped while being read: ESRCH
        return True


def stop_httpd(name: str) -> float:
    """SIGTERM to rs NAME's web server; returns the monotonic time it was gone."""
    pid = httpd_pid(name)
    assert pid is not None, f"{name}'s web server is not running"
    os.kill(pid, signal.SIGTERM)
    return float(wait_for(lambda: gone(pid) and time.monotonic(), 30, interval=0.01,
                          what=f"{name}'s web server gone"))


def answer_500(name: str) -> None:
    """busybox httpd runs /cgi-bin/index.cgi for `/` when there is no index.html: the same
    server, still accepting connections, now answers 500."""
    www = Path(WWW) / name
    (www / "cgi-bin").mkdir(exist_ok=True)
    script = www / "cgi-bin" / "index.cgi"
    script.write_text("#!/bin/sh\necho 'Status: 500 Internal Server Error'\n"
                      "echo 'Content-Type: text/plain'\necho\necho broken\n")
    script.chmod(0o755)
    (www / "index.html").rename(www / "index.html.off")


def web_servers_as_made() -> None:
    """Every real server's page and web server as lab/topology.sh made them."""
    for name in REALS:
        www = Path(WWW) / name
        if (www / "index.html.off").exists():
            (www / "index.html.off").rename(www / "index.html")
        shutil.rmtree(www / "cgi-bin", ignore_errors=True)
        if httpd_pid(name) is None:
            start_httpd(name)


# --- the director's table, read without starting a program ---------------------------------------

class Table:
    """The director's IPVS table from /proc/PID/net/ip_vs of a process that lives in its
    namespace (a `sleep` of our own: the watcher is killed in a test), parsed by the
    same parser the watcher uses (the lab compares it with ipvsadm -S once)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(in_ns("director", ["sleep", "3600"]))
        self.path = Path(f"/proc/{self.proc.pid}/net/ip_vs")
        wait_for(lambda: self.path.exists() and self._in_director(), 30, interval=0.05,
                 what="the sleep in the director's namespace")

    def _in_director(self) -> bool:
        mine = os.readlink(f"/proc/{self.proc.pid}/ns/net")
        return mine != os.readlink("/proc/self/ns/net")

    def weights(self, vip: str = VIP) -> dict[str, int]:
        """Real server address -> weight, in VIP's service."""
        from lvs_scripts.probes import parse_proc_ip_vs

        for key, service in parse_proc_ip_vs(self.path.read_text()).items():
            if str(key) == f"tcp {vip}:80":
                return {str(d.address): d.weight for d in service.destinations}
        return {}

    def weight(self, name: str, vip: str = VIP) -> int | None:
        return self.weights(vip).get(REALS[name])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@dataclass
class Lab:
    env: dict[str, str]
    config: Path
    good: str  # the config's text
    syslog: Syslog
    client: Client
    table: Table

    def until(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait for a condition on the table; returns the monotonic time it was seen.
        Polled every POLL seconds, and at once after each line the watcher logs (its
        `applied` line comes right after its ipvsadm returned)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.syslog.wait(POLL)
        return time.monotonic()

    def configured(self) -> bool:
        """Every real server of both services at its configured weight; no sorry server."""
        want = {REALS[name]: WEIGHTS[name] for name in CHECKED}
        return self.table.weights(VIP) == want and self.table.weights(VIP2) == want

    def watcher_pid(self) -> int:
        """From init.d's pid file; 0 while it is being written."""
        try:
            return int(PIDFILE.read_text())
        except (FileNotFoundError, ValueError):
            return 0


def healths() -> dict[tuple[str, str], str]:
    if not HEALTH_FILE.exists():
        return {}
    data = json.loads(HEALTH_FILE.read_text())
    return {(t["vip"], t["address"]): t["state"] for t in data["health"]["targets"]}


def watch_initd(lab_env: dict[str, str], action: str) -> None:
    done = run_on("director", [str(WATCH_INITD), action], lab_env)
    assert done.returncode == 0, done


@pytest.fixture(scope="module")
def lab(topology: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reset()
    realservers_by_hand(REALS)  # rs4 too: the sorry server answers for the VIP
    config = lab_config(tmp_path_factory.mktemp("watch") / "lvs.toml")
    syslog = Syslog()  # before the first CLI call: each looks for /dev/log as it starts
    table = Table()
    client: Client | None = None
    env = {**lvs_env("director", config), "LVS_DIRECTOR_BIN": str(VENV_BIN / "lvs-director"),
           "LVS_WATCH_PIDFILE": str(PIDFILE)}
    try:
        started = initd("director", "start", config=config)
        assert started.returncode == 0, started
        watch_initd(env, "start")
        client = Client()
        yield Lab(env, config, config.read_text(), syslog, client, table)
    finally:
        run_on("director", [str(WATCH_INITD), "stop"], env)
        if client is not None:
            client.close()
        table.close()
        syslog.close()
        web_servers_as_made()


@pytest.fixture
def watched(lab: Lab) -> Lab:
    """The state every test starts from: web servers as made, the good config, the
    watcher running with every real server up, the kernel at the configured weights."""
    web_servers_as_made()
    if lab.config.read_text() != lab.good:
        lab.config.write_text(lab.good)
        since = time.monotonic()
        watch_initd(lab.env, "reload")
        lab.syslog.expect(r"watch: SIGHUP: config .* reloaded", since)
    assert lab.watcher_pid() and not gone(lab.watcher_pid()), "the watcher is not running"
    wait_for(lambda: set(healths().values()) == {"up"} and len(healths()) == 6, 180,
             what="every real server of both services checked up")
    lab.until(lab.configured, 60, "the configured weights, without the sorry server")
    return lab


# --- scenarios 1 and 2 -------------------------------------------------------------------------

def test_rs2_stops_then_starts_again(watched: Lab) -> None:
    """1: rs2's web server stops: rs2 at weight 0 within the bound (in both services), and
    no failed request after that. 2: started again: back at its weight after rise checks."""
    lab = watched
    proc = lab.table.path.read_text()
    compare_probes(proc)
    gone_at = stop_httpd("rs2")
    out_at = lab.until(lambda: lab.table.weight("rs2") == 0, 60, "rs2 at weight 0")
    out2_at = lab.until(lambda: lab.table.weight("rs2", VIP2) == 0, 60,
                        "rs2 at weight 0 behind VIP2")
    target = re.escape(f"{VIP}:80->{REALS['rs2']}:80")
    judged = lab.syslog.expect(rf"health: \S*{target} up -> down", gone_at)
    applied = lab.syslog.expect(rf"applied ipvsadm -e -t {re.escape(VIP)}:80 -r "
                                rf"{re.escape(REALS['rs2'])}:80 -g -w 0", gone_at)
    took = lab.syslog.find(r"change\(s\) applied in", applied[0])
    print(f"\nlab: rs2's web server gone -> judged down {judged[0] - gone_at:.2f} s "
          f"({judged[1].split(': ', 1)[1]}), ipvsadm done {applied[0] - gone_at:.2f} s, "
          f"weight 0 seen {out_at - gone_at:.2f} s (behind VIP2, tcp check: "
          f"{out2_at - gone_at:.2f} s); bound {BOUND} s = interval {INTERVAL} x fall {FALL}"
          f" + timeout {TIMEOUT} + 1" + (f"; watcher: {took[1]}" if took else ""))
    after = lab.client.wait_sent(out_at, 20)
    assert failed(after) == [], after  # every request answered ...
    assert "rs2" not in answered_by(after), after  # ... and none by the dead server
    start_httpd("rs2")
    back_at = time.monotonic()
    lab.until(lambda: lab.table.weight("rs2") == WEIGHTS["rs2"], 60, "rs2 back at its weight")
    back = time.monotonic() - back_at
    print(f"lab: rs2's web server started -> weight {WEIGHTS['rs2']} after {back:.2f} s "
          f"(rise {RISE} x interval {INTERVAL})")
    again = lab.client.wait_sent(back_at + back, 20)
    assert "rs2" in answered_by(again), again
    assert failed(lab.client.sent(out_at)) == []  # none failed, rs2 away or back
    assert out_at - gone_at <= BOUND, f"rs2 out after {out_at - gone_at:.2f} s, not {BOUND}"
    assert out2_at - gone_at <= BOUND, f"rs2 out of VIP2 after {out2_at - gone_at:.2f} s"
    assert back <= BACK_BOUND, f"rs2 back after {back:.2f} s, more than {BACK_BOUND} s"


def compare_probes(proc: str) -> None:
    """/proc/net/ip_vs, as the watcher reads it, against ipvsadm -S -n: the same services,
    real servers, forwarding and weights on the real kernel; and, read as the verification
    after a reload reads it (this config is one it may: wrr, DR, no persistence), the very
    table ipvsadm's gives."""
    from lvs_scripts.probes import parse_ipvs_save, parse_proc_ip_vs, parse_proc_ip_vs_exact

    def dests(table: dict) -> dict[str, list[tuple[str, str, int]]]:  # type: ignore[type-arg]
        return {str(k): [(d.endpoint(), d.forwarding.value, d.weight) for d in s.destinations]
                for k, s in table.items()}

    saved = parse_ipvs_save("\n".join(ipvs_save()))
    assert dests(parse_proc_ip_vs(proc)) == dests(saved)
    assert parse_proc_ip_vs_exact(proc) == saved


# --- scenario 3 --------------------------------------------------------------------------------

def test_rs3_answering_500_is_taken_out_by_the_http_check_not_the_tcp_one(
        watched: Lab) -> None:
    lab = watched
    since = time.monotonic()
    answer_500("rs3")
    out_at = lab.until(lambda: lab.table.weight("rs3") == 0, 60, "rs3 at weight 0")
    judged = lab.syslog.expect(rf"{re.escape(REALS['rs3'])}:80 up -> down: HTTP 500", since)
    applied = lab.syslog.expect(rf"applied ipvsadm -e -t {re.escape(VIP)}:80 -r "
                                rf"{re.escape(REALS['rs3'])}:80 -g -w 0", since)
    print(f"\nlab: rs3 answering 500 -> judged down {judged[0] - since:.2f} s "
          f"({judged[1].split(': ', 1)[1]}), ipvsadm done {applied[0] - since:.2f} s, "
          f"weight 0 seen {out_at - since:.2f} s")
    # The tcp check connects, and rs3 accepts: VIP2 keeps it for as long again as the
    # http check needed, and longer than the bound.
    hold_until = out_at + max(out_at - since, BOUND)
    while time.monotonic() < hold_until:
        assert lab.table.weight("rs3", VIP2) == WEIGHTS["rs3"], "the tcp check took rs3 out"
        lab.syslog.wait(POLL)
    assert healths()[(VIP2, REALS["rs3"])] == "up"
    after = lab.client.wait_sent(out_at, 20)
    assert failed(after) == [], after  # no 500 once it is out
    assert "rs3" not in answered_by(after)


# --- scenario 4 --------------------------------------------------------------------------------

def test_all_down_the_sorry_server_answers_one_back_it_is_removed(watched: Lab) -> None:
    lab = watched
    sorry = REALS[SORRY]
    for name in CHECKED:
        stop_httpd(name)
    in_at = lab.until(lambda: lab.table.weights().get(sorry, 0) > 0, 60,
                      "the sorry server in the table")
    assert all(lab.table.weight(name) == 0 for name in CHECKED)
    assert sorry not in lab.table.weights(VIP2)  # VIP2 has no sorry server
    during = lab.client.wait_sent(in_at, 20)
    assert failed(during) == [] and answered_by(during) == {SORRY}, during
    start_httpd("rs1")
    back_at = time.monotonic()
    out_at = lab.until(lambda: sorry not in lab.table.weights(), 60,
                       "the sorry server out of the table")
    assert lab.table.weight("rs1") == WEIGHTS["rs1"]
    print(f"\nlab: all down -> sorry server in; rs1 started -> sorry server out after "
          f"{out_at - back_at:.2f} s")
    after = lab.client.wait_sent(out_at, 20)
    assert failed(after) == [] and answered_by(after) == {"rs1"}, after
    assert failed(lab.client.sent(in_at)) == []  # no gap from sorry server to rs1


# --- scenario 5 --------------------------------------------------------------------------------

def test_rs2_stays_out_across_reload_and_a_new_watcher(watched: Lab) -> None:
    """While rs2 is down, a reload keeps it at 0; so do a kill -9 of the watcher and a new
    one (which starts from the saved health: rs2 is down, not unknown); it comes back only
    once its web server answers again."""
    lab = watched
    stop_httpd("rs2")
    lab.until(lambda: lab.table.weight("rs2") == 0, 60, "rs2 at weight 0")
    reloaded = initd("director", "reload", config=lab.config)
    assert reloaded.returncode == 0, reloaded
    assert lab.table.weight("rs2") == 0
    killed = lab.watcher_pid()
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: gone(killed), 30, interval=0.05, what="the watcher gone")
    since = time.monotonic()
    watch_initd(lab.env, "start")
    # start-stop-daemon's child writes the pid file, maybe after init.d returned
    wait_for(lambda: lab.watcher_pid() != killed, 30, interval=0.1, what="the new pid file")
    # Its first apply (before READY) starts from the saved health (the file is rewritten
    # only if that changes it): the log line says it is done.
    lab.syslog.expect(r"watch: ready: the kernel follows the saved health", since, 120)
    assert lab.table.weight("rs2") == 0
    assert healths()[(VIP, REALS["rs2"])] == "down"
    start_httpd("rs2")
    lab.until(lambda: lab.table.weight("rs2") == WEIGHTS["rs2"], 120, "rs2 back at its weight")
    lab.until(lab.configured, 60, "every real server at its weight")


# --- scenario 6 --------------------------------------------------------------------------------

def test_sighup_with_a_broken_config_keeps_the_old_one_and_goes_on_checking(
        watched: Lab) -> None:
    lab = watched
    pid = lab.watcher_pid()
    broken = lab.good.replace(f"rise = {RISE}", "rise = 0", 1)
    assert broken != lab.good
    lab.config.write_text(broken)
    since = time.monotonic()
    watch_initd(lab.env, "reload")
    _, line = lab.syslog.expect(r"SIGHUP: config not reloaded", since)
    assert str(lab.config) in line and "service[0].check.rise" in line and "= 0" in line, line
    assert lab.watcher_pid() == pid and not gone(pid)
    # Still checking, with the old config (rise 0 would be refused by any other road):
    gone_at = stop_httpd("rs2")
    out_at = lab.until(lambda: lab.table.weight("rs2") == 0, 60, "rs2 at weight 0")
    assert out_at - gone_at <= BOUND
    start_httpd("rs2")
    lab.until(lambda: lab.table.weight("rs2") == WEIGHTS["rs2"], 60, "rs2 back")
    assert not gone(pid)


# --- scenario 7 --------------------------------------------------------------------------------

def test_disable_then_enable_rs1_while_traffic_runs_loses_no_request(watched: Lab) -> None:
    lab = watched
    since = time.monotonic()
    director = str(VENV_BIN / "lvs-director")
    disabled = run_on("director", [director, "disable", REALS["rs1"]], lab.env)
    assert disabled.returncode == 0, disabled
    out_at = lab.until(lambda: lab.table.weight("rs1") == 0, 10, "rs1 at weight 0")
    assert healths()[(VIP, REALS["rs1"])] == "up"  # its checks pass; it is out all the same
    during = lab.client.wait_sent(out_at, 20)
    assert "rs1" not in answered_by(during), during
    enabled = run_on("director", [director, "enable", REALS["rs1"]], lab.env)
    assert enabled.returncode == 0, enabled
    back_at = lab.until(lambda: lab.table.weight("rs1") == WEIGHTS["rs1"], 10, "rs1 back")
    after = lab.client.wait_sent(back_at, 20)
    assert "rs1" in answered_by(after), after
    everything = lab.client.sent(since)
    assert failed(everything) == [], failed(everything)
    print(f"\nlab: disable -> enable of rs1: {len(everything)} requests, none failed")


# --- issue 14: a reload through the running watcher ----------------------------------------------

OWN_PIDFILE = RUN_ROOT / "director" / "state" / "lvs-director.watch.pid"  # the watcher's own


def save_weight(vip: str, name: str) -> int | None:
    """rs's weight in VIP's service as `ipvsadm -S -n` lists it (what keepalived's side
    of the benchmark is timed against too)."""
    for line in ipvs_save():
        words = line.split()
        if words[:3] == ["-a", "-t", f"{vip}:80"] and words[4] == f"{REALS[name]}:80":
            return int(words[words.index("-w") + 1])
    return None


def test_a_weight_changed_in_the_file_reaches_the_kernel_through_sighup(watched: Lab) -> None:
    """The benchmark's recipe: edit the config, SIGHUP to the pid in the watcher's own pid
    file, poll `ipvsadm -S -n` until the weight shows. Then the same through `lvs-director
    reload --via-watcher`, which returns once the watcher's reload is in the kernel."""
    lab = watched
    pid = int(OWN_PIDFILE.read_text())
    assert pid == lab.watcher_pid()  # init.d's pid file and the watcher's agree
    new = lab.good.replace(f'"{REALS["rs1"]}", weight = {WEIGHTS["rs1"]} ',
                           f'"{REALS["rs1"]}", weight = 7 ', 1)
    assert new != lab.good
    lab.config.write_text(new)
    sent = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: save_weight(VIP, "rs1") == 7, 60, interval=0.05,
             what="weight 7 in ipvsadm -S -n")
    took = time.monotonic() - sent
    assert save_weight(VIP2, "rs1") == WEIGHTS["rs1"]  # only what the file changed
    applied = lab.syslog.expect(r"watch: reload: \d+ change\(s\) applied", sent)
    print(f"\nlab: weight edited, SIGHUP -> seen in ipvsadm -S -n after {took:.2f} s "
          f"(watcher: {applied[1].split(': ', 1)[1]})")
    lab.config.write_text(new.replace(f'"{REALS["rs1"]}", weight = 7 ',
                                      f'"{REALS["rs1"]}", weight = 5 ', 1))
    begun = time.monotonic()
    ran = run_on("director", [str(VENV_BIN / "lvs-director"), "reload", "--via-watcher"],
                 lab.env)
    assert ran.returncode == 0, ran
    assert save_weight(VIP, "rs1") == 5  # in the kernel when the CLI returns
    assert not gone(pid)
    print(f"lab: reload --via-watcher: {time.monotonic() - begun:.2f} s, CLI start included")
