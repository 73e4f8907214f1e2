"""Fake `arping` (two flavours) and `modprobe`.

arping exists in two incompatible programs; the state says which one this
machine has (`FakeHost.set_arping_flavour`):

- "iputils" (Debian package iputils-arping 20221126), from a reading of
  iputils `arping.c` (`main`, `usage`, `finish`, `check_ifflags`,
  `print_hex`): `-V` prints the version and build features, `-I IFACE`,
  `-s SRC`, `-c N`, `-w S`, `-U`, `-A`, `-q`, `-f`, `-D`, `-b`. Exit 1 when a
  request got fewer replies than probes sent, 0 in unsolicited (-U/-A) mode,
  2 on errors.
- "habets" (Debian package arping 2.23, Thomas Habets), from a reading of its
  `src/arping.c` (`standard_usage`, `extended_usage`, `main`): `-i IFACE`,
  `-S SRC-IP`, `-s SRC-MAC`, `-c N`, `-U`, `-P`, `-q`; `-V` is a VLAN tag and
  wants an argument. Exit 1 when nothing answered, even with -U.

No time passes: probes are "sent" at once. A neighbour listed in the state
answers every request. Every run is appended to state["arping"]["sent"].
"""

# Option parsers and printers with one branch per option, like the C they imitate:
# ruff: noqa: PLR0911, PLR0912

from __future__ import annotations

import ipaddress
from typing import Any

from . import model
from .model import Run, ToolExit

IPUTILS_VERSION = (
    "arping from iputils 20221126\n"
    "libcap: yes, IDN: yes, NLS: no, error.h: yes, getrandom(): yes, __fpending(): yes"
)
IPUTILS_USAGE = """
Usage:
  arping [options] <destination>

Options:
  -f            quit on first reply
  -q            be quiet
  -b            keep on broadcasting, do not unicast
  -D            duplicate address detection mode
  -U            unsolicited ARP mode, update your neighbours
  -A            ARP answer mode, update your neighbours
  -V            print version and exit
  -c <count>    how many packets to send
  -w <timeout>  how long to wait for a reply
  -i <interval> set interval between packets (default: 1 second)
  -I <device>   which ethernet device to use
  -s <source>   source ip address
  <destination> dns name or ip address

For more details see arping(8)."""

HABETS_VERSION = "2.23"
HABETS_USAGE = (
    f"ARPing {HABETS_VERSION}, by Thomas Habets <thomas@habets.se>\n"
    "usage: arping [ -0aAbdDeFpPqrRuUvzZ ] [ -w <sec> ] [ -W <sec> ] [ -S <host/ip> ]\n"
    "              [ -T <host/ip ] [ -s <MAC> ] [ -t <MAC> ] [ -c <count> ]\n"
    "              [ -C <count> ] [ -i <interface> ] [ -m <type> ] [ -g <group> ]\n"
    "              [ -V <vlan> ] [ -Q <priority> ] <host/ip/MAC | -B>"
)

# `arping --help` after the usage (arping 2.23 as Debian 12 builds it, with seccomp).
HABETS_OPTIONS = """
Options:

    -0     Use this option to ping with source IP address 0.0.0.0. Use this
           when you haven't configured your interface yet.  Note that  this
           may  get  the  MAC-ping  unanswered.   This  is  an alias for -S
           0.0.0.0.
    -a     Audiable ping.
    -A     Only count addresses matching  requested  address  (This  *WILL*
           break  most things you do. Only useful if you are arpinging many
           hosts at once. See arping-scan-net.sh for an example).
    -b     Like -0 but source broadcast source  address  (255.255.255.255).
           Note that this may get the arping unanswered since it's not nor-
           mal behavior for a host.
    -B     Use instead of host if you want to address 255.255.255.255.
    -c count
           Only send count requests.
    -C count
           Only wait for this many replies, regardless of -c and -w.
    -d     Find duplicate replies. Exit with 1 if there are answers from
           two different MAC addresses.
    -D     Display answers as exclamation points and missing packets as dots.
    -e     Like -a but beep when there is no reply.
    -F     Don't try to be smart about the interface name.  (even  if  this
           switch is not given, -i overrides smartness)
    -g group
           setgid() to this group instead of the nobody group.
    -h     Displays a help message and exits.
    -i interface
           Use the specified interface.
    -m type
           Type of timestamp to use for incoming packets. Use -vv when
           pinging to list available ones.
    -q     Does not display messages, except error messages.
    -Q pri 802.1p priority to set. Should be used with 802.1Q (-V).
           Defaults to 0.
    -r     Raw output: only the MAC/IP address is displayed for each reply.
    -R     Raw output: Like -r but shows "the other one", can  be  combined
           with -r.
    -s MAC Set source MAC address. You may need to use -p with this.
    -S IP  Like  -b and -0 but with set source address.  Note that this may
           get the arping unanswered if the target does not have routing to
           the  IP.  If you don't own the IP you are using, you may need to
           turn on promiscious mode on the interface (with -p).  With  this
           switch  you can find out what IP-address a host has without tak-
           ing an IP-address yourself.
    -t MAC Set target MAC address to use when pinging IP address.
    -T IP  Use -T as target address when pinging MACs that won't respond to
           a broadcast ping but perhaps to a directed broadcast.
           Example:
           To check the address of MAC-A, use knowledge of MAC-B and  IP-B.
           $ arping -S <IP-B> -s <MAC-B> -p <MAC-A>
    -p     Turn  on  promiscious  mode  on interface, use this if you don't
           "own" the MAC address you are using.
    -P     Send ARP replies instead of requests. Useful with -U.
    -u     Show index=received/sent instead  of  just  index=received  when
           pinging MACs.
    -U     Send unsolicited ARP.
    -v     Verbose output. Use twice for more messages.
    -V num 802.1Q tag to add. Defaults to no VLAN tag.
    -w sec Specify a timeout before ping exits regardless of how many
           packets have been sent or received.
    -W sec Time to wait between pings.
    -z     Enable seccomp
    -Z     Disable seccomp (default)
Report bugs to: thomas@habets.se
Arping home page: <http://www.habets.pp.se/synscan/>
Development repo: http://github.com/ThomasHabets/arping"""


def main(run: Run) -> int:
    flavour = run.state["arping"].get("flavour")
    if flavour == "habets":
        return habets(run)
    if flavour == "iputils":
        return iputils(run)
    run.unsupported(f"arping flavour {flavour!r} (the tool should be missing)")
    return 99


def _record(run: Run, **fields: Any) -> None:
    run.state["arping"]["sent"].append({"flavour": run.state["arping"]["flavour"], **fields})


def _mac_upper(mac: str) -> str:
    return mac.upper()


def _strtol_or_err(run: Run, text: str | None, lo: int) -> int:
    value = text or ""
    try:
        number = int(value, 10)
    except ValueError:
        run.eprint(f"arping: invalid argument: '{value}'")
        raise ToolExit(1) from None
    if number < lo:
        run.eprint(f"arping: invalid argument: '{value}': out of range: {lo} <= value <= "
                   "2147483647")
        raise ToolExit(1)
    return number


def iputils(run: Run) -> int:
    st = run.state
    opts, operands, error = model.getopt("arping", run.args, "h?bfDUAqc:w:i:s:I:V")
    if error:
        run.eprint(error)
    if error or any(o in ("h", "?") for o, _ in opts):
        run.eprint(IPUTILS_USAGE)
        return 2
    o = dict(opts)
    if "V" in o:
        run.print(IPUTILS_VERSION)
        return 0
    if len(operands) != 1:
        run.eprint(IPUTILS_USAGE)
        return 2
    count = _strtol_or_err(run, o["c"], 1) if "c" in o else -1
    timeout = _strtol_or_err(run, o["w"], 0) if "w" in o else 0
    if "i" in o:
        _strtol_or_err(run, o["i"], 0)
    unsolicited = "U" in o or "A" in o
    dad = "D" in o
    quiet = "q" in o
    target = operands[0]
    dst = _resolve(st, target)
    if dst is None:
        run.eprint(f"arping: {target}: Name or service not known")
        return 2
    dev = o.get("I")
    if dev is None:
        route = model.route_lookup(st, dst)
        dev = route["dev"] if route else None
        if dev is None:
            run.eprint("arping: Suitable device could not be determined. Please, use option -I.")
            return 2
    ifc = model.iface(st, dev)
    if ifc is None:
        run.eprint(f"arping: Device {dev} not available.")
        return 2
    if not ifc["up"]:
        if not quiet:
            run.print(f'Interface "{dev}" is down')
        return 2
    if ifc["noarp"]:
        if not quiet:
            run.print(f'Interface "{dev}" is not ARPable')
        return 0 if dad else 2
    src = o.get("s")
    if src is not None:
        try:
            src = str(ipaddress.IPv4Address(src))
        except ValueError:
            run.eprint(f"arping: invalid source {src}")
            return 2
        if src not in model.local_v4_addresses(st) and \
                st["sysctl"].get("net/ipv4/ip_nonlocal_bind", "0") == "0":
            run.eprint("arping: bind: Cannot assign requested address")
            return 2
    elif unsolicited and not dad:
        src = dst
    elif not dad:
        src = model.preferred_source(st, dev, dst)
        if src is None:
            run.eprint("arping: no source address in not-DAD mode")
            return 2
    if count < 0 and timeout <= 0:
        run.unsupported("arping without -c or -w would run until killed")
    sent = count if count > 0 else max(timeout, 1)
    mode = "answer" if "A" in o else "unsolicited" if unsolicited else "dad" if dad else "request"
    src = src or "0.0.0.0"  # noqa: S104 - DAD probes carry no source address
    _record(run, iface=dev, src=src, dst=dst, count=sent, mode=mode)
    if not quiet:
        run.print(f"ARPING {dst} from {src} {dev}")
    neighbour = st["arping"]["neighbours"].get(dst)
    received = 0
    if neighbour and not unsolicited:
        replies = 1 if "f" in o or dad else sent
        sent = replies if "f" in o or dad else sent
        for _ in range(replies):
            received += 1
            if not quiet:
                run.print(f"Unicast reply from {dst} [{_mac_upper(neighbour)}]  0.700ms")
    # after the first reply iputils arping unicasts its probes (unless -b)
    broadcasts = 1 if received and "b" not in o else sent
    if not quiet:
        run.print(f"Sent {sent} probes ({broadcasts} broadcast(s))")
        run.print(f"Received {received} response(s)")
    if dad:
        return 1 if received else 0
    if unsolicited:
        return 0
    return 0 if received == sent else 1


def _resolve(st: model.State, name: str) -> str | None:
    """The target's IPv4 address: `name` itself if it is one, else the first address the
    state's hosts table gives that name; None if neither."""
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    for addr, host in st.get("hosts", {}).items():
        if host == name and ":" not in addr:
            return str(addr)
    return None


def habets(run: Run) -> int:
    st = run.state
    if "--help" in run.args:
        run.print(HABETS_USAGE)
        run.print(HABETS_OPTIONS)
        return 0
    spec = "0aAbBC:c:dDeFg:hi:I:m:pPqQ:rRs:S:t:T:uUvV:w:W:zZ"
    opts, operands, error = model.getopt("arping", run.args, spec)
    if error:
        run.eprint(error)
        run.print(HABETS_USAGE)
        run.print("For complete usage info, use --help or check the manpage.")
        return 1
    o = dict(opts)
    if "h" in o:
        run.print(HABETS_USAGE)
        run.print("For complete usage info, use --help or check the manpage.")
        return 0
    if len(operands) > 1:
        run.eprint("arping: Too many args on command line. Expected at most one.")
        return 1
    if "i" in o and ":" in str(o["i"]):
        run.eprint(
            "arping: If you're trying to feed me an interface alias then you don't really\n"
            "know what this programs does, do you?\n"
            "Use -I if you really mean it (undocumented on purpose)"
        )
        return 1
    if not operands:
        run.print(HABETS_USAGE)
        run.print("For complete usage info, use --help or check the manpage.")
        return 1
    target = operands[0]
    dst = _resolve(st, target)
    if dst is None:
        if ":" in target:
            run.unsupported("MAC ping mode")
        run.eprint(f"arping: Can't resolve {target}")
        return 1
    dev = o.get("i") or o.get("I")
    if dev is None:
        route = model.route_lookup(st, dst)
        dev = route["dev"] if route else None
        if dev is None:
            run.unsupported("arping without -i and no route to the target")
    ifc = model.iface(st, dev)
    if ifc is None or not ifc["up"]:
        reason = "No such device" if ifc is None else "Network is down"
        run.eprint(f"arping: libnet_init(LIBNET_LINK, {dev}): "
                   f"libnet_check_iface() ioctl: {reason}")
        return 1
    src = o.get("S") or ("0.0.0.0" if "0" in o else None)  # noqa: S104
    if src is None:
        src = model.preferred_source(st, dev, dst)
        if src is None:
            run.eprint(f"arping: Unable to get the IPv4 address of interface {dev}:\n"
                       "arping: Use -S to specify address manually.")
            return 1
    count_text = o.get("c")
    count = int(count_text) if count_text and count_text.lstrip("-").isdigit() else -1
    if count < 0 and "w" not in o:
        run.unsupported("arping without -c or -w would run until killed")
    sent = count if count > 0 else max(int(float(o.get("w") or 1)), 1)
    unsolicited = "U" in o
    mode = "reply" if "P" in o else "unsolicited" if unsolicited else "request"
    _record(run, iface=dev, src=src, dst=dst, count=sent, mode=mode,
            src_mac=o.get("s") or ifc["mac"])
    quiet = "q" in o
    if not quiet:
        run.print(f"ARPING {dst}")
    neighbour = st["arping"]["neighbours"].get(dst)
    received = 0
    for index in range(sent):
        if neighbour and not unsolicited:
            received += 1
            if not quiet:
                run.print(f"60 bytes from {neighbour.lower()} ({dst}): index={index} "
                          "time=700.000 usec")
        elif not quiet:
            run.print("Timeout")
    if not quiet:
        lost = 100.0 - 100.0 * received / sent
        run.print(f"\n--- {dst} statistics ---\n"
                  f"{sent} packets transmitted, {received} packets received, "
                  f"{lost:3.0f}% unanswered (0 extra)")
        if received:
            run.print("rtt min/avg/max/std-dev = 0.700/0.700/0.700/0.000 ms")
        else:
            run.print("")
    return 0 if received else 1


# ---------------------------------------------------------------- modprobe


def modprobe(run: Run) -> int:
    """modprobe [-q] [-v] [-r] [--] MODULE...: loads what the state says exists."""
    st = run.state
    quiet = remove = dry_run = False
    names: list[str] = []
    only_names = False
    for word in run.args:
        if only_names or not word.startswith("-"):
            names.append(word.replace("-", "_"))
        elif word == "--":
            only_names = True
        elif word in ("-q", "--quiet"):
            quiet = True
        elif word in ("-r", "--remove"):
            remove = True
        elif word in ("-n", "--dry-run", "--show"):
            dry_run = True
        elif word in ("-v", "--verbose", "-b", "--use-blacklist", "-s", "--syslog"):
            continue
        else:
            run.unsupported(f"modprobe option {word}")
    if not names:
        run.eprint("modprobe: ERROR: missing parameters. See -h.")
        return 1
    if remove:
        for name in names:
            if name.startswith("ip_vs"):
                if st["kernel"]["ipvs"] == "module":
                    model.unload_ipvs(st)
            elif name in st["modules"]["loaded"]:
                st["modules"]["loaded"].remove(name)
        return 0
    name = names[0]  # modprobe MODULE [params...]
    release = st["kernel"]["release"]
    ipvs_modules = {"ip_vs"} | {f"ip_vs_{s}" for s in st["ipvs"]["schedulers"]}
    if name in ipvs_modules and st["kernel"]["ipvs"] != "absent":
        if dry_run:
            return 0
        model.load_ipvs(st)
        if name != "ip_vs" and name not in st["modules"]["loaded"]:
            st["modules"]["loaded"].append(name)
        return 0
    if name in st["modules"]["available"] or name in st["modules"]["loaded"]:
        if not dry_run:
            model.load_module(st, name)
        return 0
    if not quiet:
        run.eprint(f"modprobe: FATAL: Module {name} not found in directory /lib/modules/{release}")
    return 1


def lsmod(run: Run) -> int:
    """lsmod (kmod): the loaded modules from /proc/modules, newest first."""
    if run.args:
        run.eprint("Usage: lsmod")
        return 1
    st = run.state
    loaded = list(st["modules"]["loaded"])
    if st["kernel"]["ipvs"] == "module" and st["kernel"]["ipvs_loaded"] and "ip_vs" not in loaded:
        loaded.append("ip_vs")
    run.print("Module                  Size  Used by")
    for name in reversed(loaded):
        run.print(f"{name:<19} {16384:>8}  0")
    return 0
