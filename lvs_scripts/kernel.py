"""Does the running kernel have the IPVS modules the config names?

ipvsadm only finds out when the kernel refuses a rule ("Scheduler or persistence engine
not found", captured in tests/data/captured-ipvs-options), by which time part of a start
has run. The kernel loads ip_vs_SCHED (and ip_vs_pe_NAME) on demand through modprobe, so a
module is there if it is loaded (/sys/module/NAME), or modprobe can find it
(/lib/modules/RELEASE/modules.dep) or it is built in (modules.builtin). Where those
files say nothing of IPVS itself (no /lib/modules/RELEASE: a container, a kernel booted
from elsewhere; or a kernel without ip_vs among its modules) nothing can be said, and
the rule is left to the kernel.
"""

from __future__ import annotations

import os
import re

from .errors import KernelLacks
from .model import Config

# Built in or shipped with IPVS itself: nothing to look for.
_DEFAULT = frozenset({"ip_vs_wlc"})


def wanted_modules(config: Config) -> dict[str, str]:
    """module -> the config key that needs it, for each scheduler and persistence engine."""
    wanted: dict[str, str] = {}
    for index, service in enumerate(config.services):
        wanted.setdefault(f"ip_vs_{service.scheduler}", f"service[{index}].scheduler")
        if service.pe is not None:
            wanted.setdefault(f"ip_vs_pe_{service.pe}",
                              f"service[{index}].persistence_engine")
    return wanted


def module_state(name: str, root: str | os.PathLike[str] = "/", release: str | None = None
                 ) -> bool | None:
    """True: loaded, built in or loadable; False: this kernel has no such module; None:
    cannot tell (no /lib/modules/RELEASE). os.path, not pathlib: every start runs this,
    and pathlib is a costly import on a slow machine."""
    if os.path.isdir(os.path.join(root, "sys", "module", name)):
        return True
    release = release or os.uname().release
    folder = os.path.join(root, "lib", "modules", release)
    try:
        dep = _read(os.path.join(folder, "modules.dep"))
    except OSError:
        return None
    try:
        builtin = _read(os.path.join(folder, "modules.builtin"))
    except OSError:
        builtin = ""
    def listed(module: str) -> bool:
        pattern = re.compile(rf"(^|/){re.escape(module)}\.ko(\.[a-z]+)?(:|$)", re.MULTILINE)
        return bool(pattern.search(dep) or pattern.search(builtin))

    if not listed("ip_vs"):
        return None  # these files are not about an IPVS kernel
    return listed(name)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def require_modules(config: Config, root: str | os.PathLike[str] = "/",
                    release: str | None = None) -> None:
    """Raise KernelLacks for a module the kernel surely lacks (one that cannot be checked
    here is left to the kernel, which refuses the rule with ipvsadm's message)."""
    for name, key in wanted_modules(config).items():
        if name in _DEFAULT:
            continue
        found = module_state(name, root, release)
        if found is False:
            value = name.removeprefix("ip_vs_pe_").removeprefix("ip_vs_")
            raise KernelLacks(
                f"{config.path}: {key} = {value!r} needs the kernel module {name}, which "
                f"this kernel ({release or os.uname().release}) does not have: choose "
                "another one, or boot a kernel that has it")
