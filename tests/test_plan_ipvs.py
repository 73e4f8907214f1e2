"""Planner tables for issue 12 (part 1): the rest of ipvsadm's options, fwmark services with
their nftables marks, and the director's sysctls. (config, observed host, state) -> the
exact commands, as in test_plan_director.py."""

from __future__ import annotations

import ipaddress

import pytest

from lvs_scripts.config import parse_config
from lvs_scripts.model import Protocol, ServiceKey
from lvs_scripts.owned import OwnedAddress, OwnedNftTable, OwnedService, OwnedSysctl, plan_undo
from lvs_scripts.plan import Plan
from lvs_scripts.plan_director import plan_director_start
from lvs_scripts.state import State
from tests.hosts import addr_lines, host, link_lines

LINKS = link_lines("lo", "eth0")
ADDRS = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "192.168.30.105/24"),
                   ("eth0", "192.168.30.254/32"))
VIP = OwnedAddress("eth0", "192.168.30.254/32", "vip", announced=True)
HTTP = ServiceKey(Protocol.TCP, ipaddress.ip_address("192.168.30.254"), 80)
SIP = ServiceKey(Protocol.UDP, ipaddress.ip_address("192.168.30.254"), 5060)
MARK1 = ServiceKey(Protocol.FWMARK, None, 1)


def config(service: str, director: str = "") -> str:
    return f"""
[director]
interface = "eth0"
arping_count = 0
{director}
{service}"""


# An IPv6 VIP is announced by the kernel once ndisc_notify is on (plan_director).
NDISC = "sysctl -w net.ipv6.conf.eth0.ndisc_notify=1"


def observed(ipvs: str = "", nft: dict[str, str] | None = None,
             sysctls: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    return host(links=LINKS, addrs=ADDRS, ipvs=ipvs, nft=nft, sysctls=sysctls)


MH = """
[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "mh"
scheduler_flags = ["mh-port", "mh-fallback"]
real = [ { address = "192.168.30.111", upper = 100, lower = 50 },
         { address = "192.168.30.112", weight = 2, upper = 1 } ]
"""
MH_SAVE = """\
-A -t 192.168.30.254:80 -s mh -b mh-fallback,mh-port
-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1 -x 100 -y 50
-a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 2 -x 1
"""
SIP_TOML = """
[[service]]
vip = "192.168.30.254"
port = 5060
protocol = "udp"
scheduler = "rr"
persistence = 60
persistence_engine = "sip"
one_packet = true
real = [ { address = "192.168.30.111" } ]
"""
SIP_SAVE = """\
-A -u 192.168.30.254:5060 -s rr -p 60 --pe sip -o
-a -u 192.168.30.254:5060 -r 192.168.30.111:5060 -g -w 1
"""
NETMASK = """
[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "sh"
scheduler_flags = ["sh-port"]
persistence = 300
persistence_netmask = "255.255.255.0"
real = [ { address = "192.168.30.111" } ]
"""
NETMASK_SAVE = """\
-A -t 192.168.30.254:80 -s sh -p 300 -M 255.255.255.0 -b sh-port
-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1
"""
NETMASK6 = """
[[service]]
vip = "2001:db8::1"
port = 80
persistence = 600
persistence_netmask = 64
real = [ { address = "2001:db8::10" } ]
"""

# Each option on an empty host, then unchanged (nothing to do), then changed (-E / -e with
# everything, since -E and -e reset what they are not told).
OPTION_CASES = [
    pytest.param(MH, "", State.of(VIP),
                 ["ipvsadm -A -t 192.168.30.254:80 -s mh -b mh-fallback,mh-port",
                  "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1 -x 100 -y 50",
                  "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 2 -x 1"],
                 id="mh-flags-in-ipvsadm-order-and-thresholds"),
    pytest.param(MH, MH_SAVE, State.of(VIP, OwnedService(HTTP)), [],
                 id="mh-flags-and-thresholds-unchanged-nothing-to-do"),
    pytest.param(MH, MH_SAVE.replace(" -b mh-fallback,mh-port", " -b mh-port"),
                 State.of(VIP, OwnedService(HTTP)),
                 ["ipvsadm -E -t 192.168.30.254:80 -s mh -b mh-fallback,mh-port"],
                 id="scheduler-flag-dropped-by-hand-is-put-back"),
    pytest.param(MH, MH_SAVE.replace(" -x 100 -y 50", " -x 100"),
                 State.of(VIP, OwnedService(HTTP)),
                 ["ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1 -x 100 -y 50"],
                 id="lower-threshold-drift"),
    pytest.param(MH.replace(", upper = 1 }", " }"), MH_SAVE,
                 State.of(VIP, OwnedService(HTTP)),
                 ["ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 2"],
                 id="upper-threshold-removed-from-the-config"),
    pytest.param(SIP_TOML, "", State.of(VIP),
                 ["ipvsadm -A -u 192.168.30.254:5060 -s rr -p 60 --pe sip -o",
                  "ipvsadm -a -u 192.168.30.254:5060 -r 192.168.30.111:5060 -g -w 1"],
                 id="sip-engine-and-one-packet"),
    pytest.param(SIP_TOML, SIP_SAVE, State.of(VIP, OwnedService(SIP)), [],
                 id="sip-engine-and-one-packet-unchanged"),
    pytest.param(SIP_TOML, SIP_SAVE.replace(" --pe sip -o", ""), State.of(VIP, OwnedService(SIP)),
                 ["ipvsadm -E -u 192.168.30.254:5060 -s rr -p 60 --pe sip -o"],
                 id="sip-engine-and-one-packet-lost-by-an-edit"),
    pytest.param(SIP_TOML.replace('persistence_engine = "sip"\none_packet = true\n', ""),
                 SIP_SAVE, State.of(VIP, OwnedService(SIP)),
                 ["ipvsadm -E -u 192.168.30.254:5060 -s rr -p 60"],
                 id="engine-and-one-packet-removed-from-the-config"),
    pytest.param(NETMASK, "", State.of(VIP),
                 ["ipvsadm -A -t 192.168.30.254:80 -s sh -p 300 -M 255.255.255.0 -b sh-port",
                  "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1"],
                 id="persistence-netmask-and-sh-port"),
    pytest.param(NETMASK.replace('"255.255.255.0"', "24"), NETMASK_SAVE,
                 State.of(VIP, OwnedService(HTTP)), [],
                 id="netmask-as-a-prefix-length-is-the-same"),
    pytest.param(NETMASK.replace('"255.255.255.0"', "16"), NETMASK_SAVE,
                 State.of(VIP, OwnedService(HTTP)),
                 ["ipvsadm -E -t 192.168.30.254:80 -s sh -p 300 -M 255.255.0.0 -b sh-port"],
                 id="netmask-changed"),
    pytest.param(NETMASK.replace('"255.255.255.0"', "32"), "", State.of(VIP),
                 ["ipvsadm -A -t 192.168.30.254:80 -s sh -p 300 -b sh-port",
                  "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1"],
                 id="netmask-of-one-address-is-the-default-and-not-printed"),
    pytest.param(NETMASK6, "", State(),
                 [NDISC, "ip addr add 2001:db8::1/128 dev eth0 preferred_lft 0",
                  "ipvsadm -A -t '[2001:db8::1]:80' -s wlc -p 600 -M 64",
                  "ipvsadm -a -t '[2001:db8::1]:80' -r '[2001:db8::10]:80' -g -w 1"],
                 id="ipv6-netmask-is-a-prefix-length"),
]


@pytest.mark.parametrize(("service", "ipvs", "state", "expected"), OPTION_CASES)
def test_ipvsadm_options(service: str, ipvs: str, state: State, expected: list[str]) -> None:
    plan = plan_director_start(parse_config(config(service)), observed(ipvs), state)
    assert [step.line() for step in plan.steps] == expected


# --- fwmark services ---------------------------------------------------------------------

FWMARK = """
[[service]]
fwmark = 1
match = [ { vip = "192.168.30.254", port = 80, protocol = "tcp" },
          { vip = "192.168.30.254", port = 443 } ]
scheduler = "rr"
persistence = 300
real = [ { address = "192.168.30.111" }, { address = "192.168.30.112" } ]
"""
FWMARK_SAVE = """\
-A -f 1 -s rr -p 300
-a -f 1 -r 192.168.30.111:0 -g -w 1
-a -f 1 -r 192.168.30.112:0 -g -w 1
"""
OUR_TABLE = """\
table ip lvs_scripts {
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tip daddr 192.168.30.254 tcp dport 80 meta mark set 0x00000001
\t\tip daddr 192.168.30.254 tcp dport 443 meta mark set 0x00000001
\t}
}
"""
CREATE = """\
create table ip lvs_scripts
table ip lvs_scripts {
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tip daddr 192.168.30.254 tcp dport 80 meta mark set 0x00000001
\t\tip daddr 192.168.30.254 tcp dport 443 meta mark set 0x00000001
\t}
}
"""
REPLACE = "table ip lvs_scripts\ndelete table ip lvs_scripts\n" + CREATE.split("\n", 1)[1]
NFT_F = "nft -f /proc/self/fd/0"
OWNS_MARK = State.of(VIP, OwnedService(MARK1), OwnedNftTable("ip"))

FWMARK_CASES = [
    pytest.param(FWMARK, "", {}, State(),
                 [(NFT_F, CREATE),
                  ("ipvsadm -A -f 1 -s rr -p 300", None),
                  ("ipvsadm -a -f 1 -r 192.168.30.111:0 -g -w 1", None),
                  ("ipvsadm -a -f 1 -r 192.168.30.112:0 -g -w 1", None)],
                 id="fwmark-on-an-empty-host-marks-then-service"),
    pytest.param(FWMARK, FWMARK_SAVE, {"ip": OUR_TABLE}, OWNS_MARK, [],
                 id="fwmark-running-nothing-to-do"),
    pytest.param(FWMARK, FWMARK_SAVE, {"ip": OUR_TABLE.replace("dport 443", "dport 8443")},
                 OWNS_MARK, [(NFT_F, REPLACE)],
                 id="a-mark-rule-changed-by-hand-table-replaced-whole"),
    pytest.param(FWMARK, FWMARK_SAVE, {"ip": OUR_TABLE.replace(
        "\t}\n}", "\t\tip daddr 10.0.0.1 tcp dport 22 drop\n\t}\n}")},
                 OWNS_MARK, [(NFT_F, REPLACE)],
                 id="a-rule-we-do-not-write-in-our-table-replaced"),
    pytest.param(FWMARK, FWMARK_SAVE, {}, OWNS_MARK, [(NFT_F, CREATE)],
                 id="our-table-deleted-by-hand-created-again"),
    pytest.param(FWMARK.replace("persistence = 300", "persistence = 60"), FWMARK_SAVE,
                 {"ip": OUR_TABLE}, OWNS_MARK, [("ipvsadm -E -f 1 -s rr -p 60", None)],
                 id="fwmark-service-attribute-edited"),
    pytest.param(config("", "allow_no_services = true"), FWMARK_SAVE, {"ip": OUR_TABLE},
                 OWNS_MARK,
                 [("ipvsadm -e -f 1 -r 192.168.30.111:0 -g -w 0", None),
                  ("ipvsadm -e -f 1 -r 192.168.30.112:0 -g -w 0", None),
                  ("ipvsadm -D -f 1", None),
                  ("nft delete table ip lvs_scripts", None),
                  ("ip addr del 192.168.30.254/32 dev eth0", None)],
                 id="fwmark-service-leaving-the-config-marks-and-service-go"),
]


@pytest.mark.parametrize(("service", "ipvs", "nft", "state", "expected"), FWMARK_CASES)
def test_fwmark_plan(service: str, ipvs: str, nft: dict[str, str], state: State,
                     expected: list[tuple[str, str | None]]) -> None:
    text = service if "[director]" in service else config(service)
    plan = plan_director_start(parse_config(text), observed(ipvs, nft), state)
    assert [(step.line(), step.stdin) for step in plan.steps] == expected


def test_a_table_of_our_name_we_did_not_create_is_a_conflict() -> None:
    plan = plan_director_start(parse_config(config(FWMARK)),
                               observed(FWMARK_SAVE, {"ip": OUR_TABLE}),
                               State.of(VIP, OwnedService(MARK1)))
    assert plan.steps == []
    assert len(plan.conflicts) == 1 and "nft delete table ip lvs_scripts" in plan.conflicts[0]


def test_ipv6_fwmark_service_gets_an_ip6_table_and_a_v6_service() -> None:
    text = config("""
[[service]]
fwmark = 2
match = [ { vip = "2001:db8::1", port = 80 }, { vip = "2001:db8::1", port = 443 } ]
real = [ { address = "2001:db8::10" } ]
""")
    plan = plan_director_start(parse_config(text), observed(), State())
    lines = [step.line() for step in plan.steps]
    assert lines == [NDISC, "ip addr add 2001:db8::1/128 dev eth0 preferred_lft 0", NFT_F,
                     "ipvsadm -A -f 2 -6 -s wlc",
                     "ipvsadm -a -f 2 -6 -r '[2001:db8::10]:0' -g -w 1"]
    assert plan.steps[2].stdin is not None
    assert "ip6 daddr 2001:db8::1 tcp dport 443 meta mark set 0x00000002" in plan.steps[2].stdin
    assert plan.steps[2].stdin.startswith("create table ip6 lvs_scripts\n")


def test_stop_deletes_exactly_our_table_after_the_services() -> None:
    plan = Plan()
    plan_undo(plan, observed(FWMARK_SAVE, {"ip": OUR_TABLE}), OWNS_MARK)
    assert [step.line() for step in plan.steps] == [
        "ipvsadm -D -f 1", "nft delete table ip lvs_scripts",
        "ip addr del 192.168.30.254/32 dev eth0"]


def test_stop_forgets_a_table_already_gone() -> None:
    plan = Plan()
    plan_undo(plan, observed(), State.of(OwnedNftTable("ip")))
    assert plan.steps == [] and [type(e).__name__ for e in plan.forget] == ["NftTableDeleted"]


# --- sysctls -------------------------------------------------------------------------------

DR = """
[[service]]
vip = "192.168.30.254"
port = 80
real = [ { address = "192.168.30.111" } ]
"""
SYSCTL = "[director.sysctl]\nsloppy_tcp = true\nconn_reuse_mode = 0\nexpire_nodest_conn = 1"
VS_DEFAULTS = {"net.ipv4.vs.sloppy_tcp": 0, "net.ipv4.vs.conn_reuse_mode": 1,
               "net.ipv4.vs.expire_nodest_conn": 0, "net.ipv4.ip_forward": 0,
               "net.ipv6.conf.all.forwarding": 0}
RUNNING = "-A -t 192.168.30.254:80 -s wlc\n-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1\n"
OWNS_HTTP = State.of(VIP, OwnedService(HTTP))

SYSCTL_CASES = [
    pytest.param(DR, SYSCTL, VS_DEFAULTS, OWNS_HTTP,
                 ["sysctl -w net.ipv4.vs.sloppy_tcp=1", "sysctl -w net.ipv4.vs.conn_reuse_mode=0",
                  "sysctl -w net.ipv4.vs.expire_nodest_conn=1"],
                 id="ipvs-sysctls-set"),
    pytest.param(DR, SYSCTL, {**VS_DEFAULTS, "net.ipv4.vs.sloppy_tcp": 1,
                              "net.ipv4.vs.conn_reuse_mode": 0,
                              "net.ipv4.vs.expire_nodest_conn": 1}, OWNS_HTTP, [],
                 id="ipvs-sysctls-already-so"),
    pytest.param(DR, "", {**VS_DEFAULTS, "net.ipv4.vs.sloppy_tcp": 1},
                 State.of(VIP, OwnedService(HTTP), OwnedSysctl("net.ipv4.vs.sloppy_tcp", 0, 1)),
                 ["sysctl -w net.ipv4.vs.sloppy_tcp=0"],
                 id="sysctl-leaving-the-config-is-restored"),
    pytest.param(DR.replace("111\" }", "111\", port = 8080 }").replace(
        'port = 80\n', 'port = 80\nforwarding = "nat"\n'), "", VS_DEFAULTS, OWNS_HTTP,
                 ["sysctl -w net.ipv4.ip_forward=1",
                  "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:8080 -m -w 1",
                  "ipvsadm -d -t 192.168.30.254:80 -r 192.168.30.111:80"],
                 id="nat-service-turns-on-ipv4-forwarding"),
    pytest.param("""
[[service]]
vip = "2001:db8::1"
port = 80
forwarding = "nat"
real = [ { address = "2001:db8::10", port = 8080 } ]
""", "", VS_DEFAULTS, State(),
                 [NDISC, "ip addr add 2001:db8::1/128 dev eth0 preferred_lft 0",
                  "sysctl -w net.ipv6.conf.all.forwarding=1",
                  "ipvsadm -A -t '[2001:db8::1]:80' -s wlc",
                  "ipvsadm -a -t '[2001:db8::1]:80' -r '[2001:db8::10]:8080' -m -w 1"],
                 id="ipv6-nat-service-turns-on-ipv6-forwarding"),
]


@pytest.mark.parametrize(("service", "director", "sysctls", "state", "expected"), SYSCTL_CASES)
def test_director_sysctls(service: str, director: str, sysctls: dict[str, int], state: State,
                          expected: list[str]) -> None:
    plan = plan_director_start(parse_config(config(service, director)),
                               observed(RUNNING, sysctls=sysctls), state, drain=False)
    assert [step.line() for step in plan.steps] == expected


def test_a_sysctl_set_is_remembered_with_its_value_before() -> None:
    plan = plan_director_start(parse_config(config(DR, SYSCTL)),
                               observed(RUNNING, sysctls=VS_DEFAULTS), OWNS_HTTP)
    effect = plan.steps[0].effect
    assert effect is not None and (effect.key, effect.previous, effect.value) == (  # type: ignore[attr-defined]
        "net.ipv4.vs.sloppy_tcp", 0, 1)
    stop = Plan()
    after = State.of(VIP, OwnedService(HTTP), OwnedSysctl("net.ipv4.vs.sloppy_tcp", 0, 1))
    plan_undo(stop, observed(RUNNING, sysctls={**VS_DEFAULTS, "net.ipv4.vs.sloppy_tcp": 1}),
              after)
    assert "sysctl -w net.ipv4.vs.sloppy_tcp=0" in [step.line() for step in stop.steps]
