"""The Debian package on a real kernel: `apt-get install ./lvs-scripts_*.deb` in the guest
(its root is a throw-away overlay), the how-to's LVS-DR set up only with `service
lvs-realserver start` and `service lvs-director start` from /etc/lvs/lvs.toml, traffic
checked as the demo does, `service ... stop`, then `apt-get purge` leaves no file behind.

The package comes from `make deb` (build/deb/; `make lab-test` builds it first). apt-get
works offline in the guest because lab/prepare.py installs every dependency on the host.

`service` clears the environment, so the per-host state and lock directories (the
namespaces share one file system) come from /etc/netns/HOST/default/lvs-ROLE, which
`ip netns exec HOST` puts in place of /etc/default for that host only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.labhosts import (
    CHECKOUT,
    CONFIG,
    LAB_ONLY,
    REALS,
    RUN_ROOT,
    VIP,
    WEIGHTS,
    Done,
    addresses,
    curl_vip,
    ipvs_save,
    role_of,
    run_on,
    run_parallel,
    stats,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

HOSTS = ("director", *REALS)
REQUESTS = 60
PACKAGE = "lvs-scripts"
NETNS_ETC = Path("/etc/netns")


def built_package() -> Path:
    debs = sorted((CHECKOUT / "build" / "deb").glob(f"{PACKAGE}_*_all.deb"))
    assert debs, "no package: run `make deb` on the host first (`make lab-test` does)"
    return debs[-1]


def run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
                               "DEBIAN_FRONTEND": "noninteractive"})


# An administrator's PATH: service(8) passes the caller's on, and the lab's has the
# checkout's venv first, whose lvs-director is not the package's.
ADMIN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def service(hosts: tuple[str, ...], action: str) -> dict[str, Done]:
    """`service lvs-ROLE ACTION` on each host at once (they are separate machines)."""
    done = run_parallel([(host, ["service", f"lvs-{role_of(host)}", action], ADMIN_ENV)
                         for host in hosts])
    return dict(zip(hosts, done))


def leftovers(files: list[str], existed: set[str]) -> list[str]:
    """The package's paths that are still there but were not before the install."""
    return [f for f in files if f not in existed and (Path(f).exists() or Path(f).is_symlink())]


@pytest.fixture(scope="module")
def installed(topology: None) -> Iterator[list[str]]:
    """The package installed with apt-get; yields `dpkg -L`. Purges on the way out (the
    test of the purge does it first and checks what is left)."""
    deb = built_package()
    done = run(["apt-get", "install", "-y", "-q", str(deb)])
    assert done.returncode == 0, done.stdout + done.stderr
    files = run(["dpkg", "-L", PACKAGE]).stdout.split("\n")
    yield [os.path.normpath(f) for f in files if f]  # its first line is "/."
    shutil.rmtree(NETNS_ETC, ignore_errors=True)
    run(["apt-get", "purge", "-y", "-q", PACKAGE])


@pytest.fixture(scope="module")
def existed_before(topology: None) -> set[str]:
    """Which of the package's paths (from the .deb's listing) exist before the install:
    /etc, /usr/sbin and such are not the package's to remove."""
    listing = run(["dpkg-deb", "-c", str(built_package())]).stdout
    paths = {line.split()[5].removeprefix(".").rstrip("/") or "/"
             for line in listing.splitlines()}
    return {p for p in paths if Path(p).exists()}


def test_installed_disabled_with_a_template_that_is_refused(existed_before: set[str],
                                                            installed: list[str]) -> None:
    for name in ("lvs-director", "lvs-realserver"):
        assert f"/usr/sbin/{name}" in installed
        assert not list(Path("/etc").glob(f"rc[2-5].d/S*{name}")), "enabled at boot"
    # The shipped /etc/lvs/lvs.toml changes nothing: start refuses it, before anything runs.
    found = run_on("rs1", ["sh", "-c", "command -v lvs-realserver"], ADMIN_ENV)
    assert found.stdout == "/usr/sbin/lvs-realserver\n"  # what the init script will run
    refused = run_on("rs1", ["service", "lvs-realserver", "start"], ADMIN_ENV)
    assert refused.returncode == 6, refused
    assert "has no settings yet" in refused.stderr, refused
    assert f"{VIP}/32" not in addresses("rs1", "lo")


def test_lvs_dr_through_service_from_etc_lvs(installed: list[str]) -> None:
    Path("/etc/lvs/lvs.toml").write_text(CONFIG.read_text())  # what an administrator edits
    for host in HOSTS:
        name = f"lvs-{role_of(host)}"
        default = NETNS_ETC / host / "default" / name
        default.parent.mkdir(parents=True, exist_ok=True)
        default.write_text(f"LVS_STATE_DIR={RUN_ROOT / host / 'state'}\n"
                           f"LVS_LOCK_DIR={RUN_ROOT / host / 'lock'}\n")
    # Real servers first: once the director routes to them, they must accept the VIP.
    for done in service(tuple(REALS), "start").values():
        assert done.returncode == 0, done
    started = service(("director",), "start")["director"]
    assert started.returncode == 0, started
    assert f"{VIP}/32" in addresses("director", "eth0")

    answers = curl_vip(REQUESTS)
    got = Counter(answers)
    total = sum(WEIGHTS.values())
    for name, weight in WEIGHTS.items():  # wrr, one new connection per request
        assert abs(got[name] - REQUESTS * weight // total) <= 1, (name, got)
    for key, numbers in stats(conns=REQUESTS).items():  # DR: replies bypass the director
        assert (numbers.outpkts, numbers.outbytes) == (0, 0), (key, numbers)

    for host, done in service(HOSTS, "status").items():
        assert done.returncode == 0, (host, done)
    assert service(("director",), "stop")["director"].returncode == 0
    for done in service(tuple(REALS), "stop").values():
        assert done.returncode == 0, done
    for host, done in service(HOSTS, "status").items():
        assert done.returncode == 3, (host, done)
    assert [line for line in ipvs_save() if f"{VIP}:80" in line] == []
    for host in REALS:
        assert f"{VIP}/32" not in addresses(host, "lo"), host
    assert f"{VIP}/32" not in addresses("director", "eth0")


def test_purge_leaves_no_file_behind(existed_before: set[str], installed: list[str]) -> None:
    shutil.rmtree(NETNS_ETC, ignore_errors=True)  # the lab's, not the package's
    done = run(["apt-get", "purge", "-y", "-q", PACKAGE])
    assert done.returncode == 0, done.stdout + done.stderr
    assert run(["dpkg-query", "-W", PACKAGE]).stdout.strip() in ("", PACKAGE)
    assert leftovers(installed, existed_before) == []
    names = ("lvs-director", "lvs-realserver", "lvs")
    left = [str(p) for p in Path("/etc").rglob("*lvs*") if p.name.split(".")[0] in names]
    left += [str(p) for p in Path("/usr/lib/python3/dist-packages").glob("lvs_scripts*")]
    left += [str(p) for p in Path("/var/lib/systemd").rglob("*lvs-*")]
    assert left == []
