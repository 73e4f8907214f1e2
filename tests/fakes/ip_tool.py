"""Fake `ip`: the subset of iproute2 6.1 (Debian 12) that configuring LVS needs.

Objects: `address` (show/list, add, replace, del, flush), `link` (show, set),
`route` (show/list, get, add, replace, append, change, del, flush). Global
options -4 -6 -0 -f -o -br -s -d -r -h -c -p -N -a -V, and `[-force] -batch -`
(see do_batch). Everything else is refused loudly (exit 99) rather than guessed.

Formats follow iproute2's `ip/ipaddress.c` (`print_linkinfo`, `print_addrinfo`,
`ipaddr_modify`, `ipaddr_list_flush_or_save`), `ip/iproute.c` (`print_route`,
`iproute_modify`), `ip/iplink.c`, `ip/ip.c` (`main`, `do_cmd`) and
`lib/utils.c` (`matches`, `invarg`, `duparg2`, `nodev`), and what ip 6.1 printed
in a scratch network namespace (trailing blanks on route lines included).
Exit statuses: 1 for iproute2-side errors (`return -1`), 2 when the kernel
refuses (`-2`), 255 for `exit(-1)`.
"""

# Option parsers and printers with one branch per option, like the C they imitate:
# ruff: noqa: PLR0911, PLR0912

from __future__ import annotations

import fnmatch
import ipaddress
import os
from typing import Any

from . import model
from .model import UNSUPPORTED_RC, KernelError, Run, ToolExit

VERSION = "ip utility, iproute2-6.1.0, libbpf 1.1.2"
LIFETIME = "       valid_lft forever preferred_lft forever"


def matches(word: str, full: str) -> bool:
    """iproute2 matches(): any prefix of the keyword (the empty word too)."""
    return full.startswith(word)


class Exited(ToolExit):
    """An iproute2 error that calls exit() where most return: it ends an `ip -batch`
    too. Every exit status 255 is one (`exit(-1)`); this marks the others."""


class Opts:
    def __init__(self) -> None:
        self.force = False  # -force: a batch goes on after a failed line
        self.family: str | None = None  # None, "inet", "inet6", "link"
        self.oneline = False
        self.brief = False
        self.stats = 0
        self.details = 0

    @property
    def sl(self) -> str:
        return "\\" if self.oneline else "\n"


def usage(run: Run) -> None:
    run.eprint(
        "Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n"
        "       ip [ -force ] -batch filename"
    )
    raise ToolExit(255)


def unknown_command(run: Run, obj: str, sub: str, not_emulated: tuple[str, ...]) -> int:
    """The end of `ip OBJECT SUB`, after the commands the fake knows: `help` prints the
    usage, a real command the fake does not emulate is refused, the rest are unknown."""
    if matches(sub, "help"):
        usage(run)
    if any(matches(sub, s) for s in not_emulated):
        run.unsupported(f"ip {obj} {sub}")
    die(run, 255, f'Command "{sub}" is unknown, try "ip {obj} help".')
    return 255


def die(run: Run, rc: int, msg: str) -> None:
    run.eprint(msg)
    raise ToolExit(rc)


def invarg(run: Run, msg: str, arg: str) -> None:
    die(run, 255, f'Error: argument "{arg}" is wrong: {msg}')


def duparg2(run: Run, key: str, arg: str) -> None:
    die(run, 255, f'Error: either "{key}" is duplicate, or "{arg}" is a garbage.')


def nodev(run: Run, dev: str) -> None:
    die(run, 1, f'Cannot find device "{dev}"')


def incomplete(run: Run) -> None:
    die(run, 255, 'Command line is not complete. Try option "help"')


def keyword_value(run: Run, word: str, keyword: str, it: Any) -> str:
    """`KEYWORD VALUE` or a bare VALUE (`dev eth0` / `eth0`)."""
    if word != keyword:
        return word
    value = next(it, "")
    if not value:
        incomplete(run)
    return str(value)


def dev_arg(run: Run, word: str, it: Any, dev: str | None) -> str:
    """The device of `[dev] NAME` (any other word in its place is a device name too);
    `help` (or a prefix of it) instead prints the usage, a second device is a duparg2."""
    if matches(word, "help"):
        usage(run)
    value = keyword_value(run, word, "dev", it)
    if dev is not None:
        duparg2(run, "dev", value)
    return value


def shown_interfaces(run: Run, dev: str | None, up_only: bool) -> list[dict[str, Any]]:
    """The interfaces a `show`/`list` (`dev NAME`, `up`) selects, by index; a named device
    that does not exist ends the command."""
    st = run.state
    if dev is not None and model.iface(st, dev) is None:
        die(run, 1, f'Device "{dev}" does not exist.')
    return [ifc for ifc in sorted(st["interfaces"], key=lambda i: i["index"])
            if (dev is None or ifc["name"] == dev) and (ifc["up"] or not up_only)]


def next_arg(run: Run, it: Any) -> str:
    """NEXT_ARG(): the word after a keyword; none left is an incomplete command."""
    value = next(it, None)
    if value is None:
        incomplete(run)
    return str(value)


def get_prefix(run: Run, text: str, family: str | None) -> tuple[str, int, bool]:
    """(address, prefix length, was the length given); exits 1 like get_prefix()."""
    addr, slash, plen_text = text.partition("/")
    try:
        ip = ipaddress.ip_address(addr)
        if (family == "inet6" and ip.version != 6) or (family == "inet" and ip.version != 4):
            raise ValueError(text)
        maxlen = 32 if ip.version == 4 else 128
        if slash:
            if plen_text.isdigit():
                plen = int(plen_text)
            elif ip.version == 4:
                plen = ipaddress.IPv4Network(f"0.0.0.0/{plen_text}").prefixlen
            else:
                raise ValueError(text)
            if plen > maxlen:
                raise ValueError(text)
        else:
            plen = maxlen
    except ValueError:
        run.eprint(f'Error: any valid prefix is expected rather than "{text}".')
        raise Exited(1) from None
    return str(ip), plen, bool(slash)


def get_addr(run: Run, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        run.eprint(f'Error: any valid address is expected rather than "{text}".')
        raise Exited(1) from None


# ---------------------------------------------------------------- entry


def main(run: Run) -> int:
    args = run.args
    opts = Opts()
    batch: str | None = None
    i = 0
    while i < len(args):
        opt = args[i]
        if opt == "--":
            i += 1
            break
        if not opt.startswith("-"):
            break
        o = opt[1:] if opt.startswith("--") else opt
        if o == "-4":
            opts.family = "inet"
        elif o == "-6":
            opts.family = "inet6"
        elif o == "-0":
            opts.family = "link"
        elif matches(o, "-batch"):
            i += 1
            if i >= len(args):
                usage(run)
            batch = args[i]
        elif matches(o, "-loops") or matches(o, "-netns") \
                or matches(o, "-timestamp") or matches(o, "-tshort") or matches(o, "-json") \
                or o == "-echo" or o in ("-M", "-B"):
            run.unsupported(f"option {opt}")
        elif matches(o, "-family"):
            i += 1
            if i >= len(args):
                usage(run)
            fam = {"inet": "inet", "inet6": "inet6", "link": "link"}.get(args[i])
            if fam is None:
                invarg(run, "invalid protocol family", args[i])
            opts.family = fam
        elif matches(o, "-stats") or matches(o, "-statistics"):
            opts.stats += 1
        elif matches(o, "-details"):
            opts.details += 1
        elif matches(o, "-oneline"):
            opts.oneline = True
        elif matches(o, "-Version"):
            run.print(VERSION)
            return 0
        elif matches(o, "-brief"):
            opts.brief = True
        elif matches(o, "-rcvbuf"):
            i += 1
        elif matches(o, "-help"):
            usage(run)
        elif matches(o, "-force"):
            opts.force = True
        elif (matches(o, "-human") or matches(o, "-human-readable") or matches(o, "-iec")
              or matches(o, "-resolve") or matches(o, "-pretty")
              or matches(o, "-Numeric") or matches(o, "-all") or o in ("-c", "-color")
              or o.startswith("-color=")):
            pass
        else:
            die(run, 255, f'Option "{o}" is unknown, try "ip -help".')
        i += 1
    if batch is not None:  # as ip.c: the words after the options are not looked at
        return do_batch(run, opts, batch)
    return do_command(run, opts, args[i:])


def do_command(run: Run, opts: Opts, rest: list[str]) -> int:
    """`ip OBJECT ...` after the global options (do_cmd)."""
    if not rest:
        usage(run)
    obj, rest = rest[0], rest[1:]
    if opts.details or opts.stats:
        run.unsupported("-details/-statistics output")
    for name, func in (("address", do_address), ("addrlabel", None), ("maddress", None),
                       ("route", do_route), ("rule", None), ("neighbor", None),
                       ("neighbour", None), ("ntable", None), ("ntbl", None),
                       ("link", do_link), ("fou", do_fou)):
        if matches(obj, name):
            if func is None:
                run.unsupported(f"ip {name}")
            return int(func(run, opts, rest))
    if matches(obj, "help"):
        usage(run)
    others = ("l2tp", "ila", "macsec", "tunnel", "tunl", "tuntap", "tap", "token",
              "tcpmetrics", "tcp_metrics", "monitor", "xfrm", "mroute", "mrule", "netns",
              "netconf", "vrf", "sr", "nexthop", "mptcp", "ioam", "stats")
    if any(matches(obj, o) for o in others):
        run.unsupported(f"ip {obj}")
    die(run, 1, f'Object "{obj}" is unknown, try "ip help".')
    return 1


def do_batch(run: Run, opts: Opts, name: str) -> int:
    """`ip [-force] -batch -`: one command a line of stdin, without the leading `ip`
    (ip.c batch(), lib/utils.c getcmdline() and makeargs()). `#` starts a comment; blank
    lines count in the line numbers. A failed line prints `Command failed -:N` and ends
    the batch, or with -force the next line runs; the exit status is 1 if any failed.
    An error that iproute2 handles with exit() (Exited, every status 255, and what is
    not emulated) ends the whole process there, as it does in ip. `in_restore` failure
    rules match a line as `["ip", *words]`, as they match a line of `ipvsadm -R`."""
    if name != "-":
        run.unsupported("-batch from a file")
    result = 0
    for number, line in enumerate(run.read_stdin().splitlines(), start=1):
        text = line.split("#", 1)[0]
        if text.rstrip().endswith("\\") or '"' in text or "'" in text:
            run.unsupported("line continuations and quoted words in -batch input")
        words = text.split()
        if not words:
            continue
        if not batch_line(run, opts, words):
            run.eprint(f"Command failed {name}:{number}")
            result = 1
            if not opts.force:
                break
    return result


def batch_line(run: Run, opts: Opts, words: list[str]) -> bool:
    """Run one line of a batch; whether it succeeded."""
    rule = run.restore_hook(["ip", *words]) if run.restore_hook else None
    if rule is not None:
        if rule.get("stderr"):
            run.eprint(rule["stderr"].rstrip("\n"))
        return not rule.get("rc", 1)
    try:
        return do_command(run, opts, words) == 0
    except ToolExit as done:
        if isinstance(done, Exited) or done.rc in (255, UNSUPPORTED_RC):
            raise
        return done.rc == 0


# ---------------------------------------------------------------- printing


def _link_name(ifc: dict[str, Any]) -> str:
    return ifc["name"] + (f"@{ifc['link']}" if ifc.get("link") else "")


def link_header(ifc: dict[str, Any], do_link: bool) -> str:
    mode = "mode DEFAULT " if do_link else ""
    # A tunnel device never up has no queueing discipline yet ("noop").
    qdisc = "noop" if ifc["kind"] in model.TUNNEL_KINDS and not ifc["up"] else ifc["qdisc"]
    return (
        f"{ifc['index']}: {_link_name(ifc)}: <{model.link_flags(ifc)}> mtu {ifc['mtu']} "
        f"qdisc {qdisc} "
        f"state {model.oper_state(ifc)} {mode}group default qlen {ifc['qlen']}"
    )


def link_l2(ifc: dict[str, Any]) -> str:
    if ifc["kind"] in model.TUNNEL_KINDS:
        kind, address, _mtu = model.TUNNEL_KINDS[ifc["kind"]]
        return f"    {kind} {address} brd {address}"
    if ifc["kind"] == "loopback":
        return f"    link/loopback {ifc['mac']} brd 00:00:00:00:00:00"
    return f"    link/ether {ifc['mac']} brd ff:ff:ff:ff:ff:ff"


def lifetime(a: dict[str, Any]) -> str:
    """The lifetime line: `preferred_lft 0sec` for a deprecated address (as 6.1 prints
    an address added with `preferred_lft 0`)."""
    if "deprecated" in a.get("flags", []):
        return LIFETIME.replace("preferred_lft forever", "preferred_lft 0sec")
    return LIFETIME


def addr_body(ifc: dict[str, Any], a: dict[str, Any], family: str) -> str:
    text = f"    {family} {a['local']}/{a['prefixlen']} "
    if family == "inet":
        if a.get("metric"):
            text += f"metric {a['metric']} "
        if a.get("brd"):
            text += f"brd {a['brd']} "
        text += f"scope {a['scope']} "
        if a["secondary"]:
            text += "secondary "
        text += a["label"]
    else:
        text += f"scope {a['scope']} "
        for flag in a.get("flags", []):
            text += f"{flag} "
    return text


def v6_addrs(st: model.State, ifc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(ifc.get("addrs6", [])) + model.auto_v6_addresses(st, ifc)


# ---------------------------------------------------------------- ip address


def do_address(run: Run, opts: Opts, args: list[str]) -> int:
    if not args:
        return addr_list(run, opts, [], flush=False)
    sub, rest = args[0], args[1:]
    if matches(sub, "add"):
        return addr_modify(run, opts, rest, "add")
    if matches(sub, "change") or sub == "chg":
        return addr_modify(run, opts, rest, "change")
    if matches(sub, "replace"):
        return addr_modify(run, opts, rest, "replace")
    if matches(sub, "delete"):
        return addr_modify(run, opts, rest, "del")
    if matches(sub, "list") or matches(sub, "show") or matches(sub, "lst"):
        return addr_list(run, opts, rest, flush=False)
    if matches(sub, "flush"):
        return addr_list(run, opts, rest, flush=True)
    return unknown_command(run, "address", sub, ("save", "showdump", "restore"))


def addr_modify(run: Run, opts: Opts, args: list[str], action: str) -> int:
    st = run.state
    local: tuple[str, int, bool] | None = None
    dev: str | None = None
    brd: str | None = None
    label: str | None = None
    scope: str | None = None
    metric = 0
    flags: list[str] = []
    preferred: str | None = None
    it = iter(args)
    for word in it:
        if word in ("peer", "remote", "anycast") or matches(word, "valid_lft"):
            run.unsupported(f"ip address {word}")
        elif matches(word, "preferred_lft"):
            # Only the two lifetimes that never expire on their own: 0 (deprecated at
            # once, the kernel's IFA_F_DEPRECATED) and forever (the default).
            value = next_arg(run, it)
            if value not in ("0", "forever"):
                run.unsupported(f"ip address preferred_lft {value}")
            preferred = value
        elif matches(word, "broadcast") or word == "brd":
            value = next_arg(run, it)
            if brd is not None:
                die(run, 255, f'Error: duplicate "broadcast": "{value}" is the second value.')
            brd = value
        elif word == "scope":
            value = next_arg(run, it)
            if value not in model.SCOPES:
                invarg(run, "invalid scope value.", value)
            scope = value
        elif word == "dev":
            dev = next_arg(run, it)
        elif word == "label":
            label = next_arg(run, it)
        elif matches(word, "metric") or matches(word, "priority") or matches(word, "preference"):
            value = next_arg(run, it)
            if not value.isdigit():
                invarg(run, '"metric" value is invalid\n', value)
            metric = int(value)
        elif word == "nodad":
            flags.append(word)
        elif word in ("home", "optimistic", "mngtmpaddr", "noprefixroute", "autojoin"):
            run.unsupported(f"ip address flag {word}")
        else:
            value = keyword_value(run, word, "local", it)
            if matches(value, "help"):
                usage(run)
            if local is not None:
                duparg2(run, "local", value)
            local = get_prefix(run, value, opts.family if opts.family != "link" else None)
    if dev is None:
        die(run, 1, 'Not enough information: "dev" argument is required.')
    assert dev is not None
    if local is None:
        run.unsupported("an address command without an address")
    assert local is not None
    addr, plen, plen_given = local
    if ":" in addr:
        return addr_modify_v6(run, dev, addr, plen, action, flags, preferred)
    if preferred is not None:
        run.unsupported("ip address preferred_lft for IPv4")
    if action == "del" and not plen_given:
        run.eprint(
            "Warning: Executing wildcard deletion to stay compatible with old scripts.\n"
            f"         Explicitly specify the prefix length ({addr}/32) to avoid this warning.\n"
            "         This special behaviour is likely to disappear in further releases,\n"
            "         fix your scripts!"
        )
    if brd in ("+", "-") and action != "del":
        brd = str(model._net(addr, plen).broadcast_address) if brd == "+" and plen <= 30 else None
    elif brd is not None:
        brd = get_addr(run, brd)
    ifc = model.iface(st, dev)
    if ifc is None:
        nodev(run, dev)
    assert ifc is not None
    try:
        if action == "del":
            model.del_v4_address(st, ifc, addr, plen if plen_given else None, label)
        elif action == "add":
            model.add_v4_address(st, ifc, addr, plen, brd=brd, scope=scope, label=label,
                                 metric=metric)
        else:
            existing = [a for a in ifc["addrs"] if a["local"] == addr and a["prefixlen"] == plen]
            if existing:
                existing[0].update(brd=brd, label=label or dev, metric=metric)
                if scope:
                    existing[0]["scope"] = scope
            elif action == "change":
                raise KernelError("RTNETLINK answers: No such file or directory")
            else:
                model.add_v4_address(st, ifc, addr, plen, brd=brd, scope=scope, label=label,
                                     metric=metric)
    except KernelError as refused:
        die(run, 2, str(refused))
    return 0


def addr_modify_v6(run: Run, dev: str, addr: str, plen: int, action: str,
                   flags: list[str] | None = None, preferred: str | None = None) -> int:
    st = run.state
    ifc = model.iface(st, dev)
    if ifc is None:
        nodev(run, dev)
    assert ifc is not None
    mine = [a for a in ifc["addrs6"] if a["local"] == addr and a["prefixlen"] == plen]
    if action == "del":
        if not mine:
            die(run, 2, "RTNETLINK answers: Cannot assign requested address")
        ifc["addrs6"].remove(mine[0])
        return 0
    flags = list(flags or [])
    if mine:
        if action == "add":
            die(run, 2, "RTNETLINK answers: File exists")
        if preferred is not None:  # change/replace: the kernel sets the new lifetime
            kept = [f for f in mine[0]["flags"] if f != "deprecated"]
            mine[0]["flags"] = kept + (["deprecated"] if preferred == "0" else [])
        return 0
    # No "No such file" for a change here: the kernel's inet6_rtm_newaddr adds a missing
    # IPv6 address whatever NLM_F_CREATE says ("userspace already relies on" it).
    if preferred == "0":
        flags.append("deprecated")
    scope = "link" if addr.lower().startswith("fe80") else "global"
    ifc["addrs6"].append({"local": addr, "prefixlen": plen, "scope": scope,
                          "flags": flags})
    return 0


def addr_list(run: Run, opts: Opts, args: list[str], flush: bool) -> int:
    st = run.state
    if flush and not args:
        die(run, 1, "Flush requires arguments.")
    dev_name: str | None = None
    scope: str | None = None
    label: str | None = None
    to: tuple[str, int, bool] | None = None
    up_only = False
    kinds: set[str] = set()
    it = iter(args)
    for word in it:
        if word == "to":
            value = next_arg(run, it)
            to = get_prefix(run, value, None)
        elif word == "scope":
            value = next_arg(run, it)
            if value not in model.SCOPES and value != "all":
                invarg(run, 'invalid "scope"\n', value)
            scope = value
        elif word == "up":
            up_only = True
        elif word in ("primary", "secondary", "permanent", "dynamic"):
            kinds.add(word)
        elif word == "label":
            label = next_arg(run, it)
        elif word in ("group", "master", "vrf", "nomaster", "type", "tentative", "deprecated",
                      "dadfailed", "temporary"):
            run.unsupported(f"ip address show {word}")
        else:
            dev_name = dev_arg(run, word, it, dev_name)
    interfaces = shown_interfaces(run, dev_name, up_only)

    def wanted(ifc: dict[str, Any], a: dict[str, Any], family: str) -> bool:
        if scope not in (None, "all") and a["scope"] != scope:
            return False
        name = a.get("label", ifc["name"]) if family == "inet" else ifc["name"]
        if label is not None and not fnmatch.fnmatchcase(name, label):
            return False
        if "secondary" in kinds and not a.get("secondary"):
            return False
        if "primary" in kinds and a.get("secondary"):
            return False
        if "dynamic" in kinds:
            return False
        if to is not None:
            try:
                net = ipaddress.ip_network(f"{to[0]}/{to[1]}", strict=False)
                return ipaddress.ip_address(a["local"]) in net
            except (ValueError, TypeError):
                return False
        return True

    for ifc in interfaces:
        v4 = [a for a in ifc["addrs"] if wanted(ifc, a, "inet")] \
            if opts.family in (None, "inet") else []
        v6 = [a for a in v6_addrs(st, ifc) if wanted(ifc, a, "inet6")] \
            if opts.family in (None, "inet6") else []
        if flush:
            for a in v4:
                if a in ifc["addrs"]:  # may be gone with its primary already
                    try:
                        model.del_v4_address(st, ifc, a["local"], a["prefixlen"])
                    except KernelError:
                        pass
            for a in v6:
                if a in ifc.get("addrs6", []):
                    ifc["addrs6"].remove(a)
            continue
        _print_addresses(run, opts, ifc, v4, v6, filtered=bool(
            scope or label or to or kinds or opts.family))
    return 0


def _print_addresses(run: Run, opts: Opts, ifc: dict[str, Any], v4: list[dict[str, Any]],
                     v6: list[dict[str, Any]], filtered: bool) -> None:
    if opts.brief:
        if filtered and not (v4 or v6):
            return
        shown = "".join(f"{a['local']}/{a['prefixlen']} " for a in v4 + v6)
        run.print(f"{_link_name(ifc):<16} {model.oper_state(ifc):<14} {shown}")
        return
    if opts.oneline:
        for family, addrs in (("inet", v4), ("inet6", v6)):
            for a in addrs:
                run.print(f"{ifc['index']}: {ifc['name']}{addr_body(ifc, a, family)}\\"
                          f"{lifetime(a)}")
        return
    if filtered and not (v4 or v6):
        return
    run.print(link_header(ifc, do_link=False))
    if opts.family in (None, "link"):
        run.print(link_l2(ifc))
    for family, addrs in (("inet", v4), ("inet6", v6)):
        for a in addrs:
            run.print(addr_body(ifc, a, family))
            run.print(lifetime(a))


# ---------------------------------------------------------------- ip link


def do_link(run: Run, opts: Opts, args: list[str]) -> int:
    if not args:
        return link_show(run, opts, [])
    sub, rest = args[0], args[1:]
    if matches(sub, "add"):
        return link_add(run, rest)
    if matches(sub, "delete"):
        return link_del(run, rest)
    if matches(sub, "replace"):
        run.unsupported(f"ip link {sub}")
    if matches(sub, "set") or matches(sub, "change"):
        return link_set(run, rest)
    if matches(sub, "show") or matches(sub, "lst") or matches(sub, "list"):
        return link_show(run, opts, rest)
    return unknown_command(run, "link", sub, ("xstats", "afstats", "property"))


def link_add(run: Run, args: list[str]) -> int:
    """`ip link add [name] NAME type ipip|gre|ip6tnl|ip6gre [icsum]`: a tunnel device
    from any to any (the only kind the fake creates), down, as the kernel makes it."""
    st = run.state
    name = kind = None
    options: list[str] = []
    it = iter(args)
    for word in it:
        if word == "name":
            name = next_arg(run, it)
        elif word == "type":
            kind = next_arg(run, it)
            options = list(it)
        elif name is None and word != "dev":
            name = word
        else:
            run.unsupported(f"ip link add {word}")
    if name is None:
        die(run, 255, 'Not enough information: "dev" argument is required.')
    if kind is None:
        die(run, 2, "Not enough information: \"type\" argument is required")
    if kind not in model.TUNNEL_KINDS:
        run.unsupported(f"ip link add type {kind}")
    if any(o not in ("icsum", "ocsum", "csum") for o in options):
        run.unsupported(f"ip link add type {kind} {' '.join(options)}")
    module = {"ipip": "ipip", "gre": "ip_gre", "ip6tnl": "ip6_tunnel", "ip6gre": "ip6_gre"}[kind]
    if module not in st["modules"]["available"] and module not in st["modules"]["loaded"]:
        die(run, 2, "Error: Unknown device type.")
    model.load_module(st, module)  # the kernel's request_module("rtnl-link-KIND")
    assert name is not None
    existing = model.iface(st, name)
    same_parms = [i for i in st["interfaces"] if i["kind"] == kind and not options]
    if existing is not None or same_parms:
        die(run, 2, "RTNETLINK answers: File exists")
    ifc = model.new_interface(st, name, kind=kind, up=False)
    ifc["options"] = options
    return 0


def link_del(run: Run, args: list[str]) -> int:
    """`ip link del [dev] NAME`; a module's fallback device cannot go."""
    st = run.state
    dev: str | None = None
    it = iter(args)
    for word in it:
        dev = dev_arg(run, word, it, dev)
    if dev is None:
        die(run, 255, 'Not enough information: "dev" argument is required.')
    assert dev is not None
    ifc = model.iface(st, dev)
    if ifc is None:
        nodev(run, dev)
    assert ifc is not None
    if ifc.get("fallback") or ifc["kind"] not in model.TUNNEL_KINDS:
        die(run, 2, "RTNETLINK answers: Operation not supported")
    model.remove_interface(st, dev)
    return 0


def do_fou(run: Run, opts: Opts, args: list[str]) -> int:
    """`ip fou add|del port P gue|ipproto N [-6]`, `ip fou show` (iproute2 ipfou.c)."""
    st = run.state
    if "fou" not in {m for m in st["modules"]["loaded"]}:
        if "fou" not in st["modules"]["available"]:
            die(run, 1, "RTNETLINK answers: No such file or directory\n"
                        "Failed to send request")
        model.load_module(st, "fou")  # genetlink loads the family's module on lookup
    if not args or matches(args[0], "show") or matches(args[0], "list"):
        for entry in st["fou"]:
            kind = "gue" if entry["gue"] else f"ipproto {entry['ipproto']}"
            run.print(f"port {entry['port']} {kind}" + (" -6" if entry["family"] == 6 else ""))
        return 0
    sub, rest = args[0], args[1:]
    port = None
    gue = False
    ipproto = None
    family = 6 if opts.family == "inet6" else 4
    it = iter(rest)
    for word in it:
        if word == "port":
            value = next_arg(run, it)
            if not value.isdigit() or not 0 < int(value) < 65536:
                invarg(run, "invalid port", value)
            port = int(value)
        elif word == "gue":
            gue = True
        elif word == "ipproto":
            ipproto = int(next_arg(run, it))
        elif word == "-6":
            family = 6
        else:
            run.unsupported(f"ip fou {sub} {word}")
    if port is None:
        die(run, 255, "fou: missing port")
    entry = {"port": port, "family": family, "gue": gue, "ipproto": ipproto}
    mine = [e for e in st["fou"] if (e["port"], e["family"]) == (port, family)]
    if matches(sub, "add"):
        if not gue and ipproto is None:
            die(run, 255, "fou: must set ipproto or gue")
        if mine:
            die(run, 2, "RTNETLINK answers: Address already in use")
        st["fou"].append(entry)
        return 0
    if matches(sub, "delete"):
        if not mine:
            die(run, 2, "RTNETLINK answers: No such file or directory")
        st["fou"].remove(mine[0])
        return 0
    return unknown_command(run, "fou", sub, ())


def link_set(run: Run, args: list[str]) -> int:
    st = run.state
    dev: str | None = None
    changes: dict[str, Any] = {}
    it = iter(args)
    for word in it:
        if word in ("up", "down"):
            changes["up"] = word == "up"
        elif word == "mtu":
            value = next_arg(run, it)
            if not value.isdigit():
                invarg(run, 'Invalid "mtu" value\n', value)
            changes["mtu"] = int(value)
        elif word in ("address", "addr"):
            value = next_arg(run, it)
            changes["mac"] = value.lower()
        elif word == "arp":
            arp = next(it, None)
            if arp not in ("on", "off"):
                invarg(run, '"arp" must be "on" or "off"', str(arp))
            changes["noarp"] = arp == "off"
        elif word in ("txqueuelen", "qlen", "txqlen"):
            qlen = next(it, None)
            if qlen is None or not qlen.isdigit():
                invarg(run, 'Invalid "txqueuelen" value\n', str(qlen))
            changes["qlen"] = int(qlen)
        elif word in ("name", "alias", "promisc", "allmulticast", "multicast", "netns",
                      "master", "nomaster", "vrf", "type", "group", "carrier", "protodown",
                      "xdp", "vf", "link-netns", "link-netnsid", "addrgenmode", "altname"):
            run.unsupported(f"ip link set {word}")
        else:
            dev = dev_arg(run, word, it, dev)
    if dev is None:
        die(run, 255, 'Not enough information: "dev" argument is required.')
    assert dev is not None
    ifc = model.iface(st, dev)
    if ifc is None:
        nodev(run, dev)
    assert ifc is not None
    for key in ("mtu", "mac", "noarp", "qlen"):
        if key in changes:
            ifc[key] = changes[key]
    if "up" in changes:
        model.set_link(st, ifc, changes["up"])
    return 0


def link_show(run: Run, opts: Opts, args: list[str]) -> int:
    dev_name: str | None = None
    up_only = False
    it = iter(args)
    for word in it:
        if word == "up":
            up_only = True
        elif word in ("group", "master", "vrf", "type", "nomaster"):
            run.unsupported(f"ip link show {word}")
        else:
            dev_name = dev_arg(run, word, it, dev_name)
    for ifc in shown_interfaces(run, dev_name, up_only):
        if opts.brief:
            run.print(f"{_link_name(ifc):<16} {model.oper_state(ifc):<14} {ifc['mac']} "
                      f"<{model.link_flags(ifc)}> ")
        else:
            run.print(link_header(ifc, do_link=True) + opts.sl + link_l2(ifc))
    return 0


# ---------------------------------------------------------------- ip route


def do_route(run: Run, opts: Opts, args: list[str]) -> int:
    if opts.family == "inet6":
        if (args and not any(matches(args[0], w) for w in ("list", "show", "lst"))) or args[1:]:
            run.unsupported("IPv6 routes other than `ip -6 route show`")
        for line in v6_kernel_routes(run.state):
            run.print(line)
        return 0
    if opts.family == "link":
        run.unsupported("link-layer routes")
    if not args:
        return route_list(run, opts, [], flush=False)
    sub, rest = args[0], args[1:]
    for name, mode in (("add", "add"), ("change", "change"), ("replace", "replace"),
                       ("prepend", "prepend"), ("append", "append"), ("test", "test"),
                       ("delete", "del")):
        if matches(sub, name) or (name == "change" and sub == "chg"):
            if mode in ("prepend", "test"):
                run.unsupported(f"ip route {sub}")
            return route_modify(run, opts, rest, mode)
    if matches(sub, "list") or matches(sub, "show") or matches(sub, "lst"):
        return route_list(run, opts, rest, flush=False)
    if matches(sub, "get"):
        return route_get(run, opts, rest)
    if matches(sub, "flush"):
        return route_list(run, opts, rest, flush=True)
    return unknown_command(run, "route", sub, ("save", "restore", "showdump"))


def v6_kernel_routes(st: model.State) -> list[str]:
    """The routes IPv6 gives every address's prefix (only those are emulated)."""
    found = []
    for ifc in st["interfaces"]:
        if ifc["kind"] == "loopback":
            continue  # ::1 gets no route in the main table
        for a in v6_addrs(st, ifc):
            net = ipaddress.IPv6Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            dst = str(net.network_address) if net.prefixlen == 128 else str(net)
            key = (int(net.network_address), -net.prefixlen, ifc["index"])
            found.append((key, f"{dst} dev {ifc['name']} proto kernel metric 256 pref medium"))
    return [line for _, line in sorted(set(found))]


def route_modify(run: Run, opts: Opts, args: list[str], mode: str) -> int:
    st = run.state
    spec: dict[str, Any] = {}
    it = iter(args)
    for word in it:
        if word in ("via", "src", "dev", "oif", "metric", "priority", "preference", "proto",
                    "protocol", "scope", "table"):
            value = next_arg(run, it)
            if word == "via":
                if value in ("inet", "inet6", "mpls", "bridge", "link"):
                    run.unsupported("via FAMILY")
                spec["via"] = get_addr(run, value)
            elif word == "src":
                spec["src"] = get_addr(run, value)
            elif word in ("dev", "oif"):
                spec["dev"] = value
            elif word in ("metric", "priority", "preference"):
                if not value.isdigit():
                    invarg(run, '"metric" value is invalid\n', value)
                spec["metric"] = int(value)
            elif word in ("proto", "protocol"):
                spec["proto"] = None if value == "boot" else value
            elif word == "scope":
                if value not in model.SCOPES:
                    invarg(run, "invalid \"scope\" value\n", value)
                spec["scope"] = value
            elif value != "main":
                run.unsupported(f"routing table {value}")
        elif word == "onlink":
            spec["onlink"] = True
        elif word in ("unicast", "to"):
            continue
        elif word in ("local", "broadcast", "multicast", "throw", "unreachable", "prohibit",
                      "blackhole", "nat", "nexthop", "nhid", "encap", "mtu", "advmss",
                      "from", "tos", "dsfield", "expires", "realms", "initcwnd", "pref"):
            run.unsupported(f"ip route ... {word}")
        else:
            if "dst" in spec:
                duparg2(run, "to", word)
            if word in ("default", "all", "any"):
                spec["dst"] = "default"
            else:
                addr, plen, _ = get_prefix(run, word, None)
                spec["dst"] = f"{addr}/{plen}"
    if "dst" not in spec:
        usage(run)
    if ":" in spec["dst"] or ":" in str(spec.get("via", "")):
        run.unsupported("IPv6 routes")
    if spec.get("dev") and model.iface(st, spec["dev"]) is None:
        nodev(run, spec["dev"])
    try:
        if mode == "del":
            model.del_route(st, spec)
        else:
            model.add_route(st, spec, mode=mode)
    except KernelError as refused:
        die(run, 2, str(refused))
    return 0


def route_line(r: dict[str, Any], omit: set[str]) -> str:
    dst = r["dst"]
    if dst.endswith("/32"):
        dst = dst[:-3]
    parts = [dst]
    if r.get("via") and "via" not in omit:
        parts += ["via", r["via"]]
    if "dev" not in omit:
        parts += ["dev", r["dev"]]
    if r.get("proto") and r["proto"] != "boot" and "proto" not in omit:
        parts += ["proto", r["proto"]]
    if r.get("scope") and r["scope"] not in ("global", "universe") and "scope" not in omit:
        parts += ["scope", r["scope"]]
    if r.get("src") and "src" not in omit:
        parts += ["src", r["src"]]
    if r.get("metric"):
        parts += ["metric", str(r["metric"])]
    if r.get("onlink"):
        parts.append("onlink")
    return " ".join(parts) + " "


def route_list(run: Run, opts: Opts, args: list[str], flush: bool) -> int:
    st = run.state
    if flush and not args:
        die(run, 1, '"ip route flush" requires arguments.')
    sel: dict[str, Any] = {}
    omit: set[str] = set()
    it = iter(args)
    for word in it:
        if word in ("table", "proto", "protocol", "scope", "type", "dev", "oif", "via", "src",
                    "root", "match", "exact"):
            value = next_arg(run, it)
            if word == "table":
                if value != "main":
                    run.unsupported(f"routing table {value}")
            elif word in ("proto", "protocol"):
                sel["proto"] = value
                omit.add("proto")
            elif word == "scope":
                sel["scope"] = value
                omit.add("scope")
            elif word == "type":
                if value != "unicast":
                    run.unsupported(f"route type {value}")
            elif word in ("dev", "oif"):
                if model.iface(st, value) is None:
                    die(run, 1, f'Cannot find device "{value}"')
                sel["dev"] = value
                omit.add("dev")
            elif word == "via":
                sel["via"] = get_addr(run, value)
                omit.add("via")
            elif word == "src":
                sel["src"] = get_addr(run, value)
                omit.add("src")
            else:
                sel[word] = model.parse_dst(value) if value != "default" else "default"
        elif word in ("cache", "cached", "cloned", "iif", "from", "tos", "dsfield", "vrf",
                      "mark", "realms", "realm", "expires"):
            run.unsupported(f"ip route show {word}")
        elif matches(word, "help") and word:
            usage(run)
        elif word in ("default", "all", "any"):
            sel["exact"] = "default"
        else:
            addr, plen, _ = get_prefix(run, word, None)
            sel["exact"] = model.parse_dst(f"{addr}/{plen}")
    for r in list(model.sorted_routes(st)):
        if not _route_selected(r, sel):
            continue
        if flush:
            st["routes"].remove(r)
        else:
            run.print(route_line(r, omit))
    return 0


def _route_selected(r: dict[str, Any], sel: dict[str, Any]) -> bool:
    if "dev" in sel and r["dev"] != sel["dev"]:
        return False
    if "via" in sel and r.get("via") != sel["via"]:
        return False
    if "src" in sel and r.get("src") != sel["src"]:
        return False
    if "proto" in sel and (r.get("proto") or "boot") != sel["proto"]:
        return False
    if "scope" in sel and (r.get("scope") or "global") != sel["scope"]:
        return False
    net = model.dst_network(r["dst"])
    if "exact" in sel and r["dst"] != sel["exact"]:
        return False
    if "root" in sel:
        root = model.dst_network(sel["root"])
        if not (net.prefixlen >= root.prefixlen and net.subnet_of(root)):
            return False
    if "match" in sel:
        want = model.dst_network(sel["match"])
        if not (net.prefixlen <= want.prefixlen and want.subnet_of(net)):
            return False
    return True


def route_get(run: Run, opts: Opts, args: list[str]) -> int:
    st = run.state
    target: str | None = None
    for word in args:
        if word in ("from", "iif", "oif", "tos", "mark", "vrf", "uid", "ipproto", "sport",
                    "dport", "fibmatch", "connected", "dev"):
            run.unsupported(f"ip route get {word}")
        if word != "to":
            target = get_addr(run, word)
    if target is None:
        incomplete(run)
    assert target is not None
    if ":" in target:
        run.unsupported("IPv6 route lookups")
    uid = os.getuid()
    if model.addr_type(st, target) == "local":
        run.print(f"local {target} dev lo src {target} uid {uid} {opts.sl}    cache <local> ")
        return 0
    r = model.route_lookup(st, target)
    if r is None:
        die(run, 2, "RTNETLINK answers: Network is unreachable")
    assert r is not None
    src = r.get("src") or model.preferred_source(st, r["dev"], r.get("via") or target)
    via = f"via {r['via']} " if r.get("via") else ""
    src_text = f"src {src} " if src else ""
    run.print(f"{target} {via}dev {r['dev']} {src_text}uid {uid} {opts.sl}    cache ")
    return 0
