"""`lvs-director watch`: the health-check daemon.

One asyncio event loop runs the check engine (checks.Checker) for every real server of
every service that has a `[service.check]`. Transitions are logged (one line each) and
batched (BatchWindow): the first one opens a window that closes once no transition came
for BATCH_SECONDS, or at the latest one check interval after it opened; everything that
happened by then goes to the kernel as one observe -> plan (plan_director.plan_health) ->
apply under the run lock, so many servers failing at once cost one `ipvsadm -R` (their
checks are spread over the interval, so their failures are too), a lone failure still
goes out after BATCH_SECONDS, and the watcher never races a `start` or `reload` of the
CLI. The apply itself (programs, an flock that may have
to wait) runs in a worker thread, so checks go on meanwhile; only one apply runs at a time.

Signals: SIGHUP is `lvs-director reload` without a new process: the config is read again
(an invalid one is refused, logged naming file, key and value, and the old one stays),
the checks are re-targeted (servers that stay keep their health, new ones start unknown,
which counts as up), then Director.reload_with_health runs the CLI's own reload (services,
real servers added, drained and removed, VIPs, attributes; lock file; verify) under the
same run lock, with the health reached applied and the state file written the same way.
Several SIGHUPs while one reload runs make one more reload after it, never two at once.
Each outcome is written to `<state dir>/lvs-director.watch-reload.json` (`read_at`, on
CLOCK_MONOTONIC, is when this reload began reading the config; `code` is the exit code
the CLI's reload would have had); the watcher's pid is in `lvs-director.watch.pid` there
while it runs. `lvs-director reload --via-watcher` sends the SIGHUP and waits for that
file to name a reload begun after it (watch_reload below).
SIGTERM and SIGINT stop the checks and exit 0, leaving the weights as they are (the
health reached is saved). Under systemd (Type=notify) it sends
READY=1 once the first apply is done and WATCHDOG=1 every half WatchdogSec from the loop.

Memory is bounded by the number of targets: per target its health, last check duration
and transition count; pending transitions are a flag, not a queue.

Tests only: `LVS_TEST_CHECK_MAP="RIP=127.0.0.1:PORT,..."` sends the checks of a real server
to another address:port (a listener on loopback), because the config refuses loopback
real servers and a test host cannot own 192.168.30.x. Nothing else reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Callable

from .checks import Checker, CheckResult, CheckSpec, Target, require_check_programs, run_check
from .config_cache import collector_paused
from .errors import ConfigError, LvsError, NotRoot, WatcherNotRunning
from .health import DOWN, Health, Transition
from .healthstate import HealthView, service_part, target_id_in, target_ids
from .record import as_dict

if TYPE_CHECKING:
    import aiohttp

    from .director import Director
    from .locks import Paths
    from .model import Config, VirtualService
    from .role import Report, Role

log = logging.getLogger("lvs_scripts")

BATCH_SECONDS = 0.2  # a batch goes to the kernel once no transition came for this long
RETRY_SECONDS = 5.0  # after a failed apply (a command failed, the lock was busy)
TEST_CHECK_MAP = "LVS_TEST_CHECK_MAP"


class BatchWindow:
    """When the transitions gathered so far go to the kernel, as one apply.

    The first transition opens the window; it closes `quiet` seconds after the last one
    came, or at the latest `cap` seconds after it opened, `cap` being the smallest one
    that anything in the window asked for. A lone failure waits `quiet`. A burst (a
    switch dies) reaches us spread over one check interval, because each target is
    checked at its own phase, so a transition asks for `interval + quiet`: the whole
    burst goes out as one apply, the quiet time being the margin for checks that fire a
    little late. The bound: the servers of a burst that died at t show their fall-th
    failure from t + (fall - 1) * interval on, so the window the first of them opens
    closes by t + fall * interval + quiet, within the lab's `interval * fall + timeout
    + 1` once the apply is done. Only a steady trickle of unrelated transitions (never
    `quiet` apart) opening the window just before a server's own failure can hold that
    failure back longer, by up to `interval + quiet`.

    Pure (the caller passes the time): tested with numbers, no clock."""

    def __init__(self, quiet: float = BATCH_SECONDS) -> None:
        self.quiet = quiet
        self.opened: float | None = None
        self.last = 0.0
        self.cap = 0.0

    def add(self, now: float, cap: float) -> None:
        """One more transition (or another reason to apply) at `now`, asking for an
        apply at most `cap` seconds after the window opened."""
        cap = max(cap, self.quiet)
        if self.opened is None:
            self.opened, self.cap = now, cap
        else:
            self.cap = min(self.cap, cap)
        self.last = now

    def closes_at(self) -> float | None:
        """When to apply; None while nothing is gathered."""
        if self.opened is None:
            return None
        return min(self.last + self.quiet, self.opened + self.cap)

    def close(self) -> None:
        self.opened = None


def targets_of(config: Config) -> list[Target]:
    """Every real server of every service with a check (the sorry server is not checked:
    it is only the fallback)."""
    return [target for service in config.services for target in _service_targets(service)]


def _service_targets(service: VirtualService) -> list[Target]:
    if service.check is None:
        return []
    return [Target(key, service.check, _host_vip(service)) for key in target_ids(service)]


class TargetCache:
    """targets_of for one watcher, reload after reload: a reload after an edit of a few
    real servers gets back the same VirtualService for every service it did not touch,
    and in a touched one the same Destination for every real server it did not
    (config_delta), so their Targets are the last reload's (by identity, checked: an id
    alone could be a new object's). The rest is made anew. At 100,000 real servers
    targets_of took 2 s of the lab VM's time at each SIGHUP; and the checker takes back a
    Target it has by identity (Checker.set_targets)."""

    def __init__(self) -> None:
        # id(service) -> (the service, its targets): the last call's services only.
        self.last: dict[int, tuple[VirtualService, list[Target]]] = {}

    def __call__(self, config: Config) -> list[Target]:
        last, new = self.last, {}
        by_key = {service.key: (service, targets) for service, targets in last.values()}
        result: list[Target] = []
        for service in config.services:
            kept = last.get(id(service))
            if kept is not None and kept[0] is service:
                targets = kept[1]
            else:
                targets = self._made(service, by_key.get(service.key))
            new[id(service)] = (service, targets)
            result += targets
        self.last = new
        return result

    @staticmethod
    def _made(service: VirtualService,
              before: tuple[VirtualService, list[Target]] | None) -> list[Target]:
        """A service's targets, those of its real servers that are the very Destination
        objects of the same service before taken back (same key, check and VIP: each
        Target depends on nothing else)."""
        if before is None or service.check is None or before[0].check != service.check \
                or _host_vip(before[0]) != _host_vip(service) or len(before[1]) != len(
                    before[0].destinations):
            return _service_targets(service)
        old = {id(dest): (dest, target) for dest, target in zip(before[0].destinations,
                                                                 before[1])}
        check, host_vip, part = service.check, _host_vip(service), None
        targets = []
        for dest in service.destinations:
            found = old.get(id(dest))
            if found is not None and found[0] is dest:
                targets.append(found[1])
                continue
            if part is None:
                part = service_part(service)
            targets.append(Target(target_id_in(service, part, dest), check, host_vip))
        return targets


def _host_vip(service: VirtualService) -> str | None:
    """A fwmark service has no VIP of its own: its checks name the first match VIP."""
    return str(service.match[0].address) if service.key.address is None and service.match \
        else None


class Watcher:
    """The daemon; `run()` returns the exit code once stopped."""

    def __init__(self, director: Director, config_path: str,
                 check: Callable[..., Any] = run_check,
                 notify: Callable[[str], None] | None = None) -> None:
        self.director = director
        self.config_path = config_path
        self.checker = Checker(self._on_transition, on_result=self._on_result,
                               check=check)
        self.notify = notify or sd_notify
        self.durations: dict[Any, float] = {}  # TargetId -> seconds of its last check
        self.transitions: dict[tuple[Any, str], int] = {}  # (TargetId, new state) -> count
        self.applies = 0  # applies done (tests and metrics)
        self._pending: asyncio.Event | None = None
        self._window = BatchWindow()
        self._stopping = False
        self._reread = False  # SIGHUP: read the config file again
        self._reconcile = False  # a full reload is owed (SIGHUP, or a failed one to retry)
        self._targets = TargetCache()

    # -- callbacks from the checker (on the loop)

    def _on_result(self, target: Target, result: CheckResult, _health: Health) -> None:
        self.durations[target.key] = result.duration

    def _on_transition(self, target: Target, transition: Transition, health: Health) -> None:
        counts = f"{health.successes} success(es)" if transition.new != DOWN else \
            f"{health.failures} failure(s)"
        level = logging.WARNING if transition.new == DOWN else logging.INFO
        log.log(level, "health: %s %s -> %s: %s (%s)", target.key, transition.old,
                transition.new, transition.reason, counts)
        key = (target.key, transition.new)
        self.transitions[key] = self.transitions.get(key, 0) + 1
        self._request_apply(target.spec.interval + BATCH_SECONDS)

    def _request_apply(self, cap: float = BATCH_SECONDS) -> None:
        """An apply, at the latest `cap` seconds after the batch opened (BatchWindow: a
        transition asks for its check's interval, so that a burst is one apply; anything
        else, a reload or a retry, for BATCH_SECONDS)."""
        if self._pending is not None:
            self._window.add(asyncio.get_running_loop().time(), cap)
            self._pending.set()

    # -- signals

    def stop(self) -> None:
        log.info("watch: stopping (weights are left as they are)")
        self._stopping = True
        self.checker.stop()

    def reload(self) -> None:
        """SIGHUP (on the loop): a full reload is owed; the applier does it, so that it
        never runs beside another apply, and SIGHUPs that arrive meanwhile make one more
        reload after it."""
        self._reread = self._reconcile = True
        self._request_apply()

    def _load(self) -> tuple[Director, Callable[[], None]]:
        """The config file read again (in a worker thread: parsing 10,000 real servers
        would stall the checks), as a Director like the one we run; and what keeps it in
        the config cache, done once the reload is (config.read_config)."""
        from .director import Director

        old = self.director
        config, keep = read_director_config(self.config_path, old.paths.config_cache)
        # With [ha], the same member of the pair as at start (--host may have named it); a
        # config without that member is refused here like any other error.
        return Director(config, runner=old.runner, paths=old.paths,
                        wait_seconds=old.wait_seconds, drain=old.drain,
                        host=old.member.name if old.member is not None else None), keep

    async def _reload(self) -> bool:
        """The owed reload; False to be retried (a command failed, the lock was busy)."""
        read_at = time.monotonic()
        # Cleared before any await: a SIGHUP from now on sets them again, and is owed a
        # reload of its own (this one may have read the file before it was written).
        reread, self._reread, self._reconcile = self._reread, False, False
        if not reread:
            return await self._reconcile_kernel(read_at)
        try:
            director, keep = await asyncio.to_thread(self._load)
        except LvsError as err:
            log.error("watch: SIGHUP: config not reloaded, keeping the old one: %s", err)
            self._write_result(read_at, err.exit_code, str(err))
            return True
        self.director = director
        self.checker.set_targets(self._targets(director.config),
                                 SavedHealth(self._saved_health))
        log.info("watch: SIGHUP: config %s reloaded: %d real server(s) checked",
                 self.config_path, len(self.checker.targets))
        try:
            return await self._reconcile_kernel(read_at)
        finally:
            await asyncio.to_thread(keep)  # a failure to write it costs a later parse only

    async def _reconcile_kernel(self, read_at: float) -> bool:
        health = self.checker.health

        def update(view: HealthView) -> HealthView:
            view.health = health
            return view

        try:
            report, _view = await asyncio.to_thread(self.director.reload_with_health, update)
        except LvsError as err:
            log.error("watch: reload: %s", err)
            self._write_result(read_at, err.exit_code, str(err))
            self._reconcile = True  # retried as a reload, not as a health apply
            return False
        self.applies += 1
        applied = report.outcome.applied  # rendered once: 10,000 lines at a first start
        for line in applied:
            log.info("watch: applied %s", line)
        log.info("watch: reload: %d change(s) applied; done, with its check, %.2f s after "
                 "the config was read", len(applied), time.monotonic() - read_at)
        self._write_result(read_at, 0, None, report, applied)
        return True

    def _write_result(self, read_at: float, code: int, error: str | None,
                      report: Report | None = None, applied: list[str] | None = None) -> None:
        result = {"pid": os.getpid(), "read_at": read_at, "done_at": time.monotonic(),
                  "code": code, "error": error,
                  "changed": bool(report and report.changed),
                  "applied": applied if applied is not None else
                  list(report.outcome.applied) if report else [],
                  "warnings": list(report.outcome.warnings) if report else [],
                  "notes": list(dict.fromkeys(report.plan.notes)) if report else []}
        try:
            write_json(self.director.paths, result_file(self.director.paths), result)
        except (OSError, LvsError) as err:  # the reload stands; only --via-watcher waits
            log.error("watch: cannot write %s: %s", result_file(self.director.paths), err)

    def _saved_health(self) -> dict[Any, Health]:
        try:
            return self.director.health_view().health
        except LvsError as err:
            log.error("watch: %s; every real server starts unchecked", err)
            return {}

    # -- the loop

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._pending = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        targets = self._targets(self.director.config)
        if any(t.spec.type == "https" for t in targets):
            # Imported now, before READY: the first https check would import it inside the
            # loop, stalling every check for the import's time (seconds on a slow CPU).
            import aiohttp  # noqa: F401
        prepare = getattr(self.director.runner, "prepare", None)
        if prepare is not None:  # the same for the runner's imports (plumbum)
            prepare()
        self.checker.set_targets(targets, self._saved_health())
        write_pid(self.director.paths, self.director.config.path)
        log.info("watch: checking %d real server(s) of %s", len(self.checker.targets),
                 self.config_path)
        with collector_paused():
            applied = await self._apply()  # the kernel as the saved health says
        if not applied:
            loop.call_later(RETRY_SECONDS, self._request_apply)
        # Said also where no systemd listens (init.d): the kernel is as the saved health
        # says from here on (the health file is written only when health changed).
        log.info("watch: ready: the kernel %s the saved health of %d real server(s)",
                 "follows" if applied else "could not yet be set to", len(self.checker.targets))
        self.notify("READY=1")
        helpers = [loop.create_task(self._applier()), loop.create_task(self._watchdog())]
        try:
            await self.checker.run()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.notify("STOPPING=1")
            await self._apply(save_only=True)
            remove_pid(self.director.paths)
        return 0

    async def _applier(self) -> None:
        pending = self._pending
        assert pending is not None  # noqa: S101 - set by run()
        loop = asyncio.get_running_loop()
        while True:
            await pending.wait()
            # A batching window (BatchWindow), not a synchronisation: each transition
            # sets `pending` again and may push the end of the window further. A reload
            # is asked by a person: it waits for no window.
            while not self._reconcile and (closes := self._window.closes_at()) is not None \
                    and (delay := closes - loop.time()) > 0:
                pending.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(pending.wait(), delay)
            self._window.close()
            pending.clear()
            # Without the cyclic collector while it runs (config_cache.collector_paused):
            # a reload reads the config and the table and plans, tens of thousands of
            # objects that form no cycles, and the collector's passes over them (and over
            # the checker's targets) cost a quarter of a one-shot status's CPU. Seconds;
            # the checks' own garbage is collected when it is on again.
            with collector_paused():
                done = await self._reload() if self._reconcile else await self._apply()
            if not done:
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self._request_apply)

    async def _apply(self, save_only: bool = False) -> bool:
        """Save the health reached, and (unless save_only) bring the kernel to it."""
        health = self.checker.health
        director = self.director

        def update(view: HealthView) -> HealthView:
            view.health = health
            return view

        started = time.monotonic()
        try:
            if save_only:
                await asyncio.to_thread(director.store_health, update)
                return True
            report, _view = await asyncio.to_thread(director.apply_health, "watch", update)
        except LvsError as err:
            log.error("watch: %s", err)
            return False
        self.applies += 1
        self._log_applied(report, started)
        return True

    @staticmethod
    def _log_applied(report: Report, started: float) -> None:
        applied = report.outcome.applied  # rendered once
        for line in applied:
            log.info("watch: applied %s", line)
        if applied:  # how long the kernel took to follow, for the operator
            log.info("watch: %d change(s) applied in %.2f s", len(applied),
                     time.monotonic() - started)

    async def _watchdog(self) -> None:
        """WATCHDOG=1 at half the interval systemd asked for (WATCHDOG_USEC), from the
        loop itself: a wedged loop stops the pings and systemd restarts us."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        if not usec.isdigit() or int(usec) == 0:
            return
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(int(usec) / 2e6)


class SavedHealth(Mapping[Any, Health]):
    """The health file's health, read when first asked: a reload asks it only of real
    servers new to the checker (none, for a reload of a weight), and reading 10,000
    entries was a tenth of a second of the lab VM's time between a SIGHUP and the kernel."""

    def __init__(self, read: Callable[[], dict[Any, Health]]) -> None:
        self._read = read
        self._health: dict[Any, Health] | None = None

    def _loaded(self) -> dict[Any, Health]:
        if self._health is None:
            self._health = self._read()
        return self._health

    def __getitem__(self, key: Any) -> Health:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def pid_file(paths: Paths) -> str:
    """Where a running watcher keeps its pid (the pid alone, as pid files go); the config
    file it reads is named in paths.watch_config beside it (for `reload`, which goes
    through it)."""
    return paths.watch_pid


def result_file(paths: Paths) -> str:
    """Where the watcher writes the outcome of its last reload."""
    return os.path.join(paths.state_dir, f"{paths.name}.watch-reload.json")


def write_json(paths: Paths, target: str, data: dict[str, Any]) -> None:
    import json

    write_atomically_text(paths, target, json.dumps(data, indent=1) + "\n")


def write_pid(paths: Paths, config_path: str) -> None:
    try:  # the config first: a pid file names a watcher whose config is known
        write_atomically_text(paths, paths.watch_config, f"{os.path.abspath(config_path)}\n")
        write_atomically_text(paths, pid_file(paths), f"{os.getpid()}\n")
    except (OSError, LvsError) as err:  # the checks matter more than --via-watcher
        log.error("watch: cannot write %s: %s", pid_file(paths), err)


def write_atomically_text(paths: Paths, target: str, text: str) -> None:
    from .locks import ensure_dir
    from .state import write_atomically

    ensure_dir(paths.state_dir, trusted=True)
    write_atomically(paths, target, text)


def remove_pid(paths: Paths) -> None:
    """Only our own: a newer watcher may have written its pid meanwhile."""
    try:
        with open(pid_file(paths), encoding="ascii") as file:
            if file.read().strip() != str(os.getpid()):
                return
        os.unlink(pid_file(paths))
        os.unlink(paths.watch_config)
    except OSError:
        pass


def running_watcher(paths: Paths) -> int:
    """The pid of the running watcher, from its pid file; WatcherNotRunning if none."""
    return running_watcher_config(paths)[0]


def running_watcher_config(paths: Paths) -> tuple[int, str | None]:
    """The running watcher's pid and the config file it reads (None from a pid file of
    an older version, which wrote the pid alone); WatcherNotRunning if none runs."""
    where = pid_file(paths)
    try:
        with open(where, encoding="ascii") as file:
            text = file.read().strip()
    except FileNotFoundError:
        raise WatcherNotRunning(f"no watcher is running: {where} does not exist "
                                "(start it: lvs-director watch)") from None
    except OSError as err:
        raise WatcherNotRunning(f"{where}: cannot read it: {err.strerror}") from None
    except UnicodeDecodeError:
        raise WatcherNotRunning(f"{where}: not a pid file") from None
    try:
        with open(paths.watch_config, encoding="utf-8") as file:
            config: str | None = file.read().strip() or None
    except (OSError, UnicodeDecodeError):  # an older version wrote the pid alone
        config = None
    if not text.isdigit() or int(text) <= 1:
        raise WatcherNotRunning(f"{where}: {text!r} is not a process id")
    pid = int(text)
    if not is_watcher(pid):  # a pid left by a watcher killed -9, maybe reused since
        raise WatcherNotRunning(f"no watcher is running: {where} names pid {pid}, which "
                                "has exited or is no `lvs-director watch`")
    return pid, config


def is_watcher(pid: int) -> bool:
    """Whether pid is a `... watch` process: a SIGHUP must never reach another program
    that inherited the pid of a watcher killed with -9 (whose pid file stayed)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            argv = file.read().split(b"\0")
    except OSError:
        return False
    return b"watch" in argv


def read_result(paths: Paths) -> dict[str, Any] | None:
    import json

    try:
        with open(result_file(paths), encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):  # not written yet (or a torn copy: it is replaced whole)
        return None
    return data if isinstance(data, dict) else None


def watch_reload(paths: Paths, wait_seconds: float, poll_seconds: float = 0.02
                 ) -> dict[str, Any]:
    """`lvs-director reload --via-watcher`: SIGHUP to the running watcher, then the result
    of the first reload it began after the signal (read_at on CLOCK_MONOTONIC, which every
    process of this boot shares, so a wall-clock step cannot confuse it). Raises
    WatcherNotRunning, or LvsError when no result came within wait_seconds."""
    pid = running_watcher(paths)
    sent = time.monotonic()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise WatcherNotRunning(f"the watcher (pid {pid}) exited before the SIGHUP") from None
    except PermissionError:
        raise NotRoot(f"not allowed to signal the watcher (pid {pid})") from None
    deadline = sent + wait_seconds
    while True:
        result = read_result(paths)
        if result is not None and result.get("pid") == pid and \
                float(result.get("read_at", 0)) >= sent:
            return result
        if time.monotonic() >= deadline:
            raise LvsError(f"the watcher (pid {pid}) got the SIGHUP but wrote no result in "
                           f"{result_file(paths)} within {wait_seconds:g} s (see its log; "
                           "--wait SECONDS waits longer)")
        if not is_watcher(pid):
            raise WatcherNotRunning(f"the watcher (pid {pid}) exited before it reloaded")
        time.sleep(poll_seconds)


def load_director_config(path: str, cache: str | None = None) -> Config:
    """The config, checked as the watcher needs it; through the compiled-config cache
    (config_cache.py) where one is given, as the CLI reads it."""
    config, keep = read_director_config(path, cache)
    keep()
    return config


def read_director_config(path: str, cache: str | None = None
                         ) -> tuple[Config, Callable[[], None]]:
    """load_director_config, keeping it in the cache left to the caller
    (config.read_config)."""
    from .config import read_config

    config, keep = read_config(path, cache)
    config.require_director()
    config.require_services("director")
    require_check_programs(config)
    return config, keep


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) through $NOTIFY_SOCKET; nothing when not under systemd.
    The sdnotify package (Debian: python3-sdnotify) where installed, else the same
    datagram sent by hand (the protocol is one sendto)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    try:
        import sdnotify  # type: ignore[import-untyped]
    except ImportError:
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message.encode(), address)
            except OSError as err:
                log.warning("watch: cannot notify systemd: %s", err)
        return
    sdnotify.SystemdNotifier().notify(message)


def _mapped_check(mapping: dict[str, tuple[str, int]]) -> Callable[..., Any]:
    async def check(spec: CheckSpec, address: str, port: int, vip: str,
                    session: aiohttp.ClientSession | None = None) -> CheckResult:
        if address in mapping:
            address, port = mapping[address]
            if spec.port is not None:  # the map's port wins over the check's own too
                spec = CheckSpec(**{**as_dict(spec), "port": None})
        return await run_check(spec, address, port, vip, session)
    return check


def _test_check_map() -> dict[str, tuple[str, int]]:
    text = os.environ.get(TEST_CHECK_MAP, "")
    mapping: dict[str, tuple[str, int]] = {}
    for item in filter(None, text.split(",")):
        real, _, target = item.partition("=")
        host, _, port = target.rpartition(":")
        if not real or not host or not port.isdigit():
            raise ConfigError(TEST_CHECK_MAP, item, item, "must be RIP=ADDRESS:PORT,...")
        mapping[real] = (host, int(port))
    return mapping


def watch(role: Role, config_path: str, verbose: bool = False) -> int:
    """The CLI's `watch`: run until SIGTERM/SIGINT; exit 0."""
    from .director import Director

    if not isinstance(role, Director):
        raise LvsError("watch is an action of lvs-director")
    for handler in log.handlers:  # transitions are the daemon's output: on stderr too
        if isinstance(handler, logging.StreamHandler) and not verbose and \
                not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.INFO)
    mapping = _test_check_map()
    check = _mapped_check(mapping) if mapping else run_check
    watcher = Watcher(role, config_path, check=check)
    metrics = role.config.require_director().metrics
    if metrics is not None:
        from .metrics import serve

        serve(watcher, metrics)
    started = time.monotonic()
    code = asyncio.run(watcher.run())
    log.info("watch: stopped after %.0f s, %d apply(ies)", time.monotonic() - started,
             watcher.applies)
    return code
