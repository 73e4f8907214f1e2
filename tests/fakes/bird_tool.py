"""Fake `bird` (BIRD 2) and `birdc`, run the way lvs-director runs them:
`bird -c CONF -s SOCKET -P PIDFILE`, `bird -p -c CONF`, `birdc -s SOCKET show protocols`,
`birdc -s SOCKET show route export NAME`, `birdc -s SOCKET show route protocol NAME`,
`birdc -s SOCKET configure`.

What the real one (2.0.12, Debian 12) does that matters to lvs-director, and only that:
`bird` checks its options and config and returns at once; the daemon it leaves behind
writes its pid file a moment later, registers its control socket in the fake host's state
(`birds`: socket -> pid and config), re-reads its config on `birdc configure` and on
SIGTERM removes its pid file and socket and exits. Its BGP sessions are "Established"
unless the test set `bgp_sessions` (protocol name -> BGP state) in the fake host's state;
it exports (to each BGP protocol) the prefixes of the protocol's export filter that are
on lo at the moment of the question, as the real direct protocol and filter do.
birdc prints what BIRD 2.0.12 prints (tests/data/bgp/captured/), or, with no daemon on
the socket, "Unable to connect to server control socket" and exit 1.

The daemon is a real process, argv[0] `bird`, listed in `bird_pids` for
`FakeHost.stop_daemons()`.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from .model import Run, ToolExit

DAEMON = Path(__file__).resolve().with_name("bird_daemon.py")
HEADER = "BIRD 2.0.12 ready."
SINCE = "03:12:40.337"


def parse_args(run: Run, args: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if word == "-p":
            opts["parse"] = "1"
        elif word in ("-c", "-s", "-P") and i + 1 < len(args):
            opts[word] = args[i + 1]
            i += 1
        else:
            run.unsupported(f"option {word!r}")
        i += 1
    if "-c" not in opts or ("parse" not in opts and ("-s" not in opts or "-P" not in opts)):
        run.unsupported("a run without -c, -s and -P (or -p -c)")
    return opts


def read_config(path: str) -> dict[str, Any]:
    """The protocols of the config lvs-director writes, with their export prefixes."""
    text = Path(path).read_text()
    if not re.search(r"^router id \S+;$", text, re.M):
        raise ValueError("no router id")
    protocols = []
    for match in re.finditer(r"^protocol (\w+) (\w+) \{(.*?)^\}", text, re.M | re.S):
        kind, name, body = match.groups()
        export = re.search(r"export where net ~ \[ ([^\]]*) \];", body)
        protocols.append({"kind": kind, "name": name,
                          "export": export.group(1).split(", ") if export else []})
    return {"protocols": protocols}


def main(run: Run) -> int:
    """`bird`: check, as BIRD does before it forks."""
    opts = parse_args(run, run.args)
    try:
        read_config(opts["-c"])
    except (OSError, ValueError) as err:
        run.eprint(f"bird: {opts['-c']}:1:1 {err}")
        raise ToolExit(1) from None
    return 0


def _daemon_of(run: Run, socket: str) -> dict[str, Any] | None:
    entry = run.state.get("birds", {}).get(socket)
    if entry is None or not _alive(entry["pid"]):
        return None
    return entry  # type: ignore[no-any-return]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _on_lo(run: Run) -> set[str]:
    for ifc in run.state["interfaces"]:
        if ifc["name"] == "lo":
            return {f"{a['local']}/{a['prefixlen']}" for a in ifc.get("addrs", [])} | set(
                ifc.get("addrs6", []))
    return set()


def birdc(run: Run) -> int:
    args = run.args
    if len(args) < 3 or args[0] != "-s":
        run.unsupported("birdc without -s SOCKET COMMAND")
    socket, command = args[1], args[2:]
    entry = _daemon_of(run, socket)
    if entry is None:
        run.print(f"Unable to connect to server control socket ({socket}): No such file "
                  "or directory")
        raise ToolExit(1)
    config = read_config(entry["config"])
    run.print(HEADER)
    if command == ["show", "protocols"]:
        return _show_protocols(run, config)
    if command[:3] == ["show", "route", "export"] and len(command) == 4:
        return _show_routes(run, config, command[3], export=True)
    if command[:3] == ["show", "route", "protocol"] and len(command) == 4:
        return _show_routes(run, config, command[3], export=False)
    if command == ["configure"]:
        with_state = run.state
        with_state["bird_reconfigures"] = with_state.get("bird_reconfigures", 0) + 1
        run.print(f"Reading configuration from {entry['config']}\nReconfigured")
        return 0
    run.unsupported(f"birdc {' '.join(command)}")
    return 99


def _show_protocols(run: Run, config: dict[str, Any]) -> int:
    sessions = run.state.get("bgp_sessions", {})
    run.print("Name       Proto      Table      State  Since         Info")
    run.print(f"device1    Device     ---        up     {SINCE}  ")
    for proto in config["protocols"]:
        if proto["kind"] == "direct":
            run.print(f"{proto['name']:<10} Direct     ---        up     {SINCE}  ")
        elif proto["kind"] == "bgp":
            info = sessions.get(proto["name"], "Established")
            state = "up" if info == "Established" else "start"
            run.print(f"{proto['name']:<10} BGP        ---        {state:<6} {SINCE}  "
                      f"{info}   ")
    return 0


def _show_routes(run: Run, config: dict[str, Any], name: str, export: bool) -> int:
    found = [p for p in config["protocols"] if p["name"] == name]
    if not found:
        run.print("syntax error, unexpected CF_SYM_UNDEFINED, expecting CF_SYM_KNOWN or TABLE")
        raise ToolExit(1)
    on_lo = _on_lo(run)
    wanted = ({c for p in config["protocols"] for c in p["export"]} if not export
              else set(found[0]["export"]))
    if export and run.state.get("bgp_sessions", {}).get(name, "Established") != "Established":
        wanted = set()
    prefixes = [c for c in sorted(wanted) if c in on_lo]
    if prefixes:
        run.print("Table master4:")
    for prefix in prefixes:
        run.print(f"{prefix:<20} unicast [lvs_vips {SINCE}] * (240)\n\tdev lo")
    return 0


def spawn(argv: list[str]) -> None:
    """Leave the daemon behind, detached, and return before it writes its pid file."""
    if os.fork() != 0:
        return
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.execv(sys.executable, ["bird", str(DAEMON), *argv])  # noqa: S606


def daemon(args: list[str]) -> int:
    from .fakehost import FakeHost

    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    opts = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i] in ("-c", "-s", "-P")}
    host = FakeHost(os.environ["FAKEHOST_DIR"])
    pid = os.getpid()
    with host.edit() as st:
        st.setdefault("bird_pids", []).append(pid)
        st.setdefault("birds", {})[opts["-s"]] = {"pid": pid, "config": opts["-c"]}
    Path(opts["-s"]).touch()
    Path(opts["-P"]).write_text(f"{pid}\n")
    signal.sigwait(signals)
    for key in ("-P", "-s"):
        Path(opts[key]).unlink(missing_ok=True)
    with host.edit() as st:
        st["bird_pids"] = [p for p in st.get("bird_pids", []) if p != pid]
        st.get("birds", {}).pop(opts["-s"], None)
    return 0
