"""Get everything the lab VM needs, once, and cache it by kernel version.

Steps, each skipped when its result is already there:

1. the host packages (QEMU, busybox, cpio, kmod and the tools the guest runs:
   the guest uses the host's own binaries through the shared root);
2. Debian's standard kernel package, downloaded with ``apt-get download`` and
   unpacked with ``dpkg -x`` (nothing is installed on the host);
3. the kernel modules the guest needs, in load order, worked out by the
   host's ``modprobe --show-depends`` because the guest has no modprobe;
4. a busybox initramfs whose ``/init`` is ``lab/guest_init.sh``.

The cache lives in ``$XDG_CACHE_HOME/lvs-scripts-lab/<kernel release>/``
(``~/.cache`` by default). A second ``prepare`` only checks and returns.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HOST_PACKAGES = (
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "ipvsadm",
    "iproute2",
    "iputils-arping",
    "curl",
    # What the Debian package lvs-scripts depends on: tests/e2e/test_lab_deb.py installs
    # it in the guest with apt-get, offline, so every dependency must be here already.
    "python3-plumbum",
    "python3-aiohttp",
    "python3-prometheus-client",
    "python3-sdnotify",
    "procps",
    # The guest runs the host's binaries through the read-only 9p share: keepalived
    # (director pair), bird2 (BGP), nftables (fwmark services) and ndisc6 (IPv6
    # neighbour advertisements) must be installed here for the lab tests, but their
    # daemons never run here (see below).
    "keepalived",
    "bird2",
    "nftables",
    "ndisc6",
)
# Packages with a daemon that must never start (nor be enabled) on the host: the lab
# only wants their binaries. CI is a fresh Debian 12 machine where apt would start them.
# package -> (systemd unit, daemon's process name)
HOST_SERVICES = {"keepalived": ("keepalived.service", "keepalived"),
                 "bird2": ("bird.service", "bird")}
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

# The meta-package only depends on the versioned one; the standard flavour,
# because the -cloud- kernel has no 9p file system.
KERNEL_META_PACKAGE = "linux-image-amd64"

# Loaded up front in this order (the guest has no modprobe). Their
# dependencies come first, as modprobe lists them.
WANTED_MODULES = (
    # host root over virtio-9p, and a writable overlay on top of it
    "virtio_pci", "9pnet_virtio", "9p", "overlay",
    # IPVS and every scheduler the kernel ships
    "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc",
    "ip_vs_lblcr", "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq",
    "ip_vs_fo", "ip_vs_ovf", "ip_vs_mh", "ip_vs_twos",
    # the lab's network: veth pairs joined by a bridge
    "veth", "bridge",
    # fwmark services: nftables marks the packets (meta, payload and the ip/ip6 families
    # are built into nf_tables); the SIP persistence engine (--pe sip)
    "nf_tables", "ip_vs_pe_sip",
    # LVS-TUN real servers: IPIP (v4, v6), GUE (fou, fou6) and GRE (v4, v6) decapsulation
    "ipip", "ip6_tunnel", "fou", "fou6", "ip_gre", "ip6_gre",
)  # fmt: skip

BUSYBOX = Path("/bin/busybox")
APT_LISTS = Path("/var/lib/apt/lists")
GUEST_INIT = Path(__file__).with_name("guest_init.sh")

Log = Callable[[str], None]


class LabUnavailable(Exception):
    """The lab cannot be prepared here; the message says why in one line."""


@dataclass(frozen=True)
class LabImage:
    """What ``vm.boot`` needs: a kernel and an initramfs that match it."""

    kernel_release: str
    kernel: Path
    initramfs: Path
    modules: tuple[str, ...]  # .ko file names, in load order
    missing: tuple[str, ...]  # wanted modules this kernel does not have


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lvs-scripts-lab"


def prepare(log: Log = print) -> LabImage:
    """Return a ready lab image, building whatever part is missing."""
    ensure_packages(log)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        kernel_dir = _kernel_dir(root, log)
        info = _ensure_kernel(kernel_dir, log)
        initramfs = _ensure_initramfs(kernel_dir, info["modules"], log)
    return LabImage(
        kernel_release=info["release"],
        kernel=kernel_dir / "vmlinuz",
        initramfs=initramfs,
        modules=tuple(info["modules"]),
        missing=tuple(info["missing"]),
    )


# --- 1. host packages -------------------------------------------------------


def missing_packages(packages: tuple[str, ...] = HOST_PACKAGES) -> list[str]:
    result = _run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages])
    installed = {
        line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")
    }
    return [p for p in packages if p not in installed]


def ensure_packages(log: Log) -> None:
    if shutil.which("dpkg-query") is None:
        raise LabUnavailable("the lab needs a Debian-like host (dpkg and apt-get not found)")
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise LabUnavailable(
            "missing packages, install them as root: apt-get install " + " ".join(missing)
        )
    log(f"lab: installing {' '.join(missing)}")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    with no_service_starts():
        if _run(install, env=_APT_ENV).returncode != 0:
            # A fresh machine often has no package lists yet.
            _apt_update(log)
            result = _run(install, env=_APT_ENV)
            if result.returncode != 0:
                raise LabUnavailable(f"apt-get install failed: {_last_line(result)}")
    keep_services_off([p for p in missing if p in HOST_SERVICES], log)


@contextmanager
def no_service_starts(policy: Path = POLICY_RC_D) -> Iterator[None]:
    """A policy-rc.d that denies every start (exit 101), for the time of the install:
    invoke-rc.d and deb-systemd-invoke then leave the new services stopped. One that
    the machine already has is left as it is."""
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# lvs-scripts lab: packages installed for their binaries only\n"
                      "exit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def keep_services_off(packages: list[str], log: Log,
                      run: Callable[[list[str]], subprocess.CompletedProcess[str]] | None = None,
                      systemd: Path = Path("/run/systemd/system")) -> None:
    """Disable (and stop, if the install started it anyway) the services of packages
    installed for their binaries only; then make sure none of their daemons runs."""
    runner = run or _run
    for package in packages:
        unit, daemon = HOST_SERVICES[package]
        if shutil.which("systemctl"):
            # Disabled even where systemd does not run (a container): the next boot
            # under systemd must not start it either. --now only where it runs.
            argv = ["systemctl", "disable", *(["--now"] if systemd.is_dir() else []), unit]
            log(f"lab: {' '.join(argv)} (the lab needs only the binary)")
            result = runner(argv)
            if result.returncode != 0:
                raise LabUnavailable(f"{' '.join(argv)} failed: {_last_line(result)}")
        if runner(["pgrep", "-x", daemon]).returncode == 0:
            raise LabUnavailable(f"{daemon} is running on this host after its install: stop "
                                 "it (the lab only needs the binary)")


def _apt_update(log: Log) -> None:
    log("lab: apt-get update")
    result = _run(["apt-get", "update", "-q"], env=_APT_ENV)
    if result.returncode != 0:
        raise LabUnavailable(
            f"apt-get update failed (no network to the Debian mirror?): {_last_line(result)}"
        )


# --- 2. the kernel ------------------------------------------------------------


def candidate_kernel_package() -> tuple[str, str] | None:
    """(package, version) that ``linux-image-amd64`` depends on, from apt's lists."""
    result = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META_PACKAGE])
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    depends = fields.get("Depends", "")
    for alternative in depends.replace("|", ",").split(","):
        name, _, rest = alternative.strip().partition(" ")
        if name.startswith("linux-image-"):
            version = rest.strip("()= ")
            return name, version
    return None


def _remembered_candidate(root: Path) -> tuple[str, str] | None:
    """``candidate_kernel_package``, asked again only after apt's lists changed.

    apt-cache takes over a second here; the lists folder's mtime moves
    whenever ``apt-get update`` brings new lists.
    """
    memo = root / "candidate.json"
    try:
        lists_mtime = APT_LISTS.stat().st_mtime
    except OSError:
        lists_mtime = None
    if memo.exists():
        saved = json.loads(memo.read_text())
        if saved.get("lists_mtime") == lists_mtime and saved.get("candidate"):
            return tuple(saved["candidate"])  # type: ignore[return-value]
    candidate = candidate_kernel_package()
    memo.write_text(json.dumps({"lists_mtime": lists_mtime, "candidate": candidate}) + "\n")
    return candidate


def _kernel_dir(root: Path, log: Log) -> Path:
    candidate = _remembered_candidate(root)
    if candidate is None and os.geteuid() == 0:
        try:
            _apt_update(log)
        except LabUnavailable as error:
            log(f"lab: {error}")
        candidate = candidate_kernel_package()
    if candidate is None:
        # Offline and without lists: any kernel already cached will do.
        cached = sorted(root.glob("*/kernel.json"), key=lambda p: p.stat().st_mtime)
        if cached:
            log(f"lab: {KERNEL_META_PACKAGE} not in apt's lists, using the cached kernel")
            return cached[-1].parent
        raise LabUnavailable(
            f"cannot find {KERNEL_META_PACKAGE} in apt's package lists "
            "(run apt-get update with network to the Debian mirror)"
        )
    package, version = candidate
    kernel_dir = root / package.removeprefix("linux-image-")
    kernel_dir.mkdir(exist_ok=True)
    (kernel_dir / "package").write_text(f"{package} {version}\n")
    return kernel_dir


def _ensure_kernel(kernel_dir: Path, log: Log) -> dict:
    """vmlinuz and the wanted modules, unpacked once from the kernel package."""
    stamp = kernel_dir / "kernel.json"
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("wanted") == list(WANTED_MODULES):
            return info
    package, version = (kernel_dir / "package").read_text().split()
    deb = _download(package, version, kernel_dir, log)
    release = package.removeprefix("linux-image-")
    log(f"lab: unpacking {deb.name} and resolving module dependencies")
    with tempfile.TemporaryDirectory(prefix="lab-kernel-") as tmp:
        tree = Path(tmp)
        _check(["dpkg", "-x", str(deb), str(tree)], "dpkg -x")
        _check(["depmod", "-b", str(tree), release], "depmod")
        paths, missing = resolve_modules(tree, release, WANTED_MODULES)
        modules_dir = kernel_dir / "modules"
        shutil.rmtree(modules_dir, ignore_errors=True)
        modules_dir.mkdir()
        for path in paths:
            shutil.copy2(path, modules_dir / path.name)
        shutil.copy2(tree / "boot" / f"vmlinuz-{release}", kernel_dir / "vmlinuz")
    for name in missing:
        log(f"lab: note: {release} has no module {name}, skipped")
    info = {
        "package": package,
        "version": version,
        "release": release,
        "wanted": list(WANTED_MODULES),
        "modules": [p.name for p in paths],
        "missing": missing,
    }
    stamp.write_text(json.dumps(info, indent=1) + "\n")
    return info


def _download(package: str, version: str, kernel_dir: Path, log: Log) -> Path:
    existing = sorted(kernel_dir.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    log(f"lab: downloading {package} {version} (about 70 MB)")
    # Into a scratch folder first, so an interrupted download leaves no
    # half file that a later run would take for the real one.
    with tempfile.TemporaryDirectory(prefix="download-", dir=kernel_dir) as tmp:
        result = _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise LabUnavailable(
                f"cannot download {package} (no network to the Debian mirror?): "
                f"{_last_line(result)}"
            )
        return Path(shutil.move(str(debs[0]), str(kernel_dir / debs[0].name)))


def resolve_modules(
    tree: Path, release: str, wanted: tuple[str, ...]
) -> tuple[list[Path], list[str]]:
    """The .ko files to insmod, dependencies first, and the names not found."""
    ordered: dict[Path, None] = {}
    missing = []
    for name in wanted:
        result = _run(["modprobe", "-d", str(tree), "-S", release, "--show-depends", name])
        if result.returncode != 0:
            missing.append(name)
            continue
        for line in result.stdout.splitlines():
            # "insmod /path/x.ko [params]"; "builtin x" needs nothing.
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod":
                ordered.setdefault(Path(words[1]), None)
    return list(ordered), missing


# --- 4. the initramfs ---------------------------------------------------------


def _ensure_initramfs(kernel_dir: Path, modules: list[str], log: Log) -> Path:
    """The initramfs, named after a digest of what goes in, so edits rebuild it."""
    init = GUEST_INIT.read_bytes()
    digest = hashlib.sha256()
    for part in (init, BUSYBOX.read_bytes(), "\n".join(modules).encode()):
        digest.update(hashlib.sha256(part).digest())
    target = kernel_dir / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if target.exists():
        return target
    log("lab: building the initramfs")
    for old in kernel_dir.glob("initramfs-*.cpio.gz"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="lab-initramfs-") as tmp:
        stage = Path(tmp)
        for folder in ("bin", "dev", "proc", "sys", "lower", "rw", "host", "modules"):
            (stage / folder).mkdir()
        shutil.copy2(BUSYBOX, stage / "bin" / "busybox")
        (stage / "bin" / "sh").symlink_to("busybox")
        (stage / "init").write_bytes(init)
        (stage / "init").chmod(0o755)
        for name in modules:
            shutil.copy2(kernel_dir / "modules" / name, stage / "modules" / name)
        (stage / "modules" / "load-order").write_text("".join(f"{m}\n" for m in modules))
        partial = target.with_suffix(".partial")
        partial.write_bytes(gzip.compress(_cpio_newc(stage), compresslevel=6))
        partial.rename(target)
    return target


def _cpio_newc(stage: Path) -> bytes:
    """The staged tree as a newc cpio archive, owned by root, sorted."""
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    result = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--owner=0:0", "--quiet"],
        input="\n".join([".", *names]).encode() + b"\n",
        cwd=stage,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise LabUnavailable(f"cpio failed: {result.stderr.decode().strip()}")
    return result.stdout


# --- helpers ------------------------------------------------------------------

# apt must never stop to ask; LANG=C so that its messages can be quoted as is.
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LANG": "C", "LC_ALL": "C"}


def _run(
    argv: list[str], cwd: str | Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {"LC_ALL": "C"})},
        capture_output=True,
        text=True,
        check=False,
    )


def _check(argv: list[str], what: str) -> None:
    result = _run(argv)
    if result.returncode != 0:
        raise LabUnavailable(f"{what} failed: {_last_line(result)}")


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    errors = [line for line in lines if line.startswith(("E:", "ERROR", "error"))]
    return (errors or lines or [f"exit code {result.returncode}"])[-1]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One prepare at a time per cache (CI may start two lab jobs at once)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
