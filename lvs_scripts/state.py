"""What this tool has done to a host, so that stop undoes exactly that and no more.

The state file lives in a root-owned directory (default /run/lvs-scripts: the kernel
forgets addresses, routes, IPVS rules and sysctls at reboot, and so do we). It is
written atomically (temp file + rename). The lock file is the SysV `subsys` marker.
Runs of the same tool serialise on an flock in the state directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from .errors import Busy, Interrupted, StateError
from .plan import (
    AddressAdded,
    AddressRemoved,
    Announced,
    Effect,
    RouteRemoved,
    RouteRestored,
    RouteSet,
    ServiceCreated,
    ServiceDeleted,
    SysctlChanged,
    SysctlRestored,
    TimeoutsRestored,
    TimeoutsSet,
)
from .record import Record, as_dict, field

DEFAULT_STATE_DIR = "/run/lvs-scripts"
DEFAULT_LOCK_DIR = "/var/lock/subsys"
STATE_VERSION = 1


class State(Record, frozen=False):
    addresses: list[list[str]] = field(default_factory=list)  # [device, cidr] we added
    route: dict[str, str | None] | None = None  # {"via", "previous_via", "previous_dev"}
    services: list[str] = field(default_factory=list)  # str(ServiceKey) of services we created
    sysctls: dict[str, int] = field(default_factory=dict)  # key -> value before we changed it
    timeouts: list[int] | None = None  # ipvsadm timeouts (tcp tcpfin udp) before our --set
    # VIPs we added whose arping announcement has run since; an added VIP missing here is
    # announced by the next start or reload (the one that added it failed before arping).
    announced: list[str] = field(default_factory=list)

    def owns_address(self, device: str, cidr: str) -> bool:
        return [device, cidr] in self.addresses

    def owns_service(self, key: object) -> bool:
        return str(key) in self.services

    def unannounced(self, device: str, cidr: str) -> bool:
        """Did we add this address and not announce it yet?"""
        return self.owns_address(device, cidr) and _address_of(cidr) not in self.announced

    def apply(self, effect: Effect) -> None:
        """Record that a step succeeded."""
        if isinstance(effect, (AddressAdded, AddressRemoved, ServiceCreated, ServiceDeleted)):
            self._apply_owned(effect)
        elif isinstance(effect, Announced):
            if effect.vip not in self.announced:
                self.announced.append(effect.vip)
        elif isinstance(effect, RouteSet):
            # A route we set ourselves is not a "previous" route to restore.
            if self.route is not None:
                effect = RouteSet(effect.via, self.route.get("previous_via"),
                                  self.route.get("previous_dev"))
            self.route = {"via": effect.via, "previous_via": effect.previous_via,
                          "previous_dev": effect.previous_dev}
        elif isinstance(effect, RouteRemoved):
            # Our route is gone; the one it replaced stays on record until it is back.
            previous = self.route.get("previous_via") if self.route else None
            self.route = None if previous is None else {
                "via": None, "previous_via": previous,
                "previous_dev": self.route.get("previous_dev") if self.route else None}
        elif isinstance(effect, RouteRestored):
            self.route = None
        # The values from before our first change are kept, never ones we set ourselves.
        elif isinstance(effect, TimeoutsSet):
            if self.timeouts is None:
                self.timeouts = list(effect.previous)
        elif isinstance(effect, TimeoutsRestored):
            self.timeouts = None
        elif isinstance(effect, SysctlChanged):
            self.sysctls.setdefault(effect.key, effect.previous)
        elif isinstance(effect, SysctlRestored):
            self.sysctls.pop(effect.key, None)

    def _apply_owned(self, effect: AddressAdded | AddressRemoved | ServiceCreated
                     | ServiceDeleted) -> None:
        """Things we own: a list each, no duplicates."""
        if isinstance(effect, (AddressAdded, AddressRemoved)):
            items: list[Any] = self.addresses
            item: Any = [effect.device, effect.cidr]
            # a VIP added (again) is not announced yet; a removed one needs no announcement
            with contextlib.suppress(ValueError):
                self.announced.remove(_address_of(effect.cidr))
        else:
            items, item = self.services, effect.key
        if isinstance(effect, (AddressAdded, ServiceCreated)):
            if item not in items:
                items.append(item)
        else:
            with contextlib.suppress(ValueError):
                items.remove(item)

    def empty(self) -> bool:
        return not (self.addresses or self.route or self.services or self.sysctls
                    or self.timeouts)

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, **as_dict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str) -> State:
        try:
            data: Any = json.loads(text)
            if not isinstance(data, dict) or data.pop("version", None) != STATE_VERSION:
                raise ValueError("unknown layout")
            state = cls(**data)
            state._check()
            return state
        except (ValueError, TypeError) as err:
            raise cls.corrupt(path, str(err)) from None

    @staticmethod
    def corrupt(path: str, why: str) -> StateError:
        return StateError(
            f"{path}: state file is corrupt ({why}). It records what start changed so that "
            "stop can undo it. Inspect it, undo by hand what it lists if needed, then "
            "delete it; the next start observes the host again.")

    def _check(self) -> None:
        """Every entry of the right shape: the file is read as root and drives commands."""
        def fail(what: str, value: object) -> ValueError:
            return ValueError(f"{what}: {value!r:.60}")

        if not isinstance(self.addresses, list):
            raise fail("addresses", self.addresses)
        for entry in self.addresses:
            if not (isinstance(entry, list) and len(entry) == 2 and _NAME.fullmatch(
                    str(entry[0])) and isinstance(entry[1], str) and _is_interface(entry[1])):
                raise fail("address entry", entry)
        if not (isinstance(self.services, list) and all(
                isinstance(key, str) and _SERVICE.fullmatch(key) for key in self.services)):
            raise fail("services", self.services)
        if not (isinstance(self.announced, list) and all(
                isinstance(vip, str) and _is_address(vip) for vip in self.announced)):
            raise fail("announced", self.announced)
        if not (isinstance(self.sysctls, dict) and all(
                isinstance(k, str) and _SYSCTL.fullmatch(k) and type(v) is int and 0 <= v <= 8
                for k, v in self.sysctls.items())):
            raise fail("sysctls", self.sysctls)
        if self.timeouts is not None and not (isinstance(self.timeouts, list) and len(
                self.timeouts) == 3 and all(type(t) is int and t >= 0 for t in self.timeouts)):
            raise fail("timeouts", self.timeouts)
        if self.route is not None:
            if not (isinstance(self.route, dict) and set(self.route) == {
                    "via", "previous_via", "previous_dev"}):
                raise fail("route", self.route)
            for key in ("via", "previous_via"):
                if self.route[key] is not None and not _is_address(self.route[key]):
                    raise fail(f"route.{key}", self.route[key])
            dev = self.route["previous_dev"]
            if dev is not None and not (isinstance(dev, str) and _NAME.fullmatch(dev)):
                raise fail("route.previous_dev", dev)


_NAME = re.compile(r"[A-Za-z0-9._-]{1,15}")
_SERVICE = re.compile(r"(tcp|udp|sctp) \S+|fwmark \d+( \(IPv6\))?")
_SYSCTL = re.compile(r"net[./]ipv4[./]conf[./][A-Za-z0-9._-]{1,15}[./]arp_(ignore|announce)")


def _address_of(cidr: str) -> str:
    return cidr.split("/", 1)[0]


def _is_interface(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return "/" in text


def _is_address(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


class Paths(Record):
    """Where one tool keeps its state, lock and run lock. Overridable for labs where
    several "hosts" share one file system."""

    name: str  # lvs-director | lvs-realserver
    state_dir: str = DEFAULT_STATE_DIR
    lock_dir: str = DEFAULT_LOCK_DIR

    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, f"{self.name}.json")

    @property
    def lock_file(self) -> str:
        return os.path.join(self.lock_dir, self.name)

    @property
    def run_lock(self) -> str:
        return os.path.join(self.state_dir, f"{self.name}.lock")


def _open_nofollow(path: str, flags: int, mode: int = 0o644) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StateError(f"{path}: is a symbolic link; refusing to follow it") from None
        raise StateError(f"{path}: {err.strerror}") from None


def _ensure_dir(path: str) -> None:
    """Create a missing directory as 0755 whatever the umask; an existing one is left as
    its owner made it."""
    try:
        if not os.path.lexists(path):
            os.makedirs(path, mode=0o755, exist_ok=True)
            os.chmod(path, 0o755)  # noqa: S103 - world-readable on purpose: status for all
    except OSError as err:
        raise StateError(f"{path}: cannot create directory: {err.strerror}") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StateError(f"{path}: is not a directory")


def load_state(paths: Paths) -> State:
    try:
        fd = _open_nofollow(paths.state_file, os.O_RDONLY)
    except StateError:
        if not os.path.lexists(paths.state_file):
            return State()
        raise
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(1 << 20)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise State.corrupt(paths.state_file, "not UTF-8 text") from None
    return State.from_json(text, paths.state_file)


def save_state(paths: Paths, state: State) -> None:
    """Atomically replace the state file; remove it when there is nothing to remember."""
    _ensure_dir(paths.state_dir)
    try:
        if state.empty():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.state_file)
            return
        _write_atomically(paths, state.to_json())
    except OSError as err:
        raise StateError(f"{paths.state_file}: cannot write the state file: {err.strerror}. "
                         "What was applied so far is listed below; the file may still show "
                         "the state before it") from None


def _write_atomically(paths: Paths, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{paths.name}.", dir=paths.state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(tmp, paths.state_file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def preflight(paths: Paths) -> None:
    """Before a plan changes the host: the directories exist and nothing at the state or
    lock path is a symlink, so a planted link fails the action before it starts, not after."""
    for directory in (paths.state_dir, paths.lock_dir):
        _ensure_dir(directory)
        if not os.access(directory, os.W_OK):
            raise StateError(f"{directory}: not writable")
    for path in (paths.state_file, paths.lock_file):
        if os.path.islink(path):
            raise StateError(f"{path}: is a symbolic link; refusing to follow it (remove it)")


def lock_exists(paths: Paths) -> bool:
    return os.path.lexists(paths.lock_file)


def write_lock(paths: Paths) -> None:
    _ensure_dir(paths.lock_dir)
    fd = _open_nofollow(paths.lock_file, os.O_WRONLY | os.O_CREAT)
    try:
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)


def remove_lock(paths: Paths) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.lock_file)


@contextlib.contextmanager
def exclusive(paths: Paths, wait_seconds: float,
              stop_requested: threading.Event | None = None) -> Iterator[None]:
    """Hold an exclusive flock for the whole action; a second run waits, then gives up.
    A signal (stop_requested) ends the wait at once."""
    _ensure_dir(paths.state_dir)
    fd = _open_nofollow(paths.run_lock, os.O_RDWR | os.O_CREAT)
    stop = stop_requested or threading.Event()
    try:
        os.fchmod(fd, 0o644)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise Busy(f"another {paths.name} is running (pid {holder}); "
                               f"gave up after {wait_seconds:g} s ({paths.run_lock})") from None
                if stop.wait(0.05):
                    raise Interrupted(f"interrupted while waiting for {paths.run_lock}"
                                      ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
