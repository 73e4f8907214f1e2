"""Boot the lab VM, run one command inside it, and get its exit code back.

The exit code is read from the results share, where the guest's /init
writes it; the console is only shown (and kept in ``console.log``), never
parsed, so a program that prints "exit 0" cannot fool the caller.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.prepare import LabImage

CHECKOUT = Path(__file__).resolve().parent.parent

# Inside the guest, where /init mounts the results share.
GUEST_RESULTS = "/run/lab-results"

# Passed through from the caller's environment when set; everything else is
# dropped so that the guest run does not depend on the caller's shell.
PASSED_VARIABLES = (
    "HOME", "LANG", "LC_ALL", "TZ", "CI", "PYTEST_ADDOPTS",
    "NO_COLOR", "PY_COLORS", "FORCE_COLOR",
)  # fmt: skip

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class GuestRun:
    """How one boot went. ``exit_code`` is None when the guest never said."""

    exit_code: int | None
    timed_out: bool
    seconds: float
    results: Path
    console: str


def guest_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """PATH with the checkout's venv first, a few caller variables, LVS_LAB=1."""
    venv_bin = CHECKOUT / ".venv" / "bin"
    path = [str(venv_bin)] if venv_bin.is_dir() else []
    for entry in (os.environ.get("PATH", "") + ":" + SBIN_PATH).split(":"):
        if entry and entry not in path:
            path.append(entry)
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    env.update(
        PATH=":".join(path),
        LVS_LAB="1",
        LAB_RESULTS=GUEST_RESULTS,
        # stdout and stderr share the console: keep them in the order written
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("HOME", "/root")
    # The guest's console is a serial line, and a tty: without this, pytest
    # and others would colour output that mostly ends up in logs. PY_COLORS=1
    # or FORCE_COLOR=1 from the caller still turn colours on.
    env["TERM"] = "dumb"
    env.setdefault("LANG", "C.UTF-8")
    env.update(extra or {})
    return env


def command_script(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """The shell script that the guest's /init runs in the chroot."""
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
    return (
        "# written by lab/vm.py; run by the guest's /init in the chroot\n"
        f"cd {shlex.quote(str(cwd))} || exit 125\n"
        f"exec env -i {assignments} {shlex.join(argv)}\n"
    )


def qemu_argv(image: LabImage, results: Path, memory_mb: int = 1024, cpus: int = 2) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-accel", "tcg",  # KVM is present on these machines but hangs
        "-cpu", "max",
        "-smp", str(cpus),
        "-m", str(memory_mb),
        "-nic", "none",  # no network card: nothing may leave the VM
        "-no-reboot",
        "-nographic",
        # SeaBIOS would also print to the serial line, with escape codes that
        # reset the caller's terminal (and turn off line wrapping).
        "-fw_cfg", "name=etc/sercon-port,string=0",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initramfs),
        "-append", "console=ttyS0 panic=-1 quiet",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={results},mount_tag=results,security_model=none",
    ]  # fmt: skip


def run(
    image: LabImage,
    argv: list[str],
    results: Path,
    *,
    cwd: Path = CHECKOUT,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    echo: bool = True,
) -> GuestRun:
    """Boot, run ``argv`` in the guest (cwd ``cwd``), power off.

    ``results`` is emptied first; the guest sees it as ``$LAB_RESULTS``.
    """
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    # The kernel modules, for a test that unloads one (a real fault) and loads it back.
    environment = guest_environment({"LAB_MODULES": str(image.kernel.parent / "modules"),
                                     **(env or {})})
    (results / "command.sh").write_text(command_script(argv, cwd, environment))
    started = time.monotonic()
    process = subprocess.Popen(
        qemu_argv(image, results),
        stdin=subprocess.DEVNULL,  # not a tty: QEMU leaves the terminal alone
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    chunks: list[bytes] = []
    readers = [
        threading.Thread(target=_pump, args=(process, chunks, echo), daemon=True),
        threading.Thread(target=_pump_stderr, args=(process,), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.kill()
        process.wait()
    except KeyboardInterrupt:
        process.kill()
        process.wait()
        raise
    finally:
        for reader in readers:
            reader.join(timeout=5)
    seconds = time.monotonic() - started
    console = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    (results / "console.log").write_text(console)
    return GuestRun(
        exit_code=None if timed_out else _read_exit_code(results),
        timed_out=timed_out,
        seconds=seconds,
        results=results,
        console=console,
    )


def _pump(process: subprocess.Popen[bytes], chunks: list[bytes], echo: bool) -> None:
    """Copy the serial console to our stdout as it comes, and keep a copy."""
    assert process.stdout is not None  # noqa: S101 - set by Popen above
    out = sys.stdout.buffer
    while True:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            return
        chunks.append(chunk)
        if echo:
            out.write(chunk.replace(b"\r\n", b"\n"))
            out.flush()


def _pump_stderr(process: subprocess.Popen[bytes]) -> None:
    """QEMU's own messages, less its warning about the sercon-port name."""
    assert process.stderr is not None  # noqa: S101 - set by Popen above
    for line in process.stderr:
        if b"sercon-port" not in line:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()


def _read_exit_code(results: Path) -> int | None:
    try:
        return int((results / "exit-code").read_text().strip())
    except (OSError, ValueError):
        return None
