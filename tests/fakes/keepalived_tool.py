"""Fake `keepalived`, run VRRP-only the way lvs-director runs it:
`keepalived -P -f CONF -p PIDFILE -r VRRP_PIDFILE`.

What the real one (2.2.7, Debian 12) does that matters to lvs-director, and only that:
the command checks its options and config and returns at once; a daemon it leaves
behind writes the pid files a moment later, becomes MASTER (or BACKUP, if the test set
`vrrp_role` in the fake host's state), adds the `virtual_ipaddress` entries of its
instance when MASTER, runs the `notify` script with `INSTANCE NAME STATE PRIORITY`, re-reads
its config on SIGHUP (keeping its state), and on SIGTERM removes its VIPs, runs `notify`
with STOP, removes its pid files and exits. After SIGKILL the VIPs stay where they were,
as they do with the real one.

The daemon is a real process (so that lvs-director finds it through its pid file and
/proc and signals it for real), its argv[0] is `keepalived`, and every one started is
listed in the fake host's state (`keepalived_pids`) for `FakeHost.stop_daemons()`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .model import Run, ToolExit

DAEMON = Path(__file__).resolve().with_name("keepalived_daemon.py")


def parse_args(run: Run, args: list[str]) -> dict[str, str]:
    """The options lvs-director uses; anything else is not emulated."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if word in ("-P", "--vrrp"):
            opts["vrrp"] = "1"
        elif word in ("-f", "-p", "-r") and i + 1 < len(args):
            opts[word] = args[i + 1]
            i += 1
        else:
            run.unsupported(f"option {word!r}")
        i += 1
    for needed in ("vrrp", "-f", "-p", "-r"):
        if needed not in opts:
            run.unsupported(f"a run without {needed}")
    return opts


def read_config(path: str) -> dict[str, Any]:
    """The few things the daemon needs from the config lvs-director writes."""
    text = Path(path).read_text()
    instance = re.search(r"vrrp_instance (\S+) \{", text)
    interface = re.search(r"^\s*interface (\S+)$", text, re.M)
    priority = re.search(r"^\s*priority (\d+)$", text, re.M)
    notify = re.search(r'^\s*notify "([^"]+)"$', text, re.M)
    if not (instance and interface and priority):
        raise ValueError("no vrrp_instance with interface and priority")
    vips = re.findall(r"^\s+(\S+/\d+) dev (\S+)$", text, re.M)
    return {"instance": instance.group(1), "interface": interface.group(1),
            "priority": priority.group(1), "notify": notify.group(1) if notify else None,
            "vips": vips}


def main(run: Run) -> int:
    """The command itself: check, as keepalived does before it forks."""
    opts = parse_args(run, run.args)
    try:
        config = read_config(opts["-f"])
    except (OSError, ValueError) as err:
        run.eprint(f"Configuration file '{opts['-f']}': {err}")
        raise ToolExit(1) from None
    names = {i["name"] for i in run.state["interfaces"]}
    if config["interface"] not in names:
        run.eprint(f"Cant find interface {config['interface']} for vrrp_instance "
                   f"{config['instance']} !!!")
        raise ToolExit(1)
    return 0


def spawn(argv: list[str]) -> None:
    """Leave the daemon behind, detached, its stdio on /dev/null (a caller capturing
    our output must see EOF when we return), and return before it writes its pid files."""
    if os.fork() != 0:
        return
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    # argv[0] "keepalived": lvs-director recognises its daemon by that name in /proc.
    os.execv(sys.executable, ["keepalived", str(DAEMON), *argv])  # noqa: S606


# ---------------------------------------------------------------- the daemon


def _host() -> Any:
    from .fakehost import FakeHost

    return FakeHost(os.environ["FAKEHOST_DIR"])


def _notify(config: dict[str, Any], state: str) -> None:
    if config["notify"]:
        subprocess.run([config["notify"], "INSTANCE", config["instance"], state,
                        config["priority"]], check=False, timeout=30)


def _set_vips(host: Any, config: dict[str, Any], add: bool) -> None:
    for cidr, device in config["vips"]:
        have = [a for a in host.addresses(device) if a == cidr or a.startswith(cidr + " ")]
        if add and not have:
            host.cmd("ip", "addr", "add", cidr, "dev", device)
        elif not add and have:
            host.cmd("ip", "addr", "del", cidr, "dev", device)


def daemon(args: list[str]) -> int:
    signals = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    opts = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i] in ("-f", "-p", "-r")}
    host = _host()
    pid = os.getpid()
    with host.edit() as st:
        st.setdefault("keepalived_pids", []).append(pid)
        role = st.get("vrrp_role", "MASTER")
    config = read_config(opts["-f"])
    for key in ("-p", "-r"):
        Path(opts[key]).write_text(f"{pid}\n")
    if role == "MASTER":
        _set_vips(host, config, add=True)
    _notify(config, role)
    while True:
        received = signal.sigwait(signals)
        if received == signal.SIGHUP:
            config = read_config(opts["-f"])
            with host.edit() as st:
                st["keepalived_reloads"] = st.get("keepalived_reloads", 0) + 1
            continue
        if role == "MASTER":
            _set_vips(host, config, add=False)
        _notify(config, "STOP")
        for key in ("-p", "-r"):
            Path(opts[key]).unlink(missing_ok=True)
        with host.edit() as st:
            st["keepalived_pids"] = [p for p in st.get("keepalived_pids", []) if p != pid]
        return 0
