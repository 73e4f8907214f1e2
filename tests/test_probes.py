"""Parsers, on output captured from a real kernel in the lab (tests/data/captured)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lvs_scripts.model import Destination, Forwarding, Protocol, ServiceKey, Timeouts
from lvs_scripts.probes import (
    RuleCheck,
    parse_arping_version,
    parse_default_routes,
    parse_ip_addrs,
    parse_ip_links,
    parse_ipvs_list,
    parse_ipvs_save,
    parse_rule,
    parse_sysctl_values,
    parse_timeouts,
    rule_holds,
    sysctl_key,
)

CAPTURED = Path(__file__).resolve().parent / "data" / "captured"
ip = ipaddress.ip_address


def captured(name: str) -> str:
    return (CAPTURED / name).read_text()


def tcp(address: str, port: int) -> ServiceKey:
    return ServiceKey(Protocol.TCP, ip(address), port)


def test_save_format_of_a_mixed_table() -> None:
    table = parse_ipvs_save(captured("ipvsadm-S-n.mixed.txt"))
    assert [str(key) for key in table] == [
        "tcp 192.168.30.254:80", "tcp 192.168.30.254:443", "tcp 192.168.30.254:8080",
        "udp 192.168.30.254:53", "sctp 192.168.30.254:3868", "tcp [2001:db8::1]:80",
        "fwmark 1", "fwmark 2 (IPv6)"]
    web = table[tcp("192.168.30.254", 80)]
    assert web.scheduler == "wrr" and web.persistence == 0
    assert [(str(d.address), d.port, d.forwarding, d.weight) for d in web.destinations] == [
        ("192.168.30.111", 80, Forwarding.DR, 1), ("192.168.30.112", 80, Forwarding.DR, 2),
        ("192.168.30.113", 80, Forwarding.DR, 3), ("192.168.30.114", 80, Forwarding.DR, 0)]
    https = table[tcp("192.168.30.254", 443)]
    assert (https.scheduler, https.persistence, https.flags, https.extra) == (
        "sh", 300, ("sh-fallback", "sh-port"), ())
    assert https.destinations[2].forwarding is Forwarding.TUN  # -i ... --tun-type ipip
    masq = table[tcp("192.168.30.254", 8080)]
    assert (masq.persistence, masq.netmask) == (300, "255.255.255.0")
    remapped = [d for d in masq.destinations if d.port != masq.key.port]
    assert len(remapped) == 1 and remapped[0].forwarding is Forwarding.NAT  # NAT may remap
    assert remapped[0] == Destination(remapped[0].address, 8081, Forwarding.NAT, 5)
    dns = table[ServiceKey(Protocol.UDP, ip("192.168.30.254"), 53)]
    assert (dns.one_packet, dns.extra) == (True, ())
    v6 = table[tcp("2001:db8::1", 80)]
    assert (v6.persistence, v6.netmask) == (600, "64")
    assert v6.destinations[1].endpoint() == "[2001:db8::11]:8080"
    mark = table[ServiceKey(Protocol.FWMARK, None, 2, ipv6=True)]
    assert mark.key.args() == ("-f", "2", "-6") and mark.scheduler == "lc"


def test_save_format_round_trips_through_our_own_rendering() -> None:
    """What we would print to recreate a service is what ipvsadm printed for it."""
    text = captured("ipvsadm-S-n.mixed.txt")
    table = parse_ipvs_save(text)
    ours = []
    for service in table.values():
        ours.append(" ".join(("-A", *service.service_args())))
        ours += [" ".join(("-a", *service.destination_args(d))) for d in service.destinations]
    real = [line for line in text.splitlines() if "--tun-type" not in line]
    assert [line for line in ours if "192.168.30.113:443" not in line] == real


def test_empty_table_and_junk_lines() -> None:
    assert parse_ipvs_save(captured("ipvsadm-S-n.empty.txt")) == {}
    junk = ("# a comment\n\n-A\n-A -t nonsense -s rr\n-X -t 1.2.3.4:80\n"
            "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80\n")
    table = parse_ipvs_save(junk)
    assert list(table) == [tcp("10.0.0.1", 80)]
    assert table[tcp("10.0.0.1", 80)].destinations == ()


def test_list_counters() -> None:
    counters = parse_ipvs_list(captured("ipvsadm-L-n.mixed.txt"))
    web = counters[tcp("192.168.30.254", 80)]
    assert [(c.forward, c.weight, c.active, c.inactive) for c in web.values()] == [
        ("Route", 1, 0, 2), ("Route", 2, 0, 3), ("Route", 3, 0, 4), ("Route", 0, 0, 0)]
    assert counters[ServiceKey(Protocol.FWMARK, None, 2, True)][(ip("2001:db8::12"), 0)].weight == 1
    assert counters[tcp("192.168.30.254", 443)][(ip("192.168.30.113"), 443)].forward == "Tunnel"
    assert parse_ipvs_list(captured("ipvsadm-L-n.empty.txt")) == {}


def test_timeouts() -> None:
    assert parse_timeouts(captured("ipvsadm-L-timeout.set-30-5-60.txt")) == Timeouts(30, 5, 60)
    assert parse_timeouts(captured("ipvsadm-L-timeout.defaults.txt")) == Timeouts(900, 120, 300)
    with pytest.raises(ValueError, match="unexpected"):
        parse_timeouts("IP Virtual Server version 1.2.1\n")


def test_addresses_of_director_and_real_server() -> None:
    director = parse_ip_addrs(captured("ip-o-addr-show.director.txt"))
    assert [(a.device, str(a.interface)) for a in director] == [
        ("lo", "127.0.0.1/8"), ("lo", "::1/128"), ("eth0", "192.168.30.105/24"),
        ("eth0", "192.168.30.254/32"), ("eth0", "fe80::c0ff:fea8:1e69/64")]
    real = parse_ip_addrs(captured("ip-o-addr-show.realserver.txt"))
    assert ("lo", "192.168.30.254/32") in [(a.device, str(a.interface)) for a in real]


def test_labels_and_secondary_addresses() -> None:
    found = parse_ip_addrs(captured("ip-o-4-addr-show-dev-eth0.label-secondary.txt"))
    assert [(a.device, str(a.interface.ip), a.secondary) for a in found] == [
        ("eth0", "192.168.30.105", False), ("eth0", "192.168.30.254", False),
        ("eth0", "192.168.30.253", False), ("eth0", "192.168.30.106", True)]


def test_links_strip_the_veth_peer_suffix() -> None:
    links = parse_ip_links(captured("ip-o-link-show.director.txt"))
    assert sorted(links) == ["eth0", "lo"]
    assert links["eth0"].up and links["eth0"].mac == "02:00:c0:a8:1e:69"
    down = parse_ip_links("3: eth1: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN")
    assert not down["eth1"].up


def test_default_routes() -> None:
    routes = parse_default_routes(captured("ip-route-show-default.director.txt"))
    assert [(str(r.via), r.dev) for r in routes] == [("192.168.30.200", "eth0")]
    more = parse_default_routes("default via 10.0.0.1 dev eth0 proto dhcp src 10.0.0.5 "
                                "metric 100\ndefault dev ppp0 scope link\n"
                                "10.0.0.0/24 dev eth0 scope link\n")
    assert [(r.via and str(r.via), r.dev, r.metric) for r in more] == [
        ("10.0.0.1", "eth0", 100), (None, "ppp0", 0)]


def test_which_arping() -> None:
    iputils = captured("arping-iputils-V.txt")
    # Habets' arping takes -V as "VLAN" and prints its usage with its name: not iputils.
    habets = captured("arping-habets-V.txt") + captured("arping-habets-V.stderr.txt")
    assert parse_arping_version(iputils).flavour == "iputils"
    assert parse_arping_version(habets).flavour == "habets"


def test_sysctl_values_and_keys() -> None:
    keys = ("net.ipv4.conf.all.arp_ignore",)
    assert parse_sysctl_values(keys, captured("sysctl-n-arp_ignore.all.realserver.txt")) == {
        keys[0]: 1}
    with pytest.raises(ValueError, match="printed 1 values for 2 keys"):
        parse_sysctl_values(("a", "b"), "1\n")
    assert sysctl_key("eth0", "arp_ignore") == "net.ipv4.conf.eth0.arp_ignore"
    assert sysctl_key("eth0.100", "arp_announce") == "net/ipv4/conf/eth0.100/arp_announce"


RULES_AGAINST_MIXED = [
    ("-A -t 192.168.30.254:80 -s wrr", True),
    ("-E -t 192.168.30.254:80 -s rr", False),
    ("-A -t 192.168.30.254:443 -s sh -p 300 -b sh-fallback,sh-port", True),
    ("-a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 2", True),
    ("-e -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 3", False),
    ("-e -t 192.168.30.254:80 -r 192.168.30.112:80 -m -w 2", False),
    ("-d -t 192.168.30.254:80 -r 192.168.30.112:80", False),
    ("-d -t 192.168.30.254:80 -r 192.168.30.199:80", True),
    ("-D -t 192.168.30.254:80", False),
    ("-D -t 192.168.30.254:81", True),
    ("-a -f 1 -r 192.168.30.112:0 -g -w 2", True),
    ("-a -t 192.168.30.254:81 -r 192.168.30.112:81 -g -w 1", False),  # no such service
    ("-d -t 192.168.30.254:81 -r 192.168.30.112:81", True),
]


@pytest.mark.parametrize(("rule", "holds"), RULES_AGAINST_MIXED)
def test_rule_holds_against_an_observed_table(rule: str, holds: bool) -> None:
    assert rule_holds(rule, parse_ipvs_save(captured("ipvsadm-S-n.mixed.txt"))) is holds


def test_one_rule_check_answers_a_whole_batch_like_rule_holds() -> None:
    """apply verifies a batch with one RuleCheck, which indexes each service once."""
    check = RuleCheck(parse_ipvs_save(captured("ipvsadm-S-n.mixed.txt")))
    assert [check(rule) for rule, _ in RULES_AGAINST_MIXED * 2] == [
        holds for _, holds in RULES_AGAINST_MIXED * 2]


def test_parse_rule_refuses_non_rules() -> None:
    for line in ("--set 30 5 60", "-a -t 1.2.3.4:80 -w 2", "# -A -t 1.2.3.4:80"):
        with pytest.raises(ValueError):
            parse_rule(line)


def test_stats_exact_and_scaled() -> None:
    from lvs_scripts.probes import parse_ipvs_stats

    exact = parse_ipvs_stats(captured("ipvsadm-L-n-stats-exact.mixed.txt"))
    scaled = parse_ipvs_stats(captured("ipvsadm-L-n-stats.mixed.txt"))
    web_total, web_reals = exact[tcp("192.168.30.254", 80)]
    # DR: the director forwarded the requests in and saw no reply go out.
    assert web_total.inpkts > 0 and web_total.outpkts == 0
    assert all(s.outpkts == 0 for s in web_reals.values())
    assert sum(s.conns for s in web_reals.values()) == web_total.conns
    assert set(exact) == set(scaled) and len(exact) == 8
    # without --exact, ipvsadm prints large numbers scaled (118291K): read back as such
    line = next(t for t in captured("ipvsadm-L-n-stats.mixed.txt").splitlines()
                if t.startswith("TCP  192.168.30.254:8080"))
    printed = line.split()[-1]
    assert printed.endswith("K")
    assert scaled[tcp("192.168.30.254", 8080)][0].outbytes == int(printed[:-1]) * 1000
    fwm6 = exact[ServiceKey(Protocol.FWMARK, None, 2, True)]
    assert list(fwm6[1]) == [(ip("2001:db8::12"), 0)]


# --- issue 12: ipvsadm's other options, thresholds, nftables (lab/capture_ipvs_options.sh) --

OPTIONS = Path(__file__).resolve().parent / "data" / "captured-ipvs-options"


def options(name: str) -> str:
    return (OPTIONS / name).read_text()


def test_save_format_of_every_option() -> None:
    from lvs_scripts.probes import parse_ipvs_save

    table = parse_ipvs_save(options("ipvsadm-S-n.options.txt"))
    mh = table[tcp("192.168.30.254", 80)]
    assert (mh.scheduler, mh.flags, mh.extra) == ("mh", ("mh-fallback", "mh-port"), ())
    assert table[tcp("192.168.30.254", 81)].flags == ("sh-port",)
    sip = table[ServiceKey(Protocol.UDP, ip("192.168.30.254"), 5060)]
    assert (sip.persistence, sip.pe, sip.one_packet, sip.extra) == (60, "sip", True, ())
    mark = table[ServiceKey(Protocol.FWMARK, None, 1)]
    assert (mark.persistence, mark.netmask) == (300, "255.255.255.0")
    assert [(d.endpoint(), d.forwarding) for d in mark.destinations] == [
        ("192.168.30.111:0", Forwarding.DR), ("192.168.30.112:0", Forwarding.DR),
        ("192.168.30.113:8080", Forwarding.DR), ("192.168.30.114:8080", Forwarding.NAT)]
    mark6 = table[ServiceKey(Protocol.FWMARK, None, 2, ipv6=True)]
    assert (mark6.netmask, mark6.destinations[0].endpoint()) == ("64", "[2001:db8::12]:0")
    # ipvsadm -S has no -x/-y: thresholds come from the --thresholds listing
    assert all(d.upper == d.lower == 0 for s in table.values() for d in s.destinations)


def test_our_rendering_of_every_option_is_what_ipvsadm_printed() -> None:
    """What we would run to create each service (-A line) and real server is the line
    the kernel gave back, so an unchanged service compares equal."""
    from lvs_scripts.probes import parse_ipvs_save

    for name in ("ipvsadm-S-n.options.txt", "ipvsadm-S-n.options-edited.txt"):
        text = options(name)
        ours = []
        for service in parse_ipvs_save(text).values():
            ours.append(" ".join(("-A", *service.service_args())))
            ours += [" ".join(("-a", *service.destination_args(d)))
                     for d in service.destinations]
        assert ours == text.splitlines(), name


def test_an_edit_without_the_options_drops_them_so_they_show_as_a_difference() -> None:
    from lvs_scripts.probes import parse_ipvs_save

    before = parse_ipvs_save(options("ipvsadm-S-n.options.txt"))
    after = parse_ipvs_save(options("ipvsadm-S-n.options-edited.txt"))
    changed = [str(key) for key in before if before[key].attributes() != after[key].attributes()]
    assert changed == ["tcp 192.168.30.254:80", "udp 192.168.30.254:5060", "fwmark 1"]


def test_thresholds_listing() -> None:
    from lvs_scripts.probes import parse_ipvs_save, parse_ipvs_thresholds, with_thresholds

    found = parse_ipvs_thresholds(options("ipvsadm-L-n-thresholds.options.txt"))
    assert found[tcp("192.168.30.254", 80)] == {(ip("192.168.30.111"), 80): (100, 50),
                                                (ip("192.168.30.112"), 80): (1, 0)}
    assert found[ServiceKey(Protocol.FWMARK, None, 1)][(ip("192.168.30.112"), 0)] == (10, 5)
    assert ServiceKey(Protocol.FWMARK, None, 2, ipv6=True) in found
    table = with_thresholds(parse_ipvs_save(options("ipvsadm-S-n.options.txt")), found)
    first = table[tcp("192.168.30.254", 80)].destinations[0]
    assert (first.upper, first.lower) == (100, 50)
    assert table[tcp("192.168.30.254", 80)].destination_args(first)[-4:] == (
        "-x", "100", "-y", "50")


def test_nft_listings() -> None:
    from lvs_scripts.nft import MarkRule, parse_table, parse_tables

    assert parse_tables(options("nft-list-tables.ours.txt")) == {"ip"}
    assert parse_tables(options("nft-list-tables.empty.txt")) == set()
    table = parse_table("ip", options("nft-list-table-ip-lvs_scripts.txt"))
    assert table.rules == (
        MarkRule(ip("192.168.30.254"), Protocol.TCP, 80, 1),
        MarkRule(ip("192.168.30.254"), Protocol.TCP, 443, 1),
        MarkRule(ip("192.168.30.253"), Protocol.UDP, 53, 2),
        MarkRule(ip("192.168.30.253"), Protocol.SCTP, 3868, 0xFFFFFFFF))
    # what we write is what nft prints back
    assert [f"\t\t{r.text()}" for r in table.rules] == options(
        "nft-list-table-ip-lvs_scripts.txt").splitlines()[3:7]
    six = parse_table("ip6", options("nft-list-table-ip6-lvs_scripts.txt"))
    assert six.rules == (MarkRule(ip("2001:db8::1"), Protocol.TCP, 80, 2),)
    assert parse_table("ip", options("nft-list-ruleset.ours.txt")).rules == table.rules


@pytest.mark.parametrize("text", [
    "table ip lvs_scripts {\n\tchain prerouting {\n\t\ttype filter hook input priority 0; "
    "policy accept;\n\t}\n}\n",
    "table ip lvs_scripts {\n\tchain prerouting {\n\t\ttype filter hook prerouting priority "
    "mangle; policy accept;\n\t\tip daddr 1.2.3.4 tcp dport 80 drop\n\t}\n}\n",
    "table ip lvs_scripts {\n}\n",
])
def test_a_table_not_as_we_write_it_is_a_difference(text: str) -> None:
    from lvs_scripts.nft import parse_table

    assert parse_table("ip", text).rules is None


def test_the_ipvs_sysctls_of_a_fresh_namespace() -> None:
    from lvs_scripts.probes import parse_sysctl_values

    keys = ("net.ipv4.vs.conn_reuse_mode", "net.ipv4.vs.expire_nodest_conn",
            "net.ipv4.vs.expire_quiescent_template", "net.ipv4.vs.sloppy_tcp",
            "net.ipv4.vs.sloppy_sctp", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
    assert parse_sysctl_values(keys, options("sysctl-n-vs.defaults.txt")) == dict(
        zip(keys, (1, 0, 0, 0, 0, 0, 0)))
