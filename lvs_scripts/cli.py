"""The command lines `lvs-director` and `lvs-realserver`: the only place that turns
errors into exit codes. `main(argv) -> int` is callable from tests."""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, LvsError, NotRoot, WatcherNotRunning

if TYPE_CHECKING:  # the CLI imports the library only once an action runs: --help stays fast
    from .model import Config
    from .role import Report, Role

# Defaults repeated here rather than imported, for the same reason (tests keep them equal).
DEFAULT_CONFIG = "/etc/lvs/lvs.toml"
DEFAULT_STATE_DIR = "/run/lvs-scripts"
DEFAULT_LOCK_DIR = "/var/lock/subsys"

log = logging.getLogger("lvs_scripts")

DIRECTOR_ACTIONS = ("start", "stop", "restart", "reload", "force-reload", "status", "watch",
                    "disable", "enable")
REALSERVER_ACTIONS = ("start", "stop", "restart", "reload", "force-reload", "status")
CHANGING = {"start", "stop", "restart", "reload", "force-reload", "watch", "disable", "enable"}
ADMIN = ("disable", "enable")  # take ADDRESS [--service VIP:PORT|fwmark:MARK]
# LSB: status exits 4, "program or service status is unknown", whenever it cannot tell:
# bad config, missing program, a table it may not read (not the 6 and 5 of other actions).
STATUS_UNKNOWN = 4
DIRECTOR_WHAT = ("Set up an LVS director (VIPs, default route, IPVS services) from the shared "
                 "config file.")
REALSERVER_WHAT = ("Set up an LVS-DR real server (VIPs on lo, ARP settings) from the shared "
                   "config file.")


def _parser(prog: str, actions: tuple[str, ...], what: str,
            drains: bool) -> argparse.ArgumentParser:
    """drains: the director's options for real servers leaving (a real server has none)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=what,
        epilog="Exit codes (LSB): 0 ok, 1 a command failed, 2 bad arguments, 4 not root, "
               "5 a program or kernel IPVS support is missing, 6 config missing or invalid"
               + (", 7 reload --via-watcher but no watcher running. " if drains else ". ")
               + "status: 0 running as configured, 2 stopped but lock file present, "
               "3 not running, 4 unknown (bad config, missing program, IPVS table not "
               "readable), 150 running but different from the config.")
    parser.add_argument("action", choices=actions)
    # An empty $LVS_CONFIG counts as unset (a blank line in /etc/default), -c "" does not.
    parser.add_argument("-c", "--config", type=_file_name,
                        default=os.environ.get("LVS_CONFIG") or DEFAULT_CONFIG,
                        help=f"config file (default: $LVS_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="print the commands as a shell script; change nothing")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each command as it runs")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON: the status, what an action applied, "
                             "or the exit code and the error")
    parser.add_argument("--state-dir", type=_file_name,
                        default=os.environ.get("LVS_STATE_DIR") or DEFAULT_STATE_DIR,
                        help=f"where state is kept (default: $LVS_STATE_DIR or "
                             f"{DEFAULT_STATE_DIR})")
    parser.add_argument("--lock-dir", type=_file_name,
                        default=os.environ.get("LVS_LOCK_DIR") or DEFAULT_LOCK_DIR,
                        help=f"where the subsys lock file goes (default: $LVS_LOCK_DIR or "
                             f"{DEFAULT_LOCK_DIR})")
    if drains:
        parser.add_argument("--host", default=None, metavar="NAME",
                            help="with [ha]: this director's name among ha.directors "
                                 "(default: $LVS_HOST or the system's host name)")
    else:
        parser.set_defaults(host=None)
    if drains:
        parser.add_argument("--no-drain", action="store_true",
                            help="start/reload: delete leaving real servers at once instead "
                                 "of setting weight 0 and waiting for their connections")
        parser.add_argument("address", nargs="?", metavar="ADDRESS",
                            help="disable/enable: the real server's address")
        parser.add_argument("--service", metavar="VIP:PORT|fwmark:MARK",
                            help="disable/enable: in this service only, named by its VIP "
                                 "and port or by its mark (default: in every service that "
                                 "has the real server)")
        parser.add_argument("--via-watcher", action="store_true",
                            help="reload/force-reload: have the running `watch` do the "
                                 "reload (SIGHUP; no new process plans it) and wait up to "
                                 "--wait seconds for its result; exit 7 if no watcher runs")
    else:
        parser.set_defaults(no_drain=False, address=None, service=None, via_watcher=False)
    parser.add_argument("--wait", type=_seconds, default=60.0, metavar="SECONDS",
                        help="how long to wait for another run to finish (default 60)")
    return parser


def _file_name(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("an empty path: give the file or directory name "
                                         "(or leave the option out for its default)")
    return text


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    # float() also takes "nan", "inf" and "-1": none of them is a time to wait.
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds, "
                                         "0 or more")
    return seconds


def _setup_logging(prog: str, verbose: bool) -> None:
    log.setLevel(logging.DEBUG)
    log.handlers.clear()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.DEBUG if verbose else logging.WARNING)
    stderr.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    log.addHandler(stderr)
    # The original scripts called `logger $0 called with $1`: keep a syslog trail.
    if os.environ.get("LVS_SYSLOG", "1") != "0" and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler  # socket, pickle, queue: only for syslog

        try:
            syslog = SysLogHandler(address="/dev/log")
        except OSError:
            return
        syslog.setLevel(logging.INFO)
        syslog.setFormatter(logging.Formatter(f"{prog}[{os.getpid()}]: %(message)s"))
        log.addHandler(syslog)


def _summary(prog: str, report: Report) -> str:
    if not report.changed:
        return f"{prog} {report.action}: nothing to do"
    # Counted from the steps: rendering 10,000 applied lines just to count them was most
    # of what the summary cost (twice a run: the log and stdout).
    return f"{prog} {report.action}: {len(report.outcome.done)} change(s) applied"


def _role_class(role: str) -> type[Role]:
    if role == "director":
        from .director import Director

        return Director
    from .realserver import RealServer

    return RealServer


def run(role: str, prog: str, actions: tuple[str, ...], what: str,
        argv: Sequence[str] | None) -> int:
    try:
        args = _parser(prog, actions, what, drains=role == "director").parse_args(argv)
    except BrokenPipeError:  # `--help | head -1`: the reader has what it wanted
        _silence_stdout()
        return 0
    wrong = _wrong_arguments(args)
    if wrong is not None:
        sys.stderr.write(f"{prog}: error: {args.action}: {wrong}\n")
        return 2
    _setup_logging(prog, args.verbose)
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    # A one-shot action runs without Python's cyclic garbage collector: its objects (the
    # config, the observed tables, the plan) form no cycles and reference counting frees
    # them, but the collector's passes over all of them were a quarter of a status's CPU
    # at 100,000 real servers. The watcher, which runs for months, keeps it.
    paused = args.action != "watch" and gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _run(role, prog, args)
    except LvsError as err:
        return _failed(args, err)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 1
    finally:
        if paused:
            gc.enable()
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _wrong_arguments(args: argparse.Namespace) -> str | None:
    """What argparse cannot say: ADDRESS and --service belong to disable/enable only."""
    if args.action in ADMIN:
        if args.address is None:
            return "needs the real server's ADDRESS"
        if args.dry_run:
            return "--dry-run is for start, stop, restart, reload and status"
        return None
    if args.address is not None or args.service is not None:
        return "takes no ADDRESS or --service (only disable and enable do)"
    if args.dry_run and args.action == "watch":
        return "--dry-run is for start, stop, restart, reload and status"
    return _wrong_via_watcher(args)


def _wrong_via_watcher(args: argparse.Namespace) -> str | None:
    if args.via_watcher and (args.action not in ("reload", "force-reload") or args.dry_run):
        return "--via-watcher is for reload and force-reload, without --dry-run"
    return None


def _failed(args: argparse.Namespace, err: LvsError) -> int:
    code = err.exit_code
    if args.action == "status":
        code = STATUS_UNKNOWN
        log.error("status unknown: %s", err)
    else:
        log.error("%s", err)
    if args.json:  # a caller that asked for JSON parses stdout: give it something to parse
        _write_json({"code": code, "error": str(err)})
    return code


def checked_config(role: str, path: str, cache: str | None = None
                   ) -> tuple[Config, Callable[[], None]]:
    """The config file, checked for `role`: raises ConfigError (nothing has run yet).
    With what keeps it in the compiled-config cache (config.read_config): for after the
    action, when a first start has made the state directory the cache goes in."""
    from .config import read_config

    config, keep = read_config(path, cache)
    config.require_services(role)
    return config, keep


def build_role(role: str, prog: str, config: Config | None, args: argparse.Namespace,
               config_error: ConfigError | None = None) -> Role:
    from .locks import Paths

    extra = {"host": args.host} if role == "director" else {}
    return _role_class(role)(config, paths=Paths(prog, args.state_dir, args.lock_dir),
                             wait_seconds=args.wait, drain=not args.no_drain,
                             config_error=config_error, **extra)


def _run(role_name: str, prog: str, args: argparse.Namespace) -> int:
    from .locks import Paths

    cache = Paths(prog, args.state_dir, args.lock_dir).config_cache
    try:
        config, keep = checked_config(role_name, args.config, cache)
    except ConfigError as err:
        if args.action not in ("stop", "status"):
            raise
        return _from_state_alone(role_name, prog, args, err)
    # --dry-run changes nothing, the cache file included; it still reads it. Others keep
    # a config they parsed once the action is done: the first start of a host made the
    # state directory the cache goes in only now (kept before, its Config was lost, and
    # the next run, a reload, parsed the file again in full), and the kernel has the
    # change before the pickling is paid for. An action that failed keeps nothing; the
    # watcher keeps it before it runs, for months.
    keep_after = not args.dry_run
    if keep_after and args.action == "watch":
        keep()
        keep_after = False
    code = _act_on(role_name, prog, config, args)
    if keep_after:
        keep()
    return code


def _act_on(role_name: str, prog: str, config: Config, args: argparse.Namespace) -> int:
    role = build_role(role_name, prog, config, args)
    log.info("%s called with %s", prog, args.action)
    _defer_signals(role)
    if args.dry_run and args.action != "status":
        return _dry_run(role, args.action)
    if args.action in CHANGING and os.geteuid() != 0:
        raise NotRoot(f"{prog} {args.action} changes addresses, routes and IPVS rules: "
                      "run it as root (or try --dry-run)")
    if args.action == "status":
        return _status(prog, role, args.json, tolerant=args.dry_run)
    if args.action in ADMIN:
        return _admin(prog, role, args)
    if args.action == "watch":
        from .watch import watch

        return watch(role, args.config, verbose=args.verbose)
    return _change(prog, role, args)


def _change(prog: str, role: Role, args: argparse.Namespace) -> int:
    if args.via_watcher or _watcher_reloads(role, args.action):
        return _via_watcher(prog, role, args)
    return _act(prog, role, args)


def _watcher_reloads(role: Role, action: str) -> bool:
    """A plain `reload`, and `start` (the same reconciliation), go through a running
    watcher of the same config file: the watcher's next health apply would otherwise put
    back the weights of the config it read last. A watcher of another file is left
    alone, saying so."""
    if action not in ("start", "reload", "force-reload") or \
            not os.path.exists(role.paths.watch_pid):
        return False  # the common case decided without importing the watcher
    from .watch import running_watcher_config

    try:
        pid, watched = running_watcher_config(role.paths)
    except WatcherNotRunning:
        return False
    ours = os.path.abspath(role.config.path)
    if watched != ours:
        log.warning("a watcher (pid %d) runs with %s, not %s: reloaded here; it keeps "
                    "its own config until it gets a SIGHUP", pid, watched or "another "
                    "config", ours)
        return False
    log.info("a watcher (pid %d) runs with this config: reloading through it", pid)
    return True


def _via_watcher(prog: str, role: Role, args: argparse.Namespace) -> int:
    """reload --via-watcher: the config was checked above (a bad one is exit 6 here,
    before any signal); the watcher's own result gives the exit code, as the CLI's
    reload would have had it."""
    from .watch import watch_reload

    result = watch_reload(role.paths, args.wait)
    code = int(result["code"])
    if code != 0:
        failed = LvsError(f"the watcher's reload failed: {result['error']}")
        failed.exit_code = code  # 6 for a config it refused, 1 for a command that failed
        raise failed
    for line in [*result["notes"], *result["warnings"]]:
        log.warning("%s", line)
    applied = result["applied"]
    summary = f"{prog} {args.action}: " + (
        f"{len(applied)} change(s) applied by the watcher" if applied else
        "nothing to do (the watcher reloaded)")
    log.info("%s", summary)
    if args.json:
        _write_json({"code": 0, "action": args.action, "changed": bool(applied),
                     "applied": applied, "warnings": result["warnings"],
                     "notes": result["notes"], "via_watcher": True})
    else:
        _write(f"{summary}\n")
    return 0


def _admin(prog: str, role: Role, args: argparse.Namespace) -> int:
    """disable/enable: persisted in the health file, then applied at once (weight 0, or the
    weight health allows)."""
    from .admin import admin_update
    from .director import Director

    assert isinstance(role, Director)  # noqa: S101 - only lvs-director has these actions
    update, said = admin_update(role.config, args.action, args.address, args.service)
    report, _view = role.apply_health(args.action, update)
    for warning in report.outcome.warnings:
        log.warning("%s", warning)
    done = f"{len(report.outcome.applied)} change(s) applied" if report.changed else \
        "nothing to change in the kernel"
    summary = f"{prog} {args.action}: {said}; {done}"
    log.info("%s", summary)
    if args.json:
        _write_json({**_actions_json(args.action, [report]), "admin": said})
    else:
        _write(f"{summary}\n")
    return 0


def _act(prog: str, role: Role, args: argparse.Namespace) -> int:
    """A changing action, for real: the summary (or --json report) on stdout."""
    if args.action == "restart":
        reports = list(role.restart())
    elif args.action in ("reload", "force-reload"):
        reports = [role.reload(args.action)]
    elif args.action == "start":
        reports = [role.start()]
    else:
        reports = [role.stop()]
    for report in reports:
        for note in report.plan.notes:
            log.warning("%s", note)
        for warning in report.outcome.warnings:
            log.warning("%s", warning)
        log.info("%s", _summary(prog, report))
    if args.json:
        _write_json(_actions_json(args.action, reports))
    else:
        _write("".join(f"{_summary(prog, report)}\n" for report in reports))
    return 0


def _actions_json(action: str, reports: list[Report]) -> dict[str, Any]:
    """One object per run; restart lists its stop and its start under "reports"."""
    parts = [{"action": report.action, "changed": report.changed,
              "applied": list(report.outcome.applied),
              "warnings": list(report.outcome.warnings),
              "notes": list(dict.fromkeys(report.plan.notes))} for report in reports]
    if len(parts) == 1:
        return {"code": 0, **parts[0]}
    return {"code": 0, "action": action, "changed": any(r.changed for r in reports),
            "reports": parts}


def _dry_run(role: Role, action: str) -> int:
    script, notes = role.dry_run(action)
    notes = list(dict.fromkeys(notes))  # once each, in order
    for note in notes:
        log.warning("%s", note)
    _write(_with_notes(script, notes))
    return 0


def _with_notes(script: str, notes: list[str]) -> str:
    """The notes as comments under the script's title: what the plan assumed (a tool
    missing, a table it could not read) stays with the script when stderr is not kept."""
    if not notes:
        return script
    shebang, title, body = script.split("\n", 2)
    comments = "".join(f"# note: {line}\n" for note in notes for line in note.splitlines())
    return f"{shebang}\n{title}\n{comments}{body}"


def _write_json(data: dict[str, Any]) -> None:
    import json  # not at the top: --help loads as little as it can

    _write(json.dumps(data, indent=2) + "\n")


def _write(text: str) -> None:
    """stdout may be a pipe whose reader has gone (`status | head -3`): only output is lost,
    the action's result and exit code stand."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null: Python flushes stdout again at exit, and a second
    BrokenPipeError there would print "Exception ignored" on stderr."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (tests capture it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _defer_signals(role: Role) -> None:
    """SIGTERM and Ctrl-C end the action between two steps, never inside one: what ran is
    recorded in the state file, and the run lock is released on the way out."""

    def request_stop(signum: int, _frame: object) -> None:
        log.warning("%s received: stopping after the current step",
                    signal.Signals(signum).name)
        role.stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def _from_state_alone(role_name: str, prog: str, args: argparse.Namespace,
                      err: ConfigError) -> int:
    """The config cannot be used (broken, removed, naming what is gone): stop still undoes
    what the state file lists, and status still shows it; neither needs the config."""
    role = build_role(role_name, prog, None, args, config_error=err)
    log.info("%s called with %s, without a usable config", prog, args.action)
    if args.action == "status":
        return _status_owned(prog, role, err, args.json)
    log.warning("%s; stopping from the state file %s alone", err, role.paths.state_file)
    _defer_signals(role)
    if args.dry_run:
        return _dry_run(role, "stop")
    if os.geteuid() != 0:
        raise NotRoot(f"{prog} stop changes addresses, routes and IPVS rules: run it as "
                      "root (or try --dry-run)")
    return _act(prog, role, args)


def _status_owned(prog: str, role: Role, err: ConfigError, as_json: bool) -> int:
    """LSB status 4 (unknown): the host cannot be compared with a config that cannot be
    read, but what the state file says we own is known."""
    owned = role.state().describe()
    if as_json:
        _write_json({"code": STATUS_UNKNOWN, "error": str(err), "owned": owned})
        return STATUS_UNKNOWN
    log.error("status unknown: %s", err)
    lines = [f"{prog}: status unknown: the config cannot be read; the state file "
             f"{role.paths.state_file} lists {len(owned)} thing(s) {prog} set up",
             *(f"  {line}" for line in owned)]
    _write("".join(f"{line}\n" for line in lines))
    return STATUS_UNKNOWN


def _status(prog: str, role: Role, as_json: bool, tolerant: bool) -> int:
    status = role.status(tolerant)
    if as_json:
        _write_json(status.to_json())
        return status.code
    lines = [f"{prog}: {status.summary}", *(f"  {line}" for line in status.details),
             *(f"  needed: {line}" for line in status.drift),
             *(f"  note: {note}" for note in status.notes)]
    _write("".join(f"{line}\n" for line in lines))
    return status.code


def director_main(argv: Sequence[str] | None = None) -> int:
    return run("director", "lvs-director", DIRECTOR_ACTIONS, DIRECTOR_WHAT, argv)


def realserver_main(argv: Sequence[str] | None = None) -> int:
    return run("realserver", "lvs-realserver", REALSERVER_ACTIONS, REALSERVER_WHAT, argv)


def parser(prog: str) -> argparse.ArgumentParser:
    """The parser of `lvs-director` or `lvs-realserver`: what --help prints, and the source
    of their man pages and of the tests of the bash completion (lvs_scripts/manpage.py)."""
    if prog == "lvs-director":
        return _parser(prog, DIRECTOR_ACTIONS, DIRECTOR_WHAT, drains=True)
    if prog == "lvs-realserver":
        return _parser(prog, REALSERVER_ACTIONS, REALSERVER_WHAT, drains=False)
    raise ValueError(f"no such program: {prog}")
