"""TUN, NAT and IPv6 DR on the real kernel (issue 12), each through the CLI on both sides
from one shared file, with real traffic from the client:

- TUN (ipip, gue and gre, each with an IPv4 VIP and with an IPv6 one: ip6ip6, GUE over
  IPv6, ip6gre) with the real servers far1 and far2 in a subnet of their own behind the
  router: the requests are answered by both, and the replies bypass the director
  (OutPkts 0). far1 starts with strict reverse-path filtering, which start must loosen
  (the decapsulated packets would be dropped) and stop put back;
- NAT with rs1 and rs2: answered through the director (OutPkts > 0), the real servers'
  default routes back to the router after stop;
- IPv6 DR: a v6 client reaches the VIP; the director's start announces it (the router's
  stale neighbour entry is corrected), and only the director answers neighbour
  solicitations for it.

After stop every namespace involved is exactly as before start: addresses, routes (v4
and v6), links, the sysctls start may touch, GUE ports, the IPVS table.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import labhosts
from tests.e2e.labhosts import (
    LAB_ONLY,
    RUN_ROOT,
    TOPOLOGY,
    VENV_BIN,
    Done,
    lvs_env,
    mac_of,
    parse_stats,
    run_on,
    run_parallel,
    sh,
    wait_for,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

VIP = labhosts.VIP
VIP6 = "fd00:30::254"
FAR = {"far1": "172.16.40.111", "far2": "172.16.40.112"}
SYSCTLS = r"rp_filter|arp_ignore|arp_announce|ndisc_notify|\.forwarding|ip_forward|" \
          r"send_redirects|accept_redirects"


@pytest.fixture(scope="module")
def modes(topology: None) -> Iterator[None]:
    """The far subnet and IPv6, once for this module (on top of the session's topology)."""
    if subprocess.run(["ip", "netns", "pids", "far1"], capture_output=True,
                      check=False).returncode != 0:
        subprocess.run(["bash", str(TOPOLOGY), "far", "2"], check=True, timeout=120)
    yield


@pytest.fixture
def clean(modes: None) -> None:
    """labhosts.reset(), the far hosts renewed, IPv6 back on the renewed director."""
    labhosts.reset()
    for host in FAR:
        subprocess.run(["bash", str(TOPOLOGY), "renew", host], check=True, timeout=120)
    subprocess.run(["bash", str(TOPOLOGY), "ipv6"], check=True, timeout=120)
    sh("router", "ip -6 neigh flush dev eth1; ip neigh flush dev eth2")


def snapshot(host: str) -> str:
    """What start may change on HOST, in one process."""
    return sh(host, "ipvsadm -S -n; echo --; ip -o addr show; echo --; ip -o link show | "
                    "sed 's/ link-netns.*//'; echo --; ip route show; echo --; ip -6 route show;"
                    f" echo --; sysctl -a 2>/dev/null | grep -E '{SYSCTLS}'; echo --; "
                    "ip fou show 2>/dev/null || true")


def cli(hosts: list[str], action: str, config: Path) -> list[Done]:
    done = run_parallel([(h, [str(VENV_BIN / labhosts.program_of(h)), "-v", action],
                          lvs_env(h, config)) for h in hosts])
    for result in done:
        assert result.returncode == 0, str(result)
    return done


def write(path: Path, forwarding: str, reals: list[str], extra: str = "",
          vip: str = VIP, head: str = "") -> Path:
    real = "".join(f'  {{ address = "{r}" }},\n' for r in reals)
    path.write_text(f"""\
[director]
interface = "eth0"
arping_count = 1
{head}
[realserver]
arp_interfaces = ["eth0"]

[[service]]
vip = "{vip}"
port = 80
scheduler = "rr"
forwarding = "{forwarding}"
{extra}
real = [
{real}]
""")
    return path


def curl(url: str, count: int) -> list[str]:
    """COUNT requests from the client, one connection each; the page of each answer."""
    urls = [f"{url}?{i}" for i in range(count)]
    done = run_on("client", ["curl", "-g", "-s", "--connect-timeout", "5", "--max-time", "5",
                             "-H", "Connection: close", *urls])
    return done.stdout.split()


def service_stats(key: str, conns: int) -> labhosts.Stats:
    """The service's counters once the kernel shows `conns` connections (they are folded
    in every 2 s) and its packet counters have caught up with them."""
    def read() -> labhosts.Stats | None:
        found = parse_stats(sh("director", "ipvsadm -L -n --stats --exact")).get(key)
        return found if found is not None and found.conns >= conns and found.inpkts else None

    return wait_for(read, 15, what=f"{conns} connections on {key}")  # type: ignore[no-any-return]


FAR6 = {"far1": "fd00:40::111", "far2": "fd00:40::112"}


@pytest.mark.parametrize(("extra", "family", "device"), [
    ("", 4, "tunl0"),
    ('tun_type = "gue"\ntun_port = 6080', 4, "tunl0"),
    ('tun_type = "gre"', 4, "gre0"),
    ("", 6, "ip6tnl0"),
    ('tun_type = "gue"\ntun_port = 6080', 6, "ip6tnl0"),
    ('tun_type = "gre"', 6, "ip6gre0"),
], ids=["ipip", "gue", "gre", "ipip-ipv6", "gue-ipv6", "gre-ipv6"])
def test_tun_real_servers_behind_the_router(clean: None, configs: Path, extra: str,
                                            family: int, device: str) -> None:
    """IPv6 (ip6ip6): the director's VIP must not be the outer header's source (the real
    servers hold the VIP and ip6_tunnel drops a packet from a local address): start adds
    it deprecated, and the requests are answered."""
    vip, reals = (VIP, FAR) if family == 4 else (VIP6, FAR6)
    config = write(configs / "tun.toml", "tun", list(reals.values()), extra, vip=vip)
    sh("far1", "sysctl -q -w net.ipv4.conf.all.rp_filter=1")  # strict: drops decapsulated
    hosts = ["director", *FAR]
    before = {h: snapshot(h) for h in hosts}
    cli(hosts, "start", config)
    if family == 4:
        assert sh("far1", "sysctl -n net.ipv4.conf.all.rp_filter").strip() == "2"
    assert vip in sh("far1", f"ip -o addr show dev {device}")
    host = vip if family == 4 else f"[{vip}]"
    answers = curl(f"http://{host}/", 6)
    assert sorted(answers) == ["far1"] * 3 + ["far2"] * 3
    stats = service_stats(f"tcp {host}:80", 6)
    assert stats.inpkts > 0 and stats.outpkts == 0  # the replies went round the director
    status = run_on("far1", [str(VENV_BIN / "lvs-realserver"), "status"],
                    lvs_env("far1", config))
    assert status.returncode == 0, str(status)
    cli(hosts, "stop", config)
    assert {h: snapshot(h) for h in hosts} == before


def test_nat_answers_through_the_director(clean: None, configs: Path) -> None:
    """rs1 and rs2 route their replies via the director. Its ip_forward (and, with the
    real servers in its own subnet, send_redirects = 0: else it tells them to use the
    router directly) are the director's side, set here by hand."""
    config = write(configs / "nat.toml", "nat", [labhosts.REALS["rs1"], labhosts.REALS["rs2"]],
                   head='dip = "192.168.30.105/24"\ndip_interface = "eth0"')
    sh("director", "sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 "
                   "net.ipv4.conf.eth0.send_redirects=0")
    hosts = ["director", "rs1", "rs2"]
    before = {h: snapshot(h) for h in hosts}
    cli(hosts, "start", config)
    for host in ("rs1", "rs2"):
        assert sh(host, "ip route show default").split()[:3] == ["default", "via",
                                                                 "192.168.30.105"]
    answers = curl(f"http://{VIP}/", 4)
    assert sorted(answers) == ["rs1", "rs1", "rs2", "rs2"]
    stats = service_stats(f"tcp {VIP}:80", 4)
    assert stats.outpkts > 0  # the replies came back through the director
    cli(hosts, "stop", config)
    for host in ("rs1", "rs2"):
        assert sh(host, "ip route show default").split()[:3] == ["default", "via",
                                                                 labhosts.GATEWAY]
    assert {h: snapshot(h) for h in hosts} == before


def test_ipv6_dr_only_the_director_answers_for_the_vip(clean: None, configs: Path) -> None:
    config = write(configs / "v6.toml", "dr", ["fd00:30::111", "fd00:30::112"], vip=VIP6)
    # An old owner of the VIP in the router's cache: start must correct it.
    sh("router", f"ip -6 neigh replace {VIP6} lladdr 02:00:de:ad:be:ef dev eth1 nud stale")
    hosts = ["director", "rs1", "rs2"]
    before = {h: snapshot(h) for h in hosts}
    cli(hosts, "start", config)
    director_mac = mac_of("director")

    def announced() -> bool:
        return director_mac in sh("router", f"ip -6 neigh show {VIP6}")

    # The unsolicited neighbour advertisement leaves once DAD is over (about a second).
    wait_for(announced, 10, what="the router to learn the VIP from the director's NA")
    answers = curl(f"http://[{VIP6}]/", 4)
    assert sorted(answers) == ["rs1", "rs1", "rs2", "rs2"]
    stats = service_stats(f"tcp [{VIP6}]:80", 4)
    assert stats.inpkts > 0 and stats.outpkts == 0
    solicited = run_on("router", ["ndisc6", "-m", "-n", "-r", "3", "-w", "500", VIP6, "eth1"])
    macs = re.findall(r"Target link-layer address: (\S+)", solicited.stdout)
    assert macs and {m.lower() for m in macs} == {director_mac}, solicited.stdout
    cli(hosts, "stop", config)
    assert {h: snapshot(h) for h in hosts} == before
    assert not (RUN_ROOT / "director" / "state" / "lvs-director.json").exists()
