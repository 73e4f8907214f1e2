"""What lvs_scripts owns on a host, kind by kind, each kind in one place: the record kept
in the state file, the effects that change it, how a stop undoes it, and how status
shows it.

| kind     | record          | effects (write-ahead *)                  | undone by              |
| address  | OwnedAddress    | AddressAdded*, AddressRemoved, Announced | `ip addr del`          |
| route    | OwnedRoute      | RouteSet*, RouteReleased                 | `ip route replace|del` |
| service  | OwnedService    | ServiceCreated*, ServiceDeleted          | `ipvsadm -D`           |
| sysctl   | OwnedSysctl     | SysctlChanged*, SysctlRestored           | `sysctl -w KEY=OLD`    |
| timeouts | OwnedTimeouts   | TimeoutsSet*, TimeoutsRestored           | `ipvsadm --set OLD`    |
| file     | OwnedFile       | FileWritten*, FileRemoved                | `rm -f PATH`           |
| keepalived | OwnedKeepalived | KeepalivedStarted*, KeepalivedStopped  | `kill -TERM PID`, wait |
| sync     | OwnedSyncDaemon | SyncDaemonStarted*, SyncDaemonStopped    | `ipvsadm --stop-daemon` |
| nft      | OwnedNftTable   | NftTableCreated*, NftTableDeleted        | `nft delete table`     |
| link     | OwnedLink       | LinkCreated*, LinkUp*, LinkReleased      | `ip link del`/`down`   |
| fou      | OwnedFou        | FouAdded*, FouRemoved                    | `ip fou del port P`    |
| bird     | OwnedBird       | BirdStarted*, BirdStopped                | `kill -TERM PID`, wait |

A write-ahead effect is recorded (and the state file saved) *before* its command runs,
with the value to restore: a `kill -9` at any point then leaves a state file from which
stop puts the host back. Each undo first looks at the host: a record whose thing is gone
is forgotten, and one that was changed by someone else since is left alone, with a note.
Removals are recorded after their command, for the same reason the other way round.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Union

from .model import DEFAULT_DRAIN_SECONDS, IPAddress, ServiceKey, Timeouts, VirtualService
from .nft import TABLE, NftTable, delete_table_argv
from .plan import Settle
from .probes import (
    Address,
    BirdSeen,
    HostObservation,
    KeepalivedSeen,
    Link,
    Route,
    SyncDaemon,
    interface_of_sysctl,
)
from .record import Record
from .tunnel import FouPort

if TYPE_CHECKING:
    from .plan import Plan
    from .state import State

Slot = tuple[str, object]  # (kind, key): where an effect writes in the state


# --- the records -------------------------------------------------------------------------

class OwnedAddress(Record):
    device: str
    cidr: str
    purpose: str = "vip"  # vip | dip: stop removes VIPs first and the DIP last
    announced: bool = False  # arping ran for it since it was added

    @property
    def ip(self) -> IPAddress:
        return ipaddress.ip_interface(self.cidr).ip

    def describe(self) -> str:
        told = ", announced" if self.announced else ""
        return f"address {self.cidr} on {self.device} ({self.purpose}{told})"


class OwnedRoute(Record):
    family: int
    ours: Route | None  # the default route start set; None once it is gone
    previous: Route | None = None  # the one it replaced, to put back

    def describe(self) -> str:
        ours = " ".join(self.ours.args()) if self.ours else "(gone)"
        before = " ".join(self.previous.args()) if self.previous else "none"
        return f"IPv{self.family} {ours} (before start: {before})"


class OwnedService(Record):
    key: ServiceKey
    drain_seconds: int = DEFAULT_DRAIN_SECONDS  # kept for a drain after it left the config

    def describe(self) -> str:
        return f"service {self.key}"


class OwnedSysctl(Record):
    key: str
    previous: int  # the value before our first change: what stop restores
    value: int  # the value we set

    def describe(self) -> str:
        return f"sysctl {self.key} = {self.value} (before start: {self.previous})"


class OwnedTimeouts(Record):
    previous: Timeouts
    value: Timeouts | None = None  # what we set; None when unknown (a version 1 file)

    def describe(self) -> str:
        ours = " ".join(self.value.args()) if self.value else "?"
        return f"IPVS timeouts {ours} (before start: {' '.join(self.previous.args())})"


class OwnedFile(Record):
    """A file start wrote (keepalived's config, its notify hook): removed by stop unless
    someone changed it since (the digest differs)."""

    path: str
    digest: str  # sha256 of what we wrote

    def describe(self) -> str:
        return f"file {self.path}"


class OwnedKeepalived(Record):
    """The keepalived start ran (VRRP only), found again through its own pid file and
    config file, so that a keepalived someone else started is never signalled."""

    config_file: str
    pid_file: str
    vrrp_pid_file: str
    # The VIPs its config tells it to add, as (device, cidr): a keepalived that dies
    # (kill -9, a crash) leaves them on the interface, and stop removes them then. Empty
    # in a record from before version 5 of the state file, until the next start or reload.
    addresses: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"keepalived -f {self.config_file} (pid file {self.pid_file})"


class OwnedSyncDaemon(Record):
    daemon: SyncDaemon

    def describe(self) -> str:
        return f"IPVS {self.daemon.describe()}"


class OwnedNftTable(Record):
    """`table FAMILY lvs_scripts`, which start created (nft.py): stop deletes it whole."""

    family: str  # ip | ip6

    def describe(self) -> str:
        return f"nftables table {self.family} {TABLE}"


class OwnedLink(Record):
    """A tunnel device of a TUN real server: one start created (stop deletes it), or one
    that was there but down (a fallback device: stop puts it back down)."""

    name: str
    created: bool

    def describe(self) -> str:
        return f"link {self.name} ({'created by start' if self.created else 'set up by start'})"


class OwnedFou(Record):
    """A GUE receive port (`ip fou add port P gue`) of a TUN real server."""

    port: int
    family: int = 4

    @property
    def fou(self) -> FouPort:
        return FouPort(self.port, self.family)

    def describe(self) -> str:
        return f"GUE port {self.port} (IPv{self.family})"




class OwnedBird(Record):
    """The BIRD start ran ([bgp]), found again through its own pid file and config file,
    so that a BIRD someone else started is never signalled; its control socket is how
    stop sees it withdraw the VIPs."""

    config_file: str
    pid_file: str
    socket: str

    def describe(self) -> str:
        return f"bird -c {self.config_file} (pid file {self.pid_file})"


Owned = Union[OwnedAddress, OwnedRoute, OwnedService, OwnedSysctl, OwnedTimeouts, OwnedFile,
              OwnedKeepalived, OwnedSyncDaemon, OwnedNftTable, OwnedLink, OwnedFou, OwnedBird]


# --- the effects -------------------------------------------------------------------------

class Effect(Record):
    """What a step changes in the state file once it ran (or, write-ahead, before)."""

    write_ahead: ClassVar[bool] = False

    def slot(self) -> Slot:
        """The one entry of the state this effect writes (for rolling a write-ahead back)."""
        raise NotImplementedError

    def record(self, state: State) -> None:
        raise NotImplementedError

    def simulate(self, obs: HostObservation) -> None:
        """Change an observation as the step would change the host (dry-run restart)."""
        raise NotImplementedError


class AddressAdded(Effect):
    write_ahead = True
    device: str
    cidr: str
    purpose: str = "vip"

    def slot(self) -> Slot:
        return ("address", (self.device, self.cidr))

    def record(self, state: State) -> None:
        state.addresses[(self.device, self.cidr)] = OwnedAddress(self.device, self.cidr,
                                                                 self.purpose)

    def simulate(self, obs: HostObservation) -> None:
        obs.addresses.append(Address(self.device, ipaddress.ip_interface(self.cidr)))


class AddressRemoved(Effect):
    device: str
    cidr: str

    def slot(self) -> Slot:
        return ("address", (self.device, self.cidr))

    def record(self, state: State) -> None:
        state.addresses.pop((self.device, self.cidr), None)

    def simulate(self, obs: HostObservation) -> None:
        ip = ipaddress.ip_interface(self.cidr).ip
        obs.addresses = [a for a in obs.addresses
                         if not (a.device == self.device and a.interface.ip == ip)]


class Announced(Effect):
    """arping told the LAN (or the gateway) that this VIP is here: the start that added it
    may fail before its arping, and the next one must then still announce it."""

    device: str
    cidr: str

    def slot(self) -> Slot:
        return ("address", (self.device, self.cidr))

    def record(self, state: State) -> None:
        owned = state.addresses.get((self.device, self.cidr))
        if owned is not None:
            state.addresses[(self.device, self.cidr)] = OwnedAddress(
                owned.device, owned.cidr, owned.purpose, announced=True)

    def simulate(self, obs: HostObservation) -> None:
        pass  # an announcement changes other hosts' caches, not this host


class RouteSet(Effect):
    write_ahead = True
    family: int
    ours: Route
    previous: Route | None = None  # the default route replaced, to put back on stop

    def slot(self) -> Slot:
        return ("route", None)

    def record(self, state: State) -> None:
        # A route we set ourselves is never a "previous" one: the first one stays on record.
        before = state.route
        previous = before.previous if before is not None else self.previous
        state.route = OwnedRoute(self.family, self.ours, previous)

    def simulate(self, obs: HostObservation) -> None:
        obs.routes = [r for r in obs.routes if not (self.previous and r.same(self.previous))]
        obs.routes.append(self.ours)


class RouteReleased(Effect):
    """Our default route is gone (deleted, or replaced by the one from before start)."""

    ours: Route | None
    restored: Route | None = None

    def slot(self) -> Slot:
        return ("route", None)

    def record(self, state: State) -> None:
        state.route = None

    def simulate(self, obs: HostObservation) -> None:
        obs.routes = [r for r in obs.routes if not (self.ours and r.same(self.ours))]
        if self.restored is not None:
            obs.routes.append(self.restored)


class ServiceCreated(Effect):
    write_ahead = True
    key: ServiceKey
    drain_seconds: int = DEFAULT_DRAIN_SECONDS

    def slot(self) -> Slot:
        return ("service", self.key)

    def record(self, state: State) -> None:
        state.services[self.key] = OwnedService(self.key, self.drain_seconds)

    def simulate(self, obs: HostObservation) -> None:
        obs.ipvs.setdefault(self.key, VirtualService(self.key))


class ServiceDeleted(Effect):
    key: ServiceKey

    def slot(self) -> Slot:
        return ("service", self.key)

    def record(self, state: State) -> None:
        state.services.pop(self.key, None)

    def simulate(self, obs: HostObservation) -> None:
        obs.ipvs.pop(self.key, None)


class SysctlChanged(Effect):
    write_ahead = True
    key: str
    previous: int
    value: int

    def slot(self) -> Slot:
        return ("sysctl", self.key)

    def record(self, state: State) -> None:
        before = state.sysctls.get(self.key)
        previous = before.previous if before is not None else self.previous
        state.sysctls[self.key] = OwnedSysctl(self.key, previous, self.value)

    def simulate(self, obs: HostObservation) -> None:
        obs.sysctls[self.key] = self.value


class SysctlRestored(Effect):
    key: str
    previous: int

    def slot(self) -> Slot:
        return ("sysctl", self.key)

    def record(self, state: State) -> None:
        state.sysctls.pop(self.key, None)

    def simulate(self, obs: HostObservation) -> None:
        obs.sysctls[self.key] = self.previous


class TimeoutsSet(Effect):
    write_ahead = True
    previous: Timeouts
    value: Timeouts

    def slot(self) -> Slot:
        return ("timeouts", None)

    def record(self, state: State) -> None:
        before = state.timeouts
        previous = before.previous if before is not None else self.previous
        state.timeouts = OwnedTimeouts(previous, self.value)

    def simulate(self, obs: HostObservation) -> None:
        obs.timeouts = self.value.over(self.previous)


class TimeoutsRestored(Effect):
    previous: Timeouts

    def slot(self) -> Slot:
        return ("timeouts", None)

    def record(self, state: State) -> None:
        state.timeouts = None

    def simulate(self, obs: HostObservation) -> None:
        obs.timeouts = self.previous


class FileWritten(Effect):
    write_ahead = True
    path: str
    digest: str

    def slot(self) -> Slot:
        return ("file", self.path)

    def record(self, state: State) -> None:
        state.files[self.path] = OwnedFile(self.path, self.digest)

    def simulate(self, obs: HostObservation) -> None:
        obs.files[self.path] = self.digest


class FileRemoved(Effect):
    path: str

    def slot(self) -> Slot:
        return ("file", self.path)

    def record(self, state: State) -> None:
        state.files.pop(self.path, None)

    def simulate(self, obs: HostObservation) -> None:
        obs.files.pop(self.path, None)


class KeepalivedStarted(Effect):
    write_ahead = True
    config_file: str
    pid_file: str
    vrrp_pid_file: str
    addresses: tuple[tuple[str, str], ...] = ()

    def slot(self) -> Slot:
        return ("keepalived", None)

    def record(self, state: State) -> None:
        state.keepalived = OwnedKeepalived(self.config_file, self.pid_file, self.vrrp_pid_file,
                                           self.addresses)

    def simulate(self, obs: HostObservation) -> None:
        obs.keepalived = KeepalivedSeen(0, self.config_file)


class KeepalivedAddresses(Effect):
    """The VIPs of our running keepalived's config changed (a reload, which HUPs it), or a
    record from before version 5 learns them: only the record changes."""

    addresses: tuple[tuple[str, str], ...]

    def slot(self) -> Slot:
        return ("keepalived", None)

    def record(self, state: State) -> None:
        owned = state.keepalived
        if owned is not None:
            state.keepalived = OwnedKeepalived(owned.config_file, owned.pid_file,
                                               owned.vrrp_pid_file, self.addresses)

    def simulate(self, obs: HostObservation) -> None:
        pass


class KeepalivedStopped(Effect):
    """Recorded once keepalived has exited (its VIPs are gone with it)."""

    def slot(self) -> Slot:
        return ("keepalived", None)

    def record(self, state: State) -> None:
        state.keepalived = None

    def simulate(self, obs: HostObservation) -> None:
        obs.keepalived = None


class SyncDaemonStarted(Effect):
    write_ahead = True
    daemon: SyncDaemon

    def slot(self) -> Slot:
        return ("sync", self.daemon.state)

    def record(self, state: State) -> None:
        state.sync_daemons[self.daemon.state] = OwnedSyncDaemon(self.daemon)

    def simulate(self, obs: HostObservation) -> None:
        obs.sync_daemons[self.daemon.state] = self.daemon


class SyncDaemonStopped(Effect):
    state: str  # master | backup

    def slot(self) -> Slot:
        return ("sync", self.state)

    def record(self, state: State) -> None:
        state.sync_daemons.pop(self.state, None)

    def simulate(self, obs: HostObservation) -> None:
        obs.sync_daemons.pop(self.state, None)


class NftTableCreated(Effect):
    write_ahead = True
    family: str

    def slot(self) -> Slot:
        return ("nft", self.family)

    def record(self, state: State) -> None:
        state.nft_tables[self.family] = OwnedNftTable(self.family)

    def simulate(self, obs: HostObservation) -> None:
        obs.nft.setdefault(self.family, NftTable(self.family, ()))


class NftTableDeleted(Effect):
    family: str

    def slot(self) -> Slot:
        return ("nft", self.family)

    def record(self, state: State) -> None:
        state.nft_tables.pop(self.family, None)

    def simulate(self, obs: HostObservation) -> None:
        obs.nft.pop(self.family, None)


class LinkCreated(Effect):
    write_ahead = True
    name: str

    def slot(self) -> Slot:
        return ("link", self.name)

    def record(self, state: State) -> None:
        state.links[self.name] = OwnedLink(self.name, True)

    def simulate(self, obs: HostObservation) -> None:
        obs.links[self.name] = Link(self.name, False)


class LinkUp(Effect):
    """A device that was down, brought up; one we created stays on record as created."""

    write_ahead = True
    name: str

    def slot(self) -> Slot:
        return ("link", self.name)

    def record(self, state: State) -> None:
        if self.name not in state.links:
            state.links[self.name] = OwnedLink(self.name, False)

    def simulate(self, obs: HostObservation) -> None:
        link = obs.links.get(self.name)
        obs.links[self.name] = Link(self.name, True, link.mac if link else None)


class LinkReleased(Effect):
    """Deleted (one we created) or put back down (one that was there)."""

    name: str
    deleted: bool = True

    def slot(self) -> Slot:
        return ("link", self.name)

    def record(self, state: State) -> None:
        state.links.pop(self.name, None)

    def simulate(self, obs: HostObservation) -> None:
        if self.deleted:
            obs.links.pop(self.name, None)
            obs.addresses = [a for a in obs.addresses if a.device != self.name]
        elif self.name in obs.links:
            obs.links[self.name] = Link(self.name, False, obs.links[self.name].mac)


class FouAdded(Effect):
    write_ahead = True
    port: int
    family: int = 4

    def slot(self) -> Slot:
        return ("fou", (self.port, self.family))

    def record(self, state: State) -> None:
        state.fous[(self.port, self.family)] = OwnedFou(self.port, self.family)

    def simulate(self, obs: HostObservation) -> None:
        obs.tunnels.fou.add(FouPort(self.port, self.family))


class FouRemoved(Effect):
    port: int
    family: int = 4

    def slot(self) -> Slot:
        return ("fou", (self.port, self.family))

    def record(self, state: State) -> None:
        state.fous.pop((self.port, self.family), None)

    def simulate(self, obs: HostObservation) -> None:
        obs.tunnels.fou.discard(FouPort(self.port, self.family))


class BirdStarted(Effect):
    write_ahead = True
    config_file: str
    pid_file: str
    socket: str

    def slot(self) -> Slot:
        return ("bird", None)

    def record(self, state: State) -> None:
        state.bird = OwnedBird(self.config_file, self.pid_file, self.socket)

    def simulate(self, obs: HostObservation) -> None:
        obs.bird = BirdSeen(0, self.config_file)


class BirdStopped(Effect):
    """Recorded once BIRD has exited (its sessions closed with a Cease)."""

    def slot(self) -> Slot:
        return ("bird", None)

    def record(self, state: State) -> None:
        state.bird = None

    def simulate(self, obs: HostObservation) -> None:
        obs.bird = None


EFFECTS: tuple[type[Effect], ...] = (
    AddressAdded, AddressRemoved, Announced, RouteSet, RouteReleased, ServiceCreated,
    ServiceDeleted, SysctlChanged, SysctlRestored, TimeoutsSet, TimeoutsRestored,
    FileWritten, FileRemoved, KeepalivedStarted, KeepalivedAddresses, KeepalivedStopped,
    SyncDaemonStarted, SyncDaemonStopped, NftTableCreated, NftTableDeleted, LinkCreated,
    LinkUp, LinkReleased, FouAdded, FouRemoved, BirdStarted, BirdStopped)


# --- undo: what stop (and a start that no longer wants something) does with a record ------

def route_argv(family: int) -> tuple[str, ...]:
    """`ip route` for IPv4 (the scripts' form), `ip -6 route` for IPv6: a device-only
    route has no address to tell the family by."""
    return ("ip", "route") if family == 4 else ("ip", "-6", "route")


def vip_cidr(vip: IPAddress) -> str:
    return f"{vip}/{vip.max_prefixlen}"


def add_vip_argv(vip: IPAddress, device: str) -> tuple[str, ...]:
    """`ip addr add VIP/32 brd VIP dev DEV`: the scripts' form, the prefix made explicit.
    An IPv6 VIP is added with duplicate address detection: on the director the kernel
    announces it (an unsolicited neighbour advertisement, with ndisc_notify) only once
    DAD is over, never for a `nodad` address (seen on Debian's 6.1); on lo and on a
    tunnel device there is no DAD."""
    if vip.version == 4:
        return ("ip", "addr", "add", vip_cidr(vip), "brd", str(vip), "dev", device)
    return ("ip", "addr", "add", vip_cidr(vip), "dev", device)


def plan_unwanted_addresses(plan: Plan, obs: HostObservation, state: State,
                            wanted: set[tuple[str, str]]) -> None:
    """Remove the addresses our state file lists but `wanted` (device, cidr) does not."""
    for key, owned in state.addresses.items():
        if key not in wanted:
            undo_address(plan, obs, owned, "address no longer configured")


def undo_address(plan: Plan, obs: HostObservation, owned: OwnedAddress, reason: str) -> None:
    """Delete an address we added; if it is gone already (or its device is), drop the
    record instead: an address someone else adds later must never be taken for ours."""
    if obs.has_address(owned.device, owned.ip):
        plan.add(("ip", "addr", "del", owned.cidr, "dev", owned.device), reason,
                 AddressRemoved(owned.device, owned.cidr))
        return
    if obs.links and owned.device not in obs.links:
        plan.notes.append(f"{owned.device} is gone: so is {owned.cidr}, which start had "
                          "added there (record dropped)")
    plan.forget.append(AddressRemoved(owned.device, owned.cidr))


def undo_service(plan: Plan, obs: HostObservation, owned: OwnedService) -> None:
    if owned.key in obs.ipvs:
        plan.add(("ipvsadm", "-D", *owned.key.args()), "virtual service",
                 ServiceDeleted(owned.key))
    else:
        plan.forget.append(ServiceDeleted(owned.key))


def undo_route(plan: Plan, obs: HostObservation, owned: OwnedRoute) -> None:
    """Put back the default route from before start, as it was, in one `replace` (never a
    moment without a default route, never "File exists"); a route changed by hand since
    start is left alone. Never fails a stop: a restore the kernel refuses is a warning,
    our route then stays (the host keeps a default route) and so does the record, for the
    next stop to try again."""
    ip = route_argv(owned.family)
    routes = [r for r in obs.routes if r.family == owned.family]
    ours_present = owned.ours is not None and any(r.same(owned.ours) for r in routes)
    previous = owned.previous
    if previous is not None and any(r.same(previous) for r in routes):
        previous = None  # already back (or never replaced)
    if previous is not None and previous.dev is not None and obs.links and (
            previous.dev not in obs.links):
        plan.notes.append(f"the default route from before start ({' '.join(previous.args())})"
                          f" cannot come back: {previous.dev} is gone")
        previous = None
    if ours_present and owned.ours is not None:
        if previous is not None:
            plan.add((*ip, "replace", *previous.args()), "put back the default route from "
                     "before start (if the kernel refuses it, the one start set stays until "
                     "the next stop)", RouteReleased(owned.ours, previous), optional=True)
        else:
            plan.add((*ip, "del", *owned.ours.args()), "the default route start set",
                     RouteReleased(owned.ours))
        return
    if previous is not None and not routes:
        plan.add((*ip, "add", *previous.args()), "the default route from before start "
                 "(there is none now)", RouteReleased(None, previous), optional=True)
        return
    if owned.ours is not None and not ours_present:
        plan.notes.append(f"the default route start set ({' '.join(owned.ours.args())}) was "
                          "changed since: left as it is")
    plan.forget.append(RouteReleased(owned.ours))


def undo_sysctl(plan: Plan, obs: HostObservation, owned: OwnedSysctl) -> None:
    have = obs.sysctls.get(owned.key)
    if have is None:
        device = interface_of_sysctl(owned.key)
        if device is not None and obs.links and device not in obs.links:
            plan.notes.append(f"{device} is gone: {owned.key} went with it (record dropped)")
            plan.forget.append(SysctlRestored(owned.key, owned.previous))
            return
    if have == owned.previous:
        plan.forget.append(SysctlRestored(owned.key, owned.previous))  # already back
    elif have is not None and have != owned.value:
        plan.notes.append(f"{owned.key} was changed to {have} since start: not restored to "
                          f"{owned.previous}")
        plan.forget.append(SysctlRestored(owned.key, owned.previous))
    else:
        plan.add(("sysctl", "-w", f"{owned.key}={owned.previous}"),
                 "restore the value from before start", SysctlRestored(owned.key,
                                                                      owned.previous))


def undo_timeouts(plan: Plan, obs: HostObservation, owned: OwnedTimeouts) -> None:
    seen = obs.timeouts
    if seen is not None and seen == owned.previous:
        plan.forget.append(TimeoutsRestored(owned.previous))  # already back
        return
    if seen is not None and owned.value is not None and not owned.value.in_effect(seen):
        plan.notes.append("the IPVS timeouts were changed since start: not restored to "
                          f"{' '.join(owned.previous.args())}")
        plan.forget.append(TimeoutsRestored(owned.previous))
        return
    plan.add(("ipvsadm", "--set", *owned.previous.args()),
             "the connection timeouts from before start", TimeoutsRestored(owned.previous))


KEEPALIVED_STOP_SECONDS = 15.0


def undo_keepalived(plan: Plan, obs: HostObservation, owned: OwnedKeepalived) -> None:
    """SIGTERM, then wait until it has gone: keepalived removes its VIPs on the way out
    and the peer takes them over at once. A keepalived already gone (killed, crashed)
    left its VIPs on the interface: those are removed; one we did not start is never found
    here (own pid file, own config file)."""
    seen = obs.keepalived
    if seen is None or seen.config_file != owned.config_file or seen.pid <= 0:
        # Gone without its SIGTERM: its VIPs are still here while the peer holds them too.
        for device, cidr in owned.addresses:
            if obs.has_address(device, ipaddress.ip_interface(cidr).ip):
                plan.add(("ip", "addr", "del", cidr, "dev", device),
                         "a VIP keepalived left behind when it died")
        plan.forget.append(KeepalivedStopped())
        return
    plan.add(("kill", "-TERM", str(seen.pid)), "keepalived: its VIPs move to the peer",
             KeepalivedStopped(), settle=Settle(f"keepalived (pid {seen.pid}) has exited",
                                                gone_pid=seen.pid,
                                                seconds=KEEPALIVED_STOP_SECONDS))


def undo_sync_daemon(plan: Plan, obs: HostObservation, owned: OwnedSyncDaemon) -> None:
    ours = owned.daemon
    seen = obs.sync_daemons.get(ours.state)
    if seen == ours:
        plan.add(("ipvsadm", "--stop-daemon", ours.state), f"the IPVS {ours.describe()}",
                 SyncDaemonStopped(ours.state))
        return
    if seen is not None:
        plan.notes.append(f"the IPVS {ours.state} sync daemon was restarted by someone else "
                          f"since start ({seen.describe()}): left running")
    plan.forget.append(SyncDaemonStopped(ours.state))


def undo_file(plan: Plan, obs: HostObservation, owned: OwnedFile) -> None:
    have = obs.files.get(owned.path)
    if have == owned.digest:
        plan.add(("rm", "-f", owned.path), "a file start wrote", FileRemoved(owned.path))
        return
    if have is not None:
        plan.notes.append(f"{owned.path} was changed since start: left in place")
    plan.forget.append(FileRemoved(owned.path))


def undo_nft_table(plan: Plan, obs: HostObservation, owned: OwnedNftTable) -> None:
    """Delete our table whole; one that is gone already leaves only its record."""
    if owned.family in obs.nft:
        plan.add(delete_table_argv(owned.family), "the marks of the fwmark services",
                 NftTableDeleted(owned.family))
    else:
        plan.forget.append(NftTableDeleted(owned.family))


def undo_link(plan: Plan, obs: HostObservation, owned: OwnedLink) -> None:
    """Delete a device we created; put one that was down back down. A device gone
    already leaves only its record."""
    link = obs.links.get(owned.name)
    if link is None:
        plan.forget.append(LinkReleased(owned.name, owned.created))
    elif owned.created:
        plan.add(("ip", "link", "del", "dev", owned.name), "the tunnel device start created",
                 LinkReleased(owned.name, True))
    elif link.up:
        plan.add(("ip", "link", "set", "dev", owned.name, "down"), "the tunnel device was "
                 "down before start", LinkReleased(owned.name, False))
    else:
        plan.forget.append(LinkReleased(owned.name, False))


def undo_fou(plan: Plan, obs: HostObservation, owned: OwnedFou) -> None:
    if owned.fou in obs.tunnels.fou:
        plan.add(("ip", "fou", "del", *owned.fou.args()[:2],
                  *(("-6",) if owned.family == 6 else ())), "the GUE port start added",
                 FouRemoved(owned.port, owned.family))
    else:
        plan.forget.append(FouRemoved(owned.port, owned.family))


def undo_tunnels(plan: Plan, obs: HostObservation, state: State,
                 keep_ports: frozenset[FouPort] = frozenset(),
                 keep_links: frozenset[str] = frozenset()) -> None:
    """GUE ports, then tunnel devices, but those a start still wants."""
    for fou in state.fous.values():
        if fou.fou not in keep_ports:
            undo_fou(plan, obs, fou)
    for link in state.links.values():
        if link.name not in keep_links:
            undo_link(plan, obs, link)


def plan_default_route(plan: Plan, gateway: IPAddress | None, obs: HostObservation,
                       state: State) -> None:
    """The default route via the gateway (the director's, or a NAT real server's via the
    director). An existing default route is replaced in place,
    at its own metric (a route beside it would leave two), and kept on record with all
    its attributes, so that stop puts back exactly that route."""
    owned = state.route
    if owned is not None and (gateway is None or gateway.version != owned.family):
        undo_route(plan, obs, owned)  # the gateway left the config: as stop would
        owned = None
    if gateway is None:
        return
    family = gateway.version
    routes = sorted((r for r in obs.routes if r.family == family), key=lambda r: r.metric)
    if any(r.via == gateway for r in routes):
        return
    ip = route_argv(family)
    if not routes:
        plan.add((*ip, "add", "default", "via", str(gateway)), "default route",
                 RouteSet(family, Route(gateway, None, family=family)))
        return
    old = routes[0]  # the lowest metric: the route in use
    ours = Route(gateway, None, old.metric, family=family)
    is_ours = owned is not None and owned.ours is not None and old.same(owned.ours)
    plan.add((*ip, "replace", *ours.args()),
             f"default route (was {' '.join(old.args())})",
             RouteSet(family, ours, None if is_ours else old))


BIRD_STOP_SECONDS = 15.0
WITHDRAW_SECONDS = 10.0
# The direct protocol of the BIRD config bgp.py writes: the VIPs on lo, as BIRD sees them.
BIRD_VIPS_PROTOCOL = "lvs_vips"


def withdrawn_settle(owned: OwnedBird, cidrs: list[str]) -> Settle:
    """After the VIPs left lo: wait until BIRD's direct protocol no longer has them. BIRD
    2.0 passes a route change to every channel as it happens, so by then each session
    has queued the withdrawal (and sends it at once). Bounded, and only a warning when
    time is up: the VIPs are off lo already, and the sessions close when BIRD stops."""
    return Settle("BIRD has withdrawn the VIPs from its BGP sessions",
                  seconds=WITHDRAW_SECONDS, optional=True, absent=tuple(cidrs),
                  poll=("birdc", "-s", owned.socket, "show", "route", "protocol",
                        BIRD_VIPS_PROTOCOL))


def withdraw_vips(plan: Plan, obs: HostObservation, state: State) -> set[tuple[str, str]]:
    """[bgp] stop, first of all: the VIPs leave lo, and BIRD withdraws them, so that the
    routers move every flow to the other directors before anything is torn down here.
    Returns the addresses handled."""
    owned_bird = state.bird
    if owned_bird is None:
        return set()
    keys = {key for key, owned in state.addresses.items()
            if owned.device == "lo" and owned.purpose == "vip"}
    removing = []
    for key in keys:
        owned = state.addresses[key]
        if obs.has_address(owned.device, owned.ip):
            removing.append(owned.cidr)
        undo_address(plan, obs, owned, "VIP: withdrawn from the BGP neighbors first")
    if removing and obs.bird is not None and plan.steps:
        last = plan.steps[-1]
        plan.steps[-1] = replace(last, settle=withdrawn_settle(owned_bird, removing))
    undo_bird(plan, obs, owned_bird)
    return keys


def undo_bird(plan: Plan, obs: HostObservation, owned: OwnedBird) -> None:
    """SIGTERM, then wait until it has gone (it closes its sessions with a Cease). A BIRD
    already gone leaves only its record; one we did not start is never found here."""
    seen = obs.bird
    if seen is None or seen.config_file != owned.config_file or seen.pid <= 0:
        plan.forget.append(BirdStopped())
        return
    plan.add(("kill", "-TERM", str(seen.pid)), "BIRD: its BGP sessions close", BirdStopped(),
             settle=Settle(f"BIRD (pid {seen.pid}) has exited", gone_pid=seen.pid,
                           seconds=BIRD_STOP_SECONDS))


def plan_undo(plan: Plan, obs: HostObservation, state: State) -> None:
    """Undo everything the state file lists, in the order that keeps the host reachable:
    BGP's VIPs on lo and BIRD first (the routers move the flows to the other directors),
    keepalived (the peer takes the VIPs at once), the sync daemons, services, the
    nftables marks of fwmark services, VIPs, the default route, the DIP (the route may
    need it), GUE ports, tunnel devices, sysctls, timeouts, files."""
    withdrawn = withdraw_vips(plan, obs, state)
    if state.keepalived is not None:
        undo_keepalived(plan, obs, state.keepalived)
    for daemon in state.sync_daemons.values():
        undo_sync_daemon(plan, obs, daemon)
    for service in state.services.values():
        undo_service(plan, obs, service)
    for table in state.nft_tables.values():
        undo_nft_table(plan, obs, table)
    addresses = [owned for key, owned in state.addresses.items() if key not in withdrawn]
    for owned in addresses:
        if owned.purpose != "dip":
            undo_address(plan, obs, owned, "VIP")
    if state.route is not None:
        undo_route(plan, obs, state.route)
    for owned in addresses:
        if owned.purpose == "dip":
            undo_address(plan, obs, owned, "the DIP start added")
    undo_tunnels(plan, obs, state)
    for sysctl in state.sysctls.values():
        undo_sysctl(plan, obs, sysctl)
    if state.timeouts is not None:
        undo_timeouts(plan, obs, state.timeouts)
    for file in state.files.values():
        undo_file(plan, obs, file)
