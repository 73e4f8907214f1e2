"""Two directors ([ha]): keepalived's VRRP moves the VIPs, the kernel's IPVS sync daemons
copy the connection table, and lvs-director drives both from the one shared config.

On each director start adds its own DIP (its [ha] directors entry, on [ha] interface),
the full IPVS table (hot standby), both sync daemons (master and backup, so that a
failback keeps the connections too), writes keepalived's config and notify hook into
the state directory and starts keepalived for VRRP only (`-P`) with its own pid files.
lvs-director does not add the VIPs itself: keepalived does, on the director it elects,
and sends the gratuitous ARPs. Everything here is pure except `this_host`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import socket
from typing import Any

from .errors import ConfigError, LvsError, shown_key
from .healthstate import HealthView
from .locks import Paths
from .model import Config, DirectorConfig, HaConfig, HaDirector
from .owned import (
    FileWritten,
    KeepalivedAddresses,
    KeepalivedStarted,
    SyncDaemonStarted,
    SyncDaemonStopped,
)
from .plan import Plan, Settle
from .plan_director import plan_director_start
from .probes import HostObservation, SyncDaemon
from .record import Record
from .runner import Runner
from .state import State

# What keepalived's notify hook passes as its third argument ($3), as the role file keeps it.
NOTIFY_STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "DELETED")
KEEPALIVED_START_SECONDS = 15.0
# keepalived's config syntax has no quoting we could trust for odd characters; the paths
# we write into it are kept to these.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]+")


class DaemonFiles(Record):
    """The files of a daemon we generate a config for (keepalived, BIRD): all in the
    state directory (root-owned, trusted), named after the tool."""

    state_dir: str
    prefix: str  # the tool's name: lvs-director

    def _path(self, suffix: str) -> str:
        return os.path.join(self.state_dir, f"{self.prefix}.{suffix}")


class HaFiles(DaemonFiles):
    """keepalived's: its config, its pid files (`-p`, `-r`), the notify hook and the role
    the hook records."""

    @property
    def config_file(self) -> str:
        return self._path("keepalived.conf")

    @property
    def pid_file(self) -> str:
        return self._path("keepalived.pid")

    @property
    def vrrp_pid_file(self) -> str:
        return self._path("keepalived-vrrp.pid")

    @property
    def notify_script(self) -> str:
        return self._path("ha-notify")

    @property
    def role_file(self) -> str:
        return self._path("ha-role")


def daemon_state_dir(paths: Paths, table: str, daemon: str) -> str:
    """The state directory, absolute, where a generated daemon config names files: only
    characters that need no quoting in keepalived's or BIRD's config."""
    state_dir = os.path.abspath(paths.state_dir)
    if not _SAFE_PATH.fullmatch(state_dir):
        raise LvsError(f"{state_dir}: with [{table}] the state directory must be a path of "
                       f"letters, digits, '.', '_', '-' and '/' only ({daemon}'s config "
                       "names files in it)")
    return state_dir


def ha_files(paths: Paths) -> HaFiles:
    return HaFiles(daemon_state_dir(paths, "ha", "keepalived"), paths.name)


def this_host(given: str | None, environ: dict[str, str] | None = None) -> str:
    """Which [ha] directors entry is this machine: --host, else $LVS_HOST, else the
    system's host name."""
    env = os.environ if environ is None else environ
    return given or env.get("LVS_HOST") or socket.gethostname()


def member_of(config: Config, host: str) -> HaDirector:
    """This director's [ha] entry: exit 6 if the host has none (checked when the role is
    built, before any lock is taken)."""
    ha = _ha(config)
    member = ha.member(host)
    if member is None:
        names = ", ".join(d.name for d in ha.directors)
        raise ConfigError(config.path, "ha.directors", host,
                          f"this host (--host, $LVS_HOST or the host name) is not among the "
                          f"directors ({names})")
    return member


def _ha(config: Config) -> HaConfig:
    if config.ha is None:
        raise LvsError("no [ha] table in the config")
    return config.ha


def ha_view(config: Config, member: HaDirector) -> Config:
    """The config as the one-director planner sees it on this member: its DIP on
    [ha] interface, and no arping (keepalived sends the gratuitous ARPs)."""
    d = config.require_director()
    director = DirectorConfig(interface=d.interface, gateway=d.gateway, dip=member.dip,
                              dip_interface=_ha(config).interface, timeouts=d.timeouts,
                              arping_count=0, allow_no_services=d.allow_no_services)
    return Config(path=config.path, director=director, realserver=config.realserver,
                  services=config.services, ha=config.ha)


# --- the files we write --------------------------------------------------------------------

def keepalived_config(config: Config, member: HaDirector, files: HaFiles) -> str:
    """keepalived's config for this director: VRRP only, one instance holding every VIP.

    Both directors start as BACKUP and the priority decides (nopreempt needs that too).
    The adverts go unicast to the other directors' DIPs: nothing then depends on the
    LAN passing multicast, and an instance hears only its known peers."""
    ha = _ha(config)
    director = config.require_director()
    peers = [d for d in ha.directors if d.name != member.name]
    vips = config.director_vips()
    same_family = [v for v in vips if v.version == member.dip.ip.version]
    other_family = [v for v in vips if v.version != member.dip.ip.version]
    lines = [
        f"# Generated by lvs-director from {shown_key(config.path)} for {member.name}: start",
        "# rewrites it, and stop removes it. keepalived runs VRRP only (-P); IPVS is",
        "# lvs-director's.",
        "global_defs {",
        f"    router_id {member.name}",
        "    enable_script_security",
        "    script_user root",
        "}",
        "",
        f"vrrp_instance lvs_{ha.virtual_router_id} {{",
        "    state BACKUP",
        f"    interface {ha.interface}",
        f"    virtual_router_id {ha.virtual_router_id}",
        f"    priority {member.priority}",
        f"    advert_int {ha.advert_interval}",
    ]
    if not ha.preempt:
        lines.append("    nopreempt")
    lines += [f"    unicast_src_ip {member.dip.ip}", "    unicast_peer {",
              *(f"        {peer.dip.ip}" for peer in peers), "    }"]
    lines += _address_block("virtual_ipaddress", same_family, director.interface)
    # VRRP adverts carry one family; VIPs of the other go with the instance all the same.
    lines += _address_block("virtual_ipaddress_excluded", other_family, director.interface)
    lines += [
        "    garp_master_delay 1",
        "    garp_master_repeat 3",
        f'    notify "{files.notify_script}"',
        "}",
    ]
    return "\n".join(lines) + "\n"


def _address_block(name: str, vips: list[Any], device: str) -> list[str]:
    if not vips:
        return []
    return [f"    {name} {{", *(f"        {vip}/{vip.max_prefixlen} dev {device}"
                                for vip in vips), "    }"]


def notify_script(files: HaFiles) -> str:
    """keepalived's notify hook: records the instance's new state, and nothing else."""
    role = shlex.quote(files.role_file)
    temp = shlex.quote(files.role_file + ".new")
    return (
        "#!/bin/sh\n"
        "# keepalived's notify hook, written by lvs-director start: records the VRRP\n"
        "# state for `lvs-director status`. keepalived passes: TYPE NAME STATE PRIORITY.\n"
        'case "$3" in\n'
        f"{'|'.join(NOTIFY_STATES)}) ;;\n"
        "*) exit 0 ;;\n"
        "esac\n"
        f"printf '%s\\n' \"$3\" > {temp} && mv -f {temp} {role}\n"
    )


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- the planner ----------------------------------------------------------------------------

def wanted_sync_daemons(ha: HaConfig) -> list[SyncDaemon]:
    """Both daemons on each director: the master sends this director's connections, the
    backup takes the peer's, whichever of the two holds the VIPs."""
    return [SyncDaemon(state, ha.interface, ha.syncid) for state in ("master", "backup")]


def plan_ha_start(config: Config, member: HaDirector, files: HaFiles, obs: HostObservation,
                  state: State, drain: bool = True, view: HealthView | None = None) -> Plan:
    """start/reload of one director of a pair: as a single director (its DIP, the IPVS
    table, the route, health), minus the VIPs, plus the sync daemons and keepalived. A
    reload that changes only the IPVS table touches neither the daemons nor keepalived."""
    plan = plan_director_start(ha_view(config, member), obs, state, drain, view)
    ha = _ha(config)
    for daemon in wanted_sync_daemons(ha):
        _plan_sync_daemon(plan, daemon, obs, state)
    changed = plan_file(plan, files.notify_script, notify_script(files), "0755", obs,
                         "keepalived's notify hook (records the VRRP role)")
    changed |= plan_file(plan, files.config_file, keepalived_config(config, member, files),
                          "0644", obs, "keepalived's config (VRRP only)")
    _plan_keepalived(plan, files, obs, state, keepalived_addresses(config), changed)
    return plan


def keepalived_addresses(config: Config) -> tuple[tuple[str, str], ...]:
    """(device, cidr) of each VIP keepalived's config makes it add (both blocks)."""
    device = config.require_director().interface
    return tuple((device, f"{vip}/{vip.max_prefixlen}") for vip in config.director_vips())


def _plan_sync_daemon(plan: Plan, daemon: SyncDaemon, obs: HostObservation,
                      state: State) -> None:
    seen = obs.sync_daemons.get(daemon.state)
    if seen == daemon:
        return
    if seen is not None:
        owned = state.sync_daemons.get(daemon.state)
        if owned is None or owned.daemon != seen:
            plan.conflicts.append(
                f"an IPVS {seen.describe()} runs that lvs-director did not start; the config "
                f"wants {daemon.describe()}: left alone (ipvsadm --stop-daemon "
                f"{daemon.state} to let start run its own)")
            return
        plan.add(("ipvsadm", "--stop-daemon", daemon.state), f"the IPVS {seen.describe()} "
                 "(the config changed)", SyncDaemonStopped(daemon.state))
    plan.add(daemon.start_argv(), f"the IPVS {daemon.state} sync daemon (connection table "
             "copied between the directors)", SyncDaemonStarted(daemon))


def plan_file(plan: Plan, path: str, text: str, mode: str, obs: HostObservation,
               reason: str) -> bool:
    """Write the file if it differs; True if it is written."""
    want = digest(text)
    if obs.files.get(path) == want:
        return False
    # /proc/self/fd/0, not /dev/stdin: a minimal /dev (devtmpfs without udev, as in the
    # lab's guest) has no /dev/stdin link; /proc is always there where IPVS is.
    plan.add(("install", "-m", mode, "/proc/self/fd/0", path), reason, FileWritten(path, want),
             stdin=text)
    return True


def _plan_keepalived(plan: Plan, files: HaFiles, obs: HostObservation, state: State,
                     addresses: tuple[tuple[str, str], ...], config_changed: bool) -> None:
    """Start it if ours is not running; if it runs and its config changed, SIGHUP (it
    re-reads the file and keeps each instance's state); otherwise leave it alone. The
    record keeps the VIPs its config names, for a stop after it died."""
    seen = obs.keepalived
    if seen is not None and seen.config_file == files.config_file:
        owned = state.keepalived
        update = KeepalivedAddresses(addresses)
        if config_changed and seen.pid > 0:
            plan.add(("kill", "-HUP", str(seen.pid)), "keepalived re-reads its changed config",
                     update)
        elif owned is not None and owned.addresses != addresses:
            plan.forget.append(update)
        return
    plan.add(("keepalived", "-P", "-f", files.config_file, "-p", files.pid_file, "-r",
              files.vrrp_pid_file), "keepalived, VRRP only: it adds the VIPs where elected",
             KeepalivedStarted(files.config_file, files.pid_file, files.vrrp_pid_file,
                               addresses),
             settle=Settle("keepalived has written its pid file", pid_file=files.pid_file,
                           seconds=KEEPALIVED_START_SECONDS))


# --- observation ----------------------------------------------------------------------------

def observe_ha(files: HaFiles, runner: Runner, tolerant: bool, obs: HostObservation) -> None:
    """The sync daemons (`ipvsadm -L --daemon`), our files, our keepalived (its pid file
    naming a live `keepalived -f OUR_CONFIG`) and the role its notify hook recorded."""
    from .observe import Observer, observe_files, observe_keepalived, observe_sync_daemons

    observe_sync_daemons(Observer(runner, tolerant), obs)
    observe_files(obs, [files.notify_script, files.config_file])
    observe_keepalived(obs, files.pid_file, files.config_file)
    try:
        with open(files.role_file, "rb") as handle:
            obs.ha_role = parse_role(handle.read(64).decode("ascii", "replace"))
    except OSError:
        obs.ha_role = None


# --- status ---------------------------------------------------------------------------------

def parse_role(text: str) -> str | None:
    """The role file: one of NOTIFY_STATES on a line, or None."""
    word = text.strip()
    return word.lower() if word in NOTIFY_STATES else None


def describe_ha(config: Config, member: HaDirector, obs: HostObservation
                ) -> tuple[list[str], dict[str, Any]]:
    ha = _ha(config)
    director = config.require_director()
    running = obs.keepalived is not None
    role = obs.ha_role if running else None
    vips = config.director_vips()
    held = [str(v) for v in vips if obs.has_address(director.interface, v)]
    daemons = {d.state: obs.sync_daemons.get(d.state) == d for d in wanted_sync_daemons(ha)}
    lines = [f"ha: {member.name} (priority {member.priority}), role "
             f"{role or ('unknown' if running else 'none')}; keepalived "
             f"{'running' if running else 'not running'}; sync daemons: "
             + ", ".join(f"{state} {'running' if up else 'not running'}"
                         for state, up in daemons.items())
             + f"; holds {len(held)} of {len(vips)} VIP(s)"]
    data = {"host": member.name, "priority": member.priority, "role": role,
            "keepalived": running, "sync_daemons": daemons, "vips_held": held,
            "holds_vips": bool(vips) and len(held) == len(vips)}
    return lines, data
