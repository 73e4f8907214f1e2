"""`lvs-director watch`: the health-check daemon.

One asyncio event loop runs the check engine (checks.Checker) for every real server of
every service that has a `[service.check]`. Transitions are logged (one line each) and
batched: the first one arms a short timer (BATCH_SECONDS); everything that happened by
then goes to the kernel as one observe -> plan (plan_director.plan_health) -> apply under
the run lock, so many servers failing at once cost one `ipvsadm -R`, and the watcher never
races a `start` or `reload` of the CLI. The apply itself (programs, an flock that may have
to wait) runs in a worker thread, so checks go on meanwhile; only one apply runs at a time.

Signals: SIGHUP re-reads the config (an invalid one is logged, naming file, key and
value, and the old one stays); SIGTERM and SIGINT stop the checks and exit 0, leaving the
weights as they are (the health reached is saved). Under systemd (Type=notify) it sends
READY=1 once the first apply is done and WATCHDOG=1 every half WatchdogSec from the loop.

Memory is bounded by the number of targets: per target its health, last check duration
and transition count; pending transitions are a flag, not a queue.

Tests only: `LVS_TEST_CHECK_MAP="RIP=127.0.0.1:PORT,..."` sends the checks of a real server
to another address:port (a listener on loopback), because the config refuses loopback
real servers and a test host cannot own 192.168.30.x. Nothing else reads it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, Callable

from .checks import Checker, CheckResult, CheckSpec, Target, require_check_programs, run_check
from .errors import ConfigError, LvsError
from .health import DOWN, Health, Transition
from .healthstate import HealthView, target_id
from .record import as_dict

if TYPE_CHECKING:
    import aiohttp

    from .director import Director
    from .model import Config, VirtualService
    from .role import Role

log = logging.getLogger("lvs_scripts")

BATCH_SECONDS = 0.2  # transitions within this window go to the kernel as one apply
RETRY_SECONDS = 5.0  # after a failed apply (a command failed, the lock was busy)
TEST_CHECK_MAP = "LVS_TEST_CHECK_MAP"


def targets_of(config: Config) -> list[Target]:
    """Every real server of every service with a check (the sorry server is not checked:
    it is only the fallback)."""
    return [Target(target_id(service, dest), service.check, _host_vip(service))
            for service in config.services if service.check is not None
            for dest in service.destinations]


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
        self._stopping = False

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
        self._request_apply()

    def _request_apply(self) -> None:
        if self._pending is not None:
            self._pending.set()

    # -- signals

    def stop(self) -> None:
        log.info("watch: stopping (weights are left as they are)")
        self._stopping = True
        self.checker.stop()

    def reload(self) -> None:
        """SIGHUP: the new config, or (invalid) the old one kept, saying why."""
        from .director import Director

        old = self.director
        try:
            config = load_director_config(self.config_path)
            # With [ha], the same member of the pair as at start (--host may have named
            # it); a config without that member is refused here like any other error.
            director = Director(config, runner=old.runner, paths=old.paths,
                                wait_seconds=old.wait_seconds, drain=old.drain,
                                host=old.member.name if old.member is not None else None)
        except LvsError as err:
            log.error("watch: SIGHUP: config not reloaded, keeping the old one: %s", err)
            return
        self.director = director
        saved = self._saved_health()
        self.checker.set_targets(targets_of(config), saved)
        log.info("watch: SIGHUP: config %s reloaded: %d real server(s) checked",
                 self.config_path, len(self.checker.targets))
        self._request_apply()

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
        targets = targets_of(self.director.config)
        if any(t.spec.type in ("http", "https") for t in targets):
            # Imported now, before READY: the first http check would import it inside the
            # loop, stalling every check for the import's time (seconds on a slow CPU).
            import aiohttp  # noqa: F401
        prepare = getattr(self.director.runner, "prepare", None)
        if prepare is not None:  # the same for the runner's imports (plumbum)
            prepare()
        self.checker.set_targets(targets, self._saved_health())
        log.info("watch: checking %d real server(s) of %s", len(self.checker.targets),
                 self.config_path)
        if not await self._apply():  # the kernel as the saved health says, before READY
            loop.call_later(RETRY_SECONDS, self._request_apply)
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
        return 0

    async def _applier(self) -> None:
        assert self._pending is not None  # noqa: S101 - set by run()
        while True:
            await self._pending.wait()
            await asyncio.sleep(BATCH_SECONDS)  # a batching window, not a synchronisation
            self._pending.clear()
            if not await self._apply():
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
        for line in report.outcome.applied:
            log.info("watch: applied %s", line)
        if report.outcome.applied:  # how long the kernel took to follow, for the operator
            log.info("watch: %d change(s) applied in %.2f s", len(report.outcome.applied),
                     time.monotonic() - started)
        return True

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


def load_director_config(path: str) -> Config:
    from .config import load_config

    config = load_config(path)
    config.require_director()
    config.require_services("director")
    require_check_programs(config)
    return config


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
