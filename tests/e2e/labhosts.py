"""Driving the lab's "hosts" (network namespaces of lab/topology.sh) from the lab tests.

Everything here runs programs for real, so it is only ever used inside the lab
VM: the test modules carry `LAB_ONLY`, which skips them unless LVS_LAB=1 and
the kernel has IPVS (/proc/net/ip_vs), and the host machine has neither.

Costs shape the helpers: under emulation a Python start (every CLI call) costs
several seconds, a plain program a few tenths. So the CLI runs only where its
behaviour is what a test checks; state is looked at with ipvsadm/ip/sysctl
directly, a host's probes go in one `sh -c`, and independent hosts (the real
servers) run their CLI calls in parallel.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # lvs_scripts is imported where used: collecting on any machine stays cheap
    from lvs_scripts.probes import Stats

CHECKOUT = Path(__file__).resolve().parents[2]
VENV_BIN = CHECKOUT / ".venv" / "bin"
TOPOLOGY = CHECKOUT / "lab" / "topology.sh"
CONFIG = CHECKOUT / "examples" / "lab-dr.toml"
INITD = {"director": CHECKOUT / "init.d" / "lvs-director",
         "realserver": CHECKOUT / "init.d" / "lvs-realserver"}
UNITS = {"director": CHECKOUT / "systemd" / "lvs-director.service",
         "realserver": CHECKOUT / "systemd" / "lvs-realserver.service"}
HOLDER = Path(__file__).with_name("holder.py")
FAILOVER_CLIENT = Path(__file__).with_name("ha_client.py")
API_DRIVER = Path(__file__).with_name("api_driver.py")

VIP = "192.168.30.254"
GATEWAY = "192.168.30.200"
REALS = {"rs1": "192.168.30.111", "rs2": "192.168.30.112",
         "rs3": "192.168.30.113", "rs4": "192.168.30.114"}
WEIGHTS = {"rs1": 1, "rs2": 1, "rs3": 2, "rs4": 2}  # as in examples/lab-dr.toml
BY_ADDRESS = {address: name for name, address in REALS.items()}
ROUTER_LAN = "eth1"  # the router's interface on the LAN bridge
RUN_ROOT = Path("/run/lab")  # per-host state and lock dirs; /run is a tmpfs in the VM
SERVICE = f"-A -t {VIP}:80 -s wrr"
KERNEL_TIMEOUTS = "900 120 300"  # ipvsadm --set defaults, put back between tests

# The real servers' ARP settings (the keys lvs-realserver sets).
ARP_KEYS = ("net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce",
            "net.ipv4.conf.eth0.arp_ignore", "net.ipv4.conf.eth0.arp_announce")

IN_LAB = os.environ.get("LVS_LAB") == "1" and os.path.exists("/proc/net/ip_vs")
LAB_ONLY = pytest.mark.skipif(
    not IN_LAB, reason="needs the lab VM's real IPVS kernel: run `python -m lab pytest`")


def role_of(host: str) -> str:
    return "director" if host == "director" else "realserver"


def program_of(host: str) -> str:
    return f"lvs-{role_of(host)}"


@dataclass(frozen=True)
class Done:
    """A finished command."""

    host: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (f"[{self.host}]# {shlex.join(self.argv)}  -> exit {self.returncode} "
                f"({self.seconds:.1f} s)\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}")

    def ran(self) -> list[str]:
        """The commands the CLI logged with -v ("lvs-director: run: ARGV")."""
        return re.findall(r"^lvs-\w+: run: (.*)$", self.stderr, re.MULTILINE)


# What the CLI runs to observe a host (its -v log): anything else changes something.
READ_ONLY = (
    r"ip -o (link|addr) show",
    r"ip -4 route show default",  # the director's gateway check
    r"ipvsadm -S -n",
    r"ipvsadm -L .*",
    r"sysctl -n .*",
    r"arping -V",
)


def changing(ran: Iterable[str]) -> list[str]:
    """The commands of a -v log that are not observations."""
    return [cmd for cmd in ran if not any(re.fullmatch(p, cmd) for p in READ_ONLY)]


def in_ns(host: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """argv run on HOST; env goes through env(1) so that init.d sees it as a caller's."""
    words = [f"{key}={value}" for key, value in (env or {}).items()]
    return ["ip", "netns", "exec", host, *(["env", *words] if words else []), *argv]


def run_on(host: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
           stdin: str | None = None, check: bool = False, timeout: float = 180) -> Done:
    started = time.monotonic()
    proc = subprocess.run(in_ns(host, argv, env), input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)
    done = Done(host, tuple(argv), proc.returncode, proc.stdout, proc.stderr,
                time.monotonic() - started)
    if check and done.returncode != 0:
        raise AssertionError(f"command failed:\n{done}")
    return done


def run_parallel(calls: Sequence[tuple[str, Sequence[str], Mapping[str, str] | None]],
                 timeout: float = 240) -> list[Done]:
    """Several hosts at once (the VM has two CPUs): one result per call, in order."""
    started = time.monotonic()
    procs = [(host, tuple(argv), subprocess.Popen(in_ns(host, argv, env), stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, text=True))
             for host, argv, env in calls]
    results = []
    for host, argv, proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(Done(host, argv, proc.returncode, out, err,
                            time.monotonic() - started))
    return results


def sh(host: str, script: str) -> str:
    """A short shell script on HOST (one process start for many probes); must succeed."""
    return run_on(host, ["sh", "-ec", script], check=True).stdout


# --- the CLI through init.d and systemd ------------------------------------------------------

def lvs_env(host: str, config: Path = CONFIG, path_prefix: str | None = None) -> dict[str, str]:
    """What a host's /etc/default/lvs-* would say in the lab: one config for all, and a
    state and lock dir per host (the namespaces share one file system)."""
    env = {"LVS_CONFIG": str(config),
           "LVS_STATE_DIR": str(RUN_ROOT / host / "state"),
           "LVS_LOCK_DIR": str(RUN_ROOT / host / "lock")}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{os.environ['PATH']}"
    return env


def initd_argv(host: str, action: str, *options: str) -> list[str]:
    return [str(INITD[role_of(host)]), action, *options]


def initd(host: str, action: str, *options: str, config: Path = CONFIG,
          path_prefix: str | None = None) -> Done:
    return run_on(host, initd_argv(host, action, *options),
                  lvs_env(host, config, path_prefix))


def initd_many(hosts: Iterable[str], action: str, *options: str,
               config: Path = CONFIG) -> dict[str, Done]:
    hosts = list(hosts)
    done = run_parallel([(h, initd_argv(h, action, *options), lvs_env(h, config))
                         for h in hosts])
    return dict(zip(hosts, done))


def unit_command(role: str, key: str) -> list[str]:
    """ExecStart/ExecReload/ExecStop of systemd/lvs-ROLE.service, exactly, with the
    venv's bin for the bare program name (systemd finds it where pipx put it)."""
    for line in UNITS[role].read_text().splitlines():
        if line.startswith(f"{key}="):
            argv = shlex.split(line.split("=", 1)[1])
            assert argv[0] == f"lvs-{role}", line
            return [str(VENV_BIN / argv[0]), *argv[1:]]
    raise AssertionError(f"{UNITS[role]} has no {key}=")


def state_file(host: str) -> Path:
    return RUN_ROOT / host / "state" / f"{program_of(host)}.json"


def lock_file(host: str) -> Path:
    return RUN_ROOT / host / "lock" / program_of(host)


def read_state(host: str) -> dict[str, object] | None:
    path = state_file(host)
    return json.loads(path.read_text()) if path.exists() else None


# --- config variants ---------------------------------------------------------------------------

def write_config(path: Path, reals: Sequence[str] = ("rs1", "rs2", "rs3", "rs4"),
                 weights: Mapping[str, int] | None = None, drain_seconds: int = 5,
                 tcp_timeout: int = 30, tcpfin_timeout: int = 5) -> Path:
    """examples/lab-dr.toml with other real servers, weights, drain time or timeouts."""
    weights = {**WEIGHTS, **(weights or {})}
    real_lines = "".join(f'  {{ address = "{REALS[name]}", weight = {weights[name]} }},\n'
                         for name in reals)
    path.write_text(f"""\
[director]
interface = "eth0"
gateway = "{GATEWAY}"
timeouts = {{ tcp = {tcp_timeout}, tcpfin = {tcpfin_timeout}, udp = 60 }}
arping_count = 2

[realserver]
arp_interfaces = ["eth0"]

[[service]]
vip = "{VIP}"
port = 80
protocol = "tcp"
scheduler = "wrr"
forwarding = "dr"
drain_seconds = {drain_seconds}
real = [
{real_lines}]
""")
    return path


def expected_save(reals: Sequence[str] = ("rs1", "rs2", "rs3", "rs4"),
                  weights: Mapping[str, int] | None = None) -> list[str]:
    """`ipvsadm -S -n` of our service, as the kernel lists it (in the order added)."""
    weights = {**WEIGHTS, **(weights or {})}
    return [SERVICE] + [f"-a -t {VIP}:80 -r {REALS[name]}:80 -g -w {weights[name]}"
                        for name in reals]


# --- looking at the hosts ----------------------------------------------------------------------

def ipvs_save(host: str = "director") -> list[str]:
    return sh(host, "ipvsadm -S -n").splitlines()


def service_lines(save: list[str], port: int = 80) -> list[str]:
    """The lines of one service of `ipvsadm -S -n` (its -A and its -a lines)."""
    return [line for line in save if f" {VIP}:{port} " in f"{line} "]


def snapshot(host: str) -> str:
    """Everything start could change on HOST, in one process: compared before/after."""
    return sh(host, "ipvsadm -S -n; echo --; ipvsadm -L --timeout; echo --; "
                    "ip -o addr show; echo --; ip -o link show; echo --; ip route show; "
                    f"echo --; sysctl {' '.join(ARP_KEYS)}")


def sysctls(host: str) -> dict[str, int]:
    out = sh(host, f"sysctl -n {' '.join(ARP_KEYS)}").split()
    return dict(zip(ARP_KEYS, map(int, out)))


def link_flags(host: str) -> dict[str, set[str]]:
    """`ip -o link show`: the flags of every interface (UP, LOWER_UP, ...)."""
    flags = {}
    for line in sh(host, "ip -o link show").splitlines():
        match = re.match(r"\d+:\s+([^:@]+)[^:]*:\s+<([^>]*)>", line)
        if match:
            flags[match.group(1)] = set(match.group(2).split(","))
    return flags


def addresses(host: str, device: str) -> list[str]:
    return re.findall(r"inet6? (\S+)", sh(host, f"ip -o addr show dev {device}"))


def mac_of(host: str, device: str = "eth0") -> str:
    return sh(host, f"cat /sys/class/net/{device}/address").strip()


def parse_stats(text: str) -> dict[str, Stats]:
    """`ipvsadm -L -n --stats --exact` through lvs_scripts.probes.parse_ipvs_stats, keyed
    "tcp VIP:PORT" for a service and "VIP:PORT -> RIP:PORT" for each of its real servers."""
    from lvs_scripts.model import endpoint
    from lvs_scripts.probes import parse_ipvs_stats

    found: dict[str, Stats] = {}
    for key, (totals, dests) in parse_ipvs_stats(text).items():
        found[str(key)] = totals
        for (address, port), numbers in dests.items():
            found[f"{key.args()[1]} -> {endpoint(address, port)}"] = numbers
    return found


def stats(host: str = "director", conns: int | None = None,
          settle: bool = False) -> dict[str, Stats]:
    """The kernel (6.1) folds its per-CPU counters into what ipvsadm reads only every 2 s,
    in the rate estimator's timer. With conns, wait until the service shows that many
    connections; with settle, wait 2.5 s first, for numbers that include all traffic so far.
    """
    if settle:
        time.sleep(2.5)

    def read() -> dict[str, Stats] | None:
        found = parse_stats(sh(host, "ipvsadm -L -n --stats --exact"))
        service = found.get(f"tcp {VIP}:80")
        return found if conns is None or (service and service.conns == conns) else None

    return dict(wait_for(read, 10, what=f"{conns} connections in ipvsadm's statistics"))


def active_inactive(host: str = "director") -> dict[str, tuple[int, int]]:
    from lvs_scripts.probes import parse_ipvs_list

    table = parse_ipvs_list(sh(host, "ipvsadm -L -n"))
    return {str(address): (c.active, c.inactive)
            for key, dests in table.items() if str(key) == f"tcp {VIP}:80"
            for (address, _port), c in dests.items()}


def connection_destination(client_port: int, host: str = "director") -> str | None:
    """Which real server IPVS gave the client's connection from 10.0.0.1:PORT to
    (`ipvsadm -L -n -c`: pro expire state source virtual destination)."""
    for line in sh(host, "ipvsadm -L -n -c").splitlines():
        tokens = line.split()
        if len(tokens) == 6 and tokens[3] == f"10.0.0.1:{client_port}":
            return tokens[5].rsplit(":", 1)[0]
    return None


def parse_arping(text: str) -> tuple[int, list[str]]:
    """iputils arping: (probes sent, the MAC of every reply). A reply line reads
    `Unicast reply from 192.168.30.254 [02:00:C0:A8:1E:69]  0.870ms`."""
    sent = re.search(r"^Sent (\d+) probe", text, re.MULTILINE)
    macs = re.findall(r"^(?:Unicast|Broadcast) reply from \S+ \[([0-9A-Fa-f:]{17})\]", text,
                      re.MULTILINE)
    return int(sent.group(1)) if sent else 0, [mac.lower() for mac in macs]


def neighbour_mac(host: str, address: str) -> str | None:
    match = re.search(r"lladdr ([0-9a-f:]{17})", sh(host, f"ip neigh show {address}"))
    return match.group(1) if match else None


def curl_vip(count: int) -> list[str]:
    """COUNT requests from the client, each on a new connection (Connection: close), in one
    curl: `?[1-N]` makes N URLs. Returns the page of each: the name of the real server."""
    done = run_on("client", ["curl", "-s", "--connect-timeout", "5", "--max-time", "5",
                             "-H", "Connection: close", f"http://{VIP}/?[1-{count}]"])
    return done.stdout.split()


# --- set-up by hand (for tests that are about the director only) -------------------------------

def realservers_by_hand(names: Iterable[str]) -> None:
    """What lvs-realserver start does, done by hand as lab/scenario_manual.sh does: for the
    tests about the director, where a CLI call per real server would only cost time."""
    quiet = " ".join(f"{key}={value}" for key, value in zip(ARP_KEYS, (1, 2, 1, 2)))
    script = f"sysctl -q -w {quiet}; ip addr add {VIP}/32 dev lo"
    procs = [subprocess.Popen(in_ns(name, ["sh", "-ec", script])) for name in names]
    for proc in procs:
        assert proc.wait(timeout=60) == 0


def reset() -> None:
    """Back to the bare topology, whatever a test left: no IPVS rules, no VIPs, kernel
    default timeouts and ARP settings, no state or lock files, no ARP cache on the router.

    The director gets a new namespace: `ipvsadm -C` deletes the services but not the
    connection entries, which live on for their timeout (an idle ESTABLISHED one for
    `tcp`, 300 s in the reload tests). IPVS also keeps each deleted real server while a
    connection points to it, and gives it back, counters and all, when the same real
    server is added to the same VIP:port again: a later test then saw ActiveConn 2 for
    its one connection. A new namespace starts with an empty connection table.
    """
    rs = " ".join(REALS)
    zeros = " ".join(f"{key}=0" for key in ARP_KEYS)
    script = f"""
bash {TOPOLOGY} renew director >/dev/null
for h in {rs}; do
    ip -n $h addr del {VIP}/32 dev lo 2>/dev/null || true
    ip -n $h link set lo up
    ip netns exec $h sysctl -q -w {zeros}
done
ip -n router neigh flush dev {ROUTER_LAN}
rm -rf {RUN_ROOT}
"""
    subprocess.run(["bash", "-ec", script], check=True, timeout=120)
    left = sh("director", "ipvsadm -L -n -c").splitlines()[2:]  # after the two header lines
    assert left == [], f"connections left in the new director namespace: {left}"


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Holder:
    """tests/e2e/holder.py running on the client: connections opened now, used later."""

    def __init__(self) -> None:
        import sys

        self.proc = subprocess.Popen(in_ns("client", [sys.executable, str(HOLDER)]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, line: str) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{line}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"holder.py ended without answering {line!r}"
        return dict(json.loads(answer))

    def open(self, name: str) -> int:
        """Connect to the VIP; the client's port, to find the connection in IPVS."""
        return int(str(self._ask(f"open {name}")["port"]))

    def send(self, name: str, seconds: float) -> dict[str, object]:
        return self._ask(f"send {name} {seconds}")

    def close(self) -> None:
        quit_helper(self.proc)


def quit_helper(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """End a helper the test talks to on its stdin (holder.py, the clients): "quit", then
    killed if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.write("quit\n")
        proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FailoverClient:
    """ha_client.py on the client namespace (a held connection and new ones, to VIP:PORT
    every `every` seconds), its records collected as they come: the failover tests'
    (test_lab_ha.py, test_lab_bgp.py)."""

    def __init__(self, vip: str = VIP, port: int = 8080, every: float = 0.2) -> None:
        import sys
        import threading

        self.proc = subprocess.Popen(
            in_ns("client", [sys.executable, str(FAILOVER_CLIENT), vip, str(port),
                             str(every)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.records: list[dict[str, object]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.records.append(json.loads(line))

    def port(self) -> int:
        hello = wait_for(lambda: [r for r in self.records if r["kind"] == "hello"], 30,
                         0.1, "the client's held connection")
        return int(hello[0]["port"])

    def after(self, kind: str, since: float) -> list[dict[str, object]]:
        return [r for r in list(self.records) if r["kind"] == kind
                and float(str(r["sent"])) >= since]

    def first_ok(self, kind: str, since: float) -> float | None:
        ok = [float(str(r["done"])) for r in self.after(kind, since) if r["ok"]]
        return min(ok) if ok else None

    def failures(self, kind: str, since: float, until: float = float("inf")
                 ) -> list[dict[str, object]]:
        return [r for r in self.after(kind, since)
                if float(str(r["sent"])) < until and not r["ok"]]

    def held_by(self) -> set[object]:
        """The real servers that answered the held connection (one, if it kept its own)."""
        return {r["who"] for r in self.after("held", 0.0) if r["ok"]}

    def close(self) -> None:
        quit_helper(self.proc)


# A service some other tool (keepalived, kube-proxy, a person) owns, on our VIP.
FOREIGN = [f"-A -t {VIP}:8080 -s rr", f"-a -t {VIP}:8080 -r {REALS['rs1']}:8080 -g -w 1"]


def add_foreign_service() -> None:
    sh("director", "; ".join(f"ipvsadm {line}" for line in FOREIGN))
