"""The verification after start/reload reads the IPVS table from /proc/net/ip_vs where that
is exact (Director.observe_again, probes.parse_proc_ip_vs_exact), and `ipvsadm -S -n`
everywhere else: the strict parse against parse_ipvs_save, then reloads on the fake host
with a listing file given through $LVS_TEST_PROC_IP_VS.

The listings are in the format of Linux 6.1's ip_vs_info_seq_show() (ip_vs_ctl.c); the lab
compares the two on the real kernel (tests/e2e/test_lab_proc_listing.py).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lvs_scripts.config import parse_config
from lvs_scripts.director import Director, listing_verifies
from lvs_scripts.errors import LvsError
from lvs_scripts.locks import Paths
from lvs_scripts.model import Forwarding, IpvsTable, Protocol, ServiceKey
from lvs_scripts.probes import (
    IP_ADDRS,
    IP_LINKS,
    IPVS_SAVE,
    HostObservation,
    expect_listing_of,
    forget_parsed,
    parse_ipvs_save,
    parse_proc_ip_vs_exact,
)
from tests.counting import count_calls
from tests.fakes.fakehost import FakeHost

HEADER = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
"""

def kernel(text: str) -> str:
    """A listing as written here: `|` marks where the kernel's line ends, after the
    trailing spaces ip_vs_info_seq_show prints (kept, which an editor would strip)."""
    return text.replace("|\n", "\n")


# (listing, `ipvsadm -S -n` of the same table). The kernel lists the newest real server
# first; ipvsadm sorts them by address and port.
SAME = {
    "ipv4, DR, NAT and Local, two services": (HEADER + kernel("""\
TCP  C0A81EFE:0050 wrr  |
  -> 0A000005:1F90      Masq    3      7          1         |
  -> C0A81E70:0050      Route   0      2          0         |
  -> C0A81E6F:0050      Route   1      0          3         |
  -> 7F000001:0050      Local   1      0          0         |
TCP  C0A81EFD:01BB rr  |
"""), """\
-A -t 192.168.30.254:80 -s wrr
-a -t 192.168.30.254:80 -r 10.0.0.5:8080 -m -w 3
-a -t 192.168.30.254:80 -r 127.0.0.1:80 -g -w 1
-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1
-a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 0
-A -t 192.168.30.253:443 -s rr
"""),
    "ops (UDP)": (HEADER + kernel("""\
UDP  C0A81EFE:0035 rr ops |
  -> C0A81E70:0035      Route   1      0          0         |
  -> C0A81E6F:0035      Route   1      0          0         |
"""), """\
-A -u 192.168.30.254:53 -s rr -o
-a -u 192.168.30.254:53 -r 192.168.30.111:53 -g -w 1
-a -u 192.168.30.254:53 -r 192.168.30.112:53 -g -w 1
"""),
    "ipv6, and sctp": (HEADER + kernel("""\
TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:01BB wlc |
  -> [2001:0db8:0000:0000:0000:0000:0000:0012]:01BB      Route   5      0          0         |
  -> [2001:0db8:0000:0000:0000:0000:0000:0011]:0050      Masq    5      0          0         |
  -> [2001:0db8:0000:0000:0000:0000:0000:0011]:01BB      Route   5      0          0         |
SCTP  C0A81EFE:0BB8 lc  |
  -> C0A81E6F:0BB8      Route   2      0          0         |
"""), """\
-A -t [2001:db8::1]:443 -s wlc
-a -t [2001:db8::1]:443 -r [2001:db8::11]:80 -m -w 5
-a -t [2001:db8::1]:443 -r [2001:db8::11]:443 -g -w 5
-a -t [2001:db8::1]:443 -r [2001:db8::12]:443 -g -w 5
-A --sctp-service 192.168.30.254:3000 -s lc
-a --sctp-service 192.168.30.254:3000 -r 192.168.30.111:3000 -g -w 2
"""),
    "empty": (HEADER, ""),
}


@pytest.mark.parametrize("name", SAME)
def test_the_strict_parse_equals_ipvsadm_save(name: str) -> None:
    listing, save = SAME[name]
    expected = parse_ipvs_save(save)
    for _ in range(2):  # cold, then every line from the memo of the last listing
        assert parse_proc_ip_vs_exact(listing) == expected
    forget_parsed()


def test_the_counters_are_no_part_of_what_is_remembered() -> None:
    listing = SAME["ipv4, DR, NAT and Local, two services"][0]
    first = parse_proc_ip_vs_exact(listing)
    busy = listing.replace("Masq    3      7          1", "Masq    3      9000       77")
    assert parse_proc_ip_vs_exact(busy) == first
    heavier = listing.replace("Masq    3      7", "Masq    4      7")
    table = parse_proc_ip_vs_exact(heavier)
    assert table is not None and table != first
    assert [d.weight for d in next(iter(table.values())).destinations
            if d.forwarding is Forwarding.NAT] == [4]


@pytest.mark.parametrize("line", [
    "FWM  00000001 wlc ",  # IPv4 or IPv6: not shown
    "TCP  C0A81EFE:0051 rr persistent 300 FFFFFFFF",  # the persistence engine: not shown
    "UDP  C0A81EFE:0035 sh ops persistent 300 FFFFFFFF",
    "TCP  C0A81EFE:0051 rr something",  # a word we do not know
    "TCP  C0A81EFE rr ",
    "  -> C0A81E6F:0050      Bypass  1      0          0",
    "  -> 0A000006:0050      Tunnel  2      0          0",  # the tunnel type: not shown
    "  -> C0A81E6F:0050      Route   1      0",
    "  -> nonsense           Route   1      0          0",
    "junk",
])
def test_a_line_the_strict_parse_cannot_describe_exactly_gives_none(line: str) -> None:
    listing = SAME["ipv4, DR, NAT and Local, two services"][0]
    assert parse_proc_ip_vs_exact(listing) is not None
    assert parse_proc_ip_vs_exact(listing + line + "\n") is None
    assert parse_proc_ip_vs_exact(listing.replace("TCP  C0A81EFD", line + "\nTCP  C0A81EFD")
                                  ) is None


def test_a_real_server_before_any_service_gives_none() -> None:
    assert parse_proc_ip_vs_exact(
        HEADER + "  -> C0A81E6F:0050      Route   1      0          0\n") is None


# --- the verification on the fake host ---------------------------------------------------

VIP = "10.200.0.1"
WEB = ServiceKey(Protocol.TCP, ipaddress.ip_address("192.168.30.254"), 80)
SAVE, LINKS, ADDRS = (" ".join(argv) for argv in (IPVS_SAVE, IP_LINKS, IP_ADDRS))
_PROC_NAMES = {Forwarding.DR: "Route", Forwarding.NAT: "Masq", Forwarding.TUN: "Tunnel"}


def listing_of(table: IpvsTable) -> str:
    """/proc/net/ip_vs of a table, as Linux 6.1 prints it (newest real server first: here,
    ipvsadm's order reversed)."""
    lines = [HEADER.rstrip("\n")]
    for svc in table.values():
        key = svc.key
        if key.protocol is Protocol.FWMARK:
            lines.append(f"FWM  {key.port:08X} {svc.scheduler} ")
        elif key.address is not None and key.address.version == 6:
            full = ipaddress.IPv6Address(key.address).exploded
            lines.append(f"{key.protocol.value.upper()}  [{full}]:{key.port:04X} "
                         f"{svc.scheduler} ")
        else:
            lines.append(f"{key.protocol.value.upper()}  {int(key.address or 0):08X}:"
                         f"{key.port:04X} {svc.scheduler} {'ops ' if svc.one_packet else ''}")
        if svc.persistence:
            lines[-1] += f"persistent {svc.persistence} FFFFFFFF"
        for dest in reversed(svc.destinations):
            lines.append(f"  -> {int(dest.address):08X}:{dest.port:04X}      "
                         f"{_PROC_NAMES[dest.forwarding]:<7} {dest.weight:<6} 0          0")
    return "\n".join(lines) + "\n"


def config_text(weights: tuple[int, ...], options: str = "") -> str:
    reals = "".join(f'  {{ address = "10.100.0.{i + 1}", weight = {w} }},\n'
                    for i, w in enumerate(weights))
    return (f'[director]\ninterface = "eth0"\narping_count = 0\n\n[[service]]\nvip = "{VIP}"\n'
            f'port = 80\n{options}\nreal = [\n{reals}]\n')


class Site:
    """A director on the fake host, and the listing file the verification may read."""

    def __init__(self, host: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> None:
        self.host = host
        self.tmp_path = tmp_path
        self.listing = tmp_path / "proc-net-ip_vs"
        monkeypatch.setenv("LVS_TEST_PROC_IP_VS", str(self.listing))

    def director(self, text: str) -> Director:
        return Director(parse_config(text), paths=Paths(
            "lvs-director", str(self.tmp_path / "state"), str(self.tmp_path / "lock")))

    def table(self) -> IpvsTable:
        return parse_ipvs_save(self.host.cmd(*IPVS_SAVE).stdout)

    def reload(self, text: str, listing: str | None = None) -> list[str]:
        """Reload with this config; the listing file holds `listing` during it (None: the
        kernel's table as `ipvsadm -S -n` shows it after the reload's change, made
        beforehand on a copy). The programs the reload started."""
        if listing is not None:
            self.listing.write_text(listing)
        self.host.clear_calls()
        self.director(text).reload()
        return [" ".join(argv) for argv in self.host.argvs()]


@pytest.fixture
def site(fakehost_inprocess: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Site:
    return Site(fakehost_inprocess, tmp_path, monkeypatch)


def weight_edit(weight: int) -> str:
    return f"ipvsadm -e -t {VIP}:80 -r 10.100.0.2:80 -g -w {weight}"


def started(site: Site, options: str = "") -> IpvsTable:
    """Start with weights 1, 1, 1; the table as the kernel would hold it after a reload to
    1, 3, 1 (what the listing shows when the verification reads it)."""
    site.director(config_text((1, 1, 1), options)).start()
    save = site.host.cmd(*IPVS_SAVE).stdout
    changed = save.replace("-r 10.100.0.2:80 -g -w 1", "-r 10.100.0.2:80 -g -w 3")
    assert changed != save
    return parse_ipvs_save(changed)


def test_a_reload_of_one_weight_is_verified_from_the_listing(site: Site) -> None:
    after = started(site)
    assert site.reload(config_text((1, 3, 1)), listing_of(after)) == [
        LINKS, ADDRS, SAVE, weight_edit(3)]  # one `ipvsadm -S -n`: the first observation
    assert site.table() == after
    # Nothing to change: the first observation is the verification's too (no listing read).
    site.listing.write_text("not a listing: any read of it would fail the reload\n")
    assert site.reload(config_text((1, 3, 1))) == [LINKS, ADDRS, SAVE]


def test_a_listing_that_differs_fails_the_reload(site: Site) -> None:
    """As if the kernel had not taken the weight `ipvsadm -e` set: the listing shows the
    old one, and the verification says what is still needed."""
    started(site)
    before = listing_of(site.table())
    with pytest.raises(LvsError, match="still differs from the config") as raised:
        site.reload(config_text((1, 3, 1)), before)
    assert weight_edit(3) in str(raised.value)


# (config options, listing's extra line) that keep the verification on `ipvsadm -S -n`.
FALLBACKS = {
    "persistence": ("persistence = 300", ""),
    "sh, with flags": ('scheduler = "sh"\nscheduler_flags = ["sh-port"]', ""),
    "sh, without flags": ('scheduler = "sh"', ""),
    "mh": ('scheduler = "mh"', ""),
    "a persistent service in the listing": ("", "TCP  0AC80002:0050 rr persistent 300 "
                                                "FFFFFFFF"),
    "a fwmark service in the listing": ("", "FWM  00000007 wlc "),
    "a line it cannot read": ("", "  -> nonsense Route 1 0 0"),
}


@pytest.mark.parametrize("name", FALLBACKS)
def test_what_the_listing_cannot_show_keeps_ipvsadm(site: Site, name: str) -> None:
    options, line = FALLBACKS[name]
    after = started(site, options)
    listing = listing_of(after) + (line + "\n" if line else "")
    assert site.reload(config_text((1, 3, 1), options), listing) == [
        LINKS, ADDRS, SAVE, weight_edit(3), SAVE]


def test_a_fwmark_config_keeps_ipvsadm(site: Site) -> None:
    text = (config_text((1, 1, 1)) + '\n[[service]]\nfwmark = 7\nmatch = [ { vip = "'
            + VIP + '", port = 443 } ]\nreal = [ { address = "10.100.0.9" } ]\n')
    assert not listing_verifies(parse_config(text))
    assert listing_verifies(parse_config(config_text((1, 1, 1))))


def test_without_the_file_the_verification_runs_ipvsadm(site: Site) -> None:
    started(site)
    assert not site.listing.exists()
    assert site.reload(config_text((1, 3, 1))) == [LINKS, ADDRS, SAVE, weight_edit(3), SAVE]


def test_after_a_batch_its_check_serves_the_verification_not_the_listing(site: Site) -> None:
    """`ipvsadm -R`'s check read the table and nothing ran since: that reading is exact
    and free, so the listing (here a stale one) is not read."""
    site.director(config_text((1,))).start()
    stale = listing_of(site.table())
    calls = site.reload(config_text((1, 1, 1, 1, 1)), stale)
    assert calls[-2:] == ["ipvsadm -R", SAVE]
    assert len(site.table()[next(iter(site.table()))].destinations) == 5


@pytest.mark.parametrize(("options", "verifies"), [
    ("", True),
    ('scheduler = "wrr"', True),
    ('protocol = "udp"\none_packet = true', True),
    ("persistence = 300", False),
    ('scheduler = "sh"', False),
    ('scheduler = "mh"\nscheduler_flags = ["mh-port"]', False),
    ('forwarding = "tun"', False),  # a TUN real server always has a tunnel type
])
def test_which_configs_the_listing_verifies(options: str, verifies: bool) -> None:
    assert listing_verifies(parse_config(config_text((1, 1), options))) is verifies


def test_an_ipv6_service_with_ops_keeps_ipvsadm() -> None:
    """The kernel prints `ops` on IPv4 service lines only."""
    text = config_text((1,), 'protocol = "udp"\none_packet = true').replace(
        VIP, "2001:db8::1").replace("10.100.0.1", "2001:db8::11")
    assert not listing_verifies(parse_config(text))
    assert listing_verifies(parse_config(text.replace("one_packet = true", "")))


def test_an_ipv6_service_with_ops_in_the_kernel_keeps_ipvsadm(site: Site) -> None:
    """Where the first observation (ipvsadm) showed an IPv6 service with -o, whoever's, the
    listing would show it without: the verification reads ipvsadm."""
    director = site.director(config_text((1,)))
    table = parse_ipvs_save(f"-A -t {VIP}:80 -s wlc\n"
                            f"-a -t {VIP}:80 -r 10.100.0.1:80 -g -w 1\n")
    site.listing.write_text(listing_of(table))
    assert director._listing_to_verify(HostObservation(ipvs=table)) == table
    ops6 = parse_ipvs_save("-A -u [2001:db8::5]:53 -s rr -o\n")
    assert director._listing_to_verify(HostObservation(ipvs={**table, **ops6})) is None
    without = parse_ipvs_save("-A -u [2001:db8::5]:53 -s rr\n")
    assert director._listing_to_verify(HostObservation(ipvs={**table, **without})) == table


def test_the_first_observation_primes_the_memo_of_a_new_process() -> None:
    """expect_listing_of: the real servers ipvsadm showed are found by the lines the kernel
    lists them by (the same objects come back: the guess at the format holds), and one the
    listing cannot describe in full (thresholds) is not taken for its line."""
    listing, save = SAME["ipv4, DR, NAT and Local, two services"]
    forget_parsed()
    first = parse_ipvs_save(save.replace("10.0.0.5:8080 -m -w 3", "10.0.0.5:8080 -m -w 3 -x 9"))
    expect_listing_of(first)
    table = parse_proc_ip_vs_exact(listing)
    assert table == parse_ipvs_save(save)
    old, new = (t[WEB].destinations for t in (first, table))
    assert [a is b for a, b in zip(old, new)] == [False, False, True, True]  # Masq -x, Local
    expect_listing_of(parse_ipvs_save(save.replace("-w 0", "-w 7")))  # a memo: kept
    assert parse_proc_ip_vs_exact(listing) == table
    forget_parsed()


def test_the_health_path_reads_the_listing_exactly_where_it_can(site: Site) -> None:
    """Director.observe_ipvs (every health apply of the watcher): the exact parse, with
    its memo of the last listing (`ops` read, as the lenient parse does not); the lenient
    one where the listing has what the exact one cannot describe (a fwmark service)."""
    udp = ServiceKey(Protocol.UDP, ipaddress.ip_address("10.200.0.9"), 53)
    table = parse_ipvs_save("-A -t 10.200.0.1:80 -s wrr\n"
                            "-a -t 10.200.0.1:80 -r 10.100.0.1:80 -g -w 2\n"
                            "-A -u 10.200.0.9:53 -s rr -o\n"
                            "-a -u 10.200.0.9:53 -r 10.100.0.1:53 -g -w 1\n")
    director = site.director(config_text((1, 1, 1)))
    site.listing.write_text(listing_of(table))
    seen = director.observe_ipvs().ipvs
    assert seen == table and seen[udp].one_packet
    fwm = parse_ipvs_save("-A -f 7 -s rr\n-a -f 7 -r 10.100.0.3:0 -g -w 1\n")
    site.listing.write_text(listing_of({**table, **fwm}))
    lenient = director.observe_ipvs().ipvs
    assert set(lenient) == set(table) and not lenient[udp].one_packet


def test_a_listing_read_for_health_primes_the_memo_of_the_next_reload(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher reads the listing for its health applies; its first reload's
    `ipvsadm -S -n` then finds every plain line in the memo (probes.expect_save_of), and
    reads the same table a cold parse does."""
    from lvs_scripts import probes

    save = ("-A -t 10.200.0.1:80 -s wrr\n" + "".join(
        f"-a -t 10.200.0.1:80 -r 10.100.0.{n}:80 -g -w {n % 3}\n" for n in range(1, 40)) +
        "-A -u 10.200.0.9:53 -s rr\n-a -u 10.200.0.9:53 -r 10.100.1.1:5353 -m -w 1\n"
        "-a -u 10.200.0.9:53 -r 10.100.1.2:53 -m -w 2 -x 10\n")
    table = parse_ipvs_save(save)
    forget_parsed()
    site.listing.write_text(listing_of(table))
    site.director(config_text((1, 1, 1))).observe_ipvs()
    read = count_calls(monkeypatch, probes._PlainReader, "__call__", lambda _self, line: line)
    assert parse_ipvs_save(save + "\n") == table
    # Only the lines that are not plain (services, the one with -x, the blank) were read.
    assert [line for line in read if probes._PLAIN_DEST.fullmatch(line)] == []
    assert len(read) == 4
    forget_parsed()


def test_a_new_process_finds_the_configured_real_servers_by_their_lines(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI run's first observation: the memo of `ipvsadm -S -n` lines is empty, and the
    config's real servers are taken under the lines ipvsadm prints them by
    (probes.expect_save_of): only lines that differ from the config are read, and the
    table is the one a cold parse reads."""
    from lvs_scripts import probes

    text = config_text((1, 1, 1))
    site.director(text).start()
    save = site.host.cmd(*IPVS_SAVE).stdout
    site.host.cmd("ipvsadm", "-e", "-t", f"{VIP}:80", "-r", "10.100.0.2:80", "-g", "-w", "0")
    forget_parsed()
    read = count_calls(monkeypatch, probes._PlainReader, "__call__", lambda _self, line: line)
    director = site.director(text)
    seen = director.observe(director.state()).ipvs
    assert [line for line in read if probes._PLAIN_DEST.fullmatch(line)] == [
        f"-a -t {VIP}:80 -r 10.100.0.2:80 -g -w 0"]  # the one not as configured
    forget_parsed()
    assert seen == parse_ipvs_save(site.host.cmd(*IPVS_SAVE).stdout) != parse_ipvs_save(save)
    forget_parsed()


def test_a_first_start_does_not_guess_lines_for_an_empty_table(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before a first start the state file owns no service: the first observation does
    not render the config's lines (the table holds none of them); the verification, after
    the batch, does."""
    from lvs_scripts import probes

    forget_parsed()
    primed = count_calls(monkeypatch, probes, "expect_save_of")
    monkeypatch.setattr("lvs_scripts.observe.expect_save_of", probes.expect_save_of)
    site.director(config_text((1, 1, 1))).start()
    assert len(primed) == 1  # the verification's observation only
    forget_parsed()
