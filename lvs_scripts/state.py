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
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import Busy, StateError
from .plan import (
    AddressAdded,
    AddressRemoved,
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

DEFAULT_STATE_DIR = "/run/lvs-scripts"
DEFAULT_LOCK_DIR = "/var/lock/subsys"
STATE_VERSION = 1


@dataclass
class State:
    addresses: list[list[str]] = field(default_factory=list)  # [device, cidr] we added
    route: dict[str, str | None] | None = None  # {"via", "previous_via", "previous_dev"}
    services: list[str] = field(default_factory=list)  # str(ServiceKey) of services we created
    sysctls: dict[str, int] = field(default_factory=dict)  # key -> value before we changed it
    timeouts: list[int] | None = None  # ipvsadm timeouts (tcp tcpfin udp) before our --set

    def owns_address(self, device: str, cidr: str) -> bool:
        return [device, cidr] in self.addresses

    def owns_service(self, key: object) -> bool:
        return str(key) in self.services

    def apply(self, effect: Effect) -> None:
        """Record that a step succeeded."""
        if isinstance(effect, (AddressAdded, AddressRemoved, ServiceCreated, ServiceDeleted)):
            self._apply_owned(effect)
        elif isinstance(effect, RouteSet):
            # A route we set ourselves is not a "previous" route to restore.
            if self.route is not None:
                effect = RouteSet(effect.via, self.route.get("previous_via"),
                                  self.route.get("previous_dev"))
            self.route = {"via": effect.via, "previous_via": effect.previous_via,
                          "previous_dev": effect.previous_dev}
        elif isinstance(effect, (RouteRemoved, RouteRestored)):
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
        return json.dumps({"version": STATE_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str) -> State:
        try:
            data: Any = json.loads(text)
            if not isinstance(data, dict) or data.pop("version", None) != STATE_VERSION:
                raise ValueError("unknown layout")
            state = cls(**data)
            if not (isinstance(state.addresses, list) and isinstance(state.services, list)
                    and isinstance(state.sysctls, dict)):
                raise ValueError("wrong types")
            return state
        except (ValueError, TypeError) as err:
            raise StateError(
                f"{path}: state file is corrupt ({err}). It records what start changed so that "
                "stop can undo it. Inspect it, undo by hand what it lists if needed, then "
                "delete it; the next start observes the host again.") from None


@dataclass(frozen=True)
class Paths:
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
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
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
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        return State.from_json(handle.read(1 << 20), paths.state_file)


def save_state(paths: Paths, state: State) -> None:
    """Atomically replace the state file; remove it when there is nothing to remember."""
    _ensure_dir(paths.state_dir)
    if state.empty():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.state_file)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{paths.name}.", dir=paths.state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(state.to_json())
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
    os.close(_open_nofollow(paths.lock_file, os.O_WRONLY | os.O_CREAT))


def remove_lock(paths: Paths) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.lock_file)


@contextlib.contextmanager
def exclusive(paths: Paths, wait_seconds: float) -> Iterator[None]:
    """Hold an exclusive flock for the whole action; a second run waits, then gives up."""
    _ensure_dir(paths.state_dir)
    fd = _open_nofollow(paths.run_lock, os.O_RDWR | os.O_CREAT)
    try:
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
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
