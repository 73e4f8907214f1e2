"""``python -m lab``: prepare the lab, run things in it, show the demo.

python -m lab prepare             # install, download, build (cached)
python -m lab run -- CMD [ARG..]  # boot, run CMD in the checkout, exit with its code
python -m lab pytest [ARGS]       # the real-kernel tests (tests/e2e, marker "lab")
python -m lab demo                # the how-to's DR set-up through our init.d scripts, checked
python -m lab demo --manual       # the same by hand with ipvsadm/ip/sysctl (phase 1)
python -m lab demo --ha           # two directors: crash failover, failback, planned stop
python -m lab capture             # refresh tests/data/captured/ from the real kernel
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lab import vm
from lab.prepare import LabImage, LabUnavailable, prepare

RESULTS_ROOT = vm.CHECKOUT / "lab-results"

# Exit code when the guest never reported one (timeout, crash, failed boot);
# 124 is what timeout(1) uses.
NO_EXIT_CODE = 124


def main(argv: list[str] | None = None) -> int:
    # parse_known_args: whatever is not ours is the command to run (run) or
    # pytest's own arguments (pytest), options included.
    args, rest = _parser().parse_known_args(argv)
    if rest and args.command not in ("run", "pytest"):
        print(f"lab: unexpected arguments: {' '.join(rest)}", file=sys.stderr)
        return 2
    args.rest = rest[1:] if rest[:1] == ["--"] else rest
    try:
        return int(args.func(args))
    except LabUnavailable as error:
        print(f"lab: unavailable: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the VM is already killed by then
        print("lab: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("prepare", cmd_prepare, "install what the lab needs and build the VM image"),
        ("run", cmd_run, "boot the VM and run a command in the checkout: run -- CMD [ARGS]"),
        ("pytest", cmd_pytest, "run the lab tests (tests/e2e) inside the VM: pytest [ARGS]"),
        ("demo", cmd_demo, "the how-to's DR topology, configured by init.d and checked"),
        ("capture", cmd_capture, "record real outputs into tests/data/captured/"),
    ):
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False)
        sub.set_defaults(func=func)
        # The lab tests make ~40 CLI calls of 6-15 s each (more when the host is busy).
        timeout = 1800 if name == "pytest" else 600
        sub.add_argument(
            "--vm-timeout",
            type=float,
            default=timeout,
            metavar="SECONDS",
            help=f"kill the VM after this long (default {timeout})",
        )
        if name == "demo":
            which = sub.add_mutually_exclusive_group()
            which.add_argument(
                "--manual",
                action="store_true",
                help="configure DR by hand with ipvsadm/ip/sysctl instead (lab/scenario_manual.sh)",
            )
            which.add_argument(
                "--ha",
                action="store_true",
                help="two directors (keepalived's VRRP, IPVS sync daemons): a crash "
                "failover, failback and a planned stop (lab/scenario_ha.sh)",
            )
    return parser


def cmd_prepare(args: argparse.Namespace) -> int:
    started = time.monotonic()
    image = prepare()
    _describe(image)
    print(f"lab: ready in {time.monotonic() - started:.1f} s")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    argv = args.rest
    if not argv:
        print("lab: nothing to run: python -m lab run -- CMD [ARGS]", file=sys.stderr)
        return 2
    return boot(argv, "run", args.vm_timeout)


def cmd_pytest(args: argparse.Namespace) -> int:
    if not (vm.CHECKOUT / "tests" / "e2e").is_dir():
        print("lab: tests/e2e does not exist yet: no lab tests to run")
        return 0
    pytest = vm.CHECKOUT / ".venv" / "bin" / "pytest"
    if not pytest.exists():
        print(f"lab: {pytest} not found: make the venv first (make venv)", file=sys.stderr)
        return 2
    argv = [str(pytest), "-m", "lab", "-p", "no:cacheprovider"]
    # Paths among the arguments (tests/e2e/test_x.py::test_y) replace the default tests/e2e.
    if not any(_is_test_path(arg) for arg in args.rest):
        argv.append("tests/e2e")
    return boot(argv + args.rest, "pytest", args.vm_timeout)


def _is_test_path(arg: str) -> bool:
    return not arg.startswith("-") and (vm.CHECKOUT / arg.split("::", 1)[0]).exists()


def cmd_demo(args: argparse.Namespace) -> int:
    script = ("lab/scenario_manual.sh" if args.manual else
              "lab/scenario_ha.sh" if args.ha else "lab/scenario_initd.sh")
    return boot(["bash", script], "demo-ha" if args.ha else "demo", args.vm_timeout)


def cmd_capture(args: argparse.Namespace) -> int:
    from lab import capture  # only this command needs it

    image = prepare()
    with results_folder("capture") as results:
        return capture.capture(image, results, args.vm_timeout)


def boot(argv: list[str], name: str, timeout: float) -> int:
    """Prepare (cached), boot once, run argv, report, return its exit code."""
    image = prepare()
    with results_folder(name) as results:
        print(f"lab: booting {image.kernel_release} to run: {' '.join(argv)}", flush=True)
        outcome = vm.run(image, argv, results, timeout=timeout)
    return report(outcome, timeout)


@contextlib.contextmanager
def results_folder(name: str, root: Path = RESULTS_ROOT) -> Iterator[Path]:
    """root/NAME, held for the run; root/NAME-PID while another run of this checkout holds
    NAME (a run empties its folder first: two runs must never share one)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            own = root / f"{name}-{os.getpid()}"
            print(f"lab: {root / name} is in use by another run; results go to {own}",
                  flush=True)
            yield own
        else:
            yield root / name


def report(outcome: vm.GuestRun, timeout: float) -> int:
    where = f"console log: {outcome.results / 'console.log'}"
    if outcome.timed_out:
        print(f"lab: killed after {timeout:.0f} s timeout ({where})", file=sys.stderr)
        return NO_EXIT_CODE
    if outcome.exit_code is None:
        print(f"lab: the guest did not report an exit code ({where})", file=sys.stderr)
        return NO_EXIT_CODE
    print(f"lab: guest command exited {outcome.exit_code} after {outcome.seconds:.1f} s")
    return outcome.exit_code


def _describe(image: LabImage) -> None:
    print(f"lab: kernel {image.kernel_release}: {image.kernel}")
    print(f"lab: initramfs: {image.initramfs} ({len(image.modules)} modules)")
    if image.missing:
        print(f"lab: not in this kernel: {' '.join(image.missing)}")


if __name__ == "__main__":
    sys.exit(main())
