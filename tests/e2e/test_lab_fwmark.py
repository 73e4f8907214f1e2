"""Issue 12 on the real kernel: a fwmark service (nftables marks ports 80 and 443 of one
VIP, one persistent IPVS service), its health check (port 80 speaks for both ports),
connection thresholds, and stop leaving the director exactly as it was (addresses,
routes, links, sysctls, the nftables ruleset).

Everything through the CLI, the director and the real servers from one shared file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.labhosts import (
    BY_ADDRESS,
    GATEWAY,
    LAB_ONLY,
    REALS,
    VENV_BIN,
    VIP,
    Done,
    Holder,
    connection_destination,
    in_ns,
    lvs_env,
    realservers_by_hand,
    run_on,
    run_parallel,
    sh,
    wait_for,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

FWMARK_CONFIG = f"""\
[director]
interface = "eth0"
gateway = "{GATEWAY}"
arping_count = 0

[director.sysctl]
expire_nodest_conn = 1

[[service]]
fwmark = 1
match = [ {{ vip = "{VIP}", port = 80, protocol = "tcp" }},
          {{ vip = "{VIP}", port = 443, protocol = "tcp" }} ]
scheduler = "rr"
persistence = 300
real = [ {{ address = "{REALS['rs1']}" }}, {{ address = "{REALS['rs2']}" }} ]
"""

THRESHOLD_CONFIG = f"""\
[director]
interface = "eth0"
gateway = "{GATEWAY}"
arping_count = 0

[[service]]
vip = "{VIP}"
port = 80
scheduler = "rr"
real = [ {{ address = "{REALS['rs1']}", upper = 1 }}, {{ address = "{REALS['rs2']}" }} ]
"""


def cli(host: str, action: str, config: Path) -> Done:
    program = "lvs-director" if host == "director" else "lvs-realserver"
    return run_on(host, [str(VENV_BIN / program), action], lvs_env(host, config))


def director_snapshot() -> str:
    """What start may change on the director, nftables and the IPVS sysctls included."""
    return sh("director", "ipvsadm -S -n; echo --; ip -o addr show; echo --; "
                          "ip -o link show; echo --; ip route show; echo --; "
                          "sysctl net.ipv4.vs.expire_nodest_conn net.ipv4.ip_forward; echo --; "
                          "nft list ruleset")


def serve_443(names: tuple[str, ...]) -> None:
    """A second web server on each real server (plain HTTP on 443: the point is the
    port, not TLS), saying which real server it is, like the one on port 80."""
    for name in names:  # once per session: the real servers' namespaces are not renewed
        sh(name, "busybox netstat -ltn | grep -q ':443 ' || "
                 f"busybox httpd -p 443 -h /run/lab-www/{name}")


def who_answers(port: int, count: int) -> list[str]:
    done = run_on("client", ["curl", "-s", "--connect-timeout", "5", "--max-time", "5",
                             "-H", "Connection: close", f"http://{VIP}:{port}/?[1-{count}]"])
    return done.stdout.split()


def test_fwmark_service_keeps_a_client_on_one_real_server_across_ports(
        fresh: None, configs: Path) -> None:
    config = configs / "fwmark.toml"
    config.write_text(FWMARK_CONFIG)
    before = director_snapshot()
    serve_443(("rs1", "rs2"))
    started = run_parallel([(h, [str(VENV_BIN / ("lvs-director" if h == "director" else
                                                  "lvs-realserver")), "start"],
                             lvs_env(h, config)) for h in ("director", "rs1", "rs2")])
    for done in started:
        assert done.returncode == 0, done
    table = sh("director", "nft list table ip lvs_scripts")
    assert f"ip daddr {VIP} tcp dport 80 meta mark set 0x00000001" in table
    assert f"ip daddr {VIP} tcp dport 443 meta mark set 0x00000001" in table
    assert sh("director", "ipvsadm -S -n").splitlines()[0] == "-A -f 1 -s rr -p 300"
    assert f"{VIP}/32" in sh("rs1", "ip -o addr show dev lo")

    answers = who_answers(80, 3) + who_answers(443, 3) + who_answers(80, 2)
    assert len(answers) == 8, answers
    assert len(set(answers)) == 1 and answers[0] in ("rs1", "rs2"), answers
    status = cli("director", "status", config)
    assert status.returncode == 0, status
    assert "marked by nftables table ip lvs_scripts" in status.stdout

    stopped = run_parallel([(h, [str(VENV_BIN / ("lvs-director" if h == "director" else
                                                  "lvs-realserver")), "stop"],
                             lvs_env(h, config)) for h in ("director", "rs1", "rs2")])
    for done in stopped:
        assert done.returncode == 0, done
    assert director_snapshot() == before
    assert f"{VIP}/32" not in sh("rs1", "ip -o addr show dev lo")


def test_upper_threshold_one_takes_no_second_concurrent_connection(
        fresh: None, configs: Path, holder: Holder) -> None:
    config = configs / "thresholds.toml"
    config.write_text(THRESHOLD_CONFIG)
    realservers_by_hand(("rs1", "rs2"))
    before = director_snapshot()
    done = cli("director", "start", config)
    assert done.returncode == 0, done
    listing = sh("director", "ipvsadm -L -n --thresholds")
    assert f"-> {REALS['rs1']}:80" in listing

    ports = [holder.open(f"c{i}") for i in range(4)]
    where = [wait_for(lambda p=port: connection_destination(p), 10,
                      what=f"the connection from port {port} in IPVS") for port in ports]
    names = [BY_ADDRESS[address] for address in where]
    # round robin alone would give rs1 two of the four; upper = 1 keeps it at one
    assert names.count("rs1") == 1, names
    assert names.count("rs2") == 3, names

    status = cli("director", "status", config)
    assert status.returncode == 0, status  # -x read back from --thresholds: no drift
    holder.close()
    stopped = cli("director", "stop", config)
    assert stopped.returncode == 0, stopped
    assert director_snapshot() == before


CHECKED_CONFIG = FWMARK_CONFIG.replace("persistence = 300\n", "") + """
[service.check]
type = "http"
port = 80
interval = 1
timeout = 0.5
rise = 1
fall = 1
"""
BLOCK_80 = ("nft add table inet lab_block; nft add chain inet lab_block input '{ type filter "
            "hook input priority 0; }'; nft add rule inet lab_block input tcp dport 80 drop")


def fwmark_weights() -> dict[str, int]:
    """The weights of the -f 1 service's real servers, by name."""
    weights = {}
    for line in sh("director", "ipvsadm -S -n").splitlines():
        words = line.split()
        if words[:3] == ["-a", "-f", "1"]:
            weights[BY_ADDRESS[words[4].rsplit(":", 1)[0]]] = int(words[words.index("-w") + 1])
    return weights


def test_fwmark_service_checked_on_port_80_is_out_for_443_too(
        fresh: None, configs: Path) -> None:
    """The watcher checks rs2 on port 80 only; when its port 80 stops answering, rs2 is
    at weight 0 in the -f service, and the client's requests to 443 (still served by
    rs2's other web server) go to rs1 alone."""
    config = configs / "fwmark-checked.toml"
    config.write_text(CHECKED_CONFIG)
    serve_443(("rs1", "rs2"))
    realservers_by_hand(("rs1", "rs2"))
    before = director_snapshot()
    assert cli("director", "start", config).returncode == 0
    log = configs / "watch.log"
    with log.open("w") as out:
        watcher = subprocess.Popen(in_ns("director", [str(VENV_BIN / "lvs-director"), "watch"],
                                         {**lvs_env("director", config), "LVS_SYSLOG": "0"}),
                                   stdout=out, stderr=out)
    try:
        wait_for(lambda: "watch: checking 2 real server(s)" in log.read_text(), 60,
                 what="the watcher checking")
        assert sorted(who_answers(443, 4)) == ["rs1", "rs1", "rs2", "rs2"]
        sh("rs2", BLOCK_80)
        try:
            wait_for(lambda: fwmark_weights() == {"rs1": 1, "rs2": 0}, 60,
                     what="rs2 at weight 0 in the -f service")
        except AssertionError as err:
            raise AssertionError(f"{err}; the watcher said:\n{log.read_text()}") from None
        assert f"fwmark 1->{REALS['rs2']}:80 unknown -> down" in log.read_text() or \
            f"fwmark 1->{REALS['rs2']}:80 up -> down" in log.read_text(), log.read_text()
        assert who_answers(443, 4) == ["rs1"] * 4
        sh("rs2", "nft delete table inet lab_block")
        wait_for(lambda: fwmark_weights() == {"rs1": 1, "rs2": 1}, 60,
                 what="rs2 back at its weight")
    finally:
        watcher.terminate()
        watcher.wait(timeout=60)
        run_on("rs2", ["nft", "delete", "table", "inet", "lab_block"])  # if still there
    assert cli("director", "stop", config).returncode == 0
    assert director_snapshot() == before
