"""The executor: the only code in lvs_scripts that starts programs.

Commands are argv lists, never shell strings. Programs are looked up through
plumbum at call time (`local[name]`), so importing lvs_scripts works on a
machine without ipvsadm, and a missing program becomes MissingTool (LSB 5).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import CommandFailed, IpvsDenied, IpvsUnavailable, KernelLacks, MissingTool
from .record import Record
from .render import shell_line

log = logging.getLogger("lvs_scripts")

# Parsers read English messages and fixed formats: never let a locale translate them.
_C_LOCALE = {"LANG": "C", "LC_ALL": "C"}
# procps sysctl can exit 0 after printing "sysctl: permission denied on key ..." (and some
# versions do so for every -w failure): for sysctl, anything on stderr is a failure.
_STDERR_MEANS_FAILURE = frozenset({"sysctl"})
_NO_IPVS_MARKERS = ("Protocol not available", "Can't initialize ipvs")
# libipvs's ipvs_strerror(EPERM), also inside "Can't initialize ipvs: ...": checked first,
# or a user without the right to read the table would be told the kernel lacks IPVS.
_DENIED_MARKER = "Permission denied (you must be root)"
# libipvs's ipvs_strerror(ENOENT) for -A/-E: the kernel could not find (or load) the
# scheduler's or the persistence engine's module (captured in the lab: rmmod ip_vs_mh).
_NO_MODULE_MARKER = "Scheduler or persistence engine not found"
# plumbum imports urllib.request at its own import, for LocalPath.as_uri, which we never
# call; urllib.request imports http.client, email, ssl and socket: about half of plumbum's
# import (0.4 s of 0.75 s in the lab VM). plumbum names it in its __lazy_modules__ (PEP
# 810), which only Python 3.15 honours: before that, a stand-in (_Unused) is imported.
_PLUMBUM_UNUSED = ("urllib.request",)


class Result(Record):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """What the rest of the library needs from an executor (tests pass fakes)."""

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result: ...


class PlumbumRunner:
    """Runs commands through plumbum with LANG=C, logging each argv before it runs."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log
        self.count = 0  # programs started, for benchmarks and -v summaries

    def prepare(self) -> None:
        """Import plumbum now rather than at the first program. For a daemon, before it
        says it is ready: its first change would otherwise pay for the import, which
        is seconds on a slow CPU (the lab measured 1.4-2.2 s from a failure to weight 0
        spent in an apply of one `ipvsadm -e`)."""
        _import_plumbum()

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        _import_plumbum()  # here, not at the top: plumbum costs ~0.1 s at start-up
        from plumbum import local
        from plumbum.commands.processes import CommandNotFound

        argv = tuple(argv)
        program = argv[0]
        try:
            command = local[program]
        except CommandNotFound:
            raise MissingTool(program) from None
        bound = command[list(argv[1:])].with_env(**_C_LOCALE)
        if stdin is not None:
            bound = bound << stdin
        self.log.debug("run: %s", shell_line(argv))
        self.count += 1
        try:
            rc, out, err = bound.run(retcode=None)
        except OSError as err_:  # found on PATH but not executable, and the like
            raise CommandFailed(argv, 126, os.strerror(err_.errno or 0)) from None
        result = Result(argv, int(rc), str(out), str(err))
        if check:
            check_result(result)
        return result


def _import_plumbum() -> None:
    if "plumbum" in sys.modules:
        return
    stand_ins = {name: _Unused(name) for name in _PLUMBUM_UNUSED if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        import plumbum  # noqa: F401
    finally:  # gone from sys.modules: whoever imports these next gets the real module
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if getattr(sys.modules.get(parent), child, None) is stand_in:
                delattr(sys.modules[parent], child)


class _Unused(types.ModuleType):
    """Stands in for a module while plumbum is imported, and stays plumbum's: the first
    use of one of its attributes (none, in lvs_scripts) imports the real module.
    importlib.util.LazyLoader cannot do this: an `import` statement of a lazy module
    already loads it."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def check_result(result: Result) -> None:
    """Turn a failed Result into the one error type (shared by every Runner)."""
    program = os.path.basename(result.argv[0])
    if program == "ipvsadm" and result.returncode != 0:
        if _DENIED_MARKER in result.stderr:
            raise IpvsDenied(result.argv, result.stderr)
        if any(marker in result.stderr for marker in _NO_IPVS_MARKERS):
            raise IpvsUnavailable(result.stderr)
        if _NO_MODULE_MARKER in result.stderr and "-R" not in result.argv:
            raise KernelLacks(f"`{shell_line(result.argv)}`: the kernel said \"{_NO_MODULE_MARKER}"
                              "\": it has no module for this scheduler (ip_vs_SCHED) or "
                              "persistence engine (ip_vs_pe_NAME): load it (modprobe), or "
                              "choose one this kernel has")
    failed = result.returncode != 0 or (
        program in _STDERR_MEANS_FAILURE and result.stderr.strip() != "")
    if failed:
        raise CommandFailed(result.argv, result.returncode, result.stderr)
