"""CLI tests: `bin/lvs-director` and `bin/lvs-realserver` run as a user runs them, against
the emulated machine (tests/fakes). Assertions read the fake kernel and the call log.

Real runs need root (the CLI exits 4 otherwise); `make test` runs as root, and the
fakes are all these runs ever touch (the PATH of `fakehost.env` holds no real tool).

Every fake invocation is a Python process (~0.1 s) and a start makes about twenty, so
tests that need a running director copy one started once per session (`started`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import sh

from lvs_scripts.cli import director_main, realserver_main
from tests.fakes.fakehost import FakeHost
from tests.test_plan_director import CORRECTED_DIRECTOR_START, SEED_SAVE

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="real runs exit 4 without root; run as root (make test)")

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
SEED = ROOT / "examples" / "seed-dr.toml"
VIP = "192.168.30.254"
GATEWAY = "192.168.30.1"
OLD_GATEWAY = "192.168.30.200"  # the default fake machine's route before start
SERVICE = f"tcp {VIP}:80"
NEIGHBOUR_MAC = "52:54:00:aa:bb:cc"

# Every read-only command the tools may run (argv prefixes); anything else changes the host.
READ_ONLY = (
    ("ip", "-o", "link", "show"), ("ip", "-o", "addr", "show"),
    ("ip", "-4", "route", "show", "default"), ("ip", "-6", "route", "show", "default"),
    ("ipvsadm", "-S", "-n"), ("ipvsadm", "-L", "--timeout"), ("ipvsadm", "-L", "-n"),
    ("sysctl", "-n"), ("arping", "-V"),
)
ARP_KEYS = [f"net.ipv4.conf.{dev}.{name}" for dev in ("all", "eth0")
            for name in ("arp_ignore", "arp_announce")]
ARP_WANTED = {key: "1" if key.endswith("arp_ignore") else "2" for key in ARP_KEYS}
ARP_BEFORE = {key: "0" if key.endswith("arp_ignore") else "1" for key in ARP_KEYS}

# start on the default fake machine (eth0 up with an address, a default route via .200).
DEFAULT_MACHINE_START = [
    "ipvsadm --set 30 5 60",
    "ip addr add 192.168.30.105/24 dev eth1",
    f"ip addr add {VIP}/32 brd {VIP} dev eth0",
    f"ip route replace default via {GATEWAY}",
    *(f"ipvsadm {rule}" for rule in SEED_SAVE.splitlines()),
    f"arping -c 5 -I eth0 -s {VIP} {GATEWAY}",
]


# ------------------------------------------------------------------------------ helpers


@dataclass
class Ran:
    code: int
    out: str
    err: str


def read_only(argv: list[str]) -> bool:
    return any(tuple(argv[:len(prefix)]) == prefix for prefix in READ_ONLY)


def never_run(argvs: list[list[str]]) -> list[list[str]]:
    """What the original stop did and this tool must never do: clear or zero the whole
    IPVS table, take an interface down."""
    wipe = {"-C", "--clear", "-Z", "--zero"}
    return [a for a in argvs if (a[0] == "ipvsadm" and wipe & set(a))
            or (a[:3] == ["ip", "link", "set"] and "down" in a)]


class Machine:
    """One emulated host, with the state and lock directories the CLI uses on it."""

    def __init__(self, host: FakeHost, files: Path) -> None:
        self.host = host
        self.files_dir = files
        self.state_dir = files / "run"
        self.lock_dir = files / "lock"
        self.env = {**host.env, "LVS_STATE_DIR": str(self.state_dir),
                    "LVS_LOCK_DIR": str(self.lock_dir), "LVS_SYSLOG": "0"}

    def _run(self, program: str, args: tuple[str, ...], config: Path | None,
             env: dict[str, str] | None) -> Ran:
        command = sh.Command(str(BIN / program)).bake(
            _env={**self.env, **(env or {})}, _ok_code=list(range(256)), _return_cmd=True)
        done = command(*(["-c", str(config)] if config is not None else []), *args)
        return Ran(done.exit_code, done.stdout.decode(), done.stderr.decode())

    def director(self, *args: str, config: Path | None = SEED,
                 env: dict[str, str] | None = None) -> Ran:
        return self._run("lvs-director", args, config, env)

    def realserver(self, *args: str, config: Path | None = SEED,
                   env: dict[str, str] | None = None) -> Ran:
        return self._run("lvs-realserver", args, config, env)

    def kernel(self) -> dict[str, Any]:
        """What the kernel holds: links, addresses, routes, sysctls, the IPVS table. The
        net.ipv4.vs.* keys are left out: they appear when the first ipvsadm loads ip_vs,
        as on a real machine, and are none of the tool's doing."""
        st = self.host.state()
        st["sysctl"] = {k: v for k, v in st["sysctl"].items()
                        if not k.startswith("net/ipv4/vs/")}
        return {key: st[key] for key in ("interfaces", "routes", "sysctl", "ipvs")}

    def files(self) -> dict[str, bytes]:
        """The state and lock files, with their contents; not the run lock (NAME.lock, an
        flock that stays behind holding the last pid)."""
        return {str(path): path.read_bytes() for top in (self.state_dir, self.lock_dir)
                if top.is_dir() for path in sorted(top.iterdir())
                if not (top == self.state_dir and path.suffix == ".lock")}

    def changes(self) -> list[list[str]]:
        """Every command in the call log that is not a read-only observation."""
        return [argv for argv in self.host.argvs() if not read_only(argv)]

    def executed(self) -> list[list[str]]:
        """The changing commands, with each batch (`ipvsadm -R`, `ip -force -batch -`)
        expanded into its commands."""
        out: list[list[str]] = []
        for call in self.host.calls():
            if read_only(call["argv"]):
                continue
            if call["argv"] in (["ipvsadm", "-R"], ["ip", "-force", "-batch", "-"]):
                tool = call["argv"][0]
                out += [[tool, *line.split()] for line in call["stdin"].splitlines()]
            else:
                out.append(call["argv"])
        return out

    def clone(self, directory: Path) -> Machine:
        """A copy of this host and of its state and lock files."""
        (directory / "host").mkdir(parents=True)
        shutil.copy(self.host.state_path, directory / "host" / "state.json")
        copy = Machine(FakeHost(directory / "host"), directory / "files")
        shutil.copytree(self.files_dir, copy.files_dir)
        return copy


def script_commands(script: str) -> list[list[str]]:
    """A printed plan as argvs: comments dropped, each batch's heredoc (`ipvsadm -R`,
    `ip -force -batch -`) expanded."""
    commands: list[list[str]] = []
    heredoc = None
    for line in script.splitlines():
        if heredoc is not None:
            if line == "EOF":
                heredoc = None
            else:
                commands.append([heredoc, *line.split()])
        elif line in ("ipvsadm -R <<'EOF'", "ip -force -batch - <<'EOF'"):
            heredoc = line.split()[0]
        elif words := shlex.split(line, comments=True):
            commands.append(words)
    assert heredoc is None, "unterminated heredoc"
    return commands


def split(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines]


def assert_posix_sh(script: str) -> None:
    checked = subprocess.run(["/bin/sh", "-n"], input=script, capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stderr


def edited_seed(tmp_path: Path, *replacements: tuple[str, str], name: str = "lvs.toml") -> Path:
    text = SEED.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def real(address: str, weight: int) -> str:
    return f'  {{ address = "{address}", weight = {weight} }},\n'


# The reload scenario: .111 changes weight, .112 leaves, .115 joins.
RELOAD_EDITS = (
    (real("192.168.30.111", 1), real("192.168.30.111", 3)),
    (real("192.168.30.112", 1), ""),
    (real("192.168.30.114", 2), real("192.168.30.114", 2) + real("192.168.30.115", 1)),
)
RELOADED_SAVE = f"""\
-A -t {VIP}:80 -s wrr
-a -t {VIP}:80 -r 192.168.30.111:80 -g -w 3
-a -t {VIP}:80 -r 192.168.30.113:80 -g -w 2
-a -t {VIP}:80 -r 192.168.30.114:80 -g -w 2
-a -t {VIP}:80 -r 192.168.30.115:80 -g -w 1
"""
EDIT_111 = f"-e -t {VIP}:80 -r 192.168.30.111:80 -g -w 3"
ADD_115 = f"-a -t {VIP}:80 -r 192.168.30.115:80 -g -w 1"
ZERO_112 = f"-e -t {VIP}:80 -r 192.168.30.112:80 -g -w 0"
DELETE_112 = f"-d -t {VIP}:80 -r 192.168.30.112:80"


def ipvsadm(rule: str) -> list[str]:
    return ["ipvsadm", *rule.split()]


@pytest.fixture
def machine(fakehost: FakeHost, tmp_path: Path) -> Machine:
    return Machine(fakehost, tmp_path / "files")


@pytest.fixture(scope="session")
def started_once(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Machine]:
    """The default machine after `lvs-director start`, and after `lvs-realserver start`
    (with ARP settings of its own before: arp_ignore 0, arp_announce 1)."""
    templates = {}
    for program in ("director", "realserver"):
        directory = tmp_path_factory.mktemp(f"started-{program}")
        template = Machine(FakeHost(directory / "host"), directory / "files")
        if program == "realserver":
            for key, value in ARP_BEFORE.items():
                template.host.set_sysctl(key, value)
        ran = getattr(template, program)("start")
        assert ran.code == 0, ran.err
        templates[program] = template
    return templates


@pytest.fixture
def started(started_once: dict[str, Machine], tmp_path: Path) -> Machine:
    """A director that `start` has set up (a private copy)."""
    return started_once["director"].clone(tmp_path / "started")


@pytest.fixture
def started_rs(started_once: dict[str, Machine], tmp_path: Path) -> Machine:
    """A real server that `start` has set up (a private copy)."""
    return started_once["realserver"].clone(tmp_path / "started")


@pytest.fixture
def realserver(machine: Machine) -> Machine:
    """The default machine as a real server, with ARP settings of its own before start."""
    for key, value in ARP_BEFORE.items():
        machine.host.set_sysctl(key, value)
    return machine


def empty_machine(directory: Path) -> Machine:
    """A freshly booted director: lo up, eth0 and eth1 down without addresses, no default
    route, IPVS a module not loaded yet."""
    host = FakeHost(directory / "host", empty=True)
    host.add_interface("lo", kind="loopback")
    host.add_address("lo", "127.0.0.1/8")
    host.add_interface("eth0", mac="52:54:00:12:34:56", up=False)
    host.add_interface("eth1", mac="52:54:00:12:34:57", up=False)
    return Machine(host, directory / "files")


# ------------------------------------------------------------------------------ director start


def test_start_sets_up_the_corrected_director(machine: Machine) -> None:
    ran = machine.director("start")
    assert ran.code == 0, ran.err
    host = machine.host
    assert host.addresses("eth0") == ["192.168.30.105/24", f"{VIP}/32"]
    assert host.addresses("eth1") == ["192.168.30.105/24"]
    assert [r["via"] for r in host.default_routes()] == [GATEWAY]
    assert host.ipvs_save() == SEED_SAVE
    assert host.timeouts() == (30, 5, 60)
    assert (machine.lock_dir / "lvs-director").is_file()
    state = json.loads((machine.state_dir / "lvs-director.json").read_text())
    assert [f"{s['protocol']} {s['address']}:{s['port']}" for s in state["services"]] == [
        SERVICE]
    assert machine.executed() == split(DEFAULT_MACHINE_START)
    # The rules went through one `ipvsadm -R`, not one process each.
    ipvsadm = host.calls("ipvsadm")
    assert [c for c in ipvsadm if c["argv"][1] in ("-A", "-a")] == []
    assert [c["stdin"] for c in ipvsadm if c["argv"] == ["ipvsadm", "-R"]] == [SEED_SAVE]
    # The DIP and the VIP, one after the other in the plan, through one `ip -batch`.
    assert [c["stdin"] for c in host.calls("ip") if "-batch" in c["argv"]] == [
        f"addr add 192.168.30.105/24 dev eth1\naddr add {VIP}/32 brd {VIP} dev eth0\n"]
    # Announced from the VIP to the gateway; nobody answered: only a warning, and the
    # announcement counts as made (the ARPs went out): no later start repeats it.
    assert [(s["src"], s["dst"], s["iface"]) for s in host.arp_sent()] == [(VIP, GATEWAY, "eth0")]
    assert re.fullmatch(r"lvs-director: `arping [^`]*` exited 1: tell the gateway that "
                        r"\S+ is here: sent, but not every probe was answered\n", ran.err)
    assert [a["cidr"] for a in state["addresses"] if a["announced"]] == [f"{VIP}/32"]
    # No argument is anything but an expected token: nothing from a shell, no spaces.
    expected = {word for line in DEFAULT_MACHINE_START for word in line.split()}
    expected |= {word for prefix in READ_ONLY for word in prefix}
    used = {word for argv in host.argvs() for word in argv}
    assert used <= expected | {"-R", "-force", "-batch", "-"}


def test_habets_arping_is_detected_and_gets_its_own_flags(machine: Machine) -> None:
    machine.host.set_arping_flavour("habets")
    machine.host.set_neighbour(GATEWAY, NEIGHBOUR_MAC)
    ran = machine.director("start")
    assert (ran.code, ran.err) == (0, "")  # the gateway answered: no warning
    assert [a for a in machine.host.argvs("arping") if a != ["arping", "-V"]] == [
        ["arping", "-c", "5", "-i", "eth0", "-S", VIP, GATEWAY]]


def test_no_arping_at_all_is_a_warning_and_the_next_start_announces(machine: Machine) -> None:
    machine.host.set_arping_flavour(None)
    ran = machine.director("start")
    assert ran.code == 0
    assert "arping not found on PATH" in ran.err
    assert machine.host.ipvs_save() == SEED_SAVE
    assert machine.host.arp_sent() == []
    # arping installed later: the next start (or reload) makes the announcement it missed,
    # and only that.
    machine.host.set_arping_flavour("iputils")
    machine.host.set_neighbour(GATEWAY, NEIGHBOUR_MAC)
    machine.host.clear_calls()
    ran = machine.director("start")
    assert (ran.code, ran.err) == (0, ""), ran.err
    assert [a for a in machine.host.argvs() if not read_only(a)] == [
        ["arping", "-c", "5", "-I", "eth0", "-s", VIP, GATEWAY]]
    assert machine.director("start").out == "lvs-director start: nothing to do\n"


def test_second_start_has_nothing_to_do(started: Machine) -> None:
    before = started.kernel()
    ran = started.director("start")
    assert ran.code == 0
    assert ran.out == "lvs-director start: nothing to do\n"
    assert started.host.argvs() != []
    assert started.changes() == []
    assert started.kernel() == before


def test_verbose_logs_every_command_before_it_runs(started: Machine) -> None:
    started.host.ipvsadm("-d", "-t", f"{VIP}:80", "-r", "192.168.30.113:80")
    ran = started.director("-v", "reload")
    assert ran.code == 0
    logged = [line.split(" run: ", 1)[1] for line in ran.err.splitlines() if " run: " in line]
    assert logged == [shlex.join(argv) for argv in started.host.argvs()]
    assert f"ipvsadm -a -t {VIP}:80 -r 192.168.30.113:80 -g -w 2" in logged


# ------------------------------------------------------------------------------ life cycle


def test_life_cycle_status_restart_stop(machine: Machine) -> None:
    host = machine.host
    before = machine.kernel()
    stopped = machine.director("status", "--json")
    assert stopped.code == 3
    assert json.loads(stopped.out)["services"][0]["status"] == "absent"

    assert machine.director("start").code == 0
    running = machine.director("status")
    assert running.code == 0
    assert running.out.startswith("lvs-director: running as configured\n")

    restarted = machine.director("restart")
    assert restarted.code == 0
    assert restarted.out.splitlines() == ["lvs-director stop: 5 change(s) applied",
                                          "lvs-director start: 9 change(s) applied"]
    assert host.ipvs_save() == SEED_SAVE
    assert [r["via"] for r in host.default_routes()] == [GATEWAY]

    assert machine.director("stop").code == 0
    after = machine.kernel()
    assert host.ipvs_save() == ""
    assert host.addresses("eth0") == ["192.168.30.105/24"]
    assert host.addresses("eth1") == []
    # the route start replaced comes back, also after a restart in between
    assert [(r["via"], r["dev"]) for r in host.default_routes()] == [(OLD_GATEWAY, "eth0")]
    assert not (machine.lock_dir / "lvs-director").exists()
    assert not (machine.state_dir / "lvs-director.json").exists()
    assert all(interface["up"] for interface in host.interfaces())
    assert never_run(host.argvs()) == []
    # The timeouts too are back to the kernel's defaults: nothing of the start remains.
    assert host.timeouts() == (900, 120, 300)
    assert after == before
    assert machine.director("status").code == 3


def test_status_2_when_the_lock_file_remains_but_the_kernel_is_empty(started: Machine) -> None:
    started.host.ipvsadm("-C")
    started.host.cmd("ip", "addr", "del", f"{VIP}/32", "dev", "eth0")
    ran = started.director("status")
    assert ran.code == 2
    assert ran.out.startswith("lvs-director: not running, but the lock file "
                              f"{started.lock_dir / 'lvs-director'} exists\n")


def test_drift_by_hand_is_status_150_and_reload_repairs_it(started: Machine) -> None:
    started.host.ipvsadm("-e", "-t", f"{VIP}:80", "-r", "192.168.30.111:80", "-g", "-w", "9")
    started.host.ipvsadm("-d", "-t", f"{VIP}:80", "-r", "192.168.30.113:80")
    repair = [f"ipvsadm -e -t {VIP}:80 -r 192.168.30.111:80 -g -w 1",
              f"ipvsadm -a -t {VIP}:80 -r 192.168.30.113:80 -g -w 2"]
    drift = started.director("status")
    assert drift.code == 150
    assert [line.split("needed: ")[1] for line in drift.out.splitlines()
            if "needed: " in line] == repair
    assert started.changes() == []
    assert started.director("reload").code == 0
    assert started.executed() == split(repair)
    assert started.host.ipvs_save() == SEED_SAVE
    assert started.director("status").code == 0


def test_status_json_and_a_service_made_by_hand(started: Machine) -> None:
    started.host.ipvsadm("-A", "-t", "10.9.9.9:443", "-s", "rr")
    ran = started.director("status", "--json")
    assert ran.code == 0
    data = json.loads(ran.out)
    assert {"code", "summary", "services", "unmanaged", "drift"} <= set(data)
    assert (data["code"], data["drift"], data["unmanaged"]) == (0, [], ["tcp 10.9.9.9:443"])
    [service] = data["services"]
    assert (service["service"], service["status"]) == (SERVICE, "managed")
    assert [(r["address"], r["actual_weight"]) for r in service["real"]] == [
        ("192.168.30.111:80", 1), ("192.168.30.112:80", 1), ("192.168.30.113:80", 2),
        ("192.168.30.114:80", 2)]
    text = started.director("status")
    assert "tcp 10.9.9.9:443  [not managed by lvs-director]" in text.out.splitlines()[-1]


def test_stop_when_stopped_has_nothing_to_do(machine: Machine) -> None:
    before = machine.kernel()
    ran = machine.director("stop")
    assert ran.code == 0
    assert ran.out == "lvs-director stop: nothing to do\n"
    assert machine.changes() == []
    assert machine.kernel() == before


def test_hand_made_service_survives_start_reload_and_stop(machine: Machine,
                                                          tmp_path: Path) -> None:
    host = machine.host
    hand_made = ["-A -t 10.9.9.9:443 -s rr", "-a -t 10.9.9.9:443 -r 10.9.9.10:443 -m -w 3"]
    for rule in hand_made:
        host.ipvsadm(*rule.split())
    edited = edited_seed(tmp_path, *RELOAD_EDITS)
    for action, config in (("start", SEED), ("reload", edited), ("stop", edited)):
        assert machine.director("--no-drain", action, config=config).code == 0
        assert [line for line in host.ipvs_save().splitlines() if "10.9.9" in line] == hand_made
    assert host.ipvs_save().splitlines() == hand_made
    assert never_run(host.argvs()) == []
    assert [argv for argv in machine.executed() if any("10.9.9" in w for w in argv)] == []


# ------------------------------------------------------------------------------ reload


def test_reload_and_force_reload_with_nothing_changed(started: Machine) -> None:
    for action in ("reload", "force-reload"):
        ran = started.director(action)
        assert ran.code == 0
        assert "nothing to do" in ran.out
    assert started.changes() == []


def test_reload_applies_only_the_difference_without_drain(started: Machine,
                                                          tmp_path: Path) -> None:
    edited = edited_seed(tmp_path, *RELOAD_EDITS)
    ran = started.director("--no-drain", "reload", config=edited)
    assert ran.code == 0, ran.err
    assert started.changes() == [["ipvsadm", "-R"]]
    assert started.executed() == [ipvsadm(EDIT_111), ipvsadm(ADD_115), ipvsadm(DELETE_112)]
    assert started.host.ipvs_save() == RELOADED_SAVE


def test_reload_drains_an_idle_real_server_at_once(started: Machine, tmp_path: Path) -> None:
    edited = edited_seed(tmp_path, *RELOAD_EDITS)
    started.host.set_counters(SERVICE, "192.168.30.112:80", activeconns=0, inactconns=0)
    ran = started.director("force-reload", config=edited)
    assert (ran.code, ran.err) == (0, "")
    # weight 0 in the batch, the counters read once, then the delete on its own
    assert started.executed() == [ipvsadm(EDIT_111), ipvsadm(ADD_115), ipvsadm(ZERO_112),
                                  ipvsadm(DELETE_112)]
    assert started.host.argvs("ipvsadm").count(["ipvsadm", "-L", "-n"]) == 1
    assert started.host.ipvs_save() == RELOADED_SAVE


def test_reload_waits_for_connections_then_deletes_and_warns(started: Machine,
                                                             tmp_path: Path) -> None:
    edited = edited_seed(tmp_path, *RELOAD_EDITS,
                         ('forwarding = "dr"', 'forwarding = "dr"\ndrain_seconds = 1'))
    started.host.set_counters(SERVICE, "192.168.30.112:80", activeconns=3, inactconns=1)
    begun = time.monotonic()
    ran = started.director("reload", config=edited)
    assert time.monotonic() - begun >= 1.0
    assert ran.code == 0, ran.err
    calls = started.host.argvs()
    zero, delete = calls.index(["ipvsadm", "-R"]), calls.index(ipvsadm(DELETE_112))
    assert ["ipvsadm", "-L", "-n"] in calls[zero:delete]
    assert "waiting until 192.168.30.112:80 in tcp 192.168.30.254:80 has no connections" in ran.err
    assert ("drain time up after 1 s: deleting 192.168.30.112:80 in tcp 192.168.30.254:80 "
            "although 4 connection(s) remain") in ran.err
    assert started.host.ipvs_save() == RELOADED_SAVE


# ------------------------------------------------------------------------------ dry run

DRY_RUNS = [  # (program, action, on a started host?)
    ("director", "start", False), ("director", "force-reload", False),
    ("director", "restart", True), ("director", "stop", True),
    ("realserver", "start", False), ("realserver", "restart", True),
]


@pytest.mark.parametrize(("program", "action", "on_started"), DRY_RUNS)
def test_dry_run_prints_a_script_and_changes_nothing(
        request: pytest.FixtureRequest, program: str, action: str, on_started: bool) -> None:
    fixture = ("started" if program == "director" else "started_rs") if on_started else "machine"
    machine: Machine = request.getfixturevalue(fixture)
    machine.host.clear_calls()
    before = machine.kernel(), machine.files()
    ran = getattr(machine, program)("--dry-run", action)
    assert ran.code == 0, ran.err
    assert ran.out.startswith("#!/bin/sh\n# lvs-")
    assert_posix_sh(ran.out)
    assert machine.host.argvs() != []
    assert machine.changes() == []
    assert (machine.kernel(), machine.files()) == before
    if program == "director" and action != "stop":
        assert f"ipvsadm -R <<'EOF'\n{SEED_SAVE}EOF\n" in ran.out
    if program == "director" and action in ("stop", "restart"):
        assert f"\nipvsadm -D -t {VIP}:80\n" in ran.out


@pytest.mark.parametrize("broken", ["no-ipvs", "no-ipvsadm"])
def test_dry_run_without_ipvs_prints_the_full_plan(machine: Machine, broken: str) -> None:
    if broken == "no-ipvs":
        machine.host.set_ipvs("absent")
        said = "the kernel has no IPVS support"
    else:
        machine.host.remove_tool("ipvsadm")
        said = "ipvsadm not found on PATH"
    ran = machine.director("--dry-run", "start")
    assert ran.code == 0
    assert script_commands(ran.out) == split(DEFAULT_MACHINE_START)
    assert said in ran.err
    assert "planned as if nothing were configured" in ran.err
    # status --dry-run: status that tolerates the missing part, not a script
    status = machine.director("--dry-run", "status")
    assert status.code == 3
    assert said in status.out
    assert machine.changes() == []


def test_golden_dry_run_on_an_empty_machine(tmp_path: Path) -> None:
    """`make dry-run` on a freshly booted director prints the corrected Director script."""
    machine = empty_machine(tmp_path)
    ran = machine.director("--dry-run", "start")
    assert (ran.code, ran.err) == (0, "")
    assert script_commands(ran.out) == split(CORRECTED_DIRECTOR_START)
    assert machine.changes() == []


def test_printed_script_configures_the_host_like_a_real_start(tmp_path: Path) -> None:
    by_script = Machine(FakeHost(tmp_path / "a"), tmp_path / "a-files")
    by_tool = Machine(FakeHost(tmp_path / "b"), tmp_path / "b-files")
    script = by_script.director("--dry-run", "start").out
    ran = subprocess.run(["/bin/sh", "-c", script], env=by_script.env, capture_output=True,
                         text=True, check=False)
    assert by_tool.director("start").code == 0
    assert ran.returncode == 1  # the optional arping: nobody answers on the fake LAN
    assert by_script.kernel() == by_tool.kernel()
    assert by_script.executed() == by_tool.executed()


DRY_VERSUS_REAL = [  # (program, action, config edits before the action)
    pytest.param("director", "reload", RELOAD_EDITS, id="director-reload-edited-config"),
    pytest.param("director", "stop", (), id="director-stop"),
    pytest.param("director", "restart", (), id="director-restart"),
    pytest.param("realserver", "restart", (), id="realserver-restart"),
]


@pytest.mark.parametrize(("program", "action", "edits"), DRY_VERSUS_REAL)
def test_dry_run_prints_exactly_what_the_real_run_executes(
        request: pytest.FixtureRequest, tmp_path: Path, program: str, action: str,
        edits: tuple[tuple[str, str], ...]) -> None:
    machine: Machine = request.getfixturevalue(
        "started" if program == "director" else "started_rs")
    config = edited_seed(tmp_path, *edits)
    run: Callable[..., Ran] = getattr(machine, program)
    dry = run("--dry-run", action, config=config)
    machine.host.clear_calls()
    assert run(action, config=config).code == 0
    assert script_commands(dry.out) == machine.executed()


# ------------------------------------------------------------------------------ exit codes


def test_unknown_action_is_exit_2_with_a_usage_spelt_right(machine: Machine) -> None:
    ran = machine.director("stauts")
    assert ran.code == 2
    assert ran.err.startswith("usage: lvs-director ")
    assert "{start,stop,restart,reload,force-reload,status,watch,disable,enable}" in ran.err
    assert "invalid choice: 'stauts'" in ran.err
    assert machine.host.argvs() == []


@pytest.mark.parametrize("argv", [["--frobnicate", "start"], ["start", "--wait"], []])
def test_bad_arguments_are_exit_2(machine: Machine, argv: list[str]) -> None:
    ran = machine.realserver(*argv)
    assert ran.code == 2
    assert ran.err.startswith("usage: lvs-realserver ")
    assert machine.host.argvs() == []


@pytest.mark.parametrize("program", ["director", "realserver"])
def test_missing_config_is_exit_6_naming_the_file(machine: Machine, tmp_path: Path,
                                                  program: str) -> None:
    missing = tmp_path / "nowhere" / "lvs.toml"
    ran = getattr(machine, program)("start", config=missing)
    assert ran.code == 6
    assert ran.err == f"lvs-{program}: {missing}: config file not found (use -c FILE or " \
                      "LVS_CONFIG)\n"
    assert machine.host.argvs() == []


MISSING = [  # (program, action, what is missing, the fix the one-line message gives)
    ("director", "start", "ipvsadm", "install it (Debian: apt-get install ipvsadm)"),
    ("director", "restart", "ipvsadm", "install it (Debian: apt-get install ipvsadm)"),
    ("director", "start", "ip", "install it (Debian: apt-get install iproute2)"),
    ("director", "start", "no-ipvs", "this kernel has no ip_vs module: boot one built with "
     "CONFIG_IP_VS"),
    ("realserver", "start", "sysctl", "install it (Debian: apt-get install procps)"),
    ("realserver", "start", "ip", "install it (Debian: apt-get install iproute2)"),
]


@pytest.mark.parametrize(("program", "action", "missing", "fix"), MISSING)
def test_missing_tool_or_ipvs_is_exit_5_before_anything_changed(
        machine: Machine, program: str, action: str, missing: str, fix: str) -> None:
    if missing == "no-ipvs":
        machine.host.set_ipvs("absent")
    else:
        machine.host.remove_tool(missing)
    before = machine.kernel()
    ran = getattr(machine, program)(action)
    assert ran.code == 5
    [message] = ran.err.splitlines()
    assert fix in message
    assert machine.changes() == []
    assert machine.kernel() == before
    assert machine.files() == {}


def test_realserver_needs_neither_ipvsadm_nor_arping(machine: Machine) -> None:
    machine.host.remove_tool("ipvsadm")
    machine.host.set_arping_flavour(None)
    ran = machine.realserver("start")
    assert (ran.code, ran.err) == (0, "")


def test_not_root_is_exit_4_and_dry_run_needs_no_root(
        fakehost_inprocess: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("LVS_SYSLOG", "0")
    where = ["-c", str(SEED), "--state-dir", str(tmp_path / "run"),
             "--lock-dir", str(tmp_path / "lock")]
    for main in (director_main, realserver_main):
        for action in ("start", "stop", "restart", "reload", "force-reload"):
            assert main([*where, action]) == 4
            assert "run it as root (or try --dry-run)" in capsys.readouterr().err
    assert fakehost_inprocess.argvs() == []
    # As a user, ipvsadm cannot read the table: the dry run plans a full start and says so.
    fakehost_inprocess.set_privileged(False)
    assert director_main([*where, "--dry-run", "start"]) == 0
    script = capsys.readouterr().out
    assert script_commands(script) == split(DEFAULT_MACHINE_START)
    assert "# note: the IPVS table could not be read as user " in script
    assert director_main([*where, "status"]) == 4  # LSB: status unknown, not "stopped"
    assert "could not be read as user" in capsys.readouterr().err
    assert [a for a in fakehost_inprocess.argvs() if not read_only(a)] == []
    assert not (tmp_path / "lock").exists()


def test_failed_command_is_exit_1_naming_it_and_what_was_applied(machine: Machine) -> None:
    for in_batch in (True, False):  # the DIP and the VIP go in one `ip -batch`, then alone
        machine.host.fail(["ip", "addr", "add"], rc=2, in_restore=in_batch,
                          stderr="RTNETLINK answers: Permission denied")
    ran = machine.director("start")
    assert ran.code == 1
    assert ran.err.startswith("lvs-director: `ip addr add 192.168.30.105/24 dev eth1` exited 2: "
                              "RTNETLINK answers: Permission denied\n")
    assert "applied before the failure (1):\n  ipvsadm --set 30 5 60\n" in ran.err
    not_applied = DEFAULT_MACHINE_START[1:]
    assert f"not applied ({len(not_applied)}):\n" + "".join(
        f"  {line}\n" for line in not_applied) in ran.err
    assert machine.host.ipvs_save() == ""
    assert not (machine.lock_dir / "lvs-director").exists()
    # Running it again finishes the job.
    machine.host.clear_failures()
    assert machine.director("start").code == 0
    assert machine.host.ipvs_save() == SEED_SAVE


def test_failure_half_way_is_recorded_and_stop_removes_what_was_applied(
        machine: Machine) -> None:
    for in_batch in (True, False):
        machine.host.fail(["ip", "addr", "add", f"{VIP}/32"], rc=2, in_restore=in_batch,
                          stderr="RTNETLINK answers: Permission denied")
    ran = machine.director("start")
    assert ran.code == 1
    assert "applied before the failure (2):" in ran.err
    assert machine.host.addresses("eth1") == ["192.168.30.105/24"]
    machine.host.clear_failures()
    assert machine.director("stop").code == 0
    assert machine.host.addresses("eth1") == []


def test_a_rule_rejected_inside_the_batch_is_rerun_for_ipvsadm_s_message(
        machine: Machine) -> None:
    rule = ["ipvsadm", "-a", "-t", f"{VIP}:80", "-r", "192.168.30.113:80"]
    machine.host.fail(rule, rc=2, stderr="Memory allocation problem", in_restore=True)
    machine.host.fail(rule, rc=2, stderr="Memory allocation problem")
    ran = machine.director("start")
    assert ran.code == 1
    assert ran.err.startswith(f"lvs-director: `{shlex.join(rule)} -g -w 2` exited 2: "
                              "Memory allocation problem\n")


def test_a_second_run_waits_for_the_first_then_names_its_pid(machine: Machine) -> None:
    machine.state_dir.mkdir(parents=True)
    with open(machine.state_dir / "lvs-director.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        begun = time.monotonic()
        ran = machine.director("--wait", "0.5", "start")
    assert ran.code == 1
    assert time.monotonic() - begun >= 0.5
    assert "another lvs-director is running (pid 4242)" in ran.err
    assert machine.host.argvs() == []


@pytest.mark.parametrize("where", [
    "state",
    "lock",
])
def test_a_symlink_at_the_state_or_lock_path_is_refused_before_anything_changes(
        machine: Machine, tmp_path: Path, where: str) -> None:
    target = tmp_path / "elsewhere"
    link = (machine.state_dir / "lvs-director.json" if where == "state"
            else machine.lock_dir / "lvs-director")
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    ran = machine.director("start")
    assert ran.code == 1
    assert f"{link}: is a symbolic link; refusing to follow it" in ran.err
    assert not target.exists()
    assert machine.changes() == []


def test_corrupt_state_file_is_a_clear_message(machine: Machine) -> None:
    machine.state_dir.mkdir(parents=True)
    (machine.state_dir / "lvs-director.json").write_text("{not json")
    ran = machine.director("stop")
    assert ran.code == 1
    assert "state file is corrupt" in ran.err
    assert "delete it" in ran.err
    assert machine.host.argvs() == []


# ------------------------------------------------------------------------------ real server


def test_realserver_start_sets_arp_before_the_vip_and_stop_restores(realserver: Machine) -> None:
    host = realserver.host
    assert realserver.realserver("start").code == 0
    assert {key: host.sysctl(key) for key in ARP_KEYS} == ARP_WANTED
    assert host.addresses("lo") == ["127.0.0.1/8", f"{VIP}/32"]
    assert realserver.changes() == [
        *(["sysctl", "-w", f"{key}={value}"] for key, value in ARP_WANTED.items()),
        ["ip", "addr", "add", f"{VIP}/32", "brd", VIP, "dev", "lo"]]
    assert (realserver.lock_dir / "lvs-realserver").is_file()

    assert realserver.realserver("stop").code == 0
    assert {key: host.sysctl(key) for key in ARP_KEYS} == ARP_BEFORE
    assert host.addresses("lo") == ["127.0.0.1/8"]
    assert host.interface("lo")["up"]  # type: ignore[index]
    assert never_run(host.argvs()) == []
    assert realserver.files() == {}


def test_realserver_stop_leaves_a_value_someone_changed_since(started_rs: Machine) -> None:
    started_rs.host.set_sysctl("net.ipv4.conf.all.arp_ignore", 8)
    ran = started_rs.realserver("stop")
    assert ran.code == 0
    assert started_rs.host.sysctl("net.ipv4.conf.all.arp_ignore") == "8"
    assert started_rs.host.sysctl("net.ipv4.conf.all.arp_announce") == "1"
    assert "net.ipv4.conf.all.arp_ignore was changed to 8 since start" in ran.err


def test_realserver_status_and_a_second_start(started_rs: Machine) -> None:
    assert started_rs.realserver("status").code == 0
    before = started_rs.kernel()
    again = started_rs.realserver("start")
    assert again.out == "lvs-realserver start: nothing to do\n"
    assert started_rs.changes() == []
    assert started_rs.kernel() == before
    started_rs.host.set_sysctl("net.ipv4.conf.eth0.arp_announce", 0)
    drift = started_rs.realserver("status")
    assert drift.code == 150
    assert "needed: sysctl -w net.ipv4.conf.eth0.arp_announce=2" in drift.out
    assert started_rs.realserver("stop").code == 0
    assert started_rs.realserver("status").code == 3


def test_realserver_brings_lo_up_if_someone_downed_it(realserver: Machine) -> None:
    realserver.host.set_link("lo", up=False)
    assert realserver.realserver("start").code == 0
    assert realserver.changes()[0] == ["ip", "link", "set", "dev", "lo", "up"]
    assert realserver.host.interface("lo")["up"]  # type: ignore[index]


def test_realserver_vlan_interface_uses_the_slash_key(machine: Machine, tmp_path: Path) -> None:
    machine.host.add_interface("eth0.100", kind="vlan", link="eth0")
    config = edited_seed(tmp_path, ('arp_interfaces = ["eth0"]', 'arp_interfaces = ["eth0.100"]'))
    key = "net/ipv4/conf/eth0.100/arp_announce"
    before = machine.host.sysctl(key)
    assert machine.realserver("start", config=config).code == 0
    assert ["sysctl", "-w", "net/ipv4/conf/eth0.100/arp_ignore=1"] in machine.changes()
    assert machine.host.sysctl("net/ipv4/conf/eth0.100/arp_ignore") == "1"
    assert machine.host.sysctl(key) == "2"
    assert machine.realserver("stop", config=config).code == 0
    assert machine.host.sysctl(key) == before


# ------------------------------------------------------------------------------ where things go


def test_config_from_lvs_config_and_c_wins(machine: Machine, tmp_path: Path) -> None:
    by_env = machine.director("--dry-run", "start", config=None, env={"LVS_CONFIG": str(SEED)})
    assert by_env.code == 0
    assert f"# lvs-director start: planned from {SEED} " in by_env.out
    nowhere = str(tmp_path / "absent.toml")
    missing = machine.director("--dry-run", "start", config=None, env={"LVS_CONFIG": nowhere})
    assert (missing.code, nowhere in missing.err) == (6, True)
    by_option = machine.director("--dry-run", "start", env={"LVS_CONFIG": nowhere})
    assert by_option.out == by_env.out


def test_default_config_path_is_named_when_absent(machine: Machine) -> None:
    if os.path.exists("/etc/lvs/lvs.toml") or "LVS_CONFIG" in machine.env:
        pytest.skip("this machine has a config of its own")
    ran = machine.director("status", config=None)
    assert ran.code == 4  # LSB: status unknown
    assert "/etc/lvs/lvs.toml" in ran.err
    assert machine.director("start", config=None).code == 6


def test_state_and_lock_dir_options_override_the_environment(machine: Machine,
                                                             tmp_path: Path) -> None:
    state, lock = tmp_path / "opt-state", tmp_path / "opt-lock"
    options = ("--state-dir", str(state), "--lock-dir", str(lock))
    assert machine.director(*options, "start").code == 0
    assert (state / "lvs-director.json").is_file()
    assert (lock / "lvs-director").is_file()
    assert machine.files() == {}
    # With the environment's directories nothing is known about that start: nothing to stop.
    assert machine.director("stop").out == "lvs-director stop: nothing to do\n"
    assert machine.host.ipvs_save() == SEED_SAVE
    assert machine.director(*options, "stop").code == 0
    assert machine.host.ipvs_save() == ""


def test_two_hosts_on_one_file_system_keep_apart(started: Machine, tmp_path: Path) -> None:
    other = Machine(FakeHost(tmp_path / "other"), tmp_path / "other-files")
    assert other.director("status").code == 3
    assert other.director("stop").out == "lvs-director stop: nothing to do\n"
    assert other.changes() == []
    assert started.director("status").code == 0
    assert started.changes() == []


# ------------------------------------------------------------------------------ hostile values

HOSTILE = [  # (in the seed, replaced by, the key the message names)
    ('interface = "eth0"', 'interface = "eth0;reboot"', "director.interface"),
    ('dip_interface = "eth1"', 'dip_interface = "eth1$(id)"', "director.dip_interface"),
    ('gateway = "192.168.30.1"', 'gateway = "192.168.30.1 && reboot"', "director.gateway"),
    ('vip = "192.168.30.254"', 'vip = "192.168.30.254|id"', "service[0].vip"),
    ('scheduler = "wrr"', 'scheduler = "wrr`id`"', "service[0].scheduler"),
    ('"192.168.30.111"', '"192.168.30.111 -C"', "service[0].real[0].address"),
    ('arp_interfaces = ["eth0"]', 'arp_interfaces = ["eth0>x"]', "realserver.arp_interfaces[0]"),
]


@pytest.mark.parametrize(("old", "new", "key"), HOSTILE)
def test_shell_metacharacters_in_the_config_are_rejected(machine: Machine, tmp_path: Path,
                                                         old: str, new: str, key: str) -> None:
    config = edited_seed(tmp_path, (old, new))
    ran = machine.director("start", config=config)
    assert ran.code == 6
    assert ran.err.startswith(f"lvs-director: {config}: {key} = ")
    assert machine.host.argvs() == []


def test_driven_like_a_shell_user(started: Machine) -> None:
    lvs_director = sh.Command(str(BIN / "lvs-director")).bake("-c", str(SEED), _env=started.env)
    assert "running as configured" in lvs_director("status")
    lvs_director("stop")
    with pytest.raises(sh.ErrorReturnCode_3):
        lvs_director("status")


@pytest.mark.parametrize(("main", "action", "collecting"), [
    ("director_main", "status", False), ("director_main", "start", False),
    ("director_main", "stop", False), ("realserver_main", "start", False),
    ("director_main", "watch", True)])
def test_one_shot_actions_run_without_the_cyclic_collector(
        monkeypatch: pytest.MonkeyPatch, main: str, action: str, collecting: bool) -> None:
    """A one-shot action's objects hold no cycles, and the collector's passes over them
    were a quarter of a status's CPU at 100,000 real servers: off while it runs, and on
    again after (the CLI also runs inside other programs, the tests among them). The
    watcher, a daemon, keeps it."""
    import gc

    from lvs_scripts import cli

    seen: list[bool] = []

    def action_run(role: str, prog: str, args: object) -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(cli, "_run", action_run)
    assert gc.isenabled()
    assert getattr(cli, main)([action]) == 0
    assert seen == [collecting]
    assert gc.isenabled()
