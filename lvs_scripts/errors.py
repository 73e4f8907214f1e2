"""The error tree. Only the CLI turns these into exit codes (LSB init-script codes)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .render import shell_line


class LvsError(Exception):
    """Anything lvs_scripts reports to its user."""

    exit_code = 1


class ConfigError(LvsError, ValueError):
    """The config file is missing or invalid. Always names the file, the key and the value."""

    exit_code = 6

    def __init__(self, path: str, key: str, value: object, rule: str) -> None:
        self.path = path
        # Key names come from the file too: escaped like values, so that a key holding a
        # terminal escape sequence cannot reach the terminal through a message.
        self.key = shown_key(key)
        self.value = value
        self.rule = rule
        where = f"{path}: {self.key}" if key else path
        shown = "" if value is None else f" = {_shown(value)}"
        super().__init__(f"{where}{shown}: {rule}")


def _shown(value: object, limit: int = 80) -> str:
    """A value for an error message: short, and never an error itself (repr of an int
    of more than 4300 digits raises ValueError)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def shown_key(key: str, limit: int = 80) -> str:
    """A key name for a message: non-printable characters escaped as repr() escapes them
    (ESC becomes \\x1b), no quotes added, at most `limit` characters."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in key)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


class CommandFailed(LvsError):
    """A program exited non-zero (or, for sysctl, complained on stderr)."""

    exit_code = 1

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        detail = f": {self.stderr}" if self.stderr else ""
        super().__init__(f"`{shell_line(self.argv)}` exited {returncode}{detail}")


class MissingTool(LvsError):
    """A required program is not installed (LSB 5: program not installed)."""

    exit_code = 5

    def __init__(self, program: str, hint: str = "") -> None:
        self.program = program
        advice = hint or f"install it (Debian: apt-get install {_PACKAGES.get(program, program)})"
        super().__init__(f"{program} not found on PATH: {advice}")


class IpvsUnavailable(MissingTool):
    """ipvsadm runs but the kernel has no IPVS support."""

    def __init__(self, stderr: str) -> None:
        said = " / ".join(line.strip() for line in stderr.strip().splitlines()[:2])
        fix = ("this kernel has no ip_vs module: boot one built with CONFIG_IP_VS (Debian's "
               "standard kernels are)" if "Module ip_vs not found" in stderr else
               "load it with `modprobe ip_vs`, or boot a kernel built with CONFIG_IP_VS")
        LvsError.__init__(self, f"the kernel has no IPVS support (ipvsadm said: "
                                f"{said or 'nothing'}): {fix}")
        self.program = "ipvsadm"


_KERNEL_OPTIONS = {"ipip": "CONFIG_NET_IPIP", "fou": "CONFIG_NET_FOU",
                   "fou6": "CONFIG_IPV6_FOU", "ip_gre": "CONFIG_NET_IPGRE",
                   "ip6_tunnel": "CONFIG_IPV6_TUNNEL", "ip6_gre": "CONFIG_IPV6_GRE"}


class NotRoot(LvsError):
    """A real run needs root (LSB 4: insufficient privilege)."""

    exit_code = 4


class IpvsDenied(NotRoot):
    """ipvsadm was refused the IPVS table (libipvs says "Permission denied (you must be
    root)"): not root, or root without CAP_NET_ADMIN. Says what was refused to whom."""

    def __init__(self, argv: Sequence[str], stderr: str) -> None:
        self.argv = tuple(argv)
        self.program = "ipvsadm"
        self.said = " / ".join(line.strip() for line in stderr.strip().splitlines()[:1])
        self.user = current_user()
        reads = len(self.argv) > 1 and self.argv[1] in ("-S", "--save", "-L", "-l", "--list")
        self.what = f"the IPVS table could not be {'read' if reads else 'changed'} as user " \
                    f"{self.user}"
        fix = ("run it as root" if os.geteuid() != 0 else
               "this root lacks CAP_NET_ADMIN (a container, or a service with restricted "
               "capabilities?): grant it")
        super().__init__(f"{self.what} (ipvsadm said: {self.said or 'nothing'}): {fix}")


def current_user() -> str:
    """`name (uid N)` of the effective user, for messages about permissions."""
    uid = os.geteuid()
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):  # no passwd entry (containers, tests): the number only
        return f"uid {uid}"


class StateError(LvsError):
    """The state file cannot be read or written."""

    exit_code = 1


class Busy(LvsError):
    """Another run of the same tool holds the lock."""

    exit_code = 1


class Interrupted(LvsError):
    """SIGTERM or Ctrl-C arrived; the step under way was finished and recorded first."""

    exit_code = 1


class ApplyFailed(LvsError):
    """A step of a plan failed: says what was applied before it and what was not."""

    exit_code = 1

    def __init__(self, cause: LvsError, applied: Sequence[str], remaining: Sequence[str]) -> None:
        self.cause = cause
        if isinstance(cause, KernelLacks):  # what the host lacks is LSB 5 however far it got
            self.exit_code = cause.exit_code
        self.applied = tuple(applied)
        self.remaining = tuple(remaining)
        lines = [str(cause)]
        if self.applied:
            lines.append(f"applied before the failure ({len(self.applied)}):")
            lines.extend(f"  {line}" for line in self.applied)
        else:
            lines.append("nothing was applied before the failure")
        if self.remaining:
            lines.append(f"not applied ({len(self.remaining)}):")
            lines.extend(f"  {line}" for line in self.remaining)
        lines.append("the state file records only what was applied; run the action again to finish")
        super().__init__("\n".join(lines))


_PACKAGES = {"ipvsadm": "ipvsadm", "ip": "iproute2", "sysctl": "procps", "arping": "iputils-arping",
             "nft": "nftables"}


class KernelLacks(LvsError):
    """The running kernel lacks a part the config needs (a scheduler or persistence engine
    module, nf_tables): LSB 5, like a missing program."""

    exit_code = 5


class TunnelModuleMissing(KernelLacks):
    """The running kernel has no module a TUN real server or director needs (LSB 5)."""

    def __init__(self, module: str, path: str, detail: str = "") -> None:
        self.module = module
        option = _KERNEL_OPTIONS.get(module, "it")
        what = detail or f"the kernel has no {module} module (modprobe -n {module} fails)"
        super().__init__(f"{what}, which forwarding = \"tun\" in {path} needs: boot a kernel "
                         f"built with {option} (Debian's standard kernels are), or install "
                         "its modules package")


class DaemonTimeout(LvsError):
    """A daemon we started did not come up (or one we stopped did not exit) in time."""

    exit_code = 1


class UsageError(LvsError):
    """The command line names something the config does not have (e.g. `disable` of an
    address that is no real server)."""

    exit_code = 2


class WatcherNotRunning(LvsError):
    """`reload --via-watcher` with no `lvs-director watch` running to signal (LSB: 7,
    "program is not running")."""

    exit_code = 7
