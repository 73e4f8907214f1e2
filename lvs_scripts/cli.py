"""The command lines `lvs-director` and `lvs-realserver`: the only place that turns
errors into exit codes. `main(argv) -> int` is callable from tests."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import LvsError, NotRoot

if TYPE_CHECKING:  # the CLI imports the library only once an action runs: --help stays fast
    from .role import Report, Role

# Defaults repeated here rather than imported, for the same reason (tests keep them equal).
DEFAULT_CONFIG = "/etc/lvs/lvs.toml"
DEFAULT_STATE_DIR = "/run/lvs-scripts"
DEFAULT_LOCK_DIR = "/var/lock/subsys"

log = logging.getLogger("lvs_scripts")

DIRECTOR_ACTIONS = ("start", "stop", "restart", "reload", "force-reload", "status")
REALSERVER_ACTIONS = ("start", "stop", "restart", "reload", "force-reload", "status")
CHANGING = {"start", "stop", "restart", "reload", "force-reload"}


def _parser(prog: str, actions: tuple[str, ...], what: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=what,
        epilog="Exit codes (LSB): 0 ok, 1 a command failed, 2 bad arguments, 4 not root, "
               "5 a program or kernel IPVS support is missing, 6 config missing or invalid. "
               "status: 0 running as configured, 2 stopped but lock file present, "
               "3 not running, 150 running but different from the config.")
    parser.add_argument("action", choices=actions)
    parser.add_argument("-c", "--config", default=os.environ.get("LVS_CONFIG", DEFAULT_CONFIG),
                        help=f"config file (default: $LVS_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="print the commands as a shell script; change nothing")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each command as it runs")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--state-dir",
                        default=os.environ.get("LVS_STATE_DIR", DEFAULT_STATE_DIR),
                        help=f"where state is kept (default: $LVS_STATE_DIR or "
                             f"{DEFAULT_STATE_DIR})")
    parser.add_argument("--lock-dir", default=os.environ.get("LVS_LOCK_DIR", DEFAULT_LOCK_DIR),
                        help=f"where the subsys lock file goes (default: $LVS_LOCK_DIR or "
                             f"{DEFAULT_LOCK_DIR})")
    parser.add_argument("--no-drain", action="store_true",
                        help="start/reload: delete leaving real servers at once instead of "
                             "setting weight 0 and waiting for their connections")
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for another run to finish (default 60)")
    return parser


def _setup_logging(prog: str, verbose: bool) -> None:
    log.setLevel(logging.DEBUG)
    log.handlers.clear()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.DEBUG if verbose else logging.WARNING)
    stderr.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    log.addHandler(stderr)
    # The original scripts called `logger $0 called with $1`: keep a syslog trail.
    if os.environ.get("LVS_SYSLOG", "1") != "0" and os.path.exists("/dev/log"):
        try:
            syslog = logging.handlers.SysLogHandler(address="/dev/log")
        except OSError:
            return
        syslog.setLevel(logging.INFO)
        syslog.setFormatter(logging.Formatter(f"{prog}[{os.getpid()}]: %(message)s"))
        log.addHandler(syslog)


def _summary(prog: str, report: Report) -> str:
    if not report.changed:
        return f"{prog} {report.action}: nothing to do"
    return f"{prog} {report.action}: {len(report.outcome.applied)} change(s) applied"


def _role_class(role: str) -> type[Role]:
    if role == "director":
        from .director import Director

        return Director
    from .realserver import RealServer

    return RealServer


def run(role: str, prog: str, actions: tuple[str, ...], what: str,
        argv: Sequence[str] | None) -> int:
    args = _parser(prog, actions, what).parse_args(argv)
    _setup_logging(prog, args.verbose)
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(_role_class(role), prog, args)
    except LvsError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 1
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _run(role_class: type[Role], prog: str, args: argparse.Namespace) -> int:
    from .config import load_config
    from .locks import Paths

    config = load_config(args.config)
    role = role_class(config, paths=Paths(prog, args.state_dir, args.lock_dir),
                      wait_seconds=args.wait, drain=not args.no_drain)
    log.info("%s called with %s", prog, args.action)
    _defer_signals(role)
    if args.dry_run and args.action != "status":
        script, notes = role.dry_run(args.action)
        for note in dict.fromkeys(notes):  # once each, in order
            log.warning("%s", note)
        sys.stdout.write(script)
        return 0
    if args.action in CHANGING and os.geteuid() != 0:
        raise NotRoot(f"{prog} {args.action} changes addresses, routes and IPVS rules: "
                      "run it as root (or try --dry-run)")
    if args.action == "status":
        return _status(prog, role, args.json, tolerant=args.dry_run)
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
        print(_summary(prog, report))
    return 0


def _defer_signals(role: Role) -> None:
    """SIGTERM and Ctrl-C end the action between two steps, never inside one: what ran is
    recorded in the state file, and the run lock is released on the way out."""

    def request_stop(signum: int, _frame: object) -> None:
        log.warning("%s received: stopping after the current step",
                    signal.Signals(signum).name)
        role.stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def _status(prog: str, role: Role, as_json: bool, tolerant: bool) -> int:
    status = role.status(tolerant)
    if as_json:
        import json

        print(json.dumps(status.to_json(), indent=2))
        return status.code
    print(f"{prog}: {status.summary}")
    for line in status.details:
        print(f"  {line}")
    for line in status.drift:
        print(f"  needed: {line}")
    for note in status.notes:
        print(f"  note: {note}")
    return status.code


def director_main(argv: Sequence[str] | None = None) -> int:
    return run("director", "lvs-director", DIRECTOR_ACTIONS,
               "Set up an LVS director (VIPs, default route, IPVS services) from the "
               "shared config file.", argv)


def realserver_main(argv: Sequence[str] | None = None) -> int:
    return run("realserver", "lvs-realserver", REALSERVER_ACTIONS,
               "Set up an LVS-DR real server (VIPs on lo, ARP settings) from the shared "
               "config file.", argv)
