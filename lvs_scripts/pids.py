"""Pid files and processes, read only: is the daemon a pid file names alive, and is it
the one we started (its command line names our config file)?"""

from __future__ import annotations

import os

MAX_PID_FILE = 64


def read_pid(path: str) -> int | None:
    """The pid in a pid file, or None (no file, or not a positive number)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_PID_FILE).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 1 << 22 else None


def pid_alive(pid: int) -> bool:
    """Does the process exist (and is it not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ')' (comm may hold anything).
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def running_with(pid_file: str, program: str, config_file: str) -> int | None:
    """The pid of `program -f config_file` named by pid_file, if alive: a pid reused by
    another process, or a keepalived someone else started, is not ours."""
    pid = read_pid(pid_file)
    if pid is None or not pid_alive(pid):
        return None
    argv = cmdline(pid)
    if not argv or os.path.basename(argv[0]) != program:
        return None
    return pid if config_file in argv else None
