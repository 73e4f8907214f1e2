"""lvs-director with fwmark services, ipvsadm's other options and [director.sysctl], run as
a user runs it against the emulated machine (tests/fakes, with the fake nft): start,
nothing to do, status, drift, conflicts, what the host lacks, and stop leaving the host
exactly as it was."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fakehost import FakeHost

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="real runs exit 4 without root; run as root (make test)")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[director]
interface = "eth0"
arping_count = 0

[director.sysctl]
sloppy_tcp = true
expire_nodest_conn = 1

[[service]]
fwmark = 1
match = [ { vip = "192.168.30.254", port = 80 }, { vip = "192.168.30.254", port = 443 } ]
scheduler = "rr"
persistence = 300
persistence_netmask = 24
real = [ { address = "192.168.30.111", upper = 1 }, { address = "192.168.30.112" } ]

[[service]]
vip = "192.168.30.253"
port = 5060
protocol = "udp"
scheduler = "sh"
scheduler_flags = ["sh-port"]
persistence = 60
persistence_engine = "sip"
one_packet = true
forwarding = "nat"
real = [ { address = "192.168.30.111", port = 5070 } ]
"""
TABLE = """\
table ip lvs_scripts {
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tip daddr 192.168.30.254 tcp dport 80 meta mark set 0x00000001
\t\tip daddr 192.168.30.254 tcp dport 443 meta mark set 0x00000001
\t}
}
"""
SAVE = """\
-A -u 192.168.30.253:5060 -s sh -p 60 --pe sip -o -b sh-port
-a -u 192.168.30.253:5060 -r 192.168.30.111:5070 -m -w 1
-A -f 1 -s rr -p 300 -M 255.255.255.0
-a -f 1 -r 192.168.30.111:0 -g -w 1
-a -f 1 -r 192.168.30.112:0 -g -w 1
"""


class Director:
    def __init__(self, host: FakeHost, tmp: Path, config: str = CONFIG) -> None:
        self.host = host
        self.config = tmp / "lvs.toml"
        self.config.write_text(config)
        (tmp / "run").mkdir(mode=0o755)
        self.env = {**host.env, "LVS_STATE_DIR": str(tmp / "run"),
                    "LVS_LOCK_DIR": str(tmp / "lock"), "LVS_SYSLOG": "0"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "bin" / "lvs-director"), "-c", str(self.config),
                               *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)

    def out(self, *args: str) -> str:
        return self.host.cmd(*args).stdout

    def kernel(self) -> dict[str, Any]:
        """Everything start may change: addresses, routes, sysctls (ip_vs's own keys once
        it is loaded included), the IPVS table, nftables."""
        st = self.host.state()
        return {key: st.get(key) for key in ("interfaces", "routes", "sysctl", "ipvs", "nft")}


@pytest.fixture
def director(fakehost: FakeHost, tmp_path: Path) -> Director:
    fakehost.cmd("ipvsadm", "-L", "-n")  # ip_vs loaded, so that its sysctls exist before
    return Director(fakehost, tmp_path)


def test_start_marks_creates_the_services_sets_sysctls_and_stop_undoes_all(
        director: Director) -> None:
    before = director.kernel()
    before["nft"] = before["nft"] or {"tables": []}
    started = director("start")
    assert started.returncode == 0, started.stderr
    assert director.out("nft", "list", "table", "ip", "lvs_scripts") == TABLE
    assert director.out("ipvsadm", "-S", "-n") == SAVE
    assert director.out("sysctl", "-n", "net.ipv4.vs.sloppy_tcp", "net.ipv4.vs.expire_nodest_conn",
                        "net.ipv4.ip_forward") == "1\n1\n1\n"
    assert "192.168.30.254/32" in director.out("ip", "-o", "addr", "show", "dev", "eth0")
    again = director("start")
    assert (again.returncode, again.stdout) == (0, "lvs-director start: nothing to do\n")
    status = director("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "marks tcp 192.168.30.254 port 443  (marked by nftables table ip lvs_scripts)" in (
        status.stdout)
    stopped = director("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert director.kernel() == before


def test_drift_in_marks_options_and_thresholds_is_seen_and_repaired(director: Director) -> None:
    assert director("start").returncode == 0
    director.host.cmd("nft", "delete", "table", "ip", "lvs_scripts")
    director.host.cmd("ipvsadm", "-E", "-u", "192.168.30.253:5060", "-s", "sh", "-p", "60")
    director.host.cmd("ipvsadm", "-e", "-f", "1", "-r", "192.168.30.111", "-g", "-w", "1")
    status = director("status")
    assert status.returncode == 150, status.stdout
    assert "NOT MARKED" in status.stdout
    assert "nft -f /proc/self/fd/0" in status.stdout
    assert "ipvsadm -E -u 192.168.30.253:5060 -s sh -p 60 --pe sip -o -b sh-port" in status.stdout
    assert "ipvsadm -e -f 1 -r 192.168.30.111:0 -g -w 1 -x 1" in status.stdout
    repaired = director("reload")
    assert repaired.returncode == 0, repaired.stderr
    assert director("status").returncode == 0
    assert director.out("ipvsadm", "-S", "-n") == SAVE
    assert director.out("nft", "list", "table", "ip", "lvs_scripts") == TABLE


def test_a_table_of_our_name_made_by_someone_else_is_a_conflict_and_survives_stop(
        director: Director) -> None:
    director.host.cmd("nft", "-f", "-", stdin="create table ip lvs_scripts\n")
    started = director("start")
    assert started.returncode == 1
    assert "nftables table ip lvs_scripts is held by someone else" in started.stderr
    assert director("status").returncode == 150
    assert director("stop").returncode == 0
    assert director.out("nft", "list", "tables") == "table ip lvs_scripts\n"


def test_nft_missing_is_exit_5_before_anything_runs(director: Director) -> None:
    director.host.remove_tool("nft")
    director.host.clear_calls()
    started = director("start")
    assert started.returncode == 5, started.stderr
    assert "nft not found" in started.stderr and "apt-get install nftables" in started.stderr
    changing = [argv for argv in director.host.argvs()
                if argv[:2] not in (["ip", "-o"], ["ipvsadm", "-S"], ["sysctl", "-n"],
                                    ["ipvsadm", "-L"], ["arping", "-V"])]
    assert changing == []


def test_a_config_without_fwmark_services_never_runs_nft(fakehost: FakeHost,
                                                         tmp_path: Path) -> None:
    plain = Director(fakehost, tmp_path, CONFIG.split("[[service]]", maxsplit=1)[0] + """
[[service]]
vip = "192.168.30.254"
port = 80
real = [ { address = "192.168.30.111" } ]
""")
    fakehost.remove_tool("nft")
    assert plain("start").returncode == 0
    assert plain("stop").returncode == 0
    assert not [argv for argv in fakehost.argvs() if argv[0] == "nft"]


def test_a_scheduler_the_kernel_cannot_load_is_exit_5_with_the_fix(director: Director) -> None:
    """Where /lib/modules cannot tell (the lab's guest), the kernel refuses the rule with
    "Scheduler or persistence engine not found" (captured): still LSB 5, saying what to do."""
    with director.host.edit() as st:
        st["ipvs"]["schedulers"] = [s for s in st["ipvs"]["schedulers"] if s != "sh"]
    started = director("start")
    assert started.returncode == 5, started.stderr
    assert "Scheduler or persistence engine not found" in started.stderr
    assert "load it (modprobe), or choose one this kernel has" in started.stderr
