"""Where a tool keeps its files, and who may have written them: the state directory, the
run lock (an flock that serialises runs of one tool) and the SysV `subsys` lock file.

The state file is read as root and drives commands (it names addresses to delete), so
it is trusted only if root (or whoever runs us) owns it and its directory, and nobody
else can write to either; a symbolic link is never followed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator

from .errors import Busy, Interrupted, StateError
from .record import Record

DEFAULT_STATE_DIR = "/run/lvs-scripts"
DEFAULT_LOCK_DIR = "/var/lock/subsys"


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
    def health_file(self) -> str:
        """Health and admin state of the real servers (lvs-director watch, disable)."""
        return os.path.join(self.state_dir, f"{self.name}.health.json")

    @property
    def config_cache(self) -> str:
        """The config file as last validated, compiled (config_cache.py)."""
        return os.path.join(self.state_dir, f"{self.name}.config.cache")

    @property
    def watch_pid(self) -> str:
        """A running watcher's pid (watch.py)."""
        return os.path.join(self.state_dir, f"{self.name}.watch.pid")

    @property
    def watch_config(self) -> str:
        """The absolute path of the config file the running watcher reads."""
        return os.path.join(self.state_dir, f"{self.name}.watch-config")

    @property
    def run_lock(self) -> str:
        return os.path.join(self.state_dir, f"{self.name}.lock")


def open_nofollow(path: str, flags: int, mode: int = 0o644) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StateError(f"{path}: is a symbolic link; refusing to follow it") from None
        raise StateError(f"{path}: {err.strerror}") from None


def trusted_owners() -> frozenset[int]:
    """Root, and whoever runs us (a test, or status run by a user over root's files)."""
    return frozenset({0, os.geteuid()})


def check_trusted(path: str, info: os.stat_result) -> None:
    """Refuse a state directory or file another user could have written: its content
    decides what root deletes."""
    if info.st_uid not in trusted_owners():
        raise StateError(f"{path}: owned by uid {info.st_uid}, not by root: refusing to trust "
                         "it (another user could have written it); use a state directory "
                         "that only root can write")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateError(f"{path}: writable by other users (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}): refusing to trust it; use a "
                         "state directory that only root can write (e.g. chmod 0755)")


def ensure_dir(path: str, trusted: bool = False) -> None:
    """Create a missing directory as 0755 whatever the umask; an existing one is left as
    its owner made it. trusted: it must also pass check_trusted (the state directory)."""
    try:
        if not os.path.lexists(path):
            os.makedirs(path, mode=0o755, exist_ok=True)
            os.chmod(path, 0o755)  # noqa: S103 - world-readable on purpose: status for all
    except OSError as err:
        raise StateError(f"{path}: cannot create directory: {err.strerror}") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StateError(f"{path}: is not a directory")
    if trusted:
        check_trusted(path, info)


def check_state_dir(paths: Paths) -> None:
    """An existing state directory must be trusted before its files are read."""
    try:
        info = os.lstat(paths.state_dir)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StateError(f"{paths.state_dir}: is not a directory")
    check_trusted(paths.state_dir, info)


def check_state_file(paths: Paths) -> None:
    """An existing state file must be trusted too (load_state checks the file it opens;
    this says so before the run lock is even taken, so a refused run changes nothing)."""
    try:
        info = os.lstat(paths.state_file)
    except FileNotFoundError:
        return
    if not stat.S_ISLNK(info.st_mode):  # a link is refused where the file is opened
        check_trusted(paths.state_file, info)


def preflight(paths: Paths) -> None:
    """Before a plan changes the host: the directories exist, the state directory is
    trusted, and nothing at the state or lock path is a symlink, so a planted link fails
    the action before it starts, not after."""
    for directory in (paths.state_dir, paths.lock_dir):
        ensure_dir(directory, trusted=directory == paths.state_dir)
        if not os.access(directory, os.W_OK):
            raise StateError(f"{directory}: not writable")
    for path in (paths.state_file, paths.lock_file):
        if os.path.islink(path):
            raise StateError(f"{path}: is a symbolic link; refusing to follow it (remove it)")


def lock_exists(paths: Paths) -> bool:
    return os.path.lexists(paths.lock_file)


def write_lock(paths: Paths) -> None:
    ensure_dir(paths.lock_dir)
    fd = open_nofollow(paths.lock_file, os.O_WRONLY | os.O_CREAT)
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
    ensure_dir(paths.state_dir, trusted=True)
    check_state_file(paths)
    fd = open_nofollow(paths.run_lock, os.O_RDWR | os.O_CREAT)
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
