"""`ipvsadm -S -n` read again: the plain real-server lines of the last parse are answered
from a memo (probes._plain_seen). Whatever was parsed before, a parse gives exactly what a
new process would: each text here is parsed after another and compared with a cold parse.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvs_scripts import probes
from lvs_scripts.model import IpvsTable
from lvs_scripts.probes import forget_parsed, parse_ipvs_save

DATA = Path(__file__).resolve().parent / "data"


def data(name: str) -> str:
    return (DATA / name).read_text()


VIP = "10.200.0.1"


def bench_save_text(count: int, changed: int | None = None) -> str:
    """bench/bench.py's save_text: the table of one service of `count` real servers as
    the planner writes it and `ipvsadm -S -n` prints it (`changed`: that one weight 2)."""
    first = ipaddress.ip_address("10.100.0.1")
    return "".join([f"-A -t {VIP}:80 -s wrr\n"] + [
        f"-a -t {VIP}:80 -r {first + index}:80 -g -w {2 if index == changed else 1}\n"
        for index in range(count)])

# Texts as the kernel prints them and as it never would: each is parsed after each
# mutation of itself and after each of the others.
TEXTS: dict[str, str] = {
    "bench 1 x 40": bench_save_text(40),
    "bench 1 x 40, one weight": bench_save_text(40, changed=7),
    "3 services, shared real servers": "".join(
        bench_save_text(20).replace(f"{VIP}:80", f"{VIP}:{port}") for port in (80, 81, 82)),
    "mixed (captured)": data("captured/ipvsadm-S-n.mixed.txt"),
    "tun (captured)": data("captured/ipvsadm-S-n.tun.txt"),
    "options (captured)": data("captured-ipvs-options/ipvsadm-S-n.options.txt"),
    "options edited (captured)": data("captured-ipvs-options/ipvsadm-S-n.options-edited.txt"),
    "ipv6": ("-A -t [2001:db8::1]:80 -s rr\n-a -t [2001:db8::1]:80 -r [2001:db8::10]:80 -g -w 1\n"
             "-a -t [2001:db8::1]:80 -r [2001:db8::11]:8080 -m -w 3\n"
             "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"),
    "fwmark": ("-A -f 1 -s wrr\n-a -f 1 -r 10.0.0.2:0 -g -w 1\n-a -f 1 -r 10.0.0.3:0 -g -w 2\n"
               "-A -f 2 -6 -s lc\n-a -f 2 -6 -r [2001:db8::12]:0 -g -w 1\n"),
    "nat, another port": ("-A -t 10.0.0.1:80 -s rr\n"
                          "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 1\n"
                          "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m -w 0\n"
                          "-A -u 10.0.0.1:53 -s rr -o\n"
                          "-a -u 10.0.0.1:53 -r 10.0.0.2:5353 -m -w 4\n"),
    "thresholds": ("-A -t 10.0.0.1:80 -s wlc\n"
                   "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1 -x 100 -y 50\n"
                   "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -g -w 1\n"),
    "junk": ("# a comment\n\n-A\n-A -t nonsense -s rr\n-X -t 1.2.3.4:80\n"
             "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80\n"
             "-a -t 10.0.0.1:80 -r 999.0.0.1:80 -g -w 1\n"  # plain in shape, no address
             "-a -t nonsense -r 10.0.0.2:80 -g -w 1\n"
             "-a -t 10.0.0.1:80 -r 1.2.3:80 -g -w 1\n"
             "-a -t 10.0.0.1:80 -r 10.0.0.4:80 -g -w " + "9" * 5000 + "\n"  # int() refuses
             "-a -t [::1]:80 -r 10.0.0.5:80 -g -w 1\n-A -t [::1]:80 -s rr\n"
             "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"
             "-a  -t 10.0.0.1:80 -r 10.0.0.3:80 -g -w 1\n"),  # two spaces: through parse_rule
    "duplicates": ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"
                   "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -g -w 1\n"
                   "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"
                   "-A -t 10.0.0.1:80 -s rr\n"),  # a service added twice: its first place
    "real server before its service": ("-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"
                                       "-A -t 10.0.0.9:80 -s rr\n"
                                       "-a -t 10.0.0.9:80 -r 10.0.0.2:80 -g -w 1\n"
                                       "-A -t 10.0.0.1:80 -s rr\n"
                                       "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -g -w 1\n"),
    "real server of a service never added": ("-A -t 10.0.0.1:80 -s rr\n"
                                             "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"
                                             "-a -t 10.0.0.7:80 -r 10.0.0.2:80 -g -w 1\n"),
    # one service, two spellings of its port: both lines are its real servers
    "one service, two spellings": ("-A -t 10.0.0.1:80 -s rr\n"
                                   "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"
                                   "-a -t 10.0.0.1:080 -r 10.0.0.3:80 -g -w 1\n"),
    "empty": "",
}


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def text_of(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def one_weight_changed(text: str) -> str:
    lines = lines_of(text)
    for index in reversed(range(len(lines))):
        if lines[index].startswith("-a ") and " -w " in lines[index]:
            head, _, weight = lines[index].partition(" -w ")
            old = weight.split(" ", 1)
            lines[index] = f"{head} -w {int(old[0]) + 1 if old[0].isdigit() else 5}" + (
                f" {old[1]}" if len(old) > 1 else "")
            break
    return text_of(lines)


def line_removed(text: str) -> str:
    lines = lines_of(text)
    return text_of(lines[:len(lines) // 2] + lines[len(lines) // 2 + 1:])


def line_added(text: str) -> str:
    lines = lines_of(text)
    added = f"-a -t {VIP}:80 -r 10.99.0.1:80 -g -w 3"
    return text_of([*lines[:len(lines) // 2], added, *lines[len(lines) // 2:]])


def service_removed(text: str) -> str:
    """The first service's -A line gone: its real servers are dropped with it."""
    lines = lines_of(text)
    first = next((line for line in lines if line.startswith("-A ")), None)
    return text_of([line for line in lines if line != first])


def reversed_lines(text: str) -> str:
    return text_of(lines_of(text)[::-1])


def same_text(text: str) -> str:
    return "".join(list(text))  # equal, another object: not the identity shortcut


MUTATIONS: dict[str, Callable[[str], str]] = {
    "same": same_text, "one weight": one_weight_changed, "line removed": line_removed,
    "line added": line_added, "service removed": service_removed, "reversed": reversed_lines,
}


def cold(text: str) -> IpvsTable:
    forget_parsed()
    return parse_ipvs_save(text)


def assert_same_table(got: IpvsTable, want: IpvsTable) -> None:
    assert got == want
    assert list(got) == list(want)  # services in the order of their -A lines
    for key, service in want.items():
        assert got[key].destinations == service.destinations  # in listing order


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("name", TEXTS)
def test_a_text_read_after_itself_changed_is_parsed_as_cold(name: str, mutation: str) -> None:
    before = TEXTS[name]
    after = MUTATIONS[mutation](before)
    want = cold(after)
    forget_parsed()
    parse_ipvs_save(before)
    assert_same_table(parse_ipvs_save(after), want)


@pytest.mark.parametrize("other", TEXTS)
@pytest.mark.parametrize("name", TEXTS)
def test_a_text_read_after_another_is_parsed_as_cold(name: str, other: str) -> None:
    want = cold(same_text(TEXTS[name]))
    forget_parsed()
    parse_ipvs_save(TEXTS[other])
    assert_same_table(parse_ipvs_save(same_text(TEXTS[name])), want)


def test_the_memo_answers_what_it_read_with_the_very_objects() -> None:
    """What the second reading saves: the unchanged real servers are last time's objects;
    the changed one is new, and the table shows its new weight."""
    before = bench_save_text(40)
    after = bench_save_text(40, changed=7)
    forget_parsed()
    first = next(iter(parse_ipvs_save(before).values())).destinations
    second = next(iter(parse_ipvs_save(after).values())).destinations
    assert [a is b for a, b in zip(first, second)] == [index != 7 for index in range(40)]
    assert (first[7].weight, second[7].weight) == (1, 2)


def test_the_memo_holds_only_the_last_parse() -> None:
    """Memory stays one table's: a large table, then a small unrelated one, leaves only
    the small one's lines; a table of no plain line leaves nothing."""
    forget_parsed()
    parse_ipvs_save(bench_save_text(10000))
    assert len(probes._plain_seen[0]) == 10000
    small = ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n"
             "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m -w 2\n-a -t 10.0.0.1:80 -r 10.0.0.4:80 -g -w 1\n"
             "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n")  # a duplicate: one entry
    parse_ipvs_save(small)
    assert set(probes._plain_seen[0]) == {line for line in small.splitlines()
                                          if line.startswith("-a ")}
    parse_ipvs_save(TEXTS["fwmark"])
    assert probes._plain_seen[0] == {}
    parse_ipvs_save(small)
    forget_parsed()
    assert probes._plain_seen[0] == {}


# Random tables and random edits of them, beyond the table above: lines drawn from a
# small pool (so that lines repeat, move between services and change weight).
_ADDRESSES = [str(ipaddress.ip_address("10.0.0.2") + n) for n in range(4)]
_LINE = st.one_of(
    st.builds(lambda s, a, p, f, w: f"-a -t 10.0.0.1:{s} -r {a}:{p} -{f} -w {w}",
              st.sampled_from([80, 81, 82]), st.sampled_from(_ADDRESSES),
              st.sampled_from([80, 8080]), st.sampled_from("gmi"), st.integers(0, 3)),
    st.builds(lambda s, sched: f"-A -t 10.0.0.1:{s} -s {sched}",
              st.sampled_from([80, 81, 82]), st.sampled_from(["rr", "wrr"])),
    st.sampled_from(["", "junk", "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1 -x 5 -y 1",
                     "-a -u 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1", "-A -u 10.0.0.1:80 -s rr"]),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(_LINE, max_size=12), st.lists(_LINE, max_size=12))
def test_any_text_after_any_other_is_parsed_as_cold(first: list[str],
                                                    second: list[str]) -> None:
    after = text_of(second)
    want = cold(after)
    forget_parsed()
    parse_ipvs_save(text_of(first))
    assert_same_table(parse_ipvs_save(after), want)
