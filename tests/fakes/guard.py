"""Keep the host's real `ip`, `ipvsadm`, `sysctl`, `arping` and `modprobe` out of tests.

`RealToolGuard.install(monkeypatch)` wraps every way this Python process
starts a program: `subprocess.Popen._execute_child` (so `subprocess.run`,
`os.popen`, asyncio and plumbum, which binds `Popen` at import time, all go
through it), `os.system`, `os.posix_spawn[p]` and `os.execv[e]` (which
`os.execvp*`, `os.execl*` and `os.spawn*` end in). Before the program starts
the guard works out what would run:

- the executable, by path or looked up on the PATH the child will get;
- for wrappers (`env`, `sudo`, `nice`, `timeout`, `flock`, `xargs`...) the
  words after it, and for `sh -c SCRIPT` / `shell=True` every word of the
  script;

and if any of them is named like a guarded tool but is not one of the fakes
(its real path is not under tests/fakes/bin) it records the attempt and raises
`RealToolBlocked`. That is a BaseException, so `except Exception` in the code
under test does not swallow it; the conftest also fails the test at teardown
for every recorded attempt. A guarded name that resolves to nothing is let
through: it fails with "not found", which is what a missing tool must look
like.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .fakehost import FAKES_BIN, TOOLS

WRAPPERS = {
    "env", "sudo", "doas", "nice", "ionice", "timeout", "setsid", "stdbuf", "nohup",
    "chroot", "nsenter", "unshare", "xargs", "flock", "time", "command", "exec",
    "busybox", "chrt", "taskset", "runuser", "su", "watch", "strace", "ltrace",
}
SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox"}


class RealToolBlocked(BaseException):
    """A test tried to run a real network tool of the host."""


def _is_fake(path: str) -> bool:
    real = Path(os.path.realpath(path))
    return real.parent == FAKES_BIN.resolve()


def _resolve(word: str, env_path: str | None) -> str | None:
    if "/" in word:
        return word
    return shutil.which(word, path=env_path if env_path is not None else os.defpath)


def _script_words(script: str) -> list[str]:
    try:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return [w for w in lexer if w]
    except ValueError:
        return script.split()


def _parse_only(word: str, words: list[str]) -> bool:
    """`bird -p -c FILE` only parses a config and exits: the tests check the generated
    BIRD config with the real one where it is installed."""
    return os.path.basename(word) == "bird" and words[:1] == [word] and "-p" in words[1:] \
        and "-s" not in words and "-P" not in words


class RealToolGuard:
    def __init__(self) -> None:
        self.violations: list[str] = []

    # ------------------------------------------------------------ checking

    def offending(self, argv: Sequence[Any], executable: Any = None,
                  env: dict[str, Any] | None = None, shell: bool = False) -> str | None:
        """The real tool this launch would run, or None."""
        env_path = None
        if env is not None:
            raw = env.get("PATH", env.get(b"PATH")) if hasattr(env, "get") else None
            env_path = os.fsdecode(raw) if raw is not None else os.defpath
        else:
            env_path = os.environ.get("PATH", os.defpath)
        if isinstance(argv, (str, bytes, os.PathLike)):
            argv = [argv]
        words = [os.fsdecode(a) for a in argv]
        if shell:
            candidates = [w for part in words for w in _script_words(part)]
        else:
            program = os.fsdecode(executable) if executable is not None else (
                words[0] if words else "")
            candidates = [program]
            base = os.path.basename(words[0]) if words else ""
            if base in SHELLS and "-c" in words[1:]:
                script = words[words.index("-c", 1) + 1:][:1]
                candidates += [w for s in script for w in _script_words(s)]
            if base in WRAPPERS or os.path.basename(program) in WRAPPERS:
                candidates += words[1:]
        for word in candidates:
            if os.path.basename(word) not in TOOLS:
                continue
            if os.path.basename(words[0] if words else "") == "busybox" and "/" not in word:
                return f"busybox {word}"
            found = _resolve(word, env_path)
            if found is not None and not _is_fake(found) and not _parse_only(word, words):
                return found
        return None

    def check(self, how: str, argv: Sequence[Any], executable: Any = None,
              env: dict[str, Any] | None = None, shell: bool = False) -> None:
        real = self.offending(argv, executable, env, shell)
        if real is not None:
            message = f"{how}: would run the real {real!r} ({list(argv)!r})"
            self.violations.append(message)
            raise RealToolBlocked(message)

    @contextlib.contextmanager
    def expect_block(self) -> Iterator[None]:
        """For tests of the guard: the block must be refused, and that is fine."""
        before = len(self.violations)
        try:
            yield
        except RealToolBlocked:
            del self.violations[before:]
            return
        raise AssertionError("the real tool was not blocked")

    # ------------------------------------------------------------ installing

    def install(self, monkeypatch: Any) -> None:
        guard = self
        original_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]
        signature = inspect.signature(original_execute_child)

        def _execute_child(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs).arguments
            guard.check("subprocess", bound["args"], bound["executable"], bound["env"],
                        bool(bound["shell"]))
            return original_execute_child(*args, **kwargs)

        monkeypatch.setattr(subprocess.Popen, "_execute_child", _execute_child)

        original_system = os.system

        def system(command: Any) -> int:
            guard.check("os.system", [command], shell=True)  # noqa: S604
            return original_system(command)

        monkeypatch.setattr(os, "system", system)

        for name in ("execv", "execve"):
            original = getattr(os, name)

            def exec_wrapper(path: Any, args: Any, *rest: Any, _orig: Any = original,
                             _name: str = name) -> Any:
                env = rest[0] if rest else None
                guard.check(f"os.{_name}", list(args), path, env)
                return _orig(path, args, *rest)

            monkeypatch.setattr(os, name, exec_wrapper)

        for name in ("posix_spawn", "posix_spawnp"):
            if not hasattr(os, name):
                continue
            original = getattr(os, name)

            def spawn_wrapper(path: Any, argv: Any, env: Any, *rest: Any, _orig: Any = original,
                              _name: str = name, **kwargs: Any) -> Any:
                guard.check(f"os.{_name}", list(argv), path, env)
                return _orig(path, argv, env, *rest, **kwargs)

            monkeypatch.setattr(os, name, spawn_wrapper)
