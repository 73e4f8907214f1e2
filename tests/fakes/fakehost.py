"""An emulated Linux machine for the tests, shared by the fake executables.

The machine lives in a directory (``$FAKEHOST_DIR``):

- ``state.json``: interfaces, addresses, routes, sysctls, the IPVS table and
  timeouts, whether the kernel has IPVS, the arping flavour, the failure rules,
  the tools that are "not installed". Every fake reads it, changes it and writes
  it back under an exclusive lock (``state.lock``), so "add, then show" round
  trips across processes and concurrent fakes do not lose updates.
- ``calls.jsonl``: one JSON object per invocation of any fake, in order:
  ``{"argv": ["ipvsadm", "-a", ...], "stdin": "..." or null, "rc": 0,
  "stdout": "...", "stderr": "...", "changed": true}``; ``argv[0]`` is the tool's
  name; ``changed`` says whether the call changed the machine (anything in
  ``state.json`` but the test's own bookkeeping: counters, failure, delay and hang
  rules), so a test can tell the steps of an action from its observations.
- ``bin/``: symlinks to the fakes in ``tests/fakes/bin`` (a tool marked missing
  has none) and ``sysbin/``: symlinks to the few host programs a script needs.
  ``FakeHost.env`` puts only these (and the venv's bin, if it holds none of the
  guarded names) on PATH, so a missing fake means "command not found", never the
  real tool; see ``build_path``.

The fakes never run a real tool. What they do not emulate they refuse with
exit status 99 and ``fakehost: TOOL: not emulated: ...`` on stderr.

Failure injection (``FakeHost.fail``): a rule ``{"match": [...], "nth": k,
"call": n, "rc": 2, "stderr": "...", "stdout": "", "apply": false,
"in_restore": false}`` makes a matching invocation fail without touching the
state (``apply``: run it, then report the failure anyway). ``match`` is an
argv prefix whose items are fnmatch patterns, ``["ipvsadm", "-a"]``; ``nth``
fails only the k-th matching call; ``call`` fails only the n-th fake
invocation overall (counting every invocation of every fake); without either,
every matching call fails. ``in_restore`` rules match the lines that one
``ipvsadm -R`` reads (as ``["ipvsadm", *words]``), or one ``ip -batch -`` (as
``["ip", *words]``), and fail that line like a kernel error would.

Delays (``FakeHost.delay``): a rule ``{"match": [...], "seconds": s, "nth": k}``
makes a matching *executable* (not ``invoke``) sleep ``s`` seconds before it
runs, outside the state lock, so a test can signal or race the caller while a
command is under way. ``fired`` counts the sleeps begun. A delayed fake dies of
SIGINT like a C program (no KeyboardInterrupt traceback).

Hangs (``FakeHost.hang``): a rule ``{"nth": k, "when": "before" | "after"}`` makes
the k-th invocation of any fake *executable* (counted from when the rule was added)
block until it is killed, either before it touches the machine or after its change
is made and logged but before it prints anything or exits. A test then kills the
caller (``kill -9``) at exactly that point: "the `ipvsadm -R` batch reached the
kernel and the caller never heard back". ``fired`` is set once the fake blocks (for
"after", once the change is saved). A hung fake that nobody kills gives up after
``HANG_SECONDS`` with exit status 99.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import model
from .model import UNSUPPORTED_RC, Run, State, ToolExit

if TYPE_CHECKING:
    import subprocess

FAKES_DIR = Path(__file__).resolve().parent
FAKES_BIN = FAKES_DIR / "bin"
TOOLS = ("ipvsadm", "ip", "sysctl", "arping", "modprobe", "keepalived", "nft", "lsmod", "bird",
         "birdc")

# Host programs the per-test PATH offers (as symlinks) besides the fakes.
HOST_PROGRAMS = (
    "sh", "bash", "dash", "env", "cat", "flock", "id", "touch", "rm", "mkdir", "rmdir",
    "mv", "cp", "ln", "ls", "grep", "sed", "awk", "tr", "head", "tail", "sleep", "true",
    "false", "printf", "echo", "test", "[", "dirname", "basename", "readlink", "realpath",
    "mktemp", "date", "sort", "uniq", "cut", "wc", "tee", "xargs", "chmod", "stat", "kill",
    "setsid", "timeout", "python3", "python", "install",
)
HOST_SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
HANG_SECONDS = 120.0  # a hung fake nobody killed ends by itself (the test has failed)
# Keys of state.json that are the tests' bookkeeping, not the machine.
BOOKKEEPING = ("calls", "failures", "delays", "hangs")


class Result(NamedTuple):
    """What one invocation of a fake produced."""

    rc: int
    stdout: str
    stderr: str


# ---------------------------------------------------------------- dispatch


# tool -> (module of tests/fakes, its entry point)
_ENTRY = {"ipvsadm": ("ipvsadm_tool", "main"), "ip": ("ip_tool", "main"),
          "sysctl": ("sysctl_tool", "main"), "arping": ("arping_tool", "main"),
          "keepalived": ("keepalived_tool", "main"), "modprobe": ("arping_tool", "modprobe"),
          "nft": ("nft_tool", "main"), "lsmod": ("arping_tool", "lsmod"),
          "bird": ("bird_tool", "main"), "birdc": ("bird_tool", "birdc")}


def _dispatch(run: Run) -> int:
    if run.tool in _ENTRY:
        import importlib

        module, name = _ENTRY[run.tool]
        entry = getattr(importlib.import_module(f".{module}", __package__), name)
        return int(entry(run))
    raise ValueError(f"no fake for {run.tool}")


def argv_matches(pattern: list[str], argv: list[str]) -> bool:
    """An argv prefix where each item is an fnmatch pattern."""
    if len(pattern) > len(argv):
        return False
    return all(fnmatch.fnmatchcase(a, p) for p, a in zip(pattern, argv))


def _pick_failure(st: State, argv: list[str], restore_line: bool) -> dict[str, Any] | None:
    chosen = None
    for rule in st["failures"]:
        if bool(rule.get("in_restore")) != restore_line:
            continue
        if not argv_matches(rule.get("match") or [], argv):
            continue
        rule["seen"] = rule.get("seen", 0) + 1
        if rule.get("call") is not None and not restore_line and rule["call"] != st["calls"]:
            continue
        if rule.get("nth") is not None and rule["nth"] != rule["seen"]:
            continue
        if chosen is None:
            chosen = rule
    if chosen is not None:
        chosen["fired"] = chosen.get("fired", 0) + 1
    return chosen


def execute(
    st: State,
    tool: str,
    args: list[str],
    stdin: str | Any | None = None,
    *,
    inject: bool = True,
) -> tuple[Result, str | None]:
    """Run one fake against the state (changed in place); (result, stdin read)."""
    argv = [tool, *args]
    if inject:
        st["calls"] = st.get("calls", 0) + 1
    if tool in st.get("missing_tools", []):
        return Result(127, "", f"fakehost: {tool} is not installed on this machine but was "
                               "run by its path\n"), None
    rule = _pick_failure(st, argv, restore_line=False) if inject else None
    hook = (lambda line: _pick_failure(st, line, restore_line=True)) if inject else None
    if rule is not None and not rule.get("apply"):
        return Result(int(rule.get("rc", 1)) & 0xFF, _nl(rule.get("stdout", "")),
                      _nl(rule.get("stderr", ""))), None
    run = Run(tool, args, st, stdin, restore_hook=hook)
    try:
        rc = _dispatch(run)
    except ToolExit as done:
        rc = done.rc
    result = Result(rc & 0xFF, run.stdout, run.stderr)
    if rule is not None:
        result = Result(int(rule.get("rc", 1)) & 0xFF, _nl(rule.get("stdout", "")),
                        _nl(rule.get("stderr", "")))
    return result, run.stdin_text


def _nl(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


# ---------------------------------------------------------------- the machine


class FakeHost:
    """The emulated machine in `directory` (created with the default machine:
    lo 127.0.0.1/8, eth0 192.168.30.105/24, eth1 without IPv4, default route
    via 192.168.30.200; IPVS as a loadable module; iputils arping)."""

    def __init__(self, directory: str | Path, *, empty: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.calls_path = self.dir / "calls.jsonl"
        self.lock_path = self.dir / "state.lock"
        self.bin_dir = self.dir / "bin"
        self.sys_dir = self.dir / "sysbin"
        if not self.state_path.exists():
            self._write(model.empty_state() if empty else model.default_state())
            self.calls_path.touch()

    # ------------------------------------------------------------ state I/O

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> State:
        return json.loads(self.state_path.read_text())  # type: ignore[no-any-return]

    def _write(self, st: State) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    def state(self) -> State:
        """A copy of the whole state (read it, do not keep it)."""
        with self._locked():
            return self._read()

    @contextlib.contextmanager
    def edit(self) -> Iterator[State]:
        """`with host.edit() as st:` change the raw state; saved on exit."""
        with self._locked():
            st = self._read()
            yield st
            self._write(st)

    # ------------------------------------------------------------ running fakes

    def invoke(self, tool: str, args: list[str], stdin: str | Any | None = None,
               *, record: bool = True) -> Result:
        """Run a fake in this process. record=False: a set-up step (no call log,
        no failure injection, not counted)."""
        with self._locked():
            st = self._read()
            before = machine_text(st)
            result, stdin_text = execute(st, tool, list(args), stdin, inject=record)
            self._write(st)
            if record:
                entry = {"argv": [tool, *args], "stdin": stdin_text, "rc": result.rc,
                         "stdout": result.stdout, "stderr": result.stderr,
                         "changed": machine_text(st) != before}
                with open(self.calls_path, "a") as log:
                    log.write(json.dumps(entry) + "\n")
        return result

    def cmd(self, tool: str, *args: str, stdin: str | None = None) -> Result:
        """Set up state with the tool's own syntax: `host.cmd("ip", "addr", "add",
        "10.0.0.1/24", "dev", "eth1")`. Raises if the fake refuses."""
        result = self.invoke(tool, list(args), stdin, record=False)
        if result.rc != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: rc={result.rc}: {result.stderr}")
        return result

    def run(self, argv: list[str], *, input: str | None = None,
            env: dict[str, str] | None = None, timeout: float = 60,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a program (e.g. an entry point) as a subprocess in `self.env`."""
        import subprocess  # only tests run programs; the fakes start faster without it

        full_env = dict(self.env)
        if env:
            full_env.update(env)
        return subprocess.run(argv, input=input, capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=cwd, check=False)

    # ------------------------------------------------------------ call log

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        """Every recorded invocation (of `tool` only, if given), oldest first."""
        if not self.calls_path.exists():
            return []
        entries = [json.loads(line) for line in self.calls_path.read_text().splitlines() if line]
        return [e for e in entries if tool is None or e["argv"][0] == tool]

    def argvs(self, tool: str | None = None) -> list[list[str]]:
        return [e["argv"] for e in self.calls(tool)]

    def clear_calls(self) -> None:
        with self._locked():
            self.calls_path.write_text("")

    # ------------------------------------------------------------ failures

    def fail(self, match: list[str] | None = None, *, nth: int | None = None,
             call: int | None = None, rc: int = 1, stderr: str = "", stdout: str = "",
             apply: bool = False, in_restore: bool = False) -> None:
        """Add a failure rule (see the module docstring)."""
        rule = {"match": list(match or []), "nth": nth, "call": call, "rc": rc,
                "stderr": stderr, "stdout": stdout, "apply": apply,
                "in_restore": in_restore, "seen": 0, "fired": 0}
        with self.edit() as st:
            st["failures"].append(rule)

    def failures(self) -> list[dict[str, Any]]:
        """The rules, with how often each matched ("seen") and failed ("fired")."""
        return list(self.state()["failures"])

    def clear_failures(self) -> None:
        with self.edit() as st:
            st["failures"] = []

    def delay(self, match: list[str], seconds: float, *, nth: int | None = None) -> None:
        """Make the matching executable sleep before it runs (see the module docstring)."""
        rule = {"match": list(match), "seconds": float(seconds), "nth": nth, "seen": 0,
                "fired": 0}
        with self.edit() as st:
            st.setdefault("delays", []).append(rule)

    def delays(self) -> list[dict[str, Any]]:
        """The delay rules, with how often each matched ("seen") and slept ("fired")."""
        return list(self.state().get("delays", []))

    def hang(self, nth: int, when: str) -> None:
        """Make the nth fake executable run from now block until killed, "before" it
        changes anything or "after" (see the module docstring)."""
        if when not in ("before", "after") or nth < 1:
            raise ValueError((nth, when))
        with self.edit() as st:
            st.setdefault("hangs", []).append({"nth": nth, "when": when, "seen": 0,
                                               "fired": 0})

    def hangs(self) -> list[dict[str, Any]]:
        """The hang rules, with the invocations counted ("seen") and hangs begun ("fired")."""
        return list(self.state().get("hangs", []))

    def clear_hangs(self) -> None:
        with self.edit() as st:
            st["hangs"] = []

    # ------------------------------------------------------------ daemons

    def keepalived_pids(self) -> list[int]:
        """The fake keepalived daemons of this host still running."""
        return [pid for pid in self.state().get("keepalived_pids", []) if _is_fake_daemon(pid)]

    def bird_pids(self) -> list[int]:
        """The fake BIRD daemons of this host still running."""
        return [pid for pid in self.state().get("bird_pids", []) if _is_fake_daemon(pid)]

    def stop_daemons(self) -> None:
        """SIGKILL every fake keepalived and BIRD this host started (test teardown)."""
        import signal

        for pid in self.keepalived_pids() + self.bird_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------ tools & kernel

    def remove_tool(self, tool: str) -> None:
        """The tool is not installed: no fake for it on this host's PATH."""
        if tool not in TOOLS:
            raise ValueError(tool)
        with self.edit() as st:
            if tool not in st["missing_tools"]:
                st["missing_tools"].append(tool)
        link = self.bin_dir / tool
        if link.is_symlink() or link.exists():
            link.unlink()

    def restore_tool(self, tool: str) -> None:
        with self.edit() as st:
            st["missing_tools"] = [t for t in st["missing_tools"] if t != tool]
            if tool == "arping" and not st["arping"].get("flavour"):
                st["arping"]["flavour"] = "iputils"
        if self.bin_dir.is_dir() and not (self.bin_dir / tool).exists():
            (self.bin_dir / tool).symlink_to(FAKES_BIN / tool)

    def missing_tools(self) -> list[str]:
        return list(self.state()["missing_tools"])

    def allow_host_programs(self, *names: str) -> None:
        """Offer more host programs (e.g. "logger", "hostname") on this host's PATH;
        never one of the guarded tools."""
        if set(names) & set(TOOLS):
            raise ValueError(f"{sorted(set(names) & set(TOOLS))} must stay fakes")
        with self.edit() as st:
            st["host_programs"] = sorted({*st.get("host_programs", []), *names})

    def set_ipvs(self, mode: str) -> None:
        """"builtin", "module" (loadable, not loaded), "loaded" or "absent"."""
        if mode not in ("builtin", "module", "loaded", "absent"):
            raise ValueError(mode)
        with self.edit() as st:
            if mode == "absent":
                model.unload_ipvs(st)
                st["kernel"]["ipvs"] = "absent"
            elif mode == "module":
                model.unload_ipvs(st)
                st["kernel"]["ipvs"] = "module"
            else:
                st["kernel"]["ipvs"] = "builtin" if mode == "builtin" else "module"
                model.load_ipvs(st)

    def set_privileged(self, privileged: bool) -> None:
        """False: the tools run as a user without CAP_NET_ADMIN (not root); ipvsadm then
        fails as the real one does. ip and sysctl reads need no privilege and still work."""
        with self.edit() as st:
            st["unprivileged"] = not privileged

    def set_kernel(self, *, release: str | None = None,
                   addr_extack: bool | None = None, ipv6: bool | None = None) -> None:
        """release: for modprobe's messages; addr_extack: word address errors like
        kernels after 6.1 ("Error: ipv4: Address already assigned.")."""
        with self.edit() as st:
            if release is not None:
                st["kernel"]["release"] = release
            if addr_extack is not None:
                st["kernel"]["addr_extack"] = addr_extack
            if ipv6 is not None:
                st["kernel"]["ipv6"] = ipv6

    def set_arping_flavour(self, flavour: str | None) -> None:
        """"iputils", "habets", or None (arping not installed)."""
        if flavour not in ("iputils", "habets", None):
            raise ValueError(flavour)
        with self.edit() as st:
            st["arping"]["flavour"] = flavour
        if flavour is None:
            self.remove_tool("arping")
        elif "arping" in self.missing_tools():
            self.restore_tool("arping")

    def set_neighbour(self, ip: str, mac: str | None) -> None:
        """Make `ip` answer ARP requests with `mac` (None: stop answering)."""
        with self.edit() as st:
            if mac is None:
                st["arping"]["neighbours"].pop(ip, None)
            else:
                st["arping"]["neighbours"][ip] = mac

    def arp_sent(self) -> list[dict[str, Any]]:
        """What arping sent: {flavour, iface, src, dst, count, mode, ...} per run."""
        return list(self.state()["arping"]["sent"])

    # ------------------------------------------------------------ interfaces

    def add_interface(self, name: str, *, mac: str | None = None, up: bool = True,
                      kind: str = "ether", mtu: int | None = None, carrier: bool = True,
                      link: str | None = None) -> None:
        """A new device (kind: ether, loopback, dummy, vlan; `link`: vlan parent)."""
        with self.edit() as st:
            model.new_interface(st, name, kind=kind, mac=mac, up=up, mtu=mtu,
                                carrier=carrier, link=link)

    def remove_interface(self, name: str) -> None:
        with self.edit() as st:
            model.remove_interface(st, name)

    def set_link(self, name: str, *, up: bool | None = None, carrier: bool | None = None,
                 mac: str | None = None, mtu: int | None = None) -> None:
        with self.edit() as st:
            ifc = model.iface(st, name)
            if ifc is None:
                raise ValueError(f"no interface {name}")
            if carrier is not None:
                ifc["carrier"] = carrier
            if mac is not None:
                ifc["mac"] = mac.lower()
            if mtu is not None:
                ifc["mtu"] = mtu
            if up is not None:
                model.set_link(st, ifc, up)

    def interface(self, name: str) -> dict[str, Any] | None:
        return model.iface(self.state(), name)

    def interfaces(self) -> list[dict[str, Any]]:
        return list(self.state()["interfaces"])

    def add_address(self, dev: str, cidr: str, *, brd: str | None = None,
                    scope: str | None = None, label: str | None = None) -> None:
        """As `ip addr add CIDR [brd B] [scope S] [label L] dev DEV` (no prefix: /32)."""
        local, _, plen = cidr.partition("/")
        with self.edit() as st:
            ifc = model.iface(st, dev)
            if ifc is None:
                raise ValueError(f"no interface {dev}")
            model.add_v4_address(st, ifc, local, int(plen or 32), brd=brd, scope=scope,
                                 label=label)

    def del_address(self, dev: str, cidr: str) -> None:
        local, _, plen = cidr.partition("/")
        with self.edit() as st:
            ifc = model.iface(st, dev)
            if ifc is None:
                raise ValueError(f"no interface {dev}")
            model.del_v4_address(st, ifc, local, int(plen) if plen else None)

    def addresses(self, dev: str | None = None, *, secondary: bool | None = None,
                  ) -> list[str]:
        """IPv4 addresses as "a.b.c.d/len", in the kernel's order."""
        out = []
        for ifc in self.state()["interfaces"]:
            if dev is not None and ifc["name"] != dev:
                continue
            for a in ifc["addrs"]:
                if secondary is None or a["secondary"] == secondary:
                    out.append(f"{a['local']}/{a['prefixlen']}")
        return out

    # ------------------------------------------------------------ routes

    def add_route(self, dst: str, *, via: str | None = None, dev: str | None = None,
                  metric: int = 0, proto: str | None = None, src: str | None = None,
                  scope: str | None = None, onlink: bool = False) -> None:
        with self.edit() as st:
            model.add_route(st, {"dst": dst, "via": via, "dev": dev, "metric": metric,
                                 "proto": proto, "src": src, "scope": scope,
                                 "onlink": onlink})

    def del_route(self, dst: str, **selectors: Any) -> None:
        with self.edit() as st:
            model.del_route(st, {"dst": dst, **selectors})

    def routes(self) -> list[dict[str, Any]]:
        """The main table, in `ip route show` order."""
        return model.sorted_routes(self.state())

    def default_routes(self) -> list[dict[str, Any]]:
        return [r for r in self.routes() if r["dst"] == "default"]

    # ------------------------------------------------------------ sysctl

    @staticmethod
    def _sysctl_path(key: str) -> str:
        from .sysctl_tool import slashdot

        return slashdot(key.removeprefix("/proc/sys/"), ".", "/")

    def set_sysctl(self, key: str, value: str | int) -> None:
        """Set (or create) a key, dotted or slashed, bypassing any validation."""
        with self.edit() as st:
            st["sysctl"][self._sysctl_path(key)] = str(value)

    def remove_sysctl(self, key: str) -> None:
        with self.edit() as st:
            st["sysctl"].pop(self._sysctl_path(key), None)

    def sysctl(self, key: str) -> str | None:
        """The value, or None when the key does not exist."""
        value = self.state()["sysctl"].get(self._sysctl_path(key))
        return None if value is None else str(value)

    def sysctls(self) -> dict[str, str]:
        """All keys, dotted as `sysctl -a` names them."""
        from .sysctl_tool import slashdot

        return {slashdot(k, "/", "."): v for k, v in sorted(self.state()["sysctl"].items())}

    # ------------------------------------------------------------ IPVS

    def ipvs_services(self) -> list[dict[str, Any]]:
        """The raw table (services with their "dests"), in insertion order."""
        return list(self.state()["ipvs"]["services"])

    def ipvs_save(self) -> str:
        """Exactly what `ipvsadm -S -n` would print now."""
        from .ipvsadm_tool import save_text

        return save_text(self.state())

    def ipvsadm(self, *args: str, stdin: str | None = None) -> Result:
        """Build the IPVS table with ipvsadm's syntax (a set-up step, not logged)."""
        return self.cmd("ipvsadm", *args, stdin=stdin)

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        with self.edit() as st:
            st["ipvs"]["timeouts"] = {"tcp": tcp, "tcpfin": tcpfin, "udp": udp}

    def timeouts(self) -> tuple[int, int, int]:
        t = self.state()["ipvs"]["timeouts"]
        return (t["tcp"], t["tcpfin"], t["udp"])

    def set_schedulers(self, names: list[str]) -> None:
        """The schedulers the kernel knows (default: rr wrr lc wlc lblc lblcr dh sh
        sed nq fo ovf mh; Debian 12's 6.1 has no twos)."""
        with self.edit() as st:
            st["ipvs"]["schedulers"] = list(names)

    def set_counters(self, service: str, dest: str | None = None, **values: int) -> None:
        """Set counters of a service or of one of its real servers.

        service: "tcp 192.168.30.254:80", "udp [2001:db8::1]:53", "fwm 1";
        dest: "192.168.30.113:80". values: activeconns, inactconns,
        persistconns (dests only) and the stats conns, inpkts, outpkts, inbytes,
        outbytes, cps, inpps, outpps, inbps, outbps.
        """
        with self.edit() as st:
            target = _find_ipvs(st, service, dest)
            for key, value in values.items():
                if key in ("activeconns", "inactconns", "persistconns"):
                    if dest is None:
                        raise ValueError(f"{key} belongs to a real server")
                    target[key] = int(value)
                elif key in target["stats"]:
                    target["stats"][key] = int(value)
                else:
                    raise ValueError(f"unknown counter {key}")

    # ------------------------------------------------------------ PATH

    @property
    def env(self) -> dict[str, str]:
        """The environment for programs run against this host (see build_path)."""
        with self._locked():
            st = self._read()
            path = build_path(self.bin_dir, self.sys_dir, st["missing_tools"],
                              tuple(st.get("host_programs", ())))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LC_") and k not in ("LANGUAGE", "FAKEHOST_DIR")}
        # LANG=C: the callers parse English output and messages.
        env.update(PATH=path, FAKEHOST_DIR=str(self.dir), LANG="C", LC_ALL="C")
        return env


def _find_ipvs(st: State, service: str, dest: str | None) -> dict[str, Any]:
    from . import ipvsadm_tool

    kind, _, where = service.strip().partition(" ")
    kind = kind.lower()
    svc: dict[str, Any] = {"af": None, "proto": None, "addr": None, "port": 0, "fwmark": 0}
    if kind == "fwm":
        mark, _, fam = where.partition(" ")
        svc.update(fwmark=int(mark), af="inet6" if fam.lower() in ("ipv6", "-6") else "inet")
    else:
        svc["proto"] = kind
        if not ipvsadm_tool.parse_service(st, where, svc):
            raise ValueError(f"bad service {service!r}")
    found = ipvsadm_tool.find_service(st, svc)
    if found is None:
        raise ValueError(f"no service {service!r}")
    if dest is None:
        return found
    want = {"af": None, "addr": None, "port": found["port"], "proto": found["proto"]}
    if not ipvsadm_tool.parse_service(st, dest, want):
        raise ValueError(f"bad real server {dest!r}")
    d = ipvsadm_tool.find_dest(found, want)
    if d is None:
        raise ValueError(f"no real server {dest!r} in {service!r}")
    return d


def _is_fake_daemon(pid: int) -> bool:
    """Is `pid` a fake keepalived or BIRD daemon (and not a pid reused by anything else)?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return len(argv) > 1 and argv[0] in (b"keepalived", b"bird") and argv[1].endswith(
        argv[0] + b"_daemon.py")


# ---------------------------------------------------------------- PATH building


def _symlink(link: Path, target: Path) -> None:
    with contextlib.suppress(FileExistsError):  # another process made it first
        link.symlink_to(target)


def _dir_has_guarded(directory: Path) -> bool:
    return any((directory / t).exists() for t in TOOLS)


def build_path(bin_dir: Path, sys_dir: Path, missing: list[str],
               extra_programs: tuple[str, ...] = ()) -> str:
    """PATH for a test: the fakes (minus the missing), the venv, chosen programs.

    Never a host directory such as /usr/bin or /usr/sbin: those hold the real
    `ip`, `sysctl`, `arping`... and a tool the test removed would be found
    there. Host programs a script needs are symlinked one by one into
    `sys_dir`; the venv's bin directory is used only if it holds none of the
    guarded names.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        link = bin_dir / tool
        if tool in missing:
            if link.is_symlink() or link.exists():
                link.unlink()
        elif not link.is_symlink():
            _symlink(link, FAKES_BIN / tool)
    sys_dir.mkdir(parents=True, exist_ok=True)
    venv_bin = Path(sys.executable).parent
    use_venv = venv_bin.is_dir() and not _dir_has_guarded(venv_bin)
    for name in HOST_PROGRAMS + tuple(extra_programs):
        link = sys_dir / name
        if link.is_symlink() or name in TOOLS:
            continue
        if name in ("python3", "python"):
            if not use_venv:
                _symlink(link, Path(sys.executable))
            continue
        found = shutil.which(name, path=HOST_SEARCH_PATH)
        if found:
            _symlink(link, Path(found))
    parts = [str(bin_dir)] + ([str(venv_bin)] if use_venv else []) + [str(sys_dir)]
    for part in parts[1:]:
        if _dir_has_guarded(Path(part)):
            raise RuntimeError(f"{part} would expose a real tool on the test PATH")
    return os.pathsep.join(parts)


# ---------------------------------------------------------------- executables


def machine_text(st: State) -> str:
    """The machine part of a state, as text to compare (bookkeeping left out)."""
    return json.dumps({k: v for k, v in st.items() if k not in BOOKKEEPING}, sort_keys=True)


def _take_hang(host: FakeHost) -> tuple[int, str] | None:
    """(index, when) of the hang rule this invocation fires (None: none); counts it."""
    if not host.state().get("hangs"):
        return None
    with host.edit() as st:
        for number, rule in enumerate(st["hangs"]):
            rule["seen"] += 1
            if rule["seen"] == rule["nth"]:
                return number, rule["when"]
    return None


def _hang_until_killed(host: FakeHost, number: int) -> int:
    """Block (the test kills us and our caller); give up after HANG_SECONDS."""
    import time

    with host.edit() as st:
        st["hangs"][number]["fired"] += 1
    time.sleep(HANG_SECONDS)
    sys.stderr.write(f"fakehost: hung {HANG_SECONDS:.0f} s and nobody killed us\n")
    return UNSUPPORTED_RC


def _take_delay(host: FakeHost, argv: list[str]) -> float:
    """Seconds this invocation should sleep first (0: none); counts the rule's use."""
    if not host.state().get("delays"):
        return 0.0
    with host.edit() as st:
        for rule in st.get("delays", []):
            if not argv_matches(rule["match"], argv):
                continue
            rule["seen"] += 1
            if rule.get("nth") is None or rule["nth"] == rule["seen"]:
                import signal

                # Before "fired" is saved: a test may send SIGINT as soon as it sees it.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                rule["fired"] += 1
                return float(rule["seconds"])
    return 0.0


def main(tool: str) -> int:
    """Entry point of tests/fakes/bin/<tool>."""
    directory = os.environ.get("FAKEHOST_DIR")
    if not directory or not (Path(directory) / "state.json").exists():
        sys.stderr.write(f"fakehost: {tool}: FAKEHOST_DIR is not set or has no state.json; "
                         "refusing to run\n")
        return UNSUPPORTED_RC
    host = FakeHost(directory)
    hang = _take_hang(host)
    if hang is not None and hang[1] == "before":
        return _hang_until_killed(host, hang[0])
    seconds = _take_delay(host, [tool, *sys.argv[1:]])
    if seconds:
        import time

        time.sleep(seconds)
    stdin: Any = None
    if tool in ("ipvsadm", "nft", "ip"):
        stdin = sys.stdin  # read only if the command is -R (nft: -f, ip: -batch -)
    result = host.invoke(tool, sys.argv[1:], stdin)
    if tool == "keepalived" and result.rc == 0:
        from . import keepalived_tool

        keepalived_tool.spawn(sys.argv[1:])  # the daemon it leaves behind
    if tool == "bird" and result.rc == 0 and "-p" not in sys.argv[1:]:
        from . import bird_tool

        bird_tool.spawn(sys.argv[1:])
    if hang is not None:  # "after": the change is made and logged, the caller never hears
        return _hang_until_killed(host, hang[0])
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    return result.rc

