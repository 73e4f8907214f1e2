"""Fake `ipvsadm`: behaves like ipvsadm 1.31 (Debian 12) on a kernel with IPVS 1.2.1.

Written from a reading of ipvsadm 1.31 `ipvsadm.c` (`main`, `parse_options`,
`process_options`, `restore_table`, `generic_opt_check`, `print_title`,
`print_service_entry`, `print_largenum`, `list_all`, `list_timeout`, `fail`,
`tryhelp_exit`), `config_stream.c` (`config_stream_read`, the `-R` tokenizer)
and `libipvs/libipvs.c` (`ipvs_strerror`, `ipvs_cmp_services`,
`ipvs_cmp_dests`). Option parsing imitates popt: short options can be grouped
(`-Ln`), `-p` takes its argument only when the next word does not start with
`-`, the command must come first, unknown options end in "Try `ipvsadm -h'...".

Exit statuses as in the C: `fail()` exits 2 (usage errors, unknown
address...), a refused kernel request prints the libipvs message and exits 255
(process_options returns -1), "no IPVS in this kernel" exits 2.
"""

# Option parsers and printers with one branch per option, like the C they imitate:
# ruff: noqa: PLR0912

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .model import Run, State, ToolExit, addr_type, ipvs_available, load_ipvs

VERSION_LINE = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)"
ARGV0 = "ipvsadm"  # what a caller gives as argv[0] when it finds us on PATH
MAX_TIMEOUT = 86400 * 31
# `-p` without a value: IPVS_SVC_PERSISTENT_TIMEOUT, (6*60) in libipvs.h (the
# man page's "300" is out of date).
DEF_PERSISTENT_TIMEOUT = 360
DEF_SCHED = "wlc"

AF_NUM = {"inet": 2, "inet6": 10}
PROTO_NUM = {"tcp": 6, "udp": 17, "sctp": 132}
PROTO_OPT = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
FWD_NAME = {"masq": "Masq", "local": "Local", "tunnel": "Tunnel", "route": "Route"}
FWD_SWITCH = {"masq": "-m", "tunnel": "-i", "local": "-g", "route": "-g"}
TUN_NAMES = ["ipip", "gue", "gre"]
TUN_FLAGS = ["-c", "+c", "r+c"]
TUN_FLAG_OPTS = ["--tun-nocsum", "--tun-csum", "--tun-remcsum"]

# Ports `ipvsadm -L` (without -n) names; fixed so output does not depend on
# the host's /etc/services.
SERVICES = {
    "tcp": {21: "ftp", 22: "ssh", 25: "smtp", 53: "domain", 80: "http", 110: "pop3",
            143: "imap2", 443: "https", 993: "imaps", 995: "pop3s", 3306: "mysql",
            5432: "postgresql", 8080: "http-alt"},
    "udp": {53: "domain", 123: "ntp", 161: "snmp", 514: "syslog"},
    "sctp": {},
}

OPTNAMES = [
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
    "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
    "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
    "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
    "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
    "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
]
OPT = {name: i for i, name in enumerate(OPTNAMES)}

# Legal option combinations per command, one character per OPTNAMES entry:
# '+' compulsory, 'x' illegal, '1' at most one of these, ' ' optional.
LEGAL = {
    "add-service": "xx+   " + "x" * 15 + "   " + "x" * 10,
    "edit-service": "xx+   " + "x" * 15 + "   " + "x" * 10,
    "delete-service": "xx+" + "x" * 31,
    "flush": "x" * 34,
    "list": " 11" + "x" * 9 + "11" + " " * 7 + "x" * 7 + " " + "x" * 5,
    "add-server": "xx+xxx+" + " " * 4 + "x" * 18 + " " * 5,
    "delete-server": "xx+xxx+" + "x" * 27,
    "edit-server": "xx+xxx+" + " " * 4 + "x" * 18 + " " * 5,
    "set": "x" * 34,
    "start-daemon": "x" * 11 + " " + "x" * 7 + " " + "x" * 4 + " " * 4 + "x" * 6,
    "stop-daemon": "x" * 19 + " " + "x" * 14,
    "restore": "x" * 34,
    "save": " " + "x" * 33,
    "zero": "xx " + "x" * 31,
}
TUN_OPTS = [OPT["tun-port"], OPT["tun-nocsum"], OPT["tun-csum"], OPT["tun-remcsum"]]
TUN_LEGAL = {"ipip": "xxxx", "gue": "+111", "gre": "x11x"}

# popt table: option -> (tag, takes argument: None / "req" / "opt")
SHORT = {
    "A": ("A", None), "E": ("E", None), "D": ("D", None), "C": ("C", None),
    "L": ("L", None), "l": ("L", None), "Z": ("Z", None), "a": ("a", None),
    "e": ("e", None), "d": ("d", None), "h": ("h", None), "v": ("v", None),
    "R": ("R", None), "S": ("S", None), "t": ("t", "req"), "u": ("u", "req"),
    "f": ("f", "req"), "s": ("s", "req"), "p": ("p", "opt"), "M": ("M", "req"),
    "r": ("r", "req"), "m": ("m", None), "i": ("i", None), "g": ("g", None),
    "w": ("w", "req"), "x": ("x", "req"), "y": ("y", "req"), "n": ("n", None),
    "c": ("c", None), "X": ("X", None), "6": ("6", None), "o": ("o", None),
    "b": ("b", "req"),
}
LONG = {
    "add-service": ("A", None), "edit-service": ("E", None), "delete-service": ("D", None),
    "clear": ("C", None), "list": ("L", None), "zero": ("Z", None),
    "add-server": ("a", None), "edit-server": ("e", None), "delete-server": ("d", None),
    "set": ("set", None), "help": ("h", None), "version": ("v", None),
    "restore": ("R", None), "save": ("S", None), "start-daemon": ("start-daemon", "req"),
    "stop-daemon": ("stop-daemon", "req"), "tcp-service": ("t", "req"),
    "udp-service": ("u", "req"), "sctp-service": ("sctp", "req"),
    "fwmark-service": ("f", "req"), "scheduler": ("s", "req"), "persistent": ("p", "opt"),
    "netmask": ("M", "req"), "real-server": ("r", "req"), "masquerading": ("m", None),
    "ipip": ("i", None), "gatewaying": ("g", None), "weight": ("w", "req"),
    "u-threshold": ("x", "req"), "l-threshold": ("y", "req"), "numeric": ("n", None),
    "connection": ("c", None), "mcast-interface": ("mcast-interface", "req"),
    "syncid": ("syncid", "req"), "timeout": ("timeout", None), "daemon": ("daemon", None),
    "stats": ("stats", None), "rate": ("rate", None), "thresholds": ("thresholds", None),
    "persistent-conn": ("persistent-conn", None), "nosort": ("nosort", None),
    "sort": ("sort", None), "exact": ("X", None), "ipv6": ("6", None), "ops": ("o", None),
    "pe": ("pe", "req"), "sched-flags": ("b", "req"), "mcast-group": ("mcast-group", "req"),
    "mcast-port": ("mcast-port", "req"), "mcast-ttl": ("mcast-ttl", "req"),
    "sync-maxlen": ("sync-maxlen", "req"), "tun-info": ("tun-info", None),
    "tun-type": ("tun-type", "req"), "tun-port": ("tun-port", "req"),
    "tun-nocsum": ("tun-nocsum", None), "tun-csum": ("tun-csum", None),
    "tun-remcsum": ("tun-remcsum", None),
}
COMMANDS = {
    "A": "add-service", "E": "edit-service", "D": "delete-service", "C": "flush",
    "L": "list", "Z": "zero", "a": "add-server", "e": "edit-server",
    "d": "delete-server", "set": "set", "R": "restore", "S": "save",
    "start-daemon": "start-daemon", "stop-daemon": "stop-daemon",
}

# libipvs ipvs_strerror(): (function, errno) -> text; function None = any.
STRERROR = {
    ("add-service", "EEXIST"): "Service already exists",
    ("add-service", "ENOENT"): "Scheduler or persistence engine not found",
    ("edit-service", "ESRCH"): "No such service",
    ("edit-service", "ENOENT"): "Scheduler or persistence engine not found",
    ("delete-service", "ESRCH"): "No such service",
    ("zero", "ESRCH"): "No such service",
    ("add-server", "ESRCH"): "Service not defined",
    ("add-server", "EEXIST"): "Destination already exists",
    ("edit-server", "ESRCH"): "Service not defined",
    ("edit-server", "ENOENT"): "No such destination",
    ("delete-server", "ESRCH"): "Service not defined",
    ("delete-server", "ENOENT"): "No such destination",
    ("get", "ESRCH"): "No such service",
    ("start-daemon", "EEXIST"): "Daemon has already run",
    ("stop-daemon", "ESRCH"): "No daemon is running",
    (None, "EPERM"): "Permission denied (you must be root)",
    (None, "EINVAL"): "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    (None, "ENOPROTOOPT"): "Protocol not available",
    (None, "ENOMEM"): "Memory allocation problem",
    (None, "EOPNOTSUPP"): "Operation not supported with IPv6",
    (None, "EAFNOSUPPORT"): "Operation not supported with specified address family",
    (None, "ERANGE"): "Numerical result out of range",
    (None, "ENOENT"): "No such file or directory",
    (None, "EEXIST"): "File exists",
    (None, "ESRCH"): "No such process",
}

SERVICE_ADDR = 1
SERVICE_PORT = 2


class KernelRefused(Exception):
    def __init__(self, errno: str) -> None:
        super().__init__(errno)
        self.errno = errno


def strerror(func: str | None, errno: str) -> str:
    return STRERROR.get((func, errno)) or STRERROR.get((None, errno)) or errno


# ---------------------------------------------------------------- entry


def main(run: Run) -> int:
    st = run.state
    if st.get("unprivileged"):
        # ipvs_init() needs CAP_NET_ADMIN for the generic netlink family and, on the
        # fallback path, for socket(AF_INET, SOCK_RAW): both fail with EPERM, whatever the
        # kernel has, and ipvsadm prints ipvs_strerror(EPERM) with its usual second line.
        fail(
            run,
            2,
            f"Can't initialize ipvs: {strerror(None, 'EPERM')}\n"
            "Are you sure that IP Virtual Server is built in the kernel or as module?",
        )
    if not ipvs_available(st):
        # ipvs_init() failed: ipvsadm runs /sbin/modprobe -- ip_vs and retries.
        if not load_ipvs(st):
            run.eprint(
                "modprobe: FATAL: Module ip_vs not found in directory "
                f"/lib/modules/{st['kernel']['release']}"
            )
            fail(
                run,
                2,
                "Can't initialize ipvs: Protocol not available\n"
                "Are you sure that IP Virtual Server is built in the kernel or as module?",
            )
    if not run.args:
        list_all(run, set())
        return 0
    return process_options(run, [ARGV0, *run.args], reading_stdin=False)


def fail(run: Run, rc: int, msg: str) -> None:
    run.eprint(msg)
    raise ToolExit(rc)


def tryhelp_exit(run: Run) -> None:
    run.eprint(f"Try `{ARGV0} -h' or '{ARGV0} --help' for more information.")
    raise ToolExit(255)


def usage_exit(run: Run, rc: int) -> None:
    emit = run.print if rc == 0 else run.eprint
    emit(VERSION_LINE)
    p = ARGV0
    emit(
        "Usage:\n"
        f"  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask]"
        " [--pe persistence_engine] [-b sched-flags]\n"
        f"  {p} -D virtual-service\n"
        f"  {p} -C\n"
        f"  {p} -R\n"
        f"  {p} -S [-n]\n"
        f"  {p} -a|e virtual-service -r server-address [options]\n"
        f"  {p} -d virtual-service -r server-address\n"
        f"  {p} -L|l [virtual-service] [options]\n"
        f"  {p} -Z [virtual-service]\n"
        f"  {p} --set tcp tcpfin udp\n"
        f"  {p} --start-daemon {{master|backup}} [daemon-options]\n"
        f"  {p} --stop-daemon {{master|backup}}\n"
        f"  {p} -h\n"
    )
    raise ToolExit(rc)


# ---------------------------------------------------------------- popt


def _argument_word(argv: list[str], i: int, takes: str | None) -> tuple[str | None, int] | None:
    """An option's argument taken from the word after it, argv[i]: a required one ("req")
    whatever that word is, an optional one ("opt") unless it starts with '-'. (argument
    or None, index of the word after the option's), or None if a required one is missing.
    """
    if i < len(argv) and (takes == "req" or (takes == "opt" and not argv[i].startswith("-"))):
        return argv[i], i + 1
    if takes == "req":
        return None
    return None, i


def popt_events(argv: list[str]) -> tuple[list[tuple[str, Any, str]], list[str]]:
    """Split argv into option events and leftover arguments, as popt would.

    Events: ("opt", (tag, argument), text) or ("error", message, text); parsing
    stops at the first error, as poptGetNextOpt() does.
    """
    events: list[tuple[str, Any, str]] = []
    leftovers: list[str] = []
    i = 1
    only_args = False
    while i < len(argv):
        word = argv[i]
        i += 1
        if only_args or word == "-" or not word.startswith("-"):
            leftovers.append(word)
            continue
        if word == "--":
            only_args = True
            continue
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            spec = LONG.get(name)
            if spec is None:
                events.append(("error", "unknown option", word))
                return events, leftovers
            tag, takes = spec
            arg: str | None = value
            if not eq:
                taken = _argument_word(argv, i, takes)
                if taken is None:
                    events.append(("error", "missing argument", word))
                    return events, leftovers
                arg, i = taken
            events.append(("opt", (tag, arg), word))
            continue
        chars = word[1:]
        while chars:
            ch, chars = chars[0], chars[1:]
            sspec = SHORT.get(ch)
            if sspec is None:
                events.append(("error", "unknown option", word))
                return events, leftovers
            tag, takes = sspec
            if takes is not None and chars:
                arg, chars = chars, ""
            else:
                taken = _argument_word(argv, i, takes)
                if taken is None:
                    events.append(("error", "missing argument", word))
                    return events, leftovers
                arg, i = taken
            events.append(("opt", (tag, arg), "-" + ch))
    return events, leftovers


# ---------------------------------------------------------------- parsing helpers


def string_to_number(text: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", text):
        return -1
    value = int(text)
    return value if lo <= value <= hi else -1


def inet_aton(text: str) -> str | None:
    """glibc inet_aton: 1 to 4 parts, each decimal, 0x-hex or 0-octal."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = []
    for part in parts:
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
            nums.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]*", part):
            nums.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            nums.append(int(part))
        else:
            return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 1 << (8 * (5 - len(nums))):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    value = value << (8 * (4 - len(head))) | last if head else last
    return str(ipaddress.IPv4Address(value))


def host_to_addr(st: State, name: str) -> str | None:
    for addr, host in st.get("hosts", {}).items():
        if host == name and ":" not in addr:
            return str(addr)
    return None


def service_to_port(name: str, proto: str | None) -> int:
    for port, sname in SERVICES.get(proto or "", {}).items():
        if sname == name:
            return port
    return -1


def parse_service(st: State, buf: str | None, target: dict[str, Any]) -> int:
    """parse_service(): fills af/addr/port of target; returns SERVICE_* bits."""
    if buf is None or all(c.isdigit() for c in buf):
        return 0
    port_text: str | None = None
    if buf.startswith("["):
        buf = buf[1:]
        end = buf.find("]")
        if end < 0:
            return 0
        rest = buf[end + 1 :]
        buf = buf[:end]
        if not rest.startswith(":"):
            return 0
        port_text = rest[1:]
    v6: ipaddress.IPv6Address | None = None
    if "%" not in buf:
        try:
            v6 = ipaddress.IPv6Address(buf)
        except ValueError:
            v6 = None
    if v6 is not None:
        target.update(af="inet6", addr=str(v6), netmask=128)
    else:
        # the bracket form's port is lost here, as in the C
        port_text = None
        colon = buf.rfind(":")
        if colon >= 0:
            port_text = buf[colon + 1 :]
            buf = buf[:colon]
        addr = inet_aton(buf) or host_to_addr(st, buf)
        if addr is None:
            return 0
        target.update(af="inet", addr=addr)
    result = SERVICE_ADDR
    if port_text is not None:
        result |= SERVICE_PORT
        port = string_to_number(port_text, 0, 65535)
        if port == -1:
            port = service_to_port(port_text, target.get("proto"))
        if port == -1:
            return 0
        target["port"] = port
    return result


def parse_timeout(run: Run, buf: str | None, lo: int, hi: int) -> int:
    if buf is None:
        return DEF_PERSISTENT_TIMEOUT
    value = string_to_number(buf, lo, hi)
    if value == -1:
        fail(run, 2, f"invalid timeout value `{buf}' specified")
    return value


def parse_fwmark(run: Run, buf: str) -> int:
    if not re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", buf) or not 0 < int(buf) <= 0xFFFFFFFF:
        fail(run, 2, f"invalid fwmark value `{buf}' specified")
    return int(buf)


def parse_sched_flags(run: Run, sched: str, text: str) -> set[str]:
    sched = sched or DEF_SCHED
    flags: set[str] = set()
    needs = {"sh-fallback": "sh", "sh-port": "sh", "mh-fallback": "mh", "mh-port": "mh"}
    bit = {"flag-1": "flag-1", "flag-2": "flag-2", "flag-3": "flag-3",
           "sh-fallback": "flag-1", "sh-port": "flag-2",
           "mh-fallback": "flag-1", "mh-port": "flag-2"}
    for flag in [f for f in text.split(",") if f] or [""]:
        if flag not in bit:
            fail(run, 2, f"invalid scheduler flag `{flag}'")
        if flag in needs and sched != needs[flag]:
            fail(run, 2, f"incompatible scheduler flag `{flag}'")
        flags.add(bit[flag])
    return flags


def set_option(run: Run, options: set[int], name: str) -> None:
    idx = OPT[name]
    if idx in options:
        fail(run, 2, f"multiple '{name}' options specified")
    options.add(idx)


def generic_opt_check(run: Run, cmd: str, options: set[int]) -> None:
    row = LEGAL[cmd]
    last: int | None = None
    for j, name in enumerate(OPTNAMES):
        rule = row[j]
        if j not in options:
            if rule == "+":
                fail(run, 2, f"You need to supply the '{name}' option for the '{cmd}' command")
            continue
        if rule == "x":
            fail(run, 2, f"Illegal '{name}' option with the '{cmd}' command")
        if rule == "1":
            if last is None:
                last = j
                continue
            fail(
                run,
                2,
                f"The option '{name}' conflicts with the '{OPTNAMES[last]}' option "
                f"in the '{cmd}' command",
            )


def tunnel_opt_check(run: Run, tun_type: int, options: set[int]) -> None:
    tname = TUN_NAMES[tun_type]
    row = TUN_LEGAL[tname]
    last: int | None = None
    for j, k in enumerate(TUN_OPTS):
        name = OPTNAMES[k]
        if k not in options:
            if row[j] == "+":
                fail(run, 2,
                     f"You need to supply the '{name}' option for the '{tname}' tunnel type")
            continue
        if row[j] == "x":
            fail(run, 2, f"Illegal '{name}' option with the '{tname}' tunnel type")
        if row[j] == "1":
            if last is None:
                last = k
                continue
            fail(
                run,
                2,
                f"The option '{name}' conflicts with the '{OPTNAMES[last]}' option "
                f"in the '{tname}' tunnel type",
            )


# ---------------------------------------------------------------- the command entry


def new_entry() -> dict[str, Any]:
    return {
        "cmd": None,
        "svc": {
            "af": None, "proto": None, "addr": None, "port": 0, "fwmark": 0,
            "sched": "", "persistent": False, "timeout": 0, "netmask": "255.255.255.255",
            "pe": "", "ops": False, "sched_flags": set(),
        },
        # defaults set by process_options(): weight 1, direct routing, ipip
        "dest": {
            "af": None, "addr": None, "port": 0, "fwd": "route", "weight": 1,
            "u_threshold": 0, "l_threshold": 0, "tun_type": 0, "tun_port": 0,
            "tun_flags": 0,
        },
        "timeouts": None,
        "format": set(),
        "options": set(),
        "sched_flags_arg": "",
    }


def parse_options(run: Run, argv: list[str], ce: dict[str, Any]) -> int:
    st = run.state
    events, leftovers = popt_events(argv)
    if not events or events[0][0] == "error":
        tryhelp_exit(run)
    tag, arg = events[0][1]
    if tag == "h":
        usage_exit(run, 0)
    if tag == "v":
        run.print(VERSION_LINE)
        raise ToolExit(0)
    if tag in ("start-daemon", "stop-daemon"):
        raise ToolExit(daemon_command(run, tag, arg, events[1:], leftovers) & 0xFF)
    if tag not in COMMANDS:
        tryhelp_exit(run)
    ce["cmd"] = COMMANDS[tag]
    svc, dest, options = ce["svc"], ce["dest"], ce["options"]
    for kind, payload, text in events[1:]:
        if kind == "error":
            run.eprint(f"{text}: {payload}")
            return -1
        tag, arg = payload
        handler = OPTION_HANDLERS.get(tag)
        if handler is None:
            fail(run, 2, f"invalid option `{text}'")
        handler(run, st, ce, svc, dest, options, arg)
    if ce["cmd"] == "set":
        if len(leftovers) < 3:
            fail(run, 2, "--set option requires 3 timeout values")
        ce["timeouts"] = [parse_timeout(run, v, 0, MAX_TIMEOUT) for v in leftovers[:3]]
        leftovers = leftovers[3:]
    if leftovers:
        fail(run, 2, f"unexpected argument {leftovers[0]}")
    if ce["sched_flags_arg"]:
        svc["sched_flags"] = parse_sched_flags(run, svc["sched"], ce["sched_flags_arg"])
    return 0


def _opt_service(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any, arg: Any,
                 proto: str) -> None:
    set_option(run, options, "service-address")
    svc["proto"] = proto
    if not parse_service(st, arg, svc) & SERVICE_ADDR:
        fail(run, 2, "illegal virtual server address[:port] specified")


def _opt_fwmark(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any, arg: Any) -> None:
    set_option(run, options, "service-address")
    svc.update(af="inet", proto="tcp", fwmark=parse_fwmark(run, arg))


def _opt_sched(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any, arg: Any) -> None:
    set_option(run, options, "scheduler")
    svc["sched"] = arg[:15]


def _opt_persistent(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                    arg: Any) -> None:
    set_option(run, options, "persistent")
    svc["persistent"] = True
    svc["timeout"] = parse_timeout(run, arg, 1, MAX_TIMEOUT)


def _opt_netmask(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                 arg: Any) -> None:
    set_option(run, options, "netmask")
    if svc["af"] != "inet6":
        mask = inet_aton(arg) or host_to_addr(st, arg)
        if mask is None:
            fail(run, 2, "illegal virtual server persistent mask specified")
        svc["netmask"] = mask
    else:
        m = re.match(r"\s*[+-]?\d+", arg)
        value = int(m.group()) if m else 0
        if not 1 <= value <= 128:
            fail(run, 2, "illegal ipv6 netmask specified")
        svc["netmask"] = value


def _opt_real_server(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                     arg: Any) -> None:
    set_option(run, options, "real-server")
    t_dest = dict(svc)
    parsed = parse_service(st, arg, t_dest)
    dest.update(af=t_dest["af"], addr=t_dest["addr"], port=t_dest["port"])
    if not parsed & SERVICE_ADDR:
        fail(run, 2, "illegal real server address[:port] specified")
    if parsed == SERVICE_ADDR:
        dest["port"] = svc["port"]


def _opt_forward(fwd: str) -> Any:
    def handler(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                arg: Any) -> None:
        set_option(run, options, "forwarding-method")
        dest["fwd"] = fwd
    return handler


def _opt_number(name: str, key: str, hi: int, message: str) -> Any:
    def handler(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                arg: Any) -> None:
        set_option(run, options, name)
        value = string_to_number(arg, 0, hi)
        if value == -1:
            fail(run, 2, message)
        dest[key] = value
    return handler


def _opt_flag(name: str, fmt: str | None = None) -> Any:
    def handler(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                arg: Any) -> None:
        set_option(run, options, name)
        if fmt:
            ce["format"].add(fmt)
    return handler


def _opt_ipv6(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any, arg: Any) -> None:
    if not svc["fwmark"]:
        fail(run, 2, "-6 used before -f\n")
    svc["af"] = "inet6"
    svc["netmask"] = 128


def _opt_ops(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any, arg: Any) -> None:
    set_option(run, options, "ops")
    svc["ops"] = True


def _opt_pe(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any, arg: Any) -> None:
    set_option(run, options, "pe")
    svc["pe"] = arg


def _opt_sched_flags(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                     arg: Any) -> None:
    set_option(run, options, "sched-flags")
    ce["sched_flags_arg"] = arg


def _opt_tun_type(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                  arg: Any) -> None:
    set_option(run, options, "tun-type")
    if arg not in TUN_NAMES:
        fail(run, 2, "illegal tunnel type specified")
    dest["tun_type"] = TUN_NAMES.index(arg)


def _opt_tun_port(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                  arg: Any) -> None:
    set_option(run, options, "tun-port")
    value = string_to_number(arg, 1, 65535)
    if value == -1:
        fail(run, 2, "illegal tunnel port specified")
    dest["tun_port"] = value


def _opt_tun_flag(name: str, bit: int) -> Any:
    def handler(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                arg: Any) -> None:
        set_option(run, options, name)
        dest["tun_flags"] |= bit
    return handler


def _opt_daemon_only(name: str) -> Any:
    def handler(run: Run, st: State, ce: Any, svc: Any, dest: Any, options: Any,
                arg: Any) -> None:
        set_option(run, options, name)
    return handler


OPTION_HANDLERS: dict[str, Any] = {
    "t": lambda *a: _opt_service(*a, proto="tcp"),
    "u": lambda *a: _opt_service(*a, proto="udp"),
    "sctp": lambda *a: _opt_service(*a, proto="sctp"),
    "f": _opt_fwmark,
    "s": _opt_sched,
    "p": _opt_persistent,
    "M": _opt_netmask,
    "r": _opt_real_server,
    "i": _opt_forward("tunnel"),
    "g": _opt_forward("route"),
    "m": _opt_forward("masq"),
    "w": _opt_number("weight", "weight", 65535, "illegal weight specified"),
    "x": _opt_number("u-threshold", "u_threshold", 2**31 - 1, "illegal u_threshold specified"),
    "y": _opt_number("l-threshold", "l_threshold", 2**31 - 1, "illegal l_threshold specified"),
    "c": _opt_flag("connection"),
    "n": _opt_flag("numeric", "numeric"),
    "timeout": _opt_flag("timeout"),
    "daemon": _opt_flag("daemon"),
    "stats": _opt_flag("stats", "stats"),
    "rate": _opt_flag("rate", "rate"),
    "thresholds": _opt_flag("thresholds", "thresholds"),
    "persistent-conn": _opt_flag("persistent-conn", "persistent-conn"),
    "nosort": _opt_flag("nosort", "nosort"),
    "sort": lambda *a: None,
    "X": _opt_flag("exact", "exact"),
    "6": _opt_ipv6,
    "o": _opt_ops,
    "pe": _opt_pe,
    "b": _opt_sched_flags,
    "tun-info": _opt_flag("tun-info", "tun-info"),
    "tun-type": _opt_tun_type,
    "tun-port": _opt_tun_port,
    "tun-nocsum": _opt_tun_flag("tun-nocsum", 0),
    "tun-csum": _opt_tun_flag("tun-csum", 1),
    "tun-remcsum": _opt_tun_flag("tun-remcsum", 2),
    "mcast-interface": _opt_daemon_only("mcast-interface"),
    "syncid": _opt_daemon_only("syncid"),
    "mcast-group": _opt_daemon_only("mcast-group"),
    "mcast-port": _opt_daemon_only("mcast-port"),
    "mcast-ttl": _opt_daemon_only("mcast-ttl"),
    "sync-maxlen": _opt_daemon_only("sync-maxlen"),
}


def process_options(run: Run, argv: list[str], reading_stdin: bool) -> int:
    ce = new_entry()
    if parse_options(run, argv, ce):
        return -1
    cmd, svc, dest, options = ce["cmd"], ce["svc"], ce["dest"], ce["options"]
    generic_opt_check(run, cmd, options)

    if cmd in ("add-service", "edit-service"):
        if not svc["fwmark"] and not svc["port"] and not svc["persistent"]:
            fail(run, 2, "Zero port specified for non-persistent service")
        if svc["ops"] and not svc["fwmark"] and svc["proto"] != "udp":
            fail(run, 2, "One-Packet Scheduling is only for UDP virtual services")
        if not svc["sched"]:
            svc["sched"] = DEF_SCHED

    if cmd in ("add-server", "edit-server"):
        if not svc["fwmark"] and dest["fwd"] in ("tunnel", "route"):
            dest["port"] = svc["port"]
        if dest["af"] != svc["af"] and dest["fwd"] != "tunnel":
            fail(run, 2, "Different address family is allowed only for tunneling servers")
        tun_options = {OPT["tun-type"], OPT["tun-port"], *TUN_OPTS}
        if options & tun_options and dest["fwd"] != "tunnel":
            fail(run, 2, "Tunnel options conflict with forward method")
        tunnel_opt_check(run, dest["tun_type"], options)

    if cmd == "list":
        listing = {OPT["connection"], OPT["timeout"], OPT["daemon"]}
        stats = {OPT["stats"], OPT["rate"], OPT["thresholds"]}
        if (options & listing and options & stats) or (
            options & {OPT["timeout"], OPT["daemon"]} and OPT["persistent-conn"] in options
        ):
            fail(run, 2, "options conflicts in the list command")
        if OPT["connection"] in options:
            list_conn(run, ce["format"])
        elif OPT["service-address"] in options:
            list_service(run, svc, ce["format"])
        elif OPT["timeout"] in options:
            t = run.state["ipvs"]["timeouts"]
            run.print(f"Timeout (tcp tcpfin udp): {t['tcp']} {t['tcpfin']} {t['udp']}")
        elif OPT["daemon"] in options:
            list_daemon(run)
        else:
            list_all(run, ce["format"])
        return 0
    if cmd == "restore":
        return restore_table(run, reading_stdin)
    if cmd == "save":
        list_all(run, ce["format"] | {"rule"})
        return 0
    try:
        kernel_call(run.state, cmd, svc, dest, ce["timeouts"], OPT["service-address"] in options)
    except KernelRefused as refused:
        run.eprint(strerror(cmd, refused.errno))
        return -1
    return 0


# ---------------------------------------------------------------- sync daemons

DEF_MCAST_IFN = "eth0"  # ipvsadm.c: the interface when --mcast-interface is not given
SYNC_HEADERS = 28  # IPv4 + UDP: the kernel's default sync_maxlen is the MTU less these


def daemon_command(run: Run, tag: str, arg: str | None, events: list[Any],
                   leftovers: list[str]) -> int:
    """--start-daemon / --stop-daemon master|backup [--mcast-interface IF] [--syncid N]:
    parse_options() and the kernel's start_sync_thread()/stop_sync_thread() (EEXIST for a
    daemon of that state already running, ENODEV for no such interface, ESRCH for
    stopping one that does not run)."""
    if arg not in ("master", "backup"):
        fail(run, 2, f"illegal {tag} parameter specified")
    ifname, syncid = DEF_MCAST_IFN, 0
    for kind, payload, text in events:
        if kind == "error":
            run.eprint(f"{text}: {payload}")
            return -1
        opt, value = payload
        if tag == "stop-daemon" or opt not in ("mcast-interface", "syncid"):
            if opt in ("mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen"):
                run.unsupported(f"--{opt}")
            fail(run, 2, f"Illegal '{opt}' option with the '{tag}' command")
        if opt == "mcast-interface":
            ifname = value
        else:
            syncid = string_to_number(value or "", 0, 255)
            if syncid == -1:
                fail(run, 2, "illegal syncid specified")
    if leftovers:
        fail(run, 2, f"unexpected argument {leftovers[0]}")
    daemons = run.state["ipvs"].setdefault("daemons", {})
    func = "start-daemon" if tag == "start-daemon" else "stop-daemon"
    if tag == "stop-daemon":
        if arg not in daemons:
            run.eprint(strerror(func, "ESRCH"))
            return -1
        del daemons[arg]
        return 0
    if arg in daemons:
        run.eprint(strerror(func, "EEXIST"))
        return -1
    device = next((i for i in run.state["interfaces"] if i["name"] == ifname), None)
    if device is None:
        run.eprint("No such device")
        return -1
    daemons[arg] = {"mcast_ifn": ifname, "syncid": syncid,
                    "maxlen": device["mtu"] - SYNC_HEADERS}
    return 0


def list_daemon(run: Run) -> None:
    """ipvsadm 1.31 list_daemon(): master first, then backup, with what the kernel
    reports (6.1: maxlen, the default group 224.0.0.81, port 8848, ttl 1)."""
    daemons = run.state["ipvs"].get("daemons", {})
    for state in ("master", "backup"):
        d = daemons.get(state)
        if d is not None:
            run.print(f"{state} sync daemon (mcast={d['mcast_ifn']}, syncid={d['syncid']}, "
                      f"maxlen={d['maxlen']}, group=224.0.0.81, port=8848, ttl=1)")


# ---------------------------------------------------------------- -R


def config_stream_lines(text: str) -> list[list[str]]:
    """config_stream_read() over the whole input: each line's words (without
    any word "ipvsadm"); blank lines give []; input that ends in whitespace
    without a newline ends the stream (the C returns NULL there)."""
    lines: list[list[str]] = []
    pos, n, ws = 0, len(text), " \t\n\r"
    while True:
        words: list[str] = []
        ntoken = 0
        finished = False
        while True:
            if pos >= n:  # fscanf() == EOF
                if ntoken:
                    lines.append(words)
                return lines
            if text[pos] in ws:  # fscanf() == 0: skip blanks up to a newline
                while True:
                    if pos >= n:
                        return lines
                    c = text[pos]
                    pos += 1
                    if c == "\n":
                        finished = True
                        break
                    if c not in "\t\r ":
                        pos -= 1
                        break
                if finished:
                    break
                continue
            start = pos
            while pos < n and text[pos] not in ws:
                pos += 1
            word = text[start:pos]
            tail = ""
            if pos < n:
                tail = text[pos]
                pos += 1
            if word != "ipvsadm":
                ntoken += 1
                words.append(word)
            if tail == "\n":
                break
        lines.append(words)


def restore_table(run: Run, reading_stdin: bool) -> int:
    if reading_stdin:
        tryhelp_exit(run)
    result = 0
    for words in config_stream_lines(run.read_stdin()):
        if not words:
            continue
        rule = run.restore_hook([ARGV0, *words]) if run.restore_hook else None
        if rule is not None:
            if rule.get("stderr"):
                run.eprint(rule["stderr"].rstrip("\n"))
            result = -1 if rule.get("rc", 1) else 0
            continue
        result = process_options(run, [ARGV0, *words], reading_stdin=True)
    return result


# ---------------------------------------------------------------- the kernel side


def _same_service(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["fwmark"] or b["fwmark"]:
        return bool(a["fwmark"] == b["fwmark"] and a["af"] == b["af"])
    return bool(
        a["af"] == b["af"] and a["proto"] == b["proto"] and a["addr"] == b["addr"]
        and a["port"] == b["port"]
    )


def find_service(st: State, svc: dict[str, Any]) -> dict[str, Any] | None:
    for s in st["ipvs"]["services"]:
        if _same_service(s, svc):
            return s  # type: ignore[no-any-return]
    return None


def find_dest(service: dict[str, Any], dest: dict[str, Any]) -> dict[str, Any] | None:
    for d in service["dests"]:
        if d["af"] == dest["af"] and d["addr"] == dest["addr"] and d["port"] == dest["port"]:
            return d  # type: ignore[no-any-return]
    return None


def zero_stats() -> dict[str, int]:
    return dict.fromkeys(
        ("conns", "inpkts", "outpkts", "inbytes", "outbytes",
         "cps", "inpps", "outpps", "inbps", "outbps"), 0)


def _service_attrs(st: State, svc: dict[str, Any]) -> dict[str, Any]:
    if svc["sched"] not in st["ipvs"]["schedulers"]:
        raise KernelRefused("ENOENT")
    if svc["pe"] and svc["pe"] not in st["ipvs"]["persistence_engines"]:
        raise KernelRefused("ENOENT")
    return {
        "sched": svc["sched"],
        "persistent": bool(svc["persistent"]),
        "timeout": svc["timeout"],
        "netmask": svc["netmask"],
        "pe": svc["pe"],
        "ops": bool(svc["ops"]),
        "sched_flags": sorted(svc["sched_flags"]),
    }


def _dest_attrs(dest: dict[str, Any]) -> dict[str, Any]:
    if dest["l_threshold"] > dest["u_threshold"]:
        raise KernelRefused("ERANGE")
    return {
        "fwd": dest["fwd"],
        "weight": dest["weight"],
        "u_threshold": dest["u_threshold"],
        "l_threshold": dest["l_threshold"],
        "tun_type": dest["tun_type"],
        "tun_port": dest["tun_port"],
        "tun_flags": dest["tun_flags"],
    }


def kernel_call(
    st: State,
    cmd: str,
    svc: dict[str, Any],
    dest: dict[str, Any],
    timeouts: list[int] | None,
    has_service: bool,
) -> None:
    """The IPVS netlink commands, with the errno the kernel answers."""
    ipvs = st["ipvs"]
    if cmd == "flush":
        ipvs["services"] = []
        return
    if cmd == "set":
        assert timeouts is not None
        for key, value in zip(("tcp", "tcpfin", "udp"), timeouts):
            if value:
                ipvs["timeouts"][key] = value
        return
    if cmd == "zero" and not has_service:
        for s in ipvs["services"]:
            s["stats"] = zero_stats()
            for d in s["dests"]:
                d["stats"] = zero_stats()
        return
    service = find_service(st, svc)
    if cmd == "add-service":
        if service is not None:
            raise KernelRefused("EEXIST")
        entry = {
            "af": svc["af"], "proto": svc["proto"], "addr": svc["addr"],
            "port": svc["port"], "fwmark": svc["fwmark"],
            **_service_attrs(st, svc), "stats": zero_stats(), "dests": [],
        }
        if svc["fwmark"]:
            entry.update(addr="::" if svc["af"] == "inet6" else "0.0.0.0", port=0)  # noqa: S104
        ipvs["services"].append(entry)
        return
    if service is None:
        raise KernelRefused("ESRCH")
    if cmd == "edit-service":
        service.update(_service_attrs(st, svc))
    elif cmd == "delete-service":
        ipvs["services"].remove(service)
    elif cmd == "zero":
        service["stats"] = zero_stats()
        for d in service["dests"]:
            d["stats"] = zero_stats()
    elif cmd == "add-server":
        attrs = _dest_attrs(dest)
        if dest["af"] == "inet" and addr_type(st, dest["addr"]) not in ("local", "unicast"):
            raise KernelRefused("EINVAL")
        if find_dest(service, dest) is not None:
            raise KernelRefused("EEXIST")
        service["dests"].append({
            "af": dest["af"], "addr": dest["addr"], "port": dest["port"], **attrs,
            "activeconns": 0, "inactconns": 0, "persistconns": 0, "stats": zero_stats(),
        })
    elif cmd == "edit-server":
        attrs = _dest_attrs(dest)
        found = find_dest(service, dest)
        if found is None:
            raise KernelRefused("ENOENT")
        found.update(attrs)
    elif cmd == "delete-server":
        found = find_dest(service, dest)
        if found is None:
            raise KernelRefused("ENOENT")
        service["dests"].remove(found)


# ---------------------------------------------------------------- listing


def _wrap32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _addr_words(af: str, addr: str) -> list[int]:
    if af == "inet6":
        packed = int(ipaddress.IPv6Address(addr))
        return [(packed >> (96 - 32 * i)) & 0xFFFFFFFF for i in range(4)]
    return [int(ipaddress.IPv4Address(addr))]


def _cmp_addr(af: str, a: str, b: str) -> int:
    r = 0
    for x, y in zip(_addr_words(af, a), _addr_words(af, b)):
        r = _wrap32(x - y)
        if r:
            break
    return r


def cmp_services(s1: dict[str, Any], s2: dict[str, Any]) -> int:
    """ipvs_cmp_services(), int wrap-around of the subtractions included."""
    r = _wrap32(s1["fwmark"] - s2["fwmark"])
    if r:
        return r
    r = AF_NUM[s1["af"]] - AF_NUM[s2["af"]]
    if r:
        return r
    r = PROTO_NUM.get(s1["proto"], 0) - PROTO_NUM.get(s2["proto"], 0)
    if r:
        return r
    r = _cmp_addr(s1["af"], s1["addr"], s2["addr"])
    if r:
        return r
    return int(s1["port"]) - int(s2["port"])


def cmp_dests(d1: dict[str, Any], d2: dict[str, Any]) -> int:
    r = _cmp_addr(d1["af"], d1["addr"], d2["addr"]) if d1["af"] == d2["af"] else 0
    if r:
        return r
    return int(d1["port"]) - int(d2["port"])


def msort(items: list[Any], cmp: Any) -> list[Any]:
    """glibc 2.36 qsort() is a top-down merge sort; with ipvsadm's wrapping
    comparisons the order can differ from Python's sort, so do what it does."""
    if len(items) <= 1:
        return list(items)
    n1 = len(items) // 2
    left, right = msort(items[:n1], cmp), msort(items[n1:], cmp)
    out: list[Any] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out + left[i:] + right[j:]


def addrport(st: State, af: str, addr: str, port: int, proto: str | None,
             numeric: bool) -> str:
    if numeric:
        host, pname = addr, str(port)
    else:
        host = st.get("hosts", {}).get(addr, addr)
        pname = SERVICES.get(proto or "", {}).get(port, str(port))
    if af == "inet6":
        return f"[{host}]:{pname}"[:59]
    return f"{host}:{pname}"[:59]


def largenum(value: int, fmt: set[str]) -> str:
    if "exact" in fmt:
        text = str(value)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    if value < 100_000_000:
        return f"{value:9d}"
    if value < 1_000_000_000:
        return f"{value // 1000:8d}K"
    if value < 100_000_000_000:
        return f"{value // 1_000_000:8d}M"
    if value < 100_000_000_000_000:
        return f"{value // 1_000_000_000:8d}G"
    return f"{value // 1_000_000_000_000:8d}T"


# print_title(): the columns after "Prot LocalAddress:Port" per listing format, in the
# order the C tests the formats.
TITLE_COLUMNS = {
    "stats": f"{'Conns':>8} {'InPkts':>8} {'OutPkts':>8} {'InBytes':>8} {'OutBytes':>8}",
    "rate": f"{'CPS':>8} {'InPPS':>8} {'OutPPS':>8} {'InBPS':>8} {'OutBPS':>8}",
    "thresholds": (f"{'Uthreshold':<10} {'Lthreshold':<10} {'ActiveConn':<10} "
                   f"{'InActConn':<10}"),
    "persistent-conn": (f"{'Weight':<9} {'PersistConn':<11} {'ActiveConn':<10} "
                        f"{'InActConn':<10}"),
}


def print_title(run: Run, fmt: set[str]) -> None:
    for key, columns in TITLE_COLUMNS.items():
        if key in fmt:
            run.print(f"{'Prot LocalAddress:Port':<33} {columns}\n  -> RemoteAddress:Port")
            return
    if "tun-info" in fmt:
        run.print("Prot LocalAddress:Port Scheduler Flags\n"
                  "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn "
                  "InActConn")
    elif "rule" not in fmt:
        run.print("Prot LocalAddress:Port Scheduler Flags\n"
                  "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn")


def _sched_flags_text(se: dict[str, Any]) -> str:
    flags = set(se.get("sched_flags") or [])
    if se["sched"] == "sh":
        names = [("flag-1", "sh-fallback"), ("flag-2", "sh-port")]
    elif se["sched"] == "mh":
        names = [("flag-1", "mh-fallback"), ("flag-2", "mh-port")]
    else:
        names = [("flag-1", "flag-1"), ("flag-2", "flag-2"), ("flag-3", "flag-3")]
    return ",".join(text for bit, text in names if bit in flags)


def _tun_info(d: dict[str, Any]) -> str | None:
    if d["fwd"] != "tunnel":
        return None
    ttype = d.get("tun_type", 0)
    if ttype == 1:
        return f"gue:{d.get('tun_port', 0)}:{TUN_FLAGS[d.get('tun_flags', 0)]}"[:15]
    if ttype == 2:
        return f"gre:{TUN_FLAGS[d.get('tun_flags', 0)]}"
    return "ipip"


def _persistence_text(se: dict[str, Any], timeout_word: str, mask_word: str) -> str:
    """` -p 300 -M 255.255.255.0` (rules) or ` persistent 300 mask 255.255.255.0` (the
    listing): the persistence timeout, and the netmask unless it is a single address;
    empty for a service without persistence."""
    if not se["persistent"]:
        return ""
    text = f" {timeout_word} {se['timeout']}"
    if (se["af"] == "inet" and se["netmask"] != "255.255.255.255") or (
            se["af"] == "inet6" and se["netmask"] != 128):
        text += f" {mask_word} {se['netmask']}"
    return text


def print_service_entry(run: Run, se: dict[str, Any], fmt: set[str]) -> None:
    st = run.state
    numeric = "numeric" in fmt
    rule = "rule" in fmt
    if se["fwmark"]:
        if rule:
            name = f"-f {se['fwmark']}" + (" -6" if se["af"] == "inet6" else "")
        else:
            name = f"FWM  {se['fwmark']}" + (" IPv6" if se["af"] == "inet6" else "")
    else:
        vname = addrport(st, se["af"], se["addr"], se["port"], se["proto"], numeric)
        if rule:
            name = f"{PROTO_OPT.get(se['proto'], '--xxx-service')} {vname}"
        else:
            name = f"{se['proto'].upper():<4} {vname}"
            if se["af"] != "inet6":
                name = name[:33]
    line = ""
    flags_text = _sched_flags_text(se)
    if rule:
        line = f"-A {name} -s {se['sched']}" + _persistence_text(se, "-p", "-M")
        if se.get("pe"):
            line += f" --pe {se['pe']}"
        if se.get("ops"):
            line += " -o"
        if flags_text:
            line += f" -b {flags_text}"
    elif "stats" in fmt or "rate" in fmt:
        keys = ("conns", "inpkts", "outpkts", "inbytes", "outbytes") if "stats" in fmt else (
            "cps", "inpps", "outpps", "inbps", "outbps")
        line = f"{name:<33}" + "".join(largenum(se["stats"][k], fmt) for k in keys)
    else:
        line = f"{name} {se['sched']}"
        if flags_text:
            line += f" ({flags_text})"
        line += _persistence_text(se, "persistent", "mask")
        if se["persistent"] and se.get("pe"):  # named only with persistence, as in the C
            line += f" pe {se['pe']}"
        if se.get("ops"):
            line += " ops"
    run.print(line)

    dests = list(se["dests"])
    if "nosort" in fmt:
        dests.reverse()  # the kernel adds destinations at the head of its list
    else:
        dests = msort(dests, cmp_dests)
    for d in dests:
        dname = addrport(st, d["af"], d["addr"], d["port"], se["proto"], numeric)
        if not rule and d["af"] != "inet6":
            dname = dname[:28]
        if rule:
            line = f"-a {name} -r {dname} {FWD_SWITCH[d['fwd']]} -w {d['weight']}"
            if d["fwd"] == "tunnel":
                ttype = d.get("tun_type", 0)
                line += f" --tun-type {TUN_NAMES[ttype]}"
                if ttype == 1:
                    line += f" --tun-port {d.get('tun_port', 0)}"
                if ttype in (1, 2):
                    line += f" {TUN_FLAG_OPTS[d.get('tun_flags', 0)]}"
        elif "stats" in fmt:
            line = f"  -> {dname:<28}" + "".join(
                largenum(d["stats"][k], fmt)
                for k in ("conns", "inpkts", "outpkts", "inbytes", "outbytes"))
        elif "rate" in fmt:
            s = d["stats"]
            line = (f"  -> {dname:<28} {s['cps']:8d} {s['inpps']:8d} {s['outpps']:8d}"
                    + largenum(s["inbps"], fmt) + largenum(s["outbps"], fmt))
        elif "thresholds" in fmt:
            line = (f"  -> {dname:<28} {d['u_threshold']:<10} {d['l_threshold']:<10} "
                    f"{d['activeconns']:<10} {d['inactconns']:<10}")
        elif "persistent-conn" in fmt:
            line = (f"  -> {dname:<28} {d['weight']:<9} {d['persistconns']:<11} "
                    f"{d['activeconns']:<10} {d['inactconns']:<10}")
        elif "tun-info" in fmt:
            line = (f"  -> {dname:<28} {FWD_NAME[d['fwd']]:<7} {_tun_info(d) or 'n/a':<13} "
                    f"{d['weight']:<6} {d['activeconns']:<10} {d['inactconns']:<10}")
        else:
            line = (f"  -> {dname:<28} {FWD_NAME[d['fwd']]:<7} {d['weight']:<6} "
                    f"{d['activeconns']:<10} {d['inactconns']:<10}")
        run.print(line)


def sorted_services(st: State, fmt: set[str]) -> list[dict[str, Any]]:
    services = list(st["ipvs"]["services"])
    if "nosort" in fmt:
        return services
    return msort(services, cmp_services)


def list_all(run: Run, fmt: set[str]) -> None:
    st = run.state
    if "rule" not in fmt:
        run.print(f"IP Virtual Server version {st['ipvs']['version']} "
                  f"(size={st['ipvs']['conn_tab_size']})")
    print_title(run, fmt)
    for se in sorted_services(st, fmt):
        print_service_entry(run, se, fmt)


def list_service(run: Run, svc: dict[str, Any], fmt: set[str]) -> None:
    se = find_service(run.state, svc)
    if se is None:
        fail(run, 1, strerror("get", "ESRCH"))
        return
    print_title(run, fmt)
    print_service_entry(run, se, fmt)


def list_conn(run: Run, fmt: set[str]) -> None:
    run.print("IPVS connection entries")
    if "persistent-conn" in fmt:
        run.print(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} "
                  f"{'destination':<18} {'pe name':<16} pe_data")
    else:
        run.print(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination")
    for c in run.state["ipvs"].get("connections", []):
        expires = int(c.get("expires", 0))
        expire = f"{expires // 60:02d}:{expires % 60:02d}"
        run.print(f"{c['proto']:<3} {expire:<6} {c['state']:<11} {c['client']:<18} "
                  f"{c['virtual']:<18} {c['dest']}")


def save_text(st: State) -> str:
    """What `ipvsadm -S -n` prints for this state."""
    run = Run("ipvsadm", ["-S", "-n"], st)
    list_all(run, {"rule", "numeric"})
    return run.stdout

