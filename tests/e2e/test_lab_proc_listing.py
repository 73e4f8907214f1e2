"""The strict parse of /proc/net/ip_vs (probes.parse_proc_ip_vs_exact, the verification's
reading after single ipvsadm commands) against `ipvsadm -S -n` on the real kernel: equal
for the tables it reads (IPv4 and IPv6, DR, NAT, Local, ops), None for those it cannot
describe (FWM, persistent, TUN), and the kernel's own gaps that the Director rules out
around it (an IPv6 service's ops, scheduler flags) shown as they are.

In a network namespace of its own: no topology needed, nothing left behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from lvs_scripts.probes import parse_ipvs_save, parse_proc_ip_vs, parse_proc_ip_vs_exact
from tests.e2e.labhosts import LAB_ONLY

pytestmark = [pytest.mark.lab, LAB_ONLY]

NS = "lvs-procv"


def in_ns(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(["ip", "netns", "exec", NS, *argv], input=stdin, text=True,
                          capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


@pytest.fixture
def ns() -> Iterator[None]:
    subprocess.run(["ip", "netns", "add", NS], check=True, timeout=60)
    try:
        in_ns("ip", "link", "set", "lo", "up")  # 127.0.0.1 local: a `Local` real server
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False, timeout=60)


def table_of(rules: str) -> tuple[str, str]:
    """Load the rules; the kernel's listing and `ipvsadm -S -n` of them."""
    in_ns("ipvsadm", "-C")
    in_ns("ipvsadm", "-R", stdin=rules)
    return in_ns("cat", "/proc/net/ip_vs"), in_ns("ipvsadm", "-S", "-n")


# Real servers added out of address order: the kernel lists the newest first, ipvsadm
# sorts them.
EXACT = """\
-A -t 10.1.0.1:80 -s wrr
-a -t 10.1.0.1:80 -r 10.2.0.3:80 -g -w 1
-a -t 10.1.0.1:80 -r 10.2.0.1:8080 -m -w 3
-a -t 10.1.0.1:80 -r 127.0.0.1:80 -g -w 2
-a -t 10.1.0.1:80 -r 10.2.0.2:80 -g -w 0
-A -u 10.1.0.1:53 -s rr -o
-a -u 10.1.0.1:53 -r 10.2.0.2:53 -g -w 2
-a -u 10.1.0.1:53 -r 10.2.0.1:53 -g -w 1
-A -t [2001:db8::1]:443 -s wlc
-a -t [2001:db8::1]:443 -r [2001:db8::12]:443 -g -w 5
-a -t [2001:db8::1]:443 -r [2001:db8::11]:80 -m -w 1
-a -t [2001:db8::1]:443 -r [2001:db8::11]:443 -g -w 4
-A -t 10.1.0.2:443 -s lc
"""


def test_the_strict_parse_equals_ipvsadm_save_on_the_kernel(ns: None) -> None:
    listing, save = table_of(EXACT)
    expected = parse_ipvs_save(save)
    assert len(expected) == 4 and any(svc.one_packet for svc in expected.values())
    assert parse_proc_ip_vs_exact(listing) == expected
    assert parse_proc_ip_vs_exact(listing) == expected  # again, from the memo
    # 127.0.0.1, the namespace's own: Linux 6.1 lists it as Route (`Local`, DR to ipvsadm,
    # is the unit tests' to read).
    assert "7F000001:0050      Route" in listing
    # An edit of one weight, as a reload's `ipvsadm -e`: seen, with counters or not.
    in_ns("ipvsadm", "-e", "-t", "10.1.0.1:80", "-r", "10.2.0.3:80", "-g", "-w", "7")
    after = parse_proc_ip_vs_exact(in_ns("cat", "/proc/net/ip_vs"))
    assert after == parse_ipvs_save(in_ns("ipvsadm", "-S", "-n")) != expected


@pytest.mark.parametrize("rules", [
    "-A -f 7 -s wlc\n-a -f 7 -r 10.2.0.1:0 -g -w 1\n",
    "-A -t 10.1.0.9:80 -s rr -p 300\n-a -t 10.1.0.9:80 -r 10.2.0.1:80 -g -w 1\n",
    "-A -t 10.1.0.9:80 -s rr\n-a -t 10.1.0.9:80 -r 10.2.0.1:80 -i -w 1\n",
], ids=["fwmark", "persistent", "tun"])
def test_what_the_listing_cannot_describe_gives_none(ns: None, rules: str) -> None:
    listing, _ = table_of(EXACT + rules)
    assert parse_proc_ip_vs_exact(listing) is None
    assert parse_proc_ip_vs(listing)  # the lenient parse (health) still reads it


def test_the_kernels_gaps_the_director_rules_out(ns: None) -> None:
    """An IPv6 service's `ops` and any scheduler flags are not in the listing: the strict
    parse cannot see them, which is why listing_verifies excludes configs with sh/mh or
    IPv6 one_packet, and the Director any first observation with an IPv6 ops service."""
    listing, save = table_of("-A -u [2001:db8::1]:53 -s rr -o\n"
                             "-A -t 10.1.0.1:80 -s sh -b sh-port\n")
    saved = parse_ipvs_save(save)
    seen = parse_proc_ip_vs_exact(listing)
    assert seen is not None and seen.keys() == saved.keys()
    assert [(s.one_packet, s.flags) for s in saved.values()] != [
        (s.one_packet, s.flags) for s in (seen[k] for k in saved)]
    assert "ops" not in listing
