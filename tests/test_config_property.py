"""Property: whatever the text, parse_config returns a Config or raises ConfigError, and
nothing else; a Config it returns can be planned against an empty host without an
exception, and every planned argv is a tuple of strings without newlines or blanks.

Documents come three ways: dicts shaped like the config with a mix of valid and invalid
values for every key, serialised by the small TOML writer below; the seed example with
random edits; raw random text.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lvs_scripts.config import parse_config
from lvs_scripts.errors import ConfigError
from lvs_scripts.model import SCHEDULERS, Config
from lvs_scripts.plan_director import plan_director_start
from lvs_scripts.plan_realserver import plan_realserver_start
from lvs_scripts.probes import HostObservation
from lvs_scripts.state import State

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed-dr.toml"
PATH = "/etc/lvs/prop.toml"
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- a tiny TOML writer ----------------------------------------------------------------------
def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):  # NaN is not generated: it is not equal to itself
        text = ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    elif isinstance(value, str):
        text = toml_string(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(toml_value(item) for item in value) + "]"
    elif isinstance(value, dict):
        items = ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items())
        text = "{ " + items + " }" if items else "{}"
    else:
        raise TypeError(type(value))
    return text


def toml_document(doc: dict[str, Any], headers: bool) -> str:
    """Top-level scalars first; with headers, tables as [t] and lists of tables as [[t]]."""
    inline = []
    sections = []
    for key, value in doc.items():
        name = toml_string(key)
        if headers and isinstance(value, dict):
            body = "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in value.items())
            sections.append(f"[{name}]\n{body}")
        elif headers and isinstance(value, list) and value and all(
                isinstance(item, dict) for item in value):
            for item in value:
                body = "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in item.items())
                sections.append(f"[[{name}]]\n{body}")
        else:
            inline.append(f"{name} = {toml_value(value)}\n")
    return "".join(inline) + "\n".join(sections)


# --- values: plausible, borderline and wrong ----------------------------------------------------
V4 = [f"10.0.0.{n}" for n in range(1, 6)]
V6 = [f"2001:db8::{n}" for n in range(1, 6)]
BAD_ADDRESSES = ["0.0.0.0",  # noqa: S104 - test data, nothing binds
                 "::", "127.0.0.1", "::1", "224.0.0.1", "ff02::1",
                 "192.168.30.300", "10.0.0.1/24", "2001:db8::1/64", "fe80::1%eth0",
                 "fe80::1%$(id)", "www.example.com", "", " 10.0.0.1", "10.0.0.1\n",
                 "255.255.255.255", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "10.0.0.01"]
NAMES = ["eth0", "eth1", "eth0.100", "br-lan", "lo", "all", "default", "", ".", "..",
         "eth0;reboot", "$(id)", "`id`", "eth 0", "eth0:1", "eth/0", "eth0\n", "ethé",
         "x" * 15, "x" * 16, "-eth0", "eth0\x00"]
BOUNDARIES = [-(2 ** 63), -1, 0, 1, 5, 80, 100, 101, 65535, 65536, 86400, 86401,
              2147483, 2147484, 2 ** 63 - 1, 2 ** 64]

# Any int up to 2**200: beyond 4300 decimal digits ConfigError itself cannot be built
# (repr of the value raises ValueError; see tests/data/invalid/*-huge-hex-int.toml).
integers = st.one_of(st.sampled_from(BOUNDARIES), st.integers(-(2 ** 200), 2 ** 200),
                     st.integers(0, 70000))
texts = st.text(max_size=24)
scalars = st.one_of(integers, st.booleans(), st.floats(allow_nan=False), texts)
keys = st.one_of(st.sampled_from(["vip", "port", "real", "address", "weight", "interface",
                                  "tcp", "service", "director"]), st.text(max_size=8))
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8)


class Values:
    """Strategies for each key of the config. With junk=True every value is now and then
    replaced by anything at all (a wrong type, a nested table, an unknown key); with
    junk=False values stay plausible (in range or just past it, same-family addresses
    from a small pool so that duplicates and overlaps happen), which makes valid
    documents common enough to exercise the planners."""

    def __init__(self, junk: bool) -> None:
        self.junk = junk

    def mixed(self, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = anything
              ) -> st.SearchStrategy[Any]:
        return st.one_of(*[good] * 8, bad) if self.junk else good

    def ranged(self, low: int, high: int) -> st.SearchStrategy[Any]:
        """In the valid range, its edges and one step past them; any int now and then."""
        return self.mixed(st.one_of(st.integers(low, min(high, low + 100)),
                                    st.integers(low, high),
                                    st.sampled_from([low, high, low - 1, high + 1])), integers)

    def address(self, pool: list[str]) -> st.SearchStrategy[Any]:
        other = V6 if pool is V4 else V4
        bad = st.one_of(st.sampled_from(BAD_ADDRESSES + other), st.ip_addresses().map(str),
                        anything)
        return self.mixed(st.sampled_from(pool), bad)

    def interface(self) -> st.SearchStrategy[Any]:
        return self.mixed(st.sampled_from(["eth0", "eth1", "eth0.100", "br-lan"]),
                          st.one_of(st.sampled_from(NAMES),
                                    st.from_regex(r"[a-z0-9._-]{1,16}", fullmatch=True),
                                    anything))

    def choice(self, values: tuple[str, ...]) -> st.SearchStrategy[Any]:
        wrong = [v.upper() for v in values] + ["fwmark", "-S wrr", ""]
        return self.mixed(st.sampled_from(values),
                          st.one_of(st.sampled_from(wrong), texts, anything))

    def table(self, required: dict[str, Any], optional: dict[str, Any]
              ) -> st.SearchStrategy[Any]:
        """A table with the given keys, now and then one unknown key too."""
        base = st.fixed_dictionaries(required, optional=optional)
        extra = self.mixed(st.just({}), st.dictionaries(keys, anything, max_size=1))
        return st.builds(lambda a, b: {**b, **a}, base, extra)

    def service(self, pool: list[str]) -> st.SearchStrategy[Any]:
        """One address family per service, so that VIP and real servers usually match."""
        reals = self.table({"address": self.address(pool)},
                           {"port": self.ranged(1, 65535), "weight": self.ranged(0, 65535)})
        return self.mixed(self.table(
            {"vip": self.address(pool), "port": self.ranged(1, 65535),
             "real": self.mixed(st.lists(reals, max_size=4))},
            {"protocol": self.choice(("tcp", "udp", "sctp")),
             "scheduler": self.choice(SCHEDULERS),
             "forwarding": self.choice(("dr", "tun", "nat")),
             "persistence": self.ranged(0, 2147483),
             "drain_seconds": self.ranged(0, 86400)}))

    def director(self, pool: list[str], pair: bool) -> st.SearchStrategy[Any]:
        prefix = st.integers(0, 128 if pool is V6 else 32)
        dips = self.mixed(st.builds(lambda a, n: f"{a}/{n}", st.sampled_from(pool), prefix),
                          st.one_of(st.builds(lambda a, n: f"{a}/{n}",
                                              st.sampled_from(V4 + V6 + BAD_ADDRESSES),
                                              st.integers(-1, 130)),
                                    self.address(pool), anything))
        timeouts = self.mixed(self.table({}, {"tcp": self.ranged(0, 2147483),
                                              "tcpfin": self.ranged(0, 2147483),
                                              "udp": self.ranged(0, 2147483)}))
        # dip and dip_interface given together, or each optional on its own.
        together = {"dip": dips, "dip_interface": self.interface()}
        return self.mixed(self.table(
            {"interface": self.interface(), **(together if pair else {})},
            {"gateway": self.address(pool), "timeouts": timeouts,
             "arping_count": self.ranged(0, 100), **({} if pair else together)}))

    def realserver(self) -> st.SearchStrategy[Any]:
        return self.mixed(self.table(
            {}, {"arp_interfaces": self.mixed(st.lists(self.interface(), max_size=4))}))


def _documents(junk: bool) -> st.SearchStrategy[dict[str, Any]]:
    values = Values(junk)
    services = st.lists(st.one_of(values.service(V4), values.service(V6)), max_size=4)
    director = st.one_of(*[values.director(pool, pair)
                           for pool in (V4, V6) for pair in (False, True)])
    return values.table({}, {"director": director, "realserver": values.realserver(),
                             "service": values.mixed(services)})


documents = st.one_of(_documents(junk=False), _documents(junk=True))


# --- the property --------------------------------------------------------------------------------
def check(text: str, record: bool = True) -> Config | None:
    try:
        config = parse_config(text, PATH)
    except ConfigError as err:
        assert err.path == PATH
        assert isinstance(err.key, str)
        assert str(err).startswith(PATH)
        if record:
            event("ConfigError")
        return None
    if record:
        event("valid config")
    plans = [plan_realserver_start(config, HostObservation(), State())]
    if config.director is not None:
        plans.append(plan_director_start(config, HostObservation(), State()))
    for plan in plans:
        for step in plan.steps:
            assert type(step.argv) is tuple, step
            assert step.argv, step
            for arg in step.argv:
                assert type(arg) is str, step
                assert "\n" not in arg, step
                # Stricter than needed for argv, but what ipvsadm -R batches rely on:
                # every config value that reaches a command line is free of blanks and NULs.
                assert not any(c.isspace() or c == "\x00" for c in arg), step
            step.line()
    return config


@FAST
@given(documents, st.booleans())
def test_generated_documents(doc: dict[str, Any], headers: bool) -> None:
    text = toml_document(doc, headers)
    # The writer must produce TOML that means the document: otherwise this property
    # would mostly be testing TOML syntax errors.
    assert tomllib.loads(text) == doc
    check(text)


@FAST
@given(st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(["insert", "delete",
                                                                    "replace"]),
                          st.text(min_size=1, max_size=3)), min_size=1, max_size=4))
def test_edited_seed_example(edits: list[tuple[int, str, str]]) -> None:
    text = SEED.read_text(encoding="utf-8")
    for position, how, chars in edits:
        at = position % (len(text) + 1)
        if how == "insert":
            text = text[:at] + chars + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + len(chars):]
        else:
            text = text[:at] + chars + text[at + len(chars):]
    check(text)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet='[]{}=",.\n #"abcdeilnoprstvw0123456789')))
def test_raw_text(text: str) -> None:
    check(text)


def test_the_generators_reach_valid_configs() -> None:
    """Guard against a generator that only ever produces errors."""
    valid = [check(toml_document(doc, headers), record=False) for doc, headers in (
        ({"director": {"interface": "eth0"}}, True),
        ({"service": [{"vip": V4[0], "port": 80, "real": [{"address": V4[1]}]}]}, True),
        ({"service": [{"vip": V6[0], "port": 80, "real": [{"address": V6[1]}]}],
          "director": {"interface": "eth0", "dip": "2001:db8::9/64", "dip_interface": "eth1",
                       "gateway": V6[2], "timeouts": {"udp": 5}}}, False),
    )]
    assert all(config is not None for config in valid)


# --- the IPv4 fast path of config._host_address ---------------------------------------------
VALID_OCTET = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["0", "127", "224",
                                                                        "240", "255"]))
OCTET = st.one_of(VALID_OCTET, st.integers(0, 300).map(str),
                  st.integers(0, 255).map(lambda n: f"0{n}"),
                  st.sampled_from(["", "0x1", " 1", "1 ", "+1", "-1", "\u0661", "1e2"]))
DOTTED = st.one_of(st.lists(VALID_OCTET, min_size=4, max_size=4).map(".".join),
                   st.lists(OCTET, min_size=1, max_size=5).map(".".join))


@FAST
@given(st.one_of(DOTTED, st.text(alphabet="0123456789.:%abcdef/ ", max_size=20)))
def test_host_address_fast_path_accepts_what_ipaddress_accepts(text: str) -> None:
    """_host_address parses IPv4 with inet_pton; it must accept and refuse exactly what
    ipaddress.ip_address (with the host rules) does, and build the same address."""
    import ipaddress

    from lvs_scripts.config import _host_address

    try:
        want = ipaddress.ip_address(text)
        if "%" in text or want.is_unspecified or want.is_multicast or want.is_loopback or \
                want.is_reserved or (want.version == 6 and want.ipv4_mapped):
            raise ValueError(text)
    except ValueError:
        event("refused")
        with pytest.raises(ValueError):
            _host_address(text)
        return
    event("accepted")
    got = _host_address(text)
    assert (type(got), got) == (type(want), want)
