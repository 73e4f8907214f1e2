"""Reading the real servers of a service (config._reals): the common entry by an inline
path, everything else by the general one (config._real), with one Config and one first
error for every input.

The table's messages are pinned literally: each is what the code before the inline path
(and before the address indexes keyed by packed address) said for that text, the first
error where an entry has several faults. A valid text must also read to the same Config
with the inline path turned off: every entry then goes through _real, the rules as they
always were. These prove equality and pass on either code; the call counts at the end
are what fail without the work saved."""

from __future__ import annotations

import ipaddress
import json
import random
import sys
from collections.abc import Callable
from types import FrameType

import pytest

from lvs_scripts import config as config_module
from lvs_scripts.config import parse_config
from lvs_scripts.errors import ConfigError
from tests.test_scale import python_calls

HEAD = '[director]\ninterface = "eth0"\narping_count = 0\n'
DIRECTOR = HEAD + 'gateway = "10.0.0.254"\ndip = "10.0.0.2/24"\ndip_interface = "eth1"\n'
NAT = 'forwarding = "nat"\n'
V6 = "2001:db8::1"


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, escapes included
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    return repr(value)


def e(address: object = None, **keys: object) -> str:
    """One `real` entry: `e("10.0.0.1", weight=2)`; keys in the order given."""
    pairs = ({"address": address} if address is not None else {}) | keys
    return "{ " + ", ".join(f"{key} = {toml(value)}" for key, value in pairs.items()) + " }"


def svc(*entries: str, vip: str = "10.200.0.1", extra: str = "") -> str:
    return f'[[service]]\nvip = "{vip}"\nport = 80\n{extra}real = [{", ".join(entries)}]\n'


def fwmark(*entries: str, extra: str = "") -> str:
    return ('[[service]]\nfwmark = 1\nmatch = [{ vip = "10.200.0.1", port = 80 }, '
            f'{{ vip = "10.200.0.2", port = 443 }}]\n{extra}real = [{", ".join(entries)}]\n')


OK1, OK2 = e("10.100.0.1"), e("10.100.0.2")
SORRY = "sorry_server = {}\n".format

CASES = {
    # valid
    "plain": HEAD + svc(e("10.100.0.1", weight=1), OK2, e("10.100.0.3", port=80, weight=0),
                        e("10.100.0.4", weight=65535), "{ weight = 3, address = \"10.100.0.5\" }"),
    "thresholds": HEAD + svc(e("10.100.0.1", upper=10, lower=5), e("10.100.0.2", upper=0)),
    "nat other ports": HEAD + svc(e("10.100.0.1", port=8080), e("10.100.0.1", port=8081), OK2,
                                  e("10.100.0.3", port=65535), extra=NAT),
    "ipv6": HEAD + svc(e("2001:db8::10"), e("2001:DB8::11", weight=2), vip=V6),
    "tun": HEAD + svc(OK1, e("10.100.0.2", weight=5), extra='forwarding = "tun"\n'),
    "two services share a real": HEAD + svc(OK1) + svc(OK1, vip="10.200.0.2"),
    "fwmark": HEAD + fwmark(OK1, e("10.100.0.2", weight=4)),
    "fwmark nat port": HEAD + fwmark(e("10.100.0.1", port=8080), OK1, extra=NAT),
    "sorry server": HEAD + svc(OK1, extra=SORRY('"10.100.0.9:80"')),
    "director": DIRECTOR + svc(OK1),
    "empty reals": HEAD + svc(),
    "empty nat reals": HEAD + svc(extra=NAT),
    "nat ipv6 beside a v4 service": DIRECTOR + svc(OK1) + svc(vip=V6, extra=NAT),
    "nat ipv6 dr real nat_gateway": HEAD + '[realserver]\nnat_gateway = "10.0.0.1"\n' + svc(
        e("2001:db8::10"), vip=V6),
    "sorry other port of a nat real": HEAD + svc(OK1, e("10.100.0.2", port=90),
                                                 extra=NAT + SORRY('"10.100.0.2:91"')),
    # bad addresses
    "address 256": HEAD + svc(e("10.100.0.256")),
    "address leading zero": HEAD + svc(OK1, e("10.100.0.01")),
    "address empty": HEAD + svc(e("")),
    "address words": HEAD + svc(e("server1")),
    "address loopback": HEAD + svc(e("127.0.0.2")),
    "address unspecified": HEAD + svc(e("0.0.0.0")),  # noqa: S104 - nothing binds
    "address multicast": HEAD + svc(e("224.0.0.1")),
    "address broadcast": HEAD + svc(e("255.255.255.255")),
    "address 240/4": HEAD + svc(e("240.0.0.1")),
    "address scope": HEAD + svc(e("fe80::1%eth0"), vip=V6),
    "address v4 mapped": HEAD + svc(e("::ffff:10.0.0.1"), vip=V6),
    "address int": HEAD + svc(e(167772161)),
    "address bool": HEAD + svc(e(True)),
    "address control": HEAD + svc(e("10.100.0.1\n")),
    "address non-ascii": HEAD + svc(e("10.100.0.\u0661")),
    "address nul": HEAD + svc(e("10.100.0.1\0")),
    "address trailing space": HEAD + svc(e("10.100.0.1 ")),
    "address missing": HEAD + svc(e(weight=1)),
    "address empty table": HEAD + svc("{}"),
    "address with port": HEAD + svc(e("10.100.0.1:80")),
    # families, the VIP
    "v6 under v4": HEAD + svc(OK1, e("2001:db8::10")),
    "v4 under v6": HEAD + svc(OK1, vip=V6),
    "the vip": HEAD + svc(OK1, e("10.200.0.1", weight=2)),
    "the v6 vip spelled otherwise": HEAD + svc(e("2001:0DB8:0::1"), vip=V6),
    # duplicates
    "duplicate": HEAD + svc(OK1, OK2, e("10.100.0.1", weight=3)),
    "duplicate v6 two spellings": HEAD + svc(e("2001:db8::10"), e("2001:db8:0:0:0:0:0:10"),
                                             vip=V6),
    "duplicate nat same port": HEAD + svc(e("10.100.0.1", port=8080),
                                          e("10.100.0.1", port=8080), extra=NAT),
    "duplicate nat default port": HEAD + svc(e("10.100.0.1", port=80), OK1, extra=NAT),
    "duplicate fwmark": HEAD + fwmark(OK1, OK1),
    # ports
    "dr port differs": HEAD + svc(e("10.100.0.1", port=81)),
    "dr port 0": HEAD + svc(e("10.100.0.1", port=0)),
    "nat port 70000": HEAD + svc(e("10.100.0.1", port=70000), extra=NAT),
    "nat port 0": HEAD + svc(e("10.100.0.1", port=0), extra=NAT),
    "port bool": HEAD + svc(e("10.100.0.1", port=True), extra=NAT),
    "port string": HEAD + svc(e("10.100.0.1", port="80")),
    "fwmark dr port": HEAD + fwmark(e("10.100.0.1", port=80)),
    "fwmark dr port 0": HEAD + fwmark(e("10.100.0.1", port=0)),
    "fwmark nat port 0": HEAD + fwmark(e("10.100.0.1", port=0), extra=NAT),
    # weights
    "weight 65536": HEAD + svc(e("10.100.0.1", weight=65536)),
    "weight -1": HEAD + svc(e("10.100.0.1", weight=-1)),
    "weight true": HEAD + svc(e("10.100.0.1", weight=True)),
    "weight false": HEAD + svc(e("10.100.0.1", weight=False)),
    "weight string": HEAD + svc(e("10.100.0.1", weight="1")),
    "weight float": HEAD + svc(e("10.100.0.1", weight=1.0)),
    "weight list": HEAD + svc(e("10.100.0.1", weight=[1])),
    # keys, thresholds, entries
    "unknown key": HEAD + svc(e("10.100.0.1", wieght=1)),
    "upper/lower: lower without upper": HEAD + svc(e("10.100.0.1", lower=5)),
    "upper/lower: lower above upper": HEAD + svc(e("10.100.0.1", upper=5, lower=6)),
    "upper/lower: upper negative": HEAD + svc(e("10.100.0.1", upper=-1)),
    "entry a string": HEAD + svc(OK1, '"10.100.0.2"'),
    "entry an int": HEAD + svc("1"),
    "entry a list": HEAD + svc('["10.100.0.1"]'),
    "real not a list": HEAD + '[[service]]\nvip = "10.200.0.1"\nport = 80\nreal = "10.0.0.1"\n',
    "real missing": HEAD + '[[service]]\nvip = "10.200.0.1"\nport = 80\n',
    # several faults in one entry: the first one reported
    "vip and weight": HEAD + svc(e("10.200.0.1", weight=70000)),
    "bad address and unknown key": HEAD + svc(e("bad", wieght=1)),
    "family and port": HEAD + svc("{ port = 81, address = \"2001:db8::10\" }"),
    "port and weight": HEAD + svc(e("10.100.0.1", port=81, weight=True)),
    "weight and thresholds": HEAD + svc(e("10.100.0.1", weight=-1, lower=3)),
    "duplicate and weight": HEAD + svc(OK1, e("10.100.0.1", weight=-1)),
    "loopback and port": HEAD + svc(e("127.0.0.1", port=81)),
    # the other addresses of the config
    "real is another vip": HEAD + svc(OK1, e("10.200.0.2")) + svc(OK2, vip="10.200.0.2"),
    "real is a later service's vip": HEAD + svc(OK1) + svc(
        e("10.200.0.3"), e("10.200.0.1"), vip="10.200.0.2") + svc(OK2, vip="10.200.0.3"),
    "real is the gateway": DIRECTOR + svc(OK1, e("10.0.0.254")),
    "real is the dip": DIRECTOR + svc(OK1, e("10.0.0.2")),
    "dip before gateway": DIRECTOR + svc(e("10.0.0.2"), e("10.0.0.254")) + svc(
        e("10.200.0.1"), vip="10.200.0.2"),
    "first taken wins": DIRECTOR + svc(OK1, e("10.0.0.2"), e("10.200.0.2"), e("10.0.0.254")
                                       ) + svc(OK1, vip="10.200.0.2"),
    "nat first taken": DIRECTOR + svc(e("10.200.0.2", port=81), e("10.100.0.1", port=82),
                                      e("10.200.0.2", port=83), extra=NAT) + svc(
        OK1, vip="10.200.0.2"),
    "v6 real is another v6 vip spelled otherwise": HEAD + svc(
        e("2001:db8::10"), e("2001:db8:0::2"), vip=V6) + svc(e("2001:db8::11"),
                                                              vip="2001:db8::2"),
    "fwmark real is a match vip": HEAD + fwmark(OK1, e("10.200.0.2"), e("10.200.0.1")),
    "fwmark real is a plain vip": HEAD + fwmark(OK1) + svc(OK1, vip="10.200.0.9") + svc(
        e("10.200.0.9"), vip="10.200.0.8"),
    "fwmark sorry is a real": HEAD + fwmark(OK1, OK2, extra=SORRY('"10.100.0.2"')),
    "sorry is a real": HEAD + svc(OK1, OK2, extra=SORRY('"10.100.0.2:80"')),
    "sorry is a real by default port": HEAD + svc(OK1, OK2, extra=SORRY('"10.100.0.2"')),
    "sorry is a nat real": HEAD + svc(OK1, e("10.100.0.2", port=90),
                                      extra=NAT + SORRY('"10.100.0.2:90"')),
    "sorry is a v6 real spelled otherwise": HEAD + svc(
        e("2001:db8::10"), vip=V6, extra=SORRY('"[2001:db8:0::10]:80"')),
    "nat ipv6 real, v4 dip": DIRECTOR + svc(OK1) + svc(e("2001:db8::10"), vip=V6, extra=NAT),
    "nat ipv6 real, v4 nat_gateway": HEAD + '[realserver]\nnat_gateway = "10.0.0.1"\n' + svc(
        e("2001:db8::10"), vip=V6, extra=NAT),
}

# What the code before this change said for each text (None: valid), after "<string>: ".
EXPECTED: dict[str, str | None] = {
    'plain': None,
    'thresholds': None,
    'nat other ports': None,
    'ipv6': None,
    'tun': None,
    'two services share a real': None,
    'fwmark': None,
    'fwmark nat port': None,
    'sorry server': None,
    'director': None,
    'empty reals': None,
    'empty nat reals': None,
    'nat ipv6 beside a v4 service': None,
    'nat ipv6 dr real nat_gateway': None,
    'sorry other port of a nat real': None,
    'address 256':
        "service[0].real[0].address = '10.100.0.256': must be an IP address of a host",
    'address leading zero':
        "service[0].real[1].address = '10.100.0.01': must be an IP address of a host",
    'address empty':
        "service[0].real[0].address = '': must be an IP address of a host",
    'address words':
        "service[0].real[0].address = 'server1': must be an IP address of a host",
    'address loopback':
        "service[0].real[0].address = '127.0.0.2': must be an IP address of a host",
    'address unspecified':
        "service[0].real[0].address = '0.0.0.0': must be an IP address of a host",
    'address multicast':
        "service[0].real[0].address = '224.0.0.1': must be an IP address of a host",
    'address broadcast':
        "service[0].real[0].address = '255.255.255.255': must be an IP address of a host",
    'address 240/4':
        "service[0].real[0].address = '240.0.0.1': must be an IP address of a host",
    'address scope':
        "service[0].real[0].address = 'fe80::1%eth0': must be an IP address of a host",
    'address v4 mapped':
        "service[0].real[0].address = '::ffff:10.0.0.1': must be an IP address of a host",
    'address int':
        'service[0].real[0].address = 167772161: must be a string',
    'address bool':
        'service[0].real[0].address = True: must be a string',
    'address control':
        "service[0].real[0].address = '10.100.0.1\\n': must be printable ASCII (no control"
        ' characters or newlines)',
    'address non-ascii':
        "service[0].real[0].address = '10.100.0.\u0661': must be printable ASCII (no control"
        ' characters or newlines)',
    'address nul':
        "service[0].real[0].address = '10.100.0.1\\x00': must be printable ASCII (no"
        ' control characters or newlines)',
    'address trailing space':
        "service[0].real[0].address = '10.100.0.1 ': must be an IP address of a host",
    'address missing':
        'service[0].real[0].address: is required',
    'address empty table':
        'service[0].real[0].address: is required',
    'address with port':
        "service[0].real[0].address = '10.100.0.1:80': must be an IP address of a host",
    'v6 under v4':
        "service[0].real[1].address = '2001:db8::10': is IPv6 but the VIP is IPv4; IPVS"
        ' cannot mix address families',
    'v4 under v6':
        "service[0].real[0].address = '10.100.0.1': is IPv4 but the VIP is IPv6; IPVS"
        ' cannot mix address families',
    'the vip':
        "service[0].real[1].address = '10.200.0.1': is the service's own VIP",
    'the v6 vip spelled otherwise':
        "service[0].real[0].address = '2001:db8::1': is the service's own VIP",
    'duplicate':
        "service[0].real[2].address = '10.100.0.1': duplicates service[0].real[0]",
    'duplicate v6 two spellings':
        "service[0].real[1].address = '2001:db8::10': duplicates service[0].real[0]",
    'duplicate nat same port':
        "service[0].real[1].address = '10.100.0.1': duplicates service[0].real[0]",
    'duplicate nat default port':
        "service[0].real[1].address = '10.100.0.1': duplicates service[0].real[0]",
    'duplicate fwmark':
        "service[0].real[1].address = '10.100.0.1': duplicates service[0].real[0]",
    'dr port differs':
        'service[0].real[0].port = 81: differs from the service port 80; only forwarding'
        ' = "nat" can change the port',
    'dr port 0':
        'service[0].real[0].port = 0: must be an integer from 1 to 65535',
    'nat port 70000':
        'service[0].real[0].port = 70000: must be an integer from 1 to 65535',
    'nat port 0':
        'service[0].real[0].port = 0: must be an integer from 1 to 65535',
    'port bool':
        'service[0].real[0].port = True: must be an integer from 1 to 65535',
    'port string':
        "service[0].real[0].port = '80': must be an integer from 1 to 65535",
    'fwmark dr port':
        'service[0].real[0].port = 80: is set, but a fwmark service forwards to the port'
        ' the client asked for; only forwarding = "nat" can change the port',
    'fwmark dr port 0':
        'service[0].real[0].port = 0: must be an integer from 1 to 65535',
    'fwmark nat port 0':
        'service[0].real[0].port = 0: must be an integer from 1 to 65535',
    'weight 65536':
        'service[0].real[0].weight = 65536: must be an integer from 0 to 65535',
    'weight -1':
        'service[0].real[0].weight = -1: must be an integer from 0 to 65535',
    'weight true':
        'service[0].real[0].weight = True: must be an integer from 0 to 65535',
    'weight false':
        'service[0].real[0].weight = False: must be an integer from 0 to 65535',
    'weight string':
        "service[0].real[0].weight = '1': must be an integer from 0 to 65535",
    'weight float':
        'service[0].real[0].weight = 1.0: must be an integer from 0 to 65535',
    'weight list':
        'service[0].real[0].weight = [1]: must be an integer from 0 to 65535',
    'unknown key':
        'service[0].real[0].wieght = 1: unknown key (allowed here: address, port, weight,'
        ' upper, lower)',
    'upper/lower: lower without upper':
        'service[0].real[0].lower = 5: needs upper (new connections stop at upper and'
        ' start again below lower)',
    'upper/lower: lower above upper':
        'service[0].real[0].lower = 6: must not be above upper (5)',
    'upper/lower: upper negative':
        'service[0].real[0].upper = -1: must be an integer from 0 to 2147483647',
    'entry a string':
        "service[0].real[1] = '10.100.0.2': must be a table",
    'entry an int':
        'service[0].real[0] = 1: must be a table',
    'entry a list':
        "service[0].real[0] = ['10.100.0.1']: must be a table",
    'real not a list':
        "service[0].real = '10.0.0.1': must be a list of tables",
    'real missing':
        'service[0].real: is required (a list of real servers)',
    'vip and weight':
        "service[0].real[0].address = '10.200.0.1': is the service's own VIP",
    'bad address and unknown key':
        'service[0].real[0].wieght = 1: unknown key (allowed here: address, port, weight,'
        ' upper, lower)',
    'family and port':
        "service[0].real[0].address = '2001:db8::10': is IPv6 but the VIP is IPv4; IPVS"
        ' cannot mix address families',
    'port and weight':
        'service[0].real[0].port = 81: differs from the service port 80; only forwarding'
        ' = "nat" can change the port',
    'weight and thresholds':
        'service[0].real[0].weight = -1: must be an integer from 0 to 65535',
    'duplicate and weight':
        'service[0].real[1].weight = -1: must be an integer from 0 to 65535',
    'loopback and port':
        "service[0].real[0].address = '127.0.0.1': must be an IP address of a host",
    'real is another vip':
        "service[0].real[1].address = '10.200.0.2': is a VIP of this config; a real"
        ' server cannot be a VIP',
    "real is a later service's vip":
        "service[1].real[0].address = '10.200.0.3': is a VIP of this config; a real"
        ' server cannot be a VIP',
    'real is the gateway':
        "service[0].real[1].address = '10.0.0.254': is also director.gateway; a real"
        ' server is a host of its own',
    'real is the dip':
        "service[0].real[1].address = '10.0.0.2': is also director.dip; a real server is"
        ' a host of its own',
    'dip before gateway':
        "service[0].real[0].address = '10.0.0.2': is also director.dip; a real server is"
        ' a host of its own',
    'first taken wins':
        "service[0].real[1].address = '10.0.0.2': is also director.dip; a real server is"
        ' a host of its own',
    'nat first taken':
        "service[0].real[0].address = '10.200.0.2': is a VIP of this config; a real"
        ' server cannot be a VIP',
    'v6 real is another v6 vip spelled otherwise':
        "service[0].real[1].address = '2001:db8::2': is a VIP of this config; a real"
        ' server cannot be a VIP',
    'fwmark real is a match vip':
        "service[0].real[1].address = '10.200.0.2': is a match VIP of the service",
    'fwmark real is a plain vip':
        "service[2].real[0].address = '10.200.0.9': is a VIP of this config; a real"
        ' server cannot be a VIP',
    'fwmark sorry is a real':
        "service[0].sorry_server = '10.100.0.2': is also service[0].real[1]; the sorry"
        ' server must be another host (it is in the table only while no real server is'
        ' up)',
    'sorry is a real':
        "service[0].sorry_server = '10.100.0.2:80': is also service[0].real[1]; the sorry"
        ' server must be another host (it is in the table only while no real server is'
        ' up)',
    'sorry is a real by default port':
        "service[0].sorry_server = '10.100.0.2': is also service[0].real[1]; the sorry"
        ' server must be another host (it is in the table only while no real server is'
        ' up)',
    'sorry is a nat real':
        "service[0].sorry_server = '10.100.0.2:90': is also service[0].real[1]; the sorry"
        ' server must be another host (it is in the table only while no real server is'
        ' up)',
    'sorry is a v6 real spelled otherwise':
        "service[0].sorry_server = '[2001:db8:0::10]:80': is also service[0].real[0]; the"
        ' sorry server must be another host (it is in the table only while no real server'
        ' is up)',
    'nat ipv6 real, v4 dip':
        'director.dip = \'10.0.0.2\': is IPv4 but service[1] (forwarding = "nat") is IPv6:'
        ' its real servers need a default route of that family via the director',
    'nat ipv6 real, v4 nat_gateway':
        'realserver.nat_gateway = \'10.0.0.1\': is IPv4 but service[0] (forwarding = "nat")'
        ' is IPv6: its real servers need a default route of that family via the director',
}


def outcome(text: str) -> tuple[str, str]:
    try:
        config = parse_config(text)
    except ConfigError as err:
        return ("error", str(err))
    return ("ok", repr(config))


def general_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry through _real: no entry's keys are a subset of the empty set but {},
    which the inline path gives to _real as well (no address)."""
    monkeypatch.setattr(config_module, "_PLAIN_REAL", frozenset())


def test_the_table_has_an_expectation_for_each_text() -> None:
    assert CASES.keys() == EXPECTED.keys()


@pytest.mark.parametrize("name", list(CASES))
def test_each_text_reads_as_before(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text, expected = CASES[name], EXPECTED[name]
    inline = outcome(text)
    if expected is None:
        assert inline[0] == "ok", inline[1]
        config = parse_config(text)
    else:
        assert inline == ("error", f"<string>: {expected}")
    general_only(monkeypatch)
    # repr (in outcome) as well as ==: == takes 1 for True, IPv4Address(1) for 1.
    assert outcome(text) == inline
    if expected is None:
        assert parse_config(text) == config


# --- random entries: the inline path against the general one --------------------------

ADDRESSES = ["10.100.0.1", "10.100.0.2", "10.100.0.3", "10.200.0.1", "10.200.0.2",
             "10.0.0.2", "10.0.0.254", "2001:db8::10", "2001:db8:0::10", "2001:db8::1",
             "127.0.0.1", "0.0.0.0", "10.1.1.01", "1.2.3.4 ", "224.1.1.1", "", 5,  # noqa: S104
             True]
VALUES: list[object] = [0, 1, 80, 81, 65535, 65536, -1, True, "80", 1.0, 8080, 3]


def random_entry(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return rng.choice(['"10.100.0.1"', "1", "[]"])
    keys: dict[str, object] = {}
    if rng.random() < 0.95:
        keys["address"] = rng.choice(ADDRESSES)
    for key in rng.sample(["port", "weight", "upper", "lower", "wieght"],
                          rng.choice([0, 1, 1, 2, 2, 3])):
        keys[key] = rng.choice(VALUES)
    return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in keys.items()) + " }"


def random_text(rng: random.Random) -> str:
    parts = [rng.choice([HEAD, DIRECTOR])]
    for index in range(rng.choice([1, 2, 3])):
        extra = rng.choice(["", NAT, 'forwarding = "tun"\n']) + rng.choice(
            ["", "", SORRY('"10.100.0.2"'), SORRY('"10.100.0.3:8080"')])
        entries = [random_entry(rng) for _ in range(rng.choice([0, 1, 2, 4, 6]))]
        if rng.random() < 0.2:
            parts.append(fwmark(*entries, extra=extra.replace(":8080", "")).replace(
                "fwmark = 1", f"fwmark = {index + 1}"))
        else:
            vip = rng.choice(["10.200.0.1", "10.200.0.2", V6])
            parts.append(svc(*entries, vip=vip, extra=extra).replace(
                "port = 80", f"port = {80 + index}"))
    return "\n".join(parts)


def test_random_entries_read_the_same_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(14)
    texts = [random_text(rng) for _ in range(600)]
    inline = [outcome(text) for text in texts]
    general_only(monkeypatch)
    for text, seen in zip(texts, inline):
        assert outcome(text) == seen, text
    # the mix covers valid texts and many kinds of error
    assert sum(kind == "ok" for kind, _ in inline) > 30
    assert len({text.split(": ")[-1] for kind, text in inline if kind == "error"}) > 12


# --- the work saved, counted ------------------------------------------------------------

COMPARISONS = {getattr(cls, name).__code__ for cls in (ipaddress.IPv4Address,
                                                       ipaddress.IPv6Address)
               for name in ("__hash__", "__eq__")}


def comparisons(operation: Callable[[], object]) -> int:
    """How many times `operation` hashes or compares an ipaddress address: Python
    functions in ipaddress, about 1 us each."""
    count = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event == "call" and frame.f_code in COMPARISONS:
            count += 1

    sys.setprofile(profile)
    try:
        operation()
    finally:
        sys.setprofile(None)
    return count


def bench_entries(count: int) -> list[str]:
    """bench_lab.ours_config's entries: `{address="10.100.0.1",weight=1}`."""
    first = ipaddress.IPv4Address("10.100.0.1")
    return [f'{{address="{first + n}",weight=1}}' for n in range(count)]


def test_reading_10000_real_servers_hashes_no_address_of_theirs() -> None:
    """A hash for the duplicate check, another for the check against the VIPs, a
    comparison with the VIP: three ipaddress calls per real server were a fifth of
    reading the config. Keyed by packed address and compared as bytes, none is left."""
    count = 10_000
    text = HEAD + svc(*bench_entries(count))
    assert comparisons(lambda: parse_config(text)) < 20
    # and no Python call per entry but the objects built: the IPv4Address (__init__
    # and its check) and the Destination (a dataclass's __init__)
    assert python_calls(lambda: parse_config(text)) < 3.2 * count
    # the count does see a hash
    assert comparisons(lambda: {ipaddress.IPv4Address("10.0.0.1")}) == 1


def test_a_fwmark_service_compares_no_real_server_with_its_match_vips() -> None:
    """Each real server was compared with every match VIP and with the sorry server."""
    count = 2000
    text = HEAD + fwmark(*bench_entries(count), extra=SORRY('"10.100.200.1"'))
    assert comparisons(lambda: parse_config(text)) < 20
    assert len(parse_config(text).services[0].destinations) == count
