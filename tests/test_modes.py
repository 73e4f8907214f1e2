"""TUN, NAT and IPv6 on both roles: the config keys and their rules, the planners' exact
commands (data tables), the parsers of what the tools print, and whole runs of the CLI
against a fake host, start then stop, leaving it as it was."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.config import parse_config
from lvs_scripts.errors import ConfigError, TunnelModuleMissing
from lvs_scripts.model import Config
from lvs_scripts.owned import (
    OwnedAddress,
    OwnedFou,
    OwnedLink,
    OwnedRoute,
    OwnedService,
    OwnedSysctl,
    plan_undo,
)
from lvs_scripts.plan import Plan
from lvs_scripts.plan_director import plan_director_start
from lvs_scripts.plan_realserver import plan_realserver_start
from lvs_scripts.probes import HostObservation, parse_default_routes, parse_ipvs_save
from lvs_scripts.state import State
from lvs_scripts.tunnel import (
    FouPort,
    Tunnel,
    TunnelSeen,
    fallback_expected,
    parse_fou_show,
    parse_lsmod,
    require_kernel_tunnels,
    tunnel_from_tokens,
)
from tests.fakes.fakehost import FakeHost
from tests.hosts import addr_lines, host, link_lines

ROOT = Path(__file__).resolve().parent.parent
VIP = "192.168.30.254"
VIP6 = "fd00:30::254"


def config(forwarding: str, extra: str = "", vip: str = VIP,
           reals: tuple[str, ...] = ("172.16.40.111", "172.16.40.112"),
           head: str = "") -> Config:
    real = ", ".join(f'{{ address = "{r}" }}' for r in reals)
    return parse_config(f"""{head}
[director]
interface = "eth0"
arping_count = 0

[[service]]
vip = "{vip}"
port = 80
scheduler = "rr"
forwarding = "{forwarding}"
{extra}
real = [ {real} ]
""", "modes.toml")


# ------------------------------------------------------------------ the config keys

def test_tun_keys_become_the_real_servers_tunnel() -> None:
    gue = config("tun", 'tun_type = "gue"\ntun_port = 6080\ntun_checksum = "remcsum"')
    assert {d.tunnel for d in gue.services[0].destinations} == {Tunnel("gue", 6080, "remcsum")}
    assert config("tun").services[0].destinations[0].tunnel == Tunnel()  # ipip, none
    assert config("dr").services[0].destinations[0].tunnel is None


INVALID = [
    ('tun_type = "vxlan"', "service[0].tun_type", "must be one of: ipip, gue, gre"),
    ('tun_type = "gue"', "service[0].tun_port", "is required"),
    ('tun_type = "gue"\ntun_port = 0', "service[0].tun_port", "from 1 to 65535"),
    ('tun_port = 6080', "service[0].tun_port", 'only applies to tun_type = "gue"'),
    ('tun_type = "gre"\ntun_checksum = "remcsum"', "service[0].tun_checksum", "gue"),
    ('tun_checksum = "csum"', "service[0].tun_checksum", "IPIP has no checksum"),
    ('tun_checksum = "yes"', "service[0].tun_checksum", "none, csum, remcsum"),
]


@pytest.mark.parametrize(("extra", "key", "rule"), INVALID)
def test_bad_tun_keys_are_refused_naming_file_key_and_value(extra: str, key: str,
                                                            rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config("tun", extra)
    assert caught.value.key == key
    assert caught.value.path == "modes.toml"
    assert rule in str(caught.value)


@pytest.mark.parametrize("forwarding", ["dr", "nat"])
def test_tun_keys_outside_tun_are_refused(forwarding: str) -> None:
    with pytest.raises(ConfigError, match=r'service\[0\].tun_type = .gre.: only applies to '
                       r'forwarding = "tun"'):
        config(forwarding, 'tun_type = "gre"')


def test_nat_gateway_of_the_wrong_family_or_a_vip_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"realserver.nat_gateway = 'fd00:30::105': is IPv6 "
                       r"but service\[0\]"):
        config("nat", head='[realserver]\nnat_gateway = "fd00:30::105"\n',
               reals=("192.168.30.111",))
    with pytest.raises(ConfigError, match=r"realserver\.nat_gateway = '192\.168\.30\.254': "
                       r"is a VIP"):
        config("nat", head=f'[realserver]\nnat_gateway = "{VIP}"\n', reals=("192.168.30.111",))


def test_gue_port_that_is_also_a_udp_service_port_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"service\[0\].tun_port = 53: is also the port of "
                       "the UDP service"):
        parse_config(f"""
[[service]]
vip = "{VIP}"
port = 80
forwarding = "tun"
tun_type = "gue"
tun_port = 53
real = [ {{ address = "172.16.40.111" }} ]
[[service]]
vip = "{VIP}"
port = 53
protocol = "udp"
real = [ {{ address = "172.16.40.111" }} ]
""", "modes.toml")


def test_gre_services_of_one_family_must_agree_on_checksums() -> None:
    with pytest.raises(ConfigError, match=r'service\[1\].tun_checksum = .none.: differs from '
                       r'service\[0\] \("csum"\)'):
        parse_config(f"""
[[service]]
vip = "{VIP}"
port = 80
forwarding = "tun"
tun_type = "gre"
tun_checksum = "csum"
real = [ {{ address = "172.16.40.111" }} ]
[[service]]
vip = "{VIP}"
port = 443
forwarding = "tun"
tun_type = "gre"
real = [ {{ address = "172.16.40.111" }} ]
""", "modes.toml")


def test_creating_a_device_that_loading_its_module_may_make_is_optional() -> None:
    plan = plan_realserver_start(config("tun"), rs(fallback=None), State())
    assert [s.optional for s in plan.steps if s.argv[:3] == ("ip", "link", "add")] == [True]
    plan = plan_realserver_start(config("tun"), rs(loaded=("ipip",), fallback=None), State())
    assert [s.optional for s in plan.steps if s.argv[:3] == ("ip", "link", "add")] == [False]


def test_checksummed_gre_on_a_device_we_did_not_create_is_a_conflict() -> None:
    gre0 = TUNL0_UP.replace("tunl0", "gre0").replace("ipip", "gre")
    cfg = config("tun", 'tun_type = "gre"\ntun_checksum = "csum"')
    plan = plan_realserver_start(cfg, rs(RS_LINKS + "\n" + gre0, loaded=("ip_gre",)), State())
    assert plan.conflicts and "drops checksummed GRE" in plan.conflicts[0]
    ours = plan_realserver_start(cfg, rs(RS_LINKS + "\n" + gre0, loaded=("ip_gre",)),
                                 State.of(OwnedLink("gre0", True)))
    assert ours.conflicts == []


def test_a_nat_real_server_without_a_gateway_is_refused_before_anything_runs() -> None:
    from lvs_scripts.realserver import RealServer

    with pytest.raises(ConfigError, match=r"realserver\.nat_gateway: is required with "
                       r'forwarding = "nat"'):
        RealServer(config("nat", reals=("192.168.30.111",)))


# ------------------------------------------------------------------ what the tools print

# ipvsadm 1.31 `-S -n` as the lab's kernel (Debian's 6.1) printed it: the tunnel type
# always, the port and the checksum flag for gue and gre (lab/capture.sh, "tun").
SAVE_TUN = (ROOT / "tests" / "data" / "captured" / "ipvsadm-S-n.tun.txt")


def test_tunnel_options_are_read_back_from_ipvsadm_save() -> None:
    table = parse_ipvs_save(SAVE_TUN.read_text())
    tunnels = {f"{key.port} {d.address}": d.tunnel for key, s in table.items()
               for d in s.destinations}
    assert tunnels == {
        "80 172.16.40.111": Tunnel(), "80 172.16.40.112": Tunnel("gue", 6080),
        "81 172.16.40.111": Tunnel("gue", 6080, "csum"),
        "81 172.16.40.112": Tunnel("gue", 6081, "remcsum"),
        "82 172.16.40.111": Tunnel("gre"), "82 172.16.40.112": Tunnel("gre", None, "csum"),
        "82 172.16.40.113": Tunnel("gre"), "80 fd00:40::111": Tunnel("gue", 6080)}


@pytest.mark.parametrize("tunnel", [Tunnel(), Tunnel("gue", 6080), Tunnel("gue", 9, "csum"),
                                    Tunnel("gue", 9, "remcsum"), Tunnel("gre"),
                                    Tunnel("gre", None, "csum")])
def test_tunnel_args_round_trip(tunnel: Tunnel) -> None:
    assert tunnel_from_tokens(["-i", "-w", "1", *tunnel.args()]) == tunnel


def test_parse_fou_show_and_lsmod() -> None:
    assert parse_fou_show("port 6080 gue\nport 6080 gue -6\nport 5555 ipproto 4\njunk\n") == {
        FouPort(6080, 4), FouPort(6080, 6)}
    assert parse_lsmod("Module                  Size  Used by\nfou                    "
                       "32768  0\nipip                   16384  0\nip_tunnel    32768  1 ipip\n"
                       ) == {"fou", "ipip", "ip_tunnel"}


@pytest.mark.parametrize(("value", "expected"), [(0, True), (1, True), (2, False),
                                                 (None, None)])
def test_fallback_device_expected(value: int | None, expected: bool | None) -> None:
    assert fallback_expected(value) is expected


def test_a_director_kernel_without_the_tun_type_is_exit_5() -> None:
    gre = config("tun", 'tun_type = "gre"')
    require_kernel_tunnels(gre, "6.1.0-50-amd64")
    require_kernel_tunnels(config("tun"), "4.19.0-27-amd64")
    with pytest.raises(TunnelModuleMissing, match=r'this kernel \(5.2.0\) cannot encapsulate in '
                       r'tun_type = "gre": IPVS has it since Linux 5.3') as caught:
        require_kernel_tunnels(gre, "5.2.0")
    assert caught.value.exit_code == 5


# ------------------------------------------------------------------ the director's plans

DIRECTOR_LINKS = link_lines("lo", "eth0")

DIRECTOR_CASES = [
    pytest.param(config("tun", 'tun_type = "gue"\ntun_port = 6080\ntun_checksum = "csum"'),
                 host(DIRECTOR_LINKS), [
                     f"ip addr add {VIP}/32 brd {VIP} dev eth0",
                     f"ipvsadm -A -t {VIP}:80 -s rr",
                     f"ipvsadm -a -t {VIP}:80 -r 172.16.40.111:80 -i -w 1 --tun-type gue "
                     "--tun-port 6080 --tun-csum",
                     f"ipvsadm -a -t {VIP}:80 -r 172.16.40.112:80 -i -w 1 --tun-type gue "
                     "--tun-port 6080 --tun-csum"], id="tun-gue-csum"),
    pytest.param(config("tun", 'tun_type = "gre"'), host(DIRECTOR_LINKS, addr_lines(
        ("eth0", f"{VIP}/32")), ipvs=f"-A -t {VIP}:80 -s rr\n"
        f"-a -t {VIP}:80 -r 172.16.40.111:80 -i -w 1 --tun-type ipip\n"
        f"-a -t {VIP}:80 -r 172.16.40.112:80 -i -w 1 --tun-type gre --tun-nocsum\n"),
        [f"ipvsadm -e -t {VIP}:80 -r 172.16.40.111:80 -i -w 1 --tun-type gre"],
        id="tun-type-changed-is-an-edit"),
    pytest.param(config("tun"), host(DIRECTOR_LINKS, addr_lines(("eth0", f"{VIP}/32")),
                                     ipvs=f"-A -t {VIP}:80 -s rr\n"
                                     f"-a -t {VIP}:80 -r 172.16.40.111:80 -i -w 1 "
                                     "--tun-type ipip\n"
                                     f"-a -t {VIP}:80 -r 172.16.40.112:80 -i -w 1 "
                                     "--tun-type ipip\n"), [],
                 id="plain-ipip-as-ipvsadm-prints-it-is-as-configured"),
    pytest.param(config("nat", reals=("10.1.0.11",)), host(DIRECTOR_LINKS), [
        f"ip addr add {VIP}/32 brd {VIP} dev eth0",
        "sysctl -w net.ipv4.ip_forward=1",  # a NAT director forwards the replies
        f"ipvsadm -A -t {VIP}:80 -s rr",
        f"ipvsadm -a -t {VIP}:80 -r 10.1.0.11:80 -m -w 1"], id="nat"),
    pytest.param(config("dr", vip=VIP6, reals=("fd00:30::111",)),
                 host(DIRECTOR_LINKS, sysctls={"net.ipv6.conf.eth0.ndisc_notify": 0}), [
                     "sysctl -w net.ipv6.conf.eth0.ndisc_notify=1",
                     f"ip addr add {VIP6}/128 dev eth0 preferred_lft 0",
                     f"ipvsadm -A -t [{VIP6}]:80 -s rr",
                     f"ipvsadm -a -t [{VIP6}]:80 -r [fd00:30::111]:80 -g -w 1"],
                 id="ipv6-dr-announced-by-the-kernel"),
    pytest.param(config("tun", 'tun_type = "gue"\ntun_port = 6080', vip=VIP6,
                        reals=("fd00:40::111",)),
                 host(DIRECTOR_LINKS, sysctls={"net.ipv6.conf.eth0.ndisc_notify": 1}), [
                     f"ip addr add {VIP6}/128 dev eth0 preferred_lft 0",
                     f"ipvsadm -A -t [{VIP6}]:80 -s rr",
                     f"ipvsadm -a -t [{VIP6}]:80 -r [fd00:40::111]:80 -i -w 1 --tun-type gue "
                     "--tun-port 6080"], id="ipv6-tun-gue-notify-already-on"),
]


@pytest.mark.parametrize(("cfg", "observed", "expected"), DIRECTOR_CASES)
def test_director_start_plan(cfg: Config, observed: HostObservation,
                             expected: list[str]) -> None:
    # The service is ours (an edit, not a conflict) whether or not the kernel has it yet.
    plan = plan_director_start(cfg, observed, State.of(OwnedService(cfg.services[0].key)))
    assert [" ".join(step.argv) for step in plan.steps] == expected


def test_director_stop_puts_ndisc_notify_back() -> None:
    state = State.of(OwnedAddress("eth0", f"{VIP6}/128"),
                     OwnedSysctl("net.ipv6.conf.eth0.ndisc_notify", 0, 1))
    obs = host(DIRECTOR_LINKS, addr_lines(("eth0", f"{VIP6}/128")),
               sysctls={"net.ipv6.conf.eth0.ndisc_notify": 1})
    plan = Plan()
    plan_undo(plan, obs, state)
    assert [step.line() for step in plan.steps] == [
        f"ip addr del {VIP6}/128 dev eth0", "sysctl -w net.ipv6.conf.eth0.ndisc_notify=0"]


# What 6.1 printed for the director's VIP added with preferred_lft 0 (the lab).
DEPRECATED_VIP6 = (f"2: eth0    inet6 {VIP6}/128 scope global deprecated \\       "
                   "valid_lft forever preferred_lft 0sec")


@pytest.mark.parametrize(("addrs", "ours", "expected"), [
    (addr_lines(("eth0", f"{VIP6}/128")), True,
     [f"ip addr change {VIP6}/128 dev eth0 preferred_lft 0"]),
    (DEPRECATED_VIP6, True, []),
    (addr_lines(("eth0", f"{VIP6}/128")), False, []),  # someone else's: left alone
], ids=["ours-not-deprecated", "ours-deprecated", "not-ours"])
def test_director_deprecates_its_ipv6_vip_in_place(addrs: str, ours: bool,
                                                   expected: list[str]) -> None:
    """A VIP of ours that an older version added as a preferred address (the source of
    IPv6 TUN's outer header then, which the real servers drop) is deprecated in place."""
    cfg = config("tun", vip=VIP6, reals=("fd00:40::111",))
    owned = [OwnedAddress("eth0", f"{VIP6}/128")] if ours else []
    state = State.of(OwnedService(cfg.services[0].key), *owned)
    obs = host(DIRECTOR_LINKS, addrs, sysctls={"net.ipv6.conf.eth0.ndisc_notify": 1})
    plan = plan_director_start(cfg, obs, state)
    assert [s.line() for s in plan.steps if s.argv[:2] == ("ip", "addr")] == expected


# ------------------------------------------------------------------ the real server's plans

ARP = ["sysctl -w net.ipv4.conf.all.arp_ignore=1", "sysctl -w net.ipv4.conf.all.arp_announce=2"]
ARP_DONE = {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2}
RS_LINKS = link_lines("lo", "eth0")
RS_ADDRS = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "172.16.40.111/24"))
TUNL0_DOWN = ("5: tunl0@NONE: <NOARP> mtu 1480 qdisc noop state DOWN mode DEFAULT group "
              "default qlen 1000\\    link/ipip 0.0.0.0 brd 0.0.0.0")
TUNL0_UP = TUNL0_DOWN.replace("<NOARP>", "<NOARP,UP,LOWER_UP>")
GUE = config("tun", 'tun_type = "gue"\ntun_port = 6080')
NAT = config("nat", head='[realserver]\nnat_gateway = "192.168.30.105"\n',
             reals=("192.168.30.111",))


def rs(links: str = RS_LINKS, addrs: str = RS_ADDRS, sysctls: dict[str, int] | None = None,
       loaded: tuple[str, ...] = (), fallback: bool | None = True,
       fou: tuple[int, ...] = (),
       routes: str = "") -> HostObservation:
    rp = {f"net.ipv4.conf.{name}.rp_filter": 0 for name in ("all", "default", "tunl0", "gre0")}
    obs = host(links, addrs, routes=routes, sysctls={**ARP_DONE, **rp, **(sysctls or {})})
    obs.tunnels = TunnelSeen({FouPort(p) for p in fou}, set(loaded), set(), fallback)
    return obs


REALSERVER_CASES = [
    pytest.param(config("tun"), rs(sysctls={"net.ipv4.conf.all.arp_ignore": 0,
                                            "net.ipv4.conf.all.arp_announce": 0}), State(), [
        *ARP, "modprobe ipip", "ip link set dev tunl0 up",
        f"ip addr add {VIP}/32 brd {VIP} dev tunl0"],
        id="ipip-module-loaded-now-makes-tunl0-which-comes-up"),
    pytest.param(config("tun"), rs(loaded=("ipip",), fallback=False), State(), [
        "ip link add name tunl0 type ipip", "ip link set dev tunl0 up",
        f"ip addr add {VIP}/32 brd {VIP} dev tunl0"],
        id="ipip-no-fallback-device-here-so-start-creates-tunl0"),
    pytest.param(config("tun"), rs(fallback=None), State(), [
        "modprobe ipip", "ip link add name tunl0 type ipip", "ip link set dev tunl0 up",
        f"ip addr add {VIP}/32 brd {VIP} dev tunl0"],
        id="ipip-in-a-namespace-where-the-fallback-device-cannot-be-foreseen"),
    pytest.param(config("tun"), rs(RS_LINKS + "\n" + TUNL0_DOWN, loaded=("ipip",)), State(), [
        "ip link set dev tunl0 up", f"ip addr add {VIP}/32 brd {VIP} dev tunl0"],
        id="ipip-fallback-tunl0-down"),
    pytest.param(config("tun"), rs(RS_LINKS + "\n" + TUNL0_UP, RS_ADDRS + "\n" + addr_lines(
        ("tunl0", f"{VIP}/32")), loaded=("ipip",)), State(), [], id="ipip-nothing-to-do"),
    pytest.param(config("tun"), rs(RS_LINKS + "\n" + TUNL0_UP, loaded=("ipip",), sysctls={
        "net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.tunl0.rp_filter": 1}), State(), [
        "sysctl -w net.ipv4.conf.all.rp_filter=2", "sysctl -w net.ipv4.conf.tunl0.rp_filter=2",
        f"ip addr add {VIP}/32 brd {VIP} dev tunl0"], id="strict-rp-filter-loosened-to-2"),
    pytest.param(config("tun"), rs(loaded=("ipip",), fallback=False, sysctls={
        "net.ipv4.conf.all.rp_filter": 2, "net.ipv4.conf.default.rp_filter": 1}), State(), [
        "ip link add name tunl0 type ipip", "ip link set dev tunl0 up",
        "sysctl -w net.ipv4.conf.tunl0.rp_filter=2",
        f"ip addr add {VIP}/32 brd {VIP} dev tunl0"],
        id="a-device-start-creates-inherits-default-rp-filter-1"),
    pytest.param(GUE, rs(loaded=("fou", "ipip"), fallback=False), State(), [
        "ip link add name tunl0 type ipip", "ip link set dev tunl0 up",
        "ip fou add port 6080 gue", f"ip addr add {VIP}/32 brd {VIP} dev tunl0"], id="gue"),
    pytest.param(config("tun", 'tun_type = "gre"\ntun_checksum = "csum"'),
                 rs(loaded=("ip_gre",), fallback=False), State(), [
                     "ip link add name gre0 type gre icsum", "ip link set dev gre0 up",
                     f"ip addr add {VIP}/32 brd {VIP} dev gre0"],
                 id="gre-with-checksums-needs-icsum"),
    pytest.param(config("tun", 'tun_type = "gue"\ntun_port = 6080', vip=VIP6,
                        reals=("fd00:40::111",)), rs(loaded=("fou6", "ip6_tunnel"),
                                                     fallback=False), State(), [
        "ip link add name ip6tnl0 type ip6tnl", "ip link set dev ip6tnl0 up",
        "ip fou add port 6080 gue -6", f"ip addr add {VIP6}/128 dev ip6tnl0"],
        id="ipv6-gue-ip6ip6-device"),
    pytest.param(config("dr", vip=VIP6, reals=("fd00:30::111",)), rs(), State(), [
        f"ip addr add {VIP6}/128 dev lo"],
        id="ipv6-dr-vip-on-lo-which-never-answers-neighbour-solicitations"),
    pytest.param(NAT, rs(sysctls={"net.ipv4.conf.all.arp_ignore": 0},
                         routes="default via 192.168.30.200 dev eth0"), State(), [
        "ip route replace default via 192.168.30.105"], id="nat-route-via-the-director-no-arp"),
    pytest.param(NAT, rs(routes="default via 192.168.30.105"),
                 State.of(OwnedRoute(4, *parse_default_routes(
                     "default via 192.168.30.105\ndefault via 192.168.30.200 dev eth0"))),
                 [], id="nat-already-routed"),
    pytest.param(config("dr", reals=("192.168.30.111",)), rs(
        RS_LINKS + "\n" + TUNL0_UP, RS_ADDRS + "\n" + addr_lines(("tunl0", f"{VIP}/32")),
        loaded=("ipip", "fou"), fou=(6080,)),
        State.of(OwnedAddress("tunl0", f"{VIP}/32"), OwnedLink("tunl0", True), OwnedFou(6080)),
        [f"ip addr add {VIP}/32 brd {VIP} dev lo", f"ip addr del {VIP}/32 dev tunl0",
         "ip fou del port 6080", "ip link del dev tunl0"],
        id="tun-to-dr-on-reload-removes-the-tunnel"),
]


@pytest.mark.parametrize(("cfg", "observed", "state", "expected"), REALSERVER_CASES)
def test_realserver_start_plan(cfg: Config, observed: HostObservation, state: State,
                               expected: list[str]) -> None:
    plan = plan_realserver_start(cfg, observed, state)
    assert [" ".join(step.argv) for step in plan.steps] == expected


REALSERVER_STOP_CASES = [
    pytest.param(rs(RS_LINKS + "\n" + TUNL0_UP, RS_ADDRS + "\n" + addr_lines(
        ("tunl0", f"{VIP}/32")), fou=(6080,), sysctls={"net.ipv4.conf.all.rp_filter": 2}),
        State.of(
        OwnedAddress("tunl0", f"{VIP}/32"), OwnedLink("tunl0", True), OwnedFou(6080),
        OwnedSysctl("net.ipv4.conf.all.rp_filter", 1, 2)), [
        f"ip addr del {VIP}/32 dev tunl0", "ip fou del port 6080", "ip link del dev tunl0",
        "sysctl -w net.ipv4.conf.all.rp_filter=1"], id="gue-created-device"),
    pytest.param(rs(RS_LINKS + "\n" + TUNL0_UP), State.of(OwnedLink("tunl0", False)),
                 ["ip link set dev tunl0 down"], id="fallback-device-put-back-down"),
    pytest.param(rs(RS_LINKS + "\n" + TUNL0_DOWN), State.of(OwnedLink("tunl0", False)), [],
                 id="fallback-device-already-down"),
    pytest.param(rs(), State.of(OwnedLink("tunl0", True), OwnedFou(6080)), [],
                 id="device-and-port-gone-already"),
    pytest.param(rs(routes="default via 192.168.30.105"), State.of(OwnedRoute(
        4, *parse_default_routes("default via 192.168.30.105\n"
                                 "default via 192.168.30.200 dev eth0 proto static"))),
        ["ip route replace default via 192.168.30.200 dev eth0 proto static"],
        id="nat-route-restored"),
]


@pytest.mark.parametrize(("observed", "state", "expected"), REALSERVER_STOP_CASES)
def test_realserver_stop_plan(observed: HostObservation, state: State,
                              expected: list[str]) -> None:
    plan = Plan()
    plan_undo(plan, observed, state)
    assert [" ".join(step.argv) for step in plan.steps] == expected
    after = State.from_json(state.to_json(), "copy")
    for effect in [s.effect for s in plan.steps if s.effect] + plan.forget:
        effect.record(after)
    assert after.empty()


# ------------------------------------------------------------------ the CLI on a fake host

RS_BIN = str(ROOT / "bin" / "lvs-realserver")
DIRECTOR_BIN = str(ROOT / "bin" / "lvs-director")


def run(fake: FakeHost, tmp: Path, program: str, toml: str, *args: str
        ) -> subprocess.CompletedProcess[str]:
    path = tmp / "lvs.toml"
    path.write_text(toml)
    env = {**fake.env, "LVS_STATE_DIR": str(tmp / "run"), "LVS_LOCK_DIR": str(tmp / "lock"),
           "LVS_SYSLOG": "0"}
    return subprocess.run([program, "-c", str(path), *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def kernel(fake: FakeHost) -> dict[str, Any]:
    st = fake.state()
    return {key: st[key] for key in ("interfaces", "routes", "sysctl", "fou")}


def toml(forwarding: str, extra: str = "", head: str = "", vip: str = VIP,
         real: str = "172.16.40.111") -> str:
    return f"""{head}
[realserver]
arp_interfaces = ["eth0"]

[[service]]
vip = "{vip}"
port = 80
forwarding = "{forwarding}"
{extra}
real = [ {{ address = "{real}" }} ]
"""


@pytest.mark.parametrize(("extra", "fallback"), [
    ("", "0"), ('tun_type = "gue"\ntun_port = 6080', "2"),
    ('tun_type = "gre"\ntun_checksum = "csum"', "2")], ids=["ipip", "gue", "gre"])
def test_tun_real_server_start_then_stop_leaves_the_host_as_before(
        tmp_path: Path, extra: str, fallback: str) -> None:
    """Modules loaded beforehand (loading one is the only change stop cannot undo);
    with fallback "0" the module's tunl0 is there, down; with "2" start creates it."""
    fake = FakeHost(tmp_path / "host")
    fake.set_sysctl("net.core.fb_tunnels_only_for_init_net", fallback)
    for module in ("ipip", "fou", "ip_gre"):
        fake.cmd("modprobe", module)
    fake.set_sysctl("net.ipv4.conf.all.rp_filter", 1)
    before = kernel(fake)
    started = run(fake, tmp_path, RS_BIN, toml("tun", extra), "start")
    assert started.returncode == 0, started.stderr
    device = "gre0" if "gre" in extra else "tunl0"
    assert f"{VIP}/32" in [f"{a['local']}/{a['prefixlen']}"
                           for a in (fake.interface(device) or {"addrs": []})["addrs"]]
    assert fake.sysctl("net.ipv4.conf.all.rp_filter") == "2"
    assert ("6080" in json.dumps(fake.state()["fou"])) == ("gue" in extra)
    status = run(fake, tmp_path, RS_BIN, toml("tun", extra), "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "net.ipv4.conf.all.rp_filter = 2 (configured 2)" in status.stdout
    assert f"VIP {VIP} on {device} (TUN): yes" in status.stdout
    again = run(fake, tmp_path, RS_BIN, toml("tun", extra), "start", "--json")
    assert json.loads(again.stdout)["applied"] == []
    stopped = run(fake, tmp_path, RS_BIN, toml("tun", extra), "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert kernel(fake) == before


def test_tun_real_server_loads_the_modules_it_needs(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path / "host")
    done = run(fake, tmp_path, RS_BIN, toml("tun", 'tun_type = "gue"\ntun_port = 6080'),
               "start", "-v")
    assert done.returncode == 0, done.stderr
    assert {"fou", "ipip"} <= set(fake.state()["modules"]["loaded"])
    assert (fake.interface("tunl0") or {}).get("up") is True


def test_a_kernel_without_the_tunnel_module_is_exit_5_before_anything_changes(
        tmp_path: Path) -> None:
    fake = FakeHost(tmp_path / "host")
    with fake.edit() as st:
        st["modules"]["available"].remove("fou")
    before = kernel(fake)
    done = run(fake, tmp_path, RS_BIN, toml("tun", 'tun_type = "gue"\ntun_port = 6080'),
               "start")
    assert done.returncode == 5, done.stderr
    assert "the kernel has no fou module" in done.stderr
    assert "CONFIG_NET_FOU" in done.stderr
    assert kernel(fake) == before
    assert not (tmp_path / "run" / "lvs-realserver.json").exists()


def test_nat_real_server_route_via_the_director_and_back(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path / "host")  # default via 192.168.30.200 dev eth0
    before = kernel(fake)
    nat = toml("nat", head='[director]\ninterface = "eth0"\ndip = "192.168.30.5/24"\n'
               'dip_interface = "eth1"\n', real="192.168.30.111")
    started = run(fake, tmp_path, RS_BIN, nat, "start")
    assert started.returncode == 0, started.stderr
    assert [r["via"] for r in fake.default_routes()] == ["192.168.30.5"]
    assert kernel(fake)["sysctl"] == before["sysctl"]  # no ARP settings for NAT
    stopped = run(fake, tmp_path, RS_BIN, nat, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert kernel(fake) == before


def test_ipv6_director_start_then_stop(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path / "host")
    fake.set_ipvs("loaded")
    before = kernel(fake)
    director = f"""
[director]
interface = "eth0"
arping_count = 0
[[service]]
vip = "{VIP6}"
port = 80
real = [ {{ address = "fd00:30::111" }} ]
"""
    started = run(fake, tmp_path, DIRECTOR_BIN, director, "start")
    assert started.returncode == 0, started.stderr
    assert fake.sysctl("net.ipv6.conf.eth0.ndisc_notify") == "1"
    eth0 = fake.interface("eth0") or {}
    # Deprecated: never the director's source address (the outer header of IPv6 TUN).
    assert {"local": VIP6, "prefixlen": 128, "scope": "global",
            "flags": ["deprecated"]} in eth0["addrs6"]
    stopped = run(fake, tmp_path, DIRECTOR_BIN, director, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert kernel(fake) == before

